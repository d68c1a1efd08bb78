"""Standard Webhooks: signing and one HTTP delivery attempt. No Django imports.

https://www.standardwebhooks.com/ — `webhook-id` (stable across retries), `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

from runs.addresses import is_public

USER_AGENT = "tunix-rt-webhooks/1"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: the endpoint must be configured exactly."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RefusedTarget(OSError):
    """The endpoint resolves to an address webhooks may not reach."""


def resolve_target(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for ``host``: every address it resolves to must be public
    (unless ``allow_private``), and the connection goes to the one checked, so a DNS answer that
    changes between check and connect cannot redirect it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise RefusedTarget(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise RefusedTarget(
                    f"{host} resolves to {address}, which is not a public address "
                    "(TUNIX_WEBHOOK_ALLOW_PRIVATE=1 allows private targets)"
                )
    return addresses[0]


def _pinned(base: type[http.client.HTTPConnection], allow_private: bool) -> Any:
    """``base`` dialling the address resolve_target checked; everything else (TLS, its
    verification, proxies) is http.client's own."""

    def dial(address: tuple[str, int], *args: Any) -> socket.socket:
        host, port = address
        return socket.create_connection(
            (resolve_target(host, port, allow_private=allow_private), port), *args
        )

    class Pinned(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = dial  # the hook connect() opens its socket with

    return Pinned


class _PinnedHTTP(urllib.request.HTTPHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.connection = _pinned(http.client.HTTPConnection, allow_private)

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self.connection, req)


class _PinnedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.connection = _pinned(http.client.HTTPSConnection, allow_private)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self.connection, req)  # http.client builds the default TLS context


_openers = {
    allow: urllib.request.build_opener(_NoRedirects, _PinnedHTTP(allow), _PinnedHTTPS(allow))
    for allow in (False, True)
}


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    latency_ms: float
    error: str
    retry_after_seconds: float | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(*, secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def post(
    *,
    url: str,
    body: str,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool = False,
) -> AttemptResult:
    """One POST; never raises. Any 3xx counts as a failure (redirects are not followed), and
    so does a target that resolves to a non-public address unless ``allow_private``."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")  # noqa: S310 - operator-configured http(s) URL
    started = time.perf_counter()
    try:
        with _openers[allow_private].open(request, timeout=timeout) as response:
            response.read(65536)
            status: int | None = response.status
            retry_after = None
            error = ""
    except urllib.error.HTTPError as exc:
        status = exc.code
        retry_after = parse_retry_after(exc.headers.get("Retry-After"), datetime.now(UTC))
        error = f"HTTP {exc.code}"
        exc.close()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        status = None
        retry_after = None
        reason = getattr(exc, "reason", exc)
        error = f"{type(reason).__name__}: {reason}"
    latency = (time.perf_counter() - started) * 1000.0
    return AttemptResult(
        status_code=status, latency_ms=latency, error=error, retry_after_seconds=retry_after
    )
