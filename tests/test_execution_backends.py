"""The execution seam: backends by mode, one supervision loop for every kind of job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runs import executor
from runs.execution import BACKENDS, MODES, UnknownMode, get_backend
from runs.execution.base import (
    BackendUnavailable,
    ExecutionBackend,
    Requeue,
    RunSpec,
    Supervision,
    execute,
)
from runs.models import RunMode, TunixRun
from runs.outcomes import Ending, Reason, RunOutcome
from runs.services import RunRequest, ServiceError, run_submit
from tests.factories import run_spec


class ScriptedJob:
    """A job that is not a process (as a job on a cluster is not): it emits scripted output
    lines, one per read, and ends with ``exit_code`` unless stopped first."""

    def __init__(self, lines: list[str], exit_code: int = 0, pace: float = 0.0) -> None:
        self.lines = list(lines)
        self.exit_code = exit_code
        self.pace = pace
        self.stopped_with: float | None = None
        self.closed = False

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        time.sleep(min(timeout, self.pace))
        if self.stopped_with is not None or not self.lines:
            return []
        return [("stdout", (self.lines.pop(0) + "\n").encode())]

    def drained(self) -> bool:
        return self.stopped_with is not None or not self.lines

    def wait(self, timeout: float | None) -> int | None:
        return -15 if self.stopped_with is not None else self.exit_code

    def stop(self, grace_seconds: float) -> None:
        self.stopped_with = grace_seconds

    def close(self) -> None:
        self.closed = True


class ScriptedBackend(ExecutionBackend):
    mode = "scripted"

    def __init__(self, job: ScriptedJob) -> None:
        self.job = job

    def prepare(self, run: RunSpec) -> RunOutcome | None:
        return None

    def start(self, run: RunSpec) -> executor.Job:
        return self.job


def spec(tmp_path: Path, timeout_seconds: int = 60) -> RunSpec:
    return run_spec(tmp_path, timeout_seconds=timeout_seconds)


def progress(step: int, loss: float) -> str:
    return f'TUNIX_PROGRESS {{"step": {step}, "total_steps": 3, "loss": {loss}}}'


@pytest.fixture
def quick_ticks(settings: Any) -> None:
    settings.TUNIX_PROGRESS_SECONDS = 0.01
    settings.TUNIX_HEARTBEAT_SECONDS = 0.01
    settings.TUNIX_SHUTDOWN_GRACE_SECONDS = 0
    settings.TUNIX_KILL_GRACE_SECONDS = 1


def test_every_mode_a_run_can_have_is_a_registered_backend() -> None:
    assert set(RunMode.values) <= set(MODES)
    field_choices = {value for value, _ in TunixRun._meta.get_field("mode").choices or []}
    assert field_choices == set(MODES)
    for mode in MODES:
        assert get_backend(mode).mode == mode
    assert BACKENDS[RunMode.LOCAL].endswith("LocalBackend")


def test_an_unknown_mode_is_refused_by_the_registry() -> None:
    with pytest.raises(UnknownMode, match="known modes: dry-run, local, ray"):
        get_backend("slurm")


@pytest.mark.django_db
def test_an_unknown_mode_is_refused_before_anything_is_written(demo_dataset: Any) -> None:
    request = RunRequest(dataset_key="tunix-demo-v1", model_id="tunix-rt/tiny-llama3", mode="slurm")
    with pytest.raises(ServiceError) as refused:
        run_submit(user=None, request=request, enqueue=True)
    assert refused.value.field == "mode"
    assert not TunixRun.objects.exists()


def test_a_job_that_is_not_a_process_is_supervised_by_the_shared_loop(
    tmp_path: Path, quick_ticks: None
) -> None:
    beats: list[dict[str, Any] | None] = []

    def heartbeat(updates: dict[str, Any] | None) -> bool:
        beats.append(updates)
        return True

    job = ScriptedJob(
        [progress(1, 3.0), "plain output", progress(2, 2.5), progress(3, 2.0)], pace=0.02
    )
    outcome = execute(ScriptedBackend(job), spec(tmp_path), Supervision(heartbeat=heartbeat))

    assert outcome.status == Ending.COMPLETED
    assert outcome.progress is not None
    assert outcome.progress["loss_curve"] == [[1, 3.0], [2, 2.5], [3, 2.0]]
    assert "plain output" in outcome.stdout
    # Progress and the live output reached the heartbeat while the job ran.
    reported = [b for b in beats if b]
    assert any("progress" in b for b in reported)
    assert any("plain output" in b.get("stdout", "") for b in reported)
    assert job.closed


def test_a_heartbeat_that_no_longer_matches_cancels_the_job(
    tmp_path: Path, quick_ticks: None
) -> None:
    job = ScriptedJob([progress(step, 1.0) for step in range(1, 1000)], pace=0.01)
    outcome = execute(ScriptedBackend(job), spec(tmp_path), Supervision(heartbeat=lambda _: False))
    assert outcome.status == Ending.CANCELLED
    assert job.stopped_with == 1  # the kill grace, through the backend's cancel
    assert job.closed


def test_a_draining_worker_hands_the_run_back(tmp_path: Path, quick_ticks: None) -> None:
    job = ScriptedJob([progress(step, 1.0) for step in range(1, 1000)], pace=0.01)
    draining = Supervision(heartbeat=lambda _: True, drain_since=lambda: time.monotonic() - 1)
    with pytest.raises(Requeue):
        execute(ScriptedBackend(job), spec(tmp_path), draining)
    assert job.stopped_with is not None


class DetachingBackend(ScriptedBackend):
    """A backend whose jobs outlive their supervisor, as a job on a cluster does."""

    def detach(self, job: executor.Job) -> bool:
        assert isinstance(job, ScriptedJob)
        job.lines.clear()  # the loop sees it drained; the job itself is not stopped
        return True


def test_a_draining_worker_leaves_a_job_that_can_outlive_it_running(
    tmp_path: Path, quick_ticks: None
) -> None:
    job = ScriptedJob([progress(step, 1.0) for step in range(1, 1000)], pace=0.01)
    draining = Supervision(heartbeat=lambda _: True, drain_since=lambda: time.monotonic() - 1)
    with pytest.raises(Requeue):
        execute(DetachingBackend(job), spec(tmp_path), draining)
    assert job.stopped_with is None


def test_a_cancelled_run_stops_even_a_job_that_could_outlive_its_worker(
    tmp_path: Path, quick_ticks: None
) -> None:
    job = ScriptedJob([progress(step, 1.0) for step in range(1, 1000)], pace=0.01)
    outcome = execute(DetachingBackend(job), spec(tmp_path), Supervision(heartbeat=lambda _: False))
    assert outcome.status == Ending.CANCELLED
    assert job.stopped_with == 1


class UnreachableBackend(ScriptedBackend):
    def start(self, run: RunSpec) -> executor.Job:
        raise BackendUnavailable("cluster at http://nowhere:8265 cannot be reached")


def test_a_backend_that_cannot_reach_its_cluster_fails_the_run_saying_where(
    tmp_path: Path,
) -> None:
    outcome = execute(
        UnreachableBackend(ScriptedJob([])), spec(tmp_path), Supervision(lambda _: True)
    )
    assert (outcome.status, outcome.reason) == (Ending.FAILED, Reason.BACKEND_UNAVAILABLE)
    assert "http://nowhere:8265" in outcome.message


def test_the_run_timeout_stops_any_job(tmp_path: Path, quick_ticks: None) -> None:
    job = ScriptedJob([progress(step, 1.0) for step in range(1, 100_000)], pace=0.01)
    started = time.monotonic()
    outcome = execute(
        ScriptedBackend(job), spec(tmp_path, timeout_seconds=1), Supervision(lambda _: True)
    )
    assert time.monotonic() - started < 10
    assert (outcome.status, outcome.reason) == (Ending.FAILED, Reason.TIMEOUT)
    assert "timeout of 1 s" in outcome.message


def test_a_trainer_that_says_why_it_refused_beats_its_exit_code(
    tmp_path: Path, quick_ticks: None
) -> None:
    refusal = 'TUNIX_ERROR {"reason": "model_unavailable", "message": "no checkpoint in /m"}'
    job = ScriptedJob([refusal], exit_code=2)
    outcome = execute(ScriptedBackend(job), spec(tmp_path), Supervision(lambda _: True))
    assert (outcome.status, outcome.reason) == (Ending.FAILED, Reason.MODEL_UNAVAILABLE)
    assert outcome.message == "no checkpoint in /m"


def test_a_backend_whose_prepare_decides_starts_nothing(tmp_path: Path) -> None:
    class Refusing(ScriptedBackend):
        def prepare(self, run: RunSpec) -> RunOutcome | None:
            return RunOutcome.failure(Reason.CONFIG_INVALID, "no")

    job = ScriptedJob(["never"])
    outcome = execute(Refusing(job), spec(tmp_path), Supervision(lambda _: True))
    assert (outcome.status, outcome.reason, outcome.stderr) == (
        Ending.FAILED,
        Reason.CONFIG_INVALID,
        "no\n",
    )
    assert job.lines == ["never"]
    assert not job.closed
