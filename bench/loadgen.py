"""A small HTTP load generator without coordinated omission.

Open loop (``rate``): request i is due at t0 + i / rate whatever happened before; its latency
is measured from that due time, so a slow server cannot hide its queueing by slowing the
client down. Closed loop (``connections``): N clients send back to back, for maximum throughput.
Plain asyncio sockets, one HTTP/1.1 request per connection (as gunicorn's sync workers do).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    by_status: dict[int, list[float]] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0

    def add(self, status: int, latency_ms: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies_ms.append(latency_ms)
        self.by_status.setdefault(status, []).append(latency_ms)

    def summary(self) -> dict[str, object]:
        out = self._summary(sorted(self.latencies_ms))
        if len(self.by_status) > 1:
            out["latency_by_status"] = {
                code: {
                    k: v
                    for k, v in self._summary(sorted(lat)).items()
                    if k in {"requests", "p50_ms", "p99_ms", "max_ms"}
                }
                for code, lat in sorted(self.by_status.items())
            }
        return out

    def _summary(self, lat: list[float]) -> dict[str, object]:
        def pct(p: float) -> float:
            if not lat:
                return float("nan")
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 2)

        return {
            "requests": len(lat),
            "errors": self.errors,
            "statuses": self.statuses,
            "rps": round(len(lat) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "max_ms": round(lat[-1], 2) if lat else float("nan"),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else float("nan"),
        }


def _encode(
    method: str, url: str, headers: dict[str, str] | None, body: bytes, keepalive: bool
) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines.append("Connection: keep-alive" if keepalive else "Connection: close")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return parts.hostname or "127.0.0.1", parts.port or 80, wire


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes
) -> tuple[int, dict[str, str], bytes]:
    writer.write(wire)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    response_headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            response_headers[name.strip().lower()] = value.strip()
    length = int(response_headers.get("content-length", "0") or 0)
    if length:
        payload = await reader.readexactly(length)
    elif status in (204, 304) or "content-length" in response_headers:
        payload = b""
    else:
        payload = await reader.read()
    return status, response_headers, payload


async def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection."""
    host, port, wire = _encode(method, url, headers, body, keepalive=False)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return await _exchange(reader, writer, wire)
    finally:
        writer.close()


class Pool:
    """Kept-alive connections, as an HTTP client library or a browser keeps them: a request
    takes an idle connection, or opens one when none is idle."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def request(
        self, url: str, *, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        _, _, wire = _encode(method, url, headers, b"", keepalive=True)
        while self.idle:
            reader, writer = self.idle.pop()
            if writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            try:
                answer = await _exchange(reader, writer, wire)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()  # the server closed an idle connection: open a fresh one
                continue
            self._release(reader, writer, answer[1])
            return answer
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        answer = await _exchange(reader, writer, wire)
        self._release(reader, writer, answer[1])
        return answer

    def _release(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def open_loop(
    url: str,
    *,
    rate: float,
    duration: float,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    keepalive: bool = False,
) -> Result:
    """Requests due at a fixed rate; one that takes longer than ``timeout`` counts as an
    error (a client that gave up). ``keepalive`` reuses connections from a pool; otherwise
    each request opens its own, as many separate small clients do."""
    result = Result()
    pool = Pool(url) if keepalive else None
    total = int(rate * duration)
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            call = pool.request(url, headers=headers) if pool else request(url, headers=headers)
            status, _, _ = await asyncio.wait_for(call, timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            result.errors += 1
            return
        result.add(status, (time.perf_counter() - due) * 1000.0)

    await asyncio.gather(*(one(i) for i in range(total)))
    result.elapsed_s = time.perf_counter() - start
    if pool:
        pool.close()
    return result


async def closed_loop(
    url: str,
    *,
    connections: int,
    duration: float,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body_for: object = None,
) -> Result:
    result = Result()
    stop = time.perf_counter() + duration
    counter = iter(range(10**9))

    async def client() -> None:
        while time.perf_counter() < stop:
            body = body_for(next(counter)) if callable(body_for) else b""
            sent = time.perf_counter()
            try:
                status, _, _ = await request(url, method=method, headers=headers, body=body)
            except (OSError, asyncio.IncompleteReadError):
                result.errors += 1
                continue
            result.add(status, (time.perf_counter() - sent) * 1000.0)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - began
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--connections", type=int, default=8, help="closed loop clients")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--token", default="")
    parser.add_argument("--keepalive", action="store_true", help="open loop: reuse connections")
    args = parser.parse_args()
    auth = {"Authorization": f"Token {args.token}"} if args.token else {}
    if args.rate:
        outcome = asyncio.run(
            open_loop(
                args.url,
                rate=args.rate,
                duration=args.duration,
                headers=auth,
                keepalive=args.keepalive,
            )
        )
    else:
        outcome = asyncio.run(
            closed_loop(
                args.url, connections=args.connections, duration=args.duration, headers=auth
            )
        )
    print(json.dumps(outcome.summary()))
