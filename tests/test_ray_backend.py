"""Mode "ray" on a real local Ray cluster: a `manage.py qcluster` submits the trainer as a Ray
job and supervises it (progress, cancel, timeout), a SIGKILLed supervisor's successor reattaches
to the job instead of starting another, and an unreachable cluster fails the run with
backend_unavailable.

The Ray head, the qcluster and the probes run in a private network namespace
(tests/support/ray_cluster.py); the test process watches the run rows from outside. The head is
shared by the module: starting one takes seconds. Without Ray or root these tests skip, unless
TUNIX_REQUIRE_RAY=1 (CI) makes that a failure. They run in the PostgreSQL pass only: the
database does not matter to them, and the qcluster reaches it over its Unix socket.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runs import model_catalog, services
from runs.models import RunStatus, TunixRun
from tests.support.clusters import FAKE_TRAINER, QCluster, cluster_env, database_url, wait_for
from tests.support.ray_cluster import ADDRESS, RayHead, database_url_inside, missing_reason

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
    pytest.mark.processes,
    pytest.mark.ray,
]

StartCluster = Callable[..., QCluster]
STEPS = 160  # of the tiny training


def _require_ray() -> None:
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("TUNIX_REQUIRE_RAY") == "1":
        pytest.fail(f"{reason}; TUNIX_REQUIRE_RAY=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    _require_ray()
    head = RayHead()
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture
def ray_cluster(
    ray_head: RayHead, tmp_path: Path, demo_dataset: Any, settings: Any
) -> Iterator[StartCluster]:
    """Start qclusters inside the head's namespace whose runs of mode ray go to that head.
    Their trainer is the fake one unless a test's env says otherwise; the fake trainer records
    every start in trainer.log (passed to the job through TUNIX_RAY_RUNTIME_ENV)."""
    settings.TUNIX_RAY_ADDRESS = ADDRESS
    settings.TUNIX_SHARED_STORAGE = True
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, str(FAKE_TRAINER)]
    started: list[QCluster] = []

    def start(**overrides: str) -> QCluster:
        ray_env = {
            "DATABASE_URL": database_url_inside(database_url()),
            "TUNIX_RAY_ADDRESS": ADDRESS,
            "TUNIX_SHARED_STORAGE": "1",
            "TUNIX_RAY_PYTHON": sys.executable,
            "TUNIX_RAY_RUNTIME_ENV": json.dumps(
                {"env_vars": {"FAKE_TRAINER_LOG": str(tmp_path / "trainer.log")}}
            ),
        }
        env = cluster_env(tmp_path, **{**ray_env, **overrides})
        cluster = QCluster(env, tmp_path / f"qcluster-{len(started)}.log", wrap=ray_head.inside)
        started.append(cluster)
        cluster.wait_ready(timeout=60)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


def submit(operator_client: Any, model_id: str, **fields: Any) -> TunixRun:
    body = {"dataset_key": "tunix-demo-v1", "model_id": model_id, "mode": "ray", **fields}
    response = operator_client.post("/api/tunix/run?mode=async", body, format="json")
    assert response.status_code == 202, response.content
    return TunixRun.objects.get(id=response.json()["run_id"])


def wait_status(run: TunixRun, *wanted: str, timeout: float = 120) -> TunixRun:
    def reached() -> bool:
        return TunixRun.objects.values_list("status", flat=True).get(id=run.id) in wanted

    wait_for(reached, timeout, what=f"run {run.id} to be {wanted}", interval=0.2)
    return TunixRun.objects.get(id=run.id)


def job_of(head: RayHead, run: TunixRun, attempt: int = 1) -> dict[str, Any]:
    return head.jobs()[f"{run.id}-a{attempt}"]


def starts(tmp_path: Path, run: TunixRun) -> int:
    """How many times the fake trainer started for this run, on any node."""
    log = tmp_path / "trainer.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if line.startswith(f"start {run.id} "))


def test_a_tiny_training_runs_as_a_ray_job_and_reports_progress_while_it_trains(
    ray_cluster: StartCluster,
    ray_head: RayHead,
    tunix_runtime: None,
    operator_client: Any,
    viewer_client: Any,
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.TUNIX_TRAINER_COMMAND = None
    ray_cluster(TUNIX_TRAINER_COMMAND="", TUNIX_MODELS_DIR=str(tmp_path / "models"))
    run = submit(
        operator_client,
        model_catalog.TINY_MODEL_ID,
        # 8 steps an epoch: long enough that the log is read several times while it trains
        num_epochs=STEPS // 8,
        resources={"kind": "cpu", "count": 1},
    )
    steps_while_running: list[int] = []

    def finished() -> bool:
        body = viewer_client.get(f"/api/tunix/runs/{run.id}/status").json()
        progress = body.get("progress") or {}
        if body["status"] == RunStatus.RUNNING and progress.get("step"):
            steps_while_running.append(progress["step"])
            assert progress["total_steps"] == STEPS
        return body["status"] in {RunStatus.COMPLETED, RunStatus.FAILED}

    wait_for(finished, 240, what="the Ray training to end", interval=0.2)
    done = TunixRun.objects.get(id=run.id)
    assert done.status == RunStatus.COMPLETED, (done.error_reason, done.stderr, done.stdout)
    # Live: the worker saw the trainer's steps through the job's log before it ended.
    assert len(set(steps_while_running)) >= 2, steps_while_running
    assert done.progress["step"] == STEPS
    assert len(done.loss_curve) == STEPS
    assert done.metrics["steps"] == STEPS
    assert f"submitted job {run.id}-a1 to {ADDRESS}" in done.stderr
    assert done.execution_ref == f"{run.id}-a1"
    job = job_of(ray_head, run)
    assert job["status"] == "SUCCEEDED"
    assert "-m runs.trainer" in job["entrypoint"]
    assert job["metadata"]["tunix_run_id"] == str(run.id)
    # The job wrote its checkpoint into the run's directory, on the storage both sides share.
    listed = viewer_client.get(f"/api/tunix/runs/{run.id}/artifacts").json()
    paths = [item["path"] for item in listed["data"]]
    assert any(p.startswith(f"checkpoints/attempt-1/{STEPS}/model_params/") for p in paths), paths


def test_cancelling_a_ray_run_stops_its_job(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any, tmp_path: Path
) -> None:
    ray_cluster()
    run = submit(operator_client, "fake/progress-200")
    wait_for(lambda: starts(tmp_path, run) == 1, 60, what="the job's trainer to start")
    services.run_cancel(run_id=run.id)
    wait_for(lambda: job_of(ray_head, run)["status"] == "STOPPED", 30, what="the Ray job to stop")
    done = TunixRun.objects.get(id=run.id)
    assert done.status == RunStatus.CANCELLED
    assert starts(tmp_path, run) == 1


def test_a_ray_run_over_its_timeout_is_stopped_and_failed(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any
) -> None:
    ray_cluster()
    run = submit(operator_client, "fake/sleep-120", timeout_seconds=8)
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=90)
    assert done.status == RunStatus.FAILED
    assert done.error_reason == "timeout", done.error_message
    wait_for(lambda: job_of(ray_head, run)["status"] == "STOPPED", 30, what="the Ray job to stop")


def test_a_killed_supervisor_is_replaced_and_its_job_reattached_not_started_again(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any, tmp_path: Path
) -> None:
    first = ray_cluster()
    run = submit(operator_client, "fake/progress-40")  # 40 steps, 0.4 s apart
    wait_for(
        lambda: (TunixRun.objects.get(id=run.id).progress or {}).get("step", 0) >= 3,
        60,
        what="the first supervisor to report progress",
    )
    first.kill_group()  # the supervising host loses power; the job trains on in Ray
    ray_cluster()  # its successor: the reaper re-queues the run, attempt 2 claims it
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=120)
    assert done.status == RunStatus.COMPLETED, (done.error_reason, done.stderr)
    assert done.attempt == 2
    assert f"reattached to job {run.id}-a1" in done.stderr
    assert done.execution_ref == f"{run.id}-a1"
    # One job, started once: attempt 2 followed attempt 1's job to its end.
    jobs = {key: job for key, job in ray_head.jobs().items() if key.startswith(str(run.id))}
    assert set(jobs) == {f"{run.id}-a1"}
    assert jobs[f"{run.id}-a1"]["status"] == "SUCCEEDED"
    assert starts(tmp_path, run) == 1
    assert done.progress["step"] == 40  # the replayed log gave the whole curve


def test_a_job_that_ended_without_its_supervisor_is_followed_by_a_new_one(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any, tmp_path: Path
) -> None:
    first = ray_cluster()
    run = submit(operator_client, "fake/slow-once")  # sleeps 60 s once, then exits 0 at once
    wait_for(lambda: starts(tmp_path, run) == 1, 60, what="the job's trainer to start")
    first.kill_group()
    ray_head.stop_job(f"{run.id}-a1")  # the job ends while nobody supervises it
    wait_for(lambda: job_of(ray_head, run)["status"] == "STOPPED", 30, what="the job to stop")
    ray_cluster()
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=120)
    assert done.status == RunStatus.COMPLETED, (done.error_reason, done.stderr)
    assert done.attempt == 2
    assert job_of(ray_head, run, attempt=2)["status"] == "SUCCEEDED"
    assert done.execution_ref == f"{run.id}-a2"
    assert f"submitted job {run.id}-a2 to {ADDRESS} (job {run.id}-a1 stopped)" in done.stderr
    assert starts(tmp_path, run) == 2


def test_an_unreachable_ray_cluster_fails_the_run_with_backend_unavailable(
    ray_cluster: StartCluster, operator_client: Any, settings: Any
) -> None:
    nowhere = "http://127.0.0.1:9"  # inside the namespace nothing listens there
    ray_cluster(TUNIX_RAY_ADDRESS=nowhere)
    run = submit(operator_client, "fake/ok")
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=60)
    assert done.status == RunStatus.FAILED
    assert done.error_reason == "backend_unavailable"
    assert nowhere in done.error_message
    assert done.attempt == 1  # failed, said why, not lost or retried forever


def test_a_worker_that_shuts_down_leaves_its_job_running_for_the_next_one(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any, tmp_path: Path
) -> None:
    first = ray_cluster()
    run = submit(operator_client, "fake/progress-40")
    wait_for(
        lambda: (TunixRun.objects.get(id=run.id).progress or {}).get("step", 0) >= 3,
        60,
        what="the first supervisor to report progress",
    )
    first.terminate()  # SIGTERM, as a deploy does: the run is handed back, the job runs on
    first.wait_exit(timeout=30)
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING
    assert job_of(ray_head, run)["status"] == "RUNNING"
    ray_cluster()
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=120)
    assert done.status == RunStatus.COMPLETED, (done.error_reason, done.stderr)
    assert done.attempt == 2
    assert f"reattached to job {run.id}-a1" in done.stderr
    assert starts(tmp_path, run) == 1


def test_a_run_cancelled_while_nobody_supervises_it_has_its_job_stopped(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any, tmp_path: Path
) -> None:
    first = ray_cluster()
    run = submit(operator_client, "fake/progress-400")
    wait_for(lambda: starts(tmp_path, run) == 1, 60, what="the job's trainer to start")
    first.kill_group()  # nobody follows the job now
    services.run_cancel(run_id=run.id)
    assert job_of(ray_head, run)["status"] == "RUNNING"
    ray_cluster()  # any worker takes the release task
    wait_for(
        lambda: job_of(ray_head, run)["status"] == "STOPPED", 60, what="the orphan job to stop"
    )
    assert TunixRun.objects.get(id=run.id).status == RunStatus.CANCELLED


def test_a_reattached_job_keeps_the_timeout_it_started_with(
    ray_cluster: StartCluster, ray_head: RayHead, operator_client: Any, tmp_path: Path
) -> None:
    first = ray_cluster()
    run = submit(operator_client, "fake/sleep-120", timeout_seconds=20)
    wait_for(lambda: starts(tmp_path, run) == 1, 60, what="the job's trainer to start")
    first.kill_group()
    ray_cluster()
    done = wait_status(run, RunStatus.COMPLETED, RunStatus.FAILED, timeout=90)
    assert (done.status, done.error_reason) == (RunStatus.FAILED, "timeout")
    assert done.attempt == 2
    assert f"counted from the start of job {run.id}-a1" in done.error_message
    # Stopped at the job's 20 s, not 20 s after the second attempt took it up.
    assert done.completed_at is not None
    assert (done.completed_at - done.queued_at).total_seconds() < 20 + 15
    wait_for(lambda: job_of(ray_head, run)["status"] == "STOPPED", 30, what="the job to stop")
