"""Queue rows a dead cluster had claimed: the reaper removes them once their run is recovered,
so neither the run nor the admin's "Queued tasks" waits out django-q2's retry (hours).

A queue row is only a wake-up call for its run, and every claim is fenced on the run's
attempt, so dropping a claimed row never runs anything twice (tests/test_worker_faults.py
counts executions)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from runs import services
from runs.models import RunMode, RunStatus, TunixRun
from tests.factories import TunixRunFactory, submitted_run
from tests.support.clusters import QCluster, wait_for

StartClusters = Callable[..., list[QCluster]]


@pytest.fixture(autouse=True)
def _dataset(demo_dataset: Any) -> None:
    """Runs are submitted through the service, which wants their dataset."""


def rows_of(run: TunixRun) -> list[OrmQ]:
    return [
        row
        for row in OrmQ.objects.order_by("id")
        if SignedPackage.loads(row.payload)["args"][0] == str(run.id)
    ]


def claim(row: OrmQ, *, ago: float) -> None:
    """Mark a row claimed ``ago`` seconds ago, as a cluster's pusher does (lock = claim +
    retry)."""
    claimed_at = timezone.now() - timedelta(seconds=ago)
    OrmQ.objects.filter(id=row.id).update(lock=claimed_at + timedelta(seconds=Conf.RETRY))


def stale(settings: Any) -> Any:
    return timezone.now() - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS + 5)


def locked_rows() -> list[int]:
    return list(OrmQ.objects.filter(lock__gt=timezone.now()).values_list("id", flat=True))


# --------------------------------------------------------------------------- the reaper, unit


@pytest.mark.django_db
def test_requeueing_a_lost_run_drops_the_row_its_dead_worker_claimed(settings: Any) -> None:
    run = submitted_run()
    (old,) = rows_of(run)
    claim(old, ago=settings.TUNIX_STALE_AFTER_SECONDS + 10)
    TunixRun.objects.filter(id=run.id).update(
        status=RunStatus.RUNNING,
        attempt=1,
        started_at=stale(settings),
        heartbeat_at=stale(settings),
        worker_id="worker:gone:1",
    )
    report = services.run_reap()
    assert report.requeued == [run.id]
    assert report.dropped_tasks == 1
    (fresh,) = rows_of(run)  # the new wake-up call, visible at once
    assert fresh.id != old.id
    assert fresh.lock <= timezone.now()
    assert locked_rows() == []


@pytest.mark.django_db
def test_failing_a_lost_run_drops_its_claimed_row(settings: Any) -> None:
    settings.TUNIX_RUN_MAX_ATTEMPTS = 1
    run = submitted_run()
    (old,) = rows_of(run)
    claim(old, ago=60)
    TunixRun.objects.filter(id=run.id).update(
        status=RunStatus.RUNNING,
        attempt=1,
        started_at=stale(settings),
        heartbeat_at=stale(settings),
    )
    report = services.run_reap()
    assert report.failed == [run.id]
    assert not OrmQ.objects.exists()


@pytest.mark.django_db
def test_the_row_a_live_worker_holds_for_its_running_run_is_left_alone(settings: Any) -> None:
    run = submitted_run()
    (row,) = rows_of(run)
    claim(row, ago=3600)  # a long training
    TunixRun.objects.filter(id=run.id).update(
        status=RunStatus.RUNNING,
        attempt=1,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    assert services.run_reap().dropped_tasks == 0
    assert rows_of(run) == [row]


@pytest.mark.django_db
def test_a_claimed_row_whose_run_has_finished_is_dropped(settings: Any) -> None:
    run = submitted_run()
    (row,) = rows_of(run)
    claim(row, ago=5)
    TunixRun.objects.filter(id=run.id).update(
        status=RunStatus.CANCELLED, completed_at=timezone.now(), error_message="cancelled"
    )
    assert services.run_reap().dropped_tasks == 1
    assert not OrmQ.objects.exists()


@pytest.mark.django_db
def test_an_unclaimed_row_of_a_finished_run_is_left_for_delivery(settings: Any) -> None:
    # Delivery acknowledges it (and does nothing): the reaper only clears what is locked.
    run = submitted_run()
    TunixRun.objects.filter(id=run.id).update(
        status=RunStatus.CANCELLED, completed_at=timezone.now(), error_message="cancelled"
    )
    assert services.run_reap().dropped_tasks == 0
    assert len(rows_of(run)) == 1


@pytest.mark.django_db
def test_a_pending_run_whose_only_row_was_claimed_long_ago_gets_a_fresh_one(
    settings: Any,
) -> None:
    """A task prefetched by a cluster that then died: without this the run waits for the
    row's retry, hours."""
    old_enough = timezone.now() - timedelta(seconds=settings.TUNIX_ORPHAN_AFTER_SECONDS + 5)
    run = submitted_run()
    TunixRun.objects.filter(id=run.id).update(queued_at=old_enough)
    (old,) = rows_of(run)
    claim(old, ago=settings.TUNIX_ORPHAN_AFTER_SECONDS + 5)
    report = services.run_reap()
    assert report.reenqueued == [run.id]
    # The old row stays with whoever may hold it, until the run is over.
    held, fresh = rows_of(run)
    assert held.id == old.id
    assert fresh.lock <= timezone.now()
    assert services.run_reap().reenqueued == []  # it has a wake-up call now


