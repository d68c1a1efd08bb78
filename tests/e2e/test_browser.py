"""A user launches runs from the browser and watches them finish, without reloading."""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from runs import services
from runs.models import RunStatus, TunixRun
from tests.support import routes
from tests.support.clusters import FAKE_TRAINER, REPO_ROOT, QCluster, start_clusters

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture
def cluster_factory(tmp_path: Path, settings: Any) -> Iterator[Any]:
    """Starts qclusters whose local mode runs the fake trainer (``real=True``: the project's
    Tunix trainer). The web side accepts the fake trainer's model ids too."""
    started: list[Iterator[list[QCluster]]] = []
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, str(FAKE_TRAINER)]

    def start(real: bool = False) -> QCluster:
        env: dict[str, str] = {"TUNIX_TRAINER_COMMAND": ""} if real else {}
        group = start_clusters(tmp_path, 1, **env)
        started.append(group)
        return next(group)[0]

    yield start
    for group in started:
        next(group, None)


def launch(
    page: Page, live_url: str, *, model_id: str, mode: str, fields: dict[str, str] | None = None
) -> TunixRun:
    page.goto(f"{live_url}/runs/new")
    for label, value in (fields or {}).items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Dataset", exact=True).select_option("tunix-demo-v1")
    page.get_by_label("Model id").fill(model_id)
    page.get_by_label("Mode", exact=True).select_option(mode)
    page.get_by_label("Queue for a worker").check()
    page.get_by_test_id("launch-submit").click()
    page.wait_for_url(f"{live_url}/")
    return TunixRun.objects.order_by("-queued_at").first()  # type: ignore[return-value]


def mark_page(page: Page) -> None:
    """A flag that only survives as long as the page is not reloaded."""
    page.evaluate("window.__noReload = true")


def still_same_page(page: Page) -> bool:
    return bool(page.evaluate("window.__noReload === true"))


def test_async_runs_go_live_from_pending_to_done_without_reload(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
) -> None:
    page = logged_in
    dry = launch(page, live_server.url, model_id="google/gemma-3-270m", mode="dry-run")
    training = launch(page, live_server.url, model_id="fake/sleep-4", mode="local")
    expect(page.get_by_test_id(f"run-row-{dry.id}")).to_be_visible()
    dry_badge = page.get_by_test_id(f"run-status-{dry.id}")
    train_badge = page.get_by_test_id(f"run-status-{training.id}")
    expect(dry_badge).to_have_text("pending")
    expect(train_badge).to_have_text("pending")
    mark_page(page)
    cluster_factory()  # a worker comes up only now: both rows must update by themselves
    expect(train_badge).to_have_text("running", timeout=20_000)
    expect(dry_badge).to_have_text("completed", timeout=20_000)
    page.screenshot(path=str(screenshot_dir / "run-list-live.png"), full_page=True)
    expect(train_badge).to_have_text("completed", timeout=30_000)
    assert still_same_page(page)
    page.screenshot(path=str(screenshot_dir / "run-list.png"), full_page=True)


def test_a_failing_run_shows_failed_with_its_reason(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
) -> None:
    page = logged_in
    run = launch(page, live_server.url, model_id="fake/exit-3", mode="local")
    page.goto(f"{live_server.url}/runs/{run.id}")
    mark_page(page)
    cluster_factory()
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("failed", timeout=30_000)
    reason = page.get_by_test_id(f"run-reason-{run.id}")
    expect(reason).to_contain_text("nonzero_exit")
    expect(reason).to_contain_text("exited with code 3")
    expect(page.get_by_text("something went wrong")).to_be_visible()
    assert still_same_page(page)
    page.screenshot(path=str(screenshot_dir / "run-detail-failed.png"), full_page=True)


def test_cancel_a_pending_run(
    logged_in: Page, live_server: Any, demo_dataset: Any, screenshot_dir: Path
) -> None:
    page = logged_in
    run = launch(page, live_server.url, model_id="google/gemma-3-270m", mode="dry-run")
    page.goto(f"{live_server.url}/runs/{run.id}")
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("pending")
    page.get_by_test_id("cancel-run").click()
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("cancelled")
    expect(page.get_by_text("Run cancelled.")).to_be_visible()
    assert TunixRun.objects.get(id=run.id).status == RunStatus.CANCELLED


