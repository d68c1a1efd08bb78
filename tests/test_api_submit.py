"""POST /api/tunix/run in its default, synchronous mode: validation and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from runs.models import TunixRun

pytestmark = pytest.mark.django_db

URL = "/api/tunix/run"
BODY = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}


def problem(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail", "instance"} <= set(body)
    return body


def test_dry_run_returns_a_completed_run_with_a_real_summary(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    response = operator_client.post(URL, BODY, format="json")
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "completed"
    assert run["mode"] == "dry-run"
    assert run["exit_code"] == 0
    assert "records:          64 (58 train / 6 eval)" in run["stdout"]
    assert demo_dataset.sha256 in run["stdout"]
    assert run["duration_seconds"] >= 0
    assert run["started_at"]
    assert run["completed_at"]
    assert response["Location"].endswith(f"/api/tunix/runs/{run['run_id']}")
    config = Path(settings.TUNIX_ARTIFACTS_ROOT) / run["output_dir"] / "tunix_config.json"
    assert config.is_file()
    assert TunixRun.objects.get(id=run["run_id"]).status == "completed"


def test_hyperparameters_are_stored_with_defaults_filled(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    body = {**BODY, "learning_rate": 0.001, "num_epochs": 1, "batch_size": 4, "max_seq_length": 512}
    run = operator_client.post(URL, body, format="json").json()
    assert run["config"]["learning_rate"] == 0.001
    assert run["config"]["batch_size"] == 4
    assert run["config"]["eval_fraction"] == 0.1  # default


def test_missing_dataset_is_a_400_and_creates_no_run(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    response = operator_client.post(URL, {**BODY, "dataset_key": "nope-v1"}, format="json")
    assert response.status_code == 400
    body = problem(response)
    assert body["errors"][0]["field"] == "dataset_key"
    assert "unknown dataset" in body["detail"]
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_id": "bad id with spaces"}, "model_id"),
        ({"model_id": "../../etc/passwd"}, "model_id"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": 2}, "learning_rate"),
        ({"batch_size": -1}, "batch_size"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"eval_fraction": 0.9}, "eval_fraction"),
        ({"max_seq_length": "long"}, "max_seq_length"),
        ({"timeout_seconds": 10**9}, "timeout_seconds"),
        ({"unknown_knob": 1}, "unknown_knob"),
        ({"output_dir": "/tmp/elsewhere"}, "output_dir"),
        ({"dataset_key": "../x"}, "dataset_key"),
        ({"dataset_key": "a/b"}, "dataset_key"),
        ({"dataset_key": "x;rm -rf ~"}, "dataset_key"),
        ({"dataset_key": "UPPER-v1"}, "dataset_key"),
        ({"dry_run": "maybe"}, "dry_run"),
    ],
)
def test_each_bad_field_is_named_and_nothing_is_created(
    operator_client: APIClient, demo_dataset: Any, change: dict[str, Any], field: str
) -> None:
    response = operator_client.post(URL, {**BODY, **change}, format="json")
    assert response.status_code == 400
    body = problem(response)
    assert field in {e["field"] for e in body["errors"]}
    assert body["detail"].startswith(f"{body['errors'][0]['field']}:")
    assert not TunixRun.objects.exists()


def test_missing_required_fields(operator_client: APIClient) -> None:
    body = problem(operator_client.post(URL, {}, format="json"))
    assert {e["field"] for e in body["errors"]} == {"dataset_key", "model_id"}


def test_malformed_json_is_a_400_problem(operator_client: APIClient) -> None:
    response = operator_client.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in problem(response)["detail"]


def test_local_mode_without_the_tunix_runtime_fails_with_a_reason(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    run = operator_client.post(URL, {**BODY, "dry_run": False}, format="json").json()
    assert run["mode"] == "local"
    assert run["status"] == "failed"
    assert run["error_reason"] == "runtime_missing"
    assert "requirements-tunix.txt" in run["message"]


def test_output_is_truncated_to_the_configured_limit(
    operator_client: APIClient, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_OUTPUT_MAX_BYTES = 256
    run = operator_client.post(URL, BODY, format="json").json()
    assert len(run["stdout"].encode()) <= 256
    assert "bytes omitted" in run["stdout"]
