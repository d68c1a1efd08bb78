"""Closed-loop maximum throughput with wrk (Debian package `wrk`): a C client with keep-alive
connections, so the client's own CPU barely competes with the server on a small machine.
bench/run.py falls back to the Python client in bench/loadgen.py when wrk is missing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# Sets method, body and headers, and prints a JSON summary at the end.
SCRIPT = """
wrk.method = %(method)s
wrk.body = %(body)s
%(headers)s
local statuses = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for status, n in pairs(c) do merged[status] = (merged[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(merged) do table.insert(parts, string.format('"%%d": %%d', status, n)) end
  io.write(string.format(
    'WRKJSON {"requests": %%d, "errors": %%d, "seconds": %%.3f, "p50_ms": %%.2f, '
    .. '"p90_ms": %%.2f, "p99_ms": %%.2f, "max_ms": %%.2f, "mean_ms": %%.2f, '
    .. '"statuses": {%%s}}\\n',
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    table.concat(parts, ", ")))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for ASCII input


def run(
    url: str,
    *,
    connections: int = 8,
    duration: float = 10.0,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    header_lines = "\n".join(
        f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in (headers or {}).items()
    )
    script = SCRIPT % {
        "method": _lua(method),
        "body": _lua(body.decode()) if body else "nil",
        "headers": header_lines,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.lua"
        path.write_text(script)
        threads = max(1, min(2, connections))
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{int(duration)}s",
                "--timeout",
                "30s",
                "-s",
                str(path),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"^WRKJSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(match.group(1))
    return {
        "client": f"wrk, {connections} keep-alive connections",
        "requests": raw["requests"],
        "errors": raw["errors"],
        "statuses": {int(k): v for k, v in raw["statuses"].items()},
        "rps": round(raw["requests"] / raw["seconds"], 1),
        "p50_ms": round(raw["p50_ms"], 2),
        "p90_ms": round(raw["p90_ms"], 2),
        "p99_ms": round(raw["p99_ms"], 2),
        "max_ms": round(raw["max_ms"], 2),
        "mean_ms": round(raw["mean_ms"], 2),
    }
