"""Reads of hyperparameter sweeps and their trials (runs linked by TunixRun.sweep).

A sweep is seen by whoever may see its runs (runs/authorization.py): a user who may see every
run sees every sweep, anyone else the sweeps they created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db.models import Count, Q, QuerySet

from runs.models import TERMINAL_STATUSES, FailureReason, RunStatus, Sweep, TunixRun
from runs.selectors.ids import as_uuid

# What a trial row carries for the sweep's table and charts (the curves included).
TRIAL_FIELDS = (
    "id",
    "trial_number",
    "status",
    "error_reason",
    "config",
    "metrics",
    "loss_curve",
    "series",
    "progress",
    "queued_at",
    "started_at",
    "completed_at",
    "attempt",
    "sweep_id",
    "created_by_id",
)

# A trial's state in the sweep's words: a cancelled run whose reason is "pruned" was stopped
# by the pruner (it counts toward n_trials like any trial that ended).
PRUNED = "pruned"


@dataclass(frozen=True)
class Trial:
    """One trial as the sweep shows it; ``run`` is the run row (curves: run.loss_curve, the
    train loss, and run.series["eval_loss"])."""

    number: int
    run: TunixRun
    params: dict[str, Any]  # the searched hyperparameters' values
    value: float | None  # the sweep's metric, once the run reported it

    @property
    def status(self) -> str:
        """The run's status, or "pruned" for a run the pruner stopped."""
        if self.pruned:
            return PRUNED
        return str(self.run.status)

    @property
    def pruned(self) -> bool:
        return (
            self.run.status == RunStatus.CANCELLED and self.run.error_reason == FailureReason.PRUNED
        )

    @property
    def ended(self) -> bool:
        return self.run.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        return self.run.duration_seconds


@dataclass(frozen=True)
class SweepProgress:
    n_trials: int
    made: int  # trials asked for so far
    pending: int
    running: int
    completed: int
    pruned: int
    failed: int  # failed runs, and runs cancelled for another reason than pruning

    @property
    def ended(self) -> int:
        return self.completed + self.pruned + self.failed

    @property
    def fraction(self) -> float:
        return self.ended / self.n_trials if self.n_trials else 1.0


@dataclass(frozen=True)
class SweepDetail:
    sweep: Sweep
    trials: list[Trial]  # by trial number
    best: Trial | None  # the completed trial with the best metric value
    progress: SweepProgress


def _visible(sweeps: QuerySet[Sweep], owner: int | None) -> QuerySet[Sweep]:
    return sweeps if owner is None else sweeps.filter(created_by_id=owner)


def sweep_list(*, owner: int | None = None, status: str | None = None) -> QuerySet[Sweep]:
    """Sweeps this user may see, newest first, each with ``trials_made`` and ``trials_ended``
    counted."""
    sweeps = _visible(Sweep.objects.select_related("dataset", "created_by", "best_run"), owner)
    if status:
        sweeps = sweeps.filter(status=status)
    return sweeps.annotate(
        trials_made=Count("trials"),
        trials_ended=Count("trials", filter=Q(trials__status__in=TERMINAL_STATUSES)),
    ).order_by("-created_at", "-id")


def sweep_get(*, sweep_id: UUID | str, owner: int | None = None) -> Sweep | None:
    """The sweep, if it exists and (``owner`` set) that user created it."""
    key = as_uuid(sweep_id)
    if key is None:
        return None
    sweeps = Sweep.objects.select_related("dataset", "created_by", "best_run").filter(id=key)
    return _visible(sweeps, owner).first()


def metric_value(run: TunixRun, metric: str) -> float | None:
    value = (run.metrics or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def sweep_trials(*, sweep: Sweep) -> list[Trial]:
    """The sweep's trials by number, with their curves."""
    runs = (
        TunixRun.objects.filter(sweep=sweep)
        .select_related("dataset")
        .only(*TRIAL_FIELDS, "dataset__key", "model_id", "mode", "algorithm")
        .order_by("trial_number")
    )
    names = list(sweep.space)
    return [
        Trial(
            number=int(run.trial_number or 0),
            run=run,
            params={name: (run.config or {}).get(name) for name in names},
            value=metric_value(run, sweep.metric),
        )
        for run in runs
    ]


def best_trial(trials: list[Trial], *, direction: str) -> Trial | None:
    """The completed trial with the best value (lowest when minimising), the earliest trial on
    a tie."""
    scored = [t for t in trials if t.run.status == RunStatus.COMPLETED and t.value is not None]
    if not scored:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    return min(scored, key=lambda t: (sign * (t.value or 0.0), t.number))


def sweep_progress(*, sweep: Sweep, trials: list[Trial]) -> SweepProgress:
    def count(*statuses: str) -> int:
        return sum(1 for t in trials if t.status in statuses)

    return SweepProgress(
        n_trials=sweep.n_trials,
        made=len(trials),
        pending=count(RunStatus.PENDING),
        running=count(RunStatus.RUNNING),
        completed=count(RunStatus.COMPLETED),
        pruned=count(PRUNED),
        failed=count(RunStatus.FAILED, RunStatus.CANCELLED),
    )


def sweep_detail(*, sweep_id: UUID | str, owner: int | None = None) -> SweepDetail | None:
    """A sweep with its trials, its best trial and its progress (what the sweep's page and
    the API's detail show); None if it is not there for this user."""
    sweep = sweep_get(sweep_id=sweep_id, owner=owner)
    if sweep is None:
        return None
    trials = sweep_trials(sweep=sweep)
    return SweepDetail(
        sweep=sweep,
        trials=trials,
        best=best_trial(trials, direction=sweep.direction),
        progress=sweep_progress(sweep=sweep, trials=trials),
    )
