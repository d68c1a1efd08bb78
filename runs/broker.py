"""django-q2's ORM broker, with claims that do not collide (Q_CLUSTER["broker_class"]).

The stock ORM broker reads the oldest unlocked task and then tries to lock it with a
conditional UPDATE. Every cluster reads the same oldest task, so with several clusters most
attempts lose the race and are retried at once: round trips that do no work, growing with the
number of clusters. Here the read takes its rows FOR UPDATE SKIP LOCKED (PostgreSQL), so each
cluster gets different tasks at the first try. Where the database has no SKIP LOCKED (SQLite,
with one writer at a time anyway) the stock behaviour is kept. Enqueueing, acknowledging and
redelivery after ``retry`` seconds are unchanged.

A task is signed with SECRET_KEY (salted with the queue's name) by whoever enqueues it, and a
cluster that cannot verify the signature cannot run it. ``signing_key_id`` names the key without
revealing it, so a web host can tell that a worker would not read its tasks (runs/health.py);
``fail`` is where such a worker finds out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import timedelta
from time import sleep
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from runs.models import WorkerHeartbeat

log = logging.getLogger("tunix_rt.worker")

# How long a task this cluster cannot read is kept from it, so a cluster that can read it
# takes it first.
HAND_BACK_SECONDS = 5


def signing_key_id() -> str:
    """A short keyed digest of what signs and verifies queue tasks here (SECRET_KEY and the
    queue's name): equal on two hosts exactly when each can read the other's tasks, and useless
    for recovering the key."""
    message = f"tunix-rt signing key id\0{Conf.PREFIX}".encode()
    key = str(Conf.SECRET_KEY or "").encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:16]


class SkipLockedORM(ORM):  # type: ignore[misc]
    def dequeue(self) -> list[tuple[Any, Any]] | None:
        connection = connections[Conf.ORM]
        if not connection.features.has_select_for_update_skip_locked:
            return super().dequeue()  # type: ignore[no-any-return]
        self.get_connection()  # django-q2's own housekeeping: drop stale connections
        table = connection.ops.quote_name(OrmQ._meta.db_table)
        now = timezone.now()
        # One statement, one round trip, its own transaction: pick the oldest unlocked tasks
        # nobody else is picking right now, and lock them until ``retry`` seconds from now.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET lock = %s WHERE id IN ("  # noqa: S608 (name from model meta)
                f"SELECT id FROM {table} WHERE key = %s AND lock < %s "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload",
                [self.timeout(None), self.list_key, now, Conf.BULK],
            )
            tasks: list[tuple[Any, Any]] = sorted(cursor.fetchall())
        if tasks:
            return tasks
        sleep(Conf.POLL)  # empty queue: spare the database
        return None

    def fail(self, task_id: Any) -> None:
        """django-q2's pusher calls this when it cannot verify a task's signature (or unpickle
        it), and would delete the task: the run then waits for the reaper's orphan check while
        the worker only logs "Failed to push task to queue". Say why instead, and while a live
        worker with another signing key could read it, hand the task back for that worker
        rather than destroying it."""
        mine = signing_key_id()
        since = timezone.now() - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS)
        others = (
            WorkerHeartbeat.objects.filter(seen_at__gte=since)
            .exclude(signing_key_id__in=["", mine])
            .exists()
        )
        fields = {"task": task_id, "signing_key_id": mine}
        if others:
            self.get_connection().filter(pk=task_id).update(
                lock=timezone.now() + timedelta(seconds=HAND_BACK_SECONDS)
            )
            log.error(
                "queue_task_unreadable",
                extra={
                    "fields": {
                        **fields,
                        "action": "handed_back",
                        "cause": "signed with another SECRET_KEY or TUNIX_Q_NAME than this "
                        "worker's; workers with another signing key are alive and may read it",
                    }
                },
            )
            return
        log.error(
            "queue_task_unreadable",
            extra={
                "fields": {
                    **fields,
                    "action": "deleted",
                    "cause": "signed with another SECRET_KEY or TUNIX_Q_NAME than this worker's "
                    "(or corrupt); give workers and web hosts the same SECRET_KEY. The reaper "
                    "queues its run again after TUNIX_ORPHAN_AFTER_SECONDS",
                }
            },
        )
        super().fail(task_id)
