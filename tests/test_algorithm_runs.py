"""A run chooses its training algorithm (sft, dpo, orpo, grpo): each takes its own
hyperparameters and datasets of its own formats, from the API, the launch page and the dry-run,
and refuses anything else with a 400 naming the field, creating nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from runs import algorithms, services, training_config
from runs.models import Dataset, RunStatus, TunixRun
from runs.progress import ProgressTracker
from tests.factories import DatasetFactory, TunixRunFactory
from tests.support.clusters import REPO_ROOT
from tests.support.pages import html
from tests.support.problems import problem

DEMO = REPO_ROOT / "runs" / "demo"
TINY = "tunix-rt/tiny-llama3"


@pytest.fixture
def pairs(db: None) -> Dataset:
    with (DEMO / "tunix-demo-preference-v1.jsonl").open("rb") as handle:
        return services.dataset_import(key="pairs-v1", source=handle)


@pytest.fixture
def math(db: None) -> Dataset:
    with (DEMO / "tunix-demo-math-v1.jsonl").open("rb") as handle:
        return services.dataset_import(key="math-v1", source=handle)


def submit(client: APIClient, body: dict[str, Any], query: str = "") -> Any:
    return client.post(f"/api/tunix/run{query}", body, format="json")


# --------------------------------------------------------------------------- the API


@pytest.mark.django_db
def test_a_dpo_run_is_queued_with_its_own_hyperparameters_and_defaults(
    operator_client: APIClient, pairs: Dataset
) -> None:
    body = {"dataset_key": "pairs-v1", "model_id": TINY, "algorithm": "dpo", "beta": 0.25}
    answer = submit(operator_client, body, "?mode=async")
    assert answer.status_code == 202, answer.content
    assert answer.json()["algorithm"] == "dpo"
    run = TunixRun.objects.get()
    assert run.algorithm == "dpo"
    assert run.config["beta"] == 0.25
    # DPO's table rows, none of the others': no generation eval, no GRPO settings.
    assert set(run.config) == {p.name for p in training_config.params_for("dpo")}
    assert "eval_max_items" not in run.config
    assert "num_generations" not in run.config
    listed = operator_client.get("/api/tunix/runs?algorithm=dpo").json()["data"]
    assert [item["algorithm"] for item in listed] == ["dpo"]
    assert operator_client.get("/api/tunix/runs?algorithm=sft").json()["data"] == []


@pytest.mark.django_db
def test_a_grpo_run_takes_its_rewards_by_name_and_fills_grpo_defaults(
    operator_client: APIClient, math: Dataset
) -> None:
    body = {"dataset_key": "math-v1", "model_id": TINY, "algorithm": "grpo", "reward": "format"}
    assert submit(operator_client, body).status_code == 201
    run = TunixRun.objects.get()
    assert run.config["reward"] == "format"
    assert run.config["num_generations"] == 4
    assert run.config["beta"] == 0.04  # GRPO's KL weight, not DPO's beta
    assert run.config["temperature"] == 0.9


@pytest.mark.django_db
def test_an_sft_request_without_an_algorithm_is_what_it_always_was(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    answer = submit(operator_client, {"dataset_key": "tunix-demo-v1", "model_id": TINY})
    assert answer.status_code == 201
    run = TunixRun.objects.get()
    assert run.algorithm == "sft"
    assert set(run.config) == {p.name for p in training_config.params_for("sft")}
    detail = operator_client.get(f"/api/tunix/runs/{run.id}").json()
    assert detail["algorithm"] == "sft"
    assert "chosen_reward" not in detail["series"]  # no other algorithm's signals


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["", "?mode=async"])
@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"algorithm": "ppo"}, "algorithm", "ppo"),
        ({"beta": 0.1}, "beta", "applies to dpo and grpo, not to sft"),
        ({"algorithm": "dpo", "lambda_orpo": 0.2}, "lambda_orpo", "applies to orpo, not to dpo"),
        ({"algorithm": "dpo", "num_generations": 4}, "num_generations", "not to dpo"),
        ({"algorithm": "grpo", "eval_max_items": 8}, "eval_max_items", "applies to sft"),
        ({"algorithm": "grpo", "num_generations": 1}, "num_generations", "2"),
        ({"algorithm": "grpo", "reward": "exec_this"}, "reward", "answer_match"),
        ({"algorithm": "grpo", "temperature": 0}, "temperature", "(0.0, 2.0]"),
        (
            {"algorithm": "grpo", "max_seq_length": 64, "max_new_tokens": 63},
            "max_new_tokens",
            "for the prompt",
        ),
        ({"algorithm": "dpo", "beta": 0}, "beta", "(0.0, 100.0]"),
    ],
)
def test_a_wrong_algorithm_or_hyperparameter_is_a_400_naming_the_field(
    operator_client: APIClient,
    pairs: Dataset,
    query: str,
    extra: dict[str, Any],
    field: str,
    words: str,
) -> None:
    body = {"dataset_key": "pairs-v1", "model_id": TINY, **extra}
    refused = problem(submit(operator_client, body, query), 400)
    assert [error["field"] for error in refused["errors"]] == [field]
    assert words in json.dumps(refused)
    assert not TunixRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("algorithm", "dataset", "takes"),
    [
        ("dpo", "tunix-demo-v1", "sft trains on it"),
        ("orpo", "math-v1", "grpo trains on it"),
        ("grpo", "pairs-v1", "dpo and orpo train on it"),
        ("sft", "math-v1", "grpo trains on it"),
    ],
)
@pytest.mark.parametrize("query", ["", "?mode=async"])
def test_a_dataset_of_another_algorithms_format_is_refused_naming_who_takes_it(
    operator_client: APIClient,
    demo_dataset: Any,
    pairs: Dataset,
    math: Dataset,
    algorithm: str,
    dataset: str,
    takes: str,
    query: str,
) -> None:
    body = {"dataset_key": dataset, "model_id": TINY, "algorithm": algorithm}
    refused = problem(submit(operator_client, body, query), 400)
    assert refused["errors"][0]["field"] == "dataset_key"
    assert takes in refused["detail"]
    assert algorithms.ALGORITHMS[algorithm].trains_on in refused["detail"]
    assert not TunixRun.objects.exists()


@pytest.mark.django_db
def test_each_algorithm_is_accepted_on_a_dataset_of_its_format(
    operator_client: APIClient, demo_dataset: Any, pairs: Dataset, math: Dataset
) -> None:
    for algorithm, dataset in [
        ("sft", "tunix-demo-v1"),
        ("dpo", "pairs-v1"),
        ("orpo", "pairs-v1"),
        ("grpo", "math-v1"),
    ]:
        body = {"dataset_key": dataset, "model_id": TINY, "algorithm": algorithm}
        assert submit(operator_client, body, "?mode=async").status_code == 202
    assert sorted(TunixRun.objects.values_list("algorithm", flat=True)) == [
        "dpo",
        "grpo",
        "orpo",
        "sft",
    ]


@pytest.mark.django_db
def test_an_idempotency_key_reused_for_another_algorithm_is_refused(
    operator_client: APIClient, pairs: Dataset
) -> None:
    body = {"dataset_key": "pairs-v1", "model_id": TINY, "algorithm": "dpo"}
    first = submit(operator_client, {**body, "client_request_id": "k-1"})
    assert first.status_code == 201
    again = submit(operator_client, {**body, "client_request_id": "k-1"})
    assert again.json()["run_id"] == first.json()["run_id"]
    other = submit(operator_client, {**body, "algorithm": "orpo", "client_request_id": "k-1"})
    assert "different request" in problem(other, 422)["detail"]


@pytest.mark.django_db
def test_a_dry_run_of_a_preference_run_checks_and_writes_its_algorithm(
    operator_client: APIClient, pairs: Dataset, settings: Any, tmp_path: Path
) -> None:
    settings.TUNIX_ARTIFACTS_ROOT = str(tmp_path)
    body = {"dataset_key": "pairs-v1", "model_id": TINY, "algorithm": "orpo", "lambda_orpo": 0.3}
    answer = submit(operator_client, body)
    assert answer.status_code == 201, answer.content
    run = TunixRun.objects.get()
    assert run.status == RunStatus.COMPLETED, run.stderr
    assert "algorithm:        orpo" in run.stdout
    assert "lambda_orpo = 0.3" in run.stdout
    config = json.loads((tmp_path / str(run.id) / "tunix_config.json").read_text())
    assert config["algorithm"] == "orpo"
    assert config["training"]["lambda_orpo"] == 0.3
    assert "eval_max_items" not in config["training"]


# --------------------------------------------------------------------------- the launch page


@pytest.mark.django_db
def test_the_launch_page_shows_only_the_chosen_algorithms_fields_and_datasets(
    web: Client, demo_dataset: Any, pairs: Dataset, math: Dataset
) -> None:
    sft = html(web.get("/runs/new"))
    assert 'name="eval_max_items"' in sft
    assert 'name="beta"' not in sft
    assert 'value="tunix-demo-v1"' in sft
    assert 'value="pairs-v1"' not in sft
    grpo = html(web.get("/runs/new?algorithm=grpo"))
    for name in ("num_generations", "max_new_tokens", "temperature", "beta", "epsilon", "reward"):
        assert f'name="{name}"' in grpo, name
    assert 'name="eval_max_items"' not in grpo
    assert 'name="lambda_orpo"' not in grpo
    assert 'value="math-v1"' in grpo
    assert 'value="tunix-demo-v1"' not in grpo
    assert '<option value="answer_match" selected>' in grpo
    orpo = html(web.get("/runs/new?algorithm=orpo"))
    assert 'name="lambda_orpo"' in orpo
    assert 'name="num_generations"' not in orpo
    # Every algorithm is a link: the page works without JavaScript.
    for name in algorithms.ALGORITHMS:
        assert f'href="?algorithm={name}"' in sft
    assert 'data-testid="algorithm-orpo" aria-current="page"' in orpo


@pytest.mark.django_db
def test_launching_from_the_page_queues_a_run_of_the_chosen_algorithm(
    web: Client, math: Dataset
) -> None:
    form = {
        "algorithm": "grpo",
        "dataset": "math-v1",
        "model_id": TINY,
        "mode": "local",
        "execution": "async",
        "num_generations": "2",
        "reward": "length_penalty",
    }
    assert web.post("/runs/new", form).status_code == 302
    run = TunixRun.objects.get()
    assert (run.algorithm, run.status) == ("grpo", RunStatus.PENDING)
    assert run.config["num_generations"] == 2
    assert run.config["reward"] == "length_penalty"


@pytest.mark.django_db
def test_the_launch_page_shows_a_refused_value_by_its_field_and_creates_nothing(
    web: Client, math: Dataset
) -> None:
    form = {
        "algorithm": "grpo",
        "dataset": "math-v1",
        "model_id": TINY,
        "mode": "dry-run",
        "execution": "async",
        "num_generations": "1",
    }
    page = html(web.post("/runs/new", form))
    assert "num_generations" in page
    assert "Ensure this value is greater than or equal to 2" in page
    assert not TunixRun.objects.exists()


@pytest.mark.django_db
def test_an_algorithm_without_a_dataset_of_its_format_says_so(
    web: Client, demo_dataset: Any
) -> None:
    page = html(web.get("/runs/new?algorithm=dpo"))
    assert 'data-testid="no-dataset-for-algorithm"' in page
    assert "preference pairs" in page


# --------------------------------------------------------------------------- the run's progress


def test_a_dpo_step_line_adds_points_to_its_reward_series_and_the_result_keeps_its_margin() -> None:
    tracker = ProgressTracker()
    tracker.feed_line(
        'TUNIX_PROGRESS {"step": 1, "total_steps": 4, "loss": 0.69, "chosen_reward": 0.01, '
        '"rejected_reward": -0.02, "reward_margin": 0.03, "reward_accuracy": 0.75, "junk": 1}'
    )
    tracker.feed_line('TUNIX_RESULT {"train_loss": 0.6, "reward_margin": 0.4, "kl": 2}')
    snapshot = tracker.snapshot()
    assert snapshot["series"] == {
        "chosen_reward": [[1, 0.01]],
        "rejected_reward": [[1, -0.02]],
        "reward_margin": [[1, 0.03]],
        "reward_accuracy": [[1, 0.75]],
    }
    # A result keeps the algorithms' results, not any signal name.
    assert snapshot["metrics"] == {"train_loss": 0.6, "reward_margin": 0.4}


def test_every_signal_and_result_an_algorithm_declares_has_a_label() -> None:
    for algorithm in algorithms.ALGORITHMS.values():
        assert algorithm.formats, algorithm.name
        for key in algorithm.results:
            assert key in algorithm.signals, (algorithm.name, key)
        grouped = [key for _, keys in algorithm.charts() for key in keys]
        assert sorted(grouped) == sorted(algorithm.signals), algorithm.name


def test_every_hyperparameter_row_names_registered_algorithms_only() -> None:
    for param in training_config.PARAMS:
        assert param.algorithms is None or param.algorithms <= set(algorithms.ALGORITHMS)
    for name in algorithms.ALGORITHMS:
        names = [p.name for p in training_config.params_for(name)]
        assert len(names) == len(set(names)), name  # one row of a name per algorithm


@pytest.mark.django_db
def test_the_run_page_charts_a_grpo_runs_reward_and_kl(
    web: Client, math: Dataset, operator: Any
) -> None:
    run = services.run_submit(
        user=operator,
        request=services.RunRequest(dataset_key="math-v1", model_id=TINY, algorithm="grpo"),
        enqueue=False,
    ).run
    TunixRun.objects.filter(id=run.id).update(
        loss_curve=[[1, 0.1], [2, 0.05]],
        series={
            "reward_mean": [[1, 0.2], [2, 0.6]],
            "reward_std": [[1, 0.1], [2, 0.3]],
            "kl": [[1, 0.0], [2, 0.01]],
        },
    )
    page = html(web.get(f"/runs/{run.id}"))
    assert 'data-testid="reward-mean-chart"' in page
    assert 'data-testid="kl-chart"' in page
    assert 'data-testid="run-algorithm">GRPO<' in page


# --------------------------------------------------------------------------- the trainer


@pytest.mark.processes
def test_a_worker_whose_tunix_lacks_the_algorithm_fails_the_run_naming_the_module(
    tmp_path: Path,
) -> None:
    """The trainer, as a worker runs it, on an interpreter where Tunix's GRPO package cannot be
    imported: it refuses before training, with reason runtime_missing and the module."""
    spec = {
        "run_id": "r",
        "algorithm": "grpo",
        "model": {"id": TINY},
        "dataset": {"key": "math-v1", "path": str(DEMO / "tunix-demo-math-v1.jsonl")},
        "training": training_config.defaults("grpo"),
        "output": {
            "dir": str(tmp_path),
            "checkpoints": str(tmp_path / "checkpoints" / "attempt-1"),
            "metrics": str(tmp_path / "metrics" / "attempt-1"),
        },
    }
    config = tmp_path / "tunix_config.json"
    config.write_text(json.dumps(spec))
    # None in sys.modules makes an import of that package fail, as on a build without it.
    hide = (
        "import sys; sys.modules['tunix.rl.grpo'] = None; from runs import trainer; "
        f"sys.exit(trainer.main([{str(config)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    error = json.loads(proc.stdout.split("TUNIX_ERROR ", 1)[1].splitlines()[0])
    assert error["reason"] == "runtime_missing"
    assert "tunix.rl.grpo.grpo_learner" in error["message"]
    assert not any((tmp_path / "checkpoints" / "attempt-1").iterdir())


# --------------------------------------------------------------------------- best runs


@pytest.mark.django_db
def test_a_grpo_datasets_runs_rank_by_mean_reward_in_the_api_and_on_its_page(
    viewer_client: APIClient, web: Client
) -> None:
    dataset = DatasetFactory(key="math-v1", format="prompt_answer")
    rewards = {"low": -0.4, "high": 0.8, "middle": 0.1}
    runs = {
        name: TunixRunFactory(
            dataset=dataset,
            completed=True,
            algorithm="grpo",
            metrics={"reward_mean": value, "train_loss": 0.01, "steps": 8.0},
        )
        for name, value in rewards.items()
    }
    answer = viewer_client.get("/api/tunix/runs", {"dataset_key": "math-v1", "sort": "reward_mean"})
    assert answer.status_code == 200, answer.content
    order = [item["run_id"] for item in answer.json()["data"]]
    assert order == [str(runs[name].id) for name in ("high", "middle", "low")]
    # Its page ranks by what its runs have, with no metric asked for: the mean reward.
    page = html(web.get("/datasets/math-v1"))
    assert "mean reward" in page
    assert page.index(str(runs["high"].id)[:8]) < page.index(str(runs["low"].id)[:8])


@pytest.mark.processes
@pytest.mark.parametrize("algorithm", ["dpo", "grpo"])
def test_the_trainer_process_reports_an_algorithms_refusal_with_its_reason(
    tmp_path: Path, algorithm: str
) -> None:
    """``python -m runs.trainer`` as the worker starts it: a refusal raised in an algorithm's
    module (a real model whose checkpoint this host lacks) is a TUNIX_ERROR line and exit 2,
    not a traceback."""
    dataset = "tunix-demo-preference-v1.jsonl" if algorithm == "dpo" else "tunix-demo-math-v1.jsonl"
    spec = {
        "run_id": "r",
        "algorithm": algorithm,
        "model": {"id": "Qwen/Qwen3-0.6B", "checkpoint_dir": str(tmp_path / "models" / "q")},
        "dataset": {"key": "d", "path": str(DEMO / dataset)},
        "training": training_config.defaults(algorithm),
        "output": {
            "dir": str(tmp_path),
            "checkpoints": str(tmp_path / "checkpoints" / "attempt-1"),
            "metrics": str(tmp_path / "metrics" / "attempt-1"),
        },
    }
    config = tmp_path / "tunix_config.json"
    config.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "runs.trainer", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = json.loads(proc.stdout.split("TUNIX_ERROR ", 1)[1].splitlines()[0])
    assert error["reason"] == "model_unavailable"
    assert "lacks" in error["message"]
