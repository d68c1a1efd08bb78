"""The pages for using a finished training: its exports and promotion on the run page, the
registry's model and version pages with their alias forms, and the try-it box, with
JavaScript off (plain form posts and redirects) and with htmx (fragments in place)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ

from runs import artifacts
from runs.models import (
    AliasMove,
    ExportStatus,
    ModelAlias,
    ModelVersion,
    RunExport,
    RunMode,
    Sample,
    SampleStatus,
    TunixRun,
)
from tests.factories import TunixRunFactory, UserFactory

pytestmark = pytest.mark.django_db

SHA = "ab" * 32
HTMX = {"HX-Request": "true"}


@pytest.fixture
def registrar(db: None) -> User:
    """Launches runs, reads every run, promotes and manages the registry."""
    member = UserFactory()
    member.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="runs",
            codename__in=[
                "add_tunixrun",
                "view_tunixrun",
                "add_modelversion",
                "change_registeredmodel",
            ],
        )
    )
    return User.objects.get(pk=member.pk)


@pytest.fixture
def page(registrar: User) -> Client:
    client = Client()
    client.force_login(registrar)
    return client


def trained_run(owner: User, *steps: int, **fields: Any) -> TunixRun:
    run: TunixRun = TunixRunFactory(
        completed=True,
        mode=RunMode.LOCAL,
        model_id="tunix-rt/tiny-llama3",
        created_by=owner,
        config={"lora_rank": 0},
        metrics={"eval_loss": 1.25, "rouge_l": 0.5},
        **fields,
    )
    for step in steps or (8,):
        directory = artifacts.run_directory(run) / "checkpoints" / "attempt-1" / str(step)
        directory.mkdir(parents=True)
        (directory / "_CHECKPOINT_METADATA").write_text("{}")
    return run


def completed_export(run: TunixRun, step: int = 8, sha: str = SHA) -> RunExport:
    export: RunExport = RunExport.objects.create(
        run=run,
        step=step,
        status=ExportStatus.COMPLETED,
        sha256=sha,
        size_bytes=1234,
        completed_at=timezone.now(),
    )
    return export


def test_a_finished_training_page_offers_export_and_try_it_and_a_dry_run_page_does_not(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar)
    body = page.get(f"/runs/{run.id}").content.decode()
    assert 'data-testid="use-model"' in body
    assert 'data-testid="no-exports"' in body
    assert 'data-testid="export-form"' in body
    assert 'data-testid="try-form"' in body
    dry: TunixRun = TunixRunFactory(completed=True, mode=RunMode.DRY_RUN, created_by=registrar)
    assert 'data-testid="use-model"' not in page.get(f"/runs/{dry.id}").content.decode()
    failed: TunixRun = TunixRunFactory(failed=True, mode=RunMode.LOCAL, created_by=registrar)
    assert 'data-testid="use-model"' not in page.get(f"/runs/{failed.id}").content.decode()


def test_the_export_form_queues_an_export_and_its_list_polls_until_it_is_written(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar, 4, 8)
    answer = page.post(f"/runs/{run.id}/export", {"step": "4", "weights": "merged"})
    assert answer.status_code == 302
    assert answer["Location"].endswith(f"/runs/{run.id}#use")
    export = RunExport.objects.get(run=run)
    assert (export.step, export.status) == (4, ExportStatus.PENDING)
    assert OrmQ.objects.count() == 1
    body = page.get(f"/runs/{run.id}").content.decode()
    assert f'hx-get="/runs/{run.id}/exports"' in body  # polls while it is written
    assert f'data-testid="export-status-{export.id}">pending' in body

    polled = page.get(f"/runs/{run.id}/exports")
    assert polled.status_code == 200
    RunExport.objects.filter(id=export.id).update(
        status=ExportStatus.COMPLETED, sha256=SHA, size_bytes=10, completed_at=timezone.now()
    )
    done = page.get(f"/runs/{run.id}/exports", HTTP_IF_NONE_MATCH=polled["ETag"])
    assert done.status_code == 286  # htmx swaps it and stops polling
    assert f"/api/tunix/runs/{run.id}/exports/{export.id}/archive" in done.content.decode()


def test_an_unknown_step_in_the_export_form_is_a_message_and_no_export(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar, 8)
    answer = page.post(f"/runs/{run.id}/export", {"step": "5", "weights": "merged"}, follow=True)
    assert "Could not export" in answer.content.decode()
    assert not RunExport.objects.exists()


def test_promoting_an_export_opens_the_version_page_with_its_lineage(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar)
    export = completed_export(run)
    answer = page.post(
        f"/runs/{run.id}/promote", {"model": "tiny-chat", "export": str(export.id)}, follow=True
    )
    assert answer.redirect_chain[-1][0] == "/registry/tiny-chat/1"
    body = answer.content.decode()
    assert "Registered as tiny-chat version 1." in body
    assert 'data-testid="version-uri">models:/tiny-chat/1<' in body
    assert f'href="/runs/{run.id}" data-testid="version-run"' in body
    assert run.dataset.key in body
    assert "?model_id=models%3A%2Ftiny-chat%2F1" in body  # train from this version
    assert f"/api/tunix/runs/{run.id}/exports/{export.id}/archive" in body

    again = page.post(
        f"/runs/{run.id}/promote", {"model": "tiny-chat", "export": str(export.id)}, follow=True
    )
    assert "already tiny-chat version 1" in again.content.decode()
    assert ModelVersion.objects.count() == 1
    run_page = page.get(f"/runs/{run.id}").content.decode()
    assert 'data-testid="run-versions"' in run_page
    assert 'href="/registry/tiny-chat/1"' in run_page


def test_a_bad_model_name_is_refused_on_the_page_and_nothing_is_registered(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar)
    export = completed_export(run)
    answer = page.post(
        f"/runs/{run.id}/promote", {"model": "Not A Name", "export": str(export.id)}, follow=True
    )
    assert "Could not promote: model:" in answer.content.decode()
    assert not ModelVersion.objects.exists()


def test_aliases_are_set_moved_and_removed_from_the_model_page_with_their_log(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar)
    first = completed_export(run, sha="01" * 32)
    second_run = trained_run(registrar)
    second = completed_export(second_run, sha="02" * 32)
    for source, export in ((run, first), (second_run, second)):
        page.post(f"/runs/{source.id}/promote", {"model": "m", "export": str(export.id)})

    page.post("/registry/m/aliases", {"alias": "production", "version": "1"})
    page.post("/registry/m/aliases", {"alias": "production", "version": "2"})
    body = page.get("/registry/m").content.decode()
    assert 'data-testid="alias-version-production">v2<' in body
    assert 'data-testid="alias-moves"' in body
    moves = list(AliasMove.objects.order_by("id").values_list("from_number", "to_number"))
    assert moves == [(None, 1), (1, 2)]

    refused = page.post("/registry/m/2/delete", follow=True)
    assert "Could not delete version 2" in refused.content.decode()
    assert "production" in refused.content.decode()
    assert ModelVersion.objects.filter(number=2).exists()

    page.post("/registry/m/aliases/production/delete")
    assert not ModelAlias.objects.exists()
    assert AliasMove.objects.order_by("-id").values_list("to_number", flat=True)[0] is None
    deleted = page.post("/registry/m/2/delete", follow=True)
    assert deleted.redirect_chain[-1][0] == "/registry/m"
    assert not ModelVersion.objects.filter(number=2).exists()
    listing = page.get("/registry").content.decode()
    assert 'data-testid="registry-model-m"' in listing


def test_try_it_without_javascript_queues_a_sample_and_the_page_shows_it(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar)
    answer = page.post(
        f"/runs/{run.id}/samples", {"prompt": "Hello", "max_new_tokens": "8", "temperature": "0"}
    )
    sample = Sample.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == f"/runs/{run.id}?sample={sample.id}#try-it"
    assert (sample.prompt, sample.max_new_tokens, sample.run_id) == ("Hello", 8, run.id)
    shown = page.get(answer["Location"]).content.decode()
    assert f'data-testid="sample-status-{sample.id}">pending' in shown
    assert f'hx-get="/samples/{sample.id}"' in shown


def test_the_sample_fragment_polls_until_the_worker_answers_then_shows_the_time(
    page: Client, registrar: User
) -> None:
    run = trained_run(registrar)
    answer = page.post(f"/runs/{run.id}/samples", {"prompt": "Hi"}, headers=HTMX)
    sample = Sample.objects.get()
    assert answer.status_code == 200
    assert f'hx-get="/samples/{sample.id}"' in answer.content.decode()  # in place, polling
    pending = page.get(f"/samples/{sample.id}")
    assert pending.status_code == 200
    assert page.get(f"/samples/{sample.id}", HTTP_IF_NONE_MATCH=pending["ETag"]).status_code == 304

    Sample.objects.filter(id=sample.id).update(
        status=SampleStatus.COMPLETED,
        completion="there",
        load_seconds=3.5,
        generate_seconds=0.25,
        completed_at=timezone.now(),
    )
    done = page.get(f"/samples/{sample.id}", HTTP_IF_NONE_MATCH=pending["ETag"])
    assert done.status_code == 286
    body = done.content.decode()
    assert f'data-testid="sample-completion-{sample.id}">there<' in body
    assert "loading and compiling 3.5" in body
    assert "hx-get" not in body


def test_an_empty_prompt_is_refused_and_no_sample_is_queued(page: Client, registrar: User) -> None:
    run = trained_run(registrar)
    with_htmx = page.post(f"/runs/{run.id}/samples", {"prompt": "   "}, headers=HTMX)
    assert 'data-testid="sample-errors"' in with_htmx.content.decode()
    assert "prompt" in with_htmx.content.decode()
    without = page.post(f"/runs/{run.id}/samples", {"prompt": ""}, follow=True)
    assert "Could not sample: prompt" in without.content.decode()
    assert not Sample.objects.exists()
    assert not OrmQ.objects.exists()


def test_a_version_page_has_its_own_try_it_box(page: Client, registrar: User) -> None:
    run = trained_run(registrar)
    export = completed_export(run)
    page.post(f"/runs/{run.id}/promote", {"model": "m", "export": str(export.id)})
    body = page.get("/registry/m/1").content.decode()
    assert 'action="/registry/m/1/samples"' in body
    answer = page.post("/registry/m/1/samples", {"prompt": "Hello"})
    sample = Sample.objects.get()
    assert sample.version is not None
    assert (sample.version.number, sample.run_id) == (1, None)
    assert answer["Location"] == f"/registry/m/1?sample={sample.id}#try-it"
    assert f'data-testid="sample-{sample.id}"' in page.get(answer["Location"]).content.decode()


def test_a_reader_sees_the_registry_but_no_forms_and_cannot_post_them(
    web: Client, registrar: User, user: User
) -> None:
    run = trained_run(registrar)
    export = completed_export(run)
    reader = Client()
    reader.force_login(user)
    admin = Client()
    admin.force_login(registrar)
    admin.post(f"/runs/{run.id}/promote", {"model": "m", "export": str(export.id)})
    body = reader.get("/registry/m").content.decode()
    assert 'data-testid="version-1"' in body
    assert 'data-testid="alias-form"' not in body
    assert reader.post("/registry/m/aliases", {"alias": "a", "version": "1"}).status_code == 403
    assert reader.post("/registry/m/1/delete").status_code == 403
    assert reader.post(f"/runs/{run.id}/samples", {"prompt": "x"}).status_code == 403
    # An operator launches runs but may not promote: no promote form, and a post is a 403.
    promoted = web.post(f"/runs/{run.id}/promote", {"model": "n", "export": str(export.id)})
    assert promoted.status_code == 403
    assert ModelVersion.objects.count() == 1


def test_registry_pages_of_unknown_names_are_404(page: Client) -> None:
    assert page.get("/registry/nope").status_code == 404
    assert page.get("/registry/nope/1").status_code == 404
    assert page.get("/registry/NOT..valid").status_code == 404


def test_train_from_this_version_opens_the_launch_form_filled_in(
    page: Client, demo_dataset: Any
) -> None:
    body = page.get(
        "/runs/new", {"model_id": "models:/m/1", "dataset": demo_dataset.key}
    ).content.decode()
    assert 'value="models:/m/1"' in body
    assert f'<option value="{demo_dataset.key}" selected>' in body
