"""A real HTTP webhook receiver on 127.0.0.1 for tests: it verifies Standard Webhooks
signatures itself (with the standardwebhooks library) and can misbehave on request."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Paths choose the behaviour: /ok, /fail (500), /gone (410), /slow (sleeps 3 s),
    /busy (429 with Retry-After: 120), /redirect (302 to /ok), /flaky (500 twice, then 200)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, verified))
                    flaky_seen = sum(1 for r in receiver.received if r.path == "/flaky")
                status, extra = 200, {}
                if self.path == "/fail" or (self.path == "/flaky" and flaky_seen <= 2):
                    status = 500
                elif self.path == "/gone":
                    status = 410
                elif self.path == "/busy":
                    status, extra = 429, {"Retry-After": "120"}
                elif self.path == "/redirect":
                    status, extra = 302, {"Location": "/ok"}
                elif self.path == "/slow":
                    time.sleep(3)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # shutdown() returns at the server's next poll: 50 ms, not the default half second
        # every test using a receiver would otherwise wait at teardown.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
