"""The reaper: lost workers' runs go back to the queue or fail; lost tasks are replaced."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from runs import services
from runs.models import RunStatus, TunixRun
from tests.factories import TunixRunFactory, submitted_run

pytestmark = pytest.mark.django_db


def queued_ids() -> list[str]:
    return [
        SignedPackage.loads(p)["args"][0] for p in OrmQ.objects.values_list("payload", flat=True)
    ]


def stale(settings: Any) -> Any:
    return timezone.now() - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS + 5)


def test_a_stale_running_run_is_requeued_with_a_task(settings: Any) -> None:
    run = TunixRunFactory(running=True, attempt=1, heartbeat_at=stale(settings))
    report = services.run_reap()
    assert report.requeued == [run.id]
    fresh = TunixRun.objects.get(id=run.id)
    assert fresh.status == RunStatus.PENDING
    assert (fresh.started_at, fresh.heartbeat_at, fresh.worker_id) == (None, None, "")
    assert fresh.attempt == 1  # the next claim makes it 2
    assert queued_ids() == [str(run.id)]


def test_a_run_out_of_attempts_fails_as_worker_lost(settings: Any) -> None:
    settings.TUNIX_RUN_MAX_ATTEMPTS = 2
    run = TunixRunFactory(running=True, attempt=2, heartbeat_at=stale(settings))
    report = services.run_reap()
    assert report.failed == [run.id]
    fresh = TunixRun.objects.get(id=run.id)
    assert (fresh.status, fresh.error_reason) == (RunStatus.FAILED, "worker_lost")
    assert fresh.completed_at is not None
    assert not OrmQ.objects.exists()


def test_a_live_run_is_left_alone(settings: Any) -> None:
    run = TunixRunFactory(running=True, heartbeat_at=timezone.now())
    assert services.run_reap() == services.ReapReport([], [], [])
    assert TunixRun.objects.get(id=run.id).status == RunStatus.RUNNING


def test_the_old_worker_cannot_finish_a_requeued_run(settings: Any) -> None:
    run = TunixRunFactory(running=True, attempt=1, heartbeat_at=stale(settings))
    services.run_reap()
    late = services.RunOutcome(status=RunStatus.COMPLETED, exit_code=0, stdout="late")
    assert services.run_finish(run_id=run.id, attempt=1, outcome=late) is False
    assert services.run_heartbeat(run_id=run.id, attempt=1) is False
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING


def test_an_old_pending_run_without_a_task_gets_one(settings: Any) -> None:
    old = timezone.now() - timedelta(seconds=settings.TUNIX_ORPHAN_AFTER_SECONDS + 5)
    orphan = TunixRunFactory(queued_at=old)
    young = TunixRunFactory()  # its task may still be on its way: not touched
    report = services.run_reap()
    assert report.reenqueued == [orphan.id]
    assert queued_ids() == [str(orphan.id)]
    # A second pass finds the task and does nothing more.
    assert services.run_reap().reenqueued == []
    assert young.id not in report.reenqueued


def test_draining_worker_hands_the_task_back(demo_dataset: Any) -> None:
    run = submitted_run()
    OrmQ.objects.all().delete()  # as if this worker had taken it off the queue
    outcome = services.run_worker_execute(run_id=run.id, drain_since=lambda: 1.0)
    assert outcome == "deferred"
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING
    assert queued_ids() == [str(run.id)]


def test_a_redelivered_task_does_nothing(demo_dataset: Any) -> None:
    run = submitted_run()
    assert services.run_worker_execute(run_id=run.id) == "completed"
    stdout = TunixRun.objects.get(id=run.id).stdout
    assert services.run_worker_execute(run_id=run.id) == "skipped"
    fresh = TunixRun.objects.get(id=run.id)
    assert (fresh.attempt, fresh.stdout) == (1, stdout)