def test_polling_stops_once_the_run_is_terminal(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
) -> None:
    page = logged_in
    run = launch(page, live_server.url, model_id="fake/ok", mode="local")
    polls: list[tuple[str, float]] = []

    def record(request: Request) -> None:
        if re.search(rf"/runs/{run.id}/live$", request.url):
            polls.append((request.url, page.evaluate("Date.now()")))

    page.on("request", record)
    page.goto(f"{live_server.url}/runs/{run.id}")
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("pending")
    cluster_factory()
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("completed", timeout=30_000)
    expect(page.get_by_text("step 3/3")).to_be_visible()
    seen = len(polls)
    assert seen >= 1  # it did poll while the run was active
    page.wait_for_timeout(3_500)  # more than three poll periods of 1 s
    assert len(polls) == seen, "the page kept polling after the run finished"
    page.screenshot(path=str(screenshot_dir / "run-detail.png"), full_page=True)


def test_dataset_upload_shows_validation_errors_inline(
    logged_in: Page, live_server: Any, tmp_path: Path, screenshot_dir: Path
) -> None:
    page = logged_in
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "no completion"}\n')
    page.goto(f"{live_server.url}/datasets")
    page.get_by_label("Key", exact=True).fill("browser-v1")
    page.get_by_label("File", exact=True).set_input_files(str(bad))
    page.get_by_test_id("upload-submit").click()
    expect(page.get_by_test_id("error-file")).to_contain_text("line 2: missing field 'completion'")
    page.screenshot(path=str(screenshot_dir / "datasets-error.png"), full_page=True)


def test_polling_backs_off_while_the_server_errors(
    logged_in: Page, live_server: Any, demo_dataset: Any
) -> None:
    page = logged_in
    run = launch(page, live_server.url, model_id="google/gemma-3-270m", mode="dry-run")
    sent: list[float] = []
    failing = True

    def answer(route: Any) -> None:
        sent.append(time.monotonic())
        if failing:
            route.fulfill(status=500, body="down for maintenance")
        else:
            route.continue_()

    page.route(re.compile(rf".*/runs/{run.id}/live$"), answer)
    page.goto(f"{live_server.url}/runs/{run.id}")
    wait_until = time.monotonic() + 9
    while time.monotonic() < wait_until:
        page.wait_for_timeout(250)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # 1 s polling; after each failure the wait doubles (2 s, 4 s, …), so 9 s hold few requests.
    assert 2 <= len(sent) <= 5, sent
    assert max(gaps) >= 3.5, gaps
    failing = False
    services.run_cancel(run_id=run.id)
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("cancelled", timeout=20_000)


def test_the_loss_curve_grows_while_the_detail_page_polls(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
) -> None:
    page = logged_in
    run = launch(page, live_server.url, model_id="fake/progress-30", mode="local")
    page.goto(f"{live_server.url}/runs/{run.id}")
    mark_page(page)
    cluster_factory()
    chart = page.get_by_test_id("loss-chart")
    expect(chart).to_be_visible(timeout=30_000)
    first = int(chart.get_attribute("data-points") or 0)
    expect(page.get_by_test_id(f"run-progress-{run.id}")).to_contain_text("of 30")
    # Still running: a later poll brings more points into the same page.
    # (Not wait_for_function: its string predicate is an eval, which the CSP refuses.)
    expect(chart).not_to_have_attribute("data-points", str(first), timeout=30_000)
    assert int(chart.get_attribute("data-points") or 0) > first
    page.screenshot(path=str(screenshot_dir / "run-detail-training.png"), full_page=True)
    status = page.get_by_test_id(f"run-status-{run.id}")
    expect(status).to_have_text("completed", timeout=40_000)
    expect(chart).to_have_attribute("data-points", "30")
    expect(page.get_by_text("Final metrics")).to_be_visible()
    assert still_same_page(page)


