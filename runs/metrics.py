"""Every Prometheus object of Tunix RT, and the snapshots that carry them between processes.

Run and database-write metrics are observed wherever the work happens: in a web process for
sync runs and cancels, in a qcluster worker for queued runs, on any host. Each process keeps
them in SHARED and writes a snapshot to its ProcessMetrics row every TUNIX_METRICS_FLUSH_SECONDS
(services.telemetry) and when /metrics is scraped from it. /metrics (runs/monitoring.py) sums
every row, so it shows what all workers did, not only the web process that answers. This module
touches no database.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Metric,
    disable_created_metrics,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created timestamps cannot be summed across processes

SHARED = CollectorRegistry(auto_describe=True)

RUNS_TOTAL = Counter(
    "tunix_runs",
    "Runs that entered each status (pending = created), in every process",
    ["status"],
    registry=SHARED,
)
RUN_DURATION = Histogram(
    "tunix_runs_duration_seconds",
    "Run duration from start to its end (completed, failed or cancelled after starting)",
    ["status"],
    buckets=(0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600),
    registry=SHARED,
)
DB_WRITE_MS = Histogram(
    "tunix_db_write_latency_ms",
    "Latency of Tunix RT's database writes, commit included, by operation",
    ["op"],
    buckets=(0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000),
    registry=SHARED,
)

RUNS_RECOVERED = Counter(
    "tunix_runs_recovered",
    "Runs the reaper recovered: requeued or failed (worker lost), or re-enqueued (task lost)",
    ["action"],
    registry=SHARED,
)
REQUESTS_SHED = Counter(
    "tunix_http_requests_shed",
    "Requests answered 503 because they waited too long before they could be served",
    registry=SHARED,
)
WEBHOOK_ATTEMPTS = Counter(
    "tunix_webhook_attempts",
    "Webhook delivery attempts by what the delivery became",
    ["outcome"],
    registry=SHARED,
)

_process: dict[str, Any] = {"role": "web"}


def set_role(role: str) -> None:
    _process["role"] = role


def role() -> str:
    return str(_process["role"])


def process_key() -> str:
    """Host, pid and start time: a new process (or a forked worker) gets a new row."""
    pid = os.getpid()
    if _process.get("pid") != pid:
        _process.update(pid=pid, key=f"{socket.gethostname()}:{pid}:{int(time.time() * 1000)}")
    return str(_process["key"])


def snapshot() -> dict[str, Any]:
    """This process's samples, as a ProcessMetrics row stores them."""
    return as_data(SHARED.collect())


def as_data(collected: Iterable[Metric]) -> dict[str, Any]:
    families = []
    for metric in collected:
        samples = [[s.name, s.labels, s.value] for s in metric.samples]
        if samples:
            families.append(
                {
                    "name": metric.name,
                    "type": metric.type,
                    "doc": metric.documentation,
                    "samples": samples,
                }
            )
    return {"families": families}


def merge(rows: Iterable[dict[str, Any]]) -> list[Metric]:
    """Snapshots of many processes summed, sample by sample."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for data in rows:
        for family in data.get("families", []):
            name = family["name"]
            if name not in families:
                families[name] = Metric(name, family["doc"], family["type"])
                sums[name] = {}
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                sums[name][key] = sums[name].get(key, 0.0) + value
    for name, metric in families.items():
        for (sample_name, labels), value in sorted(sums[name].items()):
            metric.add_sample(sample_name, dict(labels), value)
    return list(families.values())
