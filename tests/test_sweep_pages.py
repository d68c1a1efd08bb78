"""The sweep pages: the list, a sweep's page (trials, best, progress, charts), its polled
fragment, cancel, and "Launch best". Sweeps are made by the real services with dry-run trials,
and their trials ended through the status machine (claim, heartbeat, finish), as a worker does."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from runs import charts, services
from runs.models import RunStatus, Sweep, SweepStatus, TunixRun
from runs.outcomes import Ending, RunOutcome
from tests.factories import UserFactory
from tests.support.pages import html

pytestmark = pytest.mark.django_db

SPACE = {
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "lora_rank": {"choices": [4, 8, 16]},
}


def make_sweep(user: User, **changes: Any) -> Sweep:
    request = services.SweepRequest(
        base=services.RunRequest(
            dataset_key="tunix-demo-v1",
            model_id="tunix-rt/tiny-llama3",
            mode="dry-run",
            config={"max_steps": 8},
            timeout_seconds=600,
        ),
        space=SPACE,
        metric="eval_loss",
        n_trials=3,
        concurrency=2,
        pruner="median",
        seed=7,
    )
    return services.sweep_create(user=user, request=dataclasses.replace(request, **changes))


def trials(sweep: Sweep) -> list[TunixRun]:
    return list(TunixRun.objects.filter(sweep=sweep).order_by("trial_number"))


def finish(run: TunixRun, value: float, curve: list[list[float]] | None = None) -> None:
    """A worker's part: claim the trial, train it (its loss curve), report its eval loss."""
    claimed = services.run_claim(run_id=run.id, worker_id="worker:test:1")
    assert claimed is not None
    progress = {
        "metrics": {"eval_loss": value},
        "series": {"eval_loss": curve or [[4, value]]},
        "loss_curve": [[1, value + 2.0], [2, value + 1.0], [4, value + 0.5]],
    }
    outcome = RunOutcome(status=Ending.COMPLETED, exit_code=0, progress=progress)
    assert services.run_finish(run_id=run.id, attempt=claimed.attempt, outcome=outcome)


def prune(run: TunixRun) -> None:
    """A trial far worse than the first at the same step: the median pruner stops it."""
    claimed = services.run_claim(run_id=run.id, worker_id="worker:test:2")
    assert claimed is not None
    assert services.run_heartbeat(
        run_id=run.id,
        attempt=claimed.attempt,
        updates={"series": {"eval_loss": [[2, 9.0]]}, "loss_curve": [[1, 9.5], [2, 9.2]]},
    )
    assert services.sweep_trial_report(run_id=run.id, attempt=claimed.attempt)


@pytest.fixture
def running(operator: User, demo_dataset: Any) -> Sweep:
    """Three trials, two at a time: trial 0 completed (eval loss 1.0), trial 1 pruned, trial 2
    pending."""
    sweep = make_sweep(operator)
    first, second = trials(sweep)
    finish(first, 1.0, curve=[[2, 2.0], [4, 1.0]])
    prune(second)
    assert len(trials(sweep)) == 3
    return sweep


def end(sweep: Sweep, value: float = 0.5) -> None:
    finish(trials(sweep)[2], value)
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.COMPLETED


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def attribute(page: str, testid: str, name: str) -> str:
    """An attribute of the element with this test id, wherever it sits in the tag."""
    tag = re.search(rf'<[^>]*data-testid="{testid}"[^>]*>', page)
    assert tag, f"no element {testid}"
    found = re.search(rf'\s{name}="([^"]*)"', tag.group(0))
    assert found, f"no {name} on {testid}"
    return found.group(1)


def test_the_list_shows_each_sweep_with_its_progress_status_and_best_value(
    web: Client, running: Sweep
) -> None:
    page = html(web.get("/sweeps"))
    assert f'href="/sweeps/{running.id}"' in page
    assert f'data-testid="sweep-progress-{running.id}">1 of 3<' not in page  # pruned ended too
    assert f'data-testid="sweep-progress-{running.id}">2 of 3<' in page
    assert f'data-testid="sweep-status-{running.id}">running<' in page
    assert "tunix-demo-v1" in page
    assert 'eval loss <span class="muted">(minimize)</span>' in page
    end(running)
    page = html(web.get("/sweeps"))
    assert f'data-testid="sweep-progress-{running.id}">3 of 3<' in page
    assert f'data-testid="sweep-status-{running.id}">completed<' in page
    assert f'data-testid="sweep-best-{running.id}">0.5000<' in page
    assert 'href="/sweeps" aria-current="page">Sweeps<' in page  # in the nav


