"""Hyperparameter search for sweeps: a search space over the hyperparameter table
(runs/training_config.py), Optuna's samplers and pruners chosen by name, and a study rebuilt in
memory from the trials a sweep has so far. No Django: the services hand in plain records.

The study is never stored. Every question (which parameters next, should this trial stop) builds
an in-memory study from the trial rows and asks it, so the database rows are the one truth and
a crash between a question and its answer being written loses nothing.

A search space names hyperparameters of the sweep's algorithm, each with one of:

    {"low": 1e-5, "high": 1e-2, "log": true}   a range (float or int, as the parameter's row)
    {"low": 4, "high": 16, "step": 4}           a range on a step (a grid can enumerate it)
    {"choices": [8, 16, 32]}                    explicit values (any kind)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from runs import training_config

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

# Optuna (and numpy under it) is imported where a study is built, not with this module: the
# models read the registries below, and a web process should not pay for Optuna to start.

MINIMIZE, MAXIMIZE = "minimize", "maximize"
DIRECTIONS = (MINIMIZE, MAXIMIZE)
MAX_CHOICES = 1000  # values in one "choices" list
MAX_GRID_POINTS = 100_000  # enumerated at most, whatever n_trials is


class SpaceError(ValueError):
    """A search space (or a setting that depends on it) that cannot be searched; ``field``
    names where, as the API reports it (``space.<name>``, ``n_trials``, ``sampler``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a range or a list of choices."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        assert self.low is not None
        assert self.high is not None
        if self.kind == "int":
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(
            float(self.low),
            float(self.high),
            log=self.log,
            step=None if self.step is None else float(self.step),
        )

    def grid_points(self) -> list[Any] | None:
        """Every value a grid visits, or None for a float range without a step."""
        if self.kind == "choice":
            return list(self.choices)
        assert self.low is not None
        assert self.high is not None
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = math.floor((float(self.high) - float(self.low)) / float(self.step) + 1e-9) + 1
        if count > MAX_GRID_POINTS:
            return list(range(MAX_GRID_POINTS + 1))  # only its length is looked at: too many
        return [round(float(self.low) + i * float(self.step), 12) for i in range(count)]

    def as_json(self) -> dict[str, Any]:
        """The form the sweep row stores (and the API shows)."""
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


Space = dict[str, Dimension]


def _param_row(name: str, algorithm: str) -> training_config.Param | None:
    return next((p for p in training_config.params_for(algorithm) if p.name == name), None)


def _number(param: training_config.Param, value: Any, where: str) -> int | float:
    reason = training_config.check_value(param, value)
    if reason is None and value is None:
        reason = "may not be null"
    if reason:
        raise SpaceError(where, f"{param.name}: {value!r} {reason}")
    return int(value) if param.kind is int else float(value)


def _dimension(name: str, raw: Any, algorithm: str) -> Dimension:
    where = f"space.{name}"
    param = _param_row(name, algorithm)
    if param is None:
        owners = training_config.owners(name)
        reason = (
            f"applies to {', '.join(owners)}, not to {algorithm}"
            if owners
            else "is not a hyperparameter"
        )
        raise SpaceError(where, f"{name} {reason}")
    if not isinstance(raw, dict):
        raise SpaceError(where, 'give {"low", "high"} (optionally "log", "step") or {"choices"}')
    if "choices" in raw:
        extra = sorted(set(raw) - {"choices"})
        if extra:
            raise SpaceError(where, f"choices take no {', '.join(extra)}")
        values = raw["choices"]
        if not isinstance(values, list) or not values:
            raise SpaceError(where, "choices must be a non-empty list")
        if len(values) > MAX_CHOICES:
            raise SpaceError(where, f"at most {MAX_CHOICES} choices")
        if param.kind is str:
            for value in values:
                if refusal := training_config.check_value(param, value):
                    raise SpaceError(where, f"{name}: {value!r} {refusal}")
            clean: list[Any] = list(values)
        else:
            clean = [_number(param, value, where) for value in values]
        if len(set(clean)) != len(clean):
            raise SpaceError(where, "choices must differ from each other")
        return Dimension(name=name, kind="choice", choices=tuple(clean))
    extra = sorted(set(raw) - {"low", "high", "log", "step"})
    if extra:
        raise SpaceError(where, f"unknown key {extra[0]!r}: a range takes low, high, log, step")
    if param.kind is str:
        raise SpaceError(where, f"{name} takes named values: give choices, not a range")
    if "low" not in raw or "high" not in raw:
        raise SpaceError(where, "a range needs low and high")
    low, high = _number(param, raw["low"], where), _number(param, raw["high"], where)
    if not low < high:
        raise SpaceError(where, "low must be below high (one value: give it in the base config)")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(where, "log must be true or false")
    step = raw.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
            raise SpaceError(where, "step must be a positive number")
        if param.kind is int and not float(step).is_integer():
            raise SpaceError(where, f"{name} is an integer: step must be one")
        if log:
            raise SpaceError(where, "a log range takes no step")
        step = int(step) if param.kind is int else float(step)
    if log and low <= 0:
        raise SpaceError(where, "a log range needs low above 0")
    kind = "int" if param.kind is int else "float"
    return Dimension(name=name, kind=kind, low=low, high=high, log=log, step=step)


def parse_space(raw: Any, algorithm: str) -> Space:
    """The search space a request gives, checked against ``algorithm``'s hyperparameters: a
    value a single run of it would refuse is refused here too, naming ``space.<name>``."""
    if not isinstance(raw, dict) or not raw:
        raise SpaceError("space", "name at least one hyperparameter to search")
    return {str(name): _dimension(str(name), value, algorithm) for name, value in raw.items()}


def space_from_json(stored: Mapping[str, Any]) -> Space:
    """A space as the sweep row stores it (already checked when the sweep was made)."""
    space: Space = {}
    for name, raw in stored.items():
        if "choices" in raw:
            space[name] = Dimension(name=name, kind="choice", choices=tuple(raw["choices"]))
        else:
            is_int = all(isinstance(raw[k], int) for k in ("low", "high"))
            space[name] = Dimension(
                name=name,
                kind="int" if is_int else "float",
                low=raw["low"],
                high=raw["high"],
                log=bool(raw.get("log", False)),
                step=raw.get("step"),
            )
    return space


def corners(space: Space) -> list[tuple[str, Any]]:
    """Each dimension's extreme values, to check against the rules between values
    (training_config.CROSS_CHECKS) before any trial is made."""
    found: list[tuple[str, Any]] = []
    for dim in space.values():
        if dim.kind == "choice":
            found += [(dim.name, value) for value in dim.choices]
        else:
            found += [(dim.name, dim.low), (dim.name, dim.high)]
    return found


def grid(space: Space) -> dict[str, list[Any]]:
    """The grid of a space; SpaceError when a dimension has no finite points."""
    points: dict[str, list[Any]] = {}
    for name, dim in space.items():
        values = dim.grid_points()
        if values is None:
            raise SpaceError(
                f"space.{name}",
                "a grid needs explicit points: give choices or a step for a float range",
            )
        points[name] = values
    return points


def grid_size(space: Space) -> int:
    return math.prod(len(values) for values in grid(space).values())


# Trials as the services hand them in, from the run rows.

COMPLETE, PRUNED, FAILED, RUNNING = "complete", "pruned", "failed", "running"


@dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict[str, Any]
    state: str  # COMPLETE (with value), PRUNED, FAILED or RUNNING (pending runs too)
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    space: Space
    direction: str
    sampler: str
    pruner: str  # "" for none
    seed: int
    n_trials: int


# Samplers and pruners by name: one small class each, as the API and the sweep row name them.


class Sampler(ABC):
    name: ClassVar[str]
    label: ClassVar[str]

    @abstractmethod
    def build(self, spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's sampler for the trial that ``seed`` (the sweep's seed and the trial's
        number) is drawn for: a rebuilt study with one fixed seed would draw the same point
        for every trial."""

    def check(self, spec: StudySpec) -> None:  # noqa: B027 - most samplers search any space
        """Refuse, with SpaceError, a spec this sampler cannot search."""


class TPE(Sampler):
    name, label = "tpe", "TPE (Tree-structured Parzen Estimator)"

    def build(self, spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        # Optuna's 10 random start-up trials, but never more than half the sweep, so a short
        # sweep still has guided trials; the constant liar keeps concurrent trials apart.
        startup = max(1, min(10, spec.n_trials // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


class Random(Sampler):
    name, label = "random", "random search"

    def build(self, spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


class Grid(Sampler):
    name, label = "grid", "grid search"

    def build(self, spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        # Optuna gives trial k the point k of the grid it shuffled with its seed, so with the
        # sweep's own seed (not the trial's) every rebuild shuffles alike and the trials walk
        # that order, never a point twice.
        return optuna.samplers.GridSampler(grid(spec.space), seed=spec.seed)

    def check(self, spec: StudySpec) -> None:
        size = grid_size(spec.space)
        if size > spec.n_trials:
            raise SpaceError(
                "n_trials",
                f"the grid has {size} points, more than n_trials ({spec.n_trials}): raise "
                "n_trials or give fewer points",
            )


class Pruner(ABC):
    name: ClassVar[str]
    label: ClassVar[str]

    @abstractmethod
    def build(self, spec: StudySpec) -> optuna.pruners.BasePruner: ...

    def attrs(self, intermediate: Mapping[int, float], *, before: int | None) -> dict[str, Any]:
        """System attributes a trial would carry had the pruner seen its values one by one
        (only those of steps below ``before``, when given)."""
        return {}


class Median(Pruner):
    name, label = "median", "median stopping"

    def build(self, spec: StudySpec) -> optuna.pruners.BasePruner:
        import optuna

        # Optuna waits for 5 finished trials; a quarter of the sweep (at least one) lets a
        # short sweep prune too.
        startup = max(1, min(5, spec.n_trials // 4))
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)


class SuccessiveHalving(Pruner):
    name, label = "successive_halving", "successive halving"
    MIN_RESOURCE, REDUCTION = 1, 3

    def build(self, spec: StudySpec) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.MIN_RESOURCE, reduction_factor=self.REDUCTION
        )

    def attrs(self, intermediate: Mapping[int, float], *, before: int | None) -> dict[str, Any]:
        # Optuna keeps each rung's value on the trial as it passes the rung; a study rebuilt
        # from rows has them back from the values themselves: the value at the first step at
        # or past each rung's step.
        found: dict[str, Any] = {}
        rung = 0
        for step in sorted(intermediate):
            if before is not None and step >= before:
                break
            while step >= self.MIN_RESOURCE * self.REDUCTION**rung:
                found[f"completed_rung_{rung}"] = intermediate[step]
                rung += 1
        return found


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (TPE(), Random(), Grid())}
PRUNERS: dict[str, Pruner] = {p.name: p for p in (Median(), SuccessiveHalving())}
DEFAULT_SAMPLER = TPE.name


def check(spec: StudySpec) -> None:
    """Everything about a spec that is refused before a sweep exists (SpaceError)."""
    if spec.sampler not in SAMPLERS:
        raise SpaceError("sampler", f"unknown sampler {spec.sampler!r}: use {', '.join(SAMPLERS)}")
    if spec.pruner and spec.pruner not in PRUNERS:
        raise SpaceError("pruner", f"unknown pruner {spec.pruner!r}: use {', '.join(PRUNERS)}")
    if spec.direction not in DIRECTIONS:
        raise SpaceError("direction", f"direction must be {' or '.join(DIRECTIONS)}")
    SAMPLERS[spec.sampler].check(spec)


def _distributions(space: Space) -> dict[str, BaseDistribution]:
    return {name: dim.distribution() for name, dim in space.items()}


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def warm_up() -> None:
    """Import Optuna ahead of the first question (about 0.2 s, once per process)."""
    _optuna()


def _study(spec: StudySpec, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    import optuna

    _optuna()
    pruner = PRUNERS[spec.pruner].build(spec) if spec.pruner else optuna.pruners.NopPruner()
    directions = optuna.study.StudyDirection
    direction = directions.MAXIMIZE if spec.direction == MAXIMIZE else directions.MINIMIZE
    study: optuna.Study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    return study


def _frozen(
    spec: StudySpec, record: TrialRecord, distributions: Mapping[str, BaseDistribution]
) -> FrozenTrial:
    optuna = _optuna()
    TrialState = optuna.trial.TrialState
    state = {
        COMPLETE: TrialState.COMPLETE,
        PRUNED: TrialState.PRUNED,
        FAILED: TrialState.FAIL,
        RUNNING: TrialState.RUNNING,
    }[record.state]
    value = record.value if state == TrialState.COMPLETE else None
    if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
        state, value = TrialState.FAIL, None
    params = {k: v for k, v in record.params.items() if k in distributions}
    attrs = PRUNERS[spec.pruner].attrs(record.intermediate, before=None) if spec.pruner else {}
    trial: FrozenTrial = optuna.trial.create_trial(
        params=params,
        distributions={k: distributions[k] for k in params},
        state=state,
        value=value,
        intermediate_values=dict(record.intermediate),
        system_attrs=attrs,
    )
    return trial


def rebuild(spec: StudySpec, trials: Sequence[TrialRecord], sampler: Any = None) -> optuna.Study:
    """An in-memory study holding ``trials`` in trial-number order."""
    study = _study(spec, sampler or _optuna().samplers.RandomSampler(seed=spec.seed))
    distributions = _distributions(spec.space)
    for record in sorted(trials, key=lambda t: t.number):
        study.add_trial(_frozen(spec, record, distributions))
    return study


def _seed(spec: StudySpec, number: int) -> int:
    return (spec.seed + number * 7919) % (2**32)


def next_params(spec: StudySpec, trials: Sequence[TrialRecord]) -> dict[str, Any]:
    """The parameters of trial number len(trials): the same answer for the same rows, so a
    retried question asks for the same trial."""
    number = len(trials)
    sampler = SAMPLERS[spec.sampler].build(spec, _seed(spec, number))
    study = rebuild(spec, trials, sampler)
    trial = study.ask(_distributions(spec.space))
    return dict(trial.params)


def should_prune(spec: StudySpec, others: Sequence[TrialRecord], current: TrialRecord) -> bool:
    """Whether the pruner stops ``current`` (a running trial) at its newest intermediate value,
    against the other trials' values."""
    if not spec.pruner or not current.intermediate:
        return False
    optuna = _optuna()
    pruner = PRUNERS[spec.pruner]
    study = rebuild(spec, [t for t in others if t.number != current.number])
    distributions = _distributions(spec.space)
    params = {k: v for k, v in current.params.items() if k in distributions}
    latest = max(current.intermediate)
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions={k: distributions[k] for k in params},
            state=optuna.trial.TrialState.RUNNING,
            intermediate_values=dict(current.intermediate),
            system_attrs=pruner.attrs(current.intermediate, before=latest),
        )
    )
    frozen = study.get_trials(deepcopy=False)[-1]
    return bool(pruner.build(spec).prune(study, frozen))
