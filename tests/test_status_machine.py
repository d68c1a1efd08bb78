"""Status changes: only the allowed transitions, only through guarded UPDATEs."""

from __future__ import annotations

import pytest
from django.utils import timezone

from runs import services
from runs.models import RunStatus, TunixRun
from runs.services import ALLOWED_TRANSITIONS, IllegalTransition, RunOutcome
from runs.services import status as status_machine
from tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db

ALL = list(RunStatus.values)


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in ALL for t in ALL if t not in ALLOWED_TRANSITIONS[s]],
)
def test_illegal_transitions_are_refused_before_any_write(source: str, target: str) -> None:
    run = TunixRunFactory(status=source, **_fields_for(source))
    with pytest.raises(IllegalTransition):
        status_machine._transition(run_id=run.id, source=source, target=target, op="test")
    assert TunixRun.objects.get(id=run.id).status == source


def test_terminal_states_have_no_way_out() -> None:
    for status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
        assert ALLOWED_TRANSITIONS[status] == frozenset()


def test_claim_moves_pending_to_running_once() -> None:
    run = TunixRunFactory()
    claimed = services.run_claim(run_id=run.id, worker_id="w1")
    assert claimed is not None
    assert claimed.status == RunStatus.RUNNING
    assert claimed.attempt == 1
    assert claimed.worker_id == "w1"
    assert claimed.started_at is not None
    assert claimed.heartbeat_at is not None
    # A second claimant (a redelivered task, another worker) gets nothing.
    assert services.run_claim(run_id=run.id, worker_id="w2") is None
    assert TunixRun.objects.get(id=run.id).worker_id == "w1"


def test_claim_of_unknown_run_returns_none() -> None:
    import uuid

    assert services.run_claim(run_id=uuid.uuid4(), worker_id="w") is None


def test_finish_with_a_stale_attempt_changes_nothing() -> None:
    run = TunixRunFactory(running=True, attempt=2)
    stale = RunOutcome(status=RunStatus.COMPLETED, exit_code=0, stdout="old worker")
    assert services.run_finish(run_id=run.id, attempt=1, outcome=stale) is False
    fresh = TunixRun.objects.get(id=run.id)
    assert fresh.status == RunStatus.RUNNING
    assert fresh.stdout == ""
    assert services.run_finish(
        run_id=run.id, attempt=2, outcome=RunOutcome(status=RunStatus.COMPLETED, exit_code=0)
    )
    assert TunixRun.objects.get(id=run.id).status == RunStatus.COMPLETED


def test_finish_of_a_finished_run_changes_nothing() -> None:
    run = TunixRunFactory(completed=True, stdout="first")
    again = RunOutcome(status=RunStatus.FAILED, exit_code=1, reason="nonzero_exit", stdout="second")
    assert services.run_finish(run_id=run.id, attempt=1, outcome=again) is False
    fresh = TunixRun.objects.get(id=run.id)
    assert (fresh.status, fresh.stdout) == (RunStatus.COMPLETED, "first")


def test_finish_stores_output_truncated_to_the_limit(settings) -> None:
    settings.TUNIX_OUTPUT_MAX_BYTES = 300
    run = TunixRunFactory(running=True)
    outcome = RunOutcome(status=RunStatus.COMPLETED, exit_code=0, stdout="€" * 1000)
    services.run_finish(run_id=run.id, attempt=1, outcome=outcome)
    stored = TunixRun.objects.get(id=run.id).stdout
    assert len(stored.encode()) <= 300
    assert "omitted" in stored
    assert "\ufffd" not in stored


def test_heartbeat_only_for_the_owning_attempt() -> None:
    run = TunixRunFactory(running=True, attempt=3, heartbeat_at=timezone.now())
    before = TunixRun.objects.get(id=run.id).heartbeat_at
    assert services.run_heartbeat(run_id=run.id, attempt=2) is False
    assert TunixRun.objects.get(id=run.id).heartbeat_at == before
    assert services.run_heartbeat(run_id=run.id, attempt=3) is True
    after = TunixRun.objects.get(id=run.id).heartbeat_at
    assert before is not None
    assert after is not None
    assert after >= before


def _fields_for(status: str) -> dict[str, object]:
    now = timezone.now()
    if status == RunStatus.PENDING:
        return {}
    if status == RunStatus.RUNNING:
        return {"attempt": 1, "started_at": now}
    fields: dict[str, object] = {"attempt": 1, "started_at": now, "completed_at": now}
    if status == RunStatus.COMPLETED:
        fields["exit_code"] = 0
    if status == RunStatus.FAILED:
        fields["error_reason"] = "nonzero_exit"
    return fields


def test_terminal_hooks_run_once_when_a_run_ends_and_not_on_other_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended: list[object] = []
    monkeypatch.setattr(
        status_machine, "TERMINAL_HOOKS", (*status_machine.TERMINAL_HOOKS, ended.append)
    )
    run = TunixRunFactory(status=RunStatus.PENDING)
    claimed = services.run_claim(run_id=run.id, worker_id="w")
    assert claimed is not None
    assert services.run_heartbeat(run_id=run.id, attempt=1)
    assert ended == []
    done = RunOutcome(status=RunStatus.COMPLETED, exit_code=0)
    assert services.run_finish(run_id=run.id, attempt=1, outcome=done)
    assert not services.run_finish(run_id=run.id, attempt=1, outcome=done)  # fenced: no-op
    assert ended == [run.id]


def test_a_failing_terminal_hook_leaves_the_run_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(run_id: object) -> None:
        raise RuntimeError("hook failed")

    monkeypatch.setattr(status_machine, "TERMINAL_HOOKS", (refuse,))
    run = TunixRunFactory(status=RunStatus.PENDING)
    with pytest.raises(RuntimeError):
        services.run_cancel(run_id=run.id)
    assert TunixRun.objects.get(id=run.id).status == RunStatus.PENDING
