"""Preference tuning with Tunix's DPO trainer: DPO against a frozen reference model, and ORPO
(odds-ratio preference optimisation), which needs no reference.

Each record is tokenized here, not by Tunix: the prompt (BOS, then the prompt, or a chat
record's context rendered as SFT renders it) is left-padded, the chosen and rejected replies
(their tokens, then EOS) right-padded, all to one shape per run, so the train step compiles
once. The run's progress lines carry, besides the loss, the rewards Tunix computes per step:

    TUNIX_PROGRESS {"step": 3, "total_steps": 12, "loss": 0.61, "loss_mean": 0.66,
                    "learning_rate": 0.003, "tokens_per_second": 910.2,
                    "chosen_reward": 0.12, "rejected_reward": -0.08, "reward_margin": 0.2,
                    "reward_accuracy": 0.75}
    TUNIX_PROGRESS {"step": 4, "total_steps": 12, "eval_loss": 0.58}

DPO's reward of a reply is beta times how much likelier the policy makes it than the reference
did (summed log-probabilities); ORPO's is lambda_orpo times its summed log-probability.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runs import trainer
from runs.algorithms.base import Algorithm
from runs.datasets import FORMAT_PREFERENCE, response_text
from runs.outcomes import Reason
from runs.progress import PROGRESS_PREFIX, LossWindow

if TYPE_CHECKING:
    from runs.trainer import Plan

# Padded lengths are rounded up to a multiple of this: the shape of the longest pair with
# little padding, and friendlier to the compiler than an odd length.
LENGTH_GRANULE = 8
# The progress line's signals (Dpo.signals), by the name Tunix's DPO trainer logs each under.
SIGNAL_METRICS = {
    "chosen_reward": "rewards/chosen",
    "rejected_reward": "rewards/rejected",
    "reward_margin": "rewards/margin",
    "reward_accuracy": "rewards/accuracy",
}


@dataclass(frozen=True)
class Pair:
    """One preference record's tokens: the framed prompt (BOS first, when the tokenizer has
    one) and each reply followed by EOS."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]

    @property
    def real_tokens(self) -> int:
        """Tokens the model reads for this pair, padding not counted: the prompt twice, once
        before each reply."""
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


@dataclass(frozen=True)
class PairBatch:
    """A batch as the trainer below takes it: Tunix's ``TrainingInput`` and, for DPO, the
    reference model's summed log-probabilities of each row's chosen and rejected reply."""

    inputs: Any
    ref_chosen: Any = None
    ref_rejected: Any = None


def preference_prompt(record: dict[str, Any], tokenizer: Any) -> str:
    """A record's prompt as the model reads it: the prompt, or a chat record's messages
    rendered exactly as SFT renders a context before the assistant's turn."""
    if "messages" not in record:
        return str(record["prompt"])
    # Every message is context here (the replies are chosen and rejected), so render them as
    # the context of an assistant turn still to come.
    turn = [*record["messages"], {"role": "assistant", "content": ""}]
    return trainer.prompt_and_completion({"messages": turn}, tokenizer)[0]


def encode_pair(record: dict[str, Any], tokenizer: Any) -> Pair:
    prompt = trainer.frame_prompt(tokenizer, preference_prompt(record, tokenizer))[0]
    end = [] if tokenizer.eos_id is None else [tokenizer.eos_id]

    def reply(field: str) -> list[int]:
        return list(tokenizer.encode(response_text(record[field]))) + end

    return Pair(prompt, reply("chosen"), reply("rejected"))