def test_a_real_tiny_training_from_the_launch_page_to_its_checkpoint(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
    settings: Any,
    tunix_runtime: None,
) -> None:
    """The demo path: the tiny preset trains for real with Tunix while its page polls."""
    settings.TUNIX_TRAINER_COMMAND = None  # the web side checks models as in production
    page = logged_in
    page.goto(f"{live_server.url}/runs/new")
    expect(page.get_by_label("Model id")).to_have_value("tunix-rt/tiny-llama3")  # the default
    run = launch(
        page,
        live_server.url,
        model_id="tunix-rt/tiny-llama3",
        mode="local",
        fields={"Num epochs": "6"},  # 48 steps: several polls while it trains
    )
    page.goto(f"{live_server.url}/runs/{run.id}")
    mark_page(page)
    cluster_factory(real=True)
    progress = page.get_by_test_id(f"run-progress-{run.id}")
    expect(progress).to_contain_text("of 48", timeout=60_000)
    chart = page.get_by_test_id("loss-chart")
    expect(chart).to_be_visible(timeout=60_000)
    first = int(chart.get_attribute("data-points") or 0)
    assert first < 48
    # (Not wait_for_function: its string predicate is an eval, which the CSP refuses.)
    expect(chart).not_to_have_attribute("data-points", str(first), timeout=60_000)
    assert int(chart.get_attribute("data-points") or 0) > first
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("completed", timeout=120_000)
    expect(chart).to_have_attribute("data-points", "48")
    expect(page.get_by_text("Final metrics")).to_be_visible()
    files = page.get_by_test_id("artifacts")
    expect(files).to_contain_text("checkpoints/attempt-1/48/")
    expect(files).to_contain_text("metrics/attempt-1/events.out.tfevents.")
    assert still_same_page(page)
    page.screenshot(path=str(screenshot_dir / "run-detail-real-training.png"), full_page=True)


@pytest.mark.timeout(300)
@pytest.mark.database_independent  # a real training: the PostgreSQL pass runs it once
def test_a_real_grpo_run_from_its_launch_tab_charts_its_reward(
    logged_in: Page,
    live_server: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
    settings: Any,
    tunix_runtime: None,
) -> None:
    """The GRPO tab shows GRPO's fields and datasets only; the run it launches trains for real
    and its page charts the mean reward and the KL divergence while it polls."""
    settings.TUNIX_TRAINER_COMMAND = None
    with (REPO_ROOT / "runs" / "demo" / "tunix-demo-math-v1.jsonl").open("rb") as handle:
        services.dataset_import(key="math-v1", source=handle)
    page = logged_in
    page.goto(f"{live_server.url}/runs/new")
    expect(page.get_by_label("Num generations", exact=True)).to_have_count(0)
    page.get_by_test_id("algorithm-grpo").click()
    page.wait_for_url(f"{live_server.url}/runs/new?algorithm=grpo")
    expect(page.get_by_label("Eval max items", exact=True)).to_have_count(0)
    # Longer completions lose reward (length_penalty past 256 characters): the tiny model
    # learns to stop sooner, a curve that moves within a few steps.
    for label, value in {
        "Max steps": "12",
        "Batch size": "2",
        "Num generations": "4",
        "Max new tokens": "384",
    }.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Reward", exact=True).select_option("length_penalty")
    page.get_by_label("Dataset", exact=True).select_option("math-v1")
    page.get_by_label("Mode", exact=True).select_option("local")
    page.get_by_label("Queue for a worker").check()
    page.get_by_test_id("launch-submit").click()
    page.wait_for_url(f"{live_server.url}/")
    run = TunixRun.objects.get()
    assert (run.algorithm, run.config["reward"]) == ("grpo", "length_penalty")
    page.goto(f"{live_server.url}/runs/{run.id}")
    cluster_factory(real=True)
    reward = page.get_by_test_id("reward-mean-chart")
    expect(reward).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("completed", timeout=240_000)
    expect(reward).to_have_attribute("data-points", "12")
    expect(page.get_by_test_id("kl-chart")).to_be_visible()
    expect(page.get_by_test_id("run-algorithm")).to_have_text("GRPO")
    page.screenshot(path=str(screenshot_dir / "run-grpo.png"), full_page=True)


