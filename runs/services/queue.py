"""The run queue: a run's task is written in the caller's transaction, so it commits with the
run (django-q2's ORM broker on the default database; docs/architecture.md, ADR 1)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_q.brokers import Broker

from runs import resources
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


def run_task_queue(run: TunixRun) -> str | None:
    """The queue this run's task goes to: a training that asked for a class other than cpu goes
    to that class's queue, served only by clusters on hosts with those devices (the qcluster
    command checks); everything else as task_queue says."""
    if run.resource_class != resources.CPU and get_backend(run.mode).routes_by_resources:
        return resources.class_queue(settings.TUNIX_RESOURCE_QUEUE_BASE, run.resource_class)
    return task_queue(run.mode)


def enqueue_run(run: TunixRun) -> str:
    """Write the run's queue task. Callers hold a transaction so the task commits with the
    run."""
    from django_q.tasks import async_task

    task_id: str = async_task(TASK_FUNC, str(run.id), **_task_options(run))
    return task_id


def _task_options(run: TunixRun) -> dict[str, Any]:
    return {
        "task_name": f"run-{run.id}",
        "timeout": task_timeout_seconds(run),
        "ack_failure": True,
        "cluster": run_task_queue(run),
    }


@dataclass(frozen=True)
class QueueRow:
    """A queue task as django-q2's ORM broker stores it (a django_q_ormq row)."""

    key: str  # the queue's name
    payload: str  # the signed task
    lock: datetime


class _Keep(Broker):  # type: ignore[misc]
    """A broker that keeps the task django-q2 hands it instead of storing it."""

    row: QueueRow | None = None

    @staticmethod
    def get_connection(list_key: str | None = None) -> None:
        return None

    def enqueue(self, task: str) -> None:
        self.row = QueueRow(key=self.list_key, payload=task, lock=timezone.now())


def run_queue_row(run: TunixRun) -> QueueRow:
    """The run's queue task, built and signed by django-q2 exactly as enqueue_run's, for the
    caller to write in the same statement as the run (services/submission.py)."""
    from django_q.tasks import async_task

    options = _task_options(run)
    keep = _Keep(list_key=options["cluster"])
    async_task(TASK_FUNC, str(run.id), broker=keep, **options)
    if keep.row is None:  # Q_CLUSTER "sync": django-q2 ran the task instead
        raise RuntimeError("django-q2 ran the task in this process instead of queueing it")
    return keep.row
