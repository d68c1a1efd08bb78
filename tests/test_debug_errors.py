"""Errors under /api/ keep their documented problem+json shape whatever DEBUG is (`make run`
runs with DEBUG on): Django's HTML debug pages stay for pages only."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from runs.models import TunixRun
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

SUBMIT = "/api/tunix/run?mode=async"
debug_on_and_off = pytest.mark.parametrize("debug", [True, False], ids=["debug", "no-debug"])


@pytest.fixture
def logged_in(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@debug_on_and_off
def test_an_oversized_json_body_is_a_413_problem(
    logged_in: Client, demo_dataset: Any, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = '{"dataset_key": "tunix-demo-v1", "model_id": "' + "x" * (128 * 1024) + '"}'
    response = logged_in.post(SUBMIT, body, content_type="application/json")
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in problem(response, 413)["detail"]
    assert not TunixRun.objects.exists()


def test_an_oversized_json_body_from_a_browser_gets_the_browsable_error_page(
    logged_in: Client, demo_dataset: Any, settings: Any
) -> None:
    settings.DEBUG = True
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = '{"model_id": "' + "x" * (128 * 1024) + '"}'
    response = logged_in.post(
        SUBMIT, body, content_type="application/json", HTTP_ACCEPT="text/html"
    )
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert b"Traceback" not in response.content  # DRF's page, not Django's debug page


@debug_on_and_off
def test_too_many_form_fields_is_a_400_problem(
    logged_in: Client, demo_dataset: Any, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"field{n}": "x" for n in range(20)}
    response = logged_in.post(SUBMIT, fields)
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in problem(response, 400)["detail"]
    assert not TunixRun.objects.exists()


@debug_on_and_off
def test_malformed_json_is_a_400_problem(
    operator_client: APIClient, demo_dataset: Any, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    response = operator_client.post(SUBMIT, b"{", content_type="application/json")
    problem(response, 400)


@debug_on_and_off
@pytest.mark.parametrize("path", ["/api/nope", "/api/tunix-typo/runs", "/api/"])
def test_a_path_no_api_pattern_matches_is_a_404_problem(
    operator_client: APIClient, settings: Any, debug: bool, path: str
) -> None:
    settings.DEBUG = debug
    body = problem(operator_client.get(path), 404)
    assert body["detail"] == f"no such endpoint {path}"


@debug_on_and_off
def test_an_unknown_run_is_a_404_problem(
    operator_client: APIClient, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    problem(operator_client.get("/api/tunix/runs/not-a-run"), 404)


@debug_on_and_off
def test_a_host_not_allowed_is_a_400_problem(
    operator_client: APIClient, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    response = operator_client.get("/api/tunix/runs", HTTP_HOST="evil.example")
    assert "evil.example" in problem(response, 400)["detail"]


def test_an_api_path_missing_its_slash_still_redirects_under_debug(
    operator_client: APIClient, settings: Any
) -> None:
    settings.DEBUG = True
    response = operator_client.get("/api/docs")
    assert response.status_code == 301
    assert response["Location"] == "/api/docs/"


def test_pages_keep_djangos_debug_pages(logged_in: Client, settings: Any) -> None:
    settings.DEBUG = True
    missing = logged_in.get("/no-such-page")
    assert missing.status_code == 404
    assert missing["Content-Type"].startswith("text/html")
    assert b"Using the URLconf defined in" in missing.content  # Django's technical 404

    bad_host = logged_in.get("/", HTTP_HOST="evil.example")
    assert bad_host.status_code == 400
    assert bad_host["Content-Type"].startswith("text/html")
    assert b"ALLOWED_HOSTS" in bad_host.content


def test_an_unexpected_failure_under_the_api_is_a_500_problem_and_pages_keep_theirs(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs import selectors

    def fail(**kwargs: Any) -> None:
        raise RuntimeError("the database went away mid-request")

    settings.DEBUG = False
    monkeypatch.setattr(selectors, "run_list_rows", fail)
    monkeypatch.setattr(selectors, "run_list", fail)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(User.objects.create_superuser("root", password="pw-123456789"))
    body = problem(client.get("/api/tunix/runs"), 500)
    assert body["detail"] == "the server failed to answer this request"
    assert "database went away" not in str(body)  # no internals to the client
    page = Client(raise_request_exception=False)
    page.force_login(User.objects.get(username="root"))
    answer = page.get("/")
    assert answer.status_code == 500
    assert answer["Content-Type"].startswith("text/html")
