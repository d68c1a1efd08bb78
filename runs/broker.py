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

from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ


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
