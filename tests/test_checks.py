"""Startup refuses queue limits that would fight the run timeouts."""

from __future__ import annotations

import copy
from typing import Any

from runs.checks import queue_limits


def ids(settings: Any, **changes: Any) -> set[str | None]:
    q = copy.deepcopy(settings.Q_CLUSTER)
    q.update(changes)
    settings.Q_CLUSTER = q
    return {message.id for message in queue_limits()}


def test_shipped_configuration_passes(settings: Any) -> None:
    assert ids(settings) == set()


def test_timeout_below_the_longest_run_is_refused(settings: Any) -> None:
    assert "runs.E001" in ids(settings, timeout=settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS)


def test_retry_that_could_redeliver_a_running_task_is_refused(settings: Any) -> None:
    timeout = settings.Q_CLUSTER["timeout"]
    assert "runs.E002" in ids(settings, retry=timeout + 1)
    assert "runs.E002" in ids(settings, retry=None)


def test_endless_retries_are_refused(settings: Any) -> None:
    assert "runs.E003" in ids(settings, ack_failures=False)
    assert "runs.E003" in ids(settings, max_attempts=0)


def test_a_separate_queue_database_is_refused(settings: Any) -> None:
    assert "runs.E004" in ids(settings, orm="queue")
