"""The cost of routing by resource class: dry-run drain with three resource-class queues (three
clusters, one per queue) against one queue with three clusters, alternately.

    .venv/bin/python bench/routing.py                 # 3 rounds of 2000 runs per layout
    BENCH_ROUTING_ROUNDS=5 BENCH_ROUTING_RUNS=1000 .venv/bin/python bench/routing.py

Dry-runs are never routed by class (only trainings are), so the bench writes each run's queue
task itself, as enqueue_run does, onto the queue of the class it stands for: the cpu queue, its
`-gpu` and its `-tpu` queue. The gpu and tpu clusters declare their devices
(TUNIX_WORKER_DEVICES) since this machine has none. Every cluster has two workers, so the two
layouts differ only in how the tasks are split between queues. All tasks are written in one
transaction once every cluster reports, so no cluster starts ahead of the others. Uses its own
database (BENCH_DB, default tunix_rt_bench_routing), so it can run next to another bench.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_DB", "tunix_rt_bench_routing")
os.environ.setdefault("BENCH_VAR", "/tmp/tunix-rt-bench-routing")
os.environ.setdefault("BENCH_PORT", "8767")
os.environ["TUNIX_RESOURCE_CLASSES"] = "cpu:1,gpu:1,tpu:1"
os.environ["TUNIX_TRAINING_WORKERS"] = "2"  # class queues' clusters: as many as the default's
os.environ["TUNIX_Q_WORKERS"] = "2"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import ENV, clear_pending, reset_database, write_report  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUTING_ROUNDS", "3"))
RUNS = int(os.environ.get("BENCH_ROUTING_RUNS", "2000"))
Q_NAME = "tunix_rt"
CLASS_QUEUES = {"cpu": Q_NAME, "gpu": f"{Q_NAME}-gpu", "tpu": f"{Q_NAME}-tpu"}
DEVICES = {
    "gpu": '[{"platform": "gpu", "kind": "bench", "count": 1}]',
    "tpu": '[{"platform": "tpu", "kind": "bench", "count": 1}]',
}


def start_cluster(queue: str, resource_class: str) -> subprocess.Popen[bytes]:
    env = {**ENV}
    if queue != Q_NAME:
        env |= {"Q_CLUSTER_NAME": queue, "TUNIX_WORKER_DEVICES": DEVICES[resource_class]}
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def drain(layout: str) -> dict[str, Any]:
    """Drain RUNS dry-runs: "one" queue with three clusters, or "three" class queues with a
    cluster each."""
    from django.db import transaction
    from django.db.models import Max, Min
    from django.utils import timezone
    from django_q.tasks import async_task

    from runs import services
    from runs.models import TunixRun, WorkerHeartbeat
    from runs.services.queue import TASK_FUNC

    clear_pending()
    WorkerHeartbeat.objects.all().delete()
    classes = ["cpu", "gpu", "tpu"] if layout == "three" else ["cpu", "cpu", "cpu"]
    procs = [start_cluster(CLASS_QUEUES[c], c) for c in classes]
    try:
        deadline = time.time() + 120
        while WorkerHeartbeat.objects.count() < 2 * len(procs):  # two workers each
            if time.time() > deadline:
                raise RuntimeError("the clusters did not report")
            time.sleep(0.2)
        queues = [CLASS_QUEUES[c] for c in dict.fromkeys(classes)]
        request = services.RunRequest(
            dataset_key="tunix-demo-v1", model_id="google/gemma-3-270m", mode="dry-run"
        )
        with transaction.atomic():  # every task becomes visible at once, on commit
            created = []
            for i in range(RUNS):
                run = services.run_submit(user=None, request=request, enqueue=False).run
                queue = queues[i % len(queues)]
                async_task(
                    TASK_FUNC,
                    str(run.id),
                    task_name=f"run-{run.id}",
                    timeout=services.task_timeout_seconds(run),
                    ack_failure=True,
                    cluster=None if queue == Q_NAME else queue,
                )
                created.append(run.id)
        committed = timezone.now()
        deadline = time.time() + 600
        while TunixRun.objects.filter(status__in=["pending", "running"]).exists():
            if time.time() > deadline:
                raise RuntimeError("the drain did not finish")
            time.sleep(0.25)
        span = TunixRun.objects.filter(id__in=created).aggregate(
            first=Min("started_at"), last=Max("completed_at")
        )
    finally:
        stop(procs)
    done = TunixRun.objects.filter(id__in=created, status="completed").count()
    seconds = (span["last"] - span["first"]).total_seconds()
    return {
        "layout": layout,
        "queues": len(set(classes)),
        "clusters": len(procs),
        "workers_per_cluster": 2,
        "runs": RUNS,
        "completed": done,
        "seconds": round(seconds, 2),
        "seconds_from_commit": round((span["last"] - committed).total_seconds(), 2),
        "runs_per_second": round(done / seconds, 1),
    }


def main() -> None:
    import django

    reset_database()
    django.setup()
    results: list[dict[str, Any]] = []
    for round_number in range(ROUNDS):
        # Alternate which layout goes first, so drift (cache warmth, autovacuum) hits both.
        order = ["one", "three"] if round_number % 2 == 0 else ["three", "one"]
        for layout in order:
            result = {"round": round_number, **drain(layout)}
            print(result, flush=True)
            results.append(result)
    rate = {
        layout: statistics.median(r["runs_per_second"] for r in results if r["layout"] == layout)
        for layout in ("one", "three")
    }
    summary = {
        "median_runs_per_second": rate,
        "three_over_one": round(rate["three"] / rate["one"], 3),
        "target": "three resource-class queues drain no more than 10% slower than one queue",
    }
    print(summary)
    write_report(
        {
            "bench": "routing",
            "when": datetime.now(UTC).isoformat(),
            "cpus": os.cpu_count(),
            "results": results,
            "summary": summary,
        },
        prefix="routing-",
    )


if __name__ == "__main__":
    main()
