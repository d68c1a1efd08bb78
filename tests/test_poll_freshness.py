"""A poller never sees a status older than the last committed transition: not through the
status endpoint's ETag (a 304 for a run that changed), not in the list."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import services
from runs.models import RunStatus
from tests.factories import submitted_run

pytestmark = pytest.mark.django_db(transaction=True)


def _status(client: APIClient, run_id: object, etag: str | None = None) -> Any:
    url = f"/api/tunix/runs/{run_id}/status"
    return client.get(url, HTTP_IF_NONE_MATCH=etag) if etag else client.get(url)


def test_each_committed_transition_reaches_the_next_poll(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    run = submitted_run()
    first = _status(operator_client, run.id)
    assert first.json()["status"] == RunStatus.PENDING
    etag = first["ETag"]
    assert _status(operator_client, run.id, etag).status_code == 304

    claimed = services.run_claim(run_id=run.id, worker_id="worker:test:1")
    assert claimed is not None
    answer = _status(operator_client, run.id, etag)
    assert answer.status_code == 200
    assert answer.json()["status"] == RunStatus.RUNNING
    listed = operator_client.get("/api/tunix/runs", {"limit": 5}).json()["data"]
    assert [item["status"] for item in listed if item["run_id"] == str(run.id)] == ["running"]

    services.run_cancel(run_id=run.id)
    answer = _status(operator_client, run.id, answer["ETag"])
    assert answer.status_code == 200
    assert answer.json()["status"] == RunStatus.CANCELLED
    listed = operator_client.get("/api/tunix/runs", {"limit": 5}).json()["data"]
    assert [item["status"] for item in listed if item["run_id"] == str(run.id)] == ["cancelled"]


def test_progress_within_a_status_changes_the_etag(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    run = submitted_run()
    claimed = services.run_claim(run_id=run.id, worker_id="worker:test:1")
    assert claimed is not None
    etag = _status(operator_client, run.id)["ETag"]
    assert services.run_heartbeat(
        run_id=run.id,
        attempt=claimed.attempt,
        updates={"progress": {"step": 1, "total_steps": 4}},
    )
    answer = _status(operator_client, run.id, etag)
    assert answer.status_code == 200
    assert answer.json()["progress"]["step"] == 1
