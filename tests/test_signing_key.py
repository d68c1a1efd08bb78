"""A worker with another SECRET_KEY than the web hosts cannot read a single task they queue.
It says so in its heartbeat (a keyed digest of the key, nothing more), /readyz and the run's
wait reason name the host, and the worker logs why it could not read a task and hands it back
for a worker that can, instead of deleting it."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ

from runs import broker, selectors, services
from runs.models import RunStatus, TunixRun, WorkerHeartbeat
from tests.factories import TunixRunFactory, submitted_run
from tests.support.clusters import QCluster, cluster_env, wait_for

StartClusters = Callable[..., list[QCluster]]
OTHER_KEY = "a-worker-host-that-was-given-another-secret-key-0123456789"


@pytest.fixture
def other_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The signing key id of a worker given OTHER_KEY."""
    with monkeypatch.context() as patched:
        patched.setattr(Conf, "SECRET_KEY", OTHER_KEY)
        return broker.signing_key_id()


def beat(host: str, key_id: str, *, pid: int = 1, age: float = 0.0) -> None:
    WorkerHeartbeat.objects.create(
        worker_id=f"worker:{host}:{pid}",
        host=host,
        pid=pid,
        seen_at=timezone.now() - timedelta(seconds=age),
        signing_key_id=key_id,
    )


# --------------------------------------------------------------------------- the key id


def test_the_key_id_is_short_stable_and_tells_keys_apart(other_key: str) -> None:
    mine = broker.signing_key_id()
    assert len(mine) == 16
    assert int(mine, 16) >= 0
    assert broker.signing_key_id() == mine
    assert other_key != mine
    assert django_settings.SECRET_KEY[:8] not in mine  # a digest, not a piece of the key


def test_the_key_id_covers_the_queue_name_that_salts_the_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = broker.signing_key_id()
    monkeypatch.setattr(Conf, "PREFIX", "another-site")
    assert broker.signing_key_id() != mine


@pytest.mark.django_db
def test_a_worker_heartbeat_carries_its_key_id() -> None:
    services.worker_heartbeat(worker_id="worker:w1:7")
    row = WorkerHeartbeat.objects.get(worker_id="worker:w1:7")
    assert row.signing_key_id == broker.signing_key_id()


# --------------------------------------------------------------------------- /readyz, the run


@pytest.mark.django_db
def test_readyz_names_a_worker_host_with_another_key(client: Client, other_key: str) -> None:
    beat("good-host", broker.signing_key_id())
    assert client.get("/readyz").status_code == 200
    beat("bad-host", other_key, pid=2)
    response = client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["checks"]["worker"]["reason"]
    assert reason.startswith("worker host bad-host signs queue tasks with a different SECRET_KEY")
    assert "good-host" not in reason


@pytest.mark.django_db
def test_readyz_ignores_dead_workers_and_workers_that_report_no_key(
    client: Client, other_key: str
) -> None:
    beat("good-host", broker.signing_key_id())
    beat("old-release", "", pid=2)
    beat("long-gone", other_key, pid=3, age=3600)
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_a_pending_run_says_why_it_waits(other_key: str) -> None:
    run = TunixRunFactory()
    assert selectors.run_wait_reason(run=run) == (
        "no worker has ever reported: start one with manage.py qcluster"
    )
    beat("bad-a", other_key)
    beat("bad-b", other_key, pid=2)
    reason = selectors.run_wait_reason(run=run)
    assert reason is not None
    assert reason.startswith("worker hosts bad-a, bad-b sign queue tasks with a different")
    beat("good-host", broker.signing_key_id(), pid=3)
    assert selectors.run_wait_reason(run=run) is None  # a worker can take it: it waits its turn
    TunixRun.objects.filter(id=run.id).update(
        status=RunStatus.CANCELLED, completed_at=timezone.now(), error_message="x"
    )
    run.refresh_from_db()
    assert selectors.run_wait_reason(run=run) is None


@pytest.mark.django_db
def test_a_stopped_fleet_is_a_reason_too() -> None:
    run = TunixRunFactory()
    beat("gone", broker.signing_key_id(), age=3600)
    reason = selectors.run_wait_reason(run=run)
    assert reason is not None
    assert reason.startswith("no worker is running")


@pytest.mark.django_db
def test_the_gauges_count_workers_with_another_key(other_key: str) -> None:
    beat("good-host", broker.signing_key_id())
    beat("bad-host", other_key, pid=2)
    gauges = selectors.queue_gauges()
    assert (gauges.workers_alive, gauges.workers_foreign_key) == (2, 1)


