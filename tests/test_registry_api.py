"""The model registry through its API: promotions content-addressed to numbered versions with
their lineage, aliases moved with every move logged, refusals that name what is wrong and
write nothing, deletions refused while an alias or a run uses the version."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from runs import selectors, services
from runs.models import (
    AliasMove,
    Dataset,
    ExportStatus,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RunExport,
    RunMode,
    Sample,
    TunixRun,
)
from tests.factories import TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

MODELS = "/api/tunix/registry/models"


def member(*codenames: str) -> User:
    user = UserFactory()
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="runs", codename__in=codenames)
    )
    return User.objects.get(pk=user.pk)  # fresh instance: permission cache is per object


def client_of(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def registrar() -> User:
    """Reads every run, promotes, and manages aliases and deletions."""
    return member("view_tunixrun", "add_modelversion", "change_registeredmodel")


@pytest.fixture
def api(registrar: User) -> APIClient:
    return client_of(registrar)


def trained_run(dataset: Dataset, owner: User | None = None, **fields: Any) -> TunixRun:
    """A completed local training, as the trainer leaves it (no files needed here)."""
    values: dict[str, Any] = {
        "completed": True,
        "mode": RunMode.LOCAL,
        "dataset": dataset,
        "created_by": owner,
        "model_id": "tunix-rt/tiny-llama3",
        "config": {"learning_rate": 0.003, "lora_rank": 4, "max_steps": 8},
        "metrics": {"train_loss": 1.25, "eval_loss": 1.5, "exact_match": 0.5},
    }
    return TunixRunFactory(**(values | fields))


def export_of(
    run: TunixRun, step: int = 8, weights: str = "merged", *, status: str = "completed", **kw: Any
) -> RunExport:
    done = status == ExportStatus.COMPLETED
    sha = kw.pop("sha256", hashlib.sha256(f"{run.id}/{step}/{weights}".encode()).hexdigest())
    return RunExport.objects.create(
        run=run,
        step=step,
        weights=weights,
        status=status,
        sha256=sha if done else "",
        size_bytes=1234 if done else None,
        error_reason="nonzero_exit" if status == ExportStatus.FAILED else "",
        completed_at=timezone.now() if status in ("completed", "failed") else None,
        **kw,
    )


def promote(api: APIClient, name: str, run: TunixRun, **body: Any) -> Any:
    return api.post(f"{MODELS}/{name}/versions", {"run_id": str(run.id), **body}, format="json")


def registry_rows() -> tuple[int, int, int, int]:
    return (
        RegisteredModel.objects.count(),
        ModelVersion.objects.count(),
        ModelAlias.objects.count(),
        AliasMove.objects.count(),
    )


# Promotion


def test_promoting_a_run_creates_the_model_and_version_1_with_its_location(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    export = export_of(run)

    response = promote(api, "support-bot", run, description="first cut")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["model"] == "support-bot"
    assert body["number"] == 1
    assert body["uri"] == body["use_as_base"] == "models:/support-bot/1"
    assert body["sha256"] == export.sha256
    assert body["export_id"] == str(export.id)
    assert (body["step"], body["weights"], body["description"]) == (8, "merged", "first cut")
    assert (
        response["Location"] == "http://testserver/api/tunix/registry/models/support-bot/versions/1"
    )
    assert api.get(response["Location"]).json() == body
    model = RegisteredModel.objects.get()
    assert (model.name, model.latest_number) == ("support-bot", 1)


def test_a_version_carries_the_lineage_of_its_run(
    api: APIClient, registrar: User, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset, algorithm="sft")
    export = export_of(run, step=6)

    body = promote(api, "support-bot", run).json()

    assert body["lineage"] == {
        "run_id": str(run.id),
        "run_url": f"http://testserver/api/tunix/runs/{run.id}",
        "dataset_key": "tunix-demo-v1",
        "dataset_sha256": demo_dataset.sha256,
        "algorithm": "sft",
        "base_model_id": "tunix-rt/tiny-llama3",
        "config": {"learning_rate": 0.003, "lora_rank": 4, "max_steps": 8},
        "metrics": {"train_loss": 1.25, "eval_loss": 1.5, "exact_match": 0.5},
    }
    assert body["promoted_by"] == registrar.username
    assert body["promoted_at"]
    assert body["archive_url"] == (
        f"http://testserver/api/tunix/runs/{run.id}/exports/{export.id}/archive"
    )
    assert api.get(body["lineage"]["run_url"]).status_code == 200


def test_the_lineage_stays_as_it_was_when_the_run_changes_later(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)
    promote(api, "support-bot", run)

    TunixRun.objects.filter(id=run.id).update(metrics={"train_loss": 99.0}, config={})

    lineage = api.get(f"{MODELS}/support-bot/versions/1").json()["lineage"]
    assert lineage["metrics"]["train_loss"] == 1.25
    assert lineage["config"]["lora_rank"] == 4


def test_the_same_content_promoted_again_is_the_same_version_with_200(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)
    first = promote(api, "support-bot", run)

    again = promote(api, "support-bot", run)

    assert again.status_code == 200, again.content
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert ModelVersion.objects.count() == 1
    assert RegisteredModel.objects.get().latest_number == 1


def test_the_same_content_from_another_run_is_the_same_version(
    api: APIClient, demo_dataset: Dataset
) -> None:
    first_run, second_run = trained_run(demo_dataset), trained_run(demo_dataset)
    export_of(first_run, sha256="a" * 64)
    export_of(second_run, sha256="a" * 64)
    promote(api, "support-bot", first_run)

    again = promote(api, "support-bot", second_run)

    assert again.status_code == 200
    assert again.json()["lineage"]["run_id"] == str(first_run.id)
    assert ModelVersion.objects.count() == 1


def test_other_content_is_the_next_version_and_the_same_content_may_join_another_model(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    early, late = export_of(run, step=4), export_of(run, step=8)

    one = promote(api, "support-bot", run, export_id=str(early.id))
    two = promote(api, "support-bot", run, export_id=str(late.id))
    other = promote(api, "triage-bot", run, export_id=str(early.id))

    assert (one.status_code, one.json()["number"], one.json()["step"]) == (201, 1, 4)
    assert (two.status_code, two.json()["number"], two.json()["step"]) == (201, 2, 8)
    assert (other.status_code, other.json()["uri"]) == (201, "models:/triage-bot/1")


def test_without_an_export_id_the_newest_checkpoint_is_promoted_full_weights_first(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    export_of(run, step=4)
    export_of(run, step=8, weights="adapter")
    newest_merged = export_of(run, step=8, weights="merged")
    export_of(run, step=12, weights="merged", status="failed")  # a failure is no candidate

    body = promote(api, "support-bot", run).json()

    assert body["export_id"] == str(newest_merged.id)
    assert (body["step"], body["weights"]) == (8, "merged")


def test_a_newer_export_still_running_is_waited_for_rather_than_skipped(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    older = export_of(run, step=4)
    newer = export_of(run, step=8, status="running", started_at=timezone.now())

    body = problem(promote(api, "support-bot", run), 409)

    assert str(newer.id) in body["detail"]
    assert "running" in body["detail"]
    assert str(older.id) in body["detail"]  # the way to promote the older one anyway
    assert registry_rows() == (0, 0, 0, 0)
    assert promote(api, "support-bot", run, export_id=str(older.id)).status_code == 201


def test_full_weights_of_the_same_checkpoint_still_running_are_waited_for_too(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    adapter = export_of(run, step=8, weights="adapter")
    merged = export_of(run, step=8, weights="merged", status="pending")

    body = problem(promote(api, "support-bot", run), 409)

    assert f"export {merged.id} (step 8, merged) is still pending" in body["detail"]
    assert str(adapter.id) in body["detail"]
    assert registry_rows() == (0, 0, 0, 0)


def test_an_export_without_a_valid_content_address_is_refused(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    export_of(run, sha256="NOT-A-SHA256")

    body = problem(promote(api, "support-bot", run), 409)

    assert "no valid content address" in body["detail"]
    assert registry_rows() == (0, 0, 0, 0)


def test_a_run_without_a_completed_export_is_a_409_that_says_how_to_make_one(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)

    body = problem(promote(api, "support-bot", run), 409)

    assert f"POST /api/tunix/runs/{run.id}/exports" in body["detail"]
    assert registry_rows() == (0, 0, 0, 0)


def test_a_run_whose_only_export_is_pending_is_a_409_saying_so(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    pending = export_of(run, status="pending")

    body = problem(promote(api, "support-bot", run), 409)

    assert str(pending.id) in body["detail"]
    assert "still pending" in body["detail"]
    assert registry_rows() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"completed": False}, "a pending run"),
        ({"completed": False, "failed": True}, "a failed run"),
        ({"mode": RunMode.DRY_RUN}, "a dry-run run"),
    ],
)
def test_only_a_completed_training_can_be_promoted(
    api: APIClient, demo_dataset: Dataset, fields: dict[str, Any], named: str
) -> None:
    run = trained_run(demo_dataset, **fields)
    if run.status == "completed":
        export_of(run)

    body = problem(promote(api, "support-bot", run), 409)

    assert named in body["detail"]
    assert registry_rows() == (0, 0, 0, 0)


def test_an_export_of_another_run_is_a_400_naming_export_id(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run, other = trained_run(demo_dataset), trained_run(demo_dataset)
    export_of(run)
    foreign = export_of(other)

    body = problem(promote(api, "support-bot", run, export_id=str(foreign.id)), 400)

    assert body["errors"][0]["field"] == "export_id"
    assert registry_rows() == (0, 0, 0, 0)


@pytest.mark.parametrize("status", ["pending", "running", "failed"])
def test_an_export_that_is_not_completed_is_a_409(
    api: APIClient, demo_dataset: Dataset, status: str
) -> None:
    run = trained_run(demo_dataset)
    export = export_of(run, status=status, started_at=timezone.now())

    body = problem(promote(api, "support-bot", run, export_id=str(export.id)), 409)

    assert f"export {export.id} is {status}" in body["detail"]
    assert registry_rows() == (0, 0, 0, 0)


def test_a_run_the_user_may_not_see_is_a_404_like_a_missing_one_and_nothing_is_written(
    demo_dataset: Dataset,
) -> None:
    # Promotes, but sees only the runs they launched.
    outsider = member("add_modelversion", "change_registeredmodel")
    someone_elses = trained_run(demo_dataset, owner=UserFactory())
    export_of(someone_elses)
    missing = "0b5c2b8e-6f5d-4d8a-9a51-3c2f1e0d9a77"

    hidden = problem(promote(client_of(outsider), "support-bot", someone_elses), 404)
    absent = problem(
        client_of(outsider).post(
            f"{MODELS}/support-bot/versions", {"run_id": missing}, format="json"
        ),
        404,
    )

    assert hidden["detail"] == f"no run {someone_elses.id}"
    assert absent["detail"] == f"no run {missing}"
    assert registry_rows() == (0, 0, 0, 0)


def test_a_user_may_promote_their_own_run_without_seeing_everyone_elses(
    demo_dataset: Dataset,
) -> None:
    launcher = member("add_modelversion")
    run = trained_run(demo_dataset, owner=launcher)
    export_of(run)

    assert promote(client_of(launcher), "support-bot", run).status_code == 201


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("Support Bot", {}, "model"),  # upper case and a space
        ("-support", {}, "model"),
        ("s" * 101, {}, "model"),
        ("support-bot", {"run_id": "not-a-uuid"}, "run_id"),
        ("support-bot", {"export_id": "nope"}, "export_id"),
        ("support-bot", {"description": "x" * 10_001}, "description"),
        ("support-bot", {"exportid": "typo"}, "exportid"),
    ],
)
def test_bad_promotions_are_a_400_naming_the_field_and_write_nothing(
    api: APIClient, demo_dataset: Dataset, name: str, body: dict[str, Any], field: str
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)

    response = api.post(f"{MODELS}/{name}/versions", {"run_id": str(run.id), **body}, format="json")

    assert problem(response, 400)["errors"][0]["field"] == field
    assert registry_rows() == (0, 0, 0, 0)


# Reading


def test_the_model_list_and_detail_count_versions_and_show_aliases(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    for step in (2, 4, 6):
        promote(api, "support-bot", run, export_id=str(export_of(run, step=step).id))
    promote(api, "empty-later", run, export_id=str(RunExport.objects.get(step=2).id))
    api.put(f"{MODELS}/support-bot/aliases/production", {"version": 2}, format="json")

    listed = api.get(MODELS).json()
    detail = api.get(f"{MODELS}/support-bot").json()

    assert [m["name"] for m in listed] == ["empty-later", "support-bot"]
    assert listed[1] == detail
    assert detail["version_count"] == 3
    assert detail["latest_version"] == 3
    assert detail["aliases"] == {"production": 2}
    assert (
        detail["versions_url"] == "http://testserver/api/tunix/registry/models/support-bot/versions"
    )
    versions = api.get(detail["versions_url"]).json()
    assert [v["number"] for v in versions] == [3, 2, 1]
    assert [v["aliases"] for v in versions] == [[], ["production"], []]


def test_the_registry_is_readable_by_any_member_but_the_run_keeps_its_own_visibility(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset, owner=UserFactory())
    export_of(run)
    promote(api, "support-bot", run)
    reader = client_of(member())  # no permission at all: their own runs only

    version = reader.get(f"{MODELS}/support-bot/versions/1")

    assert version.status_code == 200
    assert version.json()["lineage"]["run_id"] == str(run.id)
    problem(reader.get(version.json()["lineage"]["run_url"]), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/nope/versions",
        "/support-bot/versions/2",
        "/support-bot/versions/0",
        "/support-bot/versions/99999999999999999999",
        "/support-bot/aliases/production",
        "/nope/aliases/latest",
        "/support-bot/aliases/Not%20An%20Alias",
        "/nope/moves",
        "/nope/aliases/production/moves",
        "/BAD%00NAME",
    ],
)
def test_unknown_models_versions_and_aliases_are_404_problems(
    api: APIClient, demo_dataset: Dataset, path: str
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)
    promote(api, "support-bot", run)

    problem(api.get(f"{MODELS}{path}"), 404)


def test_registry_reads_need_a_login(api_client: APIClient) -> None:
    problem(api_client.get(MODELS), 401)


def test_the_versions_of_a_run_are_listed_for_its_page(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run, other = trained_run(demo_dataset), trained_run(demo_dataset)
    export_of(run)
    export_of(other)
    promote(api, "support-bot", run)
    promote(api, "support-bot", other)
    promote(api, "another", run)

    found = selectors.registry_versions_of_run(run=run)

    assert [v.uri for v in found] == ["models:/another/1", "models:/support-bot/1"]


# Aliases


@pytest.fixture
def three_versions(api: APIClient, demo_dataset: Dataset) -> TunixRun:
    run = trained_run(demo_dataset)
    for step in (2, 4, 6):
        promote(api, "support-bot", run, export_id=str(export_of(run, step=step).id))
    return run


def test_an_alias_is_created_moved_and_removed_and_every_move_is_logged(
    api: APIClient, registrar: User, three_versions: TunixRun
) -> None:
    url = f"{MODELS}/support-bot/aliases/production"

    created = api.put(url, {"version": 1}, format="json")
    moved = api.put(url, {"version": 3}, format="json")
    unchanged = api.put(url, {"version": 3}, format="json")
    shown = api.get(url)

    assert created.status_code == 201, created.content
    assert created.json()["version"] == 1
    assert moved.status_code == 200
    assert unchanged.status_code == 200
    assert shown.json() == moved.json() == unchanged.json()
    assert shown.json()["uri"] == "models:/support-bot@production"
    assert shown.json()["version_uri"] == "models:/support-bot/3"
    assert shown.json()["updated_by"] == registrar.username

    assert api.delete(url).status_code == 204
    problem(api.get(url), 404)

    log = api.get(f"{url}/moves").json()
    assert [(m["from_version"], m["to_version"]) for m in log] == [(3, None), (1, 3), (None, 1)]
    assert {m["moved_by"] for m in log} == {registrar.username}
    assert [m["alias"] for m in api.get(f"{MODELS}/support-bot/moves").json()] == ["production"] * 3


def test_the_alias_list_shows_each_alias_and_the_version_it_names(
    api: APIClient, three_versions: TunixRun
) -> None:
    api.put(f"{MODELS}/support-bot/aliases/production", {"version": 2}, format="json")
    api.put(f"{MODELS}/support-bot/aliases/candidate", {"version": 3}, format="json")

    listed = api.get(f"{MODELS}/support-bot/aliases").json()

    assert [(a["alias"], a["version"]) for a in listed] == [("candidate", 3), ("production", 2)]
    assert listed[0]["url"] == (
        "http://testserver/api/tunix/registry/models/support-bot/aliases/candidate"
    )


def test_latest_names_the_highest_version_without_being_stored(
    api: APIClient, demo_dataset: Dataset, three_versions: TunixRun
) -> None:
    latest = api.get(f"{MODELS}/support-bot/aliases/latest")

    assert latest.status_code == 200
    assert (latest.json()["version"], latest.json()["version_uri"]) == (3, "models:/support-bot/3")
    assert latest.json()["uri"] == "models:/support-bot@latest"
    promote(api, "support-bot", three_versions, export_id=str(export_of(three_versions, 10).id))
    assert api.get(f"{MODELS}/support-bot/aliases/latest").json()["version"] == 4
    assert not ModelAlias.objects.exists()


@pytest.mark.parametrize(
    ("alias", "body", "field", "says"),
    [
        ("latest", {"version": 1}, "alias", "reserved"),
        ("Production", {"version": 1}, "alias", "not an alias name"),
        ("3", {"version": 1}, "alias", "not an alias name"),
        ("production", {"version": 0}, "version", ""),
        ("production", {"version": "one"}, "version", ""),
        ("production", {}, "version", ""),
        ("production", {"version": 1, "note": "x"}, "note", ""),
    ],
)
def test_bad_alias_requests_are_a_400_naming_the_field_and_log_nothing(
    api: APIClient,
    three_versions: TunixRun,
    alias: str,
    body: dict[str, Any],
    field: str,
    says: str,
) -> None:
    before = registry_rows()

    response = api.put(f"{MODELS}/support-bot/aliases/{alias}", body, format="json")

    details = problem(response, 400)
    assert details["errors"][0]["field"] == field
    assert says in details["detail"]
    assert registry_rows() == before


def test_removing_latest_is_a_400_saying_it_is_reserved(
    api: APIClient, three_versions: TunixRun
) -> None:
    body = problem(api.delete(f"{MODELS}/support-bot/aliases/latest"), 400)
    assert body["errors"][0]["field"] == "alias"
    assert "reserved" in body["detail"]


def test_an_alias_of_an_unknown_version_or_model_is_a_404_and_logs_nothing(
    api: APIClient, three_versions: TunixRun
) -> None:
    before = registry_rows()

    version = problem(
        api.put(f"{MODELS}/support-bot/aliases/production", {"version": 9}, format="json"), 404
    )
    model = problem(
        api.put(f"{MODELS}/nope/aliases/production", {"version": 1}, format="json"), 404
    )

    assert version["detail"] == "model 'support-bot' has no version 9"
    assert model["detail"] == "no registered model 'nope'"
    assert registry_rows() == before


def test_removing_an_unknown_alias_is_a_404_naming_it(
    api: APIClient, three_versions: TunixRun
) -> None:
    body = problem(api.delete(f"{MODELS}/support-bot/aliases/staging"), 404)
    assert body["detail"] == "model 'support-bot' has no alias 'staging'"
    assert not AliasMove.objects.exists()


# Deletion


def test_deleting_a_version_an_alias_names_is_a_409_naming_the_aliases_and_deletes_nothing(
    api: APIClient, three_versions: TunixRun
) -> None:
    api.put(f"{MODELS}/support-bot/aliases/production", {"version": 2}, format="json")
    api.put(f"{MODELS}/support-bot/aliases/candidate", {"version": 2}, format="json")

    body = problem(api.delete(f"{MODELS}/support-bot/versions/2"), 409)

    assert "aliases candidate, production name it" in body["detail"]
    assert ModelVersion.objects.filter(number=2).exists()


def test_deleting_a_version_runs_trained_from_is_a_409_naming_the_runs_and_their_count(
    api: APIClient, demo_dataset: Dataset, three_versions: TunixRun
) -> None:
    version = ModelVersion.objects.get(number=1)
    continued = [
        TunixRunFactory(dataset=demo_dataset, base_version=version, base_export=version.export)
        for _ in range(7)
    ]

    body = problem(api.delete(f"{MODELS}/support-bot/versions/1"), 409)

    assert "7 runs trained from it" in body["detail"]
    assert "and 2 more" in body["detail"]
    named = [run for run in continued if str(run.id) in body["detail"]]
    assert len(named) == 5
    assert ModelVersion.objects.filter(number=1).exists()


def test_deleting_an_unused_version_removes_it_and_its_samples_and_keeps_the_export(
    api: APIClient, three_versions: TunixRun
) -> None:
    version = ModelVersion.objects.get(number=3)
    Sample.objects.create(version=version, prompt="hi", max_new_tokens=4, temperature=0.0)

    response = api.delete(f"{MODELS}/support-bot/versions/3")

    assert response.status_code == 204
    problem(api.get(f"{MODELS}/support-bot/versions/3"), 404)
    assert not Sample.objects.exists()
    assert RunExport.objects.filter(id=version.export_id).exists()
    assert api.get(f"{MODELS}/support-bot").json()["latest_version"] == 2


def test_a_deleted_version_number_is_never_given_again(
    api: APIClient, three_versions: TunixRun
) -> None:
    api.delete(f"{MODELS}/support-bot/versions/3")

    response = promote(
        api, "support-bot", three_versions, export_id=str(export_of(three_versions, 10).id)
    )

    assert response.json()["number"] == 4


def test_deleting_an_unknown_version_is_a_404(api: APIClient, three_versions: TunixRun) -> None:
    problem(api.delete(f"{MODELS}/support-bot/versions/7"), 404)
    assert ModelVersion.objects.count() == 3


def test_a_model_is_deleted_only_once_it_has_no_versions(
    api: APIClient, demo_dataset: Dataset
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)
    promote(api, "support-bot", run)

    refused = problem(api.delete(f"{MODELS}/support-bot"), 409)
    assert "1 version" in refused["detail"]
    assert api.delete(f"{MODELS}/support-bot/versions/1").status_code == 204
    assert api.delete(f"{MODELS}/support-bot").status_code == 204
    assert not RegisteredModel.objects.exists()


def test_a_models_description_is_edited_with_patch(api: APIClient, demo_dataset: Dataset) -> None:
    run = trained_run(demo_dataset)
    export_of(run)
    promote(api, "support-bot", run)

    response = api.patch(f"{MODELS}/support-bot", {"description": "answers tickets"}, format="json")

    assert response.status_code == 200
    assert response.json()["description"] == "answers tickets"
    assert RegisteredModel.objects.get().description == "answers tickets"
    too_long = api.patch(f"{MODELS}/support-bot", {"description": "x" * 10_001}, format="json")
    assert problem(too_long, 400)["errors"][0]["field"] == "description"


# Permissions


def test_a_member_without_the_registry_permissions_reads_but_writes_nothing(
    api: APIClient, demo_dataset: Dataset, operator: User
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)
    export_of(run, step=10)
    promote(api, "support-bot", run)
    before = registry_rows()
    # An operator launches and exports runs, but has no registry permission.
    viewer = client_of(operator)

    assert viewer.get(f"{MODELS}/support-bot/versions").status_code == 200
    writes = [
        viewer.post(f"{MODELS}/support-bot/versions", {"run_id": str(run.id)}, format="json"),
        viewer.post(f"{MODELS}/other/versions", {}, format="json"),  # 403 before the body
        viewer.put(f"{MODELS}/support-bot/aliases/production", {"version": 1}, format="json"),
        viewer.delete(f"{MODELS}/support-bot/aliases/production"),
        viewer.delete(f"{MODELS}/support-bot/versions/1"),
        viewer.patch(f"{MODELS}/support-bot", {"description": "mine"}, format="json"),
        viewer.delete(f"{MODELS}/support-bot"),
    ]
    for response in writes:
        problem(response, 403)
    assert registry_rows() == before


def test_promoting_and_managing_are_separate_permissions(demo_dataset: Dataset) -> None:
    promoter = member("view_tunixrun", "add_modelversion")
    run = trained_run(demo_dataset)
    export_of(run)
    client = client_of(promoter)

    assert promote(client, "support-bot", run).status_code == 201
    refused = client.put(f"{MODELS}/support-bot/aliases/production", {"version": 1}, format="json")
    assert "runs.change_registeredmodel" in problem(refused, 403)["detail"]


def test_the_system_may_promote_and_move_aliases_through_the_services(
    demo_dataset: Dataset,
) -> None:
    run = trained_run(demo_dataset)
    export_of(run)

    version, created = services.registry_promote(user=None, model_name="nightly", run_id=run.id)
    alias, alias_created = services.registry_alias_set(
        user=None, model_name="nightly", alias="production", number=version.number
    )

    assert (created, alias_created) == (True, True)
    assert version.promoted_by is None
    assert alias.version == version
    assert AliasMove.objects.get().moved_by is None
