"""Recovery and control: re-queue, cancel, the reaper, and worker heartbeats."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import authorization, metrics, selectors
from runs.models import RunStatus, TunixRun, WorkerHeartbeat
from runs.outcomes import Ending, Reason, RunOutcome
from runs.services.errors import Conflict, Forbidden, NotFound
from runs.services.queue import TASK_FUNC, enqueue_run
from runs.services.status import _transition, run_finish

log = logging.getLogger("tunix_rt.runs")


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
            enqueue_run(TunixRun.objects.get(id=run_id))
    return moved


def run_cancel(*, run_id: UUID | str, user: authorization.UserLike = None) -> TunixRun:
    """Cancel a pending run (it never starts) or a running one (its worker stops the process
    group at its next heartbeat). A finished run cannot be cancelled. ``user`` None is the
    system; a user may cancel what authorization.can_cancel allows, and someone else's run
    they may not see is as absent as a missing one."""
    owner = authorization.visible_owner(user)
    for _ in range(3):  # the run may move between our read and our write; look again
        run = selectors.run_get(run_id=run_id, owner=owner)
        if run is None:
            raise NotFound(f"no run {run_id}")
        if not authorization.can_cancel(user, run):
            raise Forbidden("only the run's creator or an operator can cancel it")
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
                status=Ending.FAILED,
                reason=Reason.WORKER_LOST,
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
                    enqueue_run(run)
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
