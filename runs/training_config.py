"""Hyperparameters a run accepts: one table drives API validation, defaults, the launch form
and dry-run checks, for every training algorithm (runs/algorithms/).

A row applies to every algorithm unless it names the ones it belongs to. A name may have one row
per algorithm group when its meaning or default differs (``beta`` is DPO's preference strength
and GRPO's KL weight); an algorithm sees at most one row of each name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runs.rewards import REWARD_NAMES

SFT, DPO, ORPO, GRPO = "sft", "dpo", "orpo", "grpo"


@dataclass(frozen=True)
class Param:
    name: str
    kind: type[int] | type[float] | type[str]
    default: int | float | str | None
    minimum: int | float
    maximum: int | float
    help: str
    exclusive_minimum: bool = False
    algorithms: frozenset[str] | None = None  # None: every algorithm
    choices: tuple[str, ...] = ()  # the values a str parameter takes

    def applies_to(self, algorithm: str) -> bool:
        return self.algorithms is None or algorithm in self.algorithms


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
        algorithms=frozenset({SFT}),
    ),
    Param(
        "max_new_tokens",
        int,
        32,
        1,
        4096,
        "Tokens generated at most per completion: per held-out record in SFT's generation "
        "eval, per rollout in GRPO (generation stops earlier at the end token)",
        algorithms=frozenset({SFT, GRPO}),
    ),
    Param(
        "temperature",
        float,
        0.0,
        0.0,
        2.0,
        "Sampling temperature of the generation eval; 0 always picks the likeliest token (greedy)",
        algorithms=frozenset({SFT}),
    ),
    Param(
        "beta",
        float,
        0.1,
        0.0,
        100.0,
        "Preference strength: how sharply the loss prefers the chosen reply over the rejected one "
        "relative to the reference model",
        exclusive_minimum=True,
        algorithms=frozenset({DPO}),
    ),
    Param(
        "lambda_orpo",
        float,
        0.1,
        0.0,
        100.0,
        "Weight of ORPO's odds-ratio preference term against its SFT loss on the chosen reply",
        algorithms=frozenset({ORPO}),
    ),
    Param(
        "num_generations",
        int,
        4,
        2,
        64,
        "Completions sampled per prompt; each is rewarded against the others of its group, so "
        "at least 2",
        algorithms=frozenset({GRPO}),
    ),
    Param(
        "temperature",
        float,
        0.9,
        0.0,
        2.0,
        "Sampling temperature of the rollouts: a group needs different completions to learn from",
        exclusive_minimum=True,
        algorithms=frozenset({GRPO}),
    ),
    Param(
        "beta",
        float,
        0.04,
        0.0,
        10.0,
        "Weight of the KL penalty that keeps the policy near the reference model; 0 drops the "
        "reference (less memory)",
        algorithms=frozenset({GRPO}),
    ),
    Param(
        "epsilon",
        float,
        0.2,
        0.0,
        1.0,
        "Clipping range of the policy ratio (PPO-style)",
        exclusive_minimum=True,
        algorithms=frozenset({GRPO}),
    ),
    Param(
        "reward",
        str,
        "answer_match",
        0,
        0,
        "The reward the completions are scored with, by name (see docs/api.md, GRPO rewards)",
        algorithms=frozenset({GRPO}),
        choices=REWARD_NAMES,
    ),
)
PARAM_NAMES = frozenset(p.name for p in PARAMS)


@functools.cache
def params_for(algorithm: str) -> tuple[Param, ...]:
    """The rows ``algorithm`` accepts, in table order."""
    return tuple(p for p in PARAMS if p.applies_to(algorithm))


def defaults(algorithm: str) -> dict[str, Any]:
    return {p.name: p.default for p in params_for(algorithm)}


ALGORITHM_ORDER = (SFT, DPO, ORPO, GRPO)  # as runs/algorithms lists them, for messages


def owners_of(param: Param) -> list[str]:
    return [a for a in ALGORITHM_ORDER if param.applies_to(a)]


def owners(name: str) -> list[str]:
    """The algorithms with a row named ``name``."""
    rows = [p for p in PARAMS if p.name == name]
    return [a for a in ALGORITHM_ORDER if any(p.applies_to(a) for p in rows)]


def check_value(param: Param, value: Any) -> str | None:
    """The reason ``value`` is not acceptable for ``param``, or None."""
    if value is None:
        return None if param.default is None else "may not be null"
    if param.kind is str:
        if not isinstance(value, str) or value not in param.choices:
            return f"must be one of {', '.join(param.choices)}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number ({param.kind.__name__})"
    if param.kind is int and not (isinstance(value, int) or float(value).is_integer()):
        return "must be an integer"
    low_ok = value > param.minimum if param.exclusive_minimum else value >= param.minimum
    if not low_ok or value > param.maximum:
        low = "(" if param.exclusive_minimum else "["
        return f"must be in {low}{param.minimum}, {param.maximum}]"
    return None


# GRPO trains on a prompt and its completion together, within max_seq_length: at least this
# much of it is left for the prompt (BOS and one token).
MIN_PROMPT_TOKENS = 2


def _room_for_a_prompt(config: dict[str, Any]) -> str | None:
    room = config["max_seq_length"] - config["max_new_tokens"]
    if room >= MIN_PROMPT_TOKENS:
        return None
    return (
        f"must leave at least {MIN_PROMPT_TOKENS} of max_seq_length "
        f"({config['max_seq_length']}) for the prompt: a rollout trains on prompt and "
        "completion together"
    )


# Rules between values, by algorithm: (the field an error names, the check).
CROSS_CHECKS: dict[str, tuple[tuple[str, Callable[[dict[str, Any]], str | None]], ...]] = {
    GRPO: (("max_new_tokens", _room_for_a_prompt),),
}


def _belongs_elsewhere(name: str, algorithm: str) -> str:
    takers = owners(name)
    listed = takers[0] if len(takers) == 1 else f"{', '.join(takers[:-1])} and {takers[-1]}"
    return f"applies to {listed}, not to {algorithm}"


def normalise(
    values: dict[str, Any], algorithm: str = SFT
) -> tuple[dict[str, Any], dict[str, str]]:
    """Fill ``algorithm``'s defaults and check every value; a value for a parameter of another
    algorithm is an error, not ignored. Returns (config, errors by field)."""
    errors: dict[str, str] = {}
    config: dict[str, Any] = {}
    accepted = params_for(algorithm)
    for name in sorted(set(values) - {p.name for p in accepted}):
        known = name in PARAM_NAMES
        errors[name] = _belongs_elsewhere(name, algorithm) if known else "unknown hyperparameter"
    for param in accepted:
        value = values.get(param.name, param.default)
        reason = check_value(param, value)
        if reason:
            errors[param.name] = reason
        elif value is not None:
            config[param.name] = param.kind(value)
        else:
            config[param.name] = None
    if not errors:
        for name, check in CROSS_CHECKS.get(algorithm, ()):
            if reason := check(config):
                errors[name] = reason
    return config, errors
