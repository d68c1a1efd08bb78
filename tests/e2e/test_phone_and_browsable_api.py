"""The pages on a phone, and DRF's browsable API under the strict CSP.

At 390 x 844 (a phone held upright) no page may be wider than the screen, and the values a row
or a run shows (queued, started, duration, the loss chart) must be on the screen, not beside it.
The browsable API must load without one CSP violation and lead back to its root.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from runs.models import TunixRun
from tests.e2e.conftest import PASSWORD
from tests.factories import TunixRunFactory

PHONE: ViewportSize = {"width": 390, "height": 844}
WIDE: ViewportSize = {"width": 1280, "height": 800}
ON_A_PHONE = pytest.mark.browser_context_args(
    viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# Reports every violation the page's CSP refuses, to Python, from before the page's own code
# runs (an init script is the browser's, not the page's, so the CSP does not refuse it).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => window.reportCspViolation(
  [location.pathname, event.effectiveDirective, event.blockedURI, event.sample].join(" | ")
));
"""


def width_of(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def assert_fits_the_phone(page: Page) -> None:
    page.wait_for_load_state("load")
    width = width_of(page)
    assert width <= PHONE["width"], f"{page.url} is {width} px wide on a {PHONE['width']} px phone"


def assert_on_screen(locator: Locator) -> None:
    """Visible, and inside the screen's width: not clipped away or scrolled off to the side."""
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= PHONE["width"] + 0.5, box


@pytest.fixture
def runs_shown(demo_dataset: Any, engineer: Any) -> dict[str, TunixRun]:
    """Runs of every shape the list and detail show, with the longest values they hold."""
    now = timezone.now()
    done = TunixRunFactory(
        completed=True,
        dataset=demo_dataset,
        created_by=engineer,
        model_id="meta-llama/Llama-3.2-3B-Instruct",
        mode="local",
        config={"learning_rate": 0.003, "lora_target_modules": "q_proj,k_proj,v_proj,o_proj"},
        loss_curve=[[step, 4.0 / step] for step in range(1, 41)],
        metrics={"train_loss": 0.1, "eval_loss": 0.2, "steps": 40, "wall_seconds": 75},
        progress={"step": 40, "total_steps": 40, "loss": 0.1},
        stdout="step 40/40 loss=0.1000 " + "x" * 400 + "\nsaved checkpoint\n",
        started_at=now,
        completed_at=now + timedelta(seconds=75),
    )
    failed = TunixRunFactory(
        failed=True,
        dataset=demo_dataset,
        created_by=engineer,
        error_message="the trainer exited with code 1: " + "y" * 120,
    )
    running = TunixRunFactory(
        running=True,
        dataset=demo_dataset,
        created_by=engineer,
        progress={"step": 3, "total_steps": 30, "loss": 1.5},
    )
    pending = TunixRunFactory(dataset=demo_dataset, created_by=engineer)
    checkpoint = (
        Path(settings.TUNIX_ARTIFACTS_ROOT)
        / str(done.id)
        / "checkpoints/attempt-1/40/model_params/ocdbt.process_0/d/0123456789abcdef0123456789ab"
    )
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    return {"done": done, "failed": failed, "running": running, "pending": pending}


@ON_A_PHONE
def test_the_run_list_fits_a_phone_with_every_column_on_screen(
    logged_in: Page,
    live_server: Any,
    runs_shown: dict[str, TunixRun],
    tmp_path: Path,
    screenshot_dir: Path,
) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/")
    assert_fits_the_phone(page)
    for run in runs_shown.values():
        assert_on_screen(page.get_by_test_id(f"run-status-{run.id}"))
        assert_on_screen(page.get_by_test_id(f"run-queued-{run.id}"))
        assert_on_screen(page.get_by_test_id(f"run-started-{run.id}"))
        assert_on_screen(page.get_by_test_id(f"run-duration-{run.id}"))
        expect(page.get_by_test_id(f"run-queued-{run.id}")).to_contain_text("UTC")
    done = runs_shown["done"]
    expect(page.get_by_test_id(f"run-duration-{done.id}")).to_have_text("1 min 15 s")
    expect(page.get_by_test_id(f"run-started-{done.id}")).to_contain_text("UTC")
    expect(page.get_by_test_id(f"run-row-{done.id}")).to_contain_text(done.model_id)
    # Each value keeps its column's name beside it once the header row is out of sight.
    queued_label = page.get_by_test_id(f"run-queued-{done.id}").evaluate(
        "cell => getComputedStyle(cell, '::before').content"
    )
    assert queued_label == '"Queued"'
    page.screenshot(path=str(tmp_path / "run-list-phone.png"), full_page=True)
    page.screenshot(path=str(screenshot_dir / "run-list-phone.png"))  # the first screen


@ON_A_PHONE
def test_a_run_fits_a_phone_and_its_loss_chart_scales(
    logged_in: Page,
    live_server: Any,
    runs_shown: dict[str, TunixRun],
    tmp_path: Path,
    screenshot_dir: Path,
) -> None:
    page = logged_in
    done = runs_shown["done"]
    page.goto(f"{live_server.url}/runs/{done.id}")
    page.get_by_text("Configuration").click()
    assert_fits_the_phone(page)
    chart = page.get_by_test_id("loss-chart")
    assert_on_screen(chart)
    box = chart.bounding_box()
    assert box is not None
    assert box["width"] >= 250  # scaled to the screen, not shrunk away
    duration = page.locator("dt:has-text('Duration') + dd")
    assert_on_screen(duration)
    expect(duration).to_have_text("1 min 15 s")
    assert_on_screen(page.get_by_test_id("artifacts"))
    assert_on_screen(page.get_by_text("q_proj,k_proj,v_proj,o_proj"))
    finished = page.locator("dt:has-text('Finished') + dd")
    assert_on_screen(finished)
    expect(finished).to_contain_text("UTC")
    page.screenshot(path=str(tmp_path / "run-detail-phone.png"), full_page=True)
    page.screenshot(path=str(screenshot_dir / "run-detail-phone.png"), full_page=True)

    for name in ("failed", "running", "pending"):
        run = runs_shown[name]
        page.goto(f"{live_server.url}/runs/{run.id}")
        assert_fits_the_phone(page)
        assert_on_screen(page.get_by_test_id(f"run-status-{run.id}"))
    assert_on_screen(page.get_by_test_id("cancel-run"))


@ON_A_PHONE
def test_the_launch_form_fits_a_phone_and_shows_every_error_at_once(
    logged_in: Page, live_server: Any, demo_dataset: Any, tmp_path: Path
) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/runs/new")
    assert_fits_the_phone(page)
    assert_on_screen(page.get_by_test_id("launch-submit"))
    page.get_by_label("Model id").fill("acme/no-such-model")
    page.get_by_label("Learning rate", exact=True).fill("0")
    page.get_by_test_id("launch-submit").click()
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)
    assert_on_screen(page.get_by_test_id("error-model_id"))
    expect(page.get_by_test_id("error-model_id")).to_contain_text("unknown model")
    assert_on_screen(page.get_by_test_id("error-learning_rate"))
    assert not TunixRun.objects.exists()
    page.screenshot(path=str(tmp_path / "launch-phone.png"), full_page=True)