def test_the_sweep_page_shows_the_trials_the_best_marked_and_the_pruned_one_as_pruned(
    web: Client, running: Sweep
) -> None:
    response = web.get(f"/sweeps/{running.id}")
    assert response.status_code == 200
    page = html(response)
    assert attribute(page, "sweep-trials", "data-rows") == "3"
    assert 'data-testid="sweep-progress-text">2 of 3<' in page
    assert '<progress value="2" max="3"' in page
    assert 'data-testid="trial-row-0" data-status="completed" data-best="true"' in page
    assert page.count('data-testid="best-trial"') == 1
    assert 'data-testid="trial-status-1">pruned<' in page
    assert 'data-testid="trial-status-2">pending<' in page
    assert 'data-testid="trial-value-0">1.0000<' in page
    run = trials(running)[0]
    assert f"{run.config['learning_rate']:.4g}" in page  # each trial's searched values
    assert f'href="/runs/{run.id}"' in page
    # The best moves to a trial that does better.
    end(running, 0.5)
    page = html(web.get(f"/sweeps/{running.id}"))
    assert 'data-testid="trial-row-2" data-status="completed" data-best="true"' in page
    assert 'data-testid="trial-row-0" data-status="completed">' in page
    assert 'data-testid="sweep-progress-text">3 of 3<' in page


def test_the_fragment_polls_while_the_sweep_runs_and_stops_once_it_ends(
    web: Client, running: Sweep
) -> None:
    page = html(web.get(f"/sweeps/{running.id}"))
    assert f'hx-get="/sweeps/{running.id}/live"' in page
    live = web.get(f"/sweeps/{running.id}/live", headers={"HX-Request": "true"})
    assert live.status_code == 200
    assert 'data-testid="sweep-trials"' in html(live)
    etag = live["ETag"]
    unchanged = web.get(
        f"/sweeps/{running.id}/live", headers={"HX-Request": "true", "If-None-Match": etag}
    )
    assert unchanged.status_code == 304
    end(running)
    final = web.get(
        f"/sweeps/{running.id}/live", headers={"HX-Request": "true", "If-None-Match": etag}
    )
    assert final.status_code == 286  # htmx swaps it in and stops polling
    assert 'data-testid="sweep-status">completed<' in html(final)
    assert "hx-get" not in html(web.get(f"/sweeps/{running.id}"))


def test_the_charts_draw_a_point_and_a_line_for_each_trial_with_a_value(
    web: Client, running: Sweep
) -> None:
    page = html(web.get(f"/sweeps/{running.id}"))
    # Metric against each parameter: the completed trial, and the pruned one at the value it
    # was pruned at (9.0); the pending trial has none yet.
    for name in ("learning-rate", "lora-rank"):
        assert attribute(page, f"param-chart-{name}", "data-points") == "2"
        assert page.count(f'data-testid="param-chart-{name}-point"') == 2
    assert 'data-testid="param-chart-learning-rate-point" data-state="pruned"' in page
    assert 'data-testid="param-chart-lora-rank-point" data-state="completed" data-best="true"' in (
        page
    )
    assert "eval loss against learning_rate, log scale" in page.lower()
    assert "Eval loss against lora_rank, by choice" in page
    # Parallel coordinates: a line a trial, through its two parameters and the metric; the
    # pruned one has no final value, the pending one only its parameters.
    assert attribute(page, "parallel-chart", "data-lines") == "3"
    assert page.count('data-testid="parallel-chart-axis"') == 3
    counts = re.findall(
        r'data-testid="parallel-chart-line" data-label="trial (\d)[^"]*" '
        r'data-state="(\w+)" data-count="(\d)"',
        page,
    )
    assert sorted(counts) == [("0", "completed", "3"), ("1", "pruned", "2"), ("2", "pending", "2")]
    # The trials' curves overlaid: the train loss of the two that trained, their eval losses.
    labels = re.findall(r'data-testid="sweep-curves-line" data-label="([^"]+)"', page)
    assert labels == [
        "trial 0 (best) train loss",
        "trial 0 (best) eval loss",
        "trial 1 train loss",
        "trial 1 eval loss",
    ]
    assert 'data-testid="sweep-curves-legend"' in page


def test_cancel_stops_the_sweep_and_its_trials(web: Client, running: Sweep) -> None:
    response = web.post(f"/sweeps/{running.id}/cancel", follow=True)
    assert response.redirect_chain == [(f"/sweeps/{running.id}", 302)]
    assert "Sweep cancelled" in html(response)
    assert Sweep.objects.get(id=running.id).status == SweepStatus.CANCELLED
    assert trials(running)[2].status == RunStatus.CANCELLED
    assert 'data-testid="cancel-sweep"' not in html(response)
    again = web.post(f"/sweeps/{running.id}/cancel", follow=True)
    assert "Could not cancel: sweep is already cancelled" in html(again)


