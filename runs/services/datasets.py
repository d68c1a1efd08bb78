"""Registering datasets: a JSONL upload validated line by line, stored, and recorded.

A reasoning-trace upload is stored converted to prompt/completion records (runs/datasets.py),
with or without its reasoning steps as the uploader chose: the registry, the dry-run and the
trainer only ever see the stored formats."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import IntegrityError

from runs import authorization
from runs.datasets import (
    REASONING_CHOICES,
    REASONING_INCLUDE,
    DatasetError,
    validate_key,
    validate_stream,
)
from runs.models import Dataset
from runs.paths import safe_join
from runs.services.errors import Conflict, Forbidden, ServiceError
from runs.services.telemetry import timed_write

log = logging.getLogger("tunix_rt.runs")


def dataset_import(
    *,
    key: str,
    source: IO[bytes] | Iterable[bytes],
    user: authorization.UserLike = None,
    reasoning: str = REASONING_INCLUDE,
) -> Dataset:
    """Validate a JSONL upload and register it. A refused file leaves no row and no file.

    ``reasoning`` applies to reasoning-trace files only: ``include`` stores each completion as
    the trace's steps followed by its final answer (what the replaced service trained on),
    ``omit`` stores the final answer alone. Other formats are stored as uploaded."""
    if not authorization.can_upload_datasets(user):
        raise Forbidden("uploading datasets needs the runs.add_dataset permission")
    if reasoning not in REASONING_CHOICES:
        raise ServiceError(
            f"reasoning must be one of {', '.join(REASONING_CHOICES)}", field="reasoning"
        )
    try:
        validate_key(key)
    except DatasetError as exc:
        raise ServiceError(exc.reason, field="key") from None
    if Dataset.objects.filter(key=key).exists():
        raise Conflict(f"dataset {key!r} already exists", field="key")
    root = Path(settings.TUNIX_DATASETS_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    relative = f"{key}.jsonl"
    final = safe_join(root, relative)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".upload-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            try:
                stats = validate_stream(
                    source,
                    max_bytes=settings.TUNIX_DATASET_MAX_BYTES,
                    max_record_bytes=settings.TUNIX_DATASET_MAX_RECORD_BYTES,
                    sink=sink,
                    reasoning=reasoning,
                )
            except DatasetError as exc:
                raise ServiceError(str(exc), field="file") from None
            sink.flush()
            os.fsync(sink.fileno())
        try:
            with timed_write("dataset_import"):
                dataset = Dataset.objects.create(
                    key=key,
                    format=stats.format,
                    record_count=stats.record_count,
                    size_bytes=stats.size_bytes,
                    sha256=stats.sha256,
                    file_path=relative,
                    created_by=authorization.real_user(user),
                )
                # Inside the transaction: if the rename fails the row rolls back with it.
                os.replace(tmp, final)
        except IntegrityError:
            raise Conflict(f"dataset {key!r} already exists", field="key") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fields = {"key": key, "records": stats.record_count, "bytes": stats.size_bytes}
    if stats.source_format:
        fields.update(converted_from=stats.source_format, reasoning=reasoning)
    log.info("dataset_imported", extra={"fields": fields})
    return dataset


def dataset_path(dataset: Dataset) -> Path:
    return safe_join(Path(settings.TUNIX_DATASETS_ROOT), dataset.file_path)
