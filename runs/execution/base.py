"""The execution backend protocol, and the supervision loop every backend shares.

A backend answers five questions about a run of its mode: how to prepare it (write and check
its spec), how to start it, how to supervise it until it ends, how to cancel it, and what its
end means (the outcome). Supervision is written once, here: heartbeats with progress and live
output, cancel (a heartbeat that no longer matches), the worker's drain, the run's timeout, and
the trainer's progress lines. A local process and a job on a cluster both plug into it, since
both are an ``executor.Job``: an output stream, an exit and a stop.

Backends import neither the models nor the services: what they need comes in a RunSpec, and
what they report goes out through the Supervision callbacks and the RunOutcome they return.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings

from runs import executor
from runs.dryrun import CONFIG_FILE_NAME
from runs.outcomes import Ending, Reason, RunOutcome, known_reason
from runs.progress import LineSplitter, ProgressTracker
from runs.resources import Resources


@dataclass(frozen=True)
class RunSpec:
    """One attempt of one run, as plain values."""

    run_id: str
    attempt: int
    mode: str
    output_dir: Path  # the run's artifact directory, absolute
    spec: dict[str, Any]  # the trainer's config (dryrun.training_spec)
    dataset_sha256: str  # what the registry recorded, checked again before anything runs
    dataset_records: int
    timeout_seconds: int  # the run's own, or the default
    loss_curve: list[list[float]]  # the curve so far: a resumed attempt continues it
    series: dict[str, list[list[float]]] = field(default_factory=dict)  # likewise
    resources: Resources | None = None  # what the run asked for (None: nothing)

    @property
    def config_path(self) -> Path:
        return self.output_dir / CONFIG_FILE_NAME


def _never_draining() -> float | None:
    return None


@dataclass(frozen=True)
class Supervision:
    """How a backend reports back while it runs."""

    # Heartbeat with what changed (progress, loss_curve, metrics, stdout, stderr); False
    # means the run is no longer this attempt's (cancelled, or re-queued by the reaper).
    heartbeat: Callable[[dict[str, Any] | None], bool]
    # When this worker began shutting down (monotonic seconds), if it has.
    drain_since: Callable[[], float | None] = _never_draining


class Requeue(Exception):
    """The worker is shutting down: hand the run back to the queue instead of finishing it."""


class BackendUnavailable(Exception):
    """What runs the job cannot be reached or refused it: the run fails with
    backend_unavailable and this message (which names what was tried)."""


class ExecutionBackend(ABC):
    """How runs of one mode execute. Subclasses set ``mode`` and implement ``prepare``; those
    that start something implement ``start`` too."""

    mode: ClassVar[str]
    # True: it trains a model, so its runs go to TUNIX_TRAINING_QUEUE when one is set, and a
    # real model's checkpoint is checked at submit time where the web host can see it.
    trains: ClassVar[bool] = False
    # True: the job runs elsewhere (a cluster) and its resources are the cluster's to place, so
    # the run is not routed to a worker class of its resources; any worker supervises it.
    places_remotely: ClassVar[bool] = False

    @property
    def routes_by_resources(self) -> bool:
        """Its runs go to the worker class of their resources (a training on the host that
        claims it); the others are served by any cpu worker."""
        return self.trains and not self.places_remotely

    def unavailable(self) -> str | None:
        """Why this deployment cannot take runs of this mode (refused at submit), if it
        cannot."""
        return None

    def refuse_resources(self, asked: Resources) -> str | None:
        """Why a run of this mode cannot have ``asked`` (refused at submit), for a backend that
        places remotely: where it places them is not a worker class."""
        return None

    @abstractmethod
    def prepare(self, run: RunSpec) -> RunOutcome | None:
        """Write the run's spec and check it. An outcome is final: nothing is started."""

    def start(self, run: RunSpec) -> executor.Job:
        """Start the run's work (called only when ``prepare`` returned None)."""
        raise NotImplementedError(f"{type(self).__name__} starts nothing")

    def supervise(self, run: RunSpec, job: executor.Job, supervision: Supervision) -> RunOutcome:
        """Follow the job until it ends (the shared loop; a backend rarely needs another)."""
        return _supervise(self, run, job, supervision)

    def cancel(self, job: executor.Job) -> None:
        """Stop the job: ask it to end, force it after the kill grace."""
        job.stop(settings.TUNIX_KILL_GRACE_SECONDS)

    def reference(self, job: executor.Job) -> str:
        """What the job is called where it runs, when that is not this worker (a Ray job's
        submission id): stored on the run as execution_ref."""
        return ""

    def reference_url(self, reference: str) -> str | None:
        """Where a person can look at the job a reference names (a dashboard's page)."""
        return None

    def release(self, *, run_id: str, attempts: int) -> list[str]:
        """Stop whatever the run's attempts (1..``attempts``) left running where it places
        jobs, once the run ended with nobody supervising them; what it stopped. Raises
        BackendUnavailable when that cannot be reached."""
        return []

    def detach(self, job: executor.Job) -> bool:
        """The worker is shutting down: let the job run on without this process, if it can
        (True; a later attempt takes it up again), instead of stopping it (False)."""
        return False

    def outcome(
        self, run: RunSpec, result: executor.ExecutionResult, tracker: ProgressTracker
    ) -> RunOutcome:
        """What the ended job means for its run."""
        outcome = outcome_from_result(result, timeout_seconds=run.timeout_seconds)
        if outcome.reason == Reason.NONZERO_EXIT and tracker.error is not None:
            # The trainer said why it refused the run: that beats "exited with code 2".
            reason, message = tracker.error
            outcome = dataclasses.replace(
                outcome,
                reason=reason if known_reason(reason) else Reason.NONZERO_EXIT,
                message=message,
            )
        return dataclasses.replace(outcome, progress=tracker.snapshot())


