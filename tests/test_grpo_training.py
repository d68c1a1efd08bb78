"""GRPO training (runs/algorithms/grpo.py): its prompt batches, resume bookkeeping and
refusals, and real tiny trainings of the preset run as the worker runs the trainer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runs import model_catalog, trainer, training_config
from runs.algorithms import grpo
from runs.rewards import REWARDS
from tests.support.clusters import REPO_ROOT
from tests.test_trainer import TrainerOutput, run_trainer

MATH_DEMO = REPO_ROOT / "runs" / "demo" / "tunix-demo-math-v1.jsonl"
# 2 prompts x 2 completions a step. A random model's completions of up to 384 tokens are
# sometimes longer than LengthPenalty's 256 characters and sometimes end early (the end token
# is one of 259): the rewards of a group differ, and the policy has something to learn from.
QUICK: dict[str, Any] = {
    "batch_size": 2,
    "num_generations": 2,
    "max_new_tokens": 384,
    "reward": "length_penalty",
}
TRAIN_KEYS = {
    "step",
    "total_steps",
    "loss",
    "loss_mean",
    "learning_rate",
    "reward_mean",
    "reward_std",
    "kl",
}

# No database: the PostgreSQL pass of `make test` runs these once.
pytestmark = pytest.mark.database_independent


def write_grpo_config(
    directory: Path,
    *,
    dataset: Path = MATH_DEMO,
    attempt: int = 1,
    resume: bool = False,
    **overrides: Any,
) -> Path:
    """The config the worker writes for attempt ``attempt`` of a GRPO run."""
    spec = {
        "run_id": "grpo-test-run",
        "mode": "local",
        "algorithm": "grpo",
        "model": {"id": model_catalog.TINY_MODEL_ID},
        "dataset": {"key": "math", "path": str(dataset), "format": "prompt_answer"},
        "training": training_config.defaults(training_config.GRPO) | overrides,
        "output": {
            "dir": str(directory),
            "checkpoints": str(directory / "checkpoints" / f"attempt-{attempt}"),
            "metrics": str(directory / "metrics" / f"attempt-{attempt}"),
            "resume": resume,
        },
    }
    path = directory / f"tunix_config-{attempt}.json"
    path.write_text(json.dumps(spec))
    return path


def train_lines(output: TrainerOutput) -> list[dict[str, Any]]:
    return [line for line in output.progress_lines if "loss" in line]


# --------------------------------------------------------------------------- prompt batches


def prompts_of(count: int) -> list[grpo.Prompt]:
    return [grpo.Prompt(f"question {i}", str(i)) for i in range(count)]


def test_every_batch_is_full_and_every_prompt_is_trained_on_each_epoch() -> None:
    prompts = prompts_of(10)
    batches = list(grpo.prompt_batches(prompts, 4, steps=7, seed=3))
    assert [len(batch) for batch in batches] == [4] * 7
    # An epoch is ceil(10 / 4) = 3 steps, as plan_steps counts, and holds every prompt.
    assert trainer.plan_steps(10, 4, 2, None) == 6
    for epoch in (batches[:3], batches[3:6]):
        assert {p.answer for batch in epoch for p in batch} == {str(i) for i in range(10)}
        # The short last batch is topped up with the epoch's first prompts: two repeats.
        counts = Counter(p.answer for batch in epoch for p in batch)
        assert sorted(counts.values()) == [1] * 8 + [2] * 2


def test_prompt_batches_are_reproducible_from_the_seed() -> None:
    prompts = prompts_of(9)
    batches = list(grpo.prompt_batches(prompts, 2, steps=12, seed=42))
    assert list(grpo.prompt_batches(prompts, 2, steps=12, seed=42)) == batches
    assert list(grpo.prompt_batches(prompts, 2, steps=12, seed=43)) != batches
    # A shorter run trains the first batches of a longer one: what a resumed run relies on.
    assert list(grpo.prompt_batches(prompts, 2, steps=5, seed=42)) == batches[:5]


def test_a_batch_is_numpy_arrays_of_text_aligned_after_tunix_repeats_them() -> None:
    batch = grpo.batch_input([grpo.Prompt("Two and two?", "4"), grpo.Prompt("Six by 7?", "42")])
    assert set(batch) == {"prompts", "answer"}
    for column in batch.values():
        assert isinstance(column, np.ndarray)
        assert column.dtype.kind == "U"
    # Tunix repeats each column num_generations times along the first axis, then hands the
    # columns to the reward as keyword arguments, one entry per completion.
    repeated = {key: np.repeat(column, 2, axis=0) for key, column in batch.items()}
    assert list(repeated["answer"]) == ["4", "4", "42", "42"]
    completions = ["Answer: 4", "Answer: 5", "Answer: 42", "no idea"]
    scores = REWARDS["answer_match"](
        prompts=list(repeated["prompts"]), completions=completions, answer=repeated["answer"]
    )
    assert scores == [1.0, 0.0, 1.0, 0.0]


def test_grpo_trains_on_the_records_sft_would_train_on_with_answers_as_text(
    tmp_path: Path,
) -> None:
    lines = [{"prompt": f"p{i}", "answer": answer} for i, answer in enumerate([7, 0.5, "x", 10])]
    dataset = tmp_path / "data.jsonl"
    dataset.write_text("".join(json.dumps(line) + "\n" for line in lines))
    numbered = trainer.read_numbered_records(dataset)
    prompts = grpo.training_prompts(numbered, 0.25, seed=5)
    sft_train, _ = trainer.split_records(numbered, 0.25, seed=5)
    assert [p.text for p in prompts] == [record["prompt"] for _, record in sft_train]
    assert len(prompts) == 3
    written = {"p0": "7", "p1": "0.5", "p2": "x", "p3": "10"}
    assert all(p.answer == written[p.text] for p in prompts)


def test_reward_stats_cover_every_completion_of_the_step() -> None:
    mean, spread = grpo.reward_stats([np.array([0.0, -1.0]), np.array([0.0, -1.0])])
    assert (mean, spread) == (-0.5, 0.5)


# --------------------------------------------------------------------------- resume bookkeeping


def test_a_later_attempt_copies_the_newest_earlier_policy_checkpoint(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"

    def checkpoint(attempt: int, step: int, complete: bool = True) -> Path:
        directory = checkpoints / f"attempt-{attempt}" / grpo.ACTOR_DIR / str(step)
        directory.mkdir(parents=True)
        if complete:
            (directory / "_CHECKPOINT_METADATA").write_text("{}")
        return directory

    checkpoint(1, 4)
    newest = checkpoint(2, 6)
    checkpoint(2, 8, complete=False)  # Orbax was still writing it
    checkpoint(4, 9)  # a later attempt's: never resumed from
    plan = trainer.read_plan(write_grpo_config(tmp_path, attempt=3, resume=True))
    subdir = grpo.Grpo.checkpoint_subdir
    assert subdir == grpo.ACTOR_DIR
    assert trainer.newest_earlier_checkpoint(plan.checkpoints, subdir) == newest
    assert trainer.seed_from_earlier_attempt(plan, subdir) == 6
    assert (plan.checkpoints / grpo.ACTOR_DIR / "6" / "_CHECKPOINT_METADATA").is_file()
    # Once this attempt has checkpoints of its own, Tunix restores those; nothing is copied.
    assert trainer.seed_from_earlier_attempt(plan, subdir) is None
    fresh = trainer.read_plan(write_grpo_config(tmp_path, attempt=5, resume=False))
    assert trainer.seed_from_earlier_attempt(fresh, subdir) is None


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"reward": "vibes"}, "unknown reward 'vibes'"),
        ({"max_seq_length": 32, "max_new_tokens": 31}, "leaves no room for a prompt"),
    ],
)
def test_a_run_it_cannot_train_is_refused_as_an_invalid_config(
    tmp_path: Path, overrides: dict[str, Any], words: str
) -> None:
    plan = trainer.read_plan(write_grpo_config(tmp_path, **overrides))
    with pytest.raises(trainer.TrainerError) as refused:
        grpo.train_grpo(plan)
    assert refused.value.reason == "config_invalid"
    assert words in refused.value.message


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, TrainerOutput, str]:
    """One uninterrupted 8-step GRPO training of the preset on the math demo, shared by the
    tests that read it."""
    directory = tmp_path_factory.mktemp("grpo-run")
    code, output, stderr = run_trainer(write_grpo_config(directory, max_steps=8, **QUICK))
    return directory, code, output, stderr


def test_grpo_trains_the_tiny_preset_reporting_rewards_and_kl_every_step(
    tunix_runtime: None, grpo_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    directory, code, output, stderr = grpo_run
    assert code == 0, stderr[-3000:]
    assert output.progress_lines[0] == {"step": 0, "total_steps": 8}
    lines = train_lines(output)
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert all(set(line) == TRAIN_KEYS for line in lines), lines
    assert all(line["total_steps"] == 8 for line in lines)
    assert output.total_steps == 8
    # LengthPenalty's rewards, really computed: 0.0 up to 256 characters, less beyond, never
    # below -1; some steps had completions long enough to be penalised and some did not.
    assert all(-1.0 <= line["reward_mean"] <= 0.0 for line in lines)
    penalised = [line for line in lines if line["reward_mean"] < 0]
    assert penalised
    assert all(line["reward_std"] > 0 for line in penalised)
    assert len(penalised) < len(lines)
    # The policy starts as the reference and moves away from it; the estimate the loss
    # penalises (the GRPO paper's) is never negative.
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert all(line["kl"] >= 0 for line in lines)
    assert lines[-1]["kl"] > 1e-3
    result = output.result
    assert result["steps"] == 8
    assert output.payload is not None
    assert output.payload["reward_mean"] == pytest.approx(
        sum(line["reward_mean"] for line in lines) / 8
    )
    assert output.payload["train_loss"] == pytest.approx(lines[-1]["loss_mean"])
    final = directory / "checkpoints" / "attempt-1" / grpo.ACTOR_DIR / "8"
    assert (final / "_CHECKPOINT_METADATA").is_file()
    assert (final / "optimizer_state").is_dir()
    names = json.loads((final / "model_params" / "_METADATA").read_text())["tree_metadata"]
    assert "('embedder', 'input_embedding', 'value')" in names  # every weight, not adapters
    (events,) = (directory / "metrics" / "attempt-1").glob("events.out.tfevents.*")
    assert b"rewards/train/length_penalty" in events.read_bytes()


def test_a_later_attempt_resumes_grpo_where_the_earlier_one_checkpointed(
    tmp_path: Path, tunix_runtime: None, grpo_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    """Attempt 1 stops after step 5, whose checkpoint is Tunix's final forced save (it carries
    no global step). Attempt 2 restores it and trains steps 6 to 8 to exactly the rewards, KL
    and losses of the uninterrupted run: the same weights, optimizer state, batches, and
    rollouts sampled with the same keys."""
    code, _, stderr = run_trainer(
        write_grpo_config(tmp_path, attempt=1, resume=True, max_steps=5, **QUICK)
    )
    assert code == 0, stderr[-3000:]
    earlier = tmp_path / "checkpoints" / "attempt-1" / grpo.ACTOR_DIR
    assert sorted(int(step.name) for step in earlier.iterdir()) == [4, 5]
    code, second, stderr = run_trainer(
        write_grpo_config(tmp_path, attempt=2, resume=True, max_steps=8, **QUICK)
    )
    assert code == 0, stderr[-3000:]
    assert second.progress_lines[0] == {"step": 5, "total_steps": 8}
    resumed = train_lines(second)
    assert [line["step"] for line in resumed] == [6, 7, 8]
    uninterrupted = train_lines(grpo_run[2])[5:]
    for key in ("loss", "reward_mean", "reward_std", "kl"):
        assert [line[key] for line in resumed] == pytest.approx(
            [line[key] for line in uninterrupted], rel=1e-5, abs=1e-9
        ), key
    assert second.result["steps"] == 8
    assert (tmp_path / "checkpoints" / "attempt-2" / grpo.ACTOR_DIR / "8").is_dir()


def test_the_answer_column_reaches_the_reward_with_lora_and_no_reference(
    tmp_path: Path, tunix_runtime: None
) -> None:
    """answer_match refuses to score without the dataset's answer column, so a run that
    finishes has passed it. The answers (JSON numbers) are ones a random model does not
    write: every reward is exactly 0.0, every group alike, so the advantages and, without a
    reference model (beta 0), the loss are exactly 0.0 too. LoRA checkpoints only the
    adapters."""
    dataset = tmp_path / "sums.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"prompt": f'What is {i} + 987654321? End with "Answer: <n>".',
                        "answer": 987654321 + i}) + "\n"
            for i in range(4)
        )
    )  # fmt: skip
    config = write_grpo_config(
        tmp_path,
        dataset=dataset,
        reward="answer_match",
        batch_size=2,
        num_generations=2,
        max_new_tokens=16,
        max_steps=2,
        eval_fraction=0.0,
        beta=0.0,
        lora_rank=4,
    )
    code, output, stderr = run_trainer(config)
    assert code == 0, stderr[-3000:]
    lines = train_lines(output)
    assert [line["step"] for line in lines] == [1, 2]
    assert all(set(line) == TRAIN_KEYS - {"kl"} for line in lines), lines
    assert all(line["reward_mean"] == 0.0 and line["reward_std"] == 0.0 for line in lines)
    assert all(line["loss"] == 0.0 for line in lines)
    (events,) = (tmp_path / "metrics" / "attempt-1").glob("events.out.tfevents.*")
    assert b"rewards/train/answer_match" in events.read_bytes()
    saved = tmp_path / "checkpoints" / "attempt-1" / grpo.ACTOR_DIR / "2" / "model_params"
    names = list(json.loads((saved / "_METADATA").read_text())["tree_metadata"])
    assert names
    assert all("_lora_a" in name or "_lora_b" in name for name in names), names
