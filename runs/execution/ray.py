"""Ray: the trainer as a Ray job on an existing Ray cluster (TUNIX_RAY_ADDRESS).

The worker that claimed the run submits ``python -m runs.trainer CONFIG`` through Ray's Jobs
API and then supervises the job with the loop every backend shares: the job's log is the
output (progress lines, heartbeat, live output), cancel and the timeout stop the job, and its
end decides the outcome. Artifacts land in the run's directory, which Ray's nodes mount at the
same path (TUNIX_SHARED_STORAGE; the settings refuse a Ray address without it).

A supervisor can die while its job trains on. Submission ids are ``<run id>-a<attempt>``, so
the next attempt of the run looks up the jobs of the attempts before it: one still running (or
waiting for resources) is reattached to, one that succeeded is adopted (its log replays into the
run), and one that ended otherwise is followed by a new job that resumes from the run's last
checkpoint. A worker that shuts down leaves its job running and hands the run back to the
queue for the same reattachment; nothing is started twice.

Ray's client is imported when a run of this mode first starts (requirements-ray.txt): web
hosts and workers that never submit one need not install it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import shlex
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.conf import settings

from runs import executor
from runs.execution.base import BackendUnavailable, ExecutionBackend, RunSpec, Supervision
from runs.execution.dryrun import check
from runs.execution.local import offline_environment, trainer_argv
from runs.outcomes import Ending, Reason, RunOutcome
from runs.resources import CPU, Resources, configured, servable

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger("tunix_rt.runs")

NOT_CONFIGURED_MESSAGE = (
    "mode 'ray' needs a Ray cluster, and none is configured here (set TUNIX_RAY_ADDRESS)"
)
RAY_MISSING_MESSAGE = (
    "mode 'ray' needs Ray's job client where the run is supervised (the worker host, or the "
    "web host for a synchronous run), and it is not installed there (install it with: pip "
    "install -r requirements-ray.txt)"
)
# Every request to the cluster gives up after this long: a cluster that stops answering must
# not stall the loop that heart-beats for the run (Ray's client sets no timeout of its own).
REQUEST_TIMEOUT_SECONDS = 10.0
# How often a job's status and log are read while it runs. Ray serves a log whole, so a long
# log is read less often: one more POLL_SECONDS per LOG_BYTES_PER_POLL, at most
# MAX_POLL_SECONDS (which also bounds how late the job's end is seen).
POLL_SECONDS = 0.5
LOG_BYTES_PER_POLL = 1_000_000
MAX_POLL_SECONDS = 5.0
# Connecting tries this long (at most a quarter of TUNIX_STALE_AFTER_SECONDS: the worker does
# not heart-beat meanwhile) before the run fails with backend_unavailable: a blip is ridden
# out, a wrong address is reported at once.
START_RETRY_SECONDS = 3.0
# After stop_job a job's process ends within a few seconds; one that does not (Ray keeps a job
# that waits for resources PENDING whatever it is told) is left behind after this long.
STOP_WAIT_SECONDS = 15.0
_LIVE = frozenset({"PENDING", "RUNNING"})

# Ray's names of the accelerators a device type may name (ray.util.accelerators): a node
# advertises "accelerator_type:<name>" as a resource, and a job asks for a sliver of it.
_TPU_NAMES = {"v5e": "TPU-V5LITEPOD", "v5litepod": "TPU-V5LITEPOD"}
ACCELERATOR_SHARE = 0.001


def ray_accelerator_type(resources: Resources) -> str:
    """Ray's accelerator name for a device type: "a100" -> "A100", "v5e" -> "TPU-V5LITEPOD"."""
    device_type = resources.device_type
    if resources.kind == "tpu":
        return _TPU_NAMES.get(device_type, f"TPU-{device_type.upper()}")
    return device_type.upper()


def entrypoint_resources(resources: Resources | None) -> dict[str, Any]:
    """The submit_job arguments that place a run's job where its resources are: CPUs by count
    (so Ray queues jobs rather than crowd a node), GPUs by count, TPU chips as Ray's "TPU"
    resource, and a device type as Ray's accelerator_type resource."""
    asked = resources or Resources()
    placement: dict[str, Any] = {}
    custom: dict[str, float] = {}
    if asked.kind == CPU:
        placement["entrypoint_num_cpus"] = asked.count
    elif asked.kind == "gpu":
        placement["entrypoint_num_gpus"] = asked.count
    else:
        custom["TPU"] = asked.count
    if asked.device_type:
        custom[f"accelerator_type:{ray_accelerator_type(asked)}"] = ACCELERATOR_SHARE
    if custom:
        placement["entrypoint_resources"] = custom
    return placement


