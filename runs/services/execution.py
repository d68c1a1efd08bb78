"""Executing claimed runs: a queue task's whole job, and the API's synchronous mode. How a run
of each mode executes is its backend's (runs/execution/); this module turns the run row into a
RunSpec, passes the heartbeat down, and records whatever comes back."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction

from runs import artifacts, authorization, resources, tuning
from runs.dryrun import BaseSpec, training_spec
from runs.execution import UnknownMode, get_backend
from runs.execution.base import Requeue, RunSpec, Supervision, execute
from runs.models import RunStatus, TunixRun
from runs.outcomes import Reason, RunOutcome
from runs.selectors.bases import run_base_model
from runs.services.datasets import dataset_path
from runs.services.errors import ServiceError
from runs.services.queue import enqueue_run
from runs.services.recovery import release_later, run_requeue
from runs.services.status import run_claim, run_finish, run_heartbeat
from runs.services.submission import RunRequest, Submission, checkpoint_directory, run_submit
from runs.services.sweeps import sweep_pruner_metric, sweep_trial_report

log = logging.getLogger("tunix_rt.runs")

DrainSince = Callable[[], float | None]


def worker_identity(role: str = "worker") -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


def _never_draining() -> float | None:
    return None


def run_spec(run: TunixRun) -> RunSpec:
    """Everything a backend needs to execute this attempt, as plain values."""
    output_dir = artifacts.run_directory(run)
    base = run_base_model(run=run) if run.base_export_id is not None else None
    spec = training_spec(
        run_id=str(run.id),
        model_id=run.model_id,
        mode=run.mode,
        algorithm=run.algorithm,
        dataset_key=run.dataset.key,
        dataset_path=dataset_path(run.dataset),
        dataset_format=run.dataset.format,
        config=run.config,
        output_dir=output_dir,
        attempt=run.attempt,
        checkpoint_dir=checkpoint_directory(run.model_id),
        allow_download=settings.TUNIX_MODEL_DOWNLOAD,
        resume=settings.TUNIX_RESUME_TRAINING,
        base=(
            None
            if base is None
            else BaseSpec(
                export_dir=base.directory, family=base.family, base_model_id=base.root_model_id
            )
        ),
    )
    return RunSpec(
        run_id=str(run.id),
        attempt=run.attempt,
        mode=run.mode,
        output_dir=Path(output_dir),
        spec=spec,
        dataset_sha256=run.dataset.sha256,
        dataset_records=run.dataset.record_count,
        timeout_seconds=run.timeout_seconds or settings.TUNIX_RUN_TIMEOUT_SECONDS,
        loss_curve=[list(point) for point in run.loss_curve or []],
        series=dict(run.series or {}),
        resources=resources.from_stored(run.resources),
    )


def run_execute(*, run: TunixRun, drain_since: DrainSince = _never_draining) -> TunixRun:
    """Execute a run this process has claimed and record the outcome, whatever happens.

    ``drain_since`` tells when this worker began shutting down (monotonic seconds), if it has:
    a training still running TUNIX_SHUTDOWN_GRACE_SECONDS later is stopped and re-queued.
    """

    # A sweep's trial with a pruner: the series its pruner watches, and the newest step of it
    # reported so far (the pruner is asked only when that series gains a point).
    watched = sweep_pruner_metric(sweep_id=run.sweep_id) if run.sweep_id is not None else None
    reported = -1
    if run.sweep_id is not None:
        # This trial's end asks Optuna for the next trial, in this process: import it now,
        # beside the training, rather than between one trial and the next.
        threading.Thread(target=tuning.warm_up, name="tunix-optuna-import", daemon=True).start()

    def heartbeat(updates: dict[str, Any] | None) -> bool:
        nonlocal reported
        alive = run_heartbeat(run_id=run.id, attempt=run.attempt, updates=updates)
        if not (alive and watched and updates and "series" in updates):
            return alive
        points = updates["series"].get(watched) or []
        if not points or points[-1][0] <= reported:
            return alive
        reported = points[-1][0]
        try:
            # A pruned trial is cancelled: the worker stops it as it stops a cancelled run.
            return not sweep_trial_report(run_id=run.id, attempt=run.attempt)
        except Exception:  # the pruner's question must never fail the training
            log.exception("sweep_prune_error", extra={"fields": {"run_id": run.id}})
            return alive

    try:
        outcome = execute(
            get_backend(run.mode),
            run_spec(run),
            Supervision(heartbeat=heartbeat, drain_since=drain_since),
        )
    except Requeue:
        run_requeue(run_id=run.id, attempt=run.attempt, reason="worker shutting down")
        run.refresh_from_db()
        return run
    except Exception as exc:  # recorded on the run, never raised into the caller's loop
        log.exception("run_execute_error", extra={"fields": {"run_id": run.id}})
        outcome = RunOutcome.failure(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
    finished = run_finish(
        run_id=run.id, attempt=run.attempt, outcome=outcome, started_at=run.started_at
    )
    if finished and outcome.reason == Reason.BACKEND_UNAVAILABLE:
        # The job may still train on a cluster that stopped answering: try to stop it later.
        release_later(run.id, run.mode, run.attempt)
    run.refresh_from_db()
    return run


def run_worker_execute(*, run_id: UUID, drain_since: DrainSince = _never_draining) -> str:
    """A queue task's whole job: claim the run, execute it, record it. Returns what happened.

    Delivery is at least once; the claim makes the effect exactly once. A worker that is
    already shutting down leaves the run to another worker.
    """
    if drain_since() is not None:
        run = TunixRun.objects.filter(id=run_id, status=RunStatus.PENDING).first()
        if run is not None:
            with transaction.atomic():
                enqueue_run(run)
        return "deferred"
    claimed = run_claim(run_id=run_id, worker_id=worker_identity())
    if claimed is None:
        return "skipped"
    return str(run_execute(run=claimed, drain_since=drain_since).status)


def _refuse_routed_sync(request: RunRequest) -> None:
    """A training that asks for an accelerator class runs only on a worker of that class: this
    (web) process is none, so it must be queued."""
    asked = request.resources
    if asked is None or asked.resource_class == resources.CPU:
        return
    if resources.servable(asked, resources.configured(settings.TUNIX_RESOURCE_CLASSES)):
        return  # run_submit refuses it as no worker could ever serve it
    try:
        backend = get_backend(request.mode)
    except UnknownMode:
        return  # run_submit words that refusal
    if backend.routes_by_resources:
        raise ServiceError(
            f"a run that asks for {asked.describe()} runs on a worker of that class: queue it "
            "(?mode=async, or the launch form's queue option)",
            field="resources",
        )


def run_sync(*, user: authorization.UserLike, request: RunRequest) -> Submission:
    """Create a run and execute it in this process (the API's default, synchronous mode)."""
    _refuse_routed_sync(request)
    submission = run_submit(user=user, request=request, enqueue=False)
    if submission.replayed:
        return submission
    claimed = run_claim(run_id=submission.run.id, worker_id=worker_identity("web"))
    if claimed is None:  # cancelled between create and claim
        submission.run.refresh_from_db()
        return submission
    return Submission(run=run_execute(run=claimed), replayed=False)
