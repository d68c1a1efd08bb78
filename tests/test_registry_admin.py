"""The model registry in the operators' admin: read-only versions and alias log, a model's
description edited through the service, and deletions refused for the registry's reasons."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from runs import services
from runs.models import AliasMove, ModelVersion, RegisteredModel, RunExport, RunMode
from tests.factories import DatasetFactory, TunixRunFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="boss-password-123"))
    return client


def promoted(name: str = "support-bot", count: int = 2) -> list[ModelVersion]:
    run = TunixRunFactory(completed=True, mode=RunMode.LOCAL, dataset=DatasetFactory())
    versions = []
    for step in range(1, count + 1):
        export = RunExport.objects.create(
            run=run, step=step, status="completed", sha256=f"{step:064x}", size_bytes=1
        )
        version, _ = services.registry_promote(
            user=None, model_name=name, run_id=run.id, export_id=export.id
        )
        versions.append(version)
    return versions


def test_a_models_page_shows_its_versions_and_aliases_read_only(boss: Client) -> None:
    versions = promoted()
    services.registry_alias_set(user=None, model_name="support-bot", alias="production", number=2)
    model = RegisteredModel.objects.get()

    page = boss.get(f"/admin/runs/registeredmodel/{model.pk}/change/").content.decode()

    assert "production" in page
    for version in versions:
        assert version.sha256 in page
    assert 'name="description"' in page  # the one editable field
    assert 'name="versions-0-sha256"' not in page
    assert boss.get("/admin/runs/registeredmodel/add/").status_code == 403


def test_a_description_saved_in_the_admin_goes_through_the_service(boss: Client) -> None:
    promoted(count=1)
    model = RegisteredModel.objects.get()
    form = {
        "description": "answers tickets",
        "aliases-TOTAL_FORMS": "0",
        "aliases-INITIAL_FORMS": "0",
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "1",
        "versions-0-id": str(ModelVersion.objects.get().pk),
        "versions-0-model": str(model.pk),
    }

    response = boss.post(f"/admin/runs/registeredmodel/{model.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    model.refresh_from_db()
    assert model.description == "answers tickets"
    assert model.updated_at > model.created_at


def test_staff_without_the_registry_permission_only_read_a_model(db: None) -> None:
    promoted(count=1)
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_registeredmodel"))
    client = Client()
    client.force_login(staff)
    model = RegisteredModel.objects.get()

    page = client.get(f"/admin/runs/registeredmodel/{model.pk}/change/")

    assert page.status_code == 200
    assert 'name="description"' not in page.content.decode()
    refused = client.post(
        f"/admin/runs/registeredmodel/{model.pk}/change/", {"description": "mine"}
    )
    assert refused.status_code == 403
    assert RegisteredModel.objects.get().description == ""


def test_deleting_a_version_an_alias_names_is_refused_in_the_admin_with_the_reason(
    boss: Client,
) -> None:
    version = promoted()[0]
    services.registry_alias_set(user=None, model_name="support-bot", alias="production", number=1)
    url = f"/admin/runs/modelversion/{version.pk}/delete/"

    page = boss.get(url).content.decode()
    boss.post(url, {"post": "yes"})

    assert "alias production names it" in page
    assert ModelVersion.objects.filter(pk=version.pk).exists()


def test_deleting_a_version_a_run_trained_from_is_refused_in_bulk_too(boss: Client) -> None:
    used, unused = promoted()
    TunixRunFactory(dataset=DatasetFactory(), base_version=used, base_export=used.export)
    action = {"action": "delete_selected", "_selected_action": [used.pk, unused.pk]}

    page = boss.post("/admin/runs/modelversion/", action).content.decode()
    boss.post("/admin/runs/modelversion/", {**action, "post": "yes"})

    assert "1 run trained from it" in page
    assert ModelVersion.objects.count() == 2


def test_an_unused_version_is_deleted_from_the_admin_through_the_service(boss: Client) -> None:
    version = promoted()[1]

    response = boss.post(f"/admin/runs/modelversion/{version.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert list(ModelVersion.objects.values_list("number", flat=True)) == [1]
    assert RunExport.objects.filter(pk=version.export_id).exists()


def test_the_alias_log_is_read_only_in_the_admin(boss: Client) -> None:
    promoted(count=1)
    services.registry_alias_set(user=None, model_name="support-bot", alias="production", number=1)
    move = AliasMove.objects.get()

    listing = boss.get("/admin/runs/aliasmove/").content.decode()
    change = boss.get(f"/admin/runs/aliasmove/{move.pk}/change/").content.decode()

    assert "production" in listing
    assert 'name="alias"' not in change
    assert boss.get("/admin/runs/aliasmove/add/").status_code == 403
    assert boss.post(f"/admin/runs/aliasmove/{move.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AliasMove.objects.exists()