@pytest.mark.timeout(420)
@pytest.mark.database_independent  # real trainings: the PostgreSQL pass runs it once
def test_a_finished_training_is_exported_promoted_tried_and_trained_from(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    engineer: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
    settings: Any,
    tunix_runtime: None,
) -> None:
    """The loop after a training, all in the browser against a real worker: export the run
    from its page, promote the export to a registered model, try the version with a prompt
    (the answer appears in place), point an alias at it, and launch a run from the version,
    which trains for real from the exported weights."""
    from django.contrib.auth.models import Permission

    from runs.models import ModelVersion, RunExport

    settings.TUNIX_TRAINER_COMMAND = None
    engineer.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="runs",
            codename__in=["add_modelversion", "change_registeredmodel"],
        )
    )
    page = logged_in
    run = launch(
        page, live_server.url, model_id="tunix-rt/tiny-llama3", mode="local",
        fields={"Max steps": "4"},
    )  # fmt: skip
    cluster_factory(real=True)
    page.goto(f"{live_server.url}/runs/{run.id}")
    expect(page.get_by_test_id(f"run-status-{run.id}")).to_have_text("completed", timeout=120_000)

    # The section arrives with the fragment's last render: no reload.
    page.get_by_test_id("export-submit").click()
    export = RunExport.objects.get(run=run)
    expect(page.get_by_test_id(f"export-status-{export.id}")).to_have_text(
        "completed", timeout=120_000
    )
    page.get_by_test_id(f"promote-model-{export.id}").fill("tiny-demo")
    page.get_by_test_id(f"promote-submit-{export.id}").click()
    page.wait_for_url(f"{live_server.url}/registry/tiny-demo/1")
    expect(page.get_by_test_id("version-uri")).to_have_text("models:/tiny-demo/1")

    mark_page(page)
    page.get_by_test_id("try-prompt").fill("Hello")
    page.get_by_test_id("try-tokens").fill("16")
    page.get_by_test_id("try-submit").click()
    completion = page.locator("[data-testid^=sample-completion-]")
    expect(completion).to_be_visible(timeout=120_000)
    expect(page.locator("[data-testid^=sample-time-]")).to_contain_text("Answered in")
    assert still_same_page(page)  # htmx swapped the answer in
    page.screenshot(path=str(screenshot_dir / "registry-version.png"), full_page=True)

    page.goto(f"{live_server.url}/registry/tiny-demo")
    page.get_by_test_id("alias-name").fill("production")
    page.get_by_test_id("alias-submit").click()
    expect(page.get_by_test_id("alias-version-production")).to_have_text("v1")
    page.screenshot(path=str(screenshot_dir / "registry-model.png"), full_page=True)

    page.goto(f"{live_server.url}/registry/tiny-demo/1")
    page.get_by_test_id("version-train").click()
    expect(page.get_by_label("Model id")).to_have_value("models:/tiny-demo/1")
    page.get_by_label("Max steps", exact=True).fill("4")
    page.get_by_label("Dataset", exact=True).select_option("tunix-demo-v1")
    page.get_by_label("Mode", exact=True).select_option("local")
    page.get_by_label("Queue for a worker").check()
    page.get_by_test_id("launch-submit").click()
    page.wait_for_url(f"{live_server.url}/")
    continued = TunixRun.objects.order_by("-queued_at").first()
    assert continued is not None
    assert continued.base_version == ModelVersion.objects.get()
    page.goto(f"{live_server.url}/runs/{continued.id}")
    expect(page.get_by_test_id(f"run-status-{continued.id}")).to_have_text(
        "completed", timeout=120_000
    )