@pytest.mark.django_db
def test_a_pending_run_claimed_moments_ago_is_left_to_its_cluster(settings: Any) -> None:
    old_enough = timezone.now() - timedelta(seconds=settings.TUNIX_ORPHAN_AFTER_SECONDS + 5)
    run = submitted_run()
    TunixRun.objects.filter(id=run.id).update(queued_at=old_enough)
    (row,) = rows_of(run)
    claim(row, ago=1)
    assert services.run_reap() == services.ReapReport([], [], [])
    assert rows_of(run) == [row]


@pytest.mark.django_db
def test_other_tasks_and_unreadable_rows_are_not_touched(settings: Any) -> None:
    from django_q.tasks import async_task

    async_task("math.floor", 1.5)
    OrmQ.objects.create(key="tunix_rt", payload="not-signed-by-us", lock=timezone.now())
    others = list(OrmQ.objects.all())
    for row in others:
        claim(row, ago=3600)
    TunixRunFactory(running=True, attempt=1, heartbeat_at=stale(settings))
    assert services.run_reap().dropped_tasks == 0
    assert OrmQ.objects.filter(id__in=[row.id for row in others]).count() == 2


# --------------------------------------------------------------------------- real clusters


def trainer_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "trainer.log"
    return path.read_text().splitlines() if path.exists() else []


def status_of(run: TunixRun) -> str:
    return TunixRun.objects.values_list("status", flat=True).get(id=run.id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_sigkilled_cluster_leaves_no_locked_row_and_strands_no_prefetched_run(
    clusters: StartClusters, tmp_path: Path
) -> None:
    # One worker: the first run executes, the next two wait claimed (one in the cluster's
    # internal queue, one in its pusher's hand) when the whole cluster is killed.
    first = clusters(1, TUNIX_Q_WORKERS="1")[0]
    running = submitted_run(model_id="fake/slow-once", mode=RunMode.LOCAL)
    wait_for(lambda: status_of(running) == RunStatus.RUNNING, 30, what="first run to start")
    waiting = [submitted_run(model_id="fake/ok", mode=RunMode.LOCAL) for _ in range(2)]
    wait_for(lambda: len(locked_rows()) == 3, 15, what="all three rows to be claimed")
    assert [status_of(r) for r in waiting] == [RunStatus.PENDING] * 2
    wait_for(lambda: trainer_log(tmp_path), 10, what="trainer to start")
    first.kill_group()
    second = clusters(1)[0]
    everything = [running, *waiting]
    try:
        wait_for(
            lambda: all(status_of(r) == RunStatus.COMPLETED for r in everything),
            60,
            what="every run to complete after recovery",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {[(r.model_id, status_of(r)) for r in everything]}") from None
    # No row the dead cluster claimed is left locked (the admin's "Queued tasks" is empty),
    # and each run executed once in the new cluster.
    wait_for(lambda: not OrmQ.objects.exists(), 15, what="the queue to empty")
    claims = Counter(re.findall(r"run_id=(\S+) from=pending to=running", second.log()))
    assert claims == {str(r.id): 1 for r in everything}
    assert TunixRun.objects.get(id=running.id).attempt == 2
