"""/metrics shows what every process did; /healthz and /readyz say why when not ready."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs import services
from runs.models import ProcessMetrics, RunStatus, TunixRun, WorkerHeartbeat
from runs.services import telemetry
from tests.factories import TunixRunFactory, submitted_run
from tests.support.clusters import wait_for


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$"
        if labels
        else rf"^{re.escape(name)} (\S+)$"
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


def scrape(client: Client, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return str(response.content.decode())


def submit(enqueue: bool = False) -> TunixRun:
    return submitted_run(enqueue=enqueue)


@pytest.mark.django_db
def test_metrics_carry_the_seed_names_without_per_run_labels(
    client: Client, demo_dataset: Any
) -> None:
    before = sample(scrape(client), "tunix_runs_total", status="completed") or 0.0
    services.run_sync(
        user=None,
        request=services.RunRequest(
            dataset_key="tunix-demo-v1", model_id="tunix-rt/tiny-llama3", mode="dry-run", config={}
        ),
    )
    text = scrape(client)
    assert sample(text, "tunix_runs_total", status="completed") == before + 1
    assert "tunix_runs_duration_seconds_bucket" in text
    assert re.search(r'^tunix_db_write_latency_ms_count\{op="run_finish"\} [1-9]', text, re.M)
    assert "django_http_requests_total_by_method_total" in text  # django-prometheus
    assert "django_db_execute_total" in text
    run_ids = {str(r.id) for r in TunixRun.objects.all()}
    assert not any(run_id in text for run_id in run_ids)


@pytest.mark.django_db
def test_queue_gauges_come_from_the_database(client: Client) -> None:
    TunixRunFactory(queued_at=timezone.now() - timedelta(seconds=90))
    TunixRunFactory()
    TunixRunFactory(running=True)
    text = scrape(client)
    assert sample(text, "tunix_runs_pending") == 2
    assert sample(text, "tunix_runs_running") == 1
    age = sample(text, "tunix_runs_oldest_pending_age_seconds")
    assert age is not None
    assert 89 <= age < 200


@pytest.mark.django_db
def test_metrics_can_require_a_bearer_token(client: Client, settings: Any) -> None:
    settings.TUNIX_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "tunix_runs_pending" in scrape(client, Authorization="Bearer s3cret")


@pytest.mark.django_db
def test_other_processes_rows_are_summed_and_compaction_keeps_totals(client: Client) -> None:
    family = {
        "name": "tunix_runs",
        "type": "counter",
        "doc": "Runs",
        "samples": [["tunix_runs_total", {"status": "failed"}, 3.0]],
    }
    old = timezone.now() - timedelta(hours=2)
    for key in ("hostA:1:1", "hostB:2:2"):
        ProcessMetrics.objects.create(
            process_key=key, role="worker", updated_at=old, data={"families": [family]}
        )
    base = sample(scrape(client), "tunix_runs_total", status="failed")
    assert base is not None
    assert base >= 6
    assert telemetry.compact() == 2
    assert ProcessMetrics.objects.filter(process_key="archive").exists()
    assert sample(scrape(client), "tunix_runs_total", status="failed") == base


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_runs_executed_by_a_qcluster_show_on_the_web_metrics(client: Client, clusters: Any) -> None:
    before = sample(scrape(client), "tunix_runs_total", status="completed") or 0.0
    runs = [submit(enqueue=True) for _ in range(3)]
    clusters(1)
    wait_for(
        lambda: TunixRun.objects.filter(status=RunStatus.COMPLETED).count() == len(runs),
        60,
        what="runs to complete",
    )

    def completed() -> float:
        return sample(scrape(client), "tunix_runs_total", status="completed") or 0.0

    wait_for(lambda: completed() >= before + 3, 30, what="worker metrics on the web /metrics")
    text = scrape(client)
    assert re.search(r'^tunix_db_write_latency_ms_count\{op="run_claim"\} [1-9]', text, re.M)
    assert (sample(text, "tunix_workers_alive") or 0) >= 1
    assert ProcessMetrics.objects.filter(role="worker").exists()


def test_healthz_answers_without_a_database(client: Client) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
def test_a_probe_says_how_long_its_answer_is(client: Client, probe: str) -> None:
    """Without a length gunicorn chunks the body, and a kept-alive client that does not
    decode chunks waits for the connection to close."""
    response = client.get(probe)
    assert response["Content-Length"] == str(len(response.content))


@pytest.mark.django_db
def test_readyz_explains_a_missing_or_stale_worker(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["migrations"] == {"ok": True}
    assert body["checks"]["worker"]["reason"] == "no worker has ever reported"
    WorkerHeartbeat.objects.create(
        worker_id="worker:h:1", host="h", pid=1, seen_at=timezone.now() - timedelta(hours=1)
    )
    stale = client.get("/readyz").json()
    assert "newest worker heartbeat is" in stale["checks"]["worker"]["reason"]
    services.worker_heartbeat(worker_id="worker:h:1")
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


@pytest.mark.django_db
def test_probes_answer_whatever_host_they_address(
    client: Client, settings: Any, django_assert_num_queries: Any
) -> None:
    """A load balancer or container runtime probes by IP: not a host the site serves."""
    settings.ALLOWED_HOSTS = ["tunix.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    with django_assert_num_queries(0):
        live = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = client.get("/readyz", HTTP_HOST="10.0.0.7:8000")
    assert ready.status_code == 503  # no worker here; the answer, not a host error
    assert "worker" in ready.json()["checks"]
    # Every other path still checks the host.
    assert client.get("/api/tunix/runs", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_the_bench_floor_is_not_served_unless_turned_on(
    client: Client, settings: Any, db: None
) -> None:
    from django.conf import settings as live

    assert live.TUNIX_BENCH_FLOOR is False  # the default, from the environment of the suite
    assert client.get("/api/bench/floor").status_code == 404
    settings.TUNIX_BENCH_FLOOR = True
    answer = client.get("/api/bench/floor")
    assert answer.status_code == 200
    assert answer.json() == {"floor": True}
