"""The Tunix trainer process (runs/trainer.py): data preparation, step planning, refusals with
a reason, and real tiny trainings run directly (full fine-tuning and LoRA)."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runs import model_catalog, scorers, trainer, training_config
from runs.progress import PROGRESS_PREFIX, RESULT_PREFIX, LineSplitter, ProgressTracker
from tests.support.clusters import REPO_ROOT

DEMO = REPO_ROOT / "runs" / "demo" / "tunix-demo-v1.jsonl"
# The defaults, with the generation eval after training off: it adds seconds to every run, and
# tests/test_generation_eval.py turns it on where it is the subject.
HYPER = training_config.defaults(training_config.SFT) | {"eval_max_items": 0}

# No database: the PostgreSQL pass of `make test` runs these once.
pytestmark = pytest.mark.database_independent


def write_config(
    directory: Path, *, model_id: str = model_catalog.TINY_MODEL_ID, **overrides: Any
) -> Path:
    model: dict[str, Any] = {"id": model_id}
    if "checkpoint_dir" in overrides:
        model["checkpoint_dir"] = str(overrides.pop("checkpoint_dir"))
    spec = {
        "run_id": "test-run",
        "mode": "local",
        "model": model,
        "dataset": {"key": "demo", "path": str(DEMO), "format": "prompt_completion"},
        "training": {**HYPER, **overrides},
        "output": {
            "dir": str(directory),
            "checkpoints": str(directory / "checkpoints" / "attempt-1"),
            "metrics": str(directory / "metrics" / "attempt-1"),
        },
    }
    path = directory / "tunix_config.json"
    path.write_text(json.dumps(spec))
    return path


@dataclass
class TrainerOutput(ProgressTracker):
    """The worker's parse of the trainer's stdout, plus the result line's whole payload (the
    worker keeps only progress.RESULT_KEYS of it) and every progress line as written."""

    payload: dict[str, Any] | None = None
    progress_lines: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # every stdout line, as written

    def feed_line(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith(RESULT_PREFIX):
            self.payload = json.loads(line.removeprefix(RESULT_PREFIX))
        elif line.startswith(PROGRESS_PREFIX):
            self.progress_lines.append(json.loads(line.removeprefix(PROGRESS_PREFIX)))
        super().feed_line(line)


def run_trainer(config: Path) -> tuple[int, TrainerOutput, str]:
    """The trainer as the worker runs it: a child process, stdout parsed line by line."""
    proc = subprocess.run(
        [sys.executable, "-m", "runs.trainer", str(config)],
        cwd=config.parent,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        timeout=240,
        check=False,
    )
    tracker = TrainerOutput()
    lines = LineSplitter(tracker.feed_line)
    lines.feed(proc.stdout)
    lines.close()
    return proc.returncode, tracker, proc.stderr.decode(errors="replace")


# --------------------------------------------------------------------------- data preparation


def test_loss_mask_covers_the_completion_and_end_token_only() -> None:
    example = trainer.encode({"prompt": "Hi", "completion": "yo"}, trainer.ByteTokenizer(), 64)
    assert example is not None
    assert example.tokens == [trainer.BOS, ord("H") + 3, ord("i") + 3, ord("y") + 3, ord("o") + 3,
                              trainer.EOS]  # fmt: skip
    assert example.mask == [0, 0, 0, 1, 1, 1]


def test_a_record_whose_prompt_fills_the_limit_is_dropped() -> None:
    tokenizer = trainer.ByteTokenizer()
    assert trainer.encode({"prompt": "x" * 20, "completion": "y"}, tokenizer, 16) is None
    cut = trainer.encode({"prompt": "x" * 10, "completion": "y" * 20}, tokenizer, 16)
    assert cut is not None
    assert (len(cut.tokens), sum(cut.mask)) == (16, 5)


def test_chat_records_train_on_the_last_assistant_message() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }
    prompt, completion = trainer.prompt_and_completion(record, trainer.ByteTokenizer())
    assert prompt == "system: Be brief.\nuser: 2+2?\nassistant: "
    assert completion == "4"


def test_the_split_is_reproducible_and_holds_out_the_fraction() -> None:
    records = [{"prompt": str(i), "completion": "c"} for i in range(50)]
    train, held_out = trainer.split_records(records, 0.2, seed=7)
    assert (len(train), len(held_out)) == (40, 10)
    assert trainer.split_records(records, 0.2, seed=7) == (train, held_out)
    assert trainer.split_records(records, 0.2, seed=8) != (train, held_out)
    assert sorted(r["prompt"] for r in train + held_out) == sorted(r["prompt"] for r in records)


def test_steps_follow_epochs_and_max_steps() -> None:
    assert trainer.plan_steps(58, 8, 3, None) == 24  # ceil(58 / 8) = 8 per epoch
    assert trainer.plan_steps(58, 8, 3, 10) == 10
    assert trainer.plan_steps(58, 8, 3, 1000) == 24


@pytest.mark.parametrize(("total", "expected"), [(24, 3), (10, 1), (23, 23), (100, 10), (1, 1)])
def test_the_last_evaluation_falls_on_the_final_step(total: int, expected: int) -> None:
    every = trainer.eval_interval(total)
    assert every == expected
    assert total % every == 0
    assert total // every <= trainer.MAX_EVALS


def test_every_batch_is_full_and_every_example_is_seen_each_epoch() -> None:
    examples = [trainer.Example([i + 3] * (i + 1), [1] * (i + 1)) for i in range(10)]
    batches = list(trainer.train_batches(examples, 4, steps=7, seed=1, ladder=[8, 16]))
    assert [len(b) for b in batches] == [4] * 7
    # An epoch is ceil(10 / 4) = 3 steps (as plan_steps counts) and holds every example.
    for epoch in (batches[:3], batches[3:6]):
        assert {e.tokens[0] for b in epoch for e in b} == set(range(3, 13))


def test_every_held_out_example_is_evaluated_once_in_batches_of_its_rung() -> None:
    lengths = [3, 30, 4, 5, 31, 6, 7, 8, 9, 10, 11, 200]
    examples = [trainer.Example([i + 3] * n, [0] + [1] * (n - 1)) for i, n in enumerate(lengths)]
    batches = trainer.eval_batches(examples, 4, ladder=[16, 32, 256])
    rungs = [trainer.padded_length(b, [16, 32, 256]) for b in batches]
    assert rungs == [16, 16, 16, 32, 256]
    # Rows: up to the batch size, fewer where the rung holds fewer examples (the lone long
    # one is one row); each rung's batches share one shape.
    assert [len(b) for b in batches] == [4, 4, 4, 2, 1]
    carrying = [e.tokens[0] for b in batches for e in b if any(e.mask)]
    assert sorted(carrying) == [i + 3 for i in range(len(lengths))]
    # The top-up rows repeat the rung's first examples and carry no loss.
    assert [(e.tokens[0], any(e.mask)) for e in batches[2]] == [
        (13, True),
        (3, False),
        (5, False),
        (6, False),
    ]


def skewed_lengths(count: int = 550, seed: int = 0) -> list[int]:
    """Token counts of a corpus like the one that motivated bucketing: mostly short records
    (median about 40 tokens), a long tail up to 1,400."""
    rng = random.Random(seed)
    return [min(1400, max(8, round(40 * math.exp(rng.gauss(0, 1.15))))) for _ in range(count)]


def examples_of(lengths: list[int]) -> list[trainer.Example]:
    return [trainer.Example([5 + i % 200] * n, [0] + [1] * (n - 1)) for i, n in enumerate(lengths)]


def test_similar_lengths_share_one_padded_length_rounded_to_eight_within_the_limit() -> None:
    lengths = [33, 35, 37, 38, 40, 41, 42] * 9  # the demo dataset's spread
    assert trainer.length_ladder(lengths, 2048, 8) == [48]
    assert trainer.length_ladder(lengths, 44, 8) == [44]


def test_skewed_lengths_get_a_few_rungs_that_cut_most_of_the_padding() -> None:
    lengths = skewed_lengths()
    ladder = trainer.length_ladder(lengths, 2048, 8)
    assert 3 <= len(ladder) <= trainer.MAX_SHAPES
    assert ladder[-1] == -(-max(lengths) // 8) * 8
    assert all(rung % 8 == 0 for rung in ladder)
    assert all(high >= trainer.RUNG_RATIO * low for low, high in itertools.pairwise(ladder))
    # Every rung below the top is worth its compilation: it pads at least a batch.
    held = Counter(trainer.bucket_length(n, ladder) for n in lengths)
    assert all(held[rung] >= 8 for rung in ladder[:-1])
    padded = sum(trainer.bucket_length(n, ladder) for n in lengths)
    assert padded < 2 * sum(lengths)  # against more than ten times as much with one length
    assert len(lengths) * ladder[-1] > 10 * sum(lengths)


@pytest.mark.parametrize("seed", range(20))
def test_the_ladder_never_exceeds_max_shapes_and_holds_every_example(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(4, 64), rng.randint(4, 30000)]) for _ in range(300)]
    limit = rng.choice([2048, 4096, 32768])
    lengths = [min(n, limit) for n in lengths]
    for max_shapes in (1, 3, trainer.MAX_SHAPES):
        ladder = trainer.length_ladder(lengths, limit, 8, max_shapes)
        assert 1 <= len(ladder) <= max_shapes
        assert ladder == sorted(set(ladder))
        assert max(lengths) <= ladder[-1] <= limit


def test_batches_group_similar_lengths_reproducibly_from_the_seed() -> None:
    examples = examples_of(skewed_lengths())
    ladder = trainer.length_ladder([len(e.tokens) for e in examples], 2048, 8)
    steps = trainer.plan_steps(len(examples), 8, 3, None)
    batches = list(trainer.train_batches(examples, 8, steps, seed=42, ladder=ladder))
    assert len(batches) == steps
    assert batches == list(trainer.train_batches(examples, 8, steps, seed=42, ladder=ladder))
    assert batches != list(trainer.train_batches(examples, 8, steps, seed=43, ladder=ladder))
    lengths = [trainer.padded_length(b, ladder) for b in batches]
    assert set(lengths) <= set(ladder)
    # Batches are not in length order: the short ones are spread over the epoch.
    assert lengths != sorted(lengths)
    real = sum(len(e.tokens) for b in batches for e in b)
    padded = sum(len(b) * n for b, n in zip(batches, lengths, strict=True))
    assert padded < 2 * real


def test_a_shorter_run_trains_the_first_batches_of_a_longer_one() -> None:
    """What resuming relies on: the attempt that stopped at step 12 and the one finishing the
    run see the same batches up to 12, and the batches after it do not depend on the stop."""
    examples = examples_of(skewed_lengths(100))
    ladder = trainer.length_ladder([len(e.tokens) for e in examples], 2048, 8)
    longer = list(trainer.train_batches(examples, 8, 40, seed=7, ladder=ladder))
    assert list(trainer.train_batches(examples, 8, 12, seed=7, ladder=ladder)) == longer[:12]


def test_a_run_compiles_at_most_max_shapes_lengths_per_step_function() -> None:
    examples = examples_of(skewed_lengths(seed=3))
    train, held_out = examples[55:], examples[:55]
    ladder = trainer.length_ladder([len(e.tokens) for e in examples], 2048, 8)
    steps = trainer.plan_steps(len(train), 8, 3, None)
    batches = trainer.train_batches(train, 8, steps, 42, ladder)
    train_lengths = {trainer.padded_length(b, ladder) for b in batches}
    evaluated = trainer.eval_batches(held_out, 8, ladder)
    eval_shapes = {(len(b), trainer.padded_length(b, ladder)) for b in evaluated}
    assert 1 < len(train_lengths) <= trainer.MAX_SHAPES
    assert 1 < len(eval_shapes) <= trainer.MAX_SHAPES


# --------------------------------------------------------------------------- refusals


def refusal(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert trainer.main([str(config)]) == trainer.EXIT_REFUSED
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("TUNIX_ERROR ")]
    assert len(lines) == 1
    payload: dict[str, Any] = json.loads(lines[0].removeprefix("TUNIX_ERROR "))
    return payload


def test_an_unknown_model_is_refused_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = refusal(write_config(tmp_path, model_id="acme/giant-9000"), capsys)
    assert error["reason"] == "model_unavailable"
    assert "acme/giant-9000" in error["message"]


def test_a_real_model_without_its_checkpoint_names_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models" / "google" / "gemma-3-270m"
    config = write_config(tmp_path, model_id="google/gemma-3-270m", checkpoint_dir=models)
    error = refusal(config, capsys)
    assert error["reason"] == "model_unavailable"
    assert str(models) in error["message"]
    assert "TUNIX_MODEL_DOWNLOAD=1" in error["message"]


def test_an_unreadable_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = refusal(tmp_path / "missing.json", capsys)
    assert error["reason"] == "config_invalid"


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, TrainerOutput, str]:
    """One uninterrupted 24-step training of the preset, shared by the tests that read it."""
    directory = tmp_path_factory.mktemp("full-run")
    code, progress, stderr = run_trainer(write_config(directory))
    return directory, code, progress, stderr


def test_full_fine_tuning_of_the_tiny_preset(
    tunix_runtime: None, full_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    tmp_path, code, progress, stderr = full_run
    assert code == 0, stderr[-3000:]
    losses = [loss for _, loss in progress.curve]
    assert [int(step) for step, _ in progress.curve] == list(range(1, 25))
    assert progress.total_steps == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0  # it learns, clearly
    result = progress.result
    assert result["steps"] == 24
    assert 0 < result["eval_loss"] < losses[0]
    # Throughput counts the tokens trained on, padding excluded.
    train, held_out = trainer.split_records(trainer.read_records(DEMO), 0.1, seed=42)
    examples = [trainer.encode(r, trainer.ByteTokenizer(), 2048) for r in train + held_out]
    ladder = trainer.length_ladder([len(e.tokens) for e in examples if e], 2048, 8)
    batches = trainer.train_batches([e for e in examples[: len(train)] if e], 8, 24, 42, ladder)
    tokens = sum(len(e.tokens) for batch in batches for e in batch)
    assert result["tokens_per_second"] * result["wall_seconds"] == pytest.approx(tokens, rel=0.01)
    # The demo's lengths are alike: one padded length, compiled for training and evaluation.
    assert ladder == [48]
    assert progress.payload is not None
    assert progress.payload["compiled_shapes"] == 2
    final = tmp_path / "checkpoints" / "attempt-1" / "24"
    assert (final / "optimizer_state").is_dir()
    names = json.loads((final / "model_params" / "_METADATA").read_text())["tree_metadata"]
    assert "('embedder', 'input_embedding', 'value')" in names  # every weight, not adapters
    assert list((tmp_path / "metrics" / "attempt-1").glob("events.out.tfevents.*"))


def test_without_generation_eval_a_run_writes_no_predictions_and_reports_no_scores(
    tunix_runtime: None, full_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    """eval_max_items=0 (HYPER's), with held-out records to generate from: nothing is."""
    tmp_path, code, progress, stderr = full_run
    assert code == 0, stderr[-3000:]
    assert not (tmp_path / "eval").exists()
    assert progress.payload is not None
    assert not {"eval_items", "eval_seconds", *scorers.SCORER_NAMES} & set(progress.payload)
    assert not [line for line in progress.progress_lines if "phase" in line]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, TrainerOutput, str]:
    """A 16-step LoRA training, then 3 held-out records completed at temperature 1."""
    directory = tmp_path_factory.mktemp("lora-run")
    config = write_config(
        directory,
        lora_rank=8,
        lora_alpha=16.0,
        learning_rate=1e-2,
        max_steps=16,
        eval_max_items=3,
        temperature=1.0,
    )
    code, progress, stderr = run_trainer(config)
    return directory, code, progress, stderr


