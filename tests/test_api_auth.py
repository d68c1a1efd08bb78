"""Who may do what: anonymous 401, missing permission 403, token and session logins."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.factories import TunixRunFactory, UserFactory

pytestmark = pytest.mark.django_db

BODY = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}


def test_anonymous_requests_are_401_problems(api_client: APIClient) -> None:
    run = TunixRunFactory()
    calls = [
        ("get", "/api/tunix/runs"),
        ("get", f"/api/tunix/runs/{run.id}"),
        ("get", f"/api/tunix/runs/{run.id}/status"),
        ("post", f"/api/tunix/runs/{run.id}/cancel"),
        ("post", "/api/tunix/run"),
        ("get", "/api/tunix/datasets"),
        ("post", "/api/tunix/datasets"),
        ("get", "/api/tunix/datasets/x-v1"),
        ("get", "/api/schema/"),
    ]
    for method, url in calls:
        response = getattr(api_client, method)(url)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == "Token", url
        if url.startswith("/api/tunix"):
            assert response["Content-Type"] == "application/problem+json", url


def test_reading_needs_a_login_but_writing_needs_permissions(
    viewer_client: APIClient, demo_dataset: Any
) -> None:
    assert viewer_client.get("/api/tunix/runs").status_code == 200
    assert viewer_client.get("/api/tunix/datasets").status_code == 200
    denied = viewer_client.post("/api/tunix/run", BODY, format="json")
    assert denied.status_code == 403
    assert denied["Content-Type"] == "application/problem+json"
    upload = viewer_client.post("/api/tunix/datasets", {"key": "x-v1"}, format="multipart")
    assert upload.status_code == 403


def test_token_login_end_to_end(api_client: APIClient, operator: User, demo_dataset: Any) -> None:
    operator.set_password("s3cret-pass-word")
    operator.save()
    token = api_client.post(
        "/api/auth/token", {"username": operator.username, "password": "s3cret-pass-word"}
    ).json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api_client.post("/api/tunix/run", BODY, format="json")
    assert response.status_code == 201
    assert response.json()["created_by"] == operator.username
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert wrong.get("/api/tunix/runs").status_code == 401


def test_session_login_works_for_the_api(demo_dataset: Any) -> None:
    UserFactory(username="sam")
    client = APIClient()
    assert client.login(username="sam", password="correct-horse-battery")
    assert client.get("/api/tunix/runs").status_code == 200


def test_session_writes_need_the_csrf_token(operator: User, demo_dataset: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post("/api/tunix/run", BODY, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_health_needs_no_login(api_client: APIClient) -> None:
    response = api_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_deleted_token_stops_working_once_the_cache_expires(
    operator: User, settings: Any
) -> None:
    from rest_framework.authtoken.models import Token

    from runs.api.authentication import clear_cache

    token = Token.objects.create(user=operator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/tunix/runs").status_code == 200
    token.delete()
    settings.TUNIX_TOKEN_CACHE_SECONDS = 0  # as if the cached entry had expired
    assert client.get("/api/tunix/runs").status_code == 401
    clear_cache()
