"""DPO and ORPO training (runs/algorithms/preference.py): how preference pairs become Tunix's
fixed-shape inputs, the batches and evaluation groups, the reference the DPO loss compares
with, and real tiny trainings run as the worker runs them, including a resumed one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runs import model_catalog, trainer, training_config
from runs.algorithms import preference
from runs.algorithms.preference import Pair
from tests.support.clusters import REPO_ROOT
from tests.test_trainer import TrainerOutput, run_trainer

PREFERENCE_DEMO = REPO_ROOT / "runs" / "demo" / "tunix-demo-preference-v1.jsonl"
BOS, EOS, PAD = trainer.BOS, trainer.EOS, trainer.PAD
# Small and quick: 29 training pairs in batches of 4, prompts and replies cut to 32 tokens.
QUICK: dict[str, Any] = {"batch_size": 4, "max_seq_length": 64}

# No database: the PostgreSQL pass of `make test` runs these once.
pytestmark = pytest.mark.database_independent


def byte_ids(text: str) -> list[int]:
    return trainer.ByteTokenizer().encode(text)


def write_config(
    directory: Path, algorithm: str, *, attempt: int = 1, resume: bool = False, **overrides: Any
) -> Path:
    """The config the worker writes for a preference run on the demo pairs."""
    spec = {
        "run_id": "test-run",
        "mode": "local",
        "algorithm": algorithm,
        "model": {"id": model_catalog.TINY_MODEL_ID},
        "dataset": {"key": "demo", "path": str(PREFERENCE_DEMO), "format": "preference"},
        "training": training_config.defaults(algorithm) | overrides,
        "output": {
            "dir": str(directory),
            "checkpoints": str(directory / "checkpoints" / f"attempt-{attempt}"),
            "metrics": str(directory / "metrics" / f"attempt-{attempt}"),
            "resume": resume,
        },
    }
    path = directory / "tunix_config.json"
    path.write_text(json.dumps(spec))
    return path


def train_lines(progress: TrainerOutput) -> list[dict[str, Any]]:
    return [line for line in progress.progress_lines if "loss" in line]


def eval_losses(progress: TrainerOutput) -> list[float]:
    return [line["eval_loss"] for line in progress.progress_lines if "eval_loss" in line]


def run_with_stdout(config: Path) -> tuple[int, TrainerOutput, str, str]:
    """run_trainer, with the trainer's stdout lines joined as a third value."""
    code, output, stderr = run_trainer(config)
    return code, output, "\n".join(output.lines), stderr


# --------------------------------------------------------------------------- tokenization


def test_a_pair_frames_the_prompt_with_bos_and_ends_each_reply_with_eos() -> None:
    pair = preference.encode_pair(
        {"prompt": "Hi", "chosen": "yo", "rejected": "no"}, trainer.ByteTokenizer()
    )
    assert pair == Pair([BOS, *byte_ids("Hi")], [*byte_ids("yo"), EOS], [*byte_ids("no"), EOS])
    assert pair.real_tokens == 2 * 3 + 3 + 3  # the prompt is read once before each reply


def test_a_chat_pair_renders_its_messages_as_sft_renders_a_context() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
        ],
        "chosen": {"role": "assistant", "content": "4"},
        "rejected": "5",
    }
    tokenizer = trainer.ByteTokenizer()
    assert preference.preference_prompt(record, tokenizer) == (
        "system: Be brief.\nuser: 2+2?\nassistant: "
    )
    pair = preference.encode_pair(record, tokenizer)
    assert pair.prompt == [BOS, *byte_ids("system: Be brief.\nuser: 2+2?\nassistant: ")]
    assert (pair.chosen, pair.rejected) == ([*byte_ids("4"), EOS], [*byte_ids("5"), EOS])


def test_the_shape_holds_the_longest_prompt_and_reply_rounded_up_to_eight() -> None:
    pairs = [Pair([1] * 5, [2] * 3, [2] * 9), Pair([1] * 17, [2] * 2, [2] * 2)]
    assert preference.pair_shape(pairs, 2048) == (24, 16)
    assert preference.pair_shape(pairs, 40) == (24, 16)  # exactly fits


def test_over_the_limit_replies_keep_at_least_half_and_whatever_prompts_leave() -> None:
    long_both = [Pair([1] * 100, [2] * 100, [2] * 3)]
    assert preference.pair_shape(long_both, 64) == (32, 32)
    short_prompts = [Pair([1] * 6, [2] * 100, [2] * 3)]
    assert preference.pair_shape(short_prompts, 64) == (8, 56)
    short_replies = [Pair([1] * 100, [2] * 10, [2] * 3)]
    assert preference.pair_shape(short_replies, 64) == (48, 16)


