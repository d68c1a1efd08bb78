"""django-q2's ORM broker, with claims that do not collide (Q_CLUSTER["broker_class"]).

The stock ORM broker reads the oldest unlocked task and then tries to lock it with a
conditional UPDATE. Every cluster reads the same oldest task, so with several clusters most
attempts lose the race and are retried at once: round trips that do no work, growing with the
number of clusters. Here the read takes its rows FOR UPDATE SKIP LOCKED (PostgreSQL), so each
cluster gets different tasks at the first try. Where the database has no SKIP LOCKED (SQLite,
with one writer at a time anyway) the stock behaviour is kept. Enqueueing, acknowledging and
redelivery after ``retry`` seconds are unchanged.
"""

from __future__ import annotations

from time import sleep
from typing import Any

from django.db import connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf


class SkipLockedORM(ORM):  # type: ignore[misc]
    def dequeue(self) -> list[tuple[Any, Any]] | None:
        if not connections[Conf.ORM].features.has_select_for_update_skip_locked:
            return super().dequeue()  # type: ignore[no-any-return]
        queue = self.get_connection()
        with transaction.atomic(using=Conf.ORM):
            tasks = list(
                queue.select_for_update(skip_locked=True)
                .filter(key=self.list_key, lock__lt=timezone.now())
                .order_by("id")
                .values_list("id", "payload")[: Conf.BULK]
            )
            if tasks:
                queue.filter(id__in=[task_id for task_id, _ in tasks]).update(
                    lock=self.timeout(None)
                )
        if tasks:
            return tasks
        sleep(Conf.POLL)  # empty queue: spare the database
        return None
