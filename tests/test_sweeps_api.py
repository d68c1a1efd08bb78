"""Hyperparameter sweeps through the API and the services, with the status machine driven
directly (claim, finish, requeue) instead of workers: tests/test_sweeps_real.py runs them on
real clusters."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import IntegrityError, transaction
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import selectors, services, tuning
from runs.models import (
    FailureReason,
    RunStatus,
    Sweep,
    SweepStatus,
    TunixRun,
    WebhookDelivery,
)
from runs.outcomes import Ending, Reason, RunOutcome
from tests.factories import UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

URL = "/api/tunix/sweeps"

BODY: dict[str, Any] = {
    "base": {
        "dataset_key": "tunix-demo-v1",
        "model_id": "tunix-rt/tiny-llama3",
        "mode": "dry-run",
        "max_steps": 8,
    },
    "space": {
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "lora_rank": {"low": 4, "high": 16, "step": 4},
    },
    "metric": "eval_loss",
    "n_trials": 4,
    "concurrency": 2,
    "seed": 7,
}


def body(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BODY)
    out.update(changes)
    return out


def create(client: APIClient, **changes: Any) -> dict[str, Any]:
    response = client.post(URL, body(**changes), format="json")
    assert response.status_code == 201, response.content
    assert response["Location"].endswith(f"{URL}/{response.json()['id']}")
    data: dict[str, Any] = response.json()
    return data


def trials(sweep_id: str) -> list[TunixRun]:
    return list(TunixRun.objects.filter(sweep_id=sweep_id).order_by("trial_number"))


def finish(
    run: TunixRun,
    value: float | None = None,
    *,
    status: str = Ending.COMPLETED,
    curve: list[list[float]] | None = None,
) -> None:
    """The worker's part: claim the trial and record how it ended."""
    claimed = services.run_claim(run_id=run.id, worker_id="worker:test:1")
    assert claimed is not None
    metrics = {} if value is None else {"eval_loss": value}
    series = {"eval_loss": curve} if curve else {}
    if status == Ending.COMPLETED:
        outcome = RunOutcome(
            status=Ending.COMPLETED,
            exit_code=0,
            progress={"metrics": metrics, "series": series},
        )
    else:
        outcome = RunOutcome.failure(Reason.NONZERO_EXIT, "exited 1", exit_code=1)
    assert services.run_finish(run_id=run.id, attempt=claimed.attempt, outcome=outcome)


def start(run: TunixRun, curve: list[list[float]]) -> TunixRun:
    claimed = services.run_claim(run_id=run.id, worker_id="worker:test:2")
    assert claimed is not None
    assert services.run_heartbeat(
        run_id=run.id, attempt=claimed.attempt, updates={"series": {"eval_loss": curve}}
    )
    return claimed


BAD_INPUTS = [
    ("space", {"space": {}}),
    ("space.foo", {"space": {"foo": {"low": 1, "high": 2}}}),
    ("space.beta", {"space": {"beta": {"low": 0.1, "high": 1.0}}}),
    ("space.learning_rate", {"space": {"learning_rate": {"low": 0.0, "high": 0.1}}}),
    ("space.lora_rank", {"space": {"lora_rank": {"low": 4, "high": 4096}}}),
    ("space.lora_rank", {"space": {"lora_rank": {"choices": [8, -1]}}}),
    ("space.learning_rate", {"space": {"learning_rate": {"low": 0.1, "high": 0.01}}}),
    ("space.max_steps", {"space": {"max_steps": {"low": 4, "high": 8}}}),  # fixed in the base
    ("n_trials", {"n_trials": 0}),
    ("n_trials", {"n_trials": 201}),
    ("concurrency", {"concurrency": 0}),
    ("concurrency", {"concurrency": 17}),
    ("metric", {"metric": "accuracy"}),
    ("direction", {"metric": "steps"}),
    ("direction", {"direction": "sideways"}),
    ("sampler", {"sampler": "bayes"}),
    ("pruner", {"pruner": "hyperband"}),
    ("pruner", {"pruner": "median", "metric": "rouge_l"}),
    (
        "n_trials",
        {"sampler": "grid", "space": {"lora_rank": {"choices": [4, 8, 16]}}, "n_trials": 2},
    ),
    ("space.learning_rate", {"sampler": "grid"}),  # a float range without points
    ("base.learning_rate", {"base": {**BODY["base"], "learning_rate": 5.0}}),
    ("base.dataset_key", {"base": {**BODY["base"], "dataset_key": "missing-v1"}}),
    ("base.algorithm", {"base": {**BODY["base"], "algorithm": "ppo"}}),
    ("base.client_request_id", {"base": {**BODY["base"], "client_request_id": "k"}}),
    ("base.model_id", {"base": {**BODY["base"], "model_id": "nobody/none"}}),
    ("surprise", {"surprise": 1}),
]


