"""Orchestration overhead of a real training: the tiny preset queued through Tunix RT versus the
same training started directly from Python. Writes bench/results/training-<stamp>.json.

    .venv/bin/python bench/training.py [--repeats 5]

Needs google-tunix (make install-tunix) and PostgreSQL (BENCH_PG, as bench/run.py). Queued: from
the API's POST until a client polling the status endpoint every 50 ms sees "completed", with
gunicorn and one qcluster as in production. Direct: a fresh Python process that imports the
trainer and trains the same config, from spawn to exit. Both include interpreter start, JAX
import and compilation, which is what a user waits for either way. Target: queued <= direct x 1.1
+ 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen import request  # noqa: E402
from bench.run import (  # noqa: E402
    BASE,
    ENV,
    VAR,
    Clusters,
    Gunicorn,
    auth,
    reset_database,
    setup_django,
    write_report,
)

EPOCHS = 3  # the demo dataset: 8 steps an epoch, so 24 steps


def queued_run(token: str) -> tuple[float, str]:
    body = json.dumps(
        {
            "dataset_key": "tunix-demo-v1",
            "model_id": "tunix-rt/tiny-llama3",
            "dry_run": False,
            "num_epochs": EPOCHS,
        }
    ).encode()
    headers = {**auth(token), "Content-Type": "application/json"}
    started = time.perf_counter()
    status, _, payload = asyncio.run(
        request(f"{BASE}/api/tunix/run?mode=async", method="POST", body=body, headers=headers)
    )
    assert status == 202, payload
    run_id = json.loads(payload)["run_id"]
    while True:
        status, _, payload = asyncio.run(
            request(f"{BASE}/api/tunix/runs/{run_id}/status", headers=auth(token))
        )
        state = json.loads(payload)["status"]
        if state in {"completed", "failed", "cancelled"}:
            assert state == "completed", payload
            return time.perf_counter() - started, run_id
        time.sleep(0.05)


def direct_run(run_id: str, repeat: int) -> float:
    """The queued run's own config, trained again from Python into a directory of its own."""
    spec = json.loads((VAR / "artifacts" / run_id / "tunix_config.json").read_text())
    out = VAR / "direct" / str(repeat)
    spec["output"] = {
        "dir": str(out),
        "checkpoints": str(out / "checkpoints"),
        "metrics": str(out / "metrics"),
    }
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.json"
    config.write_text(json.dumps(spec))
    code = "import sys; from runs.trainer import main; sys.exit(main([sys.argv[1]]))"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, str(config)],
        cwd=out,
        env={**ENV, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def run_breakdown(run_id: str) -> dict[str, float]:
    from runs.models import TunixRun

    run = TunixRun.objects.get(id=run_id)
    assert run.started_at
    assert run.completed_at
    return {
        "queued_to_started_s": round((run.started_at - run.queued_at).total_seconds(), 3),
        "started_to_completed_s": round((run.completed_at - run.started_at).total_seconds(), 3),
        "trainer_loop_s": run.metrics.get("wall_seconds", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ENV.pop("TUNIX_TRAINER_COMMAND", None)  # the project's own Tunix trainer
    reset_database()
    token = setup_django()
    web = Gunicorn()
    workers = Clusters(1)
    samples: list[dict[str, Any]] = []
    try:
        time.sleep(2)  # the cluster's processes start
        _, warm = queued_run(token)  # page cache: JAX and Tunix files read once
        direct_run(warm, -1)
        for repeat in range(args.repeats):
            queued, run_id = queued_run(token)
            direct = direct_run(run_id, repeat)
            sample = {
                "queued_s": round(queued, 3),
                "direct_s": round(direct, 3),
                "overhead_s": round(queued - direct, 3),
                **run_breakdown(run_id),
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    finally:
        workers.stop()
        web.stop()
    queued_median = statistics.median(s["queued_s"] for s in samples)
    direct_median = statistics.median(s["direct_s"] for s in samples)
    limit = direct_median * 1.1 + 2.0
    report = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "python": sys.version.split()[0]},
        "training": f"tunix-rt/tiny-llama3, demo dataset, {EPOCHS} epochs (24 steps), batch 8",
        "samples": samples,
        "queued_median_s": queued_median,
        "direct_median_s": direct_median,
        "overhead_median_s": round(statistics.median(s["overhead_s"] for s in samples), 3),
        "target_s": round(limit, 3),
        "met": queued_median <= limit,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    write_report(report, prefix="training-")


if __name__ == "__main__":
    main()
