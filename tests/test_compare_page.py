"""The compare page (/runs/compare?ids=…&ids=…): server-rendered, plain links and GET forms, so
it works with JavaScript off; and the run list's checkboxes that lead to it."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from runs.models import Dataset, TunixRun
from tests.factories import (
    DatasetFactory,
    EvaluatedRunFactory,
    TunixRunFactory,
    UserFactory,
    reference_for,
)
from tests.support.pages import html

pytestmark = pytest.mark.django_db

PAGE = "/runs/compare"


def query(*runs: TunixRun, **extra: str) -> str:
    parts = [f"ids={run.id}" for run in runs] + [f"{k}={v}" for k, v in extra.items()]
    return "?" + "&".join(parts)


@pytest.fixture
def dataset() -> Dataset:
    return DatasetFactory(key="questions-v1")


@pytest.fixture
def runs(dataset: Dataset) -> list[TunixRun]:
    """Two evaluated trainings that disagree on every third of 45 items, and one without an
    evaluation."""
    right = [reference_for(line) for line in range(1, 46)]
    wrong = [answer if line % 3 else "no idea" for line, answer in enumerate(right, start=1)]
    first = EvaluatedRunFactory(
        dataset=dataset,
        predictions=right,
        metrics={"eval_loss": 1.25, "rouge_l": 0.9, "steps": 48},
    )
    second = EvaluatedRunFactory(
        dataset=dataset,
        predictions=wrong,
        loss_scale=1.3,
        config={**first.config, "learning_rate": 0.001},
        metrics={"eval_loss": 1.5, "rouge_l": 0.6, "steps": 48},
    )
    third = EvaluatedRunFactory(dataset=dataset, metrics={"eval_loss": 2.0, "steps": 48})
    return [first, second, third]


def cell(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, testid
    return match.group(1)


def test_the_page_shows_the_chart_the_settings_that_differ_the_metrics_and_the_items(
    web: Client, runs: list[TunixRun]
) -> None:
    response = web.get(PAGE + query(*runs))
    assert response.status_code == 200
    page = html(response)
    # One colour a run: each run's train loss a line, its evaluations marks.
    assert 'data-testid="compare-chart"' in page
    for colour, run in enumerate(runs):
        short = str(run.id)[:8]
        line = f'data-testid="compare-chart-line" data-label="{short} train loss"'
        assert f'class="series c{colour}" {line}' in page
        assert f'data-label="{short} eval loss"' in page
        assert f'href="/runs/{run.id}"' in page
    assert "<script" not in page.split("</head>", 1)[1]  # no inline script in the body
    config = cell(page, "config-learning_rate")
    assert re.findall(r'<td class="mono">([^<]*)</td>', config) == ["0.003", "0.001", "0.003"]
    assert 'data-testid="config-batch_size"' not in page  # shared: not shown
    assert 'data-testid="compare-metrics"' in page
    assert 'data-testid="compare-items"' in page
    assert "45 items, of 45 evaluated; the runs disagree on 15. Page 1 of 3." in page
    assert 'data-testid="item-1"' in page
    assert 'data-testid="item-21"' not in page


def test_the_best_metric_is_bold_and_named_best_for_screen_readers(
    web: Client, runs: list[TunixRun]
) -> None:
    page = html(web.get(PAGE + query(*runs)))
    eval_loss = cell(page, "metric-eval_loss")
    cells = re.findall(r'<td class="mono( best)?">(.*?)</td>', eval_loss)
    assert cells == [
        (" best", '1.2500 <span class="visually-hidden">(best)</span>'),
        ("", "1.5000"),
        ("", "2.0000"),
    ]
    assert "(lower is better)" in eval_loss
    rouge = re.findall(r'<td class="mono( best)?">(.*?)</td>', cell(page, "metric-rouge_l"))
    assert rouge == [
        (" best", '0.9000 <span class="visually-hidden">(best)</span>'),
        ("", "0.6000"),
        ("", "—"),
    ]
    steps = cell(page, "metric-steps")
    assert "best" not in steps


def test_each_runs_prediction_is_shown_with_its_scores_and_a_run_without_one_says_so(
    web: Client, runs: list[TunixRun]
) -> None:
    page = html(web.get(PAGE + query(*runs)))
    row = cell(page, "item-3")
    assert '<tr data-testid="item-3" class="disagree">' in page
    assert "What is the answer to question 3?" in row
    assert "no idea" in row
    assert "exact match 1.00 · token F1 1.00 · ROUGE-L 1.00" in row
    assert "exact match 0.00" in row
    assert '<span class="muted">no evaluation</span>' in row
    assert f'{str(runs[2].id)[:8]}</a> <span class="muted">(no evaluation)</span>' in page


def test_the_disagreement_filter_and_the_pager_are_a_get_form_and_links(
    web: Client, runs: list[TunixRun]
) -> None:
    page = html(web.get(PAGE + query(*runs)))
    form = re.search(
        r'<form class="filters" method="get" action="/runs/compare#items".*?</form>', page, re.S
    )
    assert form
    for run in runs:
        assert f'<input type="hidden" name="ids" value="{run.id}">' in form.group(0)
    assert 'name="disagree" value="1"' in form.group(0)
    next_link = re.search(r'<a href="([^"]+)" rel="next" data-testid="items-next">', page)
    assert next_link
    second = html(web.get(next_link.group(1).replace("&amp;", "&")))
    assert 'data-testid="item-21"' in second
    assert "Page 2 of 3" in second
    assert 'data-testid="items-previous"' in second

    only = html(web.get(PAGE + query(*runs, disagree="1")))
    lines = re.findall(r'data-testid="item-(\d+)"', only)
    assert lines == [str(n) for n in range(3, 46, 3)]
    assert "15 items where the runs disagree, of 45 evaluated" in only
    assert 'name="disagree" value="1" data-testid="disagree-filter" checked' in only
    assert 'data-testid="items-next"' not in only
    csv_link = re.search(r'<a href="([^"]+)" data-testid="compare-csv"', only)
    assert csv_link
    assert csv_link.group(1).startswith("/api/tunix/runs/compare/items.csv?ids=")
    assert csv_link.group(1).endswith("&amp;disagree=1")


def test_a_page_past_the_last_or_not_a_number_shows_the_nearest_page(
    web: Client, runs: list[TunixRun]
) -> None:
    assert "Page 3 of 3" in html(web.get(PAGE + query(*runs, page="99")))
    assert "Page 1 of 3" in html(web.get(PAGE + query(*runs, page="two")))


@pytest.mark.parametrize("count", [0, 1, 11], ids=["no run", "one run", "eleven runs"])
def test_too_few_or_too_many_runs_is_a_friendly_400_page(
    web: Client, dataset: Dataset, count: int
) -> None:
    chosen = [TunixRunFactory(dataset=dataset) for _ in range(count)]
    response = web.get(PAGE + query(*chosen))
    assert response.status_code == 400
    page = html(response)
    assert 'data-testid="compare-error"' in page
    assert "Pick 2 to 10 runs to compare" in page
    assert 'href="/"' in page


def test_a_malformed_id_is_a_400_page_and_an_unknown_run_a_404(
    web: Client, runs: list[TunixRun]
) -> None:
    assert web.get(f"{PAGE}?ids={runs[0].id}&ids=nope").status_code == 400
    assert web.get(f"{PAGE}?ids={runs[0].id}&ids={uuid.uuid4()}").status_code == 404


def test_someone_elses_run_is_a_404_page(dataset: Dataset) -> None:
    alice = UserFactory()
    alice.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    mine = EvaluatedRunFactory(dataset=dataset, created_by=alice)
    theirs = EvaluatedRunFactory(dataset=dataset, created_by=UserFactory())
    client = Client()
    client.force_login(alice)
    assert client.get(PAGE + query(mine, theirs)).status_code == 404


def test_runs_of_different_datasets_show_their_curves_and_tables_and_a_note_about_items(
    web: Client, runs: list[TunixRun]
) -> None:
    elsewhere = EvaluatedRunFactory(dataset=DatasetFactory(key="other-v1"), predictions=["a"])
    response = web.get(PAGE + query(runs[0], elsewhere))
    assert response.status_code == 200
    page = html(response)
    assert 'data-testid="compare-chart"' in page
    assert 'data-testid="config-dataset_key"' in page
    assert 'data-testid="metric-eval_loss"' in page
    note = re.search(r'data-testid="compare-items-note">(.*?)</p>', page, re.S)
    assert note
    assert "one dataset" in note.group(1)
    assert "questions-v1, other-v1" in note.group(1)
    assert 'data-testid="item-1"' not in page


def test_runs_with_no_curve_metrics_or_items_still_compare(web: Client, dataset: Dataset) -> None:
    pending = TunixRunFactory(dataset=dataset)
    dry = TunixRunFactory(dataset=dataset, completed=True)
    page = html(web.get(PAGE + query(pending, dry)))
    assert "None of these runs has reported a loss yet." in page
    assert "No run has final metrics yet." in page
    assert "The runs share every setting" in page
    assert "None of these runs has evaluation items." in page


def test_the_compare_page_needs_a_login(client: Client, runs: list[TunixRun]) -> None:
    response = client.get(PAGE + query(*runs))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_run_list_ticks_runs_into_a_get_form_for_the_compare_page(
    web: Client, runs: list[TunixRun]
) -> None:
    TunixRunFactory()  # pending: the list polls its rows
    page = html(web.get("/"))
    form = re.search(r'<form id="compare-form"[^>]*>', page)
    assert form
    assert 'method="get"' in form.group(0)
    assert 'action="/runs/compare"' in form.group(0)
    assert 'data-testid="compare-button"' in page
    rows = html(web.get("/runs/rows", headers={"HX-Request": "true"}))
    for source in (page, rows):
        for run in runs:
            box = re.search(rf'<input type="checkbox" id="pick-{run.id}"[^>]*>', source)
            assert box, run.id
            # Outside the form, joined to it by name; kept as it is when htmx swaps the rows.
            for attribute in (
                'name="ids"',
                f'value="{run.id}"',
                'form="compare-form"',
                "hx-preserve",
            ):
                assert attribute in box.group(0)
