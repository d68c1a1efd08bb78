"""Who may call the API: anonymous 401, missing permissions 403, token and session logins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs.models import Dataset, TunixRun
from tests.factories import TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

BODY = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}
PASSWORD = "correct-horse-battery"  # UserFactory's password


@pytest.fixture
def run() -> TunixRun:
    return TunixRunFactory()


ANONYMOUS_CALLS = [
    ("get", "/api/tunix/runs"),
    ("get", "/api/tunix/runs/{run_id}"),
    ("get", "/api/tunix/runs/{run_id}/status"),
    ("post", "/api/tunix/runs/{run_id}/cancel"),
    ("get", "/api/tunix/runs/{run_id}/artifacts"),
    ("get", "/api/tunix/runs/{run_id}/artifacts/tunix_run.json"),
    ("post", "/api/tunix/run"),
    ("get", "/api/tunix/datasets"),
    ("post", "/api/tunix/datasets"),
    ("get", "/api/tunix/datasets/tunix-demo-v1"),
    ("get", "/api/tunix/no-such-endpoint"),
    ("get", "/api/schema/"),
]


@pytest.mark.parametrize(("method", "path"), ANONYMOUS_CALLS)
def test_anonymous_calls_are_401_problems_with_a_challenge(
    api_client: APIClient, run: TunixRun, method: str, path: str
) -> None:
    response = getattr(api_client, method)(path.format(run_id=run.id))
    body = problem(response, 401)
    assert response["WWW-Authenticate"] == "Token"
    assert "credentials were not provided" in body["detail"]


def test_anonymous_submit_creates_nothing(api_client: APIClient, demo_dataset: Dataset) -> None:
    problem(api_client.post("/api/tunix/run", BODY, format="json"), 401)
    assert not TunixRun.objects.exists()


def test_anonymous_docs_page_is_refused(api_client: APIClient) -> None:
    response = api_client.get("/api/docs/")
    assert response.status_code == 401
    assert "swagger" not in response.content.decode().lower()


def test_a_user_without_add_tunixrun_may_read_but_not_submit(
    viewer_client: APIClient, demo_dataset: Dataset, run: TunixRun
) -> None:
    assert viewer_client.get("/api/tunix/runs").status_code == 200
    assert viewer_client.get(f"/api/tunix/runs/{run.id}").status_code == 200
    assert viewer_client.get(f"/api/tunix/runs/{run.id}/status").status_code == 200
    assert viewer_client.get("/api/tunix/datasets").status_code == 200

    problem(viewer_client.post("/api/tunix/run", BODY, format="json"), 403)
    assert TunixRun.objects.filter(dataset=demo_dataset).count() == 0


def test_a_user_without_add_dataset_may_not_upload(
    viewer_client: APIClient, jsonl: Callable[..., bytes], settings: Any
) -> None:
    data = jsonl({"prompt": "p", "completion": "c"})
    form = {"key": "mine-v1", "file": SimpleUploadedFile("d.jsonl", data)}

    problem(viewer_client.post("/api/tunix/datasets", form, format="multipart"), 403)

    assert not Dataset.objects.exists()
    assert not settings.TUNIX_DATASETS_ROOT.exists() or not any(
        settings.TUNIX_DATASETS_ROOT.iterdir()
    )


def test_the_permissions_are_what_allows_writing(user: User, demo_dataset: Dataset) -> None:
    from django.contrib.auth.models import Permission

    user.user_permissions.add(Permission.objects.get(codename="add_tunixrun"))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=user.pk))  # fresh permission cache
    assert client.post("/api/tunix/run", BODY, format="json").status_code == 201
    # add_tunixrun alone does not allow uploads
    problem(client.post("/api/tunix/datasets", {"key": "x-v1"}, format="multipart"), 403)


def test_token_auth_end_to_end(
    api_client: APIClient, operator: User, demo_dataset: Dataset
) -> None:
    obtained = api_client.post(
        "/api/auth/token", {"username": operator.username, "password": PASSWORD}, format="json"
    )
    assert obtained.status_code == 200, obtained.content
    token = obtained.json()["token"]

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = client.get("/api/tunix/runs")
    assert listed.status_code == 200
    submitted = client.post("/api/tunix/run", BODY, format="json")
    assert submitted.status_code == 201, submitted.content
    assert submitted.json()["created_by"] == operator.username
    assert client.get(submitted["Location"]).json()["status"] == "completed"
    # The same credentials answer the same token, not a new one.
    again = api_client.post(
        "/api/auth/token", {"username": operator.username, "password": PASSWORD}, format="json"
    )
    assert again.json()["token"] == token


def test_a_wrong_password_gets_no_token(api_client: APIClient, user: User) -> None:
    body = problem(
        api_client.post("/api/auth/token", {"username": user.username, "password": "wrong"}), 400
    )
    assert "Unable to log in" in body["detail"]


def test_an_overlong_username_is_a_400_naming_it_not_a_500(api_client: APIClient) -> None:
    answer = api_client.post("/api/auth/token", {"username": "u" * 300, "password": "x"})
    body = problem(answer, 400)
    assert body["errors"][0]["field"] == "username"


@pytest.mark.parametrize("header", ["Token not-a-real-token", "Token", "Token a b"])
def test_a_bad_token_is_a_401_problem(api_client: APIClient, header: str) -> None:
    api_client.credentials(HTTP_AUTHORIZATION=header)
    problem(api_client.get("/api/tunix/runs"), 401)


def test_an_inactive_users_token_is_refused(api_client: APIClient) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=UserFactory(is_active=False))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    problem(api_client.get("/api/tunix/runs"), 401)


def log_in(client: APIClient, user: User) -> None:
    """Through the login page, as a browser does (login throttling sees the request)."""
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, response.content


def test_session_login_works_for_reads_and_writes(operator: User, demo_dataset: Dataset) -> None:
    client = APIClient()
    log_in(client, operator)
    assert client.get("/api/tunix/runs").status_code == 200
    response = client.post("/api/tunix/run", BODY, format="json")
    assert response.status_code == 201, response.content


def test_session_writes_need_the_csrf_token(operator: User, demo_dataset: Dataset) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)

    refused = client.post("/api/tunix/run", BODY, format="json")
    assert "CSRF" in problem(refused, 403)["detail"]
    assert not TunixRun.objects.exists()

    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    accepted = client.post("/api/tunix/run", BODY, format="json", headers={"X-CSRFToken": secret})
    assert accepted.status_code == 201, accepted.content


def test_healthz_answers_without_a_login(api_client: APIClient) -> None:
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
