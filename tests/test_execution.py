"""Executing runs in-process: dry-run checks, local mode without Tunix, failure recording."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from runs import services
from runs.dryrun import CONFIG_FILE_NAME
from runs.execution import local
from runs.execution.dryrun import DryRunBackend
from runs.models import RunMode, RunStatus, TunixRun
from tests.factories import submitted_run

pytestmark = pytest.mark.django_db


def _sync(
    mode: str = RunMode.DRY_RUN, model_id: str = "google/gemma-3-270m", **config: Any
) -> TunixRun:
    return services.run_sync(
        user=None,
        request=services.RunRequest(
            dataset_key="tunix-demo-v1", model_id=model_id, mode=mode, config=config
        ),
    ).run


def test_dry_run_validates_and_writes_the_training_config(demo_dataset: Any) -> None:
    run = _sync(batch_size=16, num_epochs=2)
    assert run.status == RunStatus.COMPLETED
    assert run.exit_code == 0
    assert "records:          64 (58 train / 6 eval)" in run.stdout
    assert demo_dataset.sha256 in run.stdout
    assert "steps:            8 (4 per epoch x 2)" in run.stdout
    config_path = Path(settings.TUNIX_ARTIFACTS_ROOT) / str(run.id) / CONFIG_FILE_NAME
    written = json.loads(config_path.read_text())
    assert written["training"]["batch_size"] == 16
    assert written["model"]["id"] == "google/gemma-3-270m"
    assert Path(written["dataset"]["path"]).is_absolute()
    assert Path(written["dataset"]["path"]).read_bytes()  # points at the real file
    assert Path(written["output"]["checkpoints"]).is_absolute()
    assert run.started_at is not None
    assert run.completed_at is not None
    assert run.duration_seconds is not None
    assert run.duration_seconds >= 0


def test_dry_run_fails_when_the_file_changed_after_import(demo_dataset: Any) -> None:
    path = Path(settings.TUNIX_DATASETS_ROOT) / demo_dataset.file_path
    path.write_bytes(path.read_bytes() + b'{"prompt": "x", "completion": "y"}\n')
    run = _sync()
    assert run.status == RunStatus.FAILED
    assert run.error_reason == "dataset_invalid"
    assert "checksum mismatch" in run.error_message
    assert run.exit_code == 1


def test_dry_run_fails_when_a_record_was_corrupted(demo_dataset: Any) -> None:
    path = Path(settings.TUNIX_DATASETS_ROOT) / demo_dataset.file_path
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4] = b'{"prompt": "broken"\n'
    path.write_bytes(b"".join(lines))
    run = _sync()
    assert (run.status, run.error_reason) == (RunStatus.FAILED, "dataset_invalid")
    assert "line 5: invalid JSON" in run.error_message


def test_dry_run_fails_when_the_file_is_gone(demo_dataset: Any) -> None:
    (Path(settings.TUNIX_DATASETS_ROOT) / demo_dataset.file_path).unlink()
    run = _sync()
    assert (run.status, run.error_reason) == (RunStatus.FAILED, "dataset_invalid")
    assert "dataset file missing" in run.error_message


def test_stored_config_is_checked_again_at_execution(demo_dataset: Any) -> None:
    run = submitted_run(enqueue=False)
    TunixRun.objects.filter(id=run.id).update(config={**run.config, "batch_size": 0})
    claimed = services.run_claim(run_id=run.id, worker_id="test")
    assert claimed is not None
    done = services.run_execute(run=claimed)
    assert (done.status, done.error_reason) == (RunStatus.FAILED, "config_invalid")
    assert "batch_size" in done.error_message


def test_local_mode_without_tunix_fails_with_a_clear_reason(
    demo_dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "tunix_runtime_available", lambda: False)
    run = _sync(mode=RunMode.LOCAL, model_id="tunix-rt/tiny-llama3")
    assert run.status == RunStatus.FAILED
    assert run.error_reason == "runtime_missing"
    assert "requirements-tunix.txt" in run.error_message


def test_an_unexpected_error_is_recorded_on_the_run(
    demo_dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(backend: Any, run: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DryRunBackend, "prepare", explode)
    run = _sync()
    assert run.status == RunStatus.FAILED
    assert run.error_reason == "internal_error"
    assert "RuntimeError: disk on fire" in run.error_message


def test_unknown_dataset_creates_no_run(db: None) -> None:
    with pytest.raises(services.ServiceError) as caught:
        _sync()
    assert caught.value.field == "dataset_key"
    assert not TunixRun.objects.exists()


def test_each_run_write_logs_its_commit_latency(
    demo_dataset: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tunix_rt.db"):
        _sync()
    writes = [r for r in caplog.records if r.name == "tunix_rt.db"]
    ops = [r.fields["op"] for r in writes]  # type: ignore[attr-defined]
    assert ops == ["run_create", "run_claim", "run_finish"]
    assert all(r.fields["ms"] >= 0 for r in writes)  # type: ignore[attr-defined]


def test_each_transition_is_logged(demo_dataset: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tunix_rt.runs"):
        run = _sync()
    moves = [
        (r.fields["from"], r.fields["to"])  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "run_transition" and r.fields["run_id"] == run.id  # type: ignore[attr-defined]
    ]
    assert moves == [("", "pending"), ("pending", "running"), ("running", "completed")]
