"""Every write Tunix RT makes, and the only place a run's status changes.

Status changes are conditional UPDATEs guarded by the expected current status (and, for a
worker's writes, its attempt number), so a stale writer changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs import executor, metrics, model_catalog, training_config, webhooks
from runs.datasets import DatasetError, validate_key, validate_stream
from runs.dryrun import CONFIG_FILE_NAME, dry_run, training_spec
from runs.models import (
    TERMINAL_STATUSES,
    Dataset,
    DeliveryStatus,
    FailureReason,
    RunMode,
    RunStatus,
    TunixRun,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpointState,
    WorkerHeartbeat,
)
from runs.paths import safe_join
from runs.progress import LineSplitter, ProgressTracker
from runs.telemetry import timed_write

log = logging.getLogger("tunix_rt.runs")

UserLike = AbstractBaseUser | AnonymousUser | None


class ServiceError(Exception):
    """A refused request; ``field`` names the input at fault when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class IllegalTransition(ServiceError):
    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"a run cannot go from {source} to {target}")
        self.source = source
        self.target = target


# The status machine. Anything not listed here is refused before touching the database.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    # running -> pending is a re-queue (recovery after a lost worker or a graceful shutdown).
    RunStatus.RUNNING: frozenset(
        {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PENDING}
    ),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def _real_user(user: UserLike) -> User | None:
    return user if isinstance(user, User) else None


def worker_identity(role: str = "worker") -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------- datasets


