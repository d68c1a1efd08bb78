"""Exports: a finished training's checkpoint written as a Hugging Face model directory.

A request is validated here (the run, its checkpoint steps, the weights format) and becomes an
export row with its queue task in one transaction; a worker then runs ``python -m runs.export``
as a child process (JAX stays out of the worker, as for training) and records what it wrote.
Asking again for a checkpoint and format that has a live export returns that export.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction

from runs import artifacts, authorization, executor, selectors
from runs.execution import get_backend
from runs.execution.local import trainer_environment, tunix_runtime_available
from runs.models import ExportStatus, ExportWeights, RunExport, RunStatus, TunixRun
from runs.outcomes import Reason, known_reason
from runs.services import worker_tasks
from runs.services.errors import Conflict, Forbidden, NotFound, ServiceError

log = logging.getLogger("tunix_rt.runs")

EXPORT_FUNC = "runs.tasks.export_run"
CONFIG_PREFIX = ".tmp-export-"  # hidden from the artifact listing (runs/artifacts.py)


def export_request(
    *,
    user: authorization.UserLike,
    run_id: UUID | str,
    step: int | None = None,
    weights: str = ExportWeights.MERGED,
) -> tuple[RunExport, bool]:
    """The export of ``run_id``'s checkpoint at ``step`` (its newest when None) in ``weights``
    form, queued; or the live one already asked for. Returns (export, created)."""
    run = selectors.run_get(run_id=run_id, owner=authorization.visible_owner(user))
    if run is None:
        raise NotFound(f"no run {run_id}")
    if not authorization.can_launch(user):
        raise Forbidden("exporting needs the runs.add_tunixrun permission")
    if run.status != RunStatus.COMPLETED or not get_backend(run.mode).trains:
        what = f"a {run.mode} run" if not get_backend(run.mode).trains else f"a {run.status} run"
        raise Conflict(f"only a completed training can be exported; this is {what}")
    if weights not in ExportWeights.values:
        raise ServiceError(
            f"weights must be one of {', '.join(ExportWeights.values)}", field="weights"
        )
    if weights == ExportWeights.ADAPTER and not int(run.config.get("lora_rank") or 0):
        raise ServiceError(
            "an adapter export needs a LoRA run (lora_rank > 0); this run trained every weight",
            field="weights",
        )
    steps = artifacts.checkpoint_steps(run)
    if not steps:
        raise Conflict(f"run {run.id} has no complete checkpoint to export")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        listed = ", ".join(str(s) for s in steps)
        raise ServiceError(f"no checkpoint at step {step}; this run has {listed}", field="step")
    owner = authorization.real_user(user)
    try:
        with transaction.atomic():
            export = RunExport.objects.create(run=run, step=step, weights=weights, created_by=owner)
            _enqueue(export)
    except IntegrityError:  # a live export of this checkpoint exists, or was just made
        existing = _live(run, step, weights)
        if existing is None:
            raise
        return existing, False
    return export, True


def _live(run: TunixRun, step: int, weights: str) -> RunExport | None:
    return (
        RunExport.objects.filter(run=run, step=step, weights=weights)
        .exclude(status=ExportStatus.FAILED)
        .first()
    )


def export_timeout_seconds() -> int:
    return int(settings.TUNIX_EXPORT_TIMEOUT_SECONDS)


def _enqueue(export: RunExport) -> None:
    worker_tasks.enqueue(
        EXPORT_FUNC, export.id, name="export", timeout_seconds=export_timeout_seconds()
    )


def _claim(export_id: UUID) -> RunExport | None:
    return worker_tasks.claim(
        RunExport, export_id, timeout_seconds=export_timeout_seconds(), related=("run",)
    )


def _fail(export: RunExport, reason: str, message: str) -> str:
    log.info("export_failed export_id=%s reason=%s", export.id, reason)
    return worker_tasks.fail(export, reason, message)


def export_execute(*, export_id: UUID) -> str:
    """Write the export (a worker's queue task); safe to deliver more than once (the claim
    decides). Returns the status it ended in, or "skipped"."""
    export = _claim(export_id)
    if export is None:
        return "skipped"
    if not tunix_runtime_available():
        return _fail(
            export,
            Reason.RUNTIME_MISSING,
            "exporting needs the Tunix runtime on the worker host, and it is not installed here",
        )
    run_dir = artifacts.run_directory(export.run)
    config = run_dir / f"{CONFIG_PREFIX}{export.id}.json"
    config.write_text(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "step": export.step,
                "lora_format": export.weights,
                "output": str(run_dir / export.directory),
            }
        ),
        encoding="utf-8",
    )
    try:
        result = executor.execute(
            [sys.executable, "-m", "runs.export", str(config)],
            cwd=run_dir,
            env=trainer_environment(),
            timeout_seconds=export_timeout_seconds(),
            max_output_bytes=settings.TUNIX_OUTPUT_MAX_BYTES,
            kill_grace_seconds=settings.TUNIX_KILL_GRACE_SECONDS,
        )
    finally:
        config.unlink(missing_ok=True)
    summary, error = worker_tasks.child_report(result.stdout)
    if result.timed_out:
        return _fail(export, Reason.TIMEOUT, f"the export took over {export_timeout_seconds()} s")
    if result.exit_code == 0 and summary is not None and summary.get("sha256"):
        worker_tasks.finish(
            export,
            status=ExportStatus.COMPLETED,
            sha256=str(summary["sha256"]),
            size_bytes=int(summary.get("bytes") or 0),
            files=_manifest_files(run_dir / export.directory),
        )
        log.info("export_completed export_id=%s sha256=%s", export.id, summary["sha256"])
        return ExportStatus.COMPLETED
    if error is not None:
        reason = error[0] if known_reason(error[0]) else Reason.NONZERO_EXIT
        return _fail(export, reason, error[1])
    tail = (result.stderr or result.stdout)[-2000:]
    return _fail(export, Reason.NONZERO_EXIT, f"exit code {result.exit_code}: {tail}")


def _manifest_files(directory: Path) -> list[dict[str, Any]]:
    """Each exported file with its size and sha256, as the export's manifest lists them."""
    try:
        manifest = json.loads((directory / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [
        {"path": f["name"], "size_bytes": f["bytes"], "sha256": f["sha256"]}
        for f in manifest.get("files", [])
    ]


def export_files(export: RunExport) -> list[tuple[str, Path]]:
    """The completed export's files, as (name in the archive, path), below the run's
    directory only."""
    root = artifacts.run_directory(export.run) / export.directory
    found = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        subdirectories.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(root).as_posix(), path))
    return found
