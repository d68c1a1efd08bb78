"""Transactional enqueue and idempotent submission."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from runs import services
from runs.models import TunixRun
from tests import factories
from tests.factories import UserFactory


def submit(user: Any = None, key: str | None = None, **changes: Any) -> services.Submission:
    changes.setdefault("model_id", "google/gemma-3-270m")
    return factories.submit(user=user, client_request_id=key, **changes)


def launcher() -> User:
    """A user who may launch runs (the service asks the same policy as the API)."""
    user = UserFactory()
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    return user


def queued_run_ids() -> list[str]:
    return [
        SignedPackage.loads(p)["args"][0] for p in OrmQ.objects.values_list("payload", flat=True)
    ]


@pytest.mark.django_db
def test_enqueue_writes_the_run_and_its_task(demo_dataset: Any) -> None:
    run = submit().run
    assert run.status == "pending"
    assert queued_run_ids() == [str(run.id)]
    task = SignedPackage.loads(OrmQ.objects.get().payload)
    assert task["func"] == "runs.tasks.execute_run"
    assert task["ack_failure"] is True
    assert task["timeout"] == services.task_timeout_seconds(run)


@pytest.mark.django_db
def test_a_rolled_back_enqueue_leaves_neither_run_nor_task(demo_dataset: Any) -> None:
    def submit_then_fail() -> None:
        with transaction.atomic():
            submit()
            raise RuntimeError("the caller failed after enqueueing")

    with pytest.raises(RuntimeError):
        submit_then_fail()
    assert not TunixRun.objects.exists()
    assert not OrmQ.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_uncommitted_task_is_invisible_to_other_connections(demo_dataset: Any) -> None:
    seen: list[int] = []

    def look() -> None:
        seen.append(OrmQ.objects.count())
        connection.close()

    with transaction.atomic():
        submit()
        other = threading.Thread(target=look)
        other.start()
        other.join()
    assert seen == [0]  # a worker cannot pick up a task whose run is not committed
    assert OrmQ.objects.count() == 1  # and after commit, both are there


@pytest.mark.django_db
def test_bad_input_creates_neither_run_nor_task(demo_dataset: Any) -> None:
    for bad in ({"dataset_key": "missing-v1"}, {"config": {"batch_size": 0}}, {"mode": "remote"}):
        with pytest.raises(services.ServiceError):
            submit(**bad)
    assert not TunixRun.objects.exists()
    assert not OrmQ.objects.exists()


@pytest.mark.django_db
def test_a_user_who_may_not_launch_runs_is_refused_with_nothing_written(
    demo_dataset: Any,
) -> None:
    with pytest.raises(services.Forbidden):
        submit(user=UserFactory(), key="k1")
    assert not TunixRun.objects.exists()
    assert not OrmQ.objects.exists()


@pytest.mark.django_db
def test_same_key_and_body_returns_the_original_run(demo_dataset: Any) -> None:
    user = launcher()
    first = submit(user, "key-1")
    again = submit(user, "key-1")
    assert not first.replayed
    assert again.replayed
    assert again.run.id == first.run.id
    assert TunixRun.objects.count() == 1
    assert OrmQ.objects.count() == 1  # no second task either


@pytest.mark.django_db
def test_same_key_with_a_different_body_is_refused(demo_dataset: Any) -> None:
    user = launcher()
    submit(user, "key-1")
    with pytest.raises(services.IdempotencyMismatch):
        submit(user, "key-1", model_id="google/gemma-3-1b-it")
    assert TunixRun.objects.count() == 1


@pytest.mark.django_db
def test_keys_belong_to_their_user(demo_dataset: Any) -> None:
    alice, bob = launcher(), launcher()
    assert submit(alice, "shared").run.id != submit(bob, "shared").run.id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_exactly_one_run(demo_dataset: Any) -> None:
    user = launcher()
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def race() -> None:
        try:
            barrier.wait()
            results.append(submit(user, "race-key"))
        except Exception as exc:  # collected and asserted below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, services.Submission) for r in results), results
    assert len({r.run.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert TunixRun.objects.count() == 1
    assert OrmQ.objects.count() == 1