def dataset_import(
    *, key: str, source: IO[bytes] | Iterable[bytes], user: UserLike = None
) -> Dataset:
    """Validate a JSONL upload and register it. A refused file leaves no row and no file."""
    try:
        validate_key(key)
    except DatasetError as exc:
        raise ServiceError(exc.reason, field="key") from None
    if Dataset.objects.filter(key=key).exists():
        raise Conflict(f"dataset {key!r} already exists", field="key")
    root = Path(settings.TUNIX_DATASETS_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    relative = f"{key}.jsonl"
    final = safe_join(root, relative)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".upload-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            try:
                stats = validate_stream(
                    source,
                    max_bytes=settings.TUNIX_DATASET_MAX_BYTES,
                    max_record_bytes=settings.TUNIX_DATASET_MAX_RECORD_BYTES,
                    sink=sink,
                )
            except DatasetError as exc:
                raise ServiceError(str(exc), field="file") from None
            sink.flush()
            os.fsync(sink.fileno())
        try:
            with timed_write("dataset_import"):
                dataset = Dataset.objects.create(
                    key=key,
                    format=stats.format,
                    record_count=stats.record_count,
                    size_bytes=stats.size_bytes,
                    sha256=stats.sha256,
                    file_path=relative,
                    created_by=_real_user(user),
                )
                # Inside the transaction: if the rename fails the row rolls back with it.
                os.replace(tmp, final)
        except IntegrityError:
            raise Conflict(f"dataset {key!r} already exists", field="key") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info(
        "dataset_imported",
        extra={"fields": {"key": key, "records": stats.record_count, "bytes": stats.size_bytes}},
    )
    return dataset


def dataset_path(dataset: Dataset) -> Path:
    return safe_join(Path(settings.TUNIX_DATASETS_ROOT), dataset.file_path)


# --------------------------------------------------------------------------- run creation


def request_fingerprint(payload: dict[str, Any]) -> str:
    """A stable hash of a run request, to tell a retry from a different request."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyMismatch(ServiceError):
    """The idempotency key was used before with a different request."""


@dataclass(frozen=True)
class Submission:
    run: TunixRun
    replayed: bool  # True: the key matched an earlier identical request; nothing new was made


def _validated_fields(
    *,
    dataset_key: str,
    model_id: str,
    mode: str,
    config: dict[str, Any],
    timeout_seconds: int | None,
) -> dict[str, Any]:
    """Everything checkable at submit time; raises ServiceError naming the field."""
    dataset = Dataset.objects.filter(key=dataset_key).first()
    if dataset is None:
        raise ServiceError(f"unknown dataset {dataset_key!r}", field="dataset_key")
    if mode not in RunMode.values:
        raise ServiceError(f"mode must be one of {RunMode.values}", field="mode")
    _check_model(model_id, mode)
    clean, errors = training_config.normalise(config)
    if errors:
        name, reason = sorted(errors.items())[0]
        raise ServiceError(f"{name}: {reason}", field=name)
    if clean["learning_rate"] is None:  # stored resolved: the run shows what it trains with
        clean["learning_rate"] = model_catalog.default_learning_rate(model_id)
    if timeout_seconds is not None and not (
        1 <= timeout_seconds <= settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS
    ):
        raise ServiceError(
            f"timeout_seconds must be in [1, {settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS}]",
            field="timeout_seconds",
        )
    fingerprint = request_fingerprint(
        {
            "dataset_key": dataset_key,
            "model_id": model_id,
            "mode": mode,
            "config": clean,
            "timeout_seconds": timeout_seconds,
        }
    )
    return {
        "dataset": dataset,
        "model_id": model_id,
        "mode": mode,
        "config": clean,
        "timeout_seconds": timeout_seconds,
        "request_fingerprint": fingerprint,
    }


def _check_model(model_id: str, mode: str) -> None:
    """Refuse at submit time a model the built-in trainer would refuse later. A custom
    TUNIX_TRAINER_COMMAND interprets model ids itself, so any well-formed id passes."""
    if settings.TUNIX_TRAINER_COMMAND:
        return
    if model_catalog.lookup(model_id) is None:
        raise ServiceError(model_catalog.unknown_model_message(model_id), field="model_id")
    directory = _checkpoint_dir(model_id)
    # Checked only where it can be known here: a local run, no download allowed, and the
    # workers' model directory visible from this host.
    if (
        directory is None
        or mode != RunMode.LOCAL
        or settings.TUNIX_MODEL_DOWNLOAD
        or not settings.TUNIX_MODELS_DIR_SHARED
    ):
        return
    if missing := model_catalog.missing_checkpoint_files(directory):
        raise ServiceError(
            model_catalog.missing_checkpoint_message(model_id, directory, missing),
            field="model_id",
        )


def _replay(user: User | None, key: str, fingerprint: str) -> TunixRun | None:
    """The run an earlier request with this key made, if any; refuses a changed request."""
    if user is None:
        return None
    earlier = (
        TunixRun.objects.select_related("dataset")
        .filter(created_by=user, client_request_id=key)
        .first()
    )
    if earlier is not None and earlier.request_fingerprint != fingerprint:
        raise IdempotencyMismatch(
            f"idempotency key {key!r} was already used with a different request",
            field="client_request_id",
        )
    return earlier


def task_timeout_seconds(run: TunixRun) -> int:
    """django-q2's limit for this run's task: above the run's own timeout and kill grace."""
    run_timeout = run.timeout_seconds or settings.TUNIX_RUN_TIMEOUT_SECONDS
    return int(run_timeout + settings.TUNIX_KILL_GRACE_SECONDS + 60)


TASK_FUNC = "runs.tasks.execute_run"


def task_queue(mode: str) -> str | None:
    """The queue a run's task goes to: trainings to TUNIX_TRAINING_QUEUE when one is set, the
    rest (and everything otherwise) to the default one (None)."""
    if mode == RunMode.LOCAL and settings.TUNIX_TRAINING_QUEUE:
        return str(settings.TUNIX_TRAINING_QUEUE)
    return None


def _enqueue_task(run: TunixRun) -> str:
    """Write the queue task. Callers hold a transaction so the task commits with the run."""
    from django_q.tasks import async_task

    task_id: str = async_task(
        TASK_FUNC,
        str(run.id),
        task_name=f"run-{run.id}",
        timeout=task_timeout_seconds(run),
        ack_failure=True,
        cluster=task_queue(run.mode),
    )
    return task_id


def run_submit(
    *,
    user: UserLike,
    dataset_key: str,
    model_id: str,
    mode: str,
    config: dict[str, Any],
    enqueue: bool,
    timeout_seconds: int | None = None,
    client_request_id: str | None = None,
) -> Submission:
    """Register a pending run (and, with ``enqueue``, its queue task in the same transaction).

    With a client_request_id the same request from the same user returns the first run; two
    concurrent ones are settled by the unique constraint, not by a read-then-write.
    """
    owner = _real_user(user)
    fields = _validated_fields(
        dataset_key=dataset_key,
        model_id=model_id,
        mode=mode,
        config=config,
        timeout_seconds=timeout_seconds,
    )
    fingerprint = fields["request_fingerprint"]
    if client_request_id and (earlier := _replay(owner, client_request_id, fingerprint)):
        return Submission(run=earlier, replayed=True)
    try:
        with timed_write("run_enqueue" if enqueue else "run_create"):
            run = TunixRun.objects.create(
                **fields, client_request_id=client_request_id, created_by=owner
            )
            if enqueue:
                _enqueue_task(run)
    except IntegrityError:
        # A concurrent request with the same key won the unique constraint.
        if client_request_id and (earlier := _replay(owner, client_request_id, fingerprint)):
            return Submission(run=earlier, replayed=True)
        raise
    metrics.RUNS_TOTAL.labels(RunStatus.PENDING).inc()
    log.info(
        "run_transition",
        extra={"fields": {"run_id": run.id, "from": "", "to": RunStatus.PENDING, "attempt": 0}},
    )
    return Submission(run=run, replayed=False)


def run_create(
    *,
    user: UserLike,
    dataset_key: str,
    model_id: str,
    mode: str,
    config: dict[str, Any],
    timeout_seconds: int | None = None,
    client_request_id: str | None = None,
) -> TunixRun:
    """Register a pending run without queueing it (the sync path executes it in-process)."""
    return run_submit(
        user=user,
        dataset_key=dataset_key,
        model_id=model_id,
        mode=mode,
        config=config,
        enqueue=False,
        timeout_seconds=timeout_seconds,
        client_request_id=client_request_id,
    ).run


# --------------------------------------------------------------------------- status machine


def _transition(
    *,
    run_id: UUID,
    source: str,
    target: str,
    op: str,
    expected_attempt: int | None = None,
    log_attempt: int | None = None,
    run_started_at: datetime | None = None,
    **fields: Any,
) -> bool:
    """The one guarded UPDATE through which every status change goes. True if it applied."""
    if target not in ALLOWED_TRANSITIONS.get(source, frozenset()):
        raise IllegalTransition(source, target)
    rows = TunixRun.objects.filter(id=run_id, status=source)
    if expected_attempt is not None:
        rows = rows.filter(attempt=expected_attempt)
    with timed_write(op):
        updated = rows.update(status=target, **fields)
        if updated and target in TERMINAL_STATUSES and settings.TUNIX_WEBHOOK_URLS:
            # In the transition's own transaction: the event exists exactly when the change does.
            _record_run_event(run_id)
    if updated:
        line: dict[str, Any] = {
            "run_id": run_id,
            "from": source,
            "to": target,
            "attempt": log_attempt if log_attempt is not None else expected_attempt,
        }
        metrics.RUNS_TOTAL.labels(target).inc()
        if target in TERMINAL_STATUSES and run_started_at is not None:
            duration = (timezone.now() - run_started_at).total_seconds()
            metrics.RUN_DURATION.labels(target).observe(duration)
            line["duration_s"] = round(duration, 3)
        log.info("run_transition", extra={"fields": line})
    return updated == 1


def run_claim(*, run_id: UUID, worker_id: str) -> TunixRun | None:
    """pending -> running for exactly one claimant; None if someone else won or it is gone."""
    run = TunixRun.objects.select_related("dataset").filter(id=run_id).first()
    if run is None or run.status != RunStatus.PENDING:
        return None
    now = timezone.now()
    claimed = _transition(
        run_id=run_id,
        source=RunStatus.PENDING,
        target=RunStatus.RUNNING,
        op="run_claim",
        expected_attempt=run.attempt,
        log_attempt=run.attempt + 1,
        attempt=run.attempt + 1,
        started_at=now,
        heartbeat_at=now,
        worker_id=worker_id[:128],
    )
    if not claimed:
        return None
    run.status, run.attempt, run.started_at = RunStatus.RUNNING, run.attempt + 1, now
    run.heartbeat_at, run.worker_id = now, worker_id[:128]
    return run


def run_heartbeat(*, run_id: UUID, attempt: int, updates: dict[str, Any] | None = None) -> bool:
    """Refresh the heartbeat of our attempt, with what changed since the last one (a
    ProgressTracker snapshot: progress, loss_curve, metrics; and the live stdout/stderr, cut
    like the final output); False means the run is no longer ours."""
    with timed_write("run_heartbeat"):
        updated = TunixRun.objects.filter(
            id=run_id, status=RunStatus.RUNNING, attempt=attempt
        ).update(heartbeat_at=timezone.now(), **(updates or {}))
    return updated == 1


@dataclass(frozen=True)
class RunOutcome:
    status: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    reason: str = ""
    message: str = ""
    # A ProgressTracker snapshot (progress, loss_curve, metrics): the final word of a training.
    progress: dict[str, Any] | None = None


def run_finish(
    *,
    run_id: UUID,
    attempt: int,
    outcome: RunOutcome,
    started_at: datetime | None = None,
    op: str = "run_finish",
) -> bool:
    """running -> terminal, fenced on the attempt that did the work."""
    limit = settings.TUNIX_OUTPUT_MAX_BYTES
    return _transition(
        run_id=run_id,
        source=RunStatus.RUNNING,
        target=outcome.status,
        op=op,
        expected_attempt=attempt,
        run_started_at=started_at,
        completed_at=timezone.now(),
        exit_code=outcome.exit_code,
        stdout=executor.truncate_text(outcome.stdout, limit),
        stderr=executor.truncate_text(outcome.stderr, limit),
        error_reason=outcome.reason,
        error_message=outcome.message[:4000],
        **(outcome.progress or {}),
    )


# --------------------------------------------------------------------------- execution


def _artifact_dir(run: TunixRun) -> Path:
    return safe_join(Path(settings.TUNIX_ARTIFACTS_ROOT), run.output_dir)


def _spec(run: TunixRun, output_dir: Path) -> dict[str, Any]:
    return training_spec(
        run_id=str(run.id),
        model_id=run.model_id,
        mode=run.mode,
        dataset_key=run.dataset.key,
        dataset_path=dataset_path(run.dataset),
        dataset_format=run.dataset.format,
        config=run.config,
        output_dir=output_dir,
        attempt=run.attempt,
        checkpoint_dir=_checkpoint_dir(run.model_id),
        allow_download=settings.TUNIX_MODEL_DOWNLOAD,
        resume=settings.TUNIX_RESUME_TRAINING,
    )


def _checkpoint_dir(model_id: str) -> Path | None:
    """Where this worker host keeps a real model's checkpoint (None for the preset or an id
    outside the catalog, which a custom trainer interprets itself)."""
    entry = model_catalog.lookup(model_id)
    if entry is None or entry.is_preset:
        return None
    return model_catalog.checkpoint_directory(Path(settings.TUNIX_MODELS_DIR), model_id)


def tunix_runtime_available() -> bool:
    return importlib.util.find_spec("tunix") is not None


def _execute_dry_run(run: TunixRun) -> RunOutcome:
    output_dir = _artifact_dir(run)
    result = dry_run(
        spec=_spec(run, output_dir),
        expected_sha256=run.dataset.sha256,
        expected_records=run.dataset.record_count,
        max_bytes=settings.TUNIX_DATASET_MAX_BYTES,
        max_record_bytes=settings.TUNIX_DATASET_MAX_RECORD_BYTES,
        config_path=output_dir / CONFIG_FILE_NAME,
    )
    if result.ok:
        return RunOutcome(status=RunStatus.COMPLETED, exit_code=0, stdout=result.summary)
    return RunOutcome(
        status=RunStatus.FAILED,
        exit_code=1,
        stderr=result.message + "\n",
        reason=result.reason,
        message=result.message,
    )


class _Requeue(Exception):
    """The worker is shutting down: hand the run back to the queue instead of finishing it."""


def trainer_argv(config_path: Path) -> list[str]:
    """Local mode's command: the configured trainer, or the project's Tunix trainer."""
    prefix = settings.TUNIX_TRAINER_COMMAND or [sys.executable, "-m", "runs.trainer"]
    return [*prefix, str(config_path)]


def trainer_environment() -> dict[str, str]:
    """The training process's environment: the worker's, with the project importable (the
    child runs in the run's directory) and the Hugging Face hub offline unless this worker
    host may download models."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(settings.BASE_DIR), env.get("PYTHONPATH", "")) if p
    )
    if not settings.TUNIX_MODEL_DOWNLOAD:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _execute_local(run: TunixRun, drain_since: Callable[[], float | None]) -> RunOutcome:
    # Everything dry-run checks must hold before a real training starts.
    checked = _execute_dry_run(run)
    if checked.status != RunStatus.COMPLETED:
        return checked
    uses_builtin_trainer = not settings.TUNIX_TRAINER_COMMAND
    if uses_builtin_trainer and (
        not tunix_runtime_available() or importlib.util.find_spec("runs.trainer") is None
    ):
        message = (
            "local mode needs the Tunix runtime on the worker host, and it is not installed "
            "here (install it with: pip install -r requirements-tunix.txt)"
        )
        return RunOutcome(
            status=RunStatus.FAILED,
            exit_code=None,
            stderr=message + "\n",
            reason=FailureReason.RUNTIME_MISSING,
            message=message,
        )
    output_dir = _artifact_dir(run)
    requeue = False
    # The curve so far: a resumed attempt continues it, one that starts over replaces it.
    tracker = ProgressTracker(curve=[list(point) for point in run.loss_curve or []])
    lines = LineSplitter(tracker.feed_line)
    # The executor's own captures: what the run shows while it runs is the same head-and-tail
    # cut as its final output.
    captures = {
        name: executor.BoundedCapture(settings.TUNIX_OUTPUT_MAX_BYTES)
        for name in ("stdout", "stderr")
    }
    written = dict.fromkeys(captures, 0)  # bytes of each stream at the last write
    last_beat = time.monotonic()

    def on_output(stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            lines.feed(chunk)

    def tick() -> bool:
        """Every PROGRESS_SECONDS: progress and output if they changed, else a heartbeat when
        one is due. True stops the child (the run was cancelled, reaped, or we drain)."""
        nonlocal requeue, last_beat
        now = time.monotonic()
        changed = tracker.take()
        if any(capture.total != written[name] for name, capture in captures.items()):
            changed = {**(changed or {}), **{k: v.text() for k, v in captures.items()}}
            written.update((name, capture.total) for name, capture in captures.items())
        if changed is not None or now - last_beat >= settings.TUNIX_HEARTBEAT_SECONDS:
            last_beat = now
            if not run_heartbeat(run_id=run.id, attempt=run.attempt, updates=changed):
                return True
        since = drain_since()
        if since is not None and time.monotonic() - since >= settings.TUNIX_SHUTDOWN_GRACE_SECONDS:
            requeue = True
            return True
        return False

    result = executor.execute(
        trainer_argv(output_dir / CONFIG_FILE_NAME),
        timeout_seconds=run.timeout_seconds or settings.TUNIX_RUN_TIMEOUT_SECONDS,
        max_output_bytes=settings.TUNIX_OUTPUT_MAX_BYTES,
        cwd=output_dir,
        env=trainer_environment(),
        kill_grace_seconds=settings.TUNIX_KILL_GRACE_SECONDS,
        tick_seconds=min(settings.TUNIX_PROGRESS_SECONDS, settings.TUNIX_HEARTBEAT_SECONDS),
        on_tick=tick,
        on_output=on_output,
        captures=captures,
    )
    lines.close()
    if requeue or _killed_by_shutdown(result, drain_since):
        raise _Requeue()
    outcome = outcome_from_result(result, timeout_seconds=run.timeout_seconds)
    if outcome.reason == FailureReason.NONZERO_EXIT and tracker.error is not None:
        # The trainer said why it refused the run: that beats "exited with code 2".
        reason, message = tracker.error
        known = reason in FailureReason.values and reason != FailureReason.NONE
        outcome = dataclasses.replace(
            outcome, reason=reason if known else FailureReason.NONZERO_EXIT, message=message
        )
    return dataclasses.replace(outcome, progress=tracker.snapshot())


def _never_draining() -> float | None:
    return None


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


def outcome_from_result(
    result: executor.ExecutionResult, *, timeout_seconds: int | None
) -> RunOutcome:
    """What a finished child process means for its run."""
    if result.timed_out:
        limit = timeout_seconds or settings.TUNIX_RUN_TIMEOUT_SECONDS
        message = f"run exceeded its timeout of {limit} s; its process group was killed"
        return RunOutcome(
            status=RunStatus.FAILED,
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            reason=FailureReason.TIMEOUT,
            message=message,
        )
    if result.cancelled:
        return RunOutcome(
            status=RunStatus.CANCELLED,
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
        )
    if result.exit_code != 0:
        code = result.exit_code
        if code is not None and code < 0:
            message = f"training process was killed by signal {_signal_name(-code)}"
        else:
            message = f"training process exited with code {code}"
        return RunOutcome(
            status=RunStatus.FAILED,
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            reason=FailureReason.NONZERO_EXIT,
            message=message,
        )
    return RunOutcome(
        status=RunStatus.COMPLETED, exit_code=0, stdout=result.stdout, stderr=result.stderr
    )


def run_execute(
    *, run: TunixRun, drain_since: Callable[[], float | None] = _never_draining
) -> TunixRun:
    """Execute a run this process has claimed and record the outcome, whatever happens.

    ``drain_since`` tells when this worker began shutting down (monotonic seconds), if it has:
    a training still running TUNIX_SHUTDOWN_GRACE_SECONDS later is stopped and re-queued.
    """
    try:
        if run.mode == RunMode.DRY_RUN:
            outcome = _execute_dry_run(run)
        else:
            outcome = _execute_local(run, drain_since)
    except _Requeue:
        run_requeue(run_id=run.id, attempt=run.attempt, reason="worker shutting down")
        run.refresh_from_db()
        return run
    except Exception as exc:  # recorded on the run, never raised into the caller's loop
        log.exception("run_execute_error", extra={"fields": {"run_id": run.id}})
        outcome = RunOutcome(
            status=RunStatus.FAILED,
            reason=FailureReason.INTERNAL_ERROR,
            message=f"{type(exc).__name__}: {exc}",
            stderr=f"{type(exc).__name__}: {exc}\n",
        )
    run_finish(run_id=run.id, attempt=run.attempt, outcome=outcome, started_at=run.started_at)
    run.refresh_from_db()
    return run


def run_worker_execute(
    *, run_id: UUID, drain_since: Callable[[], float | None] = _never_draining
) -> str:
    """A queue task's whole job: claim the run, execute it, record it. Returns what happened.

    Delivery is at least once; the claim makes the effect exactly once. A worker that is
    already shutting down leaves the run to another worker.
    """
    if drain_since() is not None:
        run = TunixRun.objects.filter(id=run_id, status=RunStatus.PENDING).first()
        if run is not None:
            with transaction.atomic():
                _enqueue_task(run)
        return "deferred"
    claimed = run_claim(run_id=run_id, worker_id=worker_identity())
    if claimed is None:
        return "skipped"
    return str(run_execute(run=claimed, drain_since=drain_since).status)


def run_requeue(*, run_id: UUID, attempt: int, reason: str) -> bool:
    """running -> pending for the attempt that holds the run, with a fresh queue task."""
    with transaction.atomic():
        moved = _transition(
            run_id=run_id,
            source=RunStatus.RUNNING,
            target=RunStatus.PENDING,
            op="run_requeue",
            expected_attempt=attempt,
            started_at=None,
            heartbeat_at=None,
            worker_id="",
            error_message=f"attempt {attempt} re-queued: {reason}",
        )
        if moved:
            _enqueue_task(TunixRun.objects.get(id=run_id))
    return moved


def run_cancel(*, run_id: UUID | str) -> TunixRun:
    """Cancel a pending run (it never starts) or a running one (its worker stops the process
    group at its next heartbeat). A finished run cannot be cancelled."""
    from runs import selectors

    for _ in range(3):  # the run may move between our read and our write; look again
        run = selectors.run_get(run_id=run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        if run.is_terminal:
            raise Conflict(f"run is already {run.status}")
        moved = _transition(
            run_id=run.id,
            source=run.status,
            target=RunStatus.CANCELLED,
            op="run_cancel",
            expected_attempt=run.attempt,
            run_started_at=run.started_at,
            completed_at=timezone.now(),
            heartbeat_at=None,
            error_message="cancelled by request",
        )
        if moved:
            run.refresh_from_db()
            return run
    raise Conflict("run changed state while cancelling; try again")


@dataclass(frozen=True)
class ReapReport:
    requeued: list[UUID]
    failed: list[UUID]
    reenqueued: list[UUID]


def _queued_run_ids() -> set[str]:
    """Run ids that have a task in the queue (delivered or not, until acknowledged)."""
    from django.core.signing import BadSignature
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    ids: set[str] = set()
    for payload in OrmQ.objects.values_list("payload", flat=True).iterator():
        try:
            task = SignedPackage.loads(payload)
        except (BadSignature, Exception):  # another app's task or a corrupt row: not ours
            log.debug("queue_payload_unreadable")
            continue
        if isinstance(task, dict) and task.get("func") == TASK_FUNC and task.get("args"):
            ids.add(str(task["args"][0]))
    return ids


def run_reap(*, batch: int = 200) -> ReapReport:
    """Recover runs a worker lost, and pending runs whose queue task vanished.

    Idempotent and safe to run in many processes at once: every change is a guarded UPDATE.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS)
    requeued: list[UUID] = []
    failed: list[UUID] = []
    stale = TunixRun.objects.filter(
        status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
    ).values_list("id", "attempt", "started_at")[:batch]
    for run_id, attempt, started_at in stale:
        if attempt >= settings.TUNIX_RUN_MAX_ATTEMPTS:
            lost = RunOutcome(
                status=RunStatus.FAILED,
                reason=FailureReason.WORKER_LOST,
                message=(
                    f"worker stopped heart-beating during attempt {attempt} of "
                    f"{settings.TUNIX_RUN_MAX_ATTEMPTS}; no attempts left"
                ),
            )
            if run_finish(
                run_id=run_id, attempt=attempt, outcome=lost, started_at=started_at, op="run_reap"
            ):
                failed.append(run_id)
        elif run_requeue(run_id=run_id, attempt=attempt, reason="worker lost"):
            requeued.append(run_id)

    reenqueued: list[UUID] = []
    orphan_before = now - timedelta(seconds=settings.TUNIX_ORPHAN_AFTER_SECONDS)
    waiting = list(
        TunixRun.objects.filter(status=RunStatus.PENDING, queued_at__lt=orphan_before)
        .order_by("queued_at")
        .values_list("id", flat=True)[:batch]
    )
    if waiting:
        queued = _queued_run_ids()
        for run_id in waiting:
            if str(run_id) in queued:
                continue
            with transaction.atomic():
                # Lock-free re-check: a run that left pending meanwhile needs no task.
                run = TunixRun.objects.filter(id=run_id, status=RunStatus.PENDING).first()
                if run is not None:
                    _enqueue_task(run)
                    reenqueued.append(run_id)
    for action, ids in (("requeued", requeued), ("failed", failed), ("reenqueued", reenqueued)):
        if ids:
            metrics.RUNS_RECOVERED.labels(action).inc(len(ids))
    if requeued or failed or reenqueued:
        log.warning(
            "run_reap",
            extra={
                "fields": {
                    "requeued": len(requeued),
                    "failed": len(failed),
                    "reenqueued": len(reenqueued),
                }
            },
        )
    return ReapReport(requeued=requeued, failed=failed, reenqueued=reenqueued)


