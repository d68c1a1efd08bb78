"""Two checkouts of Tunix RT on the hot paths, alternately, in one sitting.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/ab.py /tmp/before                 # about 12 minutes
    .venv/bin/python bench/ab.py /tmp/before --rounds 3 --size 1000000

Both are served by the same gunicorn setup (bench/run.py's) against one database seeded once,
so the only difference is the code. Each round measures the other checkout right after this one
(A B, then B A), because this machine drifts by up to 1.4x from minute to minute: compare the
ratios, not the absolute numbers of different sittings. Writes bench/results/ab-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen, run, wrk

if not wrk.available():
    raise SystemExit("bench/ab.py needs wrk (Debian package wrk)")

PATHS = ("status_200", "status_304", "list_20", "enqueue_async")


def measure(token: str, seconds: float) -> dict[str, float]:
    from runs.models import TunixRun

    newest = TunixRun.objects.order_by("-queued_at").first()
    assert newest is not None
    status_url = f"{run.BASE}/api/tunix/runs/{newest.id}/status"
    headers = run.auth(token)
    _, answer_headers, _ = asyncio.run(loadgen.request(status_url, headers=headers))
    etag = answer_headers["etag"]
    body = json.dumps({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"})
    urls: dict[str, tuple[str, dict[str, Any]]] = {
        "status_200": (status_url, {"headers": headers}),
        "status_304": (status_url, {"headers": {**headers, "If-None-Match": etag}}),
        "list_20": (f"{run.BASE}/api/tunix/runs?limit=20", {"headers": headers}),
        "enqueue_async": (
            f"{run.BASE}/api/tunix/run?mode=async",
            {
                "headers": {**headers, "Content-Type": "application/json"},
                "method": "POST",
                "body": body.encode(),
            },
        ),
    }
    out: dict[str, float] = {}
    for name, (url, options) in urls.items():
        result = run.max_throughput(url, repeats=1, seconds=seconds, **options)
        unexpected = {code for code in result.get("statuses", {}) if code >= 400}
        if result.get("errors") or unexpected:
            raise RuntimeError(f"{name}: the server answered errors: {result}")
        out[name] = float(result["rps"])
    run.clear_pending()  # the enqueued runs and tasks, so each side starts from the same table
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": run.REPO}
    run.reset_database()
    token = run.setup_django()
    run.seed(args.size)
    samples: dict[str, dict[str, list[float]]] = {side: {p: [] for p in PATHS} for side in sides}
    for number in range(args.rounds):
        order = list(sides) if number % 2 == 0 else list(reversed(sides))
        for side in order:
            web = run.Gunicorn(repo=sides[side])
            try:
                measure(token, 2)  # warm both processes' caches and connections
                for path, rps in measure(token, args.seconds).items():
                    samples[side][path].append(rps)
            finally:
                web.stop()
            print(side, {p: samples[side][p][-1] for p in PATHS}, flush=True)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.size,
        "rounds": args.rounds,
        "before": str(sides["before"]),
        "setup": f"gunicorn {run.GUNICORN_WORKERS} x {run.GUNICORN_THREADS}, wrk 8 connections",
        "samples": samples,
        "median_rps": {
            side: {p: statistics.median(v) for p, v in paths.items()}
            for side, paths in samples.items()
        },
    }
    report["after_over_before"] = {
        p: round(report["median_rps"]["after"][p] / report["median_rps"]["before"][p], 3)
        for p in PATHS
    }
    print(json.dumps(report["after_over_before"], indent=1))
    run.write_report(report, prefix="ab-")


if __name__ == "__main__":
    main()
