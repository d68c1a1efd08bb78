"""Training progress as the trainer reports it on stdout, one machine-readable line per event:

    TUNIX_PROGRESS {"step": 5, "total_steps": 20, "loss": 2.75, "loss_mean": 2.91,
                    "learning_rate": 0.003, "tokens_per_second": 2210.5}
    TUNIX_PROGRESS {"step": 5, "total_steps": 20, "eval_loss": 2.84}
    TUNIX_PROGRESS {"step": 20, "total_steps": 20, "phase": "evaluating", "item": 8, "items": 32}
    TUNIX_RESULT {"train_loss": 2.1, "eval_loss": 2.4, "steps": 20, "tokens_per_second": 812.5,
                  "wall_seconds": 11.2}
    TUNIX_ERROR {"reason": "model_unavailable", "message": "why the trainer refused the run"}

``loss`` is that step's batch loss (the loss curve's point); ``learning_rate`` and
``tokens_per_second`` (real tokens, since the previous report) are points of their series, and
so is an evaluation's ``eval_loss``, at the step it ran after. The ``evaluating`` phase is the
generation eval after training: ``item`` of ``items`` held-out records generated so far.
A train step's line also carries its algorithm's signals (runs/algorithms/: DPO's
``chosen_reward``, ``rejected_reward``, ``reward_margin``, ``reward_accuracy``; GRPO's
``reward_mean``, ``reward_std``, ``kl``), each a series of its own, and a result line the
algorithm's ``results``.
``loss_mean`` and the result's ``train_loss`` are the mean of the last TRAIN_LOSS_WINDOW steps'
batch losses (of all of them while there are fewer), since one batch's loss swings with what
that batch happened to hold.
Anything else on stdout is ordinary output. Like the executor, this module imports nothing from
Django: the worker feeds it lines and reads what changed on its heartbeat tick.
"""

from __future__ import annotations

import functools
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runs.scorers import SCORER_NAMES, SCORERS

PROGRESS_PREFIX = "TUNIX_PROGRESS "
RESULT_PREFIX = "TUNIX_RESULT "
ERROR_PREFIX = "TUNIX_ERROR "
MAX_LINE_CHARS = 4096  # a progress line is small; a longer one is ordinary output
MAX_CURVE_POINTS = 200  # the stored loss curve; older points are thinned, never the newest
RESULT_KEYS = (
    "train_loss",
    "eval_loss",
    "steps",
    "tokens_per_second",
    "wall_seconds",
    "compiled_shapes",  # padded batch lengths the training compiled (runs/trainer.py)
    "eval_items",  # held-out records generated and scored after training
    "eval_seconds",
    *SCORER_NAMES,  # each scorer's mean over those items
)
# Which way is better for a final metric (the compare page marks the best; the run list ranks
# by these within a dataset). Counts such as steps or eval_items have no better direction.
HIGHER_IS_BETTER = frozenset({*SCORER_NAMES, "tokens_per_second"})
LOWER_IS_BETTER = frozenset({"train_loss", "eval_loss", "wall_seconds", "eval_seconds"})
# What a run list can be ranked by, best first: the evaluation's own measures, by how a
# ranking names them ("best ROUGE-L" ranks the highest first, "best eval loss" the lowest).
RANKING_METRICS = {
    **{name: scorer.label for name, scorer in SCORERS.items()},
    "eval_loss": "eval loss",
}
# Per-step series besides the loss curve, each bounded like it (the curve is the train loss);
# a train step's line may also carry its algorithm's signals (algorithm_signals).
SERIES = ("eval_loss", "learning_rate", "tokens_per_second")
STEP_SERIES = ("learning_rate", "tokens_per_second")


# The algorithms' own numbers are read from their declarations (runs/algorithms/), lazily:
# their modules import the trainer, which imports this one.
@functools.cache
def algorithm_signals() -> dict[str, str]:
    """Every per-step signal an algorithm reports (DPO's rewards, GRPO's reward and KL), by
    key: its label."""
    from runs.algorithms import SIGNALS

    return dict(SIGNALS)


@functools.cache
def algorithm_results() -> tuple[str, ...]:
    """Result keys the algorithms add to RESULT_KEYS; each is a reward, higher is better."""
    from runs.algorithms import ALGORITHMS

    found = (key for algorithm in ALGORITHMS.values() for key in algorithm.results)
    return tuple(key for key in dict.fromkeys(found) if key not in RESULT_KEYS)


@functools.cache
def ranking_metrics() -> dict[str, str]:
    """What a run list can be ranked by: RANKING_METRICS and the algorithms' results (the runs
    of a GRPO dataset by their mean reward, of a preference dataset by reward accuracy)."""
    signals = algorithm_signals()
    return {**RANKING_METRICS, **{key: signals.get(key, key) for key in algorithm_results()}}


def all_result_keys() -> tuple[str, ...]:
    return (*RESULT_KEYS, *algorithm_results())


PHASE_EVALUATING = "evaluating"
TRAIN_LOSS_WINDOW = 10  # steps the reported training loss is averaged over


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    if number is None or number < 0 or number != int(number):
        return None
    return int(number)


