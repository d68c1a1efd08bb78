"""Progress of a local run reaches its row while the run executes, through a real qcluster and
the fake trainer's TUNIX_PROGRESS lines (the real trainer prints the same lines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from runs.models import RunMode, RunStatus, TunixRun
from tests.factories import submitted_run
from tests.support.clusters import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def queue_training(*, steps: int) -> TunixRun:
    """A local run of the fake trainer reporting ``steps`` steps, 0.4 s apart."""
    return submitted_run(model_id=f"fake/progress-{steps}", mode=RunMode.LOCAL)


def test_progress_is_persisted_during_the_run_and_final_metrics_at_its_end(
    clusters: Callable[..., Any], viewer_client: Any
) -> None:
    clusters(1)
    run = queue_training(steps=12)

    seen_while_running: list[int] = []
    output_while_running: list[str] = []

    def observe() -> bool:
        status, progress, stdout = TunixRun.objects.values_list("status", "progress", "stdout").get(
            id=run.id
        )
        if status == RunStatus.RUNNING and progress:
            seen_while_running.append(progress["step"])
            output_while_running.append(stdout)
        return status in {RunStatus.COMPLETED, RunStatus.FAILED}

    deadline = time.monotonic() + 60
    while not observe():
        assert time.monotonic() < deadline, "run did not finish"
        time.sleep(0.2)

    # Several distinct steps were visible while the trainer still ran, not only at the end.
    assert len(set(seen_while_running)) >= 3
    assert max(seen_while_running) < 12
    assert seen_while_running == sorted(seen_while_running)
    # The output is shown while the training runs, not only once it ends.
    assert "ordinary log line before step 1" in output_while_running[0]
    assert "ordinary log line before step 12" not in output_while_running[0]

    done = TunixRun.objects.get(id=run.id)
    assert done.status == RunStatus.COMPLETED
    assert done.progress == {"step": 12, "total_steps": 12, "loss": pytest.approx(5.0 / 12)}
    assert [point[0] for point in done.loss_curve] == list(range(1, 13))
    assert done.loss_curve[0][1] > done.loss_curve[-1][1]
    assert done.metrics["steps"] == 12
    assert done.metrics["eval_loss"] == pytest.approx(0.5)
    assert "ordinary log line before step 1" in done.stdout

    detail = viewer_client.get(f"/api/tunix/runs/{run.id}").json()
    assert detail["progress"]["step"] == 12
    assert detail["metrics"]["train_loss"] == pytest.approx(5.0 / 12)
    assert len(detail["loss_curve"]) == 12


def test_the_status_endpoint_reports_progress(
    clusters: Callable[..., Any], viewer_client: Any
) -> None:
    clusters(1)
    run = queue_training(steps=10)
    url = f"/api/tunix/runs/{run.id}/status"
    wait_for(
        lambda: (viewer_client.get(url).json().get("progress") or {}).get("step", 0) >= 2,
        30,
        what="progress in the status answer",
    )
    body = viewer_client.get(url).json()
    assert body["status"] == RunStatus.RUNNING
    assert body["progress"]["total_steps"] == 10
    # A poller's ETag changes as the training advances.
    first = viewer_client.get(url)["ETag"]
    wait_for(
        lambda: viewer_client.get(url)["ETag"] != first, 10, what="a new ETag for new progress"
    )
