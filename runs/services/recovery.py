"""Recovery and control: re-queue, cancel, the reaper, and worker heartbeats."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import authorization, broker, metrics, resources, selectors
from runs.execution import UnknownMode, get_backend
from runs.execution.base import BackendUnavailable
from runs.models import TERMINAL_STATUSES, RunStatus, TunixRun, WorkerHeartbeat
from runs.outcomes import Ending, Reason, RunOutcome
from runs.selectors.ids import as_uuid
from runs.services.errors import Conflict, Forbidden, NotFound
from runs.services.queue import TASK_FUNC, enqueue_run, task_queue
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


RELEASE_FUNC = "runs.tasks.release_run"


def release_later(run_id: UUID, mode: str, attempt: int) -> None:
    """A run of a backend that places jobs elsewhere (a Ray cluster) ended while none of its
    workers followed its job: cancelled while re-queued or unsupervised, failed by the reaper,
    or failed because the cluster stopped answering mid-run. A worker's queue task stops the
    job, so it does not train on for nobody."""
    try:
        backend = get_backend(mode)
    except UnknownMode:
        return
    if not backend.places_remotely or attempt < 1:
        return
    from django_q.tasks import async_task

    async_task(
        RELEASE_FUNC,
        str(run_id),
        task_name=f"release-{run_id}",
        timeout=120,
        ack_failure=True,
        cluster=task_queue(mode),
    )


def run_release(*, run_id: UUID) -> str:
    """Stop what an ended run's attempts left running where its backend places jobs."""
    found = (
        TunixRun.objects.filter(id=run_id, status__in=TERMINAL_STATUSES)
        .values_list("mode", "attempt")
        .first()
    )
    if found is None:
        return "skipped"
    mode, attempt = found
    try:
        stopped = get_backend(mode).release(run_id=str(run_id), attempts=attempt)
    except BackendUnavailable as exc:
        log.warning("run_release_failed", extra={"fields": {"run_id": run_id, "error": exc}})
        return "unavailable"
    if stopped:
        log.info("run_released", extra={"fields": {"run_id": run_id, "stopped": stopped}})
    return f"stopped {len(stopped)}"


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
            # A running run's worker stops its job itself; the queue task covers a worker
            # that is gone, and a re-queued run whose job nobody follows now.
            release_later(run.id, run.mode, run.attempt)
            run.refresh_from_db()
            return run
    raise Conflict("run changed state while cancelling; try again")


@dataclass(frozen=True)
class ReapReport:
    requeued: list[UUID]
    failed: list[UUID]
    reenqueued: list[UUID]
    dropped_tasks: int = 0  # queue rows claimed by a lost worker or for a finished run


# A claimed row's lock is its claim time + Q_CLUSTER["retry"] (hours); an unclaimed one's is
# its enqueue time (or a few seconds ahead: another host's clock, a hand-back by a worker that
# could not read it). Anything locked beyond this margin is held by a cluster.
_CLAIM_MARGIN = timedelta(seconds=60)
_LIVE_STATUSES = frozenset({RunStatus.PENDING, RunStatus.RUNNING})


@dataclass(frozen=True)
class _QueueRow:
    id: int
    run_id: str
    lock: datetime

    def claimed(self, now: datetime) -> bool:
        return self.lock > now + _CLAIM_MARGIN

    def claimed_at(self) -> datetime:
        from django_q.conf import Conf

        return self.lock - timedelta(seconds=Conf.RETRY)


def _run_task_rows(*, claimed_after: datetime | None = None) -> list[_QueueRow]:
    """The queue's rows for runs (all of them, or those locked past ``claimed_after``), read as
    this process can: rows of other task kinds, of another app, or signed with another key are
    left out."""
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    rows = OrmQ.objects.all()
    if claimed_after is not None:
        rows = rows.filter(lock__gt=claimed_after + _CLAIM_MARGIN)
    found: list[_QueueRow] = []
    for row_id, payload, lock in rows.values_list("id", "payload", "lock").iterator():
        try:
            task = SignedPackage.loads(payload)
        except Exception:  # another app's task or a corrupt row: not ours
            log.debug("queue_payload_unreadable")
            continue
        # A row without a lock is never delivered (the claim compares the lock with now).
        if (
            isinstance(task, dict)
            and task.get("func") == TASK_FUNC
            and task.get("args")
            and lock is not None
        ):
            found.append(_QueueRow(id=row_id, run_id=str(task["args"][0]), lock=lock))
    return found