@ON_A_PHONE
def test_the_dataset_list_fits_a_phone(
    logged_in: Page, live_server: Any, demo_dataset: Any, tmp_path: Path
) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/datasets")
    assert_fits_the_phone(page)
    row = page.get_by_test_id("dataset-row-tunix-demo-v1")
    assert_on_screen(row)
    added = page.get_by_test_id("dataset-added-tunix-demo-v1")
    assert_on_screen(added)
    expect(added).to_contain_text("UTC")
    assert_on_screen(page.get_by_test_id("upload-submit"))
    page.screenshot(path=str(tmp_path / "datasets-phone.png"), full_page=True)


def watch_csp(context: Any, violations: list[str]) -> None:
    context.expose_function("reportCspViolation", lambda text: violations.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    context.on(
        "console",
        lambda msg: (
            violations.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text
            else None
        ),
    )


def crumbs(page: Page) -> list[tuple[str, str | None]]:
    items = page.locator("ul.breadcrumb li a")
    return [
        (items.nth(i).inner_text().strip(), items.nth(i).get_attribute("href"))
        for i in range(items.count())
    ]


def breadcrumb_is_uncovered(page: Page) -> bool:
    """The breadcrumb's first link is what a tap on it reaches (the fixed navbar does not lie
    over it)."""
    return bool(
        page.locator("ul.breadcrumb li a").first.evaluate(
            """link => {
                const box = link.getBoundingClientRect();
                const hit = document.elementFromPoint(box.left + 2, box.top + box.height / 2);
                return link.contains(hit);
            }"""
        )
    )


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_browsable_api_runs_under_the_csp_with_a_breadcrumb_to_its_root(
    browser: Browser,
    live_server: Any,
    engineer: Any,
    runs_shown: dict[str, TunixRun],
    viewport: ViewportSize,
    screenshot_dir: Path,
) -> None:
    context = browser.new_context(viewport=viewport)
    violations: list[str] = []
    watch_csp(context, violations)
    page = context.new_page()

    # The listener does hear a violation: an inline handler the CSP refuses to run.
    page.goto(f"{live_server.url}/api-auth/login/?next=/api/tunix/runs")
    page.evaluate(
        """() => { const probe = document.createElement("div");
                   probe.setAttribute("onclick", "void 0");
                   document.body.append(probe); probe.click(); probe.remove(); }"""
    )
    page.wait_for_timeout(200)
    assert violations, "the listener heard no violation"
    assert "script-src" in violations[0], violations
    violations.clear()

    page.reload()
    page.wait_for_load_state("networkidle")
    assert width_of(page) <= viewport["width"]
    page.get_by_label("Username").fill(engineer.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/api/tunix/runs")
    page.wait_for_load_state("networkidle")
    expect(page.locator("h1")).to_have_text("Run List")
    assert crumbs(page) == [("Api Root", "/api/tunix"), ("Run List", "/api/tunix/runs")]
    assert breadcrumb_is_uncovered(page)
    expect(page.get_by_text(str(runs_shown["done"].id)).first).to_be_visible()
    shot = f"browsable-api-{viewport['width']}.png"
    page.screenshot(path=str(screenshot_dir / shot), full_page=True)

    page.locator("ul.breadcrumb li a").first.click()
    page.wait_for_url(f"{live_server.url}/api/tunix")
    page.wait_for_load_state("networkidle")
    assert crumbs(page) == [("Api Root", "/api/tunix")]
    assert breadcrumb_is_uncovered(page)
    for collection in ("runs", "datasets", "models"):
        expect(page.locator(f'a[href$="/api/tunix/{collection}"]').first).to_be_visible()

    page.goto(f"{live_server.url}/api/tunix/runs/{runs_shown['done'].id}")
    page.wait_for_load_state("networkidle")
    assert [name for name, _ in crumbs(page)] == ["Api Root", "Run List", "Run Instance"]

    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state("networkidle")
    assert "Unknown Path" not in page.content()
    context.close()
    assert violations == []
