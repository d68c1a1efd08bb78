"""`make run` again, the admin password long lost: ensure_admin says how to get back in, and
resets it when asked to."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import RequestFactory

pytestmark = pytest.mark.django_db


def can_log_in(username: str, password: str) -> bool:
    request = RequestFactory().post("/accounts/login/")
    return authenticate(request, username=username, password=password) is not None


def ensure_admin(*args: str) -> str:
    out = io.StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TUNIX_ADMIN_PASSWORD", "TUNIX_ADMIN_RESET", "TUNIX_ADMIN_USER"):
        monkeypatch.delenv(name, raising=False)


def test_a_second_run_says_how_to_reset_the_password() -> None:
    User.objects.create_superuser("root", "", "forgotten-password-1")
    shown = ensure_admin()
    assert "exists already (root)" in shown
    assert "python manage.py changepassword root" in shown
    assert "TUNIX_ADMIN_RESET=1" in shown
    assert can_log_in("root", "forgotten-password-1")  # nothing changed


def test_the_reset_variable_gives_a_new_password_shown_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    User.objects.create_superuser("admin", "", "forgotten-password-1")
    monkeypatch.setenv("TUNIX_ADMIN_RESET", "1")
    shown = ensure_admin()
    password = shown.split("password: ")[1].split()[0]
    assert can_log_in("admin", password)
    assert not can_log_in("admin", "forgotten-password-1")
    assert User.objects.filter(is_superuser=True).count() == 1


def test_a_reset_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    User.objects.create_superuser("first", "", "forgotten-password-1")
    User.objects.create_superuser("ops", "", "forgotten-password-2")
    monkeypatch.setenv("TUNIX_ADMIN_PASSWORD", "a-new-secret-from-env")
    shown = ensure_admin("--reset", "--username", "ops")
    assert "a-new-secret-from-env" not in shown
    assert can_log_in("ops", "a-new-secret-from-env")
    assert can_log_in("first", "forgotten-password-1")  # only the one named
