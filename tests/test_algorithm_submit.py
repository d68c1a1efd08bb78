"""A run refuses, at submit time, a dataset whose format its training cannot use: nothing is
written, and the 400 names dataset_key and the formats it takes."""

from __future__ import annotations

import io
import json

import pytest
from rest_framework.test import APIClient

from runs import services
from runs.models import TunixRun
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

PAIR = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}


@pytest.mark.parametrize("query", ["?mode=async", ""])
def test_a_preference_dataset_is_refused_for_a_supervised_run_naming_dataset_key(
    operator_client: APIClient, query: str
) -> None:
    data = json.dumps(PAIR).encode() + b"\n"
    services.dataset_import(key="pairs-v1", source=io.BytesIO(data))
    body = {"dataset_key": "pairs-v1", "model_id": "tunix-rt/tiny-llama3"}
    refused = problem(operator_client.post(f"/api/tunix/run{query}", body, format="json"), 400)
    assert refused["errors"][0]["field"] == "dataset_key"
    assert "preference" in refused["detail"]
    assert "sft" in refused["detail"]
    assert not TunixRun.objects.exists()
    unknown = problem(
        operator_client.post(
            f"/api/tunix/run{query}", {**body, "dataset_key": "nope-v1"}, format="json"
        ),
        400,
    )
    assert "unknown dataset 'nope-v1'" in unknown["detail"]