def round_up(length: int, granule: int = LENGTH_GRANULE) -> int:
    return -(-length // granule) * granule


def pair_shape(pairs: Sequence[Pair], max_seq_length: int) -> tuple[int, int]:
    """(prompt length, reply length) every batch of the run is padded to: each the longest
    one's, rounded up to LENGTH_GRANULE, together at most ``max_seq_length``. When both do
    not fit, the replies (which carry the loss) keep at least half of it, and all of what
    the prompts leave free; the prompts get the rest."""
    prompt_want = round_up(max(len(p.prompt) for p in pairs))
    reply_want = round_up(max(max(len(p.chosen), len(p.rejected)) for p in pairs))
    if prompt_want + reply_want <= max_seq_length:
        return prompt_want, reply_want
    reply = min(reply_want, max(max_seq_length - prompt_want, max_seq_length // 2))
    return max_seq_length - reply, reply


def fit_pair(pair: Pair, prompt_length: int, reply_length: int, bos_id: int | None) -> Pair:
    """``pair`` cut to the run's shape: a long prompt keeps its end, the part the replies
    follow (and its BOS, still first), a long reply its start."""
    prompt = pair.prompt
    if len(prompt) > prompt_length:
        head = prompt[:1] if bos_id is not None and prompt[:1] == [bos_id] else []
        prompt = head + prompt[len(prompt) - (prompt_length - len(head)) :]
    return Pair(prompt, pair.chosen[:reply_length], pair.rejected[:reply_length])


def pad_pairs(
    pairs: Sequence[Pair], prompt_length: int, reply_length: int, pad_id: int
) -> dict[str, list[list[int]]]:
    """The fields of Tunix's DPO ``TrainingInput`` for fitted ``pairs``: prompts left-padded,
    so each prompt's last token is right before its reply, replies right-padded. The masks
    come from the lengths, not from comparing with the pad id, which may be a real token's."""
    fields = ("prompt", "chosen", "rejected")
    arrays: dict[str, list[list[int]]] = {f"{f}_{k}": [] for f in fields for k in ("ids", "mask")}
    for pair in pairs:
        gap = prompt_length - len(pair.prompt)
        arrays["prompt_ids"].append([pad_id] * gap + pair.prompt)
        arrays["prompt_mask"].append([0] * gap + [1] * len(pair.prompt))
        for name, reply in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            gap = reply_length - len(reply)
            arrays[f"{name}_ids"].append(reply + [pad_id] * gap)
            arrays[f"{name}_mask"].append([1] * len(reply) + [0] * gap)
    return arrays


def training_input(pairs: Sequence[Pair], shape: tuple[int, int], pad_id: int) -> Any:
    import numpy as np
    from tunix.sft.dpo import dpo_trainer

    arrays = pad_pairs(pairs, *shape, pad_id)
    return dpo_trainer.TrainingInput(
        **{name: np.array(rows, np.int32) for name, rows in arrays.items()}
    )


def pair_batches(count: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` full batches of pair indices, reproducible from the seed (a resumed run is
    handed every batch and Tunix skips those already trained): each epoch is shuffled and
    cut into batches, the short last one topped up with the epoch's first pairs. An epoch is
    ``ceil(count / batch_size)`` steps, as trainer.plan_steps counts."""
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible order, not a secret
    produced = 0
    while count and produced < steps:
        order = list(range(count))
        rng.shuffle(order)
        batches = [order[i : i + batch_size] for i in range(0, count, batch_size)]
        batches[-1] += itertools.islice(itertools.cycle(order), batch_size - len(batches[-1]))
        yield from batches[: steps - produced]
        produced += len(batches)


def eval_groups(count: int, batch_size: int) -> list[list[int]]:
    """Every held-out pair once, in batches of ``batch_size`` and one smaller remainder (at
    most two compiled shapes; no repeated pair, which would weigh twice)."""
    return [list(range(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]


def scaled_eval_loss(batches: int, pairs: int) -> Callable[..., Any]:
    """Tunix's DPO/ORPO loss of an evaluation batch, scaled by its row count so that the sum
    over the batches divided by their count, which the hooks get, and the mean Tunix logs,
    are the mean over every held-out pair, however unevenly the batches are filled."""
    from tunix.sft.dpo import dpo_trainer

    def loss(model: Any, train_example: Any, **options: Any) -> Any:
        value, aux = dpo_trainer.dpo_loss_fn(model, train_example, **options)
        rows = train_example.completion_mask.shape[0] // 2  # chosen rows, then rejected ones
        return value * (rows * batches / pairs), aux

    return loss


def reference_logps(
    model: Any, pairs: Sequence[Pair], shape: tuple[int, int], pad_id: int, rows: int
) -> tuple[Any, Any]:
    """The model's summed log-probabilities of each pair's chosen and rejected reply, in
    batches of ``rows`` pairs (the last one filled up with repeats, dropped after), so the
    forward pass compiles once. The inputs are built as DPOTrainer._prepare_inputs builds
    them for its reference model."""
    import jax.numpy as jnp
    import numpy as np
    from tunix.rl import common
    from tunix.sft.dpo import dpo_trainer

    chosen: list[Any] = []
    rejected: list[Any] = []
    for start in range(0, len(pairs), rows):
        chunk = list(pairs[start : start + rows])
        filled = chunk + list(itertools.islice(itertools.cycle(chunk), rows - len(chunk)))
        batch = training_input(filled, shape, pad_id)
        prompt_ids = jnp.concatenate([batch.prompt_ids, batch.prompt_ids], axis=0)
        prompt_mask = jnp.concatenate([batch.prompt_mask, batch.prompt_mask], axis=0)
        reply_ids = jnp.concatenate([batch.chosen_ids, batch.rejected_ids], axis=0)
        reply_mask = jnp.concatenate([batch.chosen_mask, batch.rejected_mask], axis=0)
        input_ids = jnp.concatenate([prompt_ids, reply_ids], axis=1)
        mask = jnp.concatenate([prompt_mask, reply_mask], axis=1)
        if hasattr(model, "get_attention_mask"):
            attention_mask = model.get_attention_mask(input_ids, inputs_mask=mask)
        else:
            attention_mask = common.make_causal_attn_mask(mask)
        chosen_logps, rejected_logps = dpo_trainer.compute_logps(
            model,
            input_ids,
            common.build_positions_from_mask(mask),
            attention_mask,
            reply_ids.shape[1],
            reply_mask,
        )
        chosen.extend(np.asarray(chosen_logps, np.float32)[: len(chunk)])
        rejected.extend(np.asarray(rejected_logps, np.float32)[: len(chunk)])
    return np.array(chosen, np.float32), np.array(rejected, np.float32)


def preference_trainer_class() -> type:
    """Tunix's DPOTrainer, taking PairBatch batches whose reference log-probabilities were
    computed before training (see train_preference), instead of running a reference model."""
    import jax.numpy as jnp
    from tunix.sft.dpo import dpo_trainer

    class PreferenceTrainer(dpo_trainer.DPOTrainer):  # type: ignore[misc]
        def _prepare_inputs(self, training_input: Any) -> Any:
            if not isinstance(training_input, PairBatch):
                return super()._prepare_inputs(training_input)
            example = super()._prepare_inputs(training_input.inputs)
            if training_input.ref_chosen is None:
                return example
            return example.replace(
                ref_chosen_logps=jnp.asarray(training_input.ref_chosen),
                ref_rejected_logps=jnp.asarray(training_input.ref_rejected),
            )

    return PreferenceTrainer


def train_preference(plan: Plan, *, algorithm: str, resumed_from: int) -> dict[str, Any]:
    """Train ``plan`` with DPO or ORPO (``algorithm``) and return the result line's numbers.

    ``train_loss``, ``reward_margin`` and ``reward_accuracy`` are means over the last
    progress.TRAIN_LOSS_WINDOW steps, as SFT's ``train_loss`` is (one batch of pairs says
    little); ``eval_loss`` is the DPO/ORPO loss over every held-out pair after the last
    step."""
    hyper = plan.hyper
    seed = int(hyper["seed"])
    batch_size = int(hyper["batch_size"])
    max_seq_length = int(hyper["max_seq_length"])
    numbered = trainer.read_numbered_records(plan.dataset)
    train_rows, eval_rows = trainer.split_records(numbered, float(hyper["eval_fraction"]), seed)
    if not train_rows:
        raise trainer.TrainerError(
            Reason.CONFIG_INVALID, f"{plan.dataset.name} holds no preference pair to train on"
        )
    # A missing checkpoint is reported before the slow imports.
    checkpoint = None if plan.model.is_preset else trainer.resolve_checkpoint(plan)

    import jax
    import numpy as np
    from tunix.sft.dpo import dpo_trainer
    from tunix.utils import mesh as mesh_lib

    devices = jax.device_count() if batch_size % jax.device_count() == 0 else 1
    mesh = mesh_lib.create_mesh((devices, 1), ("fsdp", "tp"))
    model, tokenizer = trainer.build_model(plan, checkpoint, mesh, seed)

    encoded = [encode_pair(record, tokenizer) for _, record in train_rows + eval_rows]
    shape = pair_shape(encoded, max_seq_length)
    pairs = [fit_pair(pair, *shape, tokenizer.bos_id) for pair in encoded]
    train_pairs, eval_pairs = pairs[: len(train_rows)], pairs[len(train_rows) :]
    total_steps = trainer.plan_steps(
        len(train_pairs), batch_size, int(hyper["num_epochs"]), hyper.get("max_steps")
    )
    every = trainer.eval_interval(total_steps)
    # Compiling from here (the reference pass, then the train step), and, when resuming,
    # restoring the checkpoint of that step.
    trainer.emit(PROGRESS_PREFIX, {"step": resumed_from, "total_steps": total_steps})

    # DPO's reference is the starting model: its log-probabilities of every pair's replies,
    # taken once here, before LoRA is applied or a checkpoint restored, are all the loss
    # needs of it. That keeps no second model in memory (Tunix's own way, a ref_model, is a
    # frozen copy of every weight for full fine-tuning) and runs the reference forward pass
    # once per pair rather than once per pair and epoch. With LoRA it is the base model, as
    # the adapters start at zero. ORPO has no reference.
    reference: tuple[Any, Any] | None = None
    if algorithm == "dpo":
        reference_started = time.monotonic()
        with mesh:
            reference = reference_logps(model, pairs, shape, tokenizer.pad_id, batch_size)
        print(
            f"reference log-probabilities of {len(pairs)} pairs taken in "
            f"{time.monotonic() - reference_started:.1f} s",
            flush=True,
        )

    def batch_of(indices: Sequence[int], offset: int) -> PairBatch:
        inputs = training_input([pairs[offset + i] for i in indices], shape, tokenizer.pad_id)
        if reference is None:
            return PairBatch(inputs)
        rows = [offset + i for i in indices]
        return PairBatch(inputs, reference[0][rows], reference[1][rows])

    if int(hyper["lora_rank"]) > 0:
        with mesh:
            model = trainer.with_lora(
                model, plan.model.family, int(hyper["lora_rank"]), float(hyper["lora_alpha"]), seed
            )

    config = dpo_trainer.DPOTrainingConfig(
        algorithm=algorithm,
        # Each algorithm has only its own weight (training_config); Tunix's ORPO loss does not
        # read beta, nor DPO's lambda_orpo, so the other keeps Tunix's default.
        **(
            {"beta": float(hyper["beta"])}
            if algorithm == "dpo"
            else {"lambda_orpo": float(hyper["lambda_orpo"])}
        ),
        **trainer.tunix_training_options(plan, total_steps, every),
    )
    optimizer = trainer.run_optimizer(plan)
    # ref_model=None: DPO's reference log-probabilities ride in the batches (above).
    tunix_trainer = preference_trainer_class()(model, None, optimizer, config)

    groups = eval_groups(len(eval_pairs), batch_size)
    eval_set = [batch_of(group, len(train_pairs)) for group in groups] or None
    if groups:
        tunix_trainer.eval_loss_fn = scaled_eval_loss(len(groups), len(eval_pairs))

    seen: dict[str, float] = {}
    report_step = trainer.step_reporter(total_steps, seen)
    margins, accuracies = LossWindow(), LossWindow()
    # The batches are reproducible from the seed, so count what each step reads without
    # keeping them; a resumed run skips those before its checkpoint unseen.
    step_tokens = [
        sum(train_pairs[i].real_tokens for i in batch)
        for batch in itertools.islice(
            pair_batches(len(train_pairs), batch_size, total_steps, seed), resumed_from, None
        )
    ]
    throughput = trainer.Throughput(step_tokens, first_step=resumed_from)
    evaluating_since: list[float] = []  # when the running evaluation's first batch started

    class Report(trainer.quiet_hooks()):  # type: ignore[misc]
        def on_train_step_end(self, run: Any, step: int, loss: Any) -> None:
            batch_loss = float(np.mean(np.asarray(loss)))
            extra = {"tokens_per_second": throughput.report(int(step))}
            rate = trainer.current_learning_rate(run)
            if rate is not None:
                extra["learning_rate"] = rate
            # Tunix logs a step's aux metrics (its rewards) just before handing the step to
            # this hook: the newest value of each is this step's.
            for key, metric in SIGNAL_METRICS.items():
                history = run.metrics_logger.get_metric_history(run.metrics_prefix, metric, "train")
                extra[key] = float(history[-1])
            seen["reward_margin"] = margins.add(extra["reward_margin"])
            seen["reward_accuracy"] = accuracies.add(extra["reward_accuracy"])
            report_step(int(step), batch_loss, **extra)

        def on_eval_step_start(self, _trainer: Any) -> None:
            if not evaluating_since:
                evaluating_since.append(time.monotonic())

        def on_eval_step_end(self, run: Any, eval_loss: Any) -> None:
            # The sum over the evaluation batches (see scaled_eval_loss).
            seen["eval_loss"] = float(np.asarray(eval_loss)) / len(groups)
            throughput.pause(time.monotonic() - evaluating_since.pop())
            trainer.emit(
                PROGRESS_PREFIX,
                {
                    "step": int(run.train_steps),
                    "total_steps": total_steps,
                    "eval_loss": seen["eval_loss"],
                },
            )

    tunix_trainer.with_training_hooks(Report())
    compiled_shapes = 1 + len({len(group) for group in groups})
    print(
        f"padded to a {shape[0]}-token prompt and {shape[1]}-token replies; "
        f"{len(train_pairs)} pairs to train on, {len(eval_pairs)} held out",
        flush=True,
    )
    started = time.monotonic()
    throughput.start()
    with mesh:
        tunix_trainer.train(
            (
                batch_of(batch, 0)
                for batch in pair_batches(len(train_pairs), batch_size, total_steps, seed)
            ),
            eval_set,
        )
    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "steps": int(tunix_trainer.train_steps),
        "train_loss": seen.get("train_loss"),
        "eval_loss": seen.get("eval_loss"),
        "reward_margin": seen.get("reward_margin"),
        "reward_accuracy": seen.get("reward_accuracy"),
        "tokens_per_second": round(sum(step_tokens) / wall, 1),
        "wall_seconds": round(wall, 3),
        "compiled_shapes": compiled_shapes,
    }
    return {key: value for key, value in result.items() if value is not None}


class Dpo(Algorithm):
    name = "dpo"
    label = "DPO"
    summary = (
        "Direct preference optimisation: prefer each prompt's chosen reply to its rejected one"
    )
    formats = frozenset({FORMAT_PREFERENCE})
    trains_on = "preference pairs {prompt, chosen, rejected}"
    tunix_modules = ("tunix.sft.dpo.dpo_trainer",)
    signals = {
        "chosen_reward": "chosen reward",
        "rejected_reward": "rejected reward",
        "reward_margin": "reward margin",
        "reward_accuracy": "reward accuracy",
    }
    results = ("reward_margin", "reward_accuracy")
    chart_groups = (("rewards", ("chosen_reward", "rejected_reward", "reward_margin")),)

    @classmethod
    def train(cls, plan: Plan, *, resumed_from: int) -> dict[str, Any]:
        return train_preference(plan, algorithm=cls.name, resumed_from=resumed_from)


class Orpo(Dpo):
    name = "orpo"
    label = "ORPO"
    summary = "Odds-ratio preference optimisation: SFT on the chosen reply plus a preference term"
