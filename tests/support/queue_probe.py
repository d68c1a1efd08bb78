"""A WSGI app for tests/test_gunicorn.py: sleeps ?ms= milliseconds, then answers with the queue
time the gunicorn worker measured for the request."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
    body = json.dumps({"queue_ms": environ.get("tunix.queue_ms")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
