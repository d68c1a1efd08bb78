"""Operators' admin: lists, filters, search, read-only runs, dataset import through the form."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from runs.models import Dataset
from tests.factories import TunixRunFactory, WebhookAttemptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(db: None) -> Client:
    admin = User.objects.create_superuser("boss", password="boss-password-123")
    client = Client()
    client.force_login(admin)
    return client


def test_run_changelist_filters_and_searches(admin_client_logged_in: Client) -> None:
    done = TunixRunFactory(completed=True, model_id="org/alpha")
    TunixRunFactory(model_id="org/beta")
    url = "/admin/runs/tunixrun/"
    page = admin_client_logged_in.get(url, {"status__exact": "completed"})
    assert page.status_code == 200
    assert str(done.id) in page.content.decode()
    assert "org/beta" not in page.content.decode()
    by_id = admin_client_logged_in.get(url, {"q": str(done.id)})
    assert "org/alpha" in by_id.content.decode()
    assert "org/beta" not in by_id.content.decode()
    by_text = admin_client_logged_in.get(url, {"q": "beta"})
    assert "org/beta" in by_text.content.decode()
    assert "org/alpha" not in by_text.content.decode()


def test_run_detail_is_read_only(admin_client_logged_in: Client) -> None:
    run = TunixRunFactory(completed=True, stdout="hello from the run")
    page = admin_client_logged_in.get(f"/admin/runs/tunixrun/{run.id}/change/")
    assert page.status_code == 200
    assert "hello from the run" in page.content.decode()
    assert 'name="stdout"' not in page.content.decode()  # shown, not editable
    assert admin_client_logged_in.get("/admin/runs/tunixrun/add/").status_code == 403


def test_dataset_import_through_the_admin(
    admin_client_logged_in: Client, jsonl: Callable[..., bytes]
) -> None:
    upload = SimpleUploadedFile("d.jsonl", jsonl({"prompt": "a", "completion": "b"}))
    response = admin_client_logged_in.post(
        "/admin/runs/dataset/add/", {"key": "admin-v1", "upload": upload}
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get(key="admin-v1")
    assert dataset.record_count == 1
    assert (Path(settings.TUNIX_DATASETS_ROOT) / "admin-v1.jsonl").is_file()


def test_bad_dataset_in_the_admin_shows_the_line_and_leaves_nothing(
    admin_client_logged_in: Client, jsonl: Callable[..., bytes]
) -> None:
    upload = SimpleUploadedFile("d.jsonl", jsonl({"prompt": "a", "completion": "b"}, "{nope"))
    response = admin_client_logged_in.post(
        "/admin/runs/dataset/add/", {"key": "admin-v1", "upload": upload}
    )
    assert response.status_code == 200
    assert "line 2: invalid JSON" in response.content.decode()
    assert not Dataset.objects.exists()
    root = Path(settings.TUNIX_DATASETS_ROOT)
    assert not root.exists() or not any(root.iterdir())


def test_webhook_deliveries_show_every_attempt(admin_client_logged_in: Client) -> None:
    attempt = WebhookAttemptFactory(delivery__endpoint="https://hooks.example/x", status_code=503)
    delivery = attempt.delivery
    page = admin_client_logged_in.get(f"/admin/runs/webhookdelivery/{delivery.id}/change/")
    assert page.status_code == 200
    assert "503" in page.content.decode()
    listing = admin_client_logged_in.get("/admin/runs/webhookdelivery/")
    assert "https://hooks.example/x" in listing.content.decode()


def test_the_admin_cancels_runs_through_the_service_and_its_policy(
    admin_client_logged_in: Client,
) -> None:
    pending = TunixRunFactory()
    finished = TunixRunFactory(completed=True)
    response = admin_client_logged_in.post(
        "/admin/runs/tunixrun/",
        {"action": "cancel", "_selected_action": [str(pending.id), str(finished.id)]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert "1 run(s) cancelled." in shown
    assert any("is already completed" in m for m in shown)
    pending.refresh_from_db()
    assert pending.status == "cancelled"


def test_a_staff_reader_cannot_cancel_someone_elses_run_from_the_admin(db: None) -> None:
    from django.contrib.auth.models import Permission

    reader = User.objects.create_user("reader", password="reader-password-123", is_staff=True)
    reader.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="view_tunixrun")
    )
    run = TunixRunFactory()
    client = Client()
    client.force_login(reader)
    response = client.post(
        "/admin/runs/tunixrun/",
        {"action": "cancel", "_selected_action": [str(run.id)]},
        follow=True,
    )
    assert any(
        "only the run's creator or an operator" in str(m) for m in response.context["messages"]
    )
    run.refresh_from_db()
    assert run.status == "pending"