@pytest.mark.parametrize(("field", "changes"), BAD_INPUTS, ids=[f for f, _ in BAD_INPUTS])
def test_bad_input_is_a_problem_naming_the_field_and_writes_nothing(
    operator_client: APIClient, demo_dataset: Any, field: str, changes: dict[str, Any]
) -> None:
    response = operator_client.post(URL, body(**changes), format="json")
    found = problem(response, 400)
    assert field in {error["field"] for error in found["errors"]}, found
    assert not Sweep.objects.exists()
    assert not TunixRun.objects.exists()
    assert not OrmQ.objects.exists()


def test_creation_submits_exactly_concurrency_trials_through_the_run_queue(
    operator_client: APIClient, operator: User, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    made = trials(sweep["id"])
    assert [t.trial_number for t in made] == [0, 1]
    assert {t.status for t in made} == {RunStatus.PENDING}
    assert OrmQ.objects.count() == 2  # each with its queue task, like any async run
    for run in made:
        assert run.created_by == operator
        assert run.client_request_id == f"sweep-{sweep['id']}-{run.trial_number}"
        assert 1e-4 <= run.config["learning_rate"] <= 1e-2
        assert run.config["lora_rank"] in {4, 8, 12, 16}
        assert run.config["max_steps"] == 8  # the base's fixed value
    assert sweep["progress"] == {
        "n_trials": 4,
        "made": 2,
        "pending": 2,
        "running": 0,
        "completed": 0,
        "pruned": 0,
        "failed": 0,
        "ended": 0,
    }
    assert [t["number"] for t in sweep["trials"]] == [0, 1]
    assert sweep["status"] == SweepStatus.RUNNING
    run = operator_client.get(sweep["trials"][1]["run_url"]).json()
    assert (run["sweep"], run["trial_number"]) == (sweep["id"], 1)


def test_a_trial_ending_asks_for_the_next_and_never_more_than_n_trials(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    first, second = trials(sweep["id"])
    finish(first, 2.0)
    assert len(trials(sweep["id"])) == 3
    finish(second, 1.0)
    assert len(trials(sweep["id"])) == 4
    for run in trials(sweep["id"])[2:]:
        finish(run, 3.0)
    assert len(trials(sweep["id"])) == 4
    done = Sweep.objects.get(id=sweep["id"])
    assert done.status == SweepStatus.COMPLETED
    assert done.completed_at is not None
    assert done.best_run_id == second.id  # the lowest eval loss
    services.sweep_advance(sweep_id=done.id)  # late callers change nothing
    assert len(trials(sweep["id"])) == 4


def test_the_best_trial_is_the_one_with_the_best_metric_in_the_sweeps_direction(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client, metric="wall_seconds", direction="maximize", concurrency=4)
    runs = trials(sweep["id"])
    for run, value in zip(runs, [3.0, 9.0, 1.0, 9.0], strict=True):
        claimed = services.run_claim(run_id=run.id, worker_id="w")
        assert claimed is not None
        services.run_finish(
            run_id=run.id,
            attempt=1,
            outcome=RunOutcome(
                Ending.COMPLETED, exit_code=0, progress={"metrics": {"wall_seconds": value}}
            ),
        )
    detail = operator_client.get(f"{URL}/{sweep['id']}").json()
    assert detail["status"] == SweepStatus.COMPLETED
    assert detail["best_trial"]["number"] == 1  # 9.0, and the earlier of the tie
    assert detail["best_run_id"] == str(runs[1].id)
    assert detail["best_value"] == 9.0
    assert [t["value"] for t in detail["trials"]] == [3.0, 9.0, 1.0, 9.0]


def test_failed_trials_count_as_ended_and_are_not_sampled_again(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client, n_trials=3, concurrency=1)
    for _ in range(3):
        (run,) = [t for t in trials(sweep["id"]) if not t.is_terminal]
        finish(run, status=Ending.FAILED)
    assert len(trials(sweep["id"])) == 3
    done = Sweep.objects.get(id=sweep["id"])
    assert done.status == SweepStatus.COMPLETED
    assert done.best_run is None
    detail = operator_client.get(f"{URL}/{sweep['id']}").json()
    assert detail["progress"]["failed"] == 3
    assert detail["best_trial"] is None


def test_a_requeued_trial_resumes_as_the_same_trial(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    first = trials(sweep["id"])[0]
    claimed = services.run_claim(run_id=first.id, worker_id="worker:lost:1")
    assert claimed is not None
    assert services.run_requeue(run_id=first.id, attempt=1, reason="worker lost")
    assert len(trials(sweep["id"])) == 2  # not a new trial
    finish(first, 1.5)
    again = TunixRun.objects.get(id=first.id)
    assert (again.attempt, again.trial_number) == (2, 0)
    assert len(trials(sweep["id"])) == 3


def test_advance_is_idempotent_and_a_trial_number_is_taken_once(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    assert services.sweep_advance(sweep_id=sweep["id"]) == []
    assert services.sweep_advance(sweep_id=sweep["id"]) == []
    assert services.sweep_reconcile() == 0
    assert len(trials(sweep["id"])) == 2
    first = trials(sweep["id"])[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        TunixRun.objects.create(
            dataset=first.dataset, model_id=first.model_id, sweep_id=first.sweep_id, trial_number=0
        )


def test_the_same_rows_ask_for_the_same_trial(demo_dataset: Any) -> None:
    """A retried ask (a crash between asking and committing) asks for the same parameters."""
    space = tuning.parse_space(BODY["space"], "sft")
    spec = tuning.StudySpec(
        space=space, direction="minimize", sampler="tpe", pruner="", seed=3, n_trials=8
    )
    done = [
        tuning.TrialRecord(number=i, params=tuning.next_params(spec, []), state="running")
        for i in range(1)
    ]
    assert tuning.next_params(spec, done) == tuning.next_params(spec, done)
    assert tuning.next_params(spec, done) != done[0].params


def test_a_grid_walks_every_point_once(operator_client: APIClient, demo_dataset: Any) -> None:
    space = {"lora_rank": {"choices": [4, 8]}, "num_epochs": {"low": 1, "high": 2}}
    sweep = create(operator_client, sampler="grid", space=space, n_trials=4, concurrency=4)
    points = {(t.config["lora_rank"], t.config["num_epochs"]) for t in trials(sweep["id"])}
    assert points == {(4, 1), (4, 2), (8, 1), (8, 2)}


def test_a_float_grid_with_a_step_is_enumerated(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    space = {"learning_rate": {"low": 0.001, "high": 0.003, "step": 0.001}}
    sweep = create(operator_client, sampler="grid", space=space, n_trials=3, concurrency=3)
    rates = sorted(t.config["learning_rate"] for t in trials(sweep["id"]))
    assert rates == pytest.approx([0.001, 0.002, 0.003])


def test_a_pruned_trial_is_cancelled_keeps_its_curve_and_counts_toward_the_total(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client, pruner="median", n_trials=3)
    first, second = trials(sweep["id"])
    finish(first, 1.0, curve=[[2, 2.0], [4, 1.0]])
    running = start(second, [[2, 9.0]])
    assert services.sweep_trial_report(run_id=second.id, attempt=running.attempt)
    pruned = TunixRun.objects.get(id=second.id)
    assert pruned.status == RunStatus.CANCELLED
    assert pruned.error_reason == FailureReason.PRUNED
    assert "pruned at step 2" in pruned.error_message
    assert pruned.series == {"eval_loss": [[2, 9.0]]}  # its curve stays
    # The worker's next heartbeat no longer matches: it stops the training.
    assert not services.run_heartbeat(run_id=second.id, attempt=running.attempt)
    made = trials(sweep["id"])
    assert len(made) == 3  # the next trial was asked for
    third = start(made[2], [[2, 1.5]])
    assert not services.sweep_trial_report(run_id=third.id, attempt=third.attempt)
    detail = operator_client.get(f"{URL}/{sweep['id']}").json()
    assert detail["progress"]["pruned"] == 1
    assert detail["trials"][1]["status"] == "pruned"
    assert detail["trials"][1]["run_status"] == RunStatus.CANCELLED


def test_successive_halving_prunes_a_trial_below_its_rung(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client, pruner="successive_halving", n_trials=3, concurrency=3)
    first, second, third = trials(sweep["id"])
    start(first, [[1, 1.0], [3, 0.5]])
    start(second, [[1, 1.1], [3, 0.6]])
    running = start(third, [[1, 5.0]])
    assert services.sweep_trial_report(run_id=third.id, attempt=running.attempt)
    assert TunixRun.objects.get(id=third.id).error_reason == FailureReason.PRUNED


def test_cancel_cancels_pending_trials_stops_running_ones_and_asks_no_more(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    first, _ = trials(sweep["id"])
    running = start(first, [[2, 3.0]])
    response = operator_client.post(f"{URL}/{sweep['id']}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == SweepStatus.CANCELLED
    assert {t.status for t in trials(sweep["id"])} == {RunStatus.CANCELLED}
    assert len(trials(sweep["id"])) == 2
    assert not services.run_heartbeat(run_id=first.id, attempt=running.attempt)
    problem(operator_client.post(f"{URL}/{sweep['id']}/cancel"), 409)


def test_a_sweep_is_visible_as_its_runs_are(
    operator_client: APIClient, demo_dataset: Any, viewer_client: APIClient
) -> None:
    sweep = create(operator_client)
    # A team member who reads every run sees the sweep, and may not cancel it.
    assert viewer_client.get(f"{URL}/{sweep['id']}").status_code == 200
    problem(viewer_client.post(f"{URL}/{sweep['id']}/cancel"), 403)
    problem(viewer_client.post(URL, body(), format="json"), 403)
    # A launcher without runs.view_tunixrun sees only their own sweeps.
    stranger = UserFactory()
    stranger.user_permissions.add(Permission.objects.get(codename="add_tunixrun"))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=stranger.pk))
    assert client.get(URL).json()["data"] == []
    problem(client.get(f"{URL}/{sweep['id']}"), 404)
    problem(client.post(f"{URL}/{sweep['id']}/cancel"), 404)
    own = client.post(URL, body(), format="json")
    assert own.status_code == 201
    assert [s["id"] for s in client.get(URL).json()["data"]] == [own.json()["id"]]
    listed = operator_client.get(URL).json()["data"]
    assert {s["id"] for s in listed} == {sweep["id"], own.json()["id"]}
    assert APIClient().get(URL).status_code in {401, 403}


def test_the_list_shows_progress_and_filters_by_status(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    finish(trials(sweep["id"])[0], 1.0)
    (item,) = operator_client.get(URL, {"status": "running"}).json()["data"]
    assert (item["trials_made"], item["trials_ended"]) == (3, 1)
    assert operator_client.get(URL, {"status": "completed"}).json()["data"] == []
    problem(operator_client.get(URL, {"status": "sideways"}), 400)


def test_sweep_completed_is_announced_once_with_the_best_run(
    operator_client: APIClient, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_WEBHOOK_URLS = ["https://hooks.example/sweeps"]
    settings.TUNIX_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    sweep = create(operator_client, n_trials=2)
    for run, value in zip(trials(sweep["id"]), [2.0, 1.0], strict=True):
        finish(run, value)
    services.sweep_advance(sweep_id=sweep["id"])
    (event,) = WebhookDelivery.objects.filter(sweep_id=sweep["id"])
    assert event.event_type == "sweep.completed"
    assert event.run_id is None
    data = event.payload["data"]
    best = trials(sweep["id"])[1]
    assert data["best_run_id"] == str(best.id)
    assert (data["metric"], data["best_value"]) == ("eval_loss", 1.0)
    assert data["links"]["sweep"].endswith(f"{URL}/{sweep['id']}")
    # Each trial announced its own ending as any run does.
    assert WebhookDelivery.objects.filter(run__sweep_id=sweep["id"]).count() == 2


def test_a_trial_that_can_no_longer_be_submitted_stops_the_sweep_not_the_run(
    operator_client: APIClient, operator: User, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    operator.user_permissions.remove(Permission.objects.get(codename="add_tunixrun"))
    first = trials(sweep["id"])[0]
    finish(first, 1.0)
    assert TunixRun.objects.get(id=first.id).status == RunStatus.COMPLETED
    stopped = Sweep.objects.get(id=sweep["id"])
    assert stopped.status == SweepStatus.CANCELLED
    assert "could not submit the next trial" in stopped.error_message


def test_selectors_give_the_pages_trials_with_their_curves(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    sweep = create(operator_client)
    first = trials(sweep["id"])[0]
    finish(first, 1.0, curve=[[2, 2.0], [4, 1.0]])
    detail = selectors.sweep_detail(sweep_id=sweep["id"])
    assert detail is not None
    assert detail.best is not None
    assert detail.best.run.id == first.id
    assert detail.trials[0].run.series["eval_loss"] == [[2, 2.0], [4, 1.0]]
    assert detail.trials[0].params.keys() == {"learning_rate", "lora_rank"}
    assert detail.progress.fraction == 0.25
    assert selectors.sweep_detail(sweep_id="not-a-uuid") is None


def test_a_worker_stops_a_trial_its_pruner_prunes_from_the_progress_it_reports(
    operator_client: APIClient, demo_dataset: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The whole worker path: the trial's progress lines reach its heartbeat, a new eval loss
    point asks the pruner, and the pruned trial's job is stopped as a cancelled run's is."""
    from runs.services import execution
    from tests.test_execution_backends import ScriptedBackend, ScriptedJob

    settings.TUNIX_PROGRESS_SECONDS = 0.01
    settings.TUNIX_HEARTBEAT_SECONDS = 0.01
    sweep = create(operator_client, pruner="median", n_trials=3)
    first, second = trials(sweep["id"])
    finish(first, 1.0, curve=[[1, 2.0], [2, 1.0]])
    lines = []
    for step in range(1, 200):
        lines.append(f'TUNIX_PROGRESS {{"step": {step}, "total_steps": 199, "loss": 9.0}}')
        lines.append(f'TUNIX_PROGRESS {{"step": {step}, "total_steps": 199, "eval_loss": 9.0}}')
    job = ScriptedJob(lines, pace=0.005)
    monkeypatch.setattr(execution, "get_backend", lambda mode: ScriptedBackend(job))
    claimed = services.run_claim(run_id=second.id, worker_id="worker:test:3")
    assert claimed is not None

    ended = services.run_execute(run=claimed)

    assert job.stopped_with is not None  # stopped, not run to its end
    assert (ended.status, ended.error_reason) == (RunStatus.CANCELLED, FailureReason.PRUNED)
    assert ended.series["eval_loss"][0] == [1, 9.0]  # the curve up to the pruning stays
    assert len(trials(sweep["id"])) == 3


def test_the_admin_shows_a_sweeps_trials_and_cancels_it_through_the_service(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    from django.test import Client

    sweep = create(operator_client)
    admin = User.objects.create_superuser("root", password="root-password-123")
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/runs/sweep/{sweep['id']}/change/")
    assert page.status_code == 200
    assert page.content.decode().count("/admin/runs/tunixrun/") >= 2  # each trial links its run
    response = client.post(
        "/admin/runs/sweep/", {"action": "cancel", "_selected_action": [sweep["id"]]}, follow=True
    )
    assert "1 sweep(s) cancelled." in [str(m) for m in response.context["messages"]]
    assert Sweep.objects.get(id=sweep["id"]).status == SweepStatus.CANCELLED
    assert {t.status for t in trials(sweep["id"])} == {RunStatus.CANCELLED}
