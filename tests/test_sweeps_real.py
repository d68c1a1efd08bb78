"""Sweeps on real `manage.py qcluster` processes: a real Tunix sweep of the tiny preset (TPE,
median pruner, two clusters), and a sweep that survives a cluster killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs import model_catalog
from runs.models import TERMINAL_STATUSES, FailureReason, RunStatus, Sweep, SweepStatus, TunixRun
from tests.support.clusters import QCluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(480)]

StartClusters = Callable[..., list[QCluster]]


def trials(sweep_id: str) -> list[TunixRun]:
    return list(TunixRun.objects.filter(sweep_id=sweep_id).order_by("trial_number"))


def sweep_ended(sweep_id: str) -> bool:
    return Sweep.objects.get(id=sweep_id).status != SweepStatus.RUNNING


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not
    overlap)."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda event: (event[0], event[1]),
    )
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def test_a_real_tiny_sweep_runs_four_trials_two_at_a_time_and_marks_the_best(
    tunix_runtime: None,
    clusters: StartClusters,
    settings: Any,
    tmp_path: Path,
    operator_client: APIClient,
) -> None:
    settings.TUNIX_TRAINER_COMMAND = None
    clusters(
        2,
        TUNIX_TRAINER_COMMAND="",
        TUNIX_MODELS_DIR=str(tmp_path / "models"),
        TUNIX_Q_WORKERS="1",
        TUNIX_HEARTBEAT_SECONDS="1",
        TUNIX_STALE_AFTER_SECONDS="60",  # a busy host's JAX start-up is not a lost worker
    )
    body = {
        "base": {
            "dataset_key": "tunix-demo-v1",
            "model_id": model_catalog.TINY_MODEL_ID,
            "dry_run": False,
            # 8 steps, an evaluation after each (runs/trainer.py: eval_interval): eight
            # intermediate values for the pruner; no generation eval, to stay quick.
            "max_steps": 8,
            "eval_max_items": 0,
        },
        "space": {
            "learning_rate": {"low": 1e-3, "high": 3e-2, "log": True},
            "lora_rank": {"choices": [0, 8]},
        },
        "metric": "eval_loss",
        "n_trials": 4,
        "concurrency": 2,
        "sampler": "tpe",
        "pruner": "median",
        "seed": 11,
    }
    response = operator_client.post("/api/tunix/sweeps", body, format="json")
    assert response.status_code == 201, response.content
    sweep_id = response.json()["id"]
    wait_for(lambda: sweep_ended(sweep_id), 420, what="the sweep to end", interval=0.5)

    sweep = Sweep.objects.get(id=sweep_id)
    assert sweep.status == SweepStatus.COMPLETED
    made = trials(sweep_id)
    assert [t.trial_number for t in made] == [0, 1, 2, 3]
    for run in made:
        ended_well = run.status == RunStatus.COMPLETED or (
            run.status == RunStatus.CANCELLED and run.error_reason == FailureReason.PRUNED
        )
        assert ended_well, (run.trial_number, run.status, run.error_reason, run.stderr[-2000:])
        assert run.series.get("eval_loss"), run.series  # its curve, pruned or not
    # At most two trials pending or running at any instant, from the rows' own timestamps.
    assert all(run.completed_at is not None for run in made)
    waiting = [(run.queued_at, run.completed_at) for run in made if run.completed_at]
    assert most_at_once(waiting) <= 2
    running = [
        (run.started_at, run.completed_at) for run in made if run.started_at and run.completed_at
    ]
    assert len(running) == 4
    assert most_at_once(running) <= 2
    # The best trial is the completed one with the lowest eval loss.
    completed = [run for run in made if run.status == RunStatus.COMPLETED]
    assert completed
    best = min(completed, key=lambda run: (run.metrics["eval_loss"], run.trial_number))
    assert sweep.best_run_id == best.id
    detail = operator_client.get(f"/api/tunix/sweeps/{sweep_id}").json()
    assert detail["best_trial"]["run_id"] == str(best.id)
    assert detail["progress"]["ended"] == 4


def test_sigkill_of_a_cluster_mid_sweep_still_ends_with_exactly_n_trials(
    clusters: StartClusters, operator_client: APIClient
) -> None:
    group = clusters(2, TUNIX_Q_WORKERS="1")
    body = {
        "base": {
            "dataset_key": "tunix-demo-v1",
            "model_id": "fake/progress-8",  # eight steps 0.4 s apart, then its eval loss
            "mode": "local",
        },
        "space": {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}},
        "metric": "eval_loss",
        "n_trials": 6,
        "concurrency": 2,
        "seed": 5,
    }
    response = operator_client.post("/api/tunix/sweeps", body, format="json")
    assert response.status_code == 201, response.content
    sweep_id = response.json()["id"]

    def a_trial_running_on(cluster: QCluster) -> TunixRun | None:
        for run in TunixRun.objects.filter(sweep_id=sweep_id, status=RunStatus.RUNNING):
            pid = int(run.worker_id.rsplit(":", 1)[1])
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) == cluster.proc.pid:
                    return run
        return None

    def held() -> tuple[QCluster, TunixRun] | None:
        for cluster in group:
            if (run := a_trial_running_on(cluster)) is not None:
                return cluster, run
        return None

    doomed, victim = wait_for(held, 60, what="a trial to run")
    time.sleep(0.5)  # mid-training
    doomed.kill_group()
    wait_for(lambda: sweep_ended(sweep_id), 240, what="the sweep to end", interval=0.5)

    assert Sweep.objects.get(id=sweep_id).status == SweepStatus.COMPLETED
    made = trials(sweep_id)
    numbers = [run.trial_number for run in made]
    assert numbers == list(range(6))  # exactly n_trials, no number twice
    assert all(run.status in TERMINAL_STATUSES for run in made)
    assert {run.status for run in made} == {RunStatus.COMPLETED}
    # The trial the killed cluster held resumed as itself: a second attempt, not a new trial.
    assert TunixRun.objects.get(id=victim.id).attempt == 2
    assert len({run.client_request_id for run in made}) == 6
