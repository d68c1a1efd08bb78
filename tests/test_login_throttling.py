"""Login throttling: repeated failures for one account from one address are refused for a while,
on the login page, the admin's login and the API token endpoint alike."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture
def account(settings: Any) -> Any:
    settings.AXES_FAILURE_LIMIT = 3
    return UserFactory(username="alice", password=PASSWORD, is_staff=True)


def login_page(client: Client, password: str, username: str = "alice") -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_the_login_page_locks_an_account_after_repeated_failures(account: Any) -> None:
    client = Client()
    for _ in range(2):
        assert login_page(client, "wrong").status_code == 200  # the form again, with its error
    locked = login_page(client, "wrong")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) == 15 * 60
    assert "Too many failed logins" in locked.content.decode()
    # Locked means locked: the right password does not get in either, until the cool-off.
    assert login_page(client, PASSWORD).status_code == 429
    assert "_auth_user_id" not in client.session


def test_other_accounts_and_addresses_are_not_locked_out(account: Any) -> None:
    UserFactory(username="bob", password=PASSWORD)
    for _ in range(3):
        login_page(Client(), "wrong")
    assert login_page(Client(), PASSWORD, username="bob").status_code == 302
    elsewhere = Client(REMOTE_ADDR="10.9.8.7")
    assert login_page(elsewhere, PASSWORD).status_code == 302


def test_a_success_resets_the_count(account: Any) -> None:
    client = Client()
    login_page(client, "wrong")
    login_page(client, "wrong")
    assert login_page(client, PASSWORD).status_code == 302
    client.logout()
    login_page(client, "wrong")
    login_page(client, "wrong")
    assert login_page(client, PASSWORD).status_code == 302


def test_the_admin_login_is_throttled(account: Any) -> None:
    client = Client()
    for _ in range(3):
        response = client.post(
            "/admin/login/", {"username": "alice", "password": "wrong", "next": "/admin/"}
        )
    assert response.status_code == 429
    allowed = client.post(
        "/admin/login/", {"username": "alice", "password": PASSWORD, "next": "/admin/"}
    )
    assert allowed.status_code == 429


def test_the_token_endpoint_answers_problem_json_when_locked(account: Any) -> None:
    client = APIClient()
    for _ in range(2):
        refused = client.post("/api/auth/token", {"username": "alice", "password": "wrong"})
        assert refused.status_code == 400
    locked = client.post("/api/auth/token", {"username": "alice", "password": "wrong"})
    body = problem(locked, 429)
    assert "too many failed logins" in body["detail"]
    assert locked["Retry-After"] == str(15 * 60)
    again = client.post("/api/auth/token", {"username": "alice", "password": PASSWORD})
    problem(again, 429)


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy(
    account: Any, settings: Any
) -> None:
    # Not trusted: a client cannot dodge the lockout by inventing X-Forwarded-For values.
    for n in range(3):
        login_page(Client(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}"), "wrong")
    assert login_page(Client(HTTP_X_FORWARDED_FOR="203.0.113.99"), PASSWORD).status_code == 429
    # Trusted: the address the proxy appended is the client's, each counted on its own.
    settings.TUNIX_TRUST_X_FORWARDED_FOR = True
    for _ in range(3):
        login_page(Client(HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7"), "wrong")
    assert login_page(Client(HTTP_X_FORWARDED_FOR="198.51.100.8"), PASSWORD).status_code == 302
    assert (
        login_page(Client(HTTP_X_FORWARDED_FOR="9.9.9.9, 198.51.100.7"), PASSWORD).status_code
        == 429
    )