def test_no_page_breaks_the_content_security_policy(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    engineer: Any,
    browser: Browser,
    settings: Any,
) -> None:
    """Every page the URLconf routes (tests/support/routes.py: the app's pages and fragments,
    the browsable API, the API docs, the admin, the login pages) runs under the strict CSP: the
    browser reports no violation, the detail page polls its fragment, the API docs render."""
    engineer.is_staff = engineer.is_superuser = True  # the admin's pages too
    engineer.save()
    # A page waits for 500 ms of network quiet. Polling every second, a pending run's page
    # never gets it once eight tabs slow each poll past half a second; poll less often here.
    settings.TUNIX_POLL_SECONDS = 5
    site = routes.build_site(dataset=demo_dataset)
    found = routes.pages(site)
    violations: list[str] = []

    def visit(context: Any, answers: list[routes.Answer]) -> None:
        # Several tabs load at once (the live server is threaded); each page is done when
        # the network has been idle for 500 ms, after the scripts' own requests and swaps.
        tabs = [context.new_page() for _ in range(8)]
        for tab in tabs:
            tab.on(
                "console",
                lambda msg, tab=tab: (
                    violations.append(f"{tab.url}: {msg.text}")
                    if "Content Security Policy" in msg.text
                    else None
                ),
            )
        for start in range(0, len(answers), len(tabs)):
            loading = list(zip(tabs, answers[start : start + len(tabs)], strict=False))
            for tab, answer in loading:
                tab.goto(f"{live_server.url}{answer.url}", wait_until="commit")
            for tab, _ in loading:
                # Eight pages at once on a loaded two-core machine (SQLite serialising their
                # writes) can take longer than the default 30 s to settle.
                try:
                    tab.wait_for_load_state("networkidle", timeout=60_000)
                except PlaywrightTimeoutError as exc:
                    raise AssertionError(f"{tab.url} never went quiet") from exc
        for tab in tabs:
            tab.close()

    visit(logged_in.context, found.member)
    anonymous = browser.new_context()
    visit(anonymous, found.anonymous)
    anonymous.close()

    page = logged_in
    run_id = site.values["run_id"]
    page.goto(f"{live_server.url}/runs/{run_id}")
    # The detail page polls its fragment (htmx swaps it in) at least once.
    with page.expect_response(lambda r: r.url.endswith(f"/runs/{run_id}/live")):
        pass
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator("#swagger-ui .info")).to_be_visible(timeout=20_000)
    page.goto(f"{live_server.url}/admin/runs/tunixrun/{run_id}/change/")
    expect(page.locator("#content")).to_be_visible()
    assert len(found.member) > 50  # the sweep did reach the admin's pages
    assert violations == []


def test_a_sweep_page_goes_from_running_to_done_without_reload(
    logged_in: Page,
    live_server: Any,
    demo_dataset: Any,
    engineer: Any,
    cluster_factory: Any,
    screenshot_dir: Path,
) -> None:
    """Four trials of the fake trainer, two at a time: the page polls while they train, then
    shows the best trial, the charts, and stops."""
    page = logged_in
    sweep = services.sweep_create(
        user=engineer,
        request=services.SweepRequest(
            base=services.RunRequest(
                dataset_key="tunix-demo-v1", model_id="fake/tune-6", mode="local"
            ),
            space={
                "learning_rate": {"low": 1e-5, "high": 1e-1, "log": True},
                "lora_rank": {"choices": [4, 8, 16]},
            },
            metric="eval_loss",
            n_trials=4,
            concurrency=2,
            seed=11,
        ),
    )
    page.goto(f"{live_server.url}/sweeps/{sweep.id}")
    status = page.get_by_test_id("sweep-status")
    expect(status).to_have_text("running")
    expect(page.get_by_test_id("sweep-progress-text")).to_have_text("0 of 4")
    mark_page(page)
    cluster_factory()  # the trials run only now: the page must follow by itself
    expect(status).to_have_text("completed", timeout=120_000)
    expect(page.get_by_test_id("sweep-progress-text")).to_have_text("4 of 4")
    expect(page.get_by_test_id("best-trial")).to_have_count(1)
    expect(page.get_by_test_id("param-chart-learning-rate")).to_have_attribute("data-points", "4")
    expect(page.get_by_test_id("parallel-chart")).to_have_attribute("data-lines", "4")
    expect(page.get_by_test_id("sweep-curves-legend")).to_contain_text("trial 3 eval loss")
    assert still_same_page(page)
    page.screenshot(path=str(screenshot_dir / "sweep.png"), full_page=True)
    page.get_by_test_id("launch-best").click()
    expect(page.get_by_label("Model id")).to_have_value("fake/tune-6")
    expect(page.get_by_label("Mode", exact=True)).to_have_value("local")
    page.goto(f"{live_server.url}/sweeps")
    expect(page.get_by_test_id(f"sweep-progress-{sweep.id}")).to_have_text("4 of 4")
    page.get_by_test_id("start-sweep").locator("summary").click()
    page.screenshot(path=str(screenshot_dir / "sweep-list.png"), full_page=True)
