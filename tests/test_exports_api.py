"""Exports through the API: which runs and checkpoints may be exported (the refusals name the
field or the reason, and create nothing), one live export per checkpoint and format, its
queue task, and the archive streamed whatever its size."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import artifacts, services
from runs.models import ExportStatus, RunExport, RunMode, TunixRun
from tests.factories import TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db


def checkpoints(run: TunixRun, *steps: int, attempt: int = 1, subdir: str = "") -> None:
    """Complete Orbax checkpoint directories (the metadata file is what marks one done)."""
    for step in steps:
        directory = artifacts.run_directory(run) / "checkpoints" / f"attempt-{attempt}"
        directory = directory / subdir / str(step)
        directory.mkdir(parents=True)
        (directory / "_CHECKPOINT_METADATA").write_text("{}")


@pytest.fixture
def trained(operator: Any) -> TunixRun:
    run: TunixRun = TunixRunFactory(
        completed=True, mode=RunMode.LOCAL, created_by=operator, config={"lora_rank": 4}
    )
    checkpoints(run, 12, 24)
    (artifacts.run_directory(run) / "checkpoints" / "attempt-1" / "36").mkdir()  # unfinished
    return run


def exports_url(run: TunixRun) -> str:
    return f"/api/tunix/runs/{run.id}/exports"


def test_an_export_of_the_newest_checkpoint_is_queued_and_asking_again_returns_it(
    operator_client: APIClient, trained: TunixRun
) -> None:
    first = operator_client.post(exports_url(trained), {}, format="json")
    assert first.status_code == 202, first.content
    body = first.json()
    assert (body["step"], body["weights"], body["status"]) == (24, "merged", "pending")
    assert body["directory"] == "exports/24-merged"
    assert body["archive_url"] is None
    assert first["Location"] == body["url"]
    assert OrmQ.objects.count() == 1  # its task, committed with it
    again = operator_client.post(exports_url(trained), {"step": 24}, format="json")
    assert again.status_code == 200
    assert again.json()["export_id"] == body["export_id"]
    adapter = operator_client.post(exports_url(trained), {"weights": "adapter"}, format="json")
    assert adapter.status_code == 202
    listed = operator_client.get(exports_url(trained)).json()
    assert [item["weights"] for item in listed] == ["adapter", "merged"]
    assert operator_client.get(body["url"]).json()["status"] == "pending"


def test_a_failed_export_does_not_block_another_try(
    operator_client: APIClient, trained: TunixRun
) -> None:
    first = operator_client.post(exports_url(trained), {"step": 12}, format="json").json()
    RunExport.objects.filter(id=first["export_id"]).update(
        status=ExportStatus.FAILED, error_reason="timeout"
    )
    retry = operator_client.post(exports_url(trained), {"step": 12}, format="json")
    assert retry.status_code == 202
    assert retry.json()["export_id"] != first["export_id"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"step": 7}, "step", "no checkpoint at step 7; this run has 12, 24"),
        ({"step": 36}, "step", "this run has 12, 24"),  # Orbax had not finished it
        ({"weights": "gguf"}, "weights", "gguf"),
        ({"step": "x"}, "step", "integer"),
        ({"format": "merged"}, "format", "unknown field"),
    ],
)
def test_a_bad_export_request_is_a_400_naming_the_field(
    operator_client: APIClient, trained: TunixRun, body: dict[str, Any], field: str, words: str
) -> None:
    refused = problem(operator_client.post(exports_url(trained), body, format="json"), 400)
    assert refused["errors"][0]["field"] == field
    assert words in refused["errors"][0]["message"]
    assert not RunExport.objects.exists()


def test_an_adapter_export_of_a_full_fine_tune_is_refused(
    operator_client: APIClient, operator: Any
) -> None:
    run = TunixRunFactory(
        completed=True, mode=RunMode.LOCAL, created_by=operator, config={"lora_rank": 0}
    )
    checkpoints(run, 8)
    refused = problem(
        operator_client.post(exports_url(run), {"weights": "adapter"}, format="json"), 400
    )
    assert refused["errors"][0]["field"] == "weights"
    assert "lora_rank" in refused["detail"]


@pytest.mark.parametrize(
    ("traits", "words"),
    [
        ({"completed": True, "mode": RunMode.DRY_RUN}, "a dry-run run"),
        ({"failed": True, "mode": RunMode.LOCAL}, "a failed run"),
        ({"running": True, "mode": RunMode.LOCAL}, "a running run"),
    ],
)
def test_only_a_completed_training_can_be_exported(
    operator_client: APIClient, operator: Any, traits: dict[str, Any], words: str
) -> None:
    run = TunixRunFactory(created_by=operator, **traits)
    checkpoints(run, 8)
    refused = problem(operator_client.post(exports_url(run), {}, format="json"), 409)
    assert words in refused["detail"]
    assert not RunExport.objects.exists()


def test_a_run_without_a_checkpoint_has_nothing_to_export(
    operator_client: APIClient, operator: Any
) -> None:
    run = TunixRunFactory(completed=True, mode=RunMode.LOCAL, created_by=operator)
    refused = problem(operator_client.post(exports_url(run), {}, format="json"), 409)
    assert "no complete checkpoint" in refused["detail"]


def test_a_grpo_runs_checkpoints_are_found_under_its_actor_directory(
    operator_client: APIClient, operator: Any
) -> None:
    run = TunixRunFactory(completed=True, mode=RunMode.LOCAL, created_by=operator, algorithm="grpo")
    checkpoints(run, 4, 8, subdir="actor")
    answer = operator_client.post(exports_url(run), {}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["step"] == 8


def test_a_run_the_user_may_not_see_is_a_404_and_exporting_needs_launch_rights(
    trained: TunixRun, viewer_client: APIClient, user: Any
) -> None:
    # The plain user sees every run (runs.view_tunixrun) but may not launch work.
    problem(viewer_client.post(exports_url(trained), {}, format="json"), 403)
    outsider = APIClient()
    outsider.force_authenticate(UserFactory())  # no permissions: sees only their own runs
    problem(outsider.post(exports_url(trained), {}, format="json"), 404)
    problem(outsider.get(exports_url(trained)), 404)
    assert not RunExport.objects.exists()


def test_a_completed_export_streams_as_one_tar_past_the_download_limit(
    operator_client: APIClient, trained: TunixRun, settings: Any, operator: Any
) -> None:
    export, _ = services.export_request(user=operator, run_id=trained.id)
    directory = artifacts.run_directory(trained) / export.directory
    (directory / "tokenizer").mkdir(parents=True)
    payload = {
        "model.safetensors": bytes(range(256)) * 4099,  # not a multiple of 512
        "config.json": b'{"model_type": "llama"}',
        "tokenizer/tokenizer.json": b"{}",
    }
    for name, data in payload.items():
        (directory / name).write_bytes(data)
    RunExport.objects.filter(id=export.id).update(
        status=ExportStatus.COMPLETED, sha256="ab" * 32, size_bytes=4
    )
    settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES = 1024  # far below the weights' size
    item = operator_client.get(f"{exports_url(trained)}/{export.id}").json()
    response = operator_client.get(item["archive_url"])
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-tar"
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert int(response["Content-Length"]) == len(body)
    name = f"{str(trained.id)[:8]}-step24-merged"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert members == {f"{name}/{path}": data for path, data in payload.items()}


def test_an_export_not_yet_done_has_no_archive(
    operator_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    export, _ = services.export_request(user=operator, run_id=trained.id)
    problem(operator_client.get(f"{exports_url(trained)}/{export.id}/archive"), 404)
    problem(operator_client.get(f"{exports_url(trained)}/not-an-id"), 404)


def test_an_export_task_delivered_twice_runs_once(trained: TunixRun, operator: Any) -> None:
    export, _ = services.export_request(user=operator, run_id=trained.id)
    RunExport.objects.filter(id=export.id).update(status=ExportStatus.COMPLETED, sha256="c" * 64)
    assert services.export_execute(export_id=export.id) == "skipped"


def test_export_directories_stay_below_the_run(trained: TunixRun, operator: Any) -> None:
    export, _ = services.export_request(user=operator, run_id=trained.id)
    root = artifacts.run_directory(trained)
    assert (root / export.directory).resolve().is_relative_to(root.resolve())
    assert Path(export.directory).parts[0] == "exports"
