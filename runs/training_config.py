"""Hyperparameters a run accepts: one table drives API validation, defaults and dry-run checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str
    kind: type[int] | type[float]
    default: int | float | None
    minimum: int | float
    maximum: int | float
    help: str
    exclusive_minimum: bool = False


PARAMS: tuple[Param, ...] = (
    Param(
        "learning_rate",
        float,
        None,
        0.0,
        1.0,
        "Optimizer learning rate (default: the model's, 3e-3 for the tiny preset, else 2e-5)",
        exclusive_minimum=True,
    ),
    Param("num_epochs", int, 3, 1, 100, "Passes over the training split"),
    Param("batch_size", int, 8, 1, 512, "Examples per optimizer step"),
    Param("max_seq_length", int, 2048, 16, 32768, "Tokens per example (longer ones are cut)"),
    Param("max_steps", int, None, 1, 1_000_000, "Stop after this many steps (default: epochs)"),
    Param("eval_fraction", float, 0.1, 0.0, 0.5, "Share of records held out for evaluation"),
    Param("seed", int, 42, 0, 2**31 - 1, "Random seed for shuffling and initialisation"),
    Param("lora_rank", int, 0, 0, 1024, "LoRA rank; 0 trains all weights"),
    Param("lora_alpha", float, 16.0, 0.0, 4096.0, "LoRA scaling factor"),
    Param(
        "eval_max_items",
        int,
        64,
        0,
        10_000,
        "Held-out records the trained model completes and is scored on after training "
        "(exact match, token F1, ROUGE-L); 0 turns this generation eval off",
    ),
    Param(
        "max_new_tokens",
        int,
        32,
        1,
        4096,
        "Tokens generated at most per held-out record (generation stops earlier at the end token)",
    ),
    Param(
        "temperature",
        float,
        0.0,
        0.0,
        2.0,
        "Sampling temperature of the generation eval; 0 always picks the likeliest token (greedy)",
    ),
)
PARAM_NAMES = frozenset(p.name for p in PARAMS)


def check_value(param: Param, value: Any) -> str | None:
    """The reason ``value`` is not acceptable for ``param``, or None."""
    if value is None:
        return None if param.default is None else "may not be null"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number ({param.kind.__name__})"
    if param.kind is int and not (isinstance(value, int) or float(value).is_integer()):
        return "must be an integer"
    low_ok = value > param.minimum if param.exclusive_minimum else value >= param.minimum
    if not low_ok or value > param.maximum:
        low = "(" if param.exclusive_minimum else "["
        return f"must be in {low}{param.minimum}, {param.maximum}]"
    return None


def normalise(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Fill defaults and check every value. Returns (config, errors by field)."""
    errors: dict[str, str] = {}
    config: dict[str, Any] = {}
    for name in sorted(set(values) - PARAM_NAMES):
        errors[name] = "unknown hyperparameter"
    for param in PARAMS:
        value = values.get(param.name, param.default)
        reason = check_value(param, value)
        if reason:
            errors[param.name] = reason
        elif value is not None:
            config[param.name] = param.kind(value)
        else:
            config[param.name] = None
    return config, errors
