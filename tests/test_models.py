"""Which models a run may name: the catalog, submit-time refusals, and per-model defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import model_catalog
from runs.models import TunixRun
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

SUBMIT = "/api/tunix/run?mode=async"


def submit(client: APIClient, model_id: str, **extra: Any) -> Any:
    body = {"dataset_key": "tunix-demo-v1", "model_id": model_id, **extra}
    return client.post(SUBMIT, body, format="json")


def test_the_catalog_lists_the_preset_and_real_families(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/tunix/models")
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()}
    tiny = models[model_catalog.TINY_MODEL_ID]
    assert (tiny["preset"], tiny["default_learning_rate"]) == (True, 3e-3)
    assert {m["family"] for m in models.values()} == {"tiny", "gemma3", "llama3", "qwen2", "qwen3"}
    assert models["google/gemma-3-270m"]["preset"] is False


def test_the_catalog_needs_a_login(api_client: APIClient) -> None:
    assert api_client.get("/api/tunix/models").status_code in {401, 403}


def test_an_unknown_model_is_refused_and_nothing_is_created(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    response = submit(operator_client, "acme/giant-9000")
    body = problem(response, 400)
    assert "unknown model 'acme/giant-9000'" in str(body)
    assert "/api/tunix/models" in str(body)
    assert not TunixRun.objects.exists()


def test_a_custom_trainer_takes_any_well_formed_id(
    operator_client: APIClient, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_TRAINER_COMMAND = ["/usr/bin/true"]
    assert submit(operator_client, "acme/giant-9000").status_code == 202


def test_a_local_run_of_a_missing_checkpoint_is_refused_at_submit(
    operator_client: APIClient, demo_dataset: Any, settings: Any
) -> None:
    response = submit(operator_client, "Qwen/Qwen3-0.6B", dry_run=False)
    body = problem(response, 400)
    expected = Path(settings.TUNIX_MODELS_DIR) / "Qwen" / "Qwen3-0.6B"
    assert str(expected) in str(body)
    assert not TunixRun.objects.exists()


def test_a_present_checkpoint_or_a_download_allowance_is_accepted(
    operator_client: APIClient, demo_dataset: Any, settings: Any
) -> None:
    directory = Path(settings.TUNIX_MODELS_DIR) / "Qwen" / "Qwen3-0.6B"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"")
    assert submit(operator_client, "Qwen/Qwen3-0.6B", dry_run=False).status_code == 202
    settings.TUNIX_MODEL_DOWNLOAD = True
    assert submit(operator_client, "Qwen/Qwen3-1.7B", dry_run=False).status_code == 202


def test_separate_worker_hosts_leave_the_checkpoint_check_to_the_worker(
    operator_client: APIClient, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_MODELS_DIR_SHARED = False
    assert submit(operator_client, "Qwen/Qwen3-0.6B", dry_run=False).status_code == 202


def test_a_dry_run_of_a_real_model_needs_no_checkpoint(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    assert submit(operator_client, "google/gemma-3-270m").status_code == 202


@pytest.mark.parametrize(
    ("model_id", "rate"), [(model_catalog.TINY_MODEL_ID, 3e-3), ("google/gemma-3-270m", 2e-5)]
)
def test_the_learning_rate_defaults_to_the_models_and_is_stored(
    operator_client: APIClient, demo_dataset: Any, model_id: str, rate: float
) -> None:
    response = submit(operator_client, model_id)
    assert response.status_code == 202
    assert TunixRun.objects.get(id=response.json()["run_id"]).config["learning_rate"] == rate
    chosen = submit(operator_client, model_id, learning_rate=0.01)
    assert TunixRun.objects.get(id=chosen.json()["run_id"]).config["learning_rate"] == 0.01


def test_checkpoint_directories_stay_below_the_models_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    assert model_catalog.checkpoint_directory(root, "google/gemma-3-1b-it") == (
        root / "google" / "gemma-3-1b-it"
    )
    with pytest.raises(ValueError, match="unknown model"):
        model_catalog.checkpoint_directory(root, "../../etc")


def test_the_catalog_matches_tunix_own_registry(tunix_runtime: None) -> None:
    """Every real model is one Tunix knows, in the family Tunix files it under, with a config
    the trainer can build, and a LoRA target pattern for its family."""
    from tunix.models import automodel, registry

    from runs import trainer

    tunix_families = {m.model_id: m.model_config_category for m in registry.MODEL_CATALOG}
    for entry in model_catalog.CATALOG.values():
        assert entry.family in trainer.LORA_TARGETS
        if entry.is_preset:
            continue
        assert tunix_families.get(entry.id) == entry.family, entry.id
        from tunix.models import naming

        name = naming.ModelNaming(model_id=entry.id).model_name
        assert automodel.call_model_config(name) is not None


def test_a_run_whose_checkpoint_the_worker_lacks_fails_with_the_reason(
    operator_client: APIClient, demo_dataset: Any, settings: Any, tunix_runtime: None
) -> None:
    """Separate hosts: the web host cannot check, so the trainer refuses with the reason."""
    settings.TUNIX_MODELS_DIR_SHARED = False
    body = {"dataset_key": "tunix-demo-v1", "model_id": "Qwen/Qwen3-0.6B", "dry_run": False}
    response = operator_client.post("/api/tunix/run?mode=sync", body, format="json")
    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["status"], run["error_reason"]) == ("failed", "model_unavailable")
    expected = Path(settings.TUNIX_MODELS_DIR) / "Qwen" / "Qwen3-0.6B"
    assert str(expected) in run["message"]
    assert "TUNIX_MODEL_DOWNLOAD=1" in run["message"]
