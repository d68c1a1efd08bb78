"""Invariants the database itself enforces, whatever code writes the row."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.models import RunStatus, TunixRun
from tests.factories import DatasetFactory, TunixRunFactory, UserFactory

pytestmark = pytest.mark.django_db


def _violates(**changes: object) -> bool:
    """True if applying ``changes`` to a fresh completed run is refused by the database."""
    run = TunixRunFactory(completed=True)
    try:
        with transaction.atomic():
            TunixRun.objects.filter(id=run.id).update(**changes)
    except IntegrityError:
        return True
    return False


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "exploded"},
        {"mode": "remote"},
        {"error_reason": "because"},
        {"completed_at": None},  # terminal without completed_at
        {"status": RunStatus.RUNNING},  # active with completed_at
        {"status": RunStatus.PENDING, "completed_at": None},  # pending but started
        {"exit_code": 2},  # completed with non-zero exit
        {"status": RunStatus.FAILED, "error_reason": ""},  # failed without a reason
        {"started_at": None},  # completed without started_at
    ],
)
def test_database_refuses_inconsistent_runs(changes: dict[str, object]) -> None:
    assert _violates(**changes)


def test_a_consistent_change_is_accepted() -> None:
    assert not _violates(stdout="fine")


def test_running_needs_an_attempt() -> None:
    run = TunixRunFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        TunixRun.objects.filter(id=run.id).update(
            status=RunStatus.RUNNING, started_at=timezone.now(), attempt=0
        )


def test_client_request_id_is_unique_per_user_only() -> None:
    alice, bob = UserFactory(), UserFactory()
    dataset = DatasetFactory()
    TunixRunFactory(dataset=dataset, created_by=alice, client_request_id="k1")
    TunixRunFactory(dataset=dataset, created_by=bob, client_request_id="k1")
    # Runs without a key never collide.
    TunixRunFactory(dataset=dataset, created_by=alice, client_request_id=None)
    TunixRunFactory(dataset=dataset, created_by=alice, client_request_id=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        TunixRunFactory(dataset=dataset, created_by=alice, client_request_id="k1")


def test_dataset_file_path_must_stay_relative() -> None:
    for bad in ("/etc/passwd", "../outside.jsonl"):
        with pytest.raises(IntegrityError), transaction.atomic():
            DatasetFactory(file_path=bad)


def test_dataset_cannot_be_deleted_while_runs_use_it() -> None:
    from django.db.models import ProtectedError

    run = TunixRunFactory()
    with pytest.raises(ProtectedError):
        run.dataset.delete()