def test_a_user_who_may_see_but_not_cancel_the_sweep_is_refused(user: User, running: Sweep) -> None:
    viewer = client_for(user)
    page = html(viewer.get(f"/sweeps/{running.id}"))
    assert 'data-testid="sweep-trials"' in page
    assert 'data-testid="cancel-sweep"' not in page
    assert 'data-testid="launch-best"' not in page  # they may not launch either
    assert viewer.post(f"/sweeps/{running.id}/cancel").status_code == 403
    assert Sweep.objects.get(id=running.id).status == SweepStatus.RUNNING


def test_a_sweep_the_user_may_not_see_is_404(running: Sweep) -> None:
    stranger = UserFactory()
    stranger.user_permissions.add(Permission.objects.get(codename="add_tunixrun"))
    client = client_for(stranger)
    for url in (f"/sweeps/{running.id}", f"/sweeps/{running.id}/live"):
        assert client.get(url).status_code == 404
    assert client.post(f"/sweeps/{running.id}/cancel").status_code == 404
    assert f"/sweeps/{running.id}" not in html(client.get("/sweeps"))
    assert Sweep.objects.get(id=running.id).status == SweepStatus.RUNNING


def test_launch_best_opens_the_launch_form_filled_with_the_best_trials_settings(
    web: Client, running: Sweep
) -> None:
    page = html(web.get(f"/sweeps/{running.id}"))
    link = attribute(page, "launch-best", "href").replace("&amp;", "&")
    url = urlsplit(link)
    assert url.path == "/runs/new"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    best = trials(running)[0]
    assert query["algorithm"] == "sft"
    assert query["dataset"] == "tunix-demo-v1"
    assert query["model_id"] == "tunix-rt/tiny-llama3"
    assert query["mode"] == "dry-run"
    assert query["timeout_seconds"] == "600"
    assert float(query["learning_rate"]) == best.config["learning_rate"]
    assert query["lora_rank"] == str(best.config["lora_rank"])
    assert query["max_steps"] == "8"
    form = html(web.get(link))
    assert f'name="learning_rate" value="{query["learning_rate"]}"' in form
    assert f'name="lora_rank" value="{best.config["lora_rank"]}"' in form
    assert '<option value="tunix-demo-v1" selected>' in form
    assert 'name="max_steps" value="8"' in form
    assert 'name="timeout_seconds" value="600"' in form
    assert re.search(r'<option value="dry-run" selected>', form)
    # Submitted as shown, it is a run with the best trial's hyperparameters.
    launched = web.post("/runs/new", {**query, "execution": "async"})
    assert launched.status_code == 302, html(launched)
    run = TunixRun.objects.filter(sweep=None).get()
    assert run.config == best.config
    assert (run.model_id, run.mode, run.timeout_seconds) == ("tunix-rt/tiny-llama3", "dry-run", 600)


def test_a_link_prefills_every_launch_field_and_the_form_still_validates_them(
    web: Client, demo_dataset: Any
) -> None:
    form = html(
        web.get("/runs/new?algorithm=dpo&beta=0.25&mode=local&timeout_seconds=90&execution=sync")
    )
    assert 'name="beta" value="0.25"' in form
    assert 'name="timeout_seconds" value="90"' in form
    assert re.search(r'<option value="local" selected>', form)
    # How to deliver the run is not a setting a link carries: asked each time.
    assert re.search(r'name="execution" value="async"[^>]*checked', form)
    # A linked value is only a suggestion: posted, it is checked as anything typed.
    refused = web.post(
        "/runs/new",
        {
            "dataset": "tunix-demo-v1",
            "model_id": "tunix-rt/tiny-llama3",
            "mode": "dry-run",
            "execution": "async",
            "learning_rate": "5.0",
        },
    )
    assert refused.status_code == 200
    assert not TunixRun.objects.exists()
    assert 'data-testid="error-learning_rate"' in html(refused)


FORM = {
    "algorithm": "sft",
    "dataset": "tunix-demo-v1",
    "model_id": "tunix-rt/tiny-llama3",
    "mode": "dry-run",
    "metric": "eval_loss",
    "direction": "",
    "n_trials": "3",
    "concurrency": "2",
    "sampler": "tpe",
    "pruner": "",
    "learning_rate_low": "0.0001",
    "learning_rate_high": "0.01",
    "learning_rate_log": "on",
    "lora_rank_low": "4",
    "lora_rank_high": "16",
}


