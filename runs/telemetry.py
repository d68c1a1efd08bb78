"""Timing of database writes: each run write logs its commit latency as one structured line."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction

from runs import metrics

db_log = logging.getLogger("tunix_rt.db")


@contextmanager
def timed_write(operation: str) -> Iterator[None]:
    """Run the block in a transaction and log how long it took to commit."""
    started = time.perf_counter()
    with transaction.atomic():
        yield
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    metrics.DB_WRITE_MS.labels(operation).observe(elapsed_ms)
    db_log.info("db_write", extra={"fields": {"op": operation, "ms": round(elapsed_ms, 3)}})
    metrics.maybe_flush()
