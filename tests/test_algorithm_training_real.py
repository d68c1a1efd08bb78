"""DPO, ORPO and GRPO train for real through the worker path, as SFT does
(tests/test_training_real.py): the API queues a local run of the tiny preset on its demo
dataset, a `manage.py qcluster` runs the Tunix trainer, and the run's row gets the algorithm's
own signals step by step, its final metrics and its checkpoints."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runs import algorithms, model_catalog, services
from runs.models import RunStatus
from tests.support.clusters import REPO_ROOT

# The database does not change what is tested here: the PostgreSQL pass runs it once.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
    pytest.mark.database_independent,
]

DEMO = REPO_ROOT / "runs" / "demo"
DATASETS = {
    "dpo": ("pairs-v1", "tunix-demo-preference-v1.jsonl"),
    "orpo": ("pairs-v1", "tunix-demo-preference-v1.jsonl"),
    "grpo": ("math-v1", "tunix-demo-math-v1.jsonl"),
}
# A few steps each: what the test shows is the wiring, and every step costs seconds on a CPU.
HYPER: dict[str, dict[str, Any]] = {
    "dpo": {"batch_size": 4, "max_steps": 8, "max_seq_length": 128},
    "orpo": {"batch_size": 4, "max_steps": 8, "max_seq_length": 128, "lambda_orpo": 0.2},
    "grpo": {
        "batch_size": 2,
        "max_steps": 4,
        "num_generations": 2,
        "max_new_tokens": 16,
        "reward": "length_penalty",
    },
}


@pytest.fixture
def real_trainer(
    tunix_runtime: None, clusters: Callable[..., Any], settings: Any, tmp_path: Path
) -> None:
    settings.TUNIX_TRAINER_COMMAND = None
    clusters(1, TUNIX_TRAINER_COMMAND="", TUNIX_MODELS_DIR=str(tmp_path / "models"))


@pytest.mark.parametrize("algorithm", ["dpo", "orpo", "grpo"])
def test_a_queued_run_of_each_algorithm_trains_and_reports_its_own_signals(
    real_trainer: None, operator_client: Any, viewer_client: Any, algorithm: str
) -> None:
    key, file_name = DATASETS[algorithm]
    services.dataset_import(key=key, source=io.BytesIO((DEMO / file_name).read_bytes()))
    body = {
        "dataset_key": key,
        "model_id": model_catalog.TINY_MODEL_ID,
        "mode": "local",
        "algorithm": algorithm,
        **HYPER[algorithm],
    }
    answer = operator_client.post("/api/tunix/run?mode=async", body, format="json")
    assert answer.status_code == 202, answer.content
    run_id = answer.json()["run_id"]

    deadline = time.monotonic() + 240
    while True:
        status = viewer_client.get(f"/api/tunix/runs/{run_id}/status").json()["status"]
        if status in {RunStatus.COMPLETED, RunStatus.FAILED}:
            break
        assert time.monotonic() < deadline, "the training did not finish"
        time.sleep(0.2)
    run = viewer_client.get(f"/api/tunix/runs/{run_id}").json()
    assert run["status"] == RunStatus.COMPLETED, (run["error_reason"], run["stderr"][-3000:])
    assert run["algorithm"] == algorithm
    steps = HYPER[algorithm]["max_steps"]
    assert run["progress"]["step"] == steps
    assert [int(step) for step, _ in run["loss_curve"]] == list(range(1, steps + 1))
    # Each of the algorithm's signals is a series with a point a step; no other algorithm's.
    declared = algorithms.ALGORITHMS[algorithm].signals
    for name in declared:
        assert [int(step) for step, _ in run["series"][name]] == list(range(1, steps + 1)), name
    others = set(algorithms.SIGNALS) - set(declared)
    assert not others & set(run["series"])
    for name in algorithms.ALGORITHMS[algorithm].results:
        assert isinstance(run["metrics"][name], float), name
    assert run["metrics"]["steps"] == steps
    if algorithm == "grpo":
        # length_penalty scores in [-1, 0]; the spread of a group is never negative.
        assert all(-1.0 <= value <= 0.0 for _, value in run["series"]["reward_mean"])
        assert all(value >= 0.0 for _, value in run["series"]["reward_std"])
    else:
        accuracy = [value for _, value in run["series"]["reward_accuracy"]]
        assert all(0.0 <= value <= 1.0 for value in accuracy), accuracy
    listed = viewer_client.get(f"/api/tunix/runs/{run_id}/artifacts").json()
    paths = [item["path"] for item in listed["data"]]
    # Tunix's RL cluster keeps the policy's checkpoints under actor/.
    where = "actor/" if algorithm == "grpo" else ""
    assert any(p.startswith(f"checkpoints/attempt-1/{where}{steps}/") for p in paths), paths
    config_file = viewer_client.get(f"/api/tunix/runs/{run_id}/artifacts/tunix_config.json")
    config = json.loads(b"".join(config_file.streaming_content))
    assert config["algorithm"] == algorithm
