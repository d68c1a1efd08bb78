"""An export for real: a tiny training's checkpoint, asked for through the API, written by the
worker's export task (``python -m runs.export`` as a child process), then downloaded as one
streamed archive holding a Hugging Face model directory."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import artifacts, services
from runs.models import ExportStatus, RunExport, RunMode, TunixRun
from tests.factories import TunixRunFactory
from tests.test_trainer import run_trainer, write_config

# The database does not change what is tested here: the PostgreSQL pass runs it once.
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.processes,
    pytest.mark.database_independent,
    pytest.mark.timeout(300),
]


@pytest.fixture
def trained(operator: Any, tunix_runtime: None) -> TunixRun:
    run: TunixRun = TunixRunFactory(
        completed=True,
        mode=RunMode.LOCAL,
        model_id="tunix-rt/tiny-llama3",
        created_by=operator,
        config={"lora_rank": 0},
    )
    directory = artifacts.run_directory(run)
    directory.mkdir(parents=True)
    code, _, stderr = run_trainer(write_config(directory, max_steps=4, max_seq_length=64))
    assert code == 0, stderr[-3000:]
    return run


def test_a_queued_export_writes_a_hugging_face_directory_and_streams_it(
    operator_client: APIClient, trained: TunixRun
) -> None:
    asked = operator_client.post(f"/api/tunix/runs/{trained.id}/exports", {}, format="json")
    assert asked.status_code == 202, asked.content
    export_id = asked.json()["export_id"]
    assert asked.json()["step"] == 4

    # What the worker's queue task does.
    assert services.export_execute(export_id=export_id) == ExportStatus.COMPLETED
    export = RunExport.objects.get(id=export_id)
    assert export.error_message == ""
    manifest = json.loads(
        (artifacts.run_directory(trained) / export.directory / "export.json").read_text()
    )
    assert export.sha256 == manifest["sha256"]
    item = operator_client.get(asked.json()["url"]).json()
    assert item["status"] == "completed"
    names = {entry["path"] for entry in item["files"]}
    assert {"model.safetensors", "config.json"} <= names

    archive = operator_client.get(item["archive_url"])
    assert archive.status_code == 200
    body = b"".join(archive.streaming_content)  # type: ignore[attr-defined]
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile()}
        config = json.loads(tar.extractfile(members["config.json"]).read())  # type: ignore[union-attr]
    assert {"model.safetensors", "config.json", "export.json"} <= set(members)
    assert config["num_hidden_layers"] == 2
    # Asking again for the same checkpoint answers with this export.
    again = operator_client.post(f"/api/tunix/runs/{trained.id}/exports", {}, format="json")
    assert (again.status_code, again.json()["export_id"]) == (200, export_id)
