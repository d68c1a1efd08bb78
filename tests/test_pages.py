"""Server-rendered pages: login, list, launch, detail, datasets; polling fragments."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_q.models import OrmQ

from runs import services
from runs.models import Dataset, RunStatus, TunixRun
from tests.factories import TunixRunFactory, UserFactory
from tests.support.pages import html

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client: Client) -> None:
    for url in ("/", "/runs/new", "/datasets", "/runs/rows"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_login_page_logs_in(client: Client) -> None:
    UserFactory(username="ada")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'name="password"' in html(page)
    response = client.post(
        "/accounts/login/", {"username": "ada", "password": "correct-horse-battery"}
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    bad = Client().post("/accounts/login/", {"username": "ada", "password": "nope"})
    assert "didn&#x27;t match" in html(bad) or "didn't match" in html(bad)


def test_run_list_shows_rows_newest_first_with_stable_test_ids(web: Client) -> None:
    older = TunixRunFactory(completed=True)
    newer = TunixRunFactory()
    page = html(web.get("/"))
    assert page.index(f'data-testid="run-row-{newer.id}"') < page.index(
        f'data-testid="run-row-{older.id}"'
    )
    assert f'data-testid="run-status-{older.id}">completed<' in page
    assert 'hx-trigger="every 4s"' in page  # something shown is still pending
    assert "/static/" in page
    assert "htmx" in page
    assert "cdn" not in page.lower()
    assert "unpkg" not in page.lower()


def test_list_without_active_runs_does_not_poll(web: Client) -> None:
    TunixRunFactory(completed=True)
    assert "hx-trigger" not in html(web.get("/"))


def test_empty_state_invites_a_launch(web: Client) -> None:
    assert "No runs match" in html(web.get("/"))


def test_filters_narrow_the_list(web: Client) -> None:
    done = TunixRunFactory(completed=True)
    waiting = TunixRunFactory()
    page = html(web.get("/", {"status": "completed"}))
    assert str(done.id) in page
    assert str(waiting.id) not in page
    by_dataset = html(web.get("/", {"dataset_key": waiting.dataset.key}))
    assert str(waiting.id) in by_dataset
    assert str(done.id) not in by_dataset


def test_pagination_walks_older_pages(web: Client) -> None:
    runs = [TunixRunFactory(completed=True) for _ in range(30)]
    first = html(web.get("/"))
    assert 'rel="next"' in first
    cursor = first.split("cursor=")[1].split('"')[0]
    second = html(web.get("/", {"cursor": cursor}))
    shown = {str(r.id) for r in runs if f"run-row-{r.id}" in first + second}
    assert len(shown) == 30


def test_rows_fragment_polls_then_stops_with_286(web: Client) -> None:
    run = TunixRunFactory()
    active = web.get("/runs/rows", headers={"HX-Request": "true"})
    assert active.status_code == 200
    assert f"run-row-{run.id}" in html(active)
    etag = active["ETag"]
    unchanged = web.get("/runs/rows", headers={"HX-Request": "true", "If-None-Match": etag})
    assert unchanged.status_code == 304
    claimed = services.run_claim(run_id=run.id, worker_id="w")
    assert claimed is not None
    services.run_finish(
        run_id=run.id, attempt=1, outcome=services.RunOutcome(status="completed", exit_code=0)
    )
    final = web.get("/runs/rows", headers={"HX-Request": "true", "If-None-Match": etag})
    assert final.status_code == 286
    assert f'data-testid="run-status-{run.id}">completed<' in html(final)


def test_detail_shows_everything_and_polls_only_while_active(web: Client) -> None:
    run = TunixRunFactory(
        failed=True, stdout="hello out", stderr="bad things", error_message="boom"
    )
    page = html(web.get(f"/runs/{run.id}"))
    for text in ("hello out", "bad things", "nonzero_exit", "boom", run.model_id, run.dataset.key):
        assert text in page
    assert "hx-trigger" not in page
    assert 'data-testid="run-again"' in page
    pending = TunixRunFactory()
    live = html(web.get(f"/runs/{pending.id}"))
    assert f'hx-get="/runs/{pending.id}/live"' in live
    assert web.get(f"/runs/{pending.id}/live").status_code == 200
    assert web.get(f"/runs/{run.id}/live").status_code == 286


def test_unknown_run_is_404(web: Client) -> None:
    assert web.get("/runs/00000000-0000-0000-0000-000000000000").status_code == 404


def test_launch_async_queues_and_lands_on_the_list(web: Client, demo_dataset: Any) -> None:
    form = html(web.get("/runs/new"))
    assert 'name="learning_rate"' in form
    response = web.post(
        "/runs/new",
        {
            "dataset": "tunix-demo-v1",
            "model_id": "google/gemma-3-270m",
            "mode": "dry-run",
            "execution": "async",
            "batch_size": "4",
        },
        follow=True,
    )
    run = TunixRun.objects.get()
    assert run.status == RunStatus.PENDING
    assert run.config["batch_size"] == 4
    assert OrmQ.objects.count() == 1
    page = html(response)
    assert f'data-testid="run-status-{run.id}">pending<' in page
    assert "queued" in page


def test_launch_sync_runs_at_once(web: Client, demo_dataset: Any) -> None:
    web.post(
        "/runs/new",
        {
            "dataset": "tunix-demo-v1",
            "model_id": "tunix-rt/tiny-llama3",
            "mode": "dry-run",
            "execution": "sync",
        },
    )
    assert TunixRun.objects.get().status == RunStatus.COMPLETED


def test_launch_errors_are_shown_inline_and_create_nothing(web: Client, demo_dataset: Any) -> None:
    response = web.post(
        "/runs/new",
        {
            "dataset": "tunix-demo-v1",
            "model_id": "bad id!",
            "mode": "dry-run",
            "execution": "async",
            "learning_rate": "0",
        },
    )
    page = html(response)
    assert 'data-testid="error-model_id"' in page
    assert 'data-testid="error-learning_rate"' in page
    assert not TunixRun.objects.exists()


def test_launch_shows_every_error_at_once(web: Client, demo_dataset: Any) -> None:
    """An unknown model is refused in the same answer as a bad hyperparameter, not only once
    the hyperparameters are fixed."""
    response = web.post(
        "/runs/new",
        {
            "dataset": "tunix-demo-v1",
            "model_id": "acme/no-such-model",
            "mode": "dry-run",
            "execution": "async",
            "learning_rate": "0",
        },
    )
    assert response.status_code == 200
    page = html(response)
    assert 'data-testid="error-learning_rate"' in page
    assert 'data-testid="error-model_id"' in page
    assert "unknown model &#x27;acme/no-such-model&#x27;" in page
    assert not TunixRun.objects.exists()


def test_launch_accepts_any_model_id_a_custom_trainer_takes(
    web: Client, demo_dataset: Any, settings: Any
) -> None:
    # A custom trainer interprets model ids itself: the form refuses no more than the service.
    settings.TUNIX_TRAINER_COMMAND = ["my-trainer"]
    web.post(
        "/runs/new",
        {
            "dataset": "tunix-demo-v1",
            "model_id": "acme/no-such-model",
            "mode": "dry-run",
            "execution": "async",
        },
    )
    assert TunixRun.objects.get().model_id == "acme/no-such-model"


def test_launch_needs_the_permission(client: Client, user: User, demo_dataset: Any) -> None:
    client.force_login(user)
    assert client.get("/runs/new").status_code == 403
    assert "Launch a run" not in html(client.get("/"))


def test_cancel_and_run_again(web: Client, operator: User, demo_dataset: Any) -> None:
    run = TunixRunFactory(dataset=demo_dataset, created_by=operator)
    response = web.post(f"/runs/{run.id}/cancel", follow=True)
    assert TunixRun.objects.get(id=run.id).status == RunStatus.CANCELLED
    assert "Run cancelled." in html(response)
    again = web.post(f"/runs/{run.id}/again")
    new = TunixRun.objects.exclude(id=run.id).get()
    assert again["Location"] == f"/runs/{new.id}"
    assert (new.model_id, new.status) == (run.model_id, RunStatus.PENDING)
    twice = web.post(f"/runs/{run.id}/cancel", follow=True)
    assert "Could not cancel: run is already cancelled" in html(twice)


def test_cancel_needs_ownership_or_permission(client: Client, user: User) -> None:
    client.force_login(user)
    run = TunixRunFactory(created_by=UserFactory())
    assert client.post(f"/runs/{run.id}/cancel").status_code == 403
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING


def test_forms_need_csrf(operator: User, demo_dataset: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    run = TunixRunFactory(dataset=demo_dataset, created_by=operator)
    assert client.post(f"/runs/{run.id}/cancel").status_code == 403
    assert client.post("/runs/new", {"dataset": "tunix-demo-v1"}).status_code == 403
    page = html(client.get("/"))
    assert 'hx-headers=\'{"X-CSRFToken": "' in page  # htmx posts carry the token


def test_dataset_page_uploads_and_shows_errors_inline(
    web: Client, jsonl: Callable[..., bytes]
) -> None:
    bad = SimpleUploadedFile("d.jsonl", jsonl({"prompt": "a", "completion": "b"}, "{oops"))
    response = web.post("/datasets", {"key": "page-v1", "file": bad})
    assert response.status_code == 400
    assert "line 2: invalid JSON" in html(response)
    assert not Dataset.objects.exists()
    good = SimpleUploadedFile("d.jsonl", jsonl({"prompt": "a", "completion": "b"}))
    done = web.post("/datasets", {"key": "page-v1", "file": good}, follow=True)
    assert 'data-testid="dataset-row-page-v1"' in html(done)
    assert "Imported page-v1: 1 records." in html(done)


def test_the_dataset_page_imports_reasoning_traces_with_or_without_the_steps(
    web: Client, jsonl: Callable[..., bytes]
) -> None:
    trace = {"prompt": "2+2?", "steps": ["add two and two"], "final_answer": "4"}
    for key, reasoning in (("with-steps-v1", "include"), ("answer-only-v1", "omit")):
        upload = SimpleUploadedFile("t.jsonl", jsonl(trace))
        done = web.post("/datasets", {"key": key, "file": upload, "reasoning": reasoning})
        assert done.status_code == 302, html(done)
    stored = {
        d.key: (Path(settings.TUNIX_DATASETS_ROOT) / d.file_path).read_text()
        for d in Dataset.objects.all()
    }
    assert "add two and two" in stored["with-steps-v1"]
    assert "add two and two" not in stored["answer-only-v1"]
    assert json.loads(stored["answer-only-v1"])["completion"] == "4"


def test_favicon_is_served(web: Client) -> None:
    assert web.get("/favicon.ico")["Location"].endswith("favicon.svg")


@pytest.fixture
def run() -> TunixRun:
    """A run a worker has claimed (attempt 1) and not yet finished."""
    run = TunixRunFactory()
    assert services.run_claim(run_id=run.id, worker_id="w") is not None
    return run


def test_a_running_training_shows_its_step_and_loss_and_updates_its_fragments(
    web: Client, run: TunixRun
) -> None:
    beat = {
        "progress": {"step": 3, "total_steps": 20, "loss": 2.5},
        "loss_curve": [[1, 5.5], [2, 3.25], [3, 2.5]],
        "metrics": {},
    }
    assert services.run_heartbeat(run_id=run.id, attempt=1, updates=beat)

    rows = web.get("/runs/rows", headers={"HX-Request": "true"})
    assert f'data-testid="run-step-{run.id}">step 3/20 · loss 2.500<' in html(rows)
    live = web.get(f"/runs/{run.id}/live", headers={"HX-Request": "true"})
    page = html(live)
    assert "step 3 of 20" in page
    assert "2.5000" in page
    assert 'data-testid="loss-chart" data-points="3"' in page
    assert "<polyline points=" in page
    assert "<script" not in page  # the chart is plain SVG

    # The next step is a new version of both fragments, not a 304.
    beat["progress"] = {"step": 4, "total_steps": 20, "loss": 2.0}
    assert services.run_heartbeat(run_id=run.id, attempt=1, updates=beat)
    again = web.get(
        f"/runs/{run.id}/live", headers={"HX-Request": "true", "If-None-Match": live["ETag"]}
    )
    assert again.status_code == 200
    assert "step 4 of 20" in html(again)


def test_a_finished_training_shows_its_final_metrics(web: Client, run: TunixRun) -> None:
    final = {
        "progress": {"step": 20, "total_steps": 20, "loss": 1.25},
        "loss_curve": [[step, 5.0 / step] for step in range(1, 21)],
        "metrics": {"train_loss": 1.25, "eval_loss": 1.5, "steps": 20, "wall_seconds": 7.5},
    }
    services.run_finish(
        run_id=run.id,
        attempt=1,
        outcome=services.RunOutcome(status="completed", exit_code=0, progress=final),
    )
    page = html(web.get(f"/runs/{run.id}"))
    for text in ("Final metrics", "train loss", "1.2500", "eval loss", "7.5 s", "step 20 of 20"):
        assert text in page
    assert 'data-points="20"' in page


def test_the_detail_fragment_changes_when_the_output_grows(web: Client, run: TunixRun) -> None:
    assert services.run_heartbeat(run_id=run.id, attempt=1, updates={"stdout": "loading\n"})
    first = web.get(f"/runs/{run.id}/live", headers={"HX-Request": "true"})
    assert "loading" in html(first)
    same = web.get(
        f"/runs/{run.id}/live", headers={"HX-Request": "true", "If-None-Match": first["ETag"]}
    )
    assert same.status_code == 304
    assert services.run_heartbeat(
        run_id=run.id, attempt=1, updates={"stdout": "loading\nstep 1 done\n"}
    )
    grown = web.get(
        f"/runs/{run.id}/live", headers={"HX-Request": "true", "If-None-Match": first["ETag"]}
    )
    assert grown.status_code == 200
    assert "step 1 done" in html(grown)


TIME = re.compile(r'<time datetime="([^"]+)">([^<]*)</time>')


def shown_times(response: Any) -> list[tuple[str, str]]:
    return TIME.findall(html(response))


def test_every_timestamp_names_its_zone_the_same_way_everywhere(
    web: Client, demo_dataset: Any
) -> None:
    run = TunixRunFactory(completed=True, dataset=demo_dataset)
    hx = {"HX-Request": "true"}
    pages = {
        "list": (web.get("/"), 2),  # the run's queued and started
        "rows": (web.get("/runs/rows", headers=hx), 2),
        "detail": (web.get(f"/runs/{run.id}"), 3),  # queued, started, finished
        "live": (web.get(f"/runs/{run.id}/live", headers=hx), 3),
        "datasets": (web.get("/datasets"), 1),  # when the dataset was added
    }
    for name, (response, at_least) in pages.items():
        times = shown_times(response)
        assert len(times) >= at_least, (name, times)
        for moment, text in times:
            assert moment.endswith("+00:00"), (name, moment)
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text), (name, text)
    queued = run.queued_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    for name in ("list", "rows", "detail", "live"):
        assert queued in [text for _, text in shown_times(pages[name][0])], name


def test_timestamps_follow_the_configured_zone(
    web: Client, demo_dataset: Any, settings: Any
) -> None:
    settings.TIME_ZONE = "Asia/Kolkata"
    run = TunixRunFactory(completed=True, dataset=demo_dataset)
    for response in (web.get("/"), web.get(f"/runs/{run.id}"), web.get("/datasets")):
        times = shown_times(response)
        assert times
        for moment, text in times:
            assert moment.endswith("+05:30")
            assert text.endswith(" IST")
