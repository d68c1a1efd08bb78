"""The status machine: the only place a run's status changes.

Every change is one conditional UPDATE guarded by the expected current status (and, for a
worker's writes, its attempt number), so a stale writer changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from runs import executor, metrics
from runs.models import TERMINAL_STATUSES, RunStatus, TunixRun, duration_seconds
from runs.outcomes import RunOutcome
from runs.services import webhooks
from runs.services.errors import IllegalTransition
from runs.services.telemetry import timed_write

log = logging.getLogger("tunix_rt.runs")

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


# What happens when a run reaches a terminal status, in order, inside the transition's own
# transaction: whatever a hook writes exists exactly when the final status does.
def _sweep_advance(run_id: UUID) -> None:
    """A trial's sweep asks for its next trial (runs/services/sweeps.py, which imports this
    module: hence the import here)."""
    from runs.services.sweeps import sweep_on_run_ended

    sweep_on_run_ended(run_id)


TERMINAL_HOOKS: tuple[Callable[[UUID], None], ...] = (webhooks.record_run_event, _sweep_advance)


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
        if updated and target in TERMINAL_STATUSES:
            for hook in TERMINAL_HOOKS:
                hook(run_id)
    if updated:
        line: dict[str, Any] = {
            "run_id": run_id,
            "from": source,
            "to": target,
            "attempt": log_attempt if log_attempt is not None else expected_attempt,
        }
        metrics.RUNS_TOTAL.labels(target).inc()
        if target in TERMINAL_STATUSES and run_started_at is not None:
            duration = duration_seconds(run_started_at, timezone.now())
            assert duration is not None
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