def test_lora_trains_adapters_only(
    tunix_runtime: None, lora_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    tmp_path, code, progress, stderr = lora_run
    assert code == 0, stderr[-3000:]
    losses = [loss for _, loss in progress.curve]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    saved = tmp_path / "checkpoints" / "attempt-1" / "16" / "model_params" / "_METADATA"
    names = list(json.loads(saved.read_text())["tree_metadata"])
    # Only the adapters were written (every attention and MLP projection, and the head), no
    # base weight.
    assert names
    assert all("_lora_a" in name or "_lora_b" in name for name in names), names
    assert any("q_proj" in name for name in names)
    assert any("down_proj" in name for name in names)


def test_lora_adapters_generate_when_sampling_at_a_temperature(
    tunix_runtime: None, lora_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    """The model with its trained adapters completes the held-out records; sampled at
    temperature 1 (seeded), the three completions of up to 32 tokens all differ."""
    tmp_path, code, progress, stderr = lora_run
    assert code == 0, stderr[-3000:]
    lines = (tmp_path / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines]
    assert len(items) == 3
    assert len({item["prediction"] for item in items}) == 3
    assert progress.payload is not None
    assert progress.payload["eval_items"] == 3
    evaluating = [line["item"] for line in progress.progress_lines if "phase" in line]
    assert evaluating == [0, 3]


# --------------------------------------------------------------------------- real checkpoints


def tiny_hub_tokenizer(directory: Path) -> None:
    """A small word-level tokenizer saved in the Hugging Face layout, made offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "what": 4, "is": 5, "2": 6, "4": 7}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(str(directory))


def test_a_real_model_loads_through_tunix_with_its_own_tokenizer(
    tmp_path: Path, tunix_runtime: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog model's Tunix config and safetensors loader are called with the worker's
    checkpoint directory, and the directory's tokenizer encodes the records. (Real weights
    are gigabytes: the loader itself is Tunix's and is replaced here by a recorder.)"""
    from tunix.models import automodel

    directory = tmp_path / "models" / "Qwen" / "Qwen3-0.6B"
    directory.mkdir(parents=True)
    tiny_hub_tokenizer(directory)
    (directory / "config.json").write_text('{"model_type": "qwen3"}')
    (directory / "model.safetensors").write_bytes(b"")
    calls: list[tuple[Any, ...]] = []

    def record(*args: Any) -> str:
        calls.append(args)
        return "the model"

    monkeypatch.setattr(automodel, "create_model_from_safe_tensors", record)
    plan = trainer.read_plan(
        write_config(tmp_path, model_id="Qwen/Qwen3-0.6B", checkpoint_dir=directory)
    )
    checkpoint = trainer.resolve_checkpoint(plan)
    model, tokenizer = trainer.build_model(plan, checkpoint, mesh=None, seed=0)
    assert model == "the model"
    ((name, path, config, mesh),) = calls
    assert (name, path, mesh) == ("qwen3-0.6b", str(directory), None)
    assert config.num_layers == 28  # Tunix's own Qwen3-0.6B configuration
    example = trainer.encode({"prompt": "what is 2", "completion": "4"}, tokenizer, 32)
    assert example is not None
    assert example.tokens == [1, 4, 5, 6, 7, 2]
    assert example.mask == [0, 0, 0, 0, 1, 1]


def attempt_config(directory: Path, attempt: int, **overrides: Any) -> Path:
    """The config the worker writes for attempt ``attempt`` of one run (resume on)."""
    path = write_config(directory, **overrides)
    spec = json.loads(path.read_text())
    spec["output"].update(
        checkpoints=str(directory / "checkpoints" / f"attempt-{attempt}"),
        metrics=str(directory / "metrics" / f"attempt-{attempt}"),
        resume=True,
    )
    path.write_text(json.dumps(spec))
    return path


def test_a_later_attempt_resumes_where_the_earlier_one_checkpointed(
    tmp_path: Path, tunix_runtime: None, full_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    """Attempt 1 stops after step 12 (its last checkpoint); attempt 2 restores it and trains
    13..24 to exactly the losses of the uninterrupted run: the same weights, optimizer state
    and batches."""
    code, _, stderr = run_trainer(attempt_config(tmp_path, 1, max_steps=12))
    assert code == 0, stderr[-3000:]
    assert (tmp_path / "checkpoints" / "attempt-1" / "12" / "_CHECKPOINT_METADATA").is_file()
    proc_code, second, stderr = run_trainer(attempt_config(tmp_path, 2, max_steps=24))
    assert proc_code == 0, stderr[-3000:]
    assert [int(step) for step, _ in second.curve] == list(range(13, 25))
    uninterrupted = full_run[2].curve[12:]
    assert [loss for _, loss in second.curve] == pytest.approx(
        [loss for _, loss in uninterrupted], rel=1e-4
    )
    assert second.result["steps"] == 24
    assert (tmp_path / "checkpoints" / "attempt-2" / "24").is_dir()


def test_nothing_to_resume_from_starts_at_step_one(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "attempt-1" / "7.orbax-checkpoint-tmp").mkdir(parents=True)  # unfinished
    (checkpoints / "attempt-1" / "5").mkdir()  # no metadata: not a complete checkpoint
    assert trainer.newest_earlier_checkpoint(checkpoints / "attempt-2") is None
    (checkpoints / "attempt-1" / "5" / "_CHECKPOINT_METADATA").write_text("{}")
    (checkpoints / "attempt-3" / "9").mkdir(parents=True)
    (checkpoints / "attempt-3" / "9" / "_CHECKPOINT_METADATA").write_text("{}")
    # Only earlier attempts count, and the newest step among them.
    assert trainer.newest_earlier_checkpoint(checkpoints / "attempt-2") == (
        checkpoints / "attempt-1" / "5"
    )
    assert trainer.newest_earlier_checkpoint(checkpoints / "attempt-4") == (
        checkpoints / "attempt-3" / "9"
    )
