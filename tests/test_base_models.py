"""A run whose base model is earlier weights: a registered version (models:/<name>/<n>), an alias
(models:/<name>@<alias>) or an export (exports:/<id>), resolved and pinned when it is submitted.

The registry's rows are made here with the ORM, as a promotion would leave them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from runs import artifacts, model_catalog, services, trainer
from runs.models import (
    Dataset,
    ExportStatus,
    ExportWeights,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RunExport,
    RunMode,
    RunStatus,
    TunixRun,
)
from runs.outcomes import Reason
from tests.factories import DEMO_KEY, TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

SUBMIT = "/api/tunix/run"
ASYNC = f"{SUBMIT}?mode=async"
MODEL = "tiny-demo"


def export_of(run: TunixRun, *, step: int = 4, **fields: Any) -> RunExport:
    values: dict[str, Any] = {
        "weights": ExportWeights.MERGED,
        "status": ExportStatus.COMPLETED,
        "sha256": f"{step:064x}",
        **fields,
    }
    if values["status"] != ExportStatus.COMPLETED:
        values["sha256"] = ""
    return RunExport.objects.create(run=run, step=step, **values)


def write_export_files(export: RunExport) -> Path:
    """The files a dry-run looks for (not loadable weights: nothing here loads them)."""
    directory = artifacts.run_directory(export.run) / export.directory
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"weights")
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return directory


def version_of(export: RunExport, number: int, model: RegisteredModel) -> ModelVersion:
    model.latest_number = max(model.latest_number, number)
    model.save(update_fields=["latest_number"])
    return ModelVersion.objects.create(
        model=model,
        number=number,
        sha256=export.sha256,
        export=export,
        run=export.run,
        step=export.step,
        weights=export.weights,
        algorithm=export.run.algorithm,
        base_model_id=export.run.model_id,
        dataset_key=export.run.dataset.key,
        dataset_sha256=export.run.dataset.sha256,
    )


def trained_run(owner: User | None, dataset: Dataset, **fields: Any) -> TunixRun:
    values = {"model_id": model_catalog.TINY_MODEL_ID, **fields}
    run: TunixRun = TunixRunFactory(
        completed=True, mode=RunMode.LOCAL, created_by=owner, dataset=dataset, **values
    )
    return run


@pytest.fixture
def registry(operator: User, demo_dataset: Dataset) -> dict[str, Any]:
    """Model tiny-demo: version 1 (alias production) and version 2, from two exports of one
    tiny training."""
    run = trained_run(operator, demo_dataset)
    first, second = export_of(run, step=4), export_of(run, step=8)
    model = RegisteredModel.objects.create(name=MODEL)
    v1, v2 = version_of(first, 1, model), version_of(second, 2, model)
    alias = ModelAlias.objects.create(model=model, name="production", version=v1)
    return {"run": run, "exports": (first, second), "versions": (v1, v2), "alias": alias}


def body(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"dataset_key": DEMO_KEY, "model_id": model_id, **extra}


def submitted(client: APIClient, model_id: str, **extra: Any) -> TunixRun:
    response = client.post(ASYNC, body(model_id, **extra), format="json")
    assert response.status_code == 202, response.content
    return TunixRun.objects.get(id=response.json()["run_id"])


def refused(client: APIClient, model_id: str) -> dict[str, Any]:
    before = TunixRun.objects.count()
    answer = problem(client.post(ASYNC, body(model_id), format="json"), 400)
    assert answer["errors"][0]["field"] == "model_id", answer
    assert TunixRun.objects.count() == before
    return answer


def launch_only_client() -> tuple[User, APIClient]:
    """A user who may launch runs but sees only their own."""
    created = UserFactory()
    created.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    member = User.objects.get(pk=created.pk)  # fresh instance: permission cache is per object
    client = APIClient()
    client.force_authenticate(member)
    return member, client


# --------------------------------------------------------------------------- resolution


def test_a_version_reference_pins_the_version_and_its_export(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    run = submitted(operator_client, f"models:/{MODEL}/2")
    assert run.model_id == f"models:/{MODEL}/2"
    assert run.base_version == registry["versions"][1]
    assert run.base_export == registry["exports"][1]
    # The tiny preset's weights keep training at the preset's rate.
    assert run.config["learning_rate"] == model_catalog.TINY_LEARNING_RATE


def test_an_alias_is_pinned_to_the_version_it_named_at_submit(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    v1, v2 = registry["versions"]
    run = submitted(operator_client, f"models:/{MODEL}@production")
    assert (run.model_id, run.base_version) == (f"models:/{MODEL}/1", v1)

    alias = registry["alias"]
    alias.version = v2
    alias.save()
    run.refresh_from_db()
    assert (run.model_id, run.base_version, run.base_export) == (
        f"models:/{MODEL}/1",
        v1,
        registry["exports"][0],
    )
    later = submitted(operator_client, f"models:/{MODEL}@production")
    assert (later.model_id, later.base_version) == (f"models:/{MODEL}/2", v2)


def test_the_latest_alias_is_the_highest_version_without_a_row(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    assert not ModelAlias.objects.filter(name="latest").exists()
    run = submitted(operator_client, f"models:/{MODEL}@latest")
    assert (run.model_id, run.base_version) == (f"models:/{MODEL}/2", registry["versions"][1])


def test_an_export_reference_pins_the_export_under_its_canonical_id(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    export = registry["exports"][0]
    run = submitted(operator_client, f"exports:/{str(export.id).upper()}")
    assert run.model_id == f"exports:/{export.id}"
    assert (run.base_export, run.base_version) == (export, None)


def test_a_retry_with_the_same_key_replays_after_the_alias_moved(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    first = submitted(operator_client, f"models:/{MODEL}@production", client_request_id="k-1")
    alias = registry["alias"]
    alias.version = registry["versions"][1]
    alias.save()
    again = operator_client.post(
        ASYNC, body(f"models:/{MODEL}@production", client_request_id="k-1"), format="json"
    )
    assert again.status_code == 202, again.content
    assert again.json()["run_id"] == str(first.id)
    assert TunixRun.objects.filter(base_version__isnull=False).count() == 1


def test_run_again_continues_from_the_same_pinned_version(
    operator: User, operator_client: APIClient, registry: dict[str, Any]
) -> None:
    run = submitted(operator_client, f"models:/{MODEL}@production")
    registry["alias"].version = registry["versions"][1]
    registry["alias"].save()
    again = services.run_submit(
        user=operator, request=services.RunRequest.like(run), enqueue=False
    ).run
    assert again.id != run.id
    assert (again.model_id, again.base_version_id) == (run.model_id, registry["versions"][0].id)


def test_a_chain_of_continued_runs_keeps_the_catalog_family(
    operator: User, operator_client: APIClient, registry: dict[str, Any]
) -> None:
    continued = trained_run(
        operator,
        registry["run"].dataset,
        model_id=f"models:/{MODEL}/1",
        base_export=registry["exports"][0],
        base_version=registry["versions"][0],
    )
    export = export_of(continued, step=2)
    from runs import selectors

    base = selectors.base_model_resolve(model_id=f"exports:/{export.id}", user=operator)
    assert (base.root_model_id, base.family) == (model_catalog.TINY_MODEL_ID, "tiny")
    assert base.directory == artifacts.run_directory(continued) / "exports" / "2-merged"
    run = submitted(operator_client, f"exports:/{export.id}")
    assert run.config["learning_rate"] == model_catalog.TINY_LEARNING_RATE


def test_a_registered_version_is_a_base_for_a_user_who_cannot_see_its_run(
    registry: dict[str, Any],
) -> None:
    _, client = launch_only_client()
    run = submitted(client, f"models:/{MODEL}/1")
    assert run.base_version == registry["versions"][0]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "model_id",
    [
        f"models:/{MODEL}/3",
        f"models:/{MODEL}/99999999999",
        f"models:/{MODEL}@staging",
        "models:/no-such-model/1",
        "models:/no-such-model@latest",
        "exports:/00000000-0000-4000-8000-000000000000",
    ],
)
def test_a_reference_to_nothing_is_a_400_naming_model_id(
    operator_client: APIClient, registry: dict[str, Any], model_id: str
) -> None:
    refused(operator_client, model_id)


@pytest.mark.parametrize(
    "model_id",
    [
        "models:/Tiny Demo/1",
        f"models:/{MODEL}/0",
        f"models:/{MODEL}@",
        f"models:/{MODEL}@Prod",
        "exports:/not-a-uuid",
        "exports:/../../etc",
        "models:/",
    ],
)
def test_a_malformed_reference_is_a_400_naming_model_id(
    operator_client: APIClient, registry: dict[str, Any], model_id: str
) -> None:
    refused(operator_client, model_id)


def test_an_unfinished_export_is_refused(
    operator: User, operator_client: APIClient, demo_dataset: Dataset
) -> None:
    export = export_of(trained_run(operator, demo_dataset), status=ExportStatus.RUNNING)
    answer = refused(operator_client, f"exports:/{export.id}")
    assert "running" in answer["detail"]


def test_an_adapter_export_is_refused_with_advice_to_export_merged(
    operator: User, operator_client: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(operator, demo_dataset, config={"lora_rank": 4})
    export = export_of(run, weights=ExportWeights.ADAPTER)
    answer = refused(operator_client, f"exports:/{export.id}")
    assert "merged" in answer["detail"]
    model = RegisteredModel.objects.create(name="adapters")
    version_of(export, 1, model)
    assert "merged" in refused(operator_client, "models:/adapters/1")["detail"]


def test_an_export_of_a_run_the_user_cannot_see_is_as_unknown_as_a_missing_one(
    registry: dict[str, Any],
) -> None:
    _, client = launch_only_client()
    export = registry["exports"][0]
    hidden = refused(client, f"exports:/{export.id}")
    missing = refused(client, "exports:/00000000-0000-4000-8000-000000000000")
    assert hidden["detail"].replace(str(export.id), "X") == missing["detail"].replace(
        "00000000-0000-4000-8000-000000000000", "X"
    )


def test_an_export_of_a_model_outside_the_catalog_is_refused(
    operator: User, operator_client: APIClient, demo_dataset: Dataset
) -> None:
    export = export_of(trained_run(operator, demo_dataset, model_id="acme/custom"))
    answer = refused(operator_client, f"exports:/{export.id}")
    assert "acme/custom" in answer["detail"]


# --------------------------------------------------------------------------- the hot path


def test_a_catalog_model_id_pays_no_query_for_the_registry(
    operator: User, demo_dataset: Dataset, registry: dict[str, Any]
) -> None:
    request = services.RunRequest(dataset_key=DEMO_KEY, model_id=model_catalog.TINY_MODEL_ID)
    services.run_submit(user=operator, request=request, enqueue=True)  # permissions cached

    def statements(captured: CaptureQueriesContext) -> list[str]:
        # The test's transaction wraps each write in a savepoint; those are not the submit's.
        return [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]

    with CaptureQueriesContext(connection) as plain:
        services.run_submit(user=operator, request=request, enqueue=True)
    sql = " ".join(statements(plain))
    for table in (ModelVersion, ModelAlias, RunExport):
        assert table._meta.db_table not in sql
    if connection.vendor == "postgresql":
        # The whole submit is the one statement that inserts the run and its task.
        assert len(statements(plain)) == 1, statements(plain)
    reference = services.RunRequest(dataset_key=DEMO_KEY, model_id=f"models:/{MODEL}@production")
    with CaptureQueriesContext(connection) as based:
        services.run_submit(user=operator, request=reference, enqueue=True)
    assert len(statements(based)) > len(statements(plain))
    assert ModelAlias._meta.db_table in " ".join(statements(based))


# --------------------------------------------------------------------------- execution


def test_the_spec_of_a_continued_run_names_the_export_directory_and_family(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    run = submitted(operator_client, f"models:/{MODEL}@production", dry_run=False)
    spec = services.run_spec(run).spec
    export = registry["exports"][0]
    assert spec["model"] == {
        "id": f"models:/{MODEL}/1",
        "family": "tiny",
        "export_dir": str(artifacts.run_directory(export.run) / "exports" / "4-merged"),
        "base_model_id": model_catalog.TINY_MODEL_ID,
    }
    assert Path(spec["model"]["export_dir"]).is_absolute()


def test_a_dry_run_from_a_version_completes_and_writes_the_trainers_config(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    directory = write_export_files(registry["exports"][0])
    response = operator_client.post(SUBMIT, body(f"models:/{MODEL}@production"), format="json")
    assert response.status_code == 201, response.content
    run = TunixRun.objects.get(id=response.json()["run_id"])
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert f"continues from:   {directory} (tiny)" in run.stdout
    config = json.loads((artifacts.run_directory(run) / "tunix_config.json").read_text())
    plan = trainer.read_plan(artifacts.run_directory(run) / "tunix_config.json")
    assert config["model"]["export_dir"] == str(directory)
    assert (plan.model.family, plan.export_dir, plan.checkpoint_dir) == ("tiny", directory, None)
    assert plan.model.is_preset
    assert plan.model.learning_rate == model_catalog.TINY_LEARNING_RATE


def test_a_dry_run_whose_export_directory_is_missing_fails_as_model_unavailable(
    operator_client: APIClient, registry: dict[str, Any]
) -> None:
    response = operator_client.post(SUBMIT, body(f"models:/{MODEL}/2"), format="json")
    assert response.status_code == 201, response.content
    run = TunixRun.objects.get(id=response.json()["run_id"])
    assert (run.status, run.error_reason) == (RunStatus.FAILED, Reason.MODEL_UNAVAILABLE)
    assert "8-merged" in run.error_message


def plan_spec(tmp_path: Path, model: dict[str, Any]) -> Path:
    path = tmp_path / "tunix_config.json"
    path.write_text(
        json.dumps(
            {
                "run_id": "r",
                "model": model,
                "dataset": {"path": str(tmp_path / "d.jsonl")},
                "training": {},
                "output": {
                    "dir": str(tmp_path),
                    "checkpoints": str(tmp_path / "checkpoints" / "attempt-1"),
                    "metrics": str(tmp_path / "metrics" / "attempt-1"),
                },
            }
        )
    )
    return path


def test_a_real_familys_export_is_the_plans_checkpoint_and_is_never_downloaded(
    tmp_path: Path,
) -> None:
    model = {
        "id": "models:/gemma/1",
        "family": "gemma3",
        "export_dir": str(tmp_path / "export"),
        "base_model_id": "google/gemma-3-270m",
        "allow_download": True,
    }
    plan = trainer.read_plan(plan_spec(tmp_path, model))
    assert (plan.checkpoint_dir, plan.export_dir) == (tmp_path / "export", tmp_path / "export")
    assert (plan.model.family, plan.base_model_id, plan.allow_download) == (
        "gemma3",
        "google/gemma-3-270m",
        False,
    )
    with pytest.raises(trainer.TrainerError) as refused_plan:
        trainer.resolve_checkpoint(plan)
    assert refused_plan.value.reason == Reason.MODEL_UNAVAILABLE


def test_a_plan_of_an_unknown_family_is_refused(tmp_path: Path) -> None:
    model = {"id": "models:/x/1", "family": "nonsense", "export_dir": str(tmp_path)}
    with pytest.raises(trainer.TrainerError) as refused_plan:
        trainer.read_plan(plan_spec(tmp_path, model))
    assert refused_plan.value.reason == Reason.MODEL_UNAVAILABLE


TINY_CONFIG = json.dumps(
    {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "vocab_size": trainer.TINY_VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "head_dim": 16,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
    }
)


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"config.json": "{}"},
        {"tunix_rt_tokenizer.json": "{}"},
        {"tunix_rt_tokenizer.json": "{}", "config.json": "{not json"},
        {
            "tunix_rt_tokenizer.json": "{}",
            "config.json": TINY_CONFIG,
            "model.safetensors": "not safetensors",
        },
    ],
)
def test_a_missing_or_broken_tiny_export_is_model_unavailable(
    tmp_path: Path, files: dict[str, str], tunix_runtime: None
) -> None:
    directory = tmp_path / "export"
    if files:
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
    model = {"id": "models:/x/1", "family": "tiny", "export_dir": str(directory)}
    plan = trainer.read_plan(plan_spec(tmp_path, model))
    from runs import export

    with export.tunix_mesh() as mesh, pytest.raises(trainer.TrainerError) as refused_build:
        trainer.build_model(plan, None, mesh, seed=0)
    assert refused_build.value.reason == Reason.MODEL_UNAVAILABLE
    assert "models:/x/1" in refused_build.value.message


# --------------------------------------------------------------------------- the launch page


def test_the_launch_page_suggests_registered_aliases_and_versions(
    web: Client, registry: dict[str, Any]
) -> None:
    page = web.get("/runs/new").content.decode()
    assert 'list="model-options"' in page
    for value in (f"models:/{MODEL}@production", f"models:/{MODEL}/1", f"models:/{MODEL}/2"):
        assert f'value="{value}"' in page
    assert f'value="{model_catalog.TINY_MODEL_ID}"' in page


def test_the_launch_form_continues_from_an_alias_and_names_model_id_when_refused(
    web: Client, registry: dict[str, Any]
) -> None:
    form = {
        "dataset": DEMO_KEY,
        "mode": RunMode.DRY_RUN,
        "execution": "async",
        "model_id": f"models:/{MODEL}@production",
    }
    response = web.post("/runs/new", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = TunixRun.objects.get(base_export__isnull=False)
    assert (run.model_id, run.base_version) == (f"models:/{MODEL}/1", registry["versions"][0])

    before = TunixRun.objects.count()
    again = web.post("/runs/new", {**form, "model_id": f"models:/{MODEL}@staging"})
    page = again.content.decode()
    assert 'data-testid="error-model_id"' in page
    assert "no registered model" in page
    assert TunixRun.objects.count() == before


def test_a_real_familys_damaged_export_is_model_unavailable_before_tunix_reads_it(
    tmp_path: Path, tunix_runtime: None
) -> None:
    directory = tmp_path / "export"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    # A header length far beyond the file: Tunix's loader would try to allocate it.
    (directory / "model.safetensors").write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    model = {"id": "models:/q/1", "family": "qwen3", "export_dir": str(directory)}
    plan = trainer.read_plan(plan_spec(tmp_path, model))
    checkpoint = trainer.resolve_checkpoint(plan)
    with pytest.raises(trainer.TrainerError) as refused_build:
        trainer.build_model(plan, checkpoint, mesh=None, seed=0)
    assert refused_build.value.reason == Reason.MODEL_UNAVAILABLE
    assert "header claims" in refused_build.value.message