def run_sync(
    *,
    user: UserLike,
    dataset_key: str,
    model_id: str,
    mode: str,
    config: dict[str, Any],
    timeout_seconds: int | None = None,
    client_request_id: str | None = None,
) -> Submission:
    """Create a run and execute it in this process (the API's default, synchronous mode)."""
    submission = run_submit(
        user=user,
        dataset_key=dataset_key,
        model_id=model_id,
        mode=mode,
        config=config,
        enqueue=False,
        timeout_seconds=timeout_seconds,
        client_request_id=client_request_id,
    )
    if submission.replayed:
        return submission
    claimed = run_claim(run_id=submission.run.id, worker_id=worker_identity("web"))
    if claimed is None:  # cancelled between create and claim
        submission.run.refresh_from_db()
        return submission
    return Submission(run=run_execute(run=claimed), replayed=False)


def worker_heartbeat(*, worker_id: str) -> None:
    """A worker process says it is alive (even with nothing to run)."""
    host, _, pid = worker_id.removeprefix("worker:").rpartition(":")
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id[:128],
        defaults={"host": host[:255], "pid": int(pid or 0), "seen_at": timezone.now()},
    )


def worker_heartbeat_prune(*, older_than: timedelta = timedelta(days=1)) -> int:
    deleted, _ = WorkerHeartbeat.objects.filter(seen_at__lt=timezone.now() - older_than).delete()
    return deleted


