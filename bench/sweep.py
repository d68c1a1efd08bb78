"""What a sweep's bookkeeping adds between one trial's end and the next trial's start, on an
idle qcluster. Writes bench/results/sweep-<stamp>.json.

    .venv/bin/python bench/sweep.py [--trials 40] [--baseline 20]

A sweep of dry-run trials (TPE over two hyperparameters, one trial at a time, so every
transition is one trial ending and the next being asked for) runs on one `manage.py qcluster`
against PostgreSQL (BENCH_PG, its own database, as bench/run.py). For each transition, from the
rows' own timestamps:

* ask: the ended trial's completed_at to the next trial's queued_at: rebuilding the study from
  the trial rows, asking Optuna and submitting the run, inside the ending's transaction;
* gap: completed_at to the next trial's started_at: the ask, the commit, and the queue's pickup
  (an idle cluster polls every TUNIX_Q_POLL);
* pickup: the next trial's queued_at to its started_at.

The baseline is the pickup of ordinary dry-run runs submitted one at a time to the same idle
cluster: what any run waits for. What the sweep adds is the gap less that pickup. Target: the
median addition at most 200 ms.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Its own database and directories: other benches may run at the same time.
os.environ.setdefault("BENCH_DB", "tunix_rt_bench_sweep")
os.environ.setdefault("BENCH_VAR", "/tmp/tunix-rt-bench-sweep")

from bench.run import ENV, Clusters, reset_database, setup_django, write_report  # noqa: E402

TARGET_MS = 200.0


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000.0, 2)


def summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
    }


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def baseline_pickups(user: Any, count: int) -> list[float]:
    """queued_at to started_at of ordinary dry-runs, one at a time on the idle cluster."""
    from runs import services
    from runs.models import TERMINAL_STATUSES, TunixRun

    pickups: list[float] = []
    for _ in range(count):
        request = services.RunRequest(
            dataset_key="tunix-demo-v1", model_id="tunix-rt/tiny-llama3", mode="dry-run"
        )
        run = services.run_submit(user=user, request=request, enqueue=True).run
        wait(
            lambda run=run: TunixRun.objects.get(id=run.id).status in TERMINAL_STATUSES,
            60,
            "a baseline run",
        )
        row = TunixRun.objects.get(id=run.id)
        pickup = _ms(row.queued_at, row.started_at)
        assert pickup is not None
        pickups.append(pickup)
        time.sleep(0.3)  # idle between runs, as between a sweep's trials
    return pickups


def sweep_transitions(user: Any, trials: int) -> dict[str, Any]:
    from runs import services
    from runs.models import Sweep, SweepStatus, TunixRun

    request = services.SweepRequest(
        base=services.RunRequest(
            dataset_key="tunix-demo-v1", model_id="tunix-rt/tiny-llama3", mode="dry-run"
        ),
        space={
            "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
            "lora_rank": {"low": 0, "high": 64, "step": 8},
        },
        metric="wall_seconds",  # dry-runs report no eval loss; any final metric will do
        direction="minimize",
        n_trials=trials,
        concurrency=1,
        sampler="tpe",
        seed=1,
    )
    started = time.monotonic()
    sweep = services.sweep_create(user=user, request=request)
    wait(
        lambda: Sweep.objects.get(id=sweep.id).status != SweepStatus.RUNNING,
        30 + trials * 10,
        "the sweep to end",
    )
    wall = time.monotonic() - started
    rows = list(TunixRun.objects.filter(sweep=sweep).order_by("trial_number"))
    assert [row.trial_number for row in rows] == list(range(trials))
    asks, gaps, pickups = [], [], []
    for ended, following in itertools.pairwise(rows):
        ask = _ms(ended.completed_at, following.queued_at)
        gap = _ms(ended.completed_at, following.started_at)
        pickup = _ms(following.queued_at, following.started_at)
        assert ask is not None
        assert gap is not None
        assert pickup is not None
        asks.append(ask)
        gaps.append(gap)
        pickups.append(pickup)
    return {
        "sweep_id": str(sweep.id),
        "status": Sweep.objects.get(id=sweep.id).status,
        "trials": trials,
        "wall_seconds": round(wall, 2),
        "ask": summary(asks),
        "gap": summary(gaps),
        "pickup": summary(pickups),
        "asks_ms": asks,
        "gaps_ms": gaps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--baseline", type=int, default=20)
    args = parser.parse_args()

    reset_database()
    setup_django()
    from django.contrib.auth.models import User

    user = User.objects.get(username="bench")
    clusters = Clusters(1)
    try:
        from runs.models import WorkerHeartbeat

        wait(lambda: WorkerHeartbeat.objects.exists(), 60, "the cluster to start")
        time.sleep(2)
        baseline = baseline_pickups(user, args.baseline)
        sweep = sweep_transitions(user, args.trials)
    finally:
        clusters.stop()
    added = round(sweep["gap"]["median_ms"] - statistics.median(baseline), 2)
    report = {
        "benchmark": "sweep",
        "when": datetime.now(UTC).isoformat(),
        "setup": {
            "database": "postgresql",
            "q_poll_seconds": float(ENV["TUNIX_Q_POLL"]),
            "clusters": 1,
            "trial_mode": "dry-run",
            "sampler": "tpe",
            "searched": 2,
            "concurrency": 1,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "baseline_pickup": summary(baseline),
        "sweep": sweep,
        "added_median_ms": added,
        "target_ms": TARGET_MS,
        "within_target": added <= TARGET_MS,
    }
    print(
        f"ask median {sweep['ask']['median_ms']} ms (max {sweep['ask']['max_ms']}), "
        f"gap median {sweep['gap']['median_ms']} ms (max {sweep['gap']['max_ms']}), "
        f"baseline pickup median {report['baseline_pickup']['median_ms']} ms: "
        f"the sweep adds {added} ms"
    )
    write_report(report, prefix="sweep-")


if __name__ == "__main__":
    main()
