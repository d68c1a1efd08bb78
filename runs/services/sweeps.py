"""Hyperparameter sweeps: Optuna decides, the queue runs.

A sweep asks Optuna (runs/tuning.py) for each trial's hyperparameters and submits the trial as
an ordinary run through run_submit, so it is validated, idempotent, visible, announced by
webhooks and counted in the metrics like any run; the run row carries the sweep and its trial
number. Optuna's study is never stored: every question rebuilds it from the trial rows.

``sweep_advance`` is the one place trials are made. It runs when the sweep is created, when a
trial ends (a terminal hook, in the ending's own transaction) and from every reaper tick (a
safety net), each time under the sweep row's lock: it tops the trials up to the concurrency
limit, and ends the sweep when all ``n_trials`` have ended. A trial whose worker was lost is
re-queued by the reaper and resumes from its checkpoint: it is the same run, never a new trial.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import algorithms, authorization, progress, resources, selectors, tuning
from runs.models import (
    TERMINAL_STATUSES,
    Dataset,
    FailureReason,
    RunStatus,
    Sweep,
    SweepStatus,
    TunixRun,
)
from runs.services.errors import Conflict, Forbidden, NotFound, ServiceError
from runs.services.status import _transition
from runs.services.submission import RunRequest, _validated_fields, run_submit
from runs.services.webhooks import record_sweep_event

log = logging.getLogger("tunix_rt.runs")


@dataclass(frozen=True)
class SweepRequest:
    """What a client asks to sweep: a base run (its config holds the fixed hyperparameters)
    and the search over the others."""

    base: RunRequest
    space: Mapping[str, Any]
    metric: str
    n_trials: int
    concurrency: int = 1
    direction: str | None = None  # default: the metric's own (lower is better for a loss)
    sampler: str = tuning.DEFAULT_SAMPLER
    pruner: str = ""
    seed: int | None = None


def _default_direction(metric: str) -> str | None:
    if metric in progress.LOWER_IS_BETTER:
        return tuning.MINIMIZE
    if metric in progress.HIGHER_IS_BETTER or metric in progress.algorithm_results():
        return tuning.MAXIMIZE
    return None


def _stepped_metrics() -> set[str]:
    """Final metrics that also have a per-step series a pruner can watch."""
    return {*progress.SERIES, *progress.algorithm_signals()} & set(progress.all_result_keys())


def _check_counts(request: SweepRequest) -> None:
    limit = settings.TUNIX_SWEEP_MAX_TRIALS
    if isinstance(request.n_trials, bool) or not 1 <= request.n_trials <= limit:
        raise ServiceError(f"n_trials must be in [1, {limit}]", field="n_trials")
    most = settings.TUNIX_SWEEP_MAX_CONCURRENCY
    if isinstance(request.concurrency, bool) or not 1 <= request.concurrency <= most:
        raise ServiceError(f"concurrency must be in [1, {most}]", field="concurrency")
    if request.seed is not None and not 0 <= request.seed < 2**31:
        raise ServiceError("seed must be in [0, 2147483647]", field="seed")


def _check_metric(request: SweepRequest) -> str:
    if request.metric not in progress.all_result_keys():
        known = ", ".join(progress.all_result_keys())
        raise ServiceError(f"unknown metric {request.metric!r}: one of {known}", field="metric")
    direction = request.direction or _default_direction(request.metric)
    if direction is None:
        raise ServiceError(
            f"{request.metric} has no better direction: give minimize or maximize",
            field="direction",
        )
    if direction not in tuning.DIRECTIONS:
        raise ServiceError("direction must be minimize or maximize", field="direction")
    if request.pruner and request.metric not in _stepped_metrics():
        raise ServiceError(
            f"a pruner watches the metric step by step, and runs report {request.metric} only "
            f"at the end: prune on one of {', '.join(sorted(_stepped_metrics()))}",
            field="pruner",
        )
    return direction


def _in_base(exc: ServiceError) -> ServiceError:
    """An error of the base run request, named as the sweep request names it (base.<field>)."""
    return ServiceError(exc.message, field=f"base.{exc.field}" if exc.field else "base")


def _check_base(request: SweepRequest, space: tuning.Space, user: Any) -> dict[str, Any]:
    """The base run checked exactly as a single run would be, at each extreme of the space
    (a rule between two values, such as GRPO's room for a prompt, may refuse only one end).
    Returns the fixed hyperparameters as the run would store them."""
    base = request.base
    if base.client_request_id is not None:
        raise ServiceError("trials get keys of their own", field="base.client_request_id")
    if base.algorithm not in algorithms.ALGORITHMS:
        message = algorithms.unknown_algorithm_message(base.algorithm)
        raise ServiceError(message, field="base.algorithm")
    for name in space:
        if name in base.config:
            raise ServiceError(
                f"{name} is both fixed in the base config and searched", field=f"space.{name}"
            )
    try:
        fields = _validated_fields(base, user)
    except ServiceError as exc:
        raise _in_base(exc) from None
    for name, value in tuning.corners(space):
        corner = dataclasses.replace(base, config={**base.config, name: value})
        try:
            _validated_fields(corner, user)
        except ServiceError as exc:
            raise ServiceError(f"{name}={value!r}: {exc.message}", field=f"space.{name}") from None
    dataset = Dataset.objects.filter(key=base.dataset_key).only("format").first()
    if dataset is None:
        raise ServiceError(f"unknown dataset {base.dataset_key!r}", field="base.dataset_key")
    refusal = algorithms.format_refusal(
        base.algorithm, dataset.format, dataset_key=base.dataset_key
    )
    if refusal:
        raise ServiceError(refusal, field="base.dataset_key")
    # Only the fixed values are the sweep's: the searched ones come from each trial.
    return {k: v for k, v in fields["config"].items() if k in base.config}


def sweep_create(*, user: authorization.UserLike, request: SweepRequest) -> Sweep:
    """Check everything a single run would be checked for, then make the sweep and its first
    ``concurrency`` trials in one transaction: a refused request writes nothing."""
    if not authorization.can_launch(user):
        raise Forbidden("launching sweeps needs the runs.add_tunixrun permission")
    _check_counts(request)
    direction = _check_metric(request)
    try:
        space = tuning.parse_space(dict(request.space), request.base.algorithm)
    except tuning.SpaceError as exc:
        raise ServiceError(exc.message, field=exc.field) from None
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    spec = tuning.StudySpec(
        space=space,
        direction=direction,
        sampler=request.sampler,
        pruner=request.pruner or "",
        seed=seed,
        n_trials=request.n_trials,
    )
    try:
        tuning.check(spec)
    except tuning.SpaceError as exc:
        raise ServiceError(exc.message, field=exc.field) from None
    fixed = _check_base(request, space, user)
    base = request.base
    with transaction.atomic():
        sweep = Sweep.objects.create(
            created_by=authorization.real_user(user),
            dataset=Dataset.objects.get(key=base.dataset_key),
            model_id=base.model_id,
            algorithm=base.algorithm,
            mode=base.mode,
            config=fixed,
            timeout_seconds=base.timeout_seconds,
            resources=base.resources.as_json() if base.resources else {},
            space={name: dim.as_json() for name, dim in space.items()},
            metric=request.metric,
            direction=direction,
            n_trials=request.n_trials,
            concurrency=request.concurrency,
            sampler=spec.sampler,
            pruner=spec.pruner,
            seed=seed,
        )
        sweep_advance(sweep_id=sweep.id)
    log.info(
        "sweep_created",
        extra={"fields": {"sweep_id": sweep.id, "n_trials": sweep.n_trials}},
    )
    sweep.refresh_from_db()
    return sweep


def study_spec(sweep: Sweep) -> tuning.StudySpec:
    return tuning.StudySpec(
        space=tuning.space_from_json(sweep.space),
        direction=sweep.direction,
        sampler=sweep.sampler,
        pruner=sweep.pruner,
        seed=int(sweep.seed),
        n_trials=sweep.n_trials,
    )


_RECORD_FIELDS = ("id", "trial_number", "status", "error_reason", "config", "metrics", "series")


def _record(row: Mapping[str, Any], sweep: Sweep, names: list[str]) -> tuning.TrialRecord:
    status = row["status"]
    if status == RunStatus.COMPLETED:
        state = tuning.COMPLETE
    elif status == RunStatus.CANCELLED and row["error_reason"] == FailureReason.PRUNED:
        state = tuning.PRUNED
    elif status in TERMINAL_STATUSES:
        state = tuning.FAILED
    else:
        state = tuning.RUNNING
    value = (row["metrics"] or {}).get(sweep.metric)
    points = (row["series"] or {}).get(sweep.metric) or []
    return tuning.TrialRecord(
        number=int(row["trial_number"]),
        params={n: (row["config"] or {}).get(n) for n in names if n in (row["config"] or {})},
        state=state,
        value=float(value) if isinstance(value, int | float) else None,
        intermediate={int(step): float(v) for step, v in points},
    )


def _trial_rows(sweep: Sweep) -> list[dict[str, Any]]:
    return list(
        TunixRun.objects.filter(sweep=sweep).order_by("trial_number").values(*_RECORD_FIELDS)
    )


def _trial_key(sweep_id: UUID, number: int) -> str:
    return f"sweep-{sweep_id}-{number}"


def _submit_trial(sweep: Sweep, number: int, params: dict[str, Any]) -> TunixRun:
    request = RunRequest(
        dataset_key=sweep.dataset.key,
        model_id=sweep.model_id,
        mode=sweep.mode,
        algorithm=sweep.algorithm,
        config={**sweep.config, **params},
        timeout_seconds=sweep.timeout_seconds,
        client_request_id=_trial_key(sweep.id, number),
        resources=resources.from_stored(sweep.resources),
    )
    submission = run_submit(user=sweep.created_by, request=request, enqueue=True)
    run = submission.run
    if submission.replayed and (run.sweep_id, run.trial_number) != (sweep.id, number):
        raise Conflict(f"idempotency key {request.client_request_id!r} names another run")
    if not submission.replayed:
        # In the transaction that inserted the run and its queue task, under the sweep's lock:
        # no worker sees the run before it is linked. The unique (sweep, trial_number) refuses
        # a second run for this number whatever happens.
        TunixRun.objects.filter(id=run.id).update(sweep=sweep, trial_number=number)
    return run


def _end(sweep: Sweep, rows: list[dict[str, Any]]) -> None:
    trials = selectors.sweep_trials(sweep=sweep)
    best = selectors.best_trial(trials, direction=sweep.direction)
    now = timezone.now()
    Sweep.objects.filter(id=sweep.id, status=SweepStatus.RUNNING).update(
        status=SweepStatus.COMPLETED,
        completed_at=now,
        best_run=best.run if best else None,
    )
    sweep.refresh_from_db()
    record_sweep_event(sweep, best_value=best.value if best else None)
    log.info(
        "sweep_completed",
        extra={
            "fields": {
                "sweep_id": sweep.id,
                "trials": len(rows),
                "best_run": best.run.id if best else None,
            }
        },
    )


def sweep_advance(*, sweep_id: UUID) -> list[TunixRun]:
    """Make trials while fewer than ``concurrency`` are pending or running and fewer than
    ``n_trials`` exist; end the sweep once all have ended. Returns the trials made.

    Idempotent and safe to call from many processes at once: the sweep row's lock serialises
    callers, every count comes from the rows, and a trial's idempotency key and the unique
    (sweep, trial_number) make a retried or racing ask the same trial."""
    made: list[TunixRun] = []
    with transaction.atomic():
        sweep = (
            Sweep.objects.select_for_update(of=("self",))
            .select_related("dataset", "created_by")
            .filter(id=sweep_id)
            .first()
        )
        if sweep is None or sweep.status != SweepStatus.RUNNING:
            return made
        rows = _trial_rows(sweep)
        active = sum(1 for row in rows if row["status"] not in TERMINAL_STATUSES)
        if len(rows) >= sweep.n_trials and active == 0:
            _end(sweep, rows)
            return made
        if active >= sweep.concurrency or len(rows) >= sweep.n_trials:
            return made
        spec = study_spec(sweep)
        names = list(spec.space)
        records = [_record(row, sweep, names) for row in rows]
        while active < sweep.concurrency and len(records) < sweep.n_trials:
            number = len(records)
            params = tuning.next_params(spec, records)
            made.append(_submit_trial(sweep, number, params))
            records.append(tuning.TrialRecord(number=number, params=params, state=tuning.RUNNING))
            active += 1
    for run in made:
        log.info(
            "sweep_trial",
            extra={"fields": {"sweep_id": sweep_id, "run_id": run.id, "trial": run.trial_number}},
        )
    return made


def _stop(sweep: Sweep, message: str) -> None:
    Sweep.objects.filter(id=sweep.id, status=SweepStatus.RUNNING).update(
        status=SweepStatus.CANCELLED, completed_at=timezone.now(), error_message=message[:4000]
    )


def sweep_on_run_ended(run_id: UUID) -> None:
    """A terminal hook: the run's sweep, if it has one, asks for its next trial (or ends).

    In a savepoint of the ending's transaction, so a trial that cannot be submitted any more
    (its creator lost the right to launch, a dataset was refused) stops the sweep with the
    reason instead of undoing the run's own ending. Anything else is logged and left to the
    reaper's next pass."""
    sweep_id = TunixRun.objects.filter(id=run_id).values_list("sweep_id", flat=True).first()
    if sweep_id is None:
        return
    _advance_guarded(sweep_id)


def _advance_guarded(sweep_id: UUID) -> None:
    try:
        with transaction.atomic():
            sweep_advance(sweep_id=sweep_id)
    except ServiceError as exc:
        sweep = Sweep.objects.filter(id=sweep_id).first()
        if sweep is not None:
            _stop(sweep, f"could not submit the next trial: {exc.message}")
        log.warning("sweep_stopped", extra={"fields": {"sweep_id": sweep_id, "why": exc.message}})
    except Exception:
        log.exception("sweep_advance_error", extra={"fields": {"sweep_id": sweep_id}})


def sweep_reconcile(*, batch: int = 50) -> int:
    """The reaper's pass over running sweeps: anything a lost hook left undone (a trial that
    ended while its sweep could not be advanced) is done now. Returns trials made."""
    made = 0
    sweep_ids = list(
        Sweep.objects.filter(status=SweepStatus.RUNNING)
        .order_by("created_at")
        .values_list("id", flat=True)[:batch]
    )
    if sweep_ids:
        tuning.warm_up()  # in the reaper's thread: no trial's end waits for the import
    for sweep_id in sweep_ids:
        before = TunixRun.objects.filter(sweep_id=sweep_id).count()
        _advance_guarded(sweep_id)
        made += TunixRun.objects.filter(sweep_id=sweep_id).count() - before
    return made


def sweep_cancel(*, sweep_id: UUID | str, user: authorization.UserLike = None) -> Sweep:
    """Cancel a running sweep: no trial is asked for any more, pending trials are cancelled and
    running ones stopped (their workers stop them at the next heartbeat). The sweep's row is
    cancelled first and committed, then each trial in a transaction of its own, so a trial
    ending at the same moment never waits on the sweep while the sweep waits on it."""
    owner = authorization.visible_owner(user)
    sweep = selectors.sweep_get(sweep_id=sweep_id, owner=owner)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    if not authorization.can_cancel(user, sweep):
        raise Forbidden("only the sweep's creator or an operator can cancel it")
    with transaction.atomic():
        moved = Sweep.objects.filter(id=sweep.id, status=SweepStatus.RUNNING).update(
            status=SweepStatus.CANCELLED,
            completed_at=timezone.now(),
            error_message="cancelled by request",
        )
    if not moved:
        raise Conflict(f"sweep is already {sweep.status}")
    for _ in range(3):  # a trial may move (claimed, re-queued) between our read and our write
        active = list(
            TunixRun.objects.filter(
                sweep_id=sweep.id, status__in=[RunStatus.PENDING, RunStatus.RUNNING]
            ).values_list("id", "status", "attempt", "started_at")
        )
        for run_id, status, attempt, started_at in active:
            _transition(
                run_id=run_id,
                source=status,
                target=RunStatus.CANCELLED,
                op="run_cancel",
                expected_attempt=attempt,
                run_started_at=started_at,
                completed_at=timezone.now(),
                heartbeat_at=None,
                error_message="cancelled with its sweep",
            )
        if not active:
            break
    sweep.refresh_from_db()
    log.info("sweep_cancelled", extra={"fields": {"sweep_id": sweep.id}})
    return sweep


def sweep_pruner_metric(*, sweep_id: UUID) -> str | None:
    """The metric a running trial's pruner watches, or None when its sweep prunes nothing (a
    worker asks once per attempt, then reports only when that series moved)."""
    row = (
        Sweep.objects.filter(id=sweep_id, status=SweepStatus.RUNNING)
        .exclude(pruner="")
        .values_list("metric", flat=True)
        .first()
    )
    return row


def sweep_trial_report(*, run_id: UUID, attempt: int) -> bool:
    """A running trial's intermediate values moved (its heartbeat has just written them): ask
    the pruner, against the other trials' values at the same steps. A trial it stops is
    cancelled with reason "pruned", keeping its checkpoint and curves; True then, and the
    worker stops the training at once."""
    run = (
        TunixRun.objects.filter(id=run_id, status=RunStatus.RUNNING, attempt=attempt)
        .values("sweep_id", "trial_number", "started_at")
        .first()
    )
    if run is None or run["sweep_id"] is None:
        return False
    sweep = Sweep.objects.filter(id=run["sweep_id"], status=SweepStatus.RUNNING).first()
    if sweep is None or not sweep.pruner:
        return False
    spec = study_spec(sweep)
    names = list(spec.space)
    records = [_record(row, sweep, names) for row in _trial_rows(sweep)]
    current = next((r for r in records if r.number == run["trial_number"]), None)
    if current is None or not current.intermediate:
        return False
    others = [r for r in records if r.number != current.number]
    if not tuning.should_prune(spec, others, current):
        return False
    step = max(current.intermediate)
    value = current.intermediate[step]
    return _transition(
        run_id=run_id,
        source=RunStatus.RUNNING,
        target=RunStatus.CANCELLED,
        op="run_prune",
        expected_attempt=attempt,
        run_started_at=run["started_at"],
        completed_at=timezone.now(),
        heartbeat_at=None,
        error_reason=FailureReason.PRUNED,
        error_message=(
            f"pruned at step {step}: {sweep.metric} {value:g} is not promising against the "
            f"sweep's other trials ({sweep.pruner} pruner)"
        ),
    )
