"""One authorization policy (runs/authorization.py): the services, the API and the pages all ask
it, so changing a rule there changes it everywhere at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client
from rest_framework.test import APIClient

from runs import authorization, services
from runs.models import RunStatus, TunixRun
from tests.factories import TunixRunFactory, UserFactory

pytestmark = pytest.mark.django_db


def member(*codenames: str) -> User:
    user = UserFactory()
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="runs", codename=codename)
        )
    return User.objects.get(pk=user.pk)  # a fresh object: no cached permissions


def test_the_policy_table() -> None:
    owner, reader, operator, nobody = (
        member("add_tunixrun"),
        member("view_tunixrun"),
        member("change_tunixrun"),
        member(),
    )
    run = TunixRunFactory(created_by=owner)
    anonymous = AnonymousUser()
    assert [authorization.can_view(u, run) for u in (owner, reader, operator, nobody)] == [
        True,
        True,
        False,
        False,
    ]
    assert [authorization.can_cancel(u, run) for u in (owner, reader, operator, nobody)] == [
        True,
        False,
        True,
        False,
    ]
    assert [authorization.can_launch(u) for u in (owner, reader, nobody, anonymous)] == [
        True,
        False,
        False,
        False,
    ]
    assert not authorization.can_cancel(anonymous, run)
    assert not authorization.can_upload_datasets(owner)
    assert authorization.can_upload_datasets(member("add_dataset"))
    # None is the system itself (management commands, the reaper): it may do anything.
    assert authorization.visible_owner(None) is None
    assert authorization.can_cancel(None, run)
    assert authorization.can_launch(None)


def test_a_changed_cancel_rule_holds_in_the_api_the_pages_and_the_services(
    monkeypatch: pytest.MonkeyPatch, demo_dataset: Any
) -> None:
    owner = member("add_tunixrun")
    run = TunixRunFactory(dataset=demo_dataset, created_by=owner)
    monkeypatch.setattr(authorization, "can_cancel", lambda user, run: False)

    api = APIClient()
    api.force_authenticate(owner)
    assert api.post(f"/api/tunix/runs/{run.id}/cancel").status_code == 403

    page = Client()
    page.force_login(owner)
    assert page.post(f"/runs/{run.id}/cancel").status_code == 403
    assert f"/runs/{run.id}/cancel" not in page.get(f"/runs/{run.id}").content.decode()

    with pytest.raises(services.Forbidden):
        services.run_cancel(run_id=run.id, user=owner)
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING


def test_a_changed_launch_rule_holds_in_the_api_the_pages_and_the_services(
    monkeypatch: pytest.MonkeyPatch, demo_dataset: Any
) -> None:
    owner = member("add_tunixrun")
    monkeypatch.setattr(authorization, "can_launch", lambda user: False)

    api = APIClient()
    api.force_authenticate(owner)
    body = {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3"}
    assert api.post("/api/tunix/run", body, format="json").status_code == 403

    page = Client()
    page.force_login(owner)
    assert page.get("/runs/new").status_code == 403

    request = services.RunRequest(dataset_key="tunix-demo-v1", model_id="tunix-rt/tiny-llama3")
    with pytest.raises(services.Forbidden):
        services.run_submit(user=owner, request=request, enqueue=False)
    assert not TunixRun.objects.exists()


def test_every_rule_the_api_and_the_pages_name_exists_in_the_policy() -> None:
    from runs.api.views import PolicyPermission

    named = {
        rule for cls in PolicyPermission.__subclasses__() for rule in cls.rule_by_method.values()
    }
    assert named == {"can_launch", "can_upload_datasets"}
    assert all(callable(getattr(authorization, rule)) for rule in named)
