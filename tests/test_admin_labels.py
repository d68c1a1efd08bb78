"""What the operators' admin calls things: plurals a reader would write."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="boss-password-123"))
    return client


def test_the_admin_says_webhook_deliveries(staff: Client) -> None:
    index = staff.get("/admin/").content.decode()
    assert "Webhook deliveries" in index
    assert "deliverys" not in index.lower()
    listing = staff.get("/admin/runs/webhookdelivery/").content.decode()
    assert "webhook deliveries" in listing.lower()
    assert "deliverys" not in listing.lower()