def poll_interval(log_chars: int) -> float:
    """Seconds until the next read of a job whose log is ``log_chars`` long."""
    return min(POLL_SECONDS * (1 + log_chars // LOG_BYTES_PER_POLL), MAX_POLL_SECONDS)


def submission_id(run_id: str, attempt: int) -> str:
    return f"{run_id}-a{attempt}"


def entrypoint(run: RunSpec) -> str:
    """The job's command: the trainer with the run's config, from the run's directory. Ray runs
    it through a shell, so every word is quoted; none comes from a request."""
    argv = trainer_argv(run.config_path)
    if not settings.TUNIX_TRAINER_COMMAND:
        argv = [settings.TUNIX_RAY_PYTHON, *argv[1:]]  # the node's interpreter, not ours
    return f"cd {shlex.quote(str(run.output_dir))} && exec {shlex.join(argv)}"


def runtime_env() -> dict[str, Any]:
    """What the job's process needs: the project importable at its path on the Ray nodes,
    unbuffered output (the log is the live output), the Hugging Face hub offline unless this
    deployment downloads models, and whatever TUNIX_RAY_RUNTIME_ENV adds."""
    extra: dict[str, Any] = copy.deepcopy(settings.TUNIX_RAY_RUNTIME_ENV)
    # Only the variables set here, never the worker's own: a runtime_env is shown to anyone who
    # can read the cluster's dashboard, so a token goes in TUNIX_RAY_RUNTIME_ENV on purpose.
    ours = offline_environment()
    ours["PYTHONPATH"] = str(settings.TUNIX_RAY_PROJECT_DIR)
    ours["PYTHONUNBUFFERED"] = "1"
    extra["env_vars"] = {**ours, **extra.get("env_vars", {})}
    return extra


@functools.cache
def _client_class() -> type[JobSubmissionClient]:
    """Ray's job client with a timeout on every request (made once: Ray is imported here)."""
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):  # type: ignore[misc]
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", REQUEST_TIMEOUT_SECONDS)
            return super()._do_request(method, endpoint, **kwargs)

    return Client


def _client(address: str) -> JobSubmissionClient:
    """A client of the cluster at ``address``. Raises ConnectionError when it does not answer,
    ImportError without Ray."""
    return _client_class()(address)


def _missing(exc: Exception) -> bool:
    """Ray's client reports an unknown submission id as a RuntimeError quoting a 404."""
    return isinstance(exc, RuntimeError) and "status code 404" in str(exc)


def _unreachable(address: str, exc: BaseException) -> str:
    return f"Ray cluster at {address} cannot be reached ({type(exc).__name__}: {exc})"


@dataclass
class _Found:
    job_id: str
    status: str
    started: float | None  # when Ray started it (epoch seconds), if it has


class RayJob:
    """A Ray job as the supervision loop sees it (executor.Job): its log, polled, is the
    output; its terminal status is the exit."""

    def __init__(
        self,
        client: JobSubmissionClient,
        address: str,
        job_id: str,
        *,
        opening: str,
        started: float | None = None,
    ) -> None:
        self.client, self.address, self.job_id = client, address, job_id
        self.opening = opening  # said once, before the log: which job this is
        self.started = started  # a job taken up: when it began, which its timeout counts from
        self.offset = 0  # characters of the log already delivered
        self.next_poll = 0.0
        self.last_answer = time.monotonic()
        self.exit_code: int | None = None
        self.ended = False
        self.lost = ""  # why the job can no longer be followed: the run fails with it
        self.announced: set[str] = set()
        self.stop_deadline: float | None = None
        self.detached = False

    def note(self, message: str) -> list[tuple[str, bytes]]:
        """A line of our own on the job's stderr: what the run's page shows beside the log."""
        return [("stderr", f"ray: {message}\n".encode())]

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        now = time.monotonic()
        if self.ended:
            return []
        if self.opening:
            opening, self.opening = self.opening, ""
            return self.note(opening)
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self.ended, self.exit_code = True, -signal.SIGKILL
            return self.note(f"job {self.job_id} did not stop; left to the cluster")
        if now < self.next_poll:
            time.sleep(min(timeout, self.next_poll - now))
            return []
        self.next_poll = now + POLL_SECONDS
        try:
            # Status first: a job seen ended has written all of the log read after it.
            info = self.client.get_job_info(self.job_id)
            log = self.client.get_job_logs(self.job_id)
        except Exception as exc:
            return self._failed_poll(exc, now)
        self.last_answer = now
        self.next_poll = now + poll_interval(len(log))
        self.announced.discard("unreachable")  # a later outage is reported again
        chunks: list[tuple[str, bytes]] = []
        if len(log) > self.offset:
            chunks.append(("stdout", log[self.offset :].encode()))
            self.offset = len(log)
        status = str(info.status)
        if status == "PENDING" and "PENDING" not in self.announced:
            self.announced.add("PENDING")
            chunks += self.note(f"job {self.job_id} is pending: {info.message or 'starting'}")
        if status in _LIVE:
            return chunks
        self.ended = True
        if status == "SUCCEEDED":
            self.exit_code = 0
        elif status == "STOPPED":
            self.exit_code = -signal.SIGTERM
        else:
            code = info.driver_exit_code
            self.exit_code = code if isinstance(code, int) and code != 0 else 1
            chunks += self.note(f"job {self.job_id} {status.lower()}: {info.message or ''}")
        return chunks

    def _failed_poll(self, exc: Exception, now: float) -> list[tuple[str, bytes]]:
        if _missing(exc):
            self.ended = True
            self.lost = (
                f"Ray job {self.job_id} no longer exists on {self.address} (was the cluster "
                "restarted?)"
            )
            return self.note(self.lost)
        first = "unreachable" not in self.announced
        self.announced.add("unreachable")
        if now - self.last_answer >= settings.TUNIX_RAY_UNREACHABLE_SECONDS:
            self.ended = True
            self.lost = (
                f"{_unreachable(self.address, exc)} for "
                f"{settings.TUNIX_RAY_UNREACHABLE_SECONDS} s while job {self.job_id} ran"
            )
            return self.note(self.lost)
        return self.note(_unreachable(self.address, exc) + "; retrying") if first else []

    def drained(self) -> bool:
        return self.ended or self.detached

    def wait(self, timeout: float | None) -> int | None:
        if self.detached:
            return -1  # nothing to wait for: the job runs on, the run goes back to the queue
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ended:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            self.read(0.25)
        return self.exit_code

    def stop(self, grace_seconds: float) -> None:
        if self.ended or self.stop_deadline is not None:
            return
        self.stop_deadline = time.monotonic() + grace_seconds + STOP_WAIT_SECONDS
        try:
            self.client.stop_job(self.job_id)
        except Exception as exc:  # the deadline above ends the wait either way
            log.warning("ray_stop_failed", extra={"fields": {"job": self.job_id, "error": exc}})

    def detach(self) -> None:
        self.detached = True

    def close(self) -> None:
        """The job is the cluster's: nothing of it lives in this process."""


class RayBackend(ExecutionBackend):
    mode = "ray"
    trains = True
    places_remotely = True

    def unavailable(self) -> str | None:
        return None if settings.TUNIX_RAY_ADDRESS else NOT_CONFIGURED_MESSAGE

    def refuse_resources(self, asked: Resources) -> str | None:
        # The most a job may ask of the cluster (its autoscaler's maximum, say); unset: as much
        # as Ray may place, and Ray fails a job it cannot place after its start timeout.
        if not settings.TUNIX_RAY_RESOURCE_CLASSES:
            return None
        classes = configured(settings.TUNIX_RAY_RESOURCE_CLASSES)
        return servable(
            asked, classes, what="class of the Ray cluster", setting="TUNIX_RAY_RESOURCE_CLASSES"
        )

    def prepare(self, run: RunSpec) -> RunOutcome | None:
        if refusal := self.unavailable():
            return RunOutcome.failure(Reason.BACKEND_UNAVAILABLE, refusal)
        # The config is written to the shared run directory, where the job reads it.
        checked = check(run)
        return None if checked.status == Ending.COMPLETED else checked

    def start(self, run: RunSpec) -> executor.Job:
        address = str(settings.TUNIX_RAY_ADDRESS)
        client = self._connect(address)
        found = self._earlier_job(client, address, run)
        if found is not None and found.status in {*_LIVE, "SUCCEEDED"}:
            opening = f"reattached to job {found.job_id} ({found.status.lower()}) on {address}"
            return RayJob(client, address, found.job_id, opening=opening, started=found.started)
        job_id = submission_id(run.run_id, run.attempt)
        try:
            client.submit_job(
                entrypoint=entrypoint(run),
                submission_id=job_id,
                runtime_env=runtime_env(),
                metadata={"tunix_run_id": run.run_id, "attempt": str(run.attempt)},
                **entrypoint_resources(run.resources),
            )
        except (ConnectionError, OSError) as exc:
            raise BackendUnavailable(_unreachable(address, exc)) from exc
        except Exception as exc:  # Ray answered no (a malformed runtime_env, an id in use)
            raise BackendUnavailable(
                f"Ray cluster at {address} did not take job {job_id} ({type(exc).__name__}: {exc})"
            ) from exc
        after = f" (job {found.job_id} {found.status.lower()})" if found else ""
        return RayJob(
            client, address, job_id, opening=f"submitted job {job_id} to {address}{after}"
        )

    def _connect(self, address: str) -> JobSubmissionClient:
        if not address:  # Ray's client would look for a cluster of its own choosing
            raise BackendUnavailable(NOT_CONFIGURED_MESSAGE)
        try:
            import ray.job_submission  # noqa: F401
        except ImportError:
            raise BackendUnavailable(RAY_MISSING_MESSAGE) from None
        patience = min(START_RETRY_SECONDS, settings.TUNIX_STALE_AFTER_SECONDS / 4)
        deadline = time.monotonic() + patience
        while True:
            try:
                return _client(address)
            except (ConnectionError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(_unreachable(address, exc)) from exc
                time.sleep(0.5)

    def _earlier_job(
        self, client: JobSubmissionClient, address: str, run: RunSpec
    ) -> _Found | None:
        """The newest job an earlier attempt of this run submitted, if the cluster has one."""
        for attempt in range(run.attempt - 1, 0, -1):
            job_id = submission_id(run.run_id, attempt)
            try:
                info = client.get_job_info(job_id)
            except Exception as exc:
                if _missing(exc):
                    continue
                raise BackendUnavailable(_unreachable(address, exc)) from exc
            started = info.start_time / 1000 if info.start_time else None  # Ray's are in ms
            return _Found(job_id=job_id, status=str(info.status), started=started)
        return None

    def supervise(self, run: RunSpec, job: executor.Job, supervision: Supervision) -> RunOutcome:
        if isinstance(job, RayJob) and job.started is not None:
            # A job taken up from an earlier attempt has had part of its time already: the
            # run's timeout counts from the job's start, not from this attempt's.
            spent = max(time.time() - job.started, 0.0)
            left = max(math.ceil(run.timeout_seconds - spent), 1)
            outcome = super().supervise(
                dataclasses.replace(run, timeout_seconds=left), job, supervision
            )
            if outcome.reason == Reason.TIMEOUT:
                outcome = dataclasses.replace(
                    outcome,
                    message=f"run exceeded its timeout of {run.timeout_seconds} s (counted "
                    f"from the start of job {job.job_id}); the job was stopped",
                )
        else:
            outcome = super().supervise(run, job, supervision)
        lost = job.lost if isinstance(job, RayJob) else ""
        if lost and outcome.status != Ending.CANCELLED:
            return RunOutcome.failure(
                Reason.BACKEND_UNAVAILABLE,
                lost,
                stdout=outcome.stdout,
                stderr=outcome.stderr,
                progress=outcome.progress,
            )
        return outcome

    def release(self, *, run_id: str, attempts: int) -> list[str]:
        address = str(settings.TUNIX_RAY_ADDRESS)
        client = self._connect(address)
        stopped = []
        for attempt in range(1, attempts + 1):
            job_id = submission_id(run_id, attempt)
            try:
                if str(client.get_job_info(job_id).status) in _LIVE:
                    client.stop_job(job_id)
                    stopped.append(job_id)
            except Exception as exc:
                if not _missing(exc):
                    raise BackendUnavailable(_unreachable(address, exc)) from exc
        return stopped

    def reference(self, job: executor.Job) -> str:
        return job.job_id if isinstance(job, RayJob) else ""

    def reference_url(self, reference: str) -> str | None:
        # The dashboard serves the Jobs API: its job page takes a submission id.
        base = settings.TUNIX_RAY_DASHBOARD_URL or settings.TUNIX_RAY_ADDRESS
        return f"{base.rstrip('/')}/#/jobs/{quote(reference)}" if base else None

    def detach(self, job: executor.Job) -> bool:
        if isinstance(job, RayJob):
            job.detach()
            return True
        return False