def _drop_rows(row_ids: list[int], *, now: datetime) -> int:
    """Delete queue rows that are still claimed. Safe whoever holds them: a row is only a
    wake-up call (the run row decides), the claim is fenced on the attempt, and the holder's
    acknowledgement of a deleted row deletes nothing."""
    from django_q.models import OrmQ

    if not row_ids:
        return 0
    deleted: int = OrmQ.objects.filter(id__in=row_ids, lock__gt=now + _CLAIM_MARGIN).delete()[0]
    return deleted


def run_reap(*, batch: int = 200) -> ReapReport:
    """Recover runs a worker lost, pending runs whose queue task vanished (or is held by a
    cluster that died before starting it), and drop the queue rows a lost worker claimed.

    Idempotent and safe to run in many processes at once: every change is a guarded UPDATE or
    DELETE.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS)
    # Read before anything is re-queued, so the fresh rows written below are not among them.
    claimed = _run_task_rows(claimed_after=now)
    requeued: list[UUID] = []
    failed: list[UUID] = []
    stale = TunixRun.objects.filter(
        status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
    ).values_list("id", "attempt", "started_at", "mode")[:batch]
    for run_id, attempt, started_at, mode in stale:
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
                release_later(run_id, mode, attempt)
        elif run_requeue(run_id=run_id, attempt=attempt, reason="worker lost"):
            requeued.append(run_id)

    dropped = _drop_rows(_stale_claims(claimed, recovered={*requeued, *failed}), now=now)

    reenqueued: list[UUID] = []
    orphan_before = now - timedelta(seconds=settings.TUNIX_ORPHAN_AFTER_SECONDS)
    waiting = list(
        TunixRun.objects.filter(status=RunStatus.PENDING, queued_at__lt=orphan_before)
        .order_by("queued_at")
        .values_list("id", flat=True)[:batch]
    )
    if waiting:
        # A run is on its way while a row for it waits unclaimed, or was claimed recently. A
        # row claimed longer ago may be held by a cluster that was killed before it started
        # the run: the run gets a fresh row too (whichever is delivered first claims it).
        awake = {
            row.run_id
            for row in _run_task_rows()
            if not row.claimed(now) or row.claimed_at() >= orphan_before
        }
        for run_id in waiting:
            if str(run_id) in awake:
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
    if requeued or failed or reenqueued or dropped:
        log.warning(
            "run_reap",
            extra={
                "fields": {
                    "requeued": len(requeued),
                    "failed": len(failed),
                    "reenqueued": len(reenqueued),
                    "dropped_tasks": dropped,
                }
            },
        )
    return ReapReport(
        requeued=requeued, failed=failed, reenqueued=reenqueued, dropped_tasks=dropped
    )


def _stale_claims(claimed: list[_QueueRow], *, recovered: set[UUID]) -> list[int]:
    """Claimed rows nobody needs: those of runs just recovered from a lost worker (its claim
    died with it; a fresh row replaces it or the run failed), and those of runs that have
    finished, or no longer exist. A running run's row is its live worker's, and a pending
    run's is left to the orphan check."""
    if not claimed:
        return []
    ids = {key for row in claimed if (key := as_uuid(row.run_id)) is not None}
    status = dict(TunixRun.objects.filter(id__in=ids).values_list("id", "status"))
    stale: list[int] = []
    for row in claimed:
        key = as_uuid(row.run_id)
        if key is None or key in recovered or status.get(key, "") not in _LIVE_STATUSES:
            stale.append(row.id)
    return stale


def worker_heartbeat(
    *,
    worker_id: str,
    signing_key_id: str | None = None,
    devices: list[dict[str, Any]] | None = None,
    resource_class: str = resources.CPU,
) -> None:
    """A worker process says it is alive (even with nothing to run), which key it reads queue
    tasks with (runs.broker.signing_key_id unless given), so web hosts can tell whether it can
    read theirs, and what its host has and which resource class it serves."""
    host, _, pid = worker_id.removeprefix("worker:").rpartition(":")
    key_id = broker.signing_key_id() if signing_key_id is None else signing_key_id
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id[:128],
        defaults={
            "host": host[:255],
            "pid": int(pid or 0),
            "seen_at": timezone.now(),
            "signing_key_id": key_id[:32],
            "devices": devices or [],
            "resource_class": resource_class[:40],
        },
    )


def worker_heartbeat_prune(*, older_than: timedelta = timedelta(days=1)) -> int:
    deleted, _ = WorkerHeartbeat.objects.filter(seen_at__lt=timezone.now() - older_than).delete()
    return deleted
