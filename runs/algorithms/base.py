"""What every training algorithm declares: its name, the dataset formats it trains on, the Tunix
modules it needs on the worker, the per-step signals its progress lines carry, and how it trains.

No Django, and nothing heavy at import: the web process reads the declarations (forms, the API,
submit-time checks); only the training process calls ``train``, which imports JAX and Tunix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from runs.trainer import Plan


class Algorithm:
    """One post-training algorithm. A new one is a module with a subclass, plus one line in
    runs/algorithms/__init__.py's ``ALGORITHMS``; its hyperparameters are rows of
    runs/training_config.py's ``PARAMS`` naming it."""

    name: ClassVar[str]
    label: ClassVar[str]  # what a page calls it
    summary: ClassVar[str]  # one line for the launch form and the API schema
    formats: ClassVar[frozenset[str]]  # stored dataset formats it trains on
    trains_on: ClassVar[str]  # those formats as a person reads them
    # Modules the worker's Tunix must provide; a run on a build without one fails with
    # runtime_missing naming it, before any training starts.
    tunix_modules: ClassVar[tuple[str, ...]]
    # Numbers a train step's progress line carries besides loss, learning rate and throughput,
    # each charted as a series of its own, by key: the chart's label.
    signals: ClassVar[dict[str, str]] = {}
    # How the run page charts the signals: (title, keys drawn on shared axes) each; signals in
    # no group get a chart each.
    chart_groups: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()
    # Where its Tunix trainer keeps checkpoints under the run's checkpoint root, "" for the
    # root itself: a re-queued run resumes from the newest one an earlier attempt left there.
    checkpoint_subdir: ClassVar[str] = ""
    # Numbers its result line may carry beyond the common ones (runs/progress.py RESULT_KEYS).
    results: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def charts(cls) -> list[tuple[str, tuple[str, ...]]]:
        grouped = [key for _, keys in cls.chart_groups for key in keys]
        alone = [(label, (key,)) for key, label in cls.signals.items() if key not in grouped]
        return [*cls.chart_groups, *alone]

    @classmethod
    def train(cls, plan: Plan, *, resumed_from: int) -> dict[str, Any]:
        """Train as ``plan`` says, print progress lines (runs/progress.py), return the result
        line's numbers; raise runs.trainer.TrainerError for a run it refuses."""
        raise NotImplementedError