def test_a_cut_prompt_keeps_its_bos_and_its_end_and_a_cut_reply_its_start() -> None:
    pair = Pair([BOS, *range(10, 30)], [*range(40, 60), EOS], [70, EOS])
    fitted = preference.fit_pair(pair, 8, 5, bos_id=BOS)
    assert fitted.prompt == [BOS, 23, 24, 25, 26, 27, 28, 29]  # right before the reply
    assert fitted.chosen == [40, 41, 42, 43, 44]
    assert fitted.rejected == [70, EOS]
    # Without a BOS to keep, the prompt is just its last tokens.
    assert preference.fit_pair(Pair([*range(10, 30)], [1], [2]), 4, 5, None).prompt == [
        26,
        27,
        28,
        29,
    ]


def test_cutting_to_max_seq_length_keeps_reply_tokens_for_every_pair() -> None:
    tokenizer = trainer.ByteTokenizer()
    records = [
        {"prompt": "p" * 3000, "chosen": "c" * 3000, "rejected": "r"},
        {"prompt": "short", "chosen": "yes", "rejected": "n" * 5000},
    ]
    encoded = [preference.encode_pair(r, tokenizer) for r in records]
    shape = preference.pair_shape(encoded, 16)
    assert sum(shape) <= 16
    for pair in encoded:
        fitted = preference.fit_pair(pair, *shape, tokenizer.bos_id)
        assert fitted.prompt[0] == BOS
        assert 1 <= len(fitted.chosen) <= shape[1]
        assert 1 <= len(fitted.rejected) <= shape[1]
        arrays = preference.pad_pairs([fitted], *shape, PAD)
        assert sum(arrays["chosen_mask"][0]) >= 1
        assert sum(arrays["rejected_mask"][0]) >= 1


def test_prompts_are_left_padded_and_replies_right_padded_with_masks_from_lengths() -> None:
    # A pad id that is also a real token: the masks must not be read off the ids.
    pairs = [Pair([1, 5, 6], [5, 2], [8, 9, 2]), Pair([1, 7], [2], [5, 5, 5, 2])]
    arrays = preference.pad_pairs(pairs, 4, 5, pad_id=5)
    assert arrays == {
        "prompt_ids": [[5, 1, 5, 6], [5, 5, 1, 7]],
        "prompt_mask": [[0, 1, 1, 1], [0, 0, 1, 1]],
        "chosen_ids": [[5, 2, 5, 5, 5], [2, 5, 5, 5, 5]],
        "chosen_mask": [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]],
        "rejected_ids": [[8, 9, 2, 5, 5], [5, 5, 5, 2, 5]],
        "rejected_mask": [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]],
    }


# --------------------------------------------------------------------------- batches


def test_pair_batches_are_full_cover_each_epoch_and_replay_from_the_seed() -> None:
    batches = list(preference.pair_batches(10, 4, steps=7, seed=3))
    assert [len(b) for b in batches] == [4] * 7
    # An epoch is ceil(10 / 4) = 3 steps, as plan_steps counts, and holds every pair.
    assert trainer.plan_steps(10, 4, 99, None) // 99 == 3
    for epoch in (batches[:3], batches[3:6]):
        assert {i for b in epoch for i in b} == set(range(10))
    assert batches[:3] != batches[3:6]  # each epoch is shuffled anew
    assert list(preference.pair_batches(10, 4, steps=7, seed=3)) == batches
    assert list(preference.pair_batches(10, 4, steps=7, seed=4)) != batches
    # What resuming relies on: a shorter run trains the first batches of a longer one.
    assert list(preference.pair_batches(10, 4, steps=4, seed=3)) == batches[:4]


def test_fewer_pairs_than_a_batch_still_fill_every_batch() -> None:
    batches = list(preference.pair_batches(3, 8, steps=2, seed=0))
    assert [len(b) for b in batches] == [8, 8]
    assert all(set(b) == {0, 1, 2} for b in batches)


def test_every_held_out_pair_is_evaluated_once_in_at_most_two_shapes() -> None:
    groups = preference.eval_groups(10, 4)
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert preference.eval_groups(3, 8) == [[0, 1, 2]]
    assert preference.eval_groups(0, 8) == []