# --------------------------------------------------------------------------- webhooks

DELIVER_FUNC = "runs.tasks.deliver_webhook"


def _absolute(path: str) -> str:
    return f"{settings.TUNIX_PUBLIC_URL.rstrip('/')}{path}"


def run_event_payload(run: TunixRun) -> dict[str, Any]:
    def seconds(start: datetime | None, end: datetime | None) -> float | None:
        return round((end - start).total_seconds(), 3) if start and end else None

    return {
        "type": f"run.{run.status}",
        "timestamp": timezone.now().isoformat(),
        "data": {
            "run_id": str(run.id),
            "status": run.status,
            "exit_code": run.exit_code,
            "error_reason": run.error_reason,
            "mode": run.mode,
            "dataset_key": run.dataset.key,
            "model_id": run.model_id,
            "attempt": run.attempt,
            "queued_at": run.queued_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "completed_at": run.completed_at.isoformat() if run.completed_at else None,
            "durations": {
                "queued_seconds": seconds(run.queued_at, run.started_at or run.completed_at),
                "run_seconds": seconds(run.started_at, run.completed_at),
                "total_seconds": seconds(run.queued_at, run.completed_at),
            },
            "links": {
                "run": _absolute(f"/api/tunix/runs/{run.id}"),
                "status": _absolute(f"/api/tunix/runs/{run.id}/status"),
                "page": _absolute(f"/runs/{run.id}"),
            },
        },
    }


