"""Load shedding: under overload, answer 503 with Retry-After at once instead of doing work
whose client has likely given up, and instead of letting waits grow to tens of seconds.

The signal is how long a request waited before Django saw it, from either source:

- tunix_rt/gunicorn_worker.py (the web process's gunicorn worker) measures the wait in its
  thread pool's queue and passes it in the WSGI environ;
- a proxy in front may stamp when it received the request (nginx:
  ``proxy_set_header X-Request-Start "t=${msec}";``), which also counts time spent in the
  proxy and the listen backlog.

A request that waited longer than TUNIX_WEB_MAX_QUEUE_MS is answered 503 before any session,
authentication or database work, so shedding costs a fraction of serving. Under sustained
overload the wait settles near that bound: every client hears back within about
TUNIX_WEB_MAX_QUEUE_MS, served or told to retry. Liveness and metrics are never shed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from runs import metrics
from runs.problems import problem_response

EXEMPT_PATHS = frozenset({"/metrics"})  # (probes are answered before this middleware)
# Set by tunix_rt.gunicorn_worker. Spelled out here: importing that module pulls in gunicorn's
# worker machinery (about 80 ms) in processes that never use it, such as runserver.
QUEUE_MS_KEY = "tunix.queue_ms"


def request_queue_ms(header: str, now: float) -> float | None:
    """Milliseconds since the proxy's X-Request-Start stamp (``t=<seconds>``, as nginx's
    ``${msec}``, or bare milliseconds/microseconds since the epoch), or None if unreadable."""
    value = header.strip().removeprefix("t=")
    try:
        stamp = float(value)
    except ValueError:
        return None
    if stamp > 1e14:  # microseconds
        stamp /= 1e6
    elif stamp > 1e11:  # milliseconds
        stamp /= 1e3
    return max(0.0, (now - stamp) * 1000)


def queue_ms(request: HttpRequest) -> float:
    """The longest wait either source reports (0 when neither does)."""
    waited = float(request.META.get(QUEUE_MS_KEY, 0.0))
    header = request.META.get("HTTP_X_REQUEST_START")
    if header:
        waited = max(waited, request_queue_ms(header, time.time()) or 0.0)
    return waited


def shed_response(waited_ms: float) -> HttpResponse:
    metrics.REQUESTS_SHED.inc()
    detail = (
        f"the server is overloaded: this request waited {waited_ms:.0f} ms before it could be "
        "served; retry after the Retry-After delay"
    )
    response = problem_response(503, detail)
    response["Retry-After"] = str(settings.TUNIX_WEB_RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    # Django logs every 5xx at ERROR; under overload that is thousands of lines a second, at
    # the worst moment. The shed counter (and the access log) already say it.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class LoadSheddingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.max_queue_ms = settings.TUNIX_WEB_MAX_QUEUE_MS

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.max_queue_ms > 0 and request.path not in EXEMPT_PATHS:
            waited = queue_ms(request)
            if waited > self.max_queue_ms:
                return shed_response(waited)
        return self.get_response(request)
