"""The training algorithms a run can choose (``TunixRun.algorithm``), one small class each.

Adding one is a module with an ``Algorithm`` subclass (runs/algorithms/base.py) and a line in
``ALGORITHMS``; its hyperparameters are rows of runs/training_config.py's PARAMS.
"""

from __future__ import annotations

import importlib.util

from runs.algorithms.base import Algorithm
from runs.algorithms.grpo import Grpo
from runs.algorithms.preference import Dpo, Orpo
from runs.algorithms.sft import Sft

ALGORITHMS: dict[str, type[Algorithm]] = {
    algorithm.name: algorithm for algorithm in (Sft, Dpo, Orpo, Grpo)
}
ALGORITHM_NAMES = tuple(ALGORITHMS)
DEFAULT_ALGORITHM = Sft.name
# Every step signal any algorithm reports, by key: its chart's label.
SIGNALS: dict[str, str] = {
    key: label for algorithm in ALGORITHMS.values() for key, label in algorithm.signals.items()
}


def unknown_algorithm_message(name: object) -> str:
    return f"unknown algorithm {name!r}: one of {', '.join(ALGORITHM_NAMES)}"


def format_refusal(algorithm: str, dataset_format: str, *, dataset_key: str = "") -> str | None:
    """Why a run of ``algorithm`` cannot train on a dataset of ``dataset_format``, or None when
    it can; the reason names the algorithms that do take that format, for the person to pick
    another algorithm or another dataset."""
    chosen = ALGORITHMS.get(algorithm)
    if chosen is None:
        return unknown_algorithm_message(algorithm)
    if dataset_format in chosen.formats:
        return None
    takers = [name for name, other in ALGORITHMS.items() if dataset_format in other.formats]
    dataset = f"dataset {dataset_key}" if dataset_key else "the dataset"
    if not takers:
        hint = "no algorithm trains on it"
    elif len(takers) == 1:
        hint = f"{takers[0]} trains on it"
    else:
        hint = f"{', '.join(takers[:-1])} and {takers[-1]} train on it"
    return f"{algorithm} trains on {chosen.trains_on}; {dataset} is {dataset_format} ({hint})"


def missing_module(algorithm: type[Algorithm]) -> str | None:
    """The first module ``algorithm`` needs that this interpreter cannot import, or None."""
    for module in algorithm.tunix_modules:
        try:
            found = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # a parent package is missing
            found = None
        if found is None:
            return module
    return None
