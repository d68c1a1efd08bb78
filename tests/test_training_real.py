"""Real Tunix training through the real worker path: the API queues a local run of the tiny
preset, a `manage.py qcluster` runs `python -m runs.trainer`, and the run's row shows the
training's progress while it runs, then its metrics and checkpoints. Needs google-tunix."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from runs import model_catalog, services
from runs.models import RunStatus, TunixRun
from tests.support.clusters import pid_alive, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


@pytest.fixture
def real_trainer(
    tunix_runtime: None, clusters: Callable[..., Any], settings: Any, tmp_path: Path
) -> None:
    """One qcluster whose local mode runs the project's Tunix trainer, not the fake one."""
    settings.TUNIX_TRAINER_COMMAND = None
    clusters(1, TUNIX_TRAINER_COMMAND="", TUNIX_MODELS_DIR=str(tmp_path / "models"))


def submit(operator_client: Any, **hyper: Any) -> str:
    body = {
        "dataset_key": "tunix-demo-v1",
        "model_id": model_catalog.TINY_MODEL_ID,
        "dry_run": False,
        **hyper,
    }
    response = operator_client.post("/api/tunix/run?mode=async", body, format="json")
    assert response.status_code == 202, response.content
    run_id: str = response.json()["run_id"]
    return run_id


def trainer_pids(run_id: str) -> list[int]:
    """Processes whose command line names this run's config: its trainer."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"runs.trainer" in cmdline and run_id.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_a_queued_tiny_training_reports_progress_and_ends_with_a_checkpoint(
    real_trainer: None, operator_client: Any, viewer_client: Any
) -> None:
    run_id = submit(operator_client, num_epochs=6)  # 8 steps an epoch: 48 steps
    status_url = f"/api/tunix/runs/{run_id}/status"

    steps_while_running: list[int] = []

    def finished() -> bool:
        body = viewer_client.get(status_url).json()
        progress = body.get("progress") or {}
        if body["status"] == RunStatus.RUNNING and progress.get("step"):
            steps_while_running.append(progress["step"])
            assert progress["total_steps"] == 48
            assert progress["loss"] > 0
        return body["status"] in {RunStatus.COMPLETED, RunStatus.FAILED}

    deadline = time.monotonic() + 240
    while not finished():
        assert time.monotonic() < deadline, "the training did not finish"
        time.sleep(0.1)

    run = viewer_client.get(f"/api/tunix/runs/{run_id}").json()
    assert run["status"] == RunStatus.COMPLETED, run
    assert run["exit_code"] == 0
    # Progress reached the row while the training ran, not only at its end.
    assert len(set(steps_while_running)) >= 2, steps_while_running
    assert min(steps_while_running) < 48
    assert run["progress"]["step"] == 48
    # The loss went down, and the final metrics are stored and served.
    curve = run["loss_curve"]
    assert len(curve) == 48
    first, last = curve[0][1], curve[-1][1]
    assert last < first - 1.0, curve
    metrics = run["metrics"]
    assert metrics["steps"] == 48
    assert metrics["eval_loss"] < first
    assert metrics["tokens_per_second"] > 0
    assert metrics["wall_seconds"] > 0
    # Checkpoints and TensorBoard files are listed as the run's artifacts.
    listed = viewer_client.get(f"/api/tunix/runs/{run_id}/artifacts").json()
    paths = [item["path"] for item in listed["data"]]
    assert any(p.startswith("checkpoints/attempt-1/48/model_params/") for p in paths), paths
    assert any(p.startswith("metrics/attempt-1/events.out.tfevents.") for p in paths), paths
    assert "tunix_config.json" in paths


def test_cancel_stops_a_real_training_within_seconds(
    real_trainer: None, operator_client: Any
) -> None:
    run_id = submit(operator_client, num_epochs=100)  # far longer than the test waits
    wait_for(
        lambda: (TunixRun.objects.get(id=run_id).progress or {}).get("step", 0) >= 1,
        120,
        what="the first training step",
    )
    pids = trainer_pids(run_id)
    assert pids, "the trainer process was not found"

    cancelled_at = time.monotonic()
    assert services.run_cancel(run_id=run_id).status == RunStatus.CANCELLED
    wait_for(
        lambda: not any(pid_alive(pid) for pid in pids),
        settings.TUNIX_KILL_GRACE_SECONDS + 10,
        what="the trainer to stop",
    )
    stopped_after = time.monotonic() - cancelled_at
    assert stopped_after < settings.TUNIX_KILL_GRACE_SECONDS + 10
    run = TunixRun.objects.get(id=run_id)
    assert run.status == RunStatus.CANCELLED
    assert run.progress["step"] < run.progress["total_steps"]


def test_a_training_requeued_by_a_stopping_worker_resumes_from_its_checkpoint(
    tunix_runtime: None,
    clusters: Callable[..., Any],
    settings: Any,
    tmp_path: Path,
    operator_client: Any,
) -> None:
    """A worker is stopped mid-training (SIGTERM, no grace): the run is re-queued, and the
    next worker's attempt restores the newest checkpoint instead of starting over."""
    settings.TUNIX_TRAINER_COMMAND = None
    env = {
        "TUNIX_TRAINER_COMMAND": "",
        "TUNIX_MODELS_DIR": str(tmp_path / "models"),
        "TUNIX_SHUTDOWN_GRACE_SECONDS": "0",
    }
    first = clusters(1, **env)[0]
    # 800 steps of a few milliseconds, a checkpoint every 200: seconds of training left after
    # the first checkpoint, more than the worker's next tick (1 s) lets run.
    run_id = submit(operator_client, num_epochs=100)
    checkpoint = Path(settings.TUNIX_ARTIFACTS_ROOT) / run_id / "checkpoints" / "attempt-1" / "200"
    wait_for(
        lambda: (checkpoint / "_CHECKPOINT_METADATA").is_file(), 120, what="the first checkpoint"
    )
    first.terminate()
    assert first.wait_exit(timeout=60) == 0
    requeued = TunixRun.objects.get(id=run_id)
    assert requeued.status == RunStatus.PENDING, requeued.error_message
    assert 200 <= requeued.progress["step"] < 800

    clusters(1, **env)
    wait_for(
        lambda: TunixRun.objects.get(id=run_id).status in {RunStatus.COMPLETED, RunStatus.FAILED},
        180,
        what="the second attempt to finish",
    )
    done = TunixRun.objects.get(id=run_id)
    assert (done.status, done.attempt) == (RunStatus.COMPLETED, 2), done.error_message
    assert "resuming from step" in done.stdout
    assert "of attempt-1" in done.stdout
    # One curve across both attempts (thinned to 200 points): in order, no step twice.
    steps = [int(step) for step, _ in done.loss_curve]
    assert steps == sorted(set(steps))
    assert (steps[0], steps[-1]) == (1, 800)
    assert done.metrics["steps"] == 800
