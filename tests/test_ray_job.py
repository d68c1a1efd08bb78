"""How a Ray job is followed, against a scripted stand-in for Ray's job client: the log becomes
the output once, the terminal status the exit, and an unanswering or forgetful cluster an
explained end. tests/test_ray_backend.py follows real jobs on a real head."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from runs.execution import ray as ray_backend
from runs.execution.ray import RayJob, poll_interval


@dataclass
class Info:
    status: str
    message: str = ""
    driver_exit_code: int | None = None


@dataclass
class ScriptedClient:
    """Answers get_job_info / get_job_logs from a script of (status, log so far) steps; an
    exception in the script is raised instead."""

    steps: list[Any]
    stopped: list[str] = field(default_factory=list)
    step: Any = None

    def _next(self) -> Any:
        if self.steps:
            self.step = self.steps.pop(0)
        if isinstance(self.step, Exception):
            raise self.step
        return self.step

    def get_job_info(self, job_id: str) -> Info:
        info: Info = self._next()[0]
        return info

    def get_job_logs(self, job_id: str) -> str:
        log: str = self.step[1]
        return log

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


@pytest.fixture(autouse=True)
def instant_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_backend, "POLL_SECONDS", 0.0)


def follow(job: RayJob, seconds: float = 5.0) -> list[tuple[str, bytes]]:
    """Read as the supervision loop does, until the job is drained (or ``seconds`` pass)."""
    chunks: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + seconds
    while not job.drained() and time.monotonic() < deadline:
        chunks += job.read(0.01)
    return chunks


def text(chunks: list[tuple[str, bytes]], stream: str) -> str:
    return b"".join(chunk for name, chunk in chunks if name == stream).decode()


def test_the_log_is_delivered_once_in_order_and_success_is_exit_zero() -> None:
    client = ScriptedClient(
        [
            (Info("PENDING", "waiting for resources"), ""),
            (Info("RUNNING"), "Running entrypoint\nstep 1\n"),
            (Info("RUNNING"), "Running entrypoint\nstep 1\nstep 2\n"),
            (Info("SUCCEEDED"), "Running entrypoint\nstep 1\nstep 2\nstep 3\n"),
        ]
    )
    job = RayJob(client, "http://ray:8265", "r-a1", opening="submitted job r-a1")
    chunks = follow(job)
    assert text(chunks, "stdout") == "Running entrypoint\nstep 1\nstep 2\nstep 3\n"
    stderr = text(chunks, "stderr")
    assert stderr.startswith("ray: submitted job r-a1\n")
    assert "ray: job r-a1 is pending: waiting for resources" in stderr
    assert job.wait(None) == 0
    assert job.lost == ""


@pytest.mark.parametrize(
    ("info", "exit_code"),
    [
        (Info("FAILED", "Job entrypoint command failed with exit code 3", 3), 3),
        (Info("FAILED", "JOB_SUPERVISOR_ACTOR_START_TIMEOUT", None), 1),
        (Info("STOPPED"), -signal.SIGTERM),
    ],
)
def test_a_job_that_did_not_succeed_exits_with_its_code_and_rays_message(
    info: Info, exit_code: int
) -> None:
    job = RayJob(ScriptedClient([(info, "out\n")]), "http://ray:8265", "r-a1", opening="")
    chunks = follow(job)
    assert job.wait(None) == exit_code
    if info.status == "FAILED":
        assert f"ray: job r-a1 failed: {info.message}" in text(chunks, "stderr")


def test_a_cluster_that_stops_answering_is_waited_for_then_the_job_is_lost(
    settings: Any,
) -> None:
    settings.TUNIX_RAY_UNREACHABLE_SECONDS = 1
    down = ConnectionError("connection refused")
    client = ScriptedClient([(Info("RUNNING"), "step 1\n"), down])
    job = RayJob(client, "http://ray:8265", "r-a1", opening="")
    chunks = follow(job, seconds=10)
    assert job.drained()
    assert "cannot be reached" in job.lost
    assert "http://ray:8265" in job.lost
    # Said once while it was retried, and once when it gave up: not once a poll.
    assert text(chunks, "stderr").count("retrying") == 1


def test_a_blip_is_ridden_out_and_reported_again_if_it_recurs(settings: Any) -> None:
    settings.TUNIX_RAY_UNREACHABLE_SECONDS = 60
    down = ConnectionError("connection refused")
    client = ScriptedClient(
        [
            (Info("RUNNING"), "a\n"),
            down,
            (Info("RUNNING"), "a\nb\n"),
            down,
            (Info("SUCCEEDED"), "a\nb\nc\n"),
        ]
    )
    job = RayJob(client, "http://ray:8265", "r-a1", opening="")
    chunks = follow(job)
    assert job.wait(None) == 0
    assert job.lost == ""
    assert text(chunks, "stdout") == "a\nb\nc\n"
    assert text(chunks, "stderr").count("retrying") == 2


def test_a_job_the_cluster_no_longer_knows_is_lost_at_once() -> None:
    gone = RuntimeError("Request failed with status code 404: Job r-a1 does not exist.")
    job = RayJob(ScriptedClient([gone]), "http://ray:8265", "r-a1", opening="")
    follow(job)
    assert "no longer exists on http://ray:8265" in job.lost


def test_a_job_that_will_not_stop_is_left_to_the_cluster_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_backend, "STOP_WAIT_SECONDS", 0.2)
    client = ScriptedClient([(Info("PENDING", "waiting for resources"), "")])
    job = RayJob(client, "http://ray:8265", "r-a1", opening="")
    job.stop(0)
    assert client.stopped == ["r-a1"]
    chunks = follow(job)
    assert job.wait(None) == -signal.SIGKILL
    assert "did not stop; left to the cluster" in text(chunks, "stderr")


def test_a_detached_job_is_neither_waited_for_nor_stopped() -> None:
    client = ScriptedClient([(Info("RUNNING"), "")])
    job = RayJob(client, "http://ray:8265", "r-a1", opening="")
    job.detach()
    assert job.drained()
    assert job.wait(None) is not None
    job.close()
    assert client.stopped == []


def test_a_long_log_is_read_less_often_but_never_rarely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_backend, "POLL_SECONDS", 0.5)
    assert poll_interval(0) == ray_backend.POLL_SECONDS
    assert poll_interval(3 * ray_backend.LOG_BYTES_PER_POLL) > poll_interval(0)
    assert poll_interval(10**12) == ray_backend.MAX_POLL_SECONDS