def test_the_list_form_starts_a_sweep_over_the_ranges_given(
    web: Client, operator: User, demo_dataset: Any
) -> None:
    page = html(web.get("/sweeps"))
    assert 'data-testid="start-sweep"' in page
    response = web.post("/sweeps", FORM)
    sweep = Sweep.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/sweeps/{sweep.id}"
    assert sweep.space == {
        "learning_rate": {"low": 0.0001, "high": 0.01, "log": True},
        "lora_rank": {"low": 4, "high": 16},
    }
    assert (sweep.metric, sweep.direction, sweep.n_trials, sweep.concurrency) == (
        "eval_loss",
        "minimize",  # the metric's own
        3,
        2,
    )
    assert sweep.created_by == operator
    assert len(trials(sweep)) == 2  # the first trials are queued at once


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"learning_rate_low": "", "learning_rate_high": "", "lora_rank_low": "",
             "lora_rank_high": ""},
            "sweep-form-errors",
            "Give at least one hyperparameter a range to search.",
        ),
        ({"lora_rank_high": ""}, "error-lora_rank_low", "give both ends of the range"),
        ({"n_trials": "0"}, "error-n_trials", "greater than or equal to 1"),
        (
            {"lora_rank_low": "16", "lora_rank_high": "4"},
            "error-lora_rank_low",
            "low must be below high",
        ),
        ({"pruner": "median", "metric": "rouge_l"}, "error-pruner", "a pruner watches"),
    ],
    ids=["no-range", "half-a-range", "no-trials", "range-backwards", "pruner-without-steps"],
)  # fmt: skip
def test_the_list_form_shows_what_is_wrong_where_and_starts_nothing(
    web: Client, demo_dataset: Any, changes: dict[str, str], field: str, message: str
) -> None:
    response = web.post("/sweeps", {**FORM, **changes})
    assert response.status_code == 400
    page = html(response)
    assert f'data-testid="{field}"' in page
    assert message in page
    assert '<details class="card start-sweep" data-testid="start-sweep" open>' in page
    assert not Sweep.objects.exists()
    assert not TunixRun.objects.exists()


def test_a_user_who_may_not_launch_gets_no_form_and_cannot_post_one(
    user: User, demo_dataset: Any
) -> None:
    viewer = client_for(user)
    assert 'data-testid="start-sweep"' not in html(viewer.get("/sweeps"))
    assert viewer.post("/sweeps", FORM).status_code == 403
    assert not Sweep.objects.exists()


def test_log_ticks_are_powers_of_ten_with_halves_and_fifths_in_a_narrow_range() -> None:
    assert charts.log_ticks(1e-4, 1e-2) == pytest.approx([1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2])
    assert charts.log_ticks(3e-6, 0.2) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0])
    assert charts.log_ticks(0.0013, 0.0072) == pytest.approx([0.001, 0.002, 0.005, 0.01])


def test_a_scatter_on_a_log_axis_spaces_decades_evenly_and_draws_the_best_last() -> None:
    marks = [
        charts.Mark(1e-4, 2.0, "a", "completed", best=True),
        charts.Mark(1e-3, 1.0, "b", "pruned"),
        charts.Mark(1e-2, 3.0, "c", "completed"),
    ]
    chart = charts.scatter(marks, x_scale=charts.Scale(charts.LOG))
    assert chart is not None
    xs = {m.label: m.cx for m in chart.marks}
    assert xs["b"] - xs["a"] == pytest.approx(xs["c"] - xs["b"], abs=0.2)
    assert chart.marks[-1].label == "a"
    assert chart.x_ticks[0].label == "0.0001"
    assert charts.scatter([]) is None


def test_parallel_coordinates_break_a_line_where_a_trial_has_no_value() -> None:
    axes = [
        ("rank", charts.Scale(charts.CATEGORY, ("4", "8"))),
        ("rate", charts.Scale(charts.LOG)),
        ("loss", charts.Scale()),
    ]
    chart = charts.parallel(
        axes,
        [
            charts.Path("whole", [0, 1e-3, 1.0], "completed"),
            charts.Path("pruned", [1, 1e-2, None], "pruned"),
            charts.Path("gap", [0, None, 2.0], "completed"),
        ],
    )
    assert chart is not None
    drawn = {p.label: p for p in chart.paths}
    assert len(drawn["whole"].segments) == 1
    assert drawn["whole"].count == 3
    assert len(drawn["pruned"].segments) == 1
    assert drawn["pruned"].count == 2
    assert drawn["gap"].segments == []
    assert len(drawn["gap"].marks) == 2
    assert [a.label for a in chart.axes] == ["rank", "rate", "loss"]
    assert [t.label for t in chart.axes[0].ticks] == ["4", "8"]
