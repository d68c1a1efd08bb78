"""A gunicorn threaded worker that tells the application how long each request waited.

gunicorn's gthread worker hands a readable connection to a thread pool; under overload the
requests wait in that pool's queue. This worker stamps each connection when it is queued and
puts the wait, in milliseconds, in the WSGI environ as ``tunix.queue_ms``, so
runs/shedding.py can answer a request that waited too long with a quick 503 instead of doing
work its client has likely given up on. Imports nothing from Django.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

QUEUE_MS_KEY = "tunix.queue_ms"  # read by runs/shedding.py
_current = threading.local()

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class QueueTimedThreadWorker(ThreadWorker):  # type: ignore[misc]
    wsgi: WSGIApp

    def enqueue_req(self, conn: Any) -> None:
        conn.tunix_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        _current.queued_at = getattr(conn, "tunix_queued_at", None)
        try:
            return super().handle(conn)
        finally:
            _current.queued_at = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = with_queue_time(self.wsgi)


def with_queue_time(app: WSGIApp) -> WSGIApp:
    def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        queued_at = getattr(_current, "queued_at", None)
        if queued_at is not None:
            environ[QUEUE_MS_KEY] = (time.monotonic() - queued_at) * 1000
            # Only the first request of a queued connection waited; later ones on the same
            # keep-alive connection are queued again (and stamped again) by the worker.
            _current.queued_at = None
        return app(environ, start_response)

    return timed