def execute(backend: ExecutionBackend, run: RunSpec, supervision: Supervision) -> RunOutcome:
    """Prepare, start and supervise one attempt; raises Requeue when the worker drains."""
    prepared = backend.prepare(run)
    if prepared is not None:
        return prepared
    try:
        job = backend.start(run)
    except BackendUnavailable as exc:
        return RunOutcome.failure(Reason.BACKEND_UNAVAILABLE, str(exc))
    return backend.supervise(run, job, supervision)


class _StoppingJob:
    """The job as the loop sees it: stopping goes through the backend's ``cancel``, or its
    ``detach`` when the worker shuts down."""

    def __init__(
        self, backend: ExecutionBackend, job: executor.Job, requeueing: Callable[[], bool]
    ) -> None:
        self.backend, self.job, self.requeueing = backend, job, requeueing

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        return self.job.read(timeout)

    def drained(self) -> bool:
        return self.job.drained()

    def wait(self, timeout: float | None) -> int | None:
        return self.job.wait(timeout)

    def stop(self, grace_seconds: float) -> None:
        if self.requeueing() and self.backend.detach(self.job):
            return
        self.backend.cancel(self.job)

    def close(self) -> None:
        self.job.close()


def _supervise(
    backend: ExecutionBackend, run: RunSpec, job: executor.Job, supervision: Supervision
) -> RunOutcome:
    requeue = False
    tracker = ProgressTracker(
        curve=[list(point) for point in run.loss_curve],
        series={name: [list(p) for p in points] for name, points in run.series.items()},
    )
    lines = LineSplitter(tracker.feed_line)
    # The loop's own captures: what the run shows while it runs is the same head-and-tail cut
    # as its final output.
    captures = {
        name: executor.BoundedCapture(settings.TUNIX_OUTPUT_MAX_BYTES)
        for name in ("stdout", "stderr")
    }
    written = dict.fromkeys(captures, 0)  # bytes of each stream at the last heartbeat
    if reference := backend.reference(job):
        # Said at once: a person (or the next attempt's operator) can find the job while it
        # runs. A run cancelled meanwhile is noticed at the first tick.
        supervision.heartbeat({"execution_ref": reference})
    last_beat = time.monotonic()

    def on_output(stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            lines.feed(chunk)

    def tick() -> bool:
        """Every PROGRESS_SECONDS: progress and output if they changed, else a heartbeat when
        one is due. True stops the job (the run was cancelled, reaped, or we drain)."""
        nonlocal requeue, last_beat
        now = time.monotonic()
        changed = tracker.take()
        if any(capture.total != written[name] for name, capture in captures.items()):
            changed = {**(changed or {}), **{k: v.text() for k, v in captures.items()}}
            written.update((name, capture.total) for name, capture in captures.items())
        if changed is not None or now - last_beat >= settings.TUNIX_HEARTBEAT_SECONDS:
            last_beat = now
            if not supervision.heartbeat(changed):
                return True
        since = supervision.drain_since()
        if since is not None and time.monotonic() - since >= settings.TUNIX_SHUTDOWN_GRACE_SECONDS:
            requeue = True
            return True
        return False

    result = executor.supervise(
        _StoppingJob(backend, job, lambda: requeue),
        timeout_seconds=run.timeout_seconds,
        max_output_bytes=settings.TUNIX_OUTPUT_MAX_BYTES,
        kill_grace_seconds=settings.TUNIX_KILL_GRACE_SECONDS,
        tick_seconds=min(settings.TUNIX_PROGRESS_SECONDS, settings.TUNIX_HEARTBEAT_SECONDS),
        on_tick=tick,
        on_output=on_output,
        captures=captures,
    )
    lines.close()
    if requeue or _killed_by_shutdown(result, supervision.drain_since):
        raise Requeue()
    return backend.outcome(run, result, tracker)


def _killed_by_shutdown(
    result: executor.ExecutionResult, drain_since: Callable[[], float | None]
) -> bool:
    """True if a signal from outside stopped the training because the host's worker is
    stopping: a service manager that signals every process of the service (systemd's default
    KillMode=control-group, `docker stop` with an init) reaches the training as well as the
    qcluster. The master marks the drain in the same instant; give it a moment to."""
    if result.exit_code is None or result.exit_code >= 0 or result.cancelled or result.timed_out:
        return False
    deadline = time.monotonic() + 2.0
    while drain_since() is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def outcome_from_result(result: executor.ExecutionResult, *, timeout_seconds: int) -> RunOutcome:
    """What an ended job means for its run, from its exit alone."""
    ended = RunOutcome(
        Ending.COMPLETED, exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr
    )
    if result.timed_out:
        message = f"run exceeded its timeout of {timeout_seconds} s; its process group was killed"
        return dataclasses.replace(
            ended, status=Ending.FAILED, reason=Reason.TIMEOUT, message=message
        )
    if result.cancelled:
        return dataclasses.replace(ended, status=Ending.CANCELLED)
    code = result.exit_code
    if code != 0:
        if code is not None and code < 0:
            message = f"training process was killed by signal {_signal_name(-code)}"
        else:
            message = f"training process exited with code {code}"
        return dataclasses.replace(
            ended, status=Ending.FAILED, reason=Reason.NONZERO_EXIT, message=message
        )
    return ended
