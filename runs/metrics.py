"""Every Prometheus object of Tunix RT, and how /metrics shows the whole cluster.

Run and database-write metrics are observed wherever the work happens: in a web process for
sync runs and cancels, in a qcluster worker for queued runs, on any host. Each process keeps
them in SHARED and writes a snapshot to its ProcessMetrics row every TUNIX_METRICS_FLUSH_SECONDS
(and when /metrics is scraped from it). /metrics sums every row, so it shows what all workers
did, not only the web process that answers. Queue gauges are read from the database at scrape
time through small partial indexes.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    Metric,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("tunix_rt.metrics")

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

_flush_lock = threading.Lock()
_last_flush = 0.0
_process: dict[str, Any] = {"role": "web"}


def set_role(role: str) -> None:
    _process["role"] = role


def process_key() -> str:
    """Host, pid and start time: a new process (or a forked worker) gets a new row."""
    pid = os.getpid()
    if _process.get("pid") != pid:
        _process.update(pid=pid, key=f"{socket.gethostname()}:{pid}:{int(time.time() * 1000)}")
    return str(_process["key"])


def snapshot() -> dict[str, Any]:
    families = []
    for metric in SHARED.collect():
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


def flush() -> None:
    """Write this process's samples to its row (a no-op while it has observed nothing)."""
    global _last_flush
    from runs.models import ProcessMetrics

    with _flush_lock:
        data = snapshot()
        _last_flush = time.monotonic()
        if not data["families"]:
            return
        ProcessMetrics.objects.update_or_create(
            process_key=process_key(),
            defaults={"role": _process["role"], "updated_at": timezone.now(), "data": data},
        )


def maybe_flush() -> None:
    """Flush at most every TUNIX_METRICS_FLUSH_SECONDS; never raises into the caller."""
    if time.monotonic() - _last_flush < settings.TUNIX_METRICS_FLUSH_SECONDS:
        return
    try:
        flush()
    except Exception:  # metrics must never break a run write
        log.exception("metrics_flush_failed")


class FlushMiddleware:
    """After each served request, flush this process's counters (sheds, sync runs) if
    TUNIX_METRICS_FLUSH_SECONDS have passed, so they reach /metrics even when scrapes land on
    other web processes."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 503:  # never add a write to an overloaded process
            maybe_flush()
        return response


def _merge(rows: Iterator[dict[str, Any]]) -> list[Metric]:
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


def compact(older_than: timedelta = timedelta(hours=1)) -> int:
    """Fold rows of processes silent for ``older_than`` into the archive row."""
    from runs.models import ProcessMetrics

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
        merged = _merge(iter([archive.data, *(row.data for row in stale)]))
        archive.data = {
            "families": [
                {
                    "name": m.name,
                    "type": m.type,
                    "doc": m.documentation,
                    "samples": [[s.name, s.labels, s.value] for s in m.samples],
                }
                for m in merged
            ]
        }
        archive.updated_at = timezone.now()
        archive.save()
        ProcessMetrics.objects.filter(process_key__in=[r.process_key for r in stale]).delete()
    return len(stale)


class ClusterCollector(Collector):
    """Run metrics summed over every process, and the queue as the database sees it."""

    def collect(self) -> Iterator[Metric]:
        from runs.models import ProcessMetrics, RunStatus, TunixRun, WorkerHeartbeat

        yield from _merge(ProcessMetrics.objects.values_list("data", flat=True).iterator())
        now = timezone.now()
        pending = TunixRun.objects.filter(status=RunStatus.PENDING)
        running = TunixRun.objects.filter(status=RunStatus.RUNNING)
        oldest = pending.aggregate(oldest=Min("queued_at"))["oldest"]
        beats = WorkerHeartbeat.objects.aggregate(newest=Max("seen_at"))
        alive = WorkerHeartbeat.objects.filter(
            seen_at__gte=now - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS)
        ).count()
        for name, doc, value in (
            ("tunix_runs_pending", "Runs waiting for a worker (queue depth)", pending.count()),
            (
                "tunix_runs_oldest_pending_age_seconds",
                "Age of the oldest pending run (0 when none waits)",
                (now - oldest).total_seconds() if oldest else 0.0,
            ),
            ("tunix_runs_running", "Runs executing now", running.count()),
            ("tunix_workers_alive", "Worker processes with a fresh heartbeat", alive),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        if beats["newest"] is not None:
            yield GaugeMetricFamily(
                "tunix_worker_heartbeat_age_seconds",
                "Age of the newest worker heartbeat",
                value=(now - beats["newest"]).total_seconds(),
            )


CLUSTER = CollectorRegistry(auto_describe=False)
CLUSTER.register(ClusterCollector())


def _authorised(request: HttpRequest) -> bool:
    token = settings.TUNIX_METRICS_TOKEN
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: this process's HTTP/DB metrics, then the cluster's run metrics."""
    if not _authorised(request):
        response = HttpResponse("metrics need a bearer token\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        flush()
    except Exception:  # a failed flush still serves the other processes' rows
        log.exception("metrics_flush_failed")
    body = generate_latest(REGISTRY) + generate_latest(CLUSTER)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