def _enqueue_delivery(delivery: WebhookDelivery) -> None:
    from django_q.tasks import async_task

    async_task(
        DELIVER_FUNC,
        str(delivery.id),
        task_name=f"webhook-{delivery.id}",
        timeout=settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS + 60,
        ack_failure=True,
    )


def _record_run_event(run_id: UUID) -> None:
    """One delivery per configured endpoint for a run's terminal transition, queued at once."""
    run = TunixRun.objects.select_related("dataset").get(id=run_id)
    payload = run_event_payload(run)
    for url in settings.TUNIX_WEBHOOK_URLS:
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    run=run, event_type=payload["type"], endpoint=url, payload=payload
                )
        except IntegrityError:
            continue  # this event exists already: one event per transition
        _enqueue_delivery(delivery)


def _backoff_seconds(attempts: int, retry_after: float | None) -> float:
    base = settings.TUNIX_WEBHOOK_BACKOFF_SECONDS * (2 ** (attempts - 1))
    delay = min(base, settings.TUNIX_WEBHOOK_BACKOFF_MAX_SECONDS)
    delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter spreads retries out
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.TUNIX_WEBHOOK_BACKOFF_MAX_SECONDS))
    return delay


def webhook_deliver(*, delivery_id: UUID) -> str:
    """One attempt for a queued delivery; records it and decides what comes next."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(id=delivery_id, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.DELIVERING, updated_at=now
    )
    if not claimed:
        return "skipped"
    delivery = WebhookDelivery.objects.get(id=delivery_id)
    if WebhookEndpointState.objects.filter(
        url=delivery.endpoint, disabled_at__isnull=False
    ).exists():
        WebhookDelivery.objects.filter(id=delivery.id).update(
            status=DeliveryStatus.DISABLED, updated_at=now, completed_at=now
        )
        return DeliveryStatus.DISABLED
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
    headers = webhooks.signed_headers(
        secret=settings.TUNIX_WEBHOOK_SECRET, message_id=delivery.message_id, body=body, now=now
    )
    result = webhooks.post(
        url=delivery.endpoint,
        body=body,
        headers=headers,
        timeout=settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS,
        allow_private=settings.TUNIX_WEBHOOK_ALLOW_PRIVATE,
    )
    number = delivery.attempts + 1
    done = timezone.now()
    fields: dict[str, Any] = {
        "attempts": number,
        "last_status_code": result.status_code,
        "last_error": result.error[:2000],
        "updated_at": done,
    }
    if result.delivered:
        fields.update(status=DeliveryStatus.SUCCEEDED, completed_at=done)
    elif result.status_code == 410:
        fields.update(status=DeliveryStatus.DISABLED, completed_at=done)
    elif number >= settings.TUNIX_WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=DeliveryStatus.FAILED, completed_at=done)
    else:
        delay = _backoff_seconds(number, result.retry_after_seconds)
        fields.update(
            status=DeliveryStatus.PENDING, next_attempt_at=done + timedelta(seconds=delay)
        )
    with timed_write("webhook_attempt"):
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            attempted_at=now,
            status_code=result.status_code,
            latency_ms=round(result.latency_ms, 3),
            error=result.error[:2000],
        )
        WebhookDelivery.objects.filter(id=delivery.id, status=DeliveryStatus.DELIVERING).update(
            **fields
        )
        if result.status_code == 410:
            WebhookEndpointState.objects.update_or_create(
                url=delivery.endpoint,
                defaults={"disabled_at": done, "reason": "endpoint answered 410 Gone"},
            )
    metrics.WEBHOOK_ATTEMPTS.labels(str(fields["status"])).inc()
    log.info(
        "webhook_attempt",
        extra={
            "fields": {
                "delivery": delivery.message_id,
                "run_id": delivery.run_id,
                "attempt": number,
                "status_code": result.status_code,
                "ms": round(result.latency_ms, 1),
                "outcome": fields["status"],
            }
        },
    )
    return str(fields["status"])


def webhook_schedule(*, batch: int = 100) -> int:
    """Queue deliveries whose retry is due; put back ones whose worker vanished mid-attempt."""
    now = timezone.now()
    stuck_before = now - timedelta(seconds=settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS + 120)
    WebhookDelivery.objects.filter(
        status__in=[DeliveryStatus.QUEUED, DeliveryStatus.DELIVERING], updated_at__lt=stuck_before
    ).update(status=DeliveryStatus.PENDING, next_attempt_at=now, updated_at=now)
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:batch]
    )
    queued = 0
    for delivery_id in due:
        with transaction.atomic():
            moved = WebhookDelivery.objects.filter(
                id=delivery_id, status=DeliveryStatus.PENDING
            ).update(status=DeliveryStatus.QUEUED, updated_at=now)
            if moved:
                _enqueue_delivery(WebhookDelivery.objects.get(id=delivery_id))
                queued += 1
    return queued


def webhook_endpoint_enable(*, url: str) -> None:
    """An operator re-enables an endpoint that answered 410."""
    WebhookEndpointState.objects.filter(url=url).update(disabled_at=None, reason="")
