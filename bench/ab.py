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

PATHS = ("floor", "healthz", "readyz", "status_200", "status_304", "list_20", "enqueue_async")


def measure(
    token: str, seconds: float, *, warm_up: bool = False, only: tuple[str, ...] = PATHS
) -> dict[str, float]:
    from runs.models import TunixRun

    newest = TunixRun.objects.order_by("-queued_at").first()
    assert newest is not None
    status_url = f"{run.BASE}/api/tunix/runs/{newest.id}/status"
    headers = run.auth(token)
    _, answer_headers, _ = asyncio.run(loadgen.request(status_url, headers=headers))
    etag = answer_headers["etag"]
    body = json.dumps({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"})
    urls: dict[str, tuple[str, dict[str, Any]]] = {
        # A checkout older than the floor answers it 404: then only the other side has one.
        "floor": (run.BASE + run.FLOOR_PATH, {"headers": headers}),
        "healthz": (f"{run.BASE}/healthz", {"headers": {}}),
        "readyz": (f"{run.BASE}/readyz", {"headers": {}}),
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
        if name not in only:
            continue
        if name == "floor" and asyncio.run(loadgen.request(url, **options))[0] != 200:
            continue
        result = run.max_throughput(url, repeats=1, seconds=seconds, floor=False, **options)
        # /readyz answers 503 here (no worker runs during the bench) after the same checks.
        allowed = {503} if name == "readyz" else set()
        unexpected = {code for code in result.get("statuses", {}) if code >= 400} - allowed
        # A fresh server may shed a few of its first requests while its threads start; a few
        # socket errors in thousands (a connection reset) do not void a sample, more do.
        too_many = result.get("errors", 0) > 0.01 * max(1, result.get("requests", 0))
        if not warm_up and (too_many or unexpected):
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
    parser.add_argument("--paths", default=",".join(PATHS), help="a comma-separated subset")
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": run.REPO}
    only = tuple(args.paths.split(","))
    run.reset_database()
    token = run.setup_django()
    run.seed(args.size)
    samples: dict[str, dict[str, list[float]]] = {side: {p: [] for p in PATHS} for side in sides}
    for number in range(args.rounds):
        order = list(sides) if number % 2 == 0 else list(reversed(sides))
        for side in order:
            web = run.Gunicorn(repo=sides[side])
            try:
                measure(token, 2, warm_up=True, only=only)  # warm caches and connections
                for path, rps in measure(token, args.seconds, only=only).items():
                    samples[side][path].append(rps)
            finally:
                web.stop()
            print(side, {p: v[-1] for p, v in samples[side].items() if v}, flush=True)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.size,
        "rounds": args.rounds,
        "before": str(sides["before"]),
        "setup": f"gunicorn {run.GUNICORN_WORKERS} x {run.GUNICORN_THREADS}, wrk 8 connections",
        "samples": samples,
        "median_rps": {
            side: {p: statistics.median(v) for p, v in paths.items() if v}
            for side, paths in samples.items()
        },
    }
    medians = report["median_rps"]
    report["after_over_before"] = {
        p: round(medians["after"][p] / medians["before"][p], 3)
        for p in PATHS
        if p in medians["after"] and p in medians["before"]
    }
    # Each side's paths against its own floor, where it has one (same round, same minutes).
    report["over_floor"] = {
        side: {p: round(m[p] / m["floor"], 3) for p in PATHS if p in m and p != "floor"}
        for side, m in medians.items()
        if "floor" in m
    }
    print(json.dumps({k: report[k] for k in ("after_over_before", "over_floor")}, indent=1))
    run.write_report(report, prefix="ab-")


if __name__ == "__main__":
    main()
