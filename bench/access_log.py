"""The access log's cost per request: gunicorn's stock logger against Tunix RT's
(tunix_rt/gunicorn_logging.py), each writing the bench's format to a file for the same request,
alternately in one sitting, so the ratio does not drift with the machine.

    .venv/bin/python bench/access_log.py [--format '%(D)s %(s)s %(U)s']
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gunicorn import glogging  # type: ignore[import-untyped]  # noqa: E402
from gunicorn.config import Config  # type: ignore[import-untyped]  # noqa: E402

from tests.test_access_log import exchange  # noqa: E402  (one request, as the test builds it)
from tunix_rt.gunicorn_logging import AccessLogger  # noqa: E402

BENCH_FORMAT = "%(D)s %(s)s %(U)s"  # bench/run.py's: each request's server time


def per_call_us(cls: type[glogging.Logger], log_format: str, path: Path, calls: int) -> float:
    cfg = Config()
    cfg.set("accesslog", str(path))
    cfg.set("access_log_format", log_format)
    log = cls(cfg)
    response, request, environ, took = exchange()
    started = time.perf_counter()
    for _ in range(calls):
        log.access(response, request, environ, took)
    elapsed = time.perf_counter() - started
    for handler in log.access_log.handlers:
        handler.close()
    return elapsed / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", default=BENCH_FORMAT)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"stock": [], "lean": []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            order = [("stock", glogging.Logger), ("lean", AccessLogger)]
            for name, cls in order if index % 2 == 0 else reversed(order):
                path = Path(scratch) / f"{name}.log"
                samples[name].append(per_call_us(cls, args.format, path, args.calls))
    stock, lean = (statistics.median(samples[n]) for n in ("stock", "lean"))
    result: dict[str, Any] = {
        "format": args.format,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "stock_us_per_request": round(stock, 2),
        "lean_us_per_request": round(lean, 2),
        "lean_over_stock": round(lean / stock, 3),
        "samples_us": {n: [round(v, 2) for v in s] for n, s in samples.items()},
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = REPO / "bench" / "results" / f"access-log-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