def _payload(line: str, prefix: str) -> dict[str, Any] | None:
    if not line.startswith(prefix) or len(line) > MAX_LINE_CHARS:
        return None
    try:
        data = json.loads(line[len(prefix) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class LossWindow:
    """The mean of the last ``size`` steps' losses."""

    def __init__(self, size: int = TRAIN_LOSS_WINDOW) -> None:
        self.losses: deque[float] = deque(maxlen=size)

    def add(self, loss: float) -> float:
        """Take one step's loss; returns the mean of the window."""
        self.losses.append(loss)
        return self.mean()

    def mean(self) -> float:
        """0.0 before the first step (callers add before they ask)."""
        return math.fsum(self.losses) / len(self.losses) if self.losses else 0.0


def thin(curve: list[list[float]], limit: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """At most ``limit`` points: every other one of the older points goes, the newest stays."""
    while len(curve) > limit:
        curve = curve[:-1][::2] + curve[-1:]
    return curve


@dataclass
class ProgressTracker:
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    loss_mean: float | None = None  # over the trainer's window (TRAIN_LOSS_WINDOW steps)
    curve: list[list[float]] = field(default_factory=list)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    phase: dict[str, Any] = field(default_factory=dict)  # {"phase", "item", "items"} or empty
    result: dict[str, float] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (reason, message) the trainer gave for failing
    changed: bool = False

    def feed_line(self, line: str) -> None:
        """Take one stdout line; lines that are not well-formed progress are ignored."""
        line = line.strip()
        if (data := _payload(line, PROGRESS_PREFIX)) is not None:
            step = _count(data.get("step"))
            if step is None:
                return
            total = _count(data.get("total_steps"))
            if total is not None and total < step:
                total = None
            if data.get("phase") == PHASE_EVALUATING:
                item, items = _count(data.get("item")), _count(data.get("items"))
                if item is None or items is None or item > items:
                    return
                self.step, self.total_steps = step, total or self.total_steps
                self.phase = {"phase": PHASE_EVALUATING, "item": item, "items": items}
                self.changed = True
                return
            if "eval_loss" in data and "loss" not in data:
                # An evaluation after that step: a point of its own series, not a new attempt.
                eval_loss = _number(data.get("eval_loss"))
                if eval_loss is not None:
                    self._add("eval_loss", step, eval_loss)
                    self.changed = True
                return
            self.step = step
            if total is not None:
                self.total_steps = total
            loss = _number(data.get("loss"))
            if self.curve and step <= self.curve[-1][0]:
                # A new attempt, starting over (step 0) or resuming from a checkpoint (its
                # step, no loss): later points belong to the attempt that was stopped.
                keep = step if loss is None else step - 1
                self.curve = [point for point in self.curve if point[0] <= keep]
                self.series = {
                    name: [point for point in points if point[0] <= keep]
                    for name, points in self.series.items()
                }
                self.phase = {}
            if loss is not None:
                self.loss = loss
                self.curve = thin([*self.curve, [step, round(loss, 6)]])
                self.loss_mean = _number(data.get("loss_mean"))
                for name in (*STEP_SERIES, *algorithm_signals()):
                    value = _number(data.get(name))
                    if value is not None:
                        self._add(name, step, value)
            self.changed = True
        elif (data := _payload(line, RESULT_PREFIX)) is not None:
            for key in all_result_keys():
                value = _number(data.get(key))
                if value is not None:
                    self.result[key] = value
            self.changed = True
        elif (data := _payload(line, ERROR_PREFIX)) is not None:
            reason, message = data.get("reason"), data.get("message")
            if isinstance(reason, str) and isinstance(message, str):
                self.error = (reason[:64], message[:2000])

    def _add(self, name: str, step: int, value: float) -> None:
        points = self.series.get(name, [])
        if points and step <= points[-1][0]:
            points = [point for point in points if point[0] < step]  # a repeat replaces
        self.series[name] = thin([*points, [step, round(value, 6)]])

    def snapshot(self) -> dict[str, Any]:
        """What the run row stores: ``progress``, ``loss_curve``, ``series`` and ``metrics``."""
        progress: dict[str, Any] = {}
        if self.step is not None:
            progress = {"step": self.step, "total_steps": self.total_steps, "loss": self.loss}
            if self.loss_mean is not None:  # trainers that report it (the built-in one does)
                progress["loss_mean"] = self.loss_mean
            progress.update(self.phase)
        return {
            "progress": progress,
            "loss_curve": self.curve,
            "series": {name: list(points) for name, points in self.series.items()},
            "metrics": dict(self.result),
        }

    def take(self) -> dict[str, Any] | None:
        """The snapshot if anything changed since the last take, else None."""
        if not self.changed:
            return None
        self.changed = False
        return self.snapshot()


class LineSplitter:
    """Bytes in, complete lines out (UTF-8, errors replaced); a line longer than the limit is
    cut, so a flood without newlines cannot grow memory."""

    def __init__(self, on_line: Callable[[str], None], limit: int = MAX_LINE_CHARS) -> None:
        self.on_line = on_line
        self.limit = limit
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            self.on_line(raw[: self.limit].decode("utf-8", "replace"))
        if len(self.buffer) > self.limit:
            self.buffer = b""  # not a progress line: drop it rather than keep it growing

    def close(self) -> None:
        if self.buffer:
            self.on_line(self.buffer[: self.limit].decode("utf-8", "replace"))
            self.buffer = b""
