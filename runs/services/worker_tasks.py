"""What exports and samples share: a row that a worker's queue task claims, a child process
(``python -m runs.export`` / ``runs.sample``) whose one result line it reads, and the row's end.

The rows have the same lifecycle (pending → running → completed | failed, ``started_at``,
``completed_at``, ``error_reason``, ``error_message``); a claim is one conditional UPDATE, so a
task delivered twice runs once, and a row left running past its deadline (its worker died) is
claimed again.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

from django.conf import settings
from django.db.models import Model, Q
from django.utils import timezone

from runs.progress import ERROR_PREFIX, RESULT_PREFIX

PENDING, RUNNING, FAILED = "pending", "running", "failed"
ERROR_MESSAGE_MAX_CHARS = 4000

Row = TypeVar("Row", bound=Model)


def enqueue(func: str, row_id: UUID, *, name: str, timeout_seconds: int) -> None:
    """The row's queue task, in the caller's transaction, on the queue of the workers with the
    training stack."""
    from django_q.tasks import async_task

    async_task(
        func,
        str(row_id),
        task_name=f"{name}-{row_id}",
        timeout=timeout_seconds + settings.TUNIX_KILL_GRACE_SECONDS + 60,
        ack_failure=True,
        cluster=settings.TUNIX_TRAINING_QUEUE or None,
    )


def claim(
    model: type[Row], row_id: UUID, *, timeout_seconds: int, related: tuple[str, ...] = ()
) -> Row | None:
    """Take the row: pending, or running past its deadline (a worker died with it)."""
    now = timezone.now()
    stale = now - timedelta(seconds=timeout_seconds + settings.TUNIX_KILL_GRACE_SECONDS)
    rows = model._default_manager.filter(pk=row_id)
    claimed = rows.filter(Q(status=PENDING) | Q(status=RUNNING, started_at__lt=stale)).update(
        status=RUNNING, started_at=now
    )
    if not claimed:
        return None
    return rows.select_related(*related).get()


def finish(row: Model, **fields: Any) -> None:
    """End the row as ``fields`` say, if it is still running (a reclaimed row is not ended
    twice)."""
    type(row)._default_manager.filter(pk=row.pk, status=RUNNING).update(
        completed_at=timezone.now(), **fields
    )


def fail(row: Model, reason: str, message: str) -> str:
    finish(row, status=FAILED, error_reason=reason, error_message=message[:ERROR_MESSAGE_MAX_CHARS])
    return FAILED


def child_report(stdout: str) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """The child process's TUNIX_RESULT payload and TUNIX_ERROR (reason, message), if any."""
    summary: dict[str, Any] | None = None
    error: tuple[str, str] | None = None
    for line in stdout.splitlines():
        try:
            if line.startswith(RESULT_PREFIX):
                summary = json.loads(line.removeprefix(RESULT_PREFIX))
            elif line.startswith(ERROR_PREFIX):
                payload = json.loads(line.removeprefix(ERROR_PREFIX))
                error = (str(payload.get("reason", "")), str(payload.get("message", "")))
        except ValueError:
            continue
    return summary, error
