"""Continuing training for real: a tiny training, exported (``python -m runs.export`` as the
worker's export task runs it) and registered as a version with an alias; a new local run names
``models:/<name>@<alias>``, is executed through the real local backend (the trainer as a child
process), and starts from the exported weights, not from random ones."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from runs import artifacts, export, model_catalog, services, trainer
from runs.dryrun import CONFIG_FILE_NAME
from runs.models import (
    Dataset,
    ExportStatus,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RunExport,
    RunMode,
    RunStatus,
    TunixRun,
)
from tests.factories import DEMO_KEY, TunixRunFactory
from tests.test_trainer import run_trainer, write_config

# The database does not change what is tested here: the PostgreSQL pass runs it once.
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.processes,
    pytest.mark.database_independent,
    pytest.mark.timeout(300),
]

SHAPE: dict[str, Any] = {"max_seq_length": 64, "eval_max_items": 0}
BASE_STEPS = 24  # enough for the loss to fall well below a random model's


def first_loss(points: list[Any]) -> float:
    step, loss = points[0]
    assert step == 1
    return float(loss)


@pytest.fixture
def registered(operator: User, demo_dataset: Dataset, tunix_runtime: None) -> dict[str, Any]:
    """A tiny training of BASE_STEPS steps on the demo dataset, exported and registered as
    version 1 of "tiny-continued", which the alias "production" names."""
    run: TunixRun = TunixRunFactory(
        completed=True,
        mode=RunMode.LOCAL,
        model_id=model_catalog.TINY_MODEL_ID,
        created_by=operator,
        dataset=demo_dataset,
        config={"lora_rank": 0},
    )
    directory = artifacts.run_directory(run)
    directory.mkdir(parents=True)
    code, output, stderr = run_trainer(write_config(directory, max_steps=BASE_STEPS, **SHAPE))
    assert code == 0, stderr[-3000:]
    fresh = [(line["step"], line["loss"]) for line in output.progress_lines if "loss" in line]

    asked, _ = services.export_request(user=operator, run_id=run.id)
    assert services.export_execute(export_id=asked.id) == ExportStatus.COMPLETED
    done = RunExport.objects.get(id=asked.id)
    model = RegisteredModel.objects.create(name="tiny-continued", latest_number=1)
    version = ModelVersion.objects.create(
        model=model,
        number=1,
        sha256=done.sha256,
        export=done,
        run=run,
        step=done.step,
        weights=done.weights,
        algorithm=run.algorithm,
        base_model_id=run.model_id,
        dataset_key=demo_dataset.key,
        dataset_sha256=demo_dataset.sha256,
    )
    ModelAlias.objects.create(model=model, name="production", version=version)
    return {
        "run": run,
        "export": done,
        "version": version,
        "directory": directory / done.directory,
        "fresh": fresh,
    }


def test_a_run_from_a_registered_alias_trains_on_from_the_exported_weights(
    operator: User, registered: dict[str, Any]
) -> None:
    fresh_first = first_loss(registered["fresh"])
    trained_last = float(registered["fresh"][-1][1])
    assert trained_last < fresh_first - 1.0  # the base training learned something to keep

    request = services.RunRequest(
        dataset_key=DEMO_KEY,
        model_id="models:/tiny-continued@production",
        mode=RunMode.LOCAL,
        config={"max_steps": 2, "lora_rank": 0, **SHAPE},
    )
    run = services.run_sync(user=operator, request=request).run
    assert run.status == RunStatus.COMPLETED, (run.error_reason, run.error_message, run.stderr)
    assert (run.model_id, run.base_version, run.base_export) == (
        "models:/tiny-continued/1",
        registered["version"],
        registered["export"],
    )
    assert run.config["learning_rate"] == model_catalog.TINY_LEARNING_RATE

    # The same data, seed and order as the base training's first step: the loss starts where
    # that training ended, not where random weights start.
    continued_first = first_loss(run.loss_curve)
    assert continued_first < fresh_first - 1.0, (continued_first, fresh_first)
    assert abs(continued_first - trained_last) < 1.0, (continued_first, trained_last)

    # LoRA puts fresh adapters on the same weights: they start at zero, so the first step's
    # loss is the full fine-tune's.
    lora = services.run_sync(
        user=operator,
        request=services.RunRequest(
            dataset_key=DEMO_KEY,
            model_id="models:/tiny-continued@production",
            mode=RunMode.LOCAL,
            config={"max_steps": 1, "lora_rank": 4, **SHAPE},
        ),
    ).run
    assert lora.status == RunStatus.COMPLETED, (lora.error_reason, lora.error_message)
    assert abs(first_loss(lora.loss_curve) - continued_first) < 1e-3

    config = json.loads((artifacts.run_directory(run) / CONFIG_FILE_NAME).read_text())
    assert config["model"]["export_dir"] == str(registered["directory"])
    plan = trainer.read_plan(artifacts.run_directory(run) / CONFIG_FILE_NAME)
    tokens = [trainer.ByteTokenizer().encode("What is the capital of France?")]
    with export.tunix_mesh() as mesh:
        model, tokenizer = trainer.build_model(plan, None, mesh, seed=int(plan.hyper["seed"]))
        built = export.model_logits(model, tokens)
    assert isinstance(tokenizer, trainer.ByteTokenizer)
    np.testing.assert_allclose(
        built, export.export_logits(registered["directory"], tokens), atol=1e-5
    )

    # The continued run exports in turn (its base weights are the export it started from), and
    # can be continued from the same way.
    again, _ = services.export_request(user=operator, run_id=run.id)
    assert services.export_execute(export_id=again.id) == ExportStatus.COMPLETED
    again.refresh_from_db()
    exported = artifacts.run_directory(run) / again.directory
    manifest = json.loads((exported / "export.json").read_text())
    assert (manifest["model_id"], manifest["family"]) == ("models:/tiny-continued/1", "tiny")
    restored = export.model_logits(export.restored_model(artifacts.run_directory(run)), tokens)
    np.testing.assert_allclose(export.export_logits(exported, tokens), restored, atol=1e-5)
    assert not np.allclose(restored, built, atol=1e-3)  # two more steps changed the weights
