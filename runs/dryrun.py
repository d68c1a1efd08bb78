"""Dry-run: everything a training run checks before it trains, without training.

Validates the dataset file against its recorded checksum and record format, re-checks the
hyperparameters, writes the training config the run would use, and reports a summary.
No Django imports: the worker calls it with plain values.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs import training_config
from runs.datasets import DatasetError, validate_stream
from runs.outcomes import Reason

CONFIG_FILE_NAME = "tunix_config.json"
ATTEMPT_PREFIX = "attempt-"  # checkpoints/attempt-N, metrics/attempt-N: one per attempt


@dataclass(frozen=True)
class DryRunOutcome:
    ok: bool
    reason: str  # a Reason when not ok
    message: str
    summary: str


# A full or merged export: its weights (one file: Tunix RT's exports never shard) and config.
BASE_EXPORT_FILES = ("model.safetensors", "config.json")


@dataclass(frozen=True)
class BaseSpec:
    """Earlier weights a run continues from (runs/selectors/bases.py resolved them)."""

    export_dir: Path  # absolute: a Hugging Face directory an export wrote
    family: str | None  # model_catalog's ("tiny" for the preset's); None outside the catalog
    base_model_id: str  # the catalog model the weights began as


def base_problem(model: dict[str, Any]) -> str | None:
    """Why the trainer could not load the base export the spec names (None: it looks whole,
    or the run starts from a catalog model). Files only: no JAX."""
    directory = model.get("export_dir")
    if not directory:
        return None
    path = Path(directory)
    if not path.is_absolute():
        return f"{model['id']}: the export directory must be an absolute path"
    missing = [
        name for name in BASE_EXPORT_FILES if not path.is_dir() or not (path / name).is_file()
    ]
    if missing:
        return (
            f"{model['id']}: the export directory {path} lacks {', '.join(missing)} on this "
            "worker host (its artifacts root must be the one the export was written to)"
        )
    return None


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def training_spec(
    *,
    run_id: str,
    model_id: str,
    mode: str,
    dataset_key: str,
    dataset_path: Path,
    dataset_format: str,
    config: dict[str, Any],
    output_dir: Path,
    attempt: int = 1,
    checkpoint_dir: Path | None = None,
    allow_download: bool = False,
    resume: bool = True,
    algorithm: str = training_config.SFT,
    base: BaseSpec | None = None,
) -> dict[str, Any]:
    """The config file the Tunix trainer reads; all paths absolute. Checkpoints and metrics go
    to a fresh directory per attempt: Tunix resumes from any checkpoint it finds."""
    model: dict[str, Any] = {"id": model_id}
    if checkpoint_dir is not None:
        model.update(checkpoint_dir=str(checkpoint_dir), allow_download=allow_download)
    if base is not None:
        model.update(
            family=base.family,
            export_dir=str(base.export_dir),
            base_model_id=base.base_model_id,
        )
    return {
        "run_id": run_id,
        "mode": mode,
        "algorithm": algorithm,
        "model": model,
        "dataset": {"key": dataset_key, "path": str(dataset_path), "format": dataset_format},
        "training": dict(config),
        "output": {
            "dir": str(output_dir),
            "checkpoints": str(output_dir / "checkpoints" / f"{ATTEMPT_PREFIX}{attempt}"),
            "metrics": str(output_dir / "metrics" / f"{ATTEMPT_PREFIX}{attempt}"),
            # A re-queued training continues from its previous attempts' newest checkpoint.
            "resume": resume,
        },
    }


def dry_run(
    *,
    spec: dict[str, Any],
    expected_sha256: str,
    expected_records: int,
    max_bytes: int,
    max_record_bytes: int,
    config_path: Path,
) -> DryRunOutcome:
    dataset_path = Path(spec["dataset"]["path"])
    if not dataset_path.is_file():
        return DryRunOutcome(
            False, Reason.DATASET_INVALID, f"dataset file missing: {dataset_path}", ""
        )
    try:
        with dataset_path.open("rb") as handle:
            stats = validate_stream(handle, max_bytes=max_bytes, max_record_bytes=max_record_bytes)
    except DatasetError as exc:
        return DryRunOutcome(False, Reason.DATASET_INVALID, f"dataset invalid: {exc}", "")
    if stats.sha256 != expected_sha256:
        return DryRunOutcome(
            False,
            Reason.DATASET_INVALID,
            f"dataset checksum mismatch: file has {stats.sha256}, registry has {expected_sha256}",
            "",
        )
    if stats.record_count != expected_records:
        return DryRunOutcome(
            False,
            Reason.DATASET_INVALID,
            f"dataset has {stats.record_count} records, registry has {expected_records}",
            "",
        )
    # Not at the top: the algorithms' modules import the trainer, which imports this module.
    from runs.algorithms import format_refusal

    algorithm = spec.get("algorithm", training_config.SFT)
    # Submit refuses this already; a dataset re-imported in another format since is caught here.
    refusal = format_refusal(algorithm, stats.format, dataset_key=spec["dataset"]["key"])
    if refusal:
        return DryRunOutcome(False, Reason.DATASET_INVALID, refusal, "")
    config, errors = training_config.normalise(spec["training"], algorithm)
    if errors:
        detail = "; ".join(f"{name}: {reason}" for name, reason in sorted(errors.items()))
        return DryRunOutcome(False, Reason.CONFIG_INVALID, f"invalid hyperparameters: {detail}", "")

    problem = base_problem(spec["model"])
    if problem is not None:
        return DryRunOutcome(False, Reason.MODEL_UNAVAILABLE, problem, "")

    write_json_atomic(config_path, {**spec, "training": config})

    eval_records = int(stats.record_count * config["eval_fraction"])
    train_records = stats.record_count - eval_records
    steps_per_epoch = max(1, -(-train_records // config["batch_size"]))
    total_steps = steps_per_epoch * config["num_epochs"]
    if config["max_steps"] is not None:
        total_steps = min(total_steps, config["max_steps"])
    lines = [
        "Dry run: OK (nothing was trained)",
        f"algorithm:        {algorithm}",
        f"model:            {spec['model']['id']}",
        *(
            [f"continues from:   {spec['model']['export_dir']} ({spec['model']['family']})"]
            if spec["model"].get("export_dir")
            else []
        ),
        f"dataset:          {spec['dataset']['key']} ({stats.format})",
        f"records:          {stats.record_count} ({train_records} train / {eval_records} eval)",
        f"size:             {stats.size_bytes} bytes, sha256 {stats.sha256}",
        f"tokens (approx.): {stats.tokens_estimate}",
        f"steps:            {total_steps} ({steps_per_epoch} per epoch x {config['num_epochs']})",
        "hyperparameters:",
        *(f"  {name} = {config[name]}" for name in sorted(config)),
        f"config written:   {config_path}",
    ]
    return DryRunOutcome(True, "", "", "\n".join(lines) + "\n")
