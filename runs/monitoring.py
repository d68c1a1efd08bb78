"""/metrics: this process's HTTP and database metrics, then the whole cluster's run metrics
(every process's snapshot summed, and the queue as the database sees it); and the middleware
that publishes a web process's own counters between scrapes."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runs import metrics, selectors
from runs.services import telemetry

log = logging.getLogger("tunix_rt.metrics")


class FlushMiddleware:
    """After each served request, flush this process's counters (sheds, sync runs) if
    TUNIX_METRICS_FLUSH_SECONDS have passed, so they reach /metrics even when scrapes land on
    other web processes."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 503:  # never add a write to an overloaded process
            telemetry.maybe_flush()
        return response


def bench_floor(request: HttpRequest) -> HttpResponse:
    """The bench's reference (bench/run.py): a plain view that does no database work, under
    /api/ so that with a token it is served as an API call is (runs/middleware.py), through the
    same URL resolution and gunicorn setup: the hot paths are reported as a ratio to it. 404
    unless TUNIX_BENCH_FLOOR is on: production has no use for it."""
    if not settings.TUNIX_BENCH_FLOOR:
        raise Http404("not found")
    return JsonResponse({"floor": True})


class ClusterCollector(Collector):
    """Run metrics summed over every process, and the queue as the database sees it."""

    def collect(self) -> Iterator[Metric]:
        yield from metrics.merge(selectors.process_metrics_data())
        queue = selectors.queue_gauges()
        for name, doc, value in (
            ("tunix_runs_pending", "Runs waiting for a worker (queue depth)", queue.pending),
            (
                "tunix_runs_oldest_pending_age_seconds",
                "Age of the oldest pending run (0 when none waits)",
                queue.oldest_pending_age_seconds,
            ),
            ("tunix_runs_running", "Runs executing now", queue.running),
            ("tunix_workers_alive", "Worker processes with a fresh heartbeat", queue.workers_alive),
            (
                "tunix_workers_foreign_key",
                "Live workers that sign queue tasks with another SECRET_KEY (they cannot read "
                "what this web host queues)",
                queue.workers_foreign_key,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        # Per-class series under their own names: a label on tunix_runs_pending would turn
        # its one sample into several and change what existing alerts on it compare.
        for name, doc, values in (
            (
                "tunix_runs_pending_by_class",
                "Runs waiting for a worker, per resource class they asked for",
                queue.pending_by_class,
            ),
            (
                "tunix_workers_alive_by_class",
                "Worker processes with a fresh heartbeat, per resource class they serve",
                queue.workers_by_class,
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=["resource_class"])
            for resource_class, value in sorted(values.items()):
                family.add_metric([resource_class], value)
            yield family
        if queue.newest_heartbeat_age_seconds is not None:
            yield GaugeMetricFamily(
                "tunix_worker_heartbeat_age_seconds",
                "Age of the newest worker heartbeat",
                value=queue.newest_heartbeat_age_seconds,
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
        telemetry.flush()
    except Exception:  # a failed flush still serves the other processes' rows
        log.exception("metrics_flush_failed")
    body = generate_latest(REGISTRY) + generate_latest(CLUSTER)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
