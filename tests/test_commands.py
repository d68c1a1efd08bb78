"""First-run helpers."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import RequestFactory

pytestmark = pytest.mark.django_db


def test_ensure_admin_creates_one_admin_and_prints_the_password_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TUNIX_ADMIN_PASSWORD", raising=False)
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    password = out.getvalue().split("password: ")[1].split()[0]
    assert (
        authenticate(RequestFactory().post("/accounts/login/"), username="admin", password=password)
        is not None
    )
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    assert "exists already" in out.getvalue()
    assert password not in out.getvalue()
    assert User.objects.filter(is_superuser=True).count() == 1


def test_ensure_admin_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNIX_ADMIN_PASSWORD", "from-env-secret-1")
    out = io.StringIO()
    call_command("ensure_admin", "--username", "ops", stdout=out)
    assert "from-env-secret-1" not in out.getvalue()
    assert (
        authenticate(
            RequestFactory().post("/accounts/login/"), username="ops", password="from-env-secret-1"
        )
        is not None
    )


@pytest.mark.django_db
def test_worker_alive_tells_whether_this_hosts_workers_report(settings: Any) -> None:
    import socket
    from datetime import timedelta

    from django.core.management.base import CommandError
    from django.utils import timezone

    from runs import services
    from runs.models import WorkerHeartbeat

    with pytest.raises(CommandError, match=r"no worker on .* has reported yet"):
        call_command("worker_alive")
    services.worker_heartbeat(worker_id=f"worker:{socket.gethostname()}:4242")
    out = io.StringIO()
    call_command("worker_alive", stdout=out)
    assert out.getvalue().startswith("ok: a worker on")
    WorkerHeartbeat.objects.update(
        seen_at=timezone.now() - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS + 5)
    )
    with pytest.raises(CommandError, match="s old"):
        call_command("worker_alive")
    # Another host's worker says nothing about this one.
    services.worker_heartbeat(worker_id="worker:other-host:1")
    with pytest.raises(CommandError):
        call_command("worker_alive")
