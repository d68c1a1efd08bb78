"""Delivery and recovery with real qcluster processes and real signals.

Every test here starts `manage.py qcluster` subprocesses against the test database and
observes the run rows; the fake trainer (tests/support/fake_trainer.py) stands in for Tunix.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django_q.models import OrmQ

from runs import services
from runs.models import RunMode, RunStatus, TunixRun
from tests.factories import submitted_run
from tests.support.clusters import QCluster, pid_alive, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

StartClusters = Callable[..., list[QCluster]]


def enqueue(
    model_id: str = "google/gemma-3-270m", mode: str = RunMode.DRY_RUN, **kw: Any
) -> TunixRun:
    return submitted_run(model_id=model_id, mode=mode, **kw)


def status_of(run: TunixRun) -> str:
    return TunixRun.objects.values_list("status", flat=True).get(id=run.id)


def wait_status(run: TunixRun, *wanted: str, timeout: float = 30.0) -> TunixRun:
    wait_for(lambda: status_of(run) in wanted, timeout, what=f"run {run.id} to be {wanted}")
    return TunixRun.objects.get(id=run.id)


def trainer_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "trainer.log"
    return path.read_text().splitlines() if path.exists() else []


def test_async_dry_run_is_executed_by_a_cluster(clusters: StartClusters) -> None:
    clusters(1)
    run = enqueue()
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED)
    assert done.status == RunStatus.COMPLETED
    assert "Dry run: OK" in done.stdout
    assert done.attempt == 1
    assert done.worker_id.startswith("worker:")
    # The task was acknowledged: nothing is left in the queue.
    wait_for(lambda: not OrmQ.objects.exists(), 10, what="queue to empty")


def test_every_run_executes_exactly_once_with_three_clusters(clusters: StartClusters) -> None:
    total = 200
    runs = [enqueue() for _ in range(total)]
    group = clusters(3)
    wait_for(
        lambda: TunixRun.objects.filter(status=RunStatus.COMPLETED).count() == total,
        180,
        what=f"{total} runs to complete",
    )
    # Count executions, not statuses: every claim logs one pending->running transition.
    claims = Counter(
        match
        for cluster in group
        for match in re.findall(r"run_id=(\S+) from=pending to=running", cluster.log())
    )
    assert set(claims) == {str(r.id) for r in runs}
    assert set(claims.values()) == {1}
    assert set(TunixRun.objects.values_list("attempt", flat=True)) == {1}
    # Work was shared, not done by one cluster alone.
    per_cluster = [len(re.findall(r"from=pending to=running", c.log())) for c in group]
    assert sum(per_cluster) == total
    assert sum(1 for n in per_cluster if n > 0) >= 2


def test_local_run_records_output_and_exit_code(clusters: StartClusters, tmp_path: Path) -> None:
    clusters(1)
    ok = enqueue("fake/ok", RunMode.LOCAL)
    bad = enqueue("fake/exit-3", RunMode.LOCAL)
    done = wait_status(ok, RunStatus.COMPLETED, RunStatus.FAILED)
    assert done.status == RunStatus.COMPLETED
    assert "step 3/3" in done.stdout
    failed = wait_status(bad, RunStatus.COMPLETED, RunStatus.FAILED)
    assert (failed.status, failed.exit_code, failed.error_reason) == (
        RunStatus.FAILED,
        3,
        "nonzero_exit",
    )
    assert "something went wrong" in failed.stderr


def test_sigkill_of_the_whole_cluster_mid_run_is_recovered(
    clusters: StartClusters, tmp_path: Path
) -> None:
    first = clusters(1)[0]
    run = enqueue("fake/slow-once", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    wait_for(lambda: trainer_log(tmp_path), 10, what="trainer to start")
    trainer_pid = int(trainer_log(tmp_path)[0].split()[2])
    first.kill_group()
    killed_at = time.monotonic()
    # The trainer does not outlive its worker (it is in its own session, so it needs the
    # executor's parent-death signal, not the group kill).
    wait_for(lambda: not pid_alive(trainer_pid), 10, what="orphaned trainer to die")
    assert status_of(run) == RunStatus.RUNNING  # nobody is left to say otherwise
    clusters(1)
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=60)
    recovered_in = time.monotonic() - killed_at
    assert done.status == RunStatus.COMPLETED
    assert done.attempt == 2
    # stale after 3 s + reaper tick 1 s + pickup: well inside the configured window.
    assert recovered_in < 30


def test_sigterm_mid_run_requeues_a_run_that_outlives_the_grace(
    clusters: StartClusters, tmp_path: Path
) -> None:
    cluster = clusters(1)[0]
    run = enqueue("fake/slow-once", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    wait_for(lambda: trainer_log(tmp_path), 10, what="trainer to start")
    trainer_pid = int(trainer_log(tmp_path)[0].split()[2])
    cluster.terminate()
    assert cluster.wait_exit(timeout=40) == 0
    requeued = TunixRun.objects.get(id=run.id)
    assert requeued.status == RunStatus.PENDING
    assert requeued.started_at is None
    assert "re-queued" in requeued.error_message
    assert not pid_alive(trainer_pid)
    assert OrmQ.objects.exists()  # a fresh task waits for the next cluster
    clusters(1)
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED)
    assert (done.status, done.attempt) == (RunStatus.COMPLETED, 2)


def test_sigterm_lets_a_short_run_finish_within_the_grace(clusters: StartClusters) -> None:
    cluster = clusters(1, TUNIX_SHUTDOWN_GRACE_SECONDS="20")[0]
    run = enqueue("fake/sleep-2", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    cluster.terminate()
    assert cluster.wait_exit(timeout=40) == 0
    done = TunixRun.objects.get(id=run.id)
    assert (done.status, done.attempt) == (RunStatus.COMPLETED, 1)


def test_timeout_kills_the_training_process_group(clusters: StartClusters, tmp_path: Path) -> None:
    clusters(1)
    run = enqueue("fake/spawn-sleep", RunMode.LOCAL, timeout_seconds=3)
    done = wait_status(run, RunStatus.FAILED, RunStatus.COMPLETED, timeout=40)
    assert (done.status, done.error_reason) == (RunStatus.FAILED, "timeout")
    assert "timeout of 3 s" in done.error_message
    pids = [int(line.split()[2]) for line in trainer_log(tmp_path)]
    assert len(pids) == 3  # the trainer and its two children
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, what="no child to survive")


def test_cancel_of_a_running_run_stops_its_processes(
    clusters: StartClusters, tmp_path: Path
) -> None:
    clusters(1)
    run = enqueue("fake/spawn-sleep", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    wait_for(lambda: len(trainer_log(tmp_path)) == 3, 10, what="trainer children to start")
    cancelled = services.run_cancel(run_id=run.id)
    assert cancelled.status == RunStatus.CANCELLED
    pids = [int(line.split()[2]) for line in trainer_log(tmp_path)]
    wait_for(lambda: not any(pid_alive(p) for p in pids), 15, what="processes to stop")
    assert status_of(run) == RunStatus.CANCELLED  # the worker's finish is fenced off


def test_cancelled_pending_run_never_starts(clusters: StartClusters, tmp_path: Path) -> None:
    run = enqueue("fake/ok", RunMode.LOCAL)
    services.run_cancel(run_id=run.id)
    clusters(1)
    wait_for(lambda: not OrmQ.objects.exists(), 20, what="its task to be consumed")
    assert status_of(run) == RunStatus.CANCELLED
    assert trainer_log(tmp_path) == []


def test_pending_run_whose_task_vanished_is_enqueued_again(clusters: StartClusters) -> None:
    run = enqueue()
    OrmQ.objects.all().delete()  # an operator deleted it in the admin, or a broker lost it
    clusters(1)
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=40)
    assert (done.status, done.attempt) == (RunStatus.COMPLETED, 1)


def test_web_and_worker_write_side_by_side_without_lock_errors(
    clusters: StartClusters,
) -> None:
    group = clusters(1)
    runs = [enqueue() for _ in range(60)]  # the web side keeps writing while workers finish
    wait_for(
        lambda: TunixRun.objects.filter(status=RunStatus.COMPLETED).count() == len(runs),
        90,
        what="all runs to complete",
    )
    assert "database is locked" not in group[0].log()
    assert connection.vendor in {"sqlite", "postgresql"}


def test_sigterm_to_the_whole_process_group_still_stops_cleanly(
    clusters: StartClusters,
) -> None:
    # Ctrl-C in a shell, honcho, `timeout` and systemd's default KillMode signal every process.
    cluster = clusters(1, TUNIX_SHUTDOWN_GRACE_SECONDS="20")[0]
    run = enqueue("fake/sleep-2", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    os.killpg(cluster.proc.pid, signal.SIGTERM)
    assert cluster.wait_exit(timeout=40) == 0
    assert status_of(run) == RunStatus.COMPLETED


def test_sigterm_to_every_process_of_the_service_requeues_the_training(
    clusters: StartClusters, tmp_path: Path
) -> None:
    """systemd's default KillMode=control-group (or `docker stop` with an init) signals the
    training too, not only the qcluster: the run goes back to the queue, it does not fail."""
    cluster = clusters(1, TUNIX_SHUTDOWN_GRACE_SECONDS="20")[0]
    run = enqueue("fake/slow-once", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    wait_for(lambda: trainer_log(tmp_path), 10, what="trainer to start")
    trainer_pid = int(trainer_log(tmp_path)[0].split()[2])
    os.kill(trainer_pid, signal.SIGTERM)  # the same instant as the master's
    cluster.terminate()
    assert cluster.wait_exit(timeout=40) == 0
    requeued = TunixRun.objects.get(id=run.id)
    assert requeued.status == RunStatus.PENDING, requeued.error_message
    assert "re-queued" in requeued.error_message
    clusters(1)
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED)
    assert (done.status, done.attempt) == (RunStatus.COMPLETED, 2)


def test_a_training_killed_by_a_signal_says_which(clusters: StartClusters, tmp_path: Path) -> None:
    clusters(1)
    run = enqueue("fake/sleep-30", RunMode.LOCAL)
    wait_status(run, RunStatus.RUNNING)
    wait_for(lambda: trainer_log(tmp_path), 10, what="trainer to start")
    os.kill(int(trainer_log(tmp_path)[0].split()[2]), signal.SIGKILL)  # the OOM killer, say
    done = wait_status(run, RunStatus.FAILED)
    assert done.error_reason == "nonzero_exit"
    assert done.error_message == "training process was killed by signal SIGKILL"
