"""Who sees and cancels which runs: a user without runs.view_tunixrun sees only the runs they
launched, everywhere (API list, detail, status, artifacts, cancel, pages, polled fragments);
someone else's run answers 404 as if it did not exist."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from runs.models import RunStatus, TunixRun
from tests.factories import TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db


def launcher() -> User:
    """May launch runs (runs.add_tunixrun) but not read everyone's."""
    member = UserFactory()
    member.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    return User.objects.get(pk=member.pk)


@pytest.fixture
def alice() -> User:
    return launcher()


@pytest.fixture
def bob() -> User:
    return launcher()


@pytest.fixture
def runs(alice: User, bob: User, demo_dataset: Any) -> dict[str, TunixRun]:
    return {
        "alice": TunixRunFactory(dataset=demo_dataset, created_by=alice),
        "bob": TunixRunFactory(
            dataset=demo_dataset, created_by=bob, status=RunStatus.PENDING, attempt=0
        ),
    }


def api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_api_list_shows_only_a_users_own_runs(alice: User, runs: dict[str, TunixRun]) -> None:
    listed = api(alice).get("/api/tunix/runs").json()["data"]
    assert [item["run_id"] for item in listed] == [str(runs["alice"].id)]


@pytest.mark.parametrize("suffix", ["", "/status", "/artifacts", "/artifacts/tunix_config.json"])
def test_someone_elses_run_is_not_found(
    alice: User, runs: dict[str, TunixRun], suffix: str
) -> None:
    response = api(alice).get(f"/api/tunix/runs/{runs['bob'].id}{suffix}")
    problem(response, 404)


def test_someone_elses_run_cannot_be_cancelled(alice: User, runs: dict[str, TunixRun]) -> None:
    problem(api(alice).post(f"/api/tunix/runs/{runs['bob'].id}/cancel"), 404)
    assert TunixRun.objects.get(id=runs["bob"].id).status == RunStatus.PENDING


def test_a_reader_sees_every_run_but_cancels_none_of_them(
    viewer_client: APIClient, runs: dict[str, TunixRun]
) -> None:
    listed = viewer_client.get("/api/tunix/runs").json()["data"]
    assert {item["run_id"] for item in listed} == {str(r.id) for r in runs.values()}
    assert viewer_client.get(f"/api/tunix/runs/{runs['bob'].id}").status_code == 200
    problem(viewer_client.post(f"/api/tunix/runs/{runs['bob'].id}/cancel"), 403)
    assert TunixRun.objects.get(id=runs["bob"].id).status == RunStatus.PENDING


def test_the_owner_cancels_their_own_run(bob: User, runs: dict[str, TunixRun]) -> None:
    response = api(bob).post(f"/api/tunix/runs/{runs['bob'].id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == RunStatus.CANCELLED


def test_the_pages_show_only_a_users_own_runs(alice: User, runs: dict[str, TunixRun]) -> None:
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/").content.decode()
    assert str(runs["alice"].id) in page
    assert str(runs["bob"].id) not in page
    rows = browser.get("/runs/rows").content.decode()
    assert str(runs["bob"].id) not in rows
    for path in ("", "/live"):
        assert browser.get(f"/runs/{runs['bob'].id}{path}").status_code == 404
    refused = browser.post(f"/runs/{runs['bob'].id}/cancel")
    assert refused.status_code == 404
    assert TunixRun.objects.get(id=runs["bob"].id).status == RunStatus.PENDING
    assert browser.post(f"/runs/{runs['bob'].id}/again").status_code == 404
    assert TunixRun.objects.count() == 2


def test_a_superuser_sees_everything(runs: dict[str, TunixRun]) -> None:
    admin = UserFactory(is_superuser=True, is_staff=True)
    listed = api(admin).get("/api/tunix/runs").json()["data"]
    assert len(listed) == 2