def test_uneven_evaluation_batches_average_to_the_mean_over_every_pair(
    tunix_runtime: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 4, 4 and 2 pairs: the hooks' sum over the batch count is the mean over the
    ten pairs, not the mean of the three batch means."""
    import numpy as np
    from tunix.sft.dpo import dpo_trainer

    def batch_mean(_model: Any, train_example: Any, **_options: Any) -> tuple[Any, Any]:
        return np.mean(train_example.pair_losses), {}

    monkeypatch.setattr(dpo_trainer, "dpo_loss_fn", batch_mean)
    pair_losses = [float(n) for n in range(1, 11)]
    groups = preference.eval_groups(10, 4)
    loss = preference.scaled_eval_loss(len(groups), 10)
    total = 0.0
    for group in groups:
        example = SimpleNamespace(
            pair_losses=[pair_losses[i] for i in group],
            completion_mask=np.ones((2 * len(group), 8)),  # chosen rows, then rejected ones
        )
        total += float(loss(None, example)[0])
    assert total / len(groups) == pytest.approx(sum(pair_losses) / 10)


# --------------------------------------------------------------------------- the reference


# The trainer process silences this (runs.trainer.main); Tunix needs `with mesh:` still.
@pytest.mark.filterwarnings("ignore:.*context manager has been deprecated:DeprecationWarning")
def test_precomputed_reference_log_probabilities_are_what_tunix_computes_with_a_live_reference(
    tmp_path: Path, tunix_runtime: None
) -> None:
    """DPO's reference is taken once before training (no second model in memory); the
    numbers the loss sees are the ones Tunix's DPOTrainer gets from a ref_model."""
    import numpy as np
    import optax
    from tunix.sft.dpo import dpo_trainer
    from tunix.utils import mesh as mesh_lib

    plan = trainer.read_plan(write_config(tmp_path, "dpo", **QUICK))
    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    model, tokenizer = trainer.build_model(plan, None, mesh, seed=42)
    records = trainer.read_records(PREFERENCE_DEMO)[:3]
    encoded = [preference.encode_pair(r, tokenizer) for r in records]
    shape = preference.pair_shape(encoded, 64)
    pairs = [preference.fit_pair(p, *shape, tokenizer.bos_id) for p in encoded]
    with mesh:
        # Batches of two pairs: the second is one pair filled up with a repeat.
        chosen, rejected = preference.reference_logps(model, pairs, shape, PAD, rows=2)
        batch = preference.training_input(pairs, shape, PAD)
        config = dpo_trainer.DPOTrainingConfig(eval_every_n_steps=1, max_steps=1)
        live = dpo_trainer.DPOTrainer(model, model, optax.sgd(0.1), config)._prepare_inputs(batch)
        ours = preference.preference_trainer_class()(
            model, None, optax.sgd(0.1), config
        )._prepare_inputs(preference.PairBatch(batch, chosen, rejected))
    assert chosen.shape == rejected.shape == (3,)
    assert np.all(chosen < 0)
    assert np.all(rejected < 0)
    np.testing.assert_allclose(chosen, np.asarray(live.ref_chosen_logps), rtol=1e-5)
    np.testing.assert_allclose(rejected, np.asarray(live.ref_rejected_logps), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(ours.input_ids), np.asarray(live.input_ids))
    np.testing.assert_array_equal(np.asarray(ours.ref_chosen_logps), chosen)
    np.testing.assert_array_equal(np.asarray(ours.ref_rejected_logps), rejected)


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def dpo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, int, TrainerOutput, str, str]:
    """One uninterrupted 8-step DPO training of the tiny preset, shared by the tests that
    read it (the resume test compares with it)."""
    directory = tmp_path_factory.mktemp("dpo-run")
    return directory, *run_with_stdout(write_config(directory, "dpo", max_steps=8, **QUICK))


