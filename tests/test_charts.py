"""runs/charts.py: the pages' SVG charts, laid out without Django; and the run page's loss chart
with its axes, evaluation marks and legend."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from runs import charts
from tests.factories import TunixRunFactory


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.0, 10.0, [0, 2, 4, 6, 8, 10]),
        (1.0, 48.0, [0, 10, 20, 30, 40, 50]),
        (1.0, 186.0, [0, 50, 100, 150, 200]),
        (2.31, 2.87, [2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9]),
        (5.0, 5.0, [5, 6, 7, 8, 9, 10]),
    ],
)
def test_ticks_are_round_numbers_that_cover_the_values(
    low: float, high: float, expected: list[float]
) -> None:
    ticks = charts.nice_ticks(low, high)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low
    assert ticks[-1] >= high


def test_tick_labels_have_just_enough_decimals() -> None:
    assert charts.tick_label(20.0, 10.0) == "20"
    assert charts.tick_label(2500.0, 500.0) == "2,500"
    assert charts.tick_label(2.5, 0.1) == "2.5"
    assert charts.tick_label(0.25, 0.05) == "0.25"
    assert charts.tick_label(0.0002, 0.0001) == "2.0e-04"


def test_lines_share_axes_and_marks_are_drawn_as_dots() -> None:
    train = charts.Line("train", [[1, 4.0], [2, 3.0], [3, 2.0]], colour=0)
    evals = charts.Line("eval", [[3, 2.5]], colour=1, dots=True)
    chart = charts.layout([train, evals], width=400, height=200)
    assert chart is not None
    drawn_train, drawn_eval = chart.lines
    xs = [float(p.split(",")[0]) for p in drawn_train.polyline.split()]
    ys = [float(p.split(",")[1]) for p in drawn_train.polyline.split()]
    assert xs == sorted(xs)
    assert chart.left <= xs[0]
    assert xs[-1] <= chart.right
    assert ys == sorted(ys)  # the loss falls, so each point is further down the page
    assert drawn_eval.polyline == ""
    assert len(drawn_eval.marks) == 1
    # The eval mark sits at the same step as the last train point, between its neighbours' y.
    mark_x, mark_y = drawn_eval.marks[0]
    assert mark_x == xs[-1]
    assert ys[-2] > mark_y > ys[-1] or ys[-2] < mark_y < ys[-1]
    assert next(t.label for t in chart.y_ticks) == "2.0"


def test_a_chart_without_points_is_not_drawn() -> None:
    assert charts.layout([charts.Line("train", [])]) is None


def test_the_run_page_draws_train_loss_eval_marks_axes_and_a_legend(user: User) -> None:
    run = TunixRunFactory(
        completed=True,
        loss_curve=[[1, 5.0], [2, 4.0], [3, 3.5], [4, 3.0]],
        series={"eval_loss": [[2, 4.2], [4, 3.3]]},
        metrics={"train_loss": 3.2, "eval_loss": 3.3},
    )
    web = Client()
    web.force_login(user)
    page = web.get(f"/runs/{run.id}").content.decode()
    assert 'data-testid="loss-chart" data-points="4"' in page
    assert 'data-label="train loss" data-count="4"' in page
    assert 'data-label="eval loss" data-count="2"' in page
    assert len(re.findall(r"<circle ", page)) == 2
    legend = page[page.index('data-testid="loss-chart-legend"') :]
    assert "train loss" in legend
    assert "eval loss" in legend
    # Axis values: steps along the bottom, losses up the side.
    assert re.search(r'<text [^>]*class="x">4</text>', page)
    assert re.search(r'<text [^>]*class="y">3.0</text>', page)
    assert "<script" not in page.split("<main", 1)[1].split("</main>", 1)[0]


def test_the_run_page_shows_learning_rate_and_throughput_and_the_eval_summary(
    user: User,
) -> None:
    run = TunixRunFactory(
        completed=True,
        mode="local",
        loss_curve=[[1, 5.0], [2, 4.0]],
        series={
            "learning_rate": [[1, 0.003], [2, 0.003]],
            "tokens_per_second": [[1, 900], [2, 1100]],
        },
        metrics={"eval_items": 7, "rouge_l": 0.125, "token_f1": 0.25, "exact_match": 0.0},
    )
    web = Client()
    web.force_login(user)
    page = web.get(f"/runs/{run.id}").content.decode()
    assert 'data-testid="learning-rate-chart" data-points="2"' in page
    assert 'data-testid="tokens-per-second-chart" data-points="2"' in page
    summary = page[page.index('data-testid="run-eval"') :].split("</p>", 1)[0]
    assert "7 held-out records generated and scored" in summary
    assert 'ROUGE-L <span class="mono">0.1250</span>' in summary
    assert "eval/predictions.jsonl" in summary


def test_a_finished_training_without_generation_eval_says_no_evaluation(user: User) -> None:
    turned_off = TunixRunFactory(completed=True, mode="local", metrics={"eval_loss": 2.0})
    failed = TunixRunFactory(failed=True, mode="local")
    web = Client()
    web.force_login(user)
    off = web.get(f"/runs/{turned_off.id}").content.decode()
    assert "No evaluation (generation eval turned off" in off
    assert (
        "No evaluation: the run ended before it" in web.get(f"/runs/{failed.id}").content.decode()
    )
