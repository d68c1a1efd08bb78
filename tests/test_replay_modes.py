"""An idempotent replay answers as the original request was answered (202 with the accepted
body for a run first submitted async, 201 with the full record for one first submitted sync),
whichever ?mode the replay asks for."""

from __future__ import annotations

from typing import Any

import pytest
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import services
from runs.models import TunixRun

pytestmark = pytest.mark.django_db

BODY = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}


def submit(client: APIClient, mode: str, key: str) -> Any:
    return client.post(
        f"/api/tunix/run?mode={mode}", BODY, format="json", headers={"Idempotency-Key": key}
    )


def test_an_async_run_replayed_with_mode_sync_answers_202(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    first = submit(operator_client, "async", "k-async")
    again = submit(operator_client, "sync", "k-async")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again["Idempotent-Replayed"] == "true"
    assert again["Location"] == first["Location"]
    # The accepted body, not the full record: the same shape the first answer had.
    assert set(again.json()) == set(first.json())
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.json()["status_url"] == first.json()["status_url"]
    assert "stdout" not in again.json()
    # Nothing was executed or queued again.
    assert TunixRun.objects.count() == 1
    assert OrmQ.objects.count() == 1
    assert TunixRun.objects.get().status == "pending"


def test_a_sync_run_replayed_with_mode_async_answers_201(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    first = submit(operator_client, "sync", "k-sync")
    again = submit(operator_client, "async", "k-sync")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert set(again.json()) == set(first.json())
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.json()["status"] == "completed"
    assert "status_url" not in again.json()
    assert TunixRun.objects.count() == 1
    assert not OrmQ.objects.exists()  # the replay queued nothing


def test_replays_in_the_original_mode_keep_their_codes(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    assert submit(operator_client, "async", "a").status_code == 202
    assert submit(operator_client, "async", "a").status_code == 202
    assert submit(operator_client, "sync", "s").status_code == 201
    assert submit(operator_client, "sync", "s").status_code == 201


def test_run_submit_records_how_a_run_was_submitted(operator: Any, demo_dataset: Any) -> None:
    request = services.RunRequest(dataset_key="tunix-demo-v1", model_id="google/gemma-3-270m")
    queued = services.run_submit(user=operator, request=request, enqueue=True).run
    created = services.run_submit(user=operator, request=request, enqueue=False).run
    assert TunixRun.objects.get(id=queued.id).submitted_async is True
    assert TunixRun.objects.get(id=created.id).submitted_async is False
