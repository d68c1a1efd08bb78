"""Writes that publish what this process observed: timed database writes, and its Prometheus
samples to its ProcessMetrics row (runs/metrics.py says why they are kept per process)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import metrics
from runs.models import ProcessMetrics

log = logging.getLogger("tunix_rt.metrics")
db_log = logging.getLogger("tunix_rt.db")

_flush_lock = threading.Lock()
_last_flush = 0.0


@contextmanager
def timed_write(operation: str, *, atomic: bool = True) -> Iterator[None]:
    """Run the block in a transaction and log how long it took to commit. ``atomic=False``:
    the block is a single statement, a transaction of its own."""
    started = time.perf_counter()
    with transaction.atomic() if atomic else nullcontext():
        yield
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    metrics.DB_WRITE_MS.labels(operation).observe(elapsed_ms)
    db_log.info("db_write", extra={"fields": {"op": operation, "ms": round(elapsed_ms, 3)}})
    maybe_flush()


def flush() -> None:
    """Write this process's samples to its row (a no-op while it has observed nothing)."""
    global _last_flush
    with _flush_lock:
        data = metrics.snapshot()
        _last_flush = time.monotonic()
        if not data["families"]:
            return
        ProcessMetrics.objects.update_or_create(
            process_key=metrics.process_key(),
            defaults={"role": metrics.role(), "updated_at": timezone.now(), "data": data},
        )


def maybe_flush() -> None:
    """Flush at most every TUNIX_METRICS_FLUSH_SECONDS; never raises into the caller."""
    if time.monotonic() - _last_flush < settings.TUNIX_METRICS_FLUSH_SECONDS:
        return
    try:
        flush()
    except Exception:  # metrics must never break a run write
        log.exception("metrics_flush_failed")


def compact(older_than: timedelta = timedelta(hours=1)) -> int:
    """Fold rows of processes silent for ``older_than`` into the archive row, so counters
    never go back when a process is gone."""
    cutoff = timezone.now() - older_than
    with transaction.atomic():
        stale = list(
            ProcessMetrics.objects.select_for_update()
            .filter(updated_at__lt=cutoff)
            .exclude(process_key="archive")
        )
        if not stale:
            return 0
        archive, _ = ProcessMetrics.objects.select_for_update().get_or_create(
            process_key="archive", defaults={"role": "archive", "data": {}}
        )
        archive.data = metrics.as_data(metrics.merge([archive.data, *(row.data for row in stale)]))
        archive.updated_at = timezone.now()
        archive.save()
        ProcessMetrics.objects.filter(process_key__in=[r.process_key for r in stale]).delete()
    return len(stale)
