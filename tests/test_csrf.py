"""CSRF is enforced on every form the pages post (and on any htmx request, which carries the
token in the X-CSRFToken header base.html sets): without the token nothing happens."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from runs.models import Dataset, RunStatus, TunixRun
from tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(operator: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    return client


def token_from(client: Client, path: str) -> str:
    """The CSRF token as a page hands it to the browser (form field and htmx header)."""
    page = client.get(path).content.decode()
    field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    header = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page)
    assert field
    assert header
    return field.group(1)


def forms(run: TunixRun) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/runs/new", {"dataset": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3",
                       "mode": "dry-run", "execution": "async"}),
        (f"/runs/{run.id}/cancel", {}),
        (f"/runs/{run.id}/again", {}),
        ("/accounts/logout/", {}),
    ]  # fmt: skip


def test_every_form_refuses_a_post_without_the_token(browser: Client, demo_dataset: Any) -> None:
    run = TunixRunFactory(dataset=demo_dataset, status=RunStatus.PENDING, attempt=0)
    for path, data in forms(run):
        assert browser.post(path, data).status_code == 403, path
        # An htmx request is a post like any other: without its header it is refused too.
        assert browser.post(path, data, headers={"HX-Request": "true"}).status_code == 403, path
    assert TunixRun.objects.count() == 1
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING
    upload = browser.post("/datasets", {"key": "x-v1", "file": b"{}"})
    assert upload.status_code == 403
    assert Dataset.objects.count() == 1


def test_the_same_posts_with_the_token_go_through(
    browser: Client, demo_dataset: Any, operator: Any
) -> None:
    run = TunixRunFactory(
        dataset=demo_dataset, status=RunStatus.PENDING, attempt=0, created_by=operator
    )
    token = token_from(browser, "/runs/new")
    launched = browser.post(
        "/runs/new",
        {"dataset": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3", "mode": "dry-run",
         "execution": "async", "csrfmiddlewaretoken": token},
    )  # fmt: skip
    assert launched.status_code == 302
    cancelled = browser.post(f"/runs/{run.id}/cancel", headers={"X-CSRFToken": token})
    assert cancelled.status_code in {200, 302}
    assert TunixRun.objects.get(id=run.id).status == RunStatus.CANCELLED


def test_the_login_form_needs_the_token_too(operator: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    refused = client.post("/accounts/login/", {"username": operator.username, "password": "x"})
    assert refused.status_code == 403
