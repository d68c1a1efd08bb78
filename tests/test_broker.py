"""runs/broker.py: the ORM broker claims with SKIP LOCKED on PostgreSQL, so clusters polling
at once take different tasks; elsewhere it behaves as django-q2's own ORM broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django_q.brokers import get_broker
from django_q.models import OrmQ

from runs.broker import SkipLockedORM

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker() -> SkipLockedORM:
    broker = get_broker()
    assert isinstance(broker, SkipLockedORM)  # the configured broker_class
    return broker


@pytest.fixture
def three_tasks(broker: SkipLockedORM) -> list[int]:
    return [int(broker.enqueue(f"payload-{i}")) for i in range(3)]


@pytest.fixture
def row_locked_elsewhere(three_tasks: list[int]) -> Iterator[int]:
    """Another session holds the oldest task's row lock, as a cluster mid-claim does."""
    other: Any = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cur:
        cur.execute("SELECT id FROM django_q_ormq WHERE id = %s FOR UPDATE", [three_tasks[0]])
    yield three_tasks[0]
    other.rollback()
    other.close()


def test_a_claimed_task_is_not_handed_out_again_before_its_retry(
    broker: SkipLockedORM, three_tasks: list[int]
) -> None:
    claimed = broker.dequeue()
    assert claimed == [(three_tasks[0], "payload-0")]
    assert broker.dequeue() == [(three_tasks[1], "payload-1")]
    locked_until = OrmQ.objects.get(id=three_tasks[0]).lock
    assert locked_until > OrmQ.objects.get(id=three_tasks[2]).lock


def test_an_empty_queue_returns_nothing(broker: SkipLockedORM) -> None:
    assert broker.dequeue() is None


@pytest.mark.postgres  # SQLite has no SKIP LOCKED and keeps django-q2's own claim
def test_a_task_another_cluster_is_claiming_is_skipped(
    broker: SkipLockedORM, three_tasks: list[int], row_locked_elsewhere: int
) -> None:
    before = OrmQ.objects.get(id=row_locked_elsewhere).lock
    assert broker.dequeue() == [(three_tasks[1], "payload-1")]
    assert OrmQ.objects.get(id=row_locked_elsewhere).lock == before  # left to its claimer
