"""API calls authenticated by token skip the browser's middleware (sessions, CSRF, messages,
HTMX, CSP) and still get every answer they got before; browsers keep all of it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.factories import submitted_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def token_client(operator: Any) -> Client:
    token = Token.objects.create(user=operator)
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}", enforce_csrf_checks=True)


def test_a_token_call_answers_without_session_csrf_or_csp(
    token_client: Client, demo_dataset: Any
) -> None:
    run = submitted_run()
    answer = token_client.get(f"/api/tunix/runs/{run.id}/status")
    assert answer.status_code == 200
    assert answer.json()["run_id"] == str(run.id)
    assert not answer.cookies  # no session, no CSRF cookie
    assert "Content-Security-Policy" not in answer
    assert answer["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs


def test_a_token_call_may_post_without_a_csrf_token(
    token_client: Client, demo_dataset: Any
) -> None:
    answer = token_client.post(
        "/api/tunix/run?mode=async",
        {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3"},
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content


def test_a_token_call_asking_for_html_gets_the_browsable_page(
    token_client: Client, demo_dataset: Any
) -> None:
    run = submitted_run()
    answer = token_client.get(f"/api/tunix/runs/{run.id}/status", HTTP_ACCEPT="text/html")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/html")
    assert str(run.id) in answer.content.decode()


@pytest.mark.parametrize("header", ["Token", "Token not-a-token", "Token a b"])
def test_a_bad_token_is_refused_even_beside_a_logged_in_session(operator: Any, header: str) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    answer = browser.get("/api/tunix/runs", HTTP_AUTHORIZATION=header)
    assert answer.status_code == 401
    assert answer["Content-Type"] == "application/problem+json"


def test_a_browser_session_still_gets_csrf_and_csp(operator: Any) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    page = browser.get("/api/tunix/runs", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page
    refused = browser.post(
        "/api/tunix/run?mode=async",
        {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3"},
        content_type="application/json",
    )
    assert refused.status_code == 403


def test_every_call_is_still_counted_in_the_request_metrics(
    token_client: Client, demo_dataset: Any
) -> None:
    from prometheus_client import REGISTRY

    run = submitted_run()
    labels = {"status": "200", "view": "api:run-status", "method": "GET"}
    name = "django_http_responses_total_by_status_view_method_total"

    def count() -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = count()
    for _ in range(3):
        assert token_client.get(f"/api/tunix/runs/{run.id}/status").status_code == 200
    assert count() == before + 3