@pytest.mark.django_db
def test_the_run_page_the_api_and_metrics_show_a_worker_with_another_key(
    other_key: str, operator_client: Any, client: Client, operator: Any
) -> None:
    run = TunixRunFactory(created_by=operator)
    beat("bad-host", other_key)
    detail = operator_client.get(f"/api/tunix/runs/{run.id}").json()
    assert detail["wait_reason"].startswith("worker host bad-host signs queue tasks")
    client.force_login(operator)
    for path in (f"/runs/{run.id}", f"/runs/{run.id}/live"):
        page = client.get(path).content.decode()
        assert f'data-testid="run-wait-reason-{run.id}"' in page
        assert "bad-host" in page
    assert "tunix_workers_foreign_key 1.0" in client.get("/metrics").content.decode()
    beat("good-host", broker.signing_key_id(), pid=2)
    assert operator_client.get(f"/api/tunix/runs/{run.id}").json()["wait_reason"] is None


# --------------------------------------------------------------------------- the worker side


@pytest.mark.django_db
def test_an_unreadable_task_is_handed_back_while_a_worker_with_another_key_lives(
    other_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    beat("other-host", other_key)
    row = OrmQ.objects.create(key=Conf.CLUSTER_NAME, payload="signed:elsewhere", lock=None)
    with caplog.at_level(logging.ERROR, logger="tunix_rt.worker"):
        get_broker().fail(row.id)
    kept = OrmQ.objects.get(id=row.id)
    assert kept.lock is not None
    assert (
        timezone.now() < kept.lock <= timezone.now() + timedelta(seconds=broker.HAND_BACK_SECONDS)
    )
    (record,) = [r for r in caplog.records if r.getMessage() == "queue_task_unreadable"]
    fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
    assert fields["action"] == "handed_back"
    assert "SECRET_KEY" in fields["cause"]


@pytest.mark.django_db
def test_an_unreadable_task_nobody_else_can_read_is_deleted_and_said_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    beat("this-host", broker.signing_key_id())
    row = OrmQ.objects.create(key=Conf.CLUSTER_NAME, payload="garbage", lock=timezone.now())
    with caplog.at_level(logging.ERROR, logger="tunix_rt.worker"):
        get_broker().fail(row.id)
    assert not OrmQ.objects.filter(id=row.id).exists()
    (record,) = [r for r in caplog.records if r.getMessage() == "queue_task_unreadable"]
    assert record.fields["action"] == "deleted"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- real clusters


def status_of(run: TunixRun) -> str:
    return TunixRun.objects.values_list("status", flat=True).get(id=run.id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_cluster_with_another_secret_key_is_named_by_readyz_and_the_run(
    clusters: StartClusters, client: Client
) -> None:
    # The reaper would otherwise queue the run again (signed with the worker's key) after a
    # few seconds and hide the problem.
    bad = clusters(1, SECRET_KEY=OTHER_KEY, TUNIX_ORPHAN_AFTER_SECONDS="600")[0]
    host = socket.gethostname()
    wait_for(
        lambda: WorkerHeartbeat.objects.exclude(signing_key_id="").exists(),
        20,
        what="the worker's heartbeat",
    )
    run = submitted_run()
    wait_for(lambda: "queue_task_unreadable" in bad.log(), 20, what="the worker to say why")
    assert "Failed to push task to queue" in bad.log()  # django-q2's own line, now explained
    response = client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["checks"]["worker"]["reason"]
    assert reason.startswith(f"worker host {host} signs queue tasks with a different SECRET_KEY")
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert selectors.run_wait_reason(run=run) == reason
    assert OTHER_KEY not in str(list(WorkerHeartbeat.objects.values()))


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_cluster_with_another_key_hands_tasks_to_one_that_can_read_them(
    clusters: StartClusters, tmp_path: Path
) -> None:
    """Before, the mismatched cluster deleted every task it took: those runs waited for the
    orphan check (here ten minutes) while a good cluster sat idle."""
    slow_orphans = {"TUNIX_ORPHAN_AFTER_SECONDS": "600"}
    clusters(1, **slow_orphans)
    # Its own log file: clusters started by separate calls of the fixture share one.
    env = cluster_env(tmp_path, SECRET_KEY=OTHER_KEY, **slow_orphans)
    bad = QCluster(env, tmp_path / "qcluster-other-key.log")
    try:
        bad.wait_ready()
        wait_for(
            lambda: WorkerHeartbeat.objects.values("signing_key_id").distinct().count() == 2,
            20,
            what="both clusters' heartbeats",
        )
        runs = [submitted_run() for _ in range(12)]
        # Each task the other cluster takes waits HAND_BACK_SECONDS before the good one can:
        # 15-36 s alone, longer beside the rest of the suite; far below the orphan check's 600.
        wait_for(
            lambda: all(status_of(r) == RunStatus.COMPLETED for r in runs),
            120,
            what="every run to complete on the cluster that can read it",
        )
        assert "action=handed_back" in bad.log()
        assert "from=pending to=running" not in bad.log()
    finally:
        bad.stop()
