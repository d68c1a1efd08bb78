"""Try it for real: a tiny LoRA training's checkpoint sampled through the API and the worker's
task (``python -m runs.sample`` as a child process), greedy decoding repeatable, and a
registered version of its merged export, loaded back through Tunix, answering what the
checkpoint answered (the adapters applied as they were trained)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import artifacts, export, sample, services
from runs.models import (
    ExportStatus,
    ModelVersion,
    RegisteredModel,
    RunMode,
    Sample,
    SampleStatus,
    TunixRun,
)
from runs.progress import ERROR_PREFIX
from tests.factories import TunixRunFactory
from tests.support.clusters import REPO_ROOT
from tests.test_trainer import run_trainer, write_config

# The database does not change what is tested here: the PostgreSQL pass runs it once.
pytestmark = [pytest.mark.database_independent, pytest.mark.timeout(300)]

LORA: dict[str, Any] = {"lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-2}
PROMPT = "What is 22 plus 9?"


@pytest.fixture
def trained(operator: Any, tunix_runtime: None) -> TunixRun:
    run: TunixRun = TunixRunFactory(
        completed=True,
        mode=RunMode.LOCAL,
        model_id="tunix-rt/tiny-llama3",
        created_by=operator,
        config={"lora_rank": 4},
    )
    directory = artifacts.run_directory(run)
    directory.mkdir(parents=True)
    code, _, stderr = run_trainer(write_config(directory, max_steps=4, max_seq_length=64, **LORA))
    assert code == 0, stderr[-3000:]
    return run


def ask(client: APIClient, url: str, **body: Any) -> Sample:
    answer = client.post(url, {"prompt": PROMPT, "max_new_tokens": 16, **body}, format="json")
    assert answer.status_code == 202, answer.content
    sample_id = answer.json()["id"]
    # What the worker's queue task does.
    assert services.sample_execute(sample_id=sample_id) == SampleStatus.COMPLETED, (
        Sample.objects.get(id=sample_id).error_message
    )
    polled = client.get(answer["Location"]).json()
    assert polled["status"] == "completed"
    return Sample.objects.get(id=sample_id)


@pytest.mark.django_db
@pytest.mark.processes
def test_a_checkpoint_and_its_registered_export_answer_a_prompt_alike(
    operator_client: APIClient, trained: TunixRun, operator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"/api/tunix/runs/{trained.id}/samples"
    first = ask(operator_client, url)
    assert first.step == 4
    assert first.completion.strip()
    assert first.load_seconds is not None
    assert first.load_seconds > 0  # loading and compiling
    assert first.generate_seconds is not None
    assert first.generate_seconds > 0
    assert first.seconds is not None
    assert first.seconds >= first.load_seconds + first.generate_seconds
    again = ask(operator_client, url)
    assert again.completion == first.completion  # greedy: nothing drawn

    sampled = ask(operator_client, url, temperature=1.0, seed=3)
    assert (sampled.temperature, sampled.seed) == (1.0, 3)
    assert sampled.completion != first.completion  # drawn from the whole distribution

    # The worker's export task writes it (runs.export.export_run in its own process: JAX is
    # never imported into this one, which forks the sample processes).
    row, _ = services.export_request(user=operator, run_id=trained.id)
    assert services.export_execute(export_id=row.id) == ExportStatus.COMPLETED
    row.refresh_from_db()
    model = RegisteredModel.objects.create(name="tiny-lora")
    ModelVersion.objects.create(
        model=model, number=1, sha256=row.sha256, export=row, run=trained, step=4,
        weights="merged", algorithm=trained.algorithm, base_model_id=trained.model_id,
        dataset_key="tunix-demo-v1", dataset_sha256="0" * 64,
    )  # fmt: skip
    caplog.clear()
    version = ask(operator_client, "/api/tunix/registry/models/tiny-lora/versions/1/samples")
    assert f"sample_completed sample_id={version.id} " in caplog.text
    assert "weights=export" in caplog.text  # loaded from the export directory, through Tunix
    # The merged export holds the adapters folded in: the same greedy answer.
    assert version.completion == first.completion


# --------------------------------------------------------------------------- the process's refusals


def refusal(config: Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "runs.sample", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith(ERROR_PREFIX)]
    return proc.returncode, json.loads(line.removeprefix(ERROR_PREFIX))


@pytest.mark.processes
@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"run_dir": "relative/dir"}, "config_invalid", "run_dir must be an absolute path"),
        ({"run_dir": "/a", "export_dir": "/b"}, "config_invalid", "either run_dir or export_dir"),
        ({"run_dir": "/a", "prompt": " "}, "config_invalid", "prompt must be a non-empty"),
        ({"run_dir": "/a", "max_new_tokens": 0}, "config_invalid", "max_new_tokens"),
        ({"run_dir": "/a", "temperature": 9}, "config_invalid", "temperature"),
    ],
)
def test_the_sample_process_refuses_a_bad_config_with_a_reason(
    tmp_path: Path, spec: dict[str, Any], reason: str, words: str
) -> None:
    config = tmp_path / "sample.json"
    config.write_text(json.dumps({"prompt": "Hi", "max_new_tokens": 4, **spec}))
    code, error = refusal(config)
    assert code == 2
    assert error["reason"] == reason
    assert words in error["message"]


@pytest.mark.processes
def test_an_adapter_export_is_refused_as_no_whole_model(
    tmp_path: Path, tunix_runtime: None
) -> None:
    adapter = tmp_path / "exports" / "4-adapter"
    adapter.mkdir(parents=True)
    (adapter / export.ADAPTER_WEIGHTS_FILE).write_bytes(b"pairs")
    config = tmp_path / "sample.json"
    config.write_text(json.dumps({"export_dir": str(adapter), "prompt": "Hi", "max_new_tokens": 4}))
    code, error = refusal(config)
    assert (code, error["reason"]) == (2, "config_invalid")
    assert "adapter export" in error["message"]
    config.write_text(
        json.dumps({"export_dir": str(tmp_path / "gone"), "prompt": "Hi", "max_new_tokens": 4})
    )
    assert refusal(config)[1]["reason"] == "model_unavailable"


def test_compile_seconds_count_nested_compilations_once() -> None:
    clock = sample.CompileClock()
    # A trace that traces an inner function, then a separate compilation.
    clock.spans = [(10.0, 12.0), (10.5, 11.0), (11.5, 13.0), (20.0, 20.5)]
    assert clock.seconds == pytest.approx(3.5)
    assert sample.CompileClock().seconds == 0.0
