"""The run queue: a run's task is written in the caller's transaction, so it commits with the
run (django-q2's ORM broker on the default database; docs/architecture.md, ADR 1)."""

from __future__ import annotations

import logging

from django.conf import settings

from runs.execution import get_backend
from runs.models import TunixRun

log = logging.getLogger("tunix_rt.runs")

TASK_FUNC = "runs.tasks.execute_run"


def task_timeout_seconds(run: TunixRun) -> int:
    """django-q2's limit for this run's task: above the run's own timeout and kill grace."""
    run_timeout = run.timeout_seconds or settings.TUNIX_RUN_TIMEOUT_SECONDS
    return int(run_timeout + settings.TUNIX_KILL_GRACE_SECONDS + 60)


def task_queue(mode: str) -> str | None:
    """The queue a run's task goes to: trainings to TUNIX_TRAINING_QUEUE when one is set, the
    rest (and everything otherwise) to the default one (None)."""
    if settings.TUNIX_TRAINING_QUEUE and get_backend(mode).trains:
        return str(settings.TUNIX_TRAINING_QUEUE)
    return None


def enqueue_run(run: TunixRun) -> str:
    """Write the run's queue task. Callers hold a transaction so the task commits with the
    run."""
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