def test_dpo_trains_the_tiny_preset_to_prefer_the_chosen_replies(
    tunix_runtime: None, dpo_run: tuple[Path, int, TrainerOutput, str, str]
) -> None:
    directory, code, progress, stdout, stderr = dpo_run
    assert code == 0, stderr[-3000:]
    assert "reference log-probabilities of 32 pairs" in stdout  # taken once, before training
    assert progress.progress_lines[0] == {"step": 0, "total_steps": 8}
    steps = train_lines(progress)
    assert [line["step"] for line in steps] == list(range(1, 9))
    for line in steps:
        assert set(preference.Dpo.signals) <= set(line)
        assert line["reward_margin"] == pytest.approx(
            line["chosen_reward"] - line["rejected_reward"], abs=1e-5
        )
        assert 0.0 <= line["reward_accuracy"] <= 1.0
        assert line["learning_rate"] == pytest.approx(3e-3)
    # The policy starts as its own reference: no preference yet, the loss is log 2.
    first = steps[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert (first["chosen_reward"], first["rejected_reward"], first["reward_accuracy"]) == (
        0.0,
        0.0,
        0.0,
    )
    # It learns: the last steps prefer the chosen replies, on the training pairs and on the
    # held-out ones, which it never trained on.
    last = steps[-3:]
    assert sum(line["loss"] for line in last) / 3 < math.log(2) - 0.1
    assert sum(line["reward_margin"] for line in last) / 3 > 0.1
    evals = eval_losses(progress)
    assert evals[0] == pytest.approx(math.log(2), abs=1e-6)
    assert evals[-1] < evals[0]
    result = progress.payload
    assert result is not None
    assert result["steps"] == 8
    assert result["eval_loss"] == pytest.approx(evals[-1])
    assert result["train_loss"] == pytest.approx(sum(line["loss"] for line in steps) / 8)
    assert result["reward_accuracy"] == pytest.approx(
        sum(line["reward_accuracy"] for line in steps) / 8
    )
    assert result["reward_margin"] > 0
    assert result["compiled_shapes"] == 2  # one train shape, one held-out batch of 3
    final = directory / "checkpoints" / "attempt-1" / "8"
    assert (final / "optimizer_state").is_dir()
    names = json.loads((final / "model_params" / "_METADATA").read_text())["tree_metadata"]
    assert "('embedder', 'input_embedding', 'value')" in names  # every weight trained
    assert list((directory / "metrics" / "attempt-1").glob("events.out.tfevents.*"))


def test_orpo_trains_without_a_reference_model(tmp_path: Path, tunix_runtime: None) -> None:
    code, progress, stdout, stderr = run_with_stdout(
        write_config(tmp_path, "orpo", max_steps=4, **QUICK)
    )
    assert code == 0, stderr[-3000:]
    steps = train_lines(progress)
    assert [line["step"] for line in steps] == [1, 2, 3, 4]
    # ORPO's loss is an SFT loss on the chosen reply plus the odds-ratio term: it starts
    # far above DPO's log 2, with nothing to compare against.
    assert all(math.isfinite(line["loss"]) and line["loss"] > 1.0 for line in steps)
    assert all(set(preference.Orpo.signals) <= set(line) for line in steps)
    assert eval_losses(progress)[-1] < eval_losses(progress)[0]  # its SFT part learns
    assert progress.payload is not None
    assert progress.payload["steps"] == 4
    assert (tmp_path / "checkpoints" / "attempt-1" / "4" / "_CHECKPOINT_METADATA").is_file()
    # The reference pass DPO runs before training is not run at all.
    assert "reference log-probabilities" not in stdout


def test_a_later_dpo_attempt_resumes_where_the_earlier_one_checkpointed(
    tmp_path: Path, tunix_runtime: None, dpo_run: tuple[Path, int, TrainerOutput, str, str]
) -> None:
    """Attempt 1 stops after step 4 (its last checkpoint); attempt 2 restores it and trains
    5..8 to the losses and rewards of the uninterrupted run: the same weights, optimizer
    state, batches and reference."""
    code, _, stderr = run_trainer(write_config(tmp_path, "dpo", max_steps=4, resume=True, **QUICK))
    assert code == 0, stderr[-3000:]
    assert (tmp_path / "checkpoints" / "attempt-1" / "4" / "_CHECKPOINT_METADATA").is_file()
    code, second, stderr = run_trainer(
        write_config(tmp_path, "dpo", attempt=2, max_steps=8, resume=True, **QUICK)
    )
    assert code == 0, stderr[-3000:]
    assert second.progress_lines[0] == {"step": 4, "total_steps": 8}
    resumed = train_lines(second)
    assert [line["step"] for line in resumed] == [5, 6, 7, 8]
    uninterrupted = train_lines(dpo_run[2])[4:]
    for key in ("loss", "reward_margin", "reward_accuracy"):
        assert [line[key] for line in resumed] == pytest.approx(
            [line[key] for line in uninterrupted], rel=1e-4, abs=1e-6
        ), key
    assert second.payload is not None
    assert second.payload["steps"] == 8
    assert (tmp_path / "checkpoints" / "attempt-2" / "8").is_dir()
