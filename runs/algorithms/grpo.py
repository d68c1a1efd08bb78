"""Group relative policy optimisation with Tunix's GRPO learner: the model completes each prompt
several times, the run's rewards (runs/rewards.py) score the completions, and each is pushed up
or down by how it compares with its group.

One step is one batch of ``batch_size`` prompts: Tunix samples ``num_generations`` completions
of each (one rollout of batch_size x num_generations rows), rewards them, and makes one
optimizer update of the policy on all of them (no mini-batches, one GRPO iteration). A run is
ceil(training prompts / batch_size) steps an epoch, as SFT counts them, capped by max_steps.

On one host the policy, the rollout and (when beta > 0) the reference model share one mesh, so
the sampler generates with the weights being trained and nothing is synced. The reference is a
frozen copy of the starting weights, or, with LoRA, the base model the adapters sit on (one
copy of the weights for both). A prompt is framed as SFT frames it (BOS, then its tokens) and
left-padded to one length for the run (the smallest power of two that holds the longest, at
most max_seq_length - max_new_tokens; longer prompts lose their start), so the sampler and the
train step each compile once. The rollouts are sampled with a key made from the run's seed and
the step, so a run resumed from a checkpoint draws the same completions as an uninterrupted one
from there on.

Tunix's RL cluster keeps the policy's Orbax checkpoints in ``<checkpoints>/actor/<step>``
(``Grpo.checkpoint_subdir``, where runs/trainer.py's resume looks) and writes TensorBoard
scalars (actor/loss, actor/kl, rewards/..., completions/...) into the metrics directory.

Each step's progress line carries the policy loss (``loss``, ``loss_mean``), the learning rate,
and the step's rewards: ``reward_mean`` and ``reward_std`` over its batch_size x num_generations
completions, and ``kl``, the KL divergence from the reference model as the loss penalises it
(the GRPO paper's per-token estimate, never negative, averaged over the completion tokens);
only when beta > 0: without a reference there is none to measure. There is no evaluation
line: held-out records (eval_fraction) are kept out of training but not rolled out.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from runs import trainer, training_config
from runs.algorithms.base import Algorithm
from runs.datasets import FORMAT_PROMPT_ANSWER, answer_text
from runs.outcomes import Reason
from runs.progress import PROGRESS_PREFIX, LossWindow
from runs.rewards import REWARD_NAMES, REWARDS

# Where Tunix's RL cluster puts the policy's checkpoints, under the checkpoint root it is given.
ACTOR_DIR = "actor"
# Tunix's per-completion reward (the sum of the run's rewards; it has one), as the reward
# manager buffers it for the step's metrics.
REWARD_METRIC = "rewards/sum"
MIN_PROMPT_TOKENS = training_config.MIN_PROMPT_TOKENS  # BOS and the prompt's last token


@dataclass(frozen=True)
class Prompt:
    text: str  # as the dataset has it; the rollout frames it (BOS first)
    answer: str  # the reference answer, the reward's ``answer`` column


def training_prompts(
    numbered: Sequence[tuple[int, dict[str, Any]]], eval_fraction: float, seed: int
) -> list[Prompt]:
    """The prompt_answer records GRPO trains on: the split SFT would train on (the same
    shuffle and held-out share, so runs of either algorithm on a dataset hold out the same
    records)."""
    train_rows, _held_out = trainer.split_records(list(numbered), eval_fraction, seed)
    return [
        Prompt(str(record["prompt"]), answer_text(record["answer"])) for _, record in train_rows
    ]


def prompt_batches(
    prompts: Sequence[Prompt], batch_size: int, steps: int, seed: int
) -> Iterator[list[Prompt]]:
    """``steps`` full batches, reproducible from the seed (a resumed run skips the first ones
    and must get the rest unchanged): each epoch is shuffled and cut into batches, the short
    last one topped up with the epoch's first prompts, so every batch has one shape and
    every prompt is trained on once an epoch of ceil(len(prompts) / batch_size) steps, as
    trainer.plan_steps counts."""
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible order, not a secret
    produced = 0
    while prompts and produced < steps:
        epoch = list(prompts)
        rng.shuffle(epoch)
        batches = [epoch[i : i + batch_size] for i in range(0, len(epoch), batch_size)]
        batches[-1] += itertools.islice(itertools.cycle(epoch), batch_size - len(batches[-1]))
        yield from batches[: steps - produced]
        produced += len(batches)


def batch_input(batch: Sequence[Prompt]) -> dict[str, Any]:
    """A batch as Tunix's GRPO learner takes it. NumPy arrays of str: Tunix repeats every
    column num_generations times along the first axis, and a list of strings would be split
    into characters. ``answer`` reaches the rewards as a keyword argument."""
    import numpy as np

    return {
        "prompts": np.array([prompt.text for prompt in batch], dtype=str),
        "answer": np.array([prompt.answer for prompt in batch], dtype=str),
    }


def reward_stats(values: Sequence[Any]) -> tuple[float, float]:
    """(mean, standard deviation) of a step's completion rewards, which Tunix buffers as one
    array per rollout call."""
    import numpy as np

    rewards = np.concatenate([np.ravel(np.asarray(value, dtype=np.float64)) for value in values])
    return float(rewards.mean()), float(rewards.std())


def seeded_learner_class() -> type[Any]:
    """Tunix's GRPO learner, its rollouts sampled with a key folded from the run's seed and
    the number of steps trained so far. Tunix 0.1.7 samples every rollout with the rollout
    config's one seed (PRNGKey(0) when unset): every step would draw from the same random
    stream. Keyed by the step, the completions of step n depend only on the weights after
    step n - 1 and the batch, which a resumed run restores and replays."""
    import jax
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner

    class SeededGrpoLearner(grpo_learner.GRPOLearner):  # type: ignore[misc]
        rollout_seed = 0

        def _generate_and_compute_advantage(
            self, training_input: Any, mode: Any = rl_cluster_lib.Mode.TRAIN
        ) -> Any:
            config = self.rl_cluster.get_rollout_config(mode)
            config.seed = jax.random.fold_in(
                jax.random.PRNGKey(self.rollout_seed),
                self.rl_cluster.actor_trainer.train_steps,
            )
            return super()._generate_and_compute_advantage(training_input, mode)

    return SeededGrpoLearner


def train_grpo(plan: trainer.Plan, *, resumed_from: int = 0) -> dict[str, Any]:
    """Train as the module docstring says; returns the result line's numbers: ``steps``,
    ``train_loss`` (the mean policy loss over the last progress.TRAIN_LOSS_WINDOW steps),
    ``reward_mean`` (the mean of those steps' mean rewards) and ``wall_seconds``.

    Training starts from the step Tunix restores from this attempt's ``actor`` directory,
    where runs/trainer.py copied an earlier attempt's newest checkpoint (``resumed_from``)."""
    hyper = plan.hyper
    seed = int(hyper["seed"])
    reward_name = str(hyper["reward"])
    if reward_name not in REWARDS:
        raise trainer.TrainerError(
            Reason.CONFIG_INVALID,
            f"unknown reward {reward_name!r}: one of {', '.join(REWARD_NAMES)}",
        )
    prompts = training_prompts(
        trainer.read_numbered_records(plan.dataset), float(hyper["eval_fraction"]), seed
    )
    if not prompts:
        raise trainer.TrainerError(
            Reason.CONFIG_INVALID, "no training prompt is left; lower eval_fraction"
        )
    max_new_tokens = int(hyper["max_new_tokens"])
    # The policy trains on prompt and completion together: both fit in max_seq_length.
    prompt_room = int(hyper["max_seq_length"]) - max_new_tokens
    if prompt_room < MIN_PROMPT_TOKENS:
        raise trainer.TrainerError(
            Reason.CONFIG_INVALID,
            f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt within "
            f"max_seq_length ({hyper['max_seq_length']})",
        )
    # A missing checkpoint is reported before the slow imports.
    checkpoint = None if plan.model.is_preset else trainer.resolve_checkpoint(plan)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp
    from flax import nnx
    from tunix.rl import reshard
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.rollout import base_rollout
    from tunix.sft import metrics_logger
    from tunix.utils import mesh as mesh_lib

    batch_size = int(hyper["batch_size"])
    num_generations = int(hyper["num_generations"])
    beta = float(hyper["beta"])
    total_steps = trainer.plan_steps(
        len(prompts), batch_size, int(hyper["num_epochs"]), hyper.get("max_steps")
    )
    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    model, tokenizer = trainer.build_model(plan, checkpoint, mesh, seed)
    # On the mesh before the policy and reference are made from it: the RL cluster would
    # otherwise move each onto it separately, and a LoRA policy and its reference would
    # hold two copies of the base weights instead of sharing one.
    model = reshard.reshard_model_to_mesh(model, mesh)
    prompt_length, cache_size = trainer.generation_shape(
        [len(trainer.frame_prompt(tokenizer, prompt.text)[0]) for prompt in prompts],
        prompt_room,
        max_new_tokens,
    )

    reference = None
    if int(hyper["lora_rank"]) > 0:
        with mesh:
            policy = trainer.with_lora(
                model, plan.model.family, int(hyper["lora_rank"]), float(hyper["lora_alpha"]), seed
            )
        # The adapters are all that trains: the base model is the reference, and Tunix sees
        # that the two share it (one copy of the weights).
        reference = model if beta > 0 else None
    else:
        policy = model
        if beta > 0:
            graph, state = nnx.split(model)
            reference = nnx.merge(graph, jax.tree.map(jnp.copy, state))

    roles = rl_cluster_lib.Role
    cluster = rl_cluster_lib.RLCluster(
        actor=policy,
        reference=reference,
        tokenizer=trainer.SamplerTokenizer(tokenizer, prompt_length),
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={roles.ACTOR: mesh, roles.REFERENCE: mesh, roles.ROLLOUT: mesh},
            rollout_engine="vanilla",
            training_config=rl_cluster_lib.RLTrainingConfig(
                actor_optimizer=trainer.run_optimizer(plan),
                eval_every_n_steps=total_steps,  # required; there is no evaluation set
                max_steps=total_steps,
                checkpoint_root_directory=str(plan.checkpoints),
                checkpointing_options=ocp.CheckpointManagerOptions(
                    # About four checkpoints a run (the last one always): each costs a pause.
                    save_interval_steps=math.ceil(total_steps / 4),
                    max_to_keep=2,
                ),
                metrics_logging_options=metrics_logger.MetricsLoggerOptions(
                    log_dir=str(plan.metrics), flush_every_n_steps=1
                ),
                pbar_description=None,
            ),
            rollout_config=base_rollout.RolloutConfig(
                max_tokens_to_generate=max_new_tokens,
                temperature=float(hyper["temperature"]),
                top_p=1.0,  # sample from the whole distribution at that temperature
                max_prompt_length=prompt_length,
                kv_cache_size=cache_size,
            ),
        ),
    )
    learner = seeded_learner_class()(
        rl_cluster=cluster,
        algo_config=grpo_learner.GRPOConfig(
            num_generations=num_generations,
            num_iterations=1,
            beta=beta,
            # The GRPO paper's estimator, exp(d) - d - 1 with d = log p_ref - log p_policy, as
            # a loss pulls the policy towards the reference. Tunix's default ("kl", -d) has no
            # gradient in expectation over the policy's own samples: beta would do nothing.
            kl_loss_mode="low_var_kl",
            epsilon=float(hyper["epsilon"]),
        ),
        reward_fns=[REWARDS[reward_name]],
    )
    learner.rollout_seed = seed
    # One global step is one update here. Tunix restores the global step from the
    # checkpoint's metadata, which its final forced save leaves out (restoring 0): the
    # checkpoint's own step is the count.
    start = int(cluster.actor_trainer.train_steps)
    cluster.global_steps = start

    # Tunix logs a step's rewards once the step is over and its loss when the next one
    # trains (or at the end): the rewards wait here for their step's loss.
    step_rewards: dict[int, tuple[float, float]] = {}

    def take_metrics(buffer: Any) -> None:
        if str(buffer.mode) != "train" or REWARD_METRIC not in buffer.metrics:
            return
        step_rewards[int(buffer.global_steps) + 1] = reward_stats(buffer.metrics[REWARD_METRIC][0])

    cluster.with_external_metrics_logger(take_metrics)
    seen: dict[str, float] = {}
    report_step = trainer.step_reporter(total_steps, seen)
    reward_window = LossWindow()

    class Report(trainer.quiet_hooks()):  # type: ignore[misc]
        def on_train_step_end(self, tunix_trainer: Any, step: int, loss: Any) -> None:
            extra: dict[str, float] = {}
            rate = trainer.current_learning_rate(tunix_trainer)
            if rate is not None:
                extra["learning_rate"] = rate
            if int(step) in step_rewards:
                mean, spread = step_rewards.pop(int(step))
                extra |= {"reward_mean": mean, "reward_std": spread}
                seen["reward_mean"] = reward_window.add(mean)
            if beta > 0:
                history = tunix_trainer.metrics_logger.get_metric_history(
                    tunix_trainer.metrics_prefix, "kl", "train"
                )
                extra["kl"] = float(np.asarray(history[-1]))
            report_step(int(step), float(np.mean(np.asarray(loss))), **extra)

    cluster.actor_trainer.with_training_hooks(Report())
    kl_term = f"KL weight {beta} against a reference model" if beta > 0 else "no reference model"
    print(
        f"rollouts: {batch_size} prompts x {num_generations} completions a step, prompts "
        f"framed to {prompt_length} tokens, up to {max_new_tokens} new tokens; "
        f"reward {reward_name}; {kl_term}",
        flush=True,
    )
    # Compiling from here (and, when resuming, restored to that step).
    trainer.emit(PROGRESS_PREFIX, {"step": start, "total_steps": total_steps})
    started = time.monotonic()
    learner.train(
        batch_input(batch) for batch in prompt_batches(prompts, batch_size, total_steps, seed)
    )
    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "steps": int(cluster.actor_trainer.train_steps),
        "train_loss": seen.get("train_loss"),
        "reward_mean": seen.get("reward_mean"),
        "wall_seconds": round(wall, 3),
    }
    return {key: value for key, value in result.items() if value is not None}


class Grpo(Algorithm):
    name = "grpo"
    label = "GRPO"
    summary = "Reinforcement learning from rewards: sample completions, reward them, learn"
    formats = frozenset({FORMAT_PROMPT_ANSWER})
    trains_on = "prompts with a reference answer {prompt, answer}"
    tunix_modules = ("tunix.rl.grpo.grpo_learner", "tunix.rl.rl_cluster")
    signals = {
        "reward_mean": "mean reward",
        "reward_std": "reward spread",
        "kl": "KL divergence",
    }
    results = ("reward_mean",)
    checkpoint_subdir = ACTOR_DIR
    chart_groups = (("reward", ("reward_mean", "reward_std")),)

    @classmethod
    def train(cls, plan: trainer.Plan, *, resumed_from: int) -> dict[str, Any]:
        return train_grpo(plan, resumed_from=resumed_from)
