"""Comparing runs in the browser: tick runs in the list (the ticks survive the list's polling),
press Compare, read the chart and the tables, filter the items to disagreements and page
through them; with JavaScript on and off, and on a phone."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, ViewportSize, expect

from runs.models import RunStatus, TunixRun
from tests.e2e.conftest import PASSWORD
from tests.factories import EvaluatedRunFactory, TunixRunFactory, prediction_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

DEMO = Path(settings.BASE_DIR) / "runs" / "demo" / "tunix-demo-v1.jsonl"
HELD_OUT = range(1, 65, 2)  # 32 of the demo's 64 lines: two pages of items
PHONE: ViewportSize = {"width": 390, "height": 844}


def wrong(completion: str) -> str:
    """The same sentence with its final number off by one; a word spelled the other way."""
    if re.search(r"\d+\.$", completion) is None:
        return completion[::-1]
    return re.sub(r"(\d+)\.$", lambda m: f"{int(m.group(1)) + 1}.", completion)


@pytest.fixture
def compared(demo_dataset: Any, engineer: Any) -> list[TunixRun]:
    """Three trainings of the demo dataset as the list shows them: a good one, one with a lower
    learning rate that gets a quarter of the held-out answers wrong, and one whose generation
    eval was off; and a queued run, so the list keeps polling."""
    records = [json.loads(line) for line in DEMO.read_text().splitlines()]

    def predictions(miss_every: int | None) -> list[dict[str, Any] | None]:
        chosen: list[dict[str, Any] | None] = [None] * len(records)
        for line in HELD_OUT:
            record = records[line - 1]
            answer = record["completion"]
            if miss_every and (line // 2) % miss_every == 0:
                answer = wrong(answer)
            chosen[line - 1] = prediction_record(
                line, answer, reference=record["completion"], prompt=record["prompt"]
            )
        return chosen

    common = {"dataset": demo_dataset, "created_by": engineer, "model_id": "tunix-rt/tiny-llama3"}
    good = EvaluatedRunFactory(
        **common,
        predictions=predictions(None),
        metrics={
            "train_loss": 0.42,
            "eval_loss": 0.61,
            "steps": 48,
            "tokens_per_second": 2210.0,
            "wall_seconds": 21.5,
            "eval_items": 32,
            "eval_seconds": 6.2,
            "exact_match": 1.0,
            "token_f1": 1.0,
            "rouge_l": 1.0,
        },
    )
    slow = EvaluatedRunFactory(
        **common,
        predictions=predictions(4),
        loss_scale=1.6,
        config={**good.config, "learning_rate": 0.001},
        metrics={
            "train_loss": 0.88,
            "eval_loss": 1.02,
            "steps": 48,
            "tokens_per_second": 2350.0,
            "wall_seconds": 20.1,
            "eval_items": 32,
            "eval_seconds": 6.9,
            "exact_match": 0.75,
            "token_f1": 0.94,
            "rouge_l": 0.94,
        },
    )
    unevaluated = EvaluatedRunFactory(
        **common,
        loss_scale=1.2,
        steps=24,
        config={**good.config, "num_epochs": 3, "batch_size": 16},
    )
    TunixRunFactory(dataset=demo_dataset, created_by=engineer)  # pending: the list polls
    return [good, slow, unevaluated]


def short(run: TunixRun) -> str:
    return str(run.id)[:8]


def watch_csp(page: Page, violations: list[str]) -> None:
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )


def test_ticked_runs_survive_the_lists_polling_and_compare_side_by_side(
    logged_in: Page, live_server: Any, compared: list[TunixRun], screenshot_dir: Path
) -> None:
    page = logged_in
    violations: list[str] = []
    watch_csp(page, violations)
    page.goto(f"{live_server.url}/")
    good, slow, _ = compared
    for run in compared:
        page.get_by_label(f"Compare run {short(run)}").check()
    # The queued run starts: the next poll re-renders every row (a swap, not a 304).
    queued = TunixRun.objects.get(status=RunStatus.PENDING)
    with page.expect_response(lambda r: "/runs/rows" in r.url and r.status == 200):
        TunixRun.objects.filter(id=queued.id).update(
            status=RunStatus.RUNNING,
            attempt=1,
            started_at=good.started_at,
            heartbeat_at=good.started_at,
            progress={"step": 3, "total_steps": 48, "loss": 2.5},
        )
    expect(page.get_by_test_id(f"run-step-{queued.id}")).to_contain_text("step 3/48")
    for run in compared:
        expect(page.get_by_test_id(f"pick-{run.id}")).to_be_checked()
    expect(page.get_by_test_id(f"pick-{queued.id}")).not_to_be_checked()

    page.get_by_test_id("compare-button").click()
    page.wait_for_url(re.compile(r"/runs/compare\?ids="))
    assert sorted(re.findall(r"ids=([0-9a-f-]+)", page.url)) == sorted(str(r.id) for r in compared)

    chart = page.get_by_test_id("compare-chart")
    expect(chart).to_be_visible()
    legend = page.get_by_test_id("compare-chart-legend")
    for run in compared:
        expect(legend).to_contain_text(f"{short(run)} train loss")
        expect(legend).to_contain_text(f"{short(run)} eval loss")
    config = page.get_by_test_id("compare-config")
    expect(config).to_contain_text("learning_rate")
    expect(config).to_contain_text("batch_size")
    expect(config).not_to_contain_text("max_seq_length")
    metrics = page.get_by_test_id("compare-metrics")
    best_eval_loss = page.get_by_test_id("metric-eval_loss").locator("td.best")
    expect(best_eval_loss).to_have_count(1)
    expect(best_eval_loss).to_have_text("0.6100 (best)")
    expect(page.get_by_test_id("metric-tokens_per_second").locator("td.best")).to_have_text(
        "2,350 (best)"
    )
    expect(metrics.locator("td.best").first).to_be_visible()

    items = page.get_by_test_id("compare-items")
    expect(items).to_contain_text("32 items, of 32 evaluated; the runs disagree on 8.")
    expect(items.locator("tbody tr")).to_have_count(20)
    expect(items).to_contain_text("no evaluation")
    # The README's picture: the chart, both tables and the first items.
    page.screenshot(
        path=str(screenshot_dir / "compare.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": 1500},
    )

    page.get_by_test_id("disagree-filter").check()
    page.get_by_test_id("disagree-apply").click()
    page.wait_for_url(re.compile(r"disagree=1"))
    expect(items.locator("tbody tr")).to_have_count(8)
    expect(items.locator("tbody tr.disagree")).to_have_count(8)
    expect(page.get_by_test_id("disagree-filter")).to_be_checked()

    page.get_by_test_id("disagree-filter").uncheck()
    page.get_by_test_id("disagree-apply").click()
    page.get_by_test_id("items-next").click()
    page.wait_for_url(re.compile(r"page=2"))
    expect(items).to_contain_text("Page 2 of 2.")
    expect(items.locator("tbody tr")).to_have_count(12)
    page.get_by_test_id("items-previous").click()
    expect(items).to_contain_text("Page 1 of 2.")
    page.get_by_test_id(f"compare-run-{slow.id}").click()
    page.wait_for_url(f"{live_server.url}/runs/{slow.id}")
    assert violations == []


def test_comparing_works_with_javascript_off(
    browser: Browser, live_server: Any, engineer: Any, compared: list[TunixRun]
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(engineer.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    good, slow, _ = compared
    page.get_by_label(f"Compare run {short(good)}").check()
    page.get_by_label(f"Compare run {short(slow)}").check()
    page.get_by_test_id("compare-button").click()
    page.wait_for_url(re.compile(r"/runs/compare\?ids="))
    expect(page.get_by_test_id("compare-chart")).to_be_visible()
    expect(page.get_by_test_id("compare-config")).to_contain_text("learning_rate")
    items = page.get_by_test_id("compare-items")
    expect(items.locator("tbody tr")).to_have_count(20)
    page.get_by_test_id("disagree-filter").check()
    page.get_by_test_id("disagree-apply").click()
    expect(items.locator("tbody tr")).to_have_count(8)
    expect(items).to_contain_text("8 items where the runs disagree, of 32 evaluated")
    # One run is not a comparison: a page that says what to do, not a blank one.
    page.goto(f"{live_server.url}/runs/compare?ids={good.id}")
    expect(page.get_by_test_id("compare-error")).to_contain_text("Pick 2 to 10 runs to compare")
    context.close()


@pytest.mark.browser_context_args(viewport=PHONE, is_mobile=True, has_touch=True)
def test_the_compare_page_fits_a_phone(
    logged_in: Page, live_server: Any, compared: list[TunixRun]
) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/runs/compare?" + "&".join(f"ids={r.id}" for r in compared))
    page.wait_for_load_state("load")
    assert int(page.evaluate("document.documentElement.scrollWidth")) <= PHONE["width"]
    box = page.get_by_test_id("compare-chart").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"] + 0.5
