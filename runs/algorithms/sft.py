"""Supervised fine-tuning: the loss is the completion's tokens' negative log-likelihood."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runs.algorithms.base import Algorithm
from runs.datasets import FORMAT_CHAT, FORMAT_PROMPT_COMPLETION

if TYPE_CHECKING:
    from runs.trainer import Plan


class Sft(Algorithm):
    name = "sft"
    label = "SFT"
    summary = "Supervised fine-tuning: learn to give each prompt's completion"
    formats = frozenset({FORMAT_PROMPT_COMPLETION, FORMAT_CHAT})
    trains_on = "prompt/completion or chat records"
    tunix_modules = ("tunix.sft.peft_trainer",)

    @classmethod
    def train(cls, plan: Plan, *, resumed_from: int) -> dict[str, Any]:
        from runs import trainer

        return trainer.train_sft(plan, resumed_from=resumed_from)
