"""Load shedding: an overloaded web process answers 503 + Retry-After at once, touching nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import metrics
from runs.services import telemetry
from runs.shedding import request_queue_ms


def get(client: APIClient, extra: dict[str, Any], path: str = "/api/tunix/runs") -> Any:
    """A GET with extra WSGI environ keys (headers as HTTP_*, or the worker's queue time)."""
    send: Any = client.get
    return send(path, **extra)


def proxy_stamp(seconds_ago: float) -> dict[str, str]:
    return {"HTTP_X_REQUEST_START": f"t={time.time() - seconds_ago:.3f}"}


def environ(waited: dict[str, float]) -> dict[str, Any]:
    """Parameters name the wait; the proxy's stamp is taken when the test runs."""
    if "proxy_seconds_ago" in waited:
        return proxy_stamp(waited["proxy_seconds_ago"])
    return dict(waited)


def shed_count() -> float:
    return float(metrics.REQUESTS_SHED._value.get())


def assert_shed(response: Any) -> None:
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"] == "1"
    body = json.loads(response.content)
    assert body["status"] == 503
    assert "waited" in body["detail"]


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected_ms"),
    [
        ("t=1699999999.500", 500.0),  # nginx ${msec}: seconds with a millisecond fraction
        ("1699999999500", 500.0),  # milliseconds
        ("1699999999500000", 500.0),  # microseconds
        ("t=1700000001", 0.0),  # a proxy clock slightly ahead is not a negative wait
    ],
)
def test_request_start_stamps_in_each_unit(header: str, expected_ms: float) -> None:
    assert request_queue_ms(header, NOW) == pytest.approx(expected_ms, abs=0.5)


def test_an_unreadable_stamp_is_ignored() -> None:
    assert request_queue_ms("t=yesterday", time.time()) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "waited",
    [
        {"proxy_seconds_ago": 5.0},  # stamped by a proxy
        {"tunix.queue_ms": 900.0},  # measured by the gunicorn worker
    ],
    ids=["proxy", "worker"],
)
def test_a_request_that_waited_too_long_is_shed_without_touching_the_database(
    viewer_client: APIClient,
    settings: Any,
    django_assert_num_queries: Any,
    waited: dict[str, float],
) -> None:
    settings.TUNIX_WEB_MAX_QUEUE_MS = 500
    before = shed_count()
    with django_assert_num_queries(0):
        response = get(viewer_client, environ(waited))
    assert_shed(response)
    assert shed_count() == before + 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "waited",
    [{"proxy_seconds_ago": 0.0}, {"tunix.queue_ms": 20.0}, {}],
    ids=["proxy", "worker", "neither"],
)
def test_a_request_that_did_not_wait_is_served(
    viewer_client: APIClient, settings: Any, waited: dict[str, float]
) -> None:
    settings.TUNIX_WEB_MAX_QUEUE_MS = 500
    assert get(viewer_client, environ(waited)).status_code == 200


@pytest.mark.django_db
def test_zero_turns_shedding_off(viewer_client: APIClient, settings: Any) -> None:
    settings.TUNIX_WEB_MAX_QUEUE_MS = 0
    response = get(viewer_client, {"tunix.queue_ms": 60_000.0})
    assert response.status_code == 200


@pytest.mark.django_db
def test_liveness_is_never_shed(settings: Any) -> None:
    settings.TUNIX_WEB_MAX_QUEUE_MS = 500
    response = get(APIClient(), {"tunix.queue_ms": 60_000.0}, "/healthz")
    assert response.status_code == 200


@pytest.mark.django_db
def test_sheds_reach_the_database_with_the_next_served_request(
    viewer_client: APIClient, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs.models import ProcessMetrics

    settings.TUNIX_WEB_MAX_QUEUE_MS = 500
    assert get(viewer_client, {"tunix.queue_ms": 900.0}).status_code == 503
    assert not ProcessMetrics.objects.exists()  # the shed itself wrote nothing
    monkeypatch.setattr(telemetry, "_last_flush", 0.0)  # the flush interval has passed
    assert viewer_client.get("/api/tunix/runs").status_code == 200
    row = ProcessMetrics.objects.get(process_key=metrics.process_key())
    names = {family["name"] for family in row.data["families"]}
    assert "tunix_http_requests_shed" in names


@pytest.mark.django_db
def test_a_shed_request_is_not_logged_as_a_server_error(
    viewer_client: APIClient, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TUNIX_WEB_MAX_QUEUE_MS = 500
    with caplog.at_level("WARNING", logger="django.request"):
        assert get(viewer_client, {"tunix.queue_ms": 900.0}).status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]
