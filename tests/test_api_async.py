"""Async submit (202), status polling with ETags, idempotency keys and cancel over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import services
from runs.models import RunStatus, TunixRun
from tests.factories import TunixRunFactory, UserFactory

pytestmark = pytest.mark.django_db

BODY = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}


def post_async(client: APIClient, body: dict[str, Any] | None = None, key: str = "") -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/api/tunix/run?mode=async", body or BODY, format="json", headers=headers)


def test_async_submit_answers_202_with_location_and_queues_a_task(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    response = post_async(operator_client)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["queued_at"]
    assert body["status_url"].endswith(f"/api/tunix/runs/{body['run_id']}/status")
    assert response["Location"].endswith(f"/api/tunix/runs/{body['run_id']}")
    assert TunixRun.objects.get(id=body["run_id"]).status == RunStatus.PENDING
    assert OrmQ.objects.count() == 1


def test_async_validation_matches_sync(operator_client: APIClient, demo_dataset: Any) -> None:
    for body in (
        {**BODY, "dataset_key": "missing-v1"},
        {**BODY, "batch_size": 0},
        {**BODY, "typo_field": 1},
        {"model_id": "tunix-rt/tiny-llama3"},
    ):
        response = post_async(operator_client, body)
        assert response.status_code == 400, body
        assert response["Content-Type"] == "application/problem+json"
    assert not TunixRun.objects.exists()
    assert not OrmQ.objects.exists()


def test_unknown_mode_is_a_400(operator_client: APIClient, demo_dataset: Any) -> None:
    response = operator_client.post("/api/tunix/run?mode=later", BODY, format="json")
    assert response.status_code == 400
    assert "mode" in response.json()["detail"]


def test_status_reports_the_run_and_supports_etags(
    viewer_client: APIClient, demo_dataset: Any
) -> None:
    run = TunixRunFactory(dataset=demo_dataset)
    url = f"/api/tunix/runs/{run.id}/status"
    first = viewer_client.get(url)
    assert first.status_code == 200
    assert first.json() == {
        "run_id": str(run.id),
        "status": "pending",
        "queued_at": first.json()["queued_at"],
        "started_at": None,
        "completed_at": None,
        "exit_code": None,
        "error_reason": "",
        "error_message": "",
        "attempt": 0,
        "progress": {},  # until a training reports its first step
    }
    etag = first["ETag"]
    unchanged = viewer_client.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    services.run_claim(run_id=run.id, worker_id="w")
    changed = viewer_client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "running"
    assert changed["ETag"] != etag


def test_status_of_unknown_runs_is_404(viewer_client: APIClient) -> None:
    for run_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = viewer_client.get(f"/api/tunix/runs/{run_id}/status")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"


def test_idempotency_key_header_replays_the_first_run(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    first = post_async(operator_client, key="k-1")
    again = post_async(operator_client, key="k-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["run_id"] == first.json()["run_id"]
    assert TunixRun.objects.count() == 1
    assert OrmQ.objects.count() == 1
    changed = post_async(operator_client, {**BODY, "model_id": "google/gemma-3-1b-it"}, key="k-1")
    assert changed.status_code == 422
    assert changed["Content-Type"] == "application/problem+json"
    assert TunixRun.objects.count() == 1


def test_client_request_id_in_the_body_is_the_same_key(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    body = {**BODY, "client_request_id": "body-key"}
    first = post_async(operator_client, body)
    again = post_async(operator_client, body)
    assert again.json()["run_id"] == first.json()["run_id"]
    clash = post_async(operator_client, body, key="other")
    assert clash.status_code == 400
    assert clash.json()["errors"][0]["field"] == "client_request_id"


def test_sync_submit_replays_too(operator_client: APIClient, demo_dataset: Any) -> None:
    headers = {"Idempotency-Key": "sync-1"}
    first = operator_client.post("/api/tunix/run", BODY, format="json", headers=headers)
    again = operator_client.post("/api/tunix/run", BODY, format="json", headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.json()["status"] == "completed"
    assert TunixRun.objects.count() == 1


def test_cancel_pending_then_terminal_conflict(
    operator_client: APIClient, operator: Any, demo_dataset: Any
) -> None:
    run = TunixRunFactory(dataset=demo_dataset, created_by=operator)
    response = operator_client.post(f"/api/tunix/runs/{run.id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    fresh = TunixRun.objects.get(id=run.id)
    assert fresh.completed_at is not None
    again = operator_client.post(f"/api/tunix/runs/{run.id}/cancel")
    assert again.status_code == 409
    assert again["Content-Type"] == "application/problem+json"
    assert "already cancelled" in again.json()["detail"]


def test_cancel_running_marks_it_cancelled_and_fences_the_worker(
    operator_client: APIClient, operator: Any, demo_dataset: Any
) -> None:
    run = TunixRunFactory(dataset=demo_dataset, created_by=operator, running=True)
    assert operator_client.post(f"/api/tunix/runs/{run.id}/cancel").json()["status"] == (
        "cancelled"
    )
    assert services.run_heartbeat(run_id=run.id, attempt=1) is False  # the worker stops
    done = services.RunOutcome(status=RunStatus.COMPLETED, exit_code=0)
    assert services.run_finish(run_id=run.id, attempt=1, outcome=done) is False


def test_cancel_of_someone_elses_run_needs_the_change_permission(
    viewer_client: APIClient, demo_dataset: Any
) -> None:
    run = TunixRunFactory(dataset=demo_dataset, created_by=UserFactory())
    response = viewer_client.post(f"/api/tunix/runs/{run.id}/cancel")
    assert response.status_code == 403
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING


def test_cancel_unknown_run_is_404(operator_client: APIClient) -> None:
    response = operator_client.post("/api/tunix/runs/00000000-0000-0000-0000-000000000000/cancel")
    assert response.status_code == 404


def test_anonymous_cannot_submit_poll_or_cancel(api_client: APIClient, demo_dataset: Any) -> None:
    run = TunixRunFactory(dataset=demo_dataset)
    assert post_async(api_client).status_code == 401
    assert api_client.get(f"/api/tunix/runs/{run.id}/status").status_code == 401
    assert api_client.post(f"/api/tunix/runs/{run.id}/cancel").status_code == 401
