"""A separate queue for trainings (TUNIX_TRAINING_QUEUE, django-q2 ALT_CLUSTERS): local runs go
to clusters started for it, dry-runs and webhooks stay on the default queue and never wait
behind a training. Real qcluster processes on both queues."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django_q.models import OrmQ

from runs import services
from runs.models import RunMode, RunStatus, TunixRun
from tests.factories import submitted_run
from tests.support.clusters import REPO_ROOT, cluster_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

QUEUE = "training"


def submit(model_id: str, mode: str) -> TunixRun:
    return submitted_run(model_id=model_id, mode=mode)


def status_of(run: TunixRun) -> str:
    return TunixRun.objects.values_list("status", flat=True).get(id=run.id)


@pytest.fixture
def training_queue(settings: Any, clusters: Callable[..., Any]) -> Callable[..., Any]:
    settings.TUNIX_TRAINING_QUEUE = QUEUE

    def start(*, training_cluster: bool) -> None:
        clusters(1, TUNIX_TRAINING_QUEUE=QUEUE, TUNIX_Q_WORKERS="1")
        if training_cluster:
            clusters(1, TUNIX_TRAINING_QUEUE=QUEUE, Q_CLUSTER_NAME=QUEUE)

    return start


def test_trainings_wait_on_their_own_queue_and_dry_runs_do_not_wait_behind_them(
    training_queue: Callable[..., Any],
) -> None:
    trainings = [submit("fake/sleep-30", RunMode.LOCAL) for _ in range(2)]
    assert set(OrmQ.objects.values_list("key", flat=True)) == {QUEUE}
    training_queue(training_cluster=False)  # the default queue's cluster only, one worker
    dry = submit("google/gemma-3-270m", RunMode.DRY_RUN)
    wait_for(lambda: status_of(dry) == RunStatus.COMPLETED, 30, what="the dry-run")
    # No cluster serves the training queue: the trainings were never taken.
    assert [status_of(run) for run in trainings] == [RunStatus.PENDING] * 2


def test_a_training_cluster_runs_the_trainings_while_the_default_one_stays_free(
    training_queue: Callable[..., Any],
) -> None:
    training_queue(training_cluster=True)
    training = submit("fake/sleep-30", RunMode.LOCAL)
    wait_for(lambda: status_of(training) == RunStatus.RUNNING, 30, what="the training to start")
    dries = [submit("google/gemma-3-270m", RunMode.DRY_RUN) for _ in range(3)]
    wait_for(
        lambda: all(status_of(run) == RunStatus.COMPLETED for run in dries),
        30,
        what="the dry-runs, with the training still running",
    )
    assert status_of(training) == RunStatus.RUNNING
    services.run_cancel(run_id=training.id)


@pytest.mark.processes
def test_a_cluster_name_option_that_cannot_take_effect_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "qcluster", "--name", QUEUE],
        cwd=REPO_ROOT, env=cluster_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"Q_CLUSTER_NAME={QUEUE} python manage.py qcluster" in result.stderr
