"""The generation eval after training (runs/trainer.py): held-out records completed by Tunix's
sampler with the trained model, scored by runs/scorers.py, written to eval/predictions.jsonl
and summed up in the result; and the per-step progress (learning rate, throughput, evaluation
loss). Real trainings of the tiny preset, kept short."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest

from runs import scorers, trainer
from tests.test_trainer import DEMO, TrainerOutput, run_trainer, tiny_hub_tokenizer, write_config

# No database: the PostgreSQL pass of `make test` runs these once.
pytestmark = [pytest.mark.timeout(600), pytest.mark.database_independent]

PREDICTION_KEYS = ["line", "prompt", "reference", "prediction", "scores"]
EVAL_KEYS = {"eval_items", "eval_seconds", *scorers.SCORER_NAMES}  # in the result
GENERATED: dict[str, Any] = {
    "max_steps": 8,
    "batch_size": 4,
    "eval_max_items": 5,
    "learning_rate": 1e-2,
}


def predictions(directory: Path) -> list[dict[str, Any]]:
    path = directory / "eval" / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def evaluating(output: TrainerOutput) -> list[dict[str, Any]]:
    return [line for line in output.progress_lines if line.get("phase") == "evaluating"]


# --------------------------------------------------------------------------- without Tunix


def test_records_keep_their_line_numbers_and_split_as_before() -> None:
    numbered = trainer.read_numbered_records(DEMO)
    lines = DEMO.read_text(encoding="utf-8").split("\n")
    assert all(json.loads(lines[number - 1]) == record for number, record in numbered)
    train, held_out = trainer.split_records(numbered, 0.1, seed=42)
    bare = trainer.split_records(trainer.read_records(DEMO), 0.1, seed=42)
    assert ([r for _, r in train], [r for _, r in held_out]) == bare


def test_line_numbers_count_blank_lines_and_end_at_newlines_only(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n\n{"prompt":\r"c", "completion": "d"}\n')
    assert trainer.read_numbered_records(path) == [
        (1, {"prompt": "a", "completion": "b"}),
        (3, {"prompt": "c", "completion": "d"}),
    ]


def test_held_out_chat_records_are_prompted_as_training_renders_them() -> None:
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    rows: list[tuple[int, dict[str, Any]]] = [
        (4, {"messages": chat}),
        (9, {"prompt": "Hi", "completion": "Hello."}),
        (2, {"prompt": "Bye", "completion": "Bye."}),
    ]
    items = trainer.held_out_items(rows, trainer.ByteTokenizer(), limit=2)
    assert items == [
        trainer.HeldOut(4, "user: 2+2?\nassistant: ", "4"),
        trainer.HeldOut(9, "Hi", "Hello."),
    ]


def test_a_long_prompt_loses_its_start_and_keeps_its_begin_token() -> None:
    tokenizer = trainer.ByteTokenizer()
    assert trainer.frame_prompt(tokenizer, "abcdef", 4) == (
        [trainer.BOS, *tokenizer.encode("def")],
        True,
    )
    assert trainer.frame_prompt(tokenizer, "abc", 4) == (
        [trainer.BOS, *tokenizer.encode("abc")],
        False,
    )
    assert trainer.frame_prompt(tokenizer, "abc") == (
        [trainer.BOS, *tokenizer.encode("abc")],
        False,
    )


def test_generation_has_one_shape_a_power_of_two_within_max_seq_length() -> None:
    # (prompt length, cache size): the longest prompt rounded up, room for the new tokens.
    assert trainer.generation_shape([5, 17, 9], max_seq_length=2048, max_new_tokens=32) == (32, 64)
    assert trainer.generation_shape([32], max_seq_length=2048, max_new_tokens=8) == (32, 40)
    assert trainer.generation_shape([3000], max_seq_length=2048, max_new_tokens=32) == (2048, 2080)
    assert trainer.generation_shape([40], max_seq_length=48, max_new_tokens=1) == (48, 49)


def test_byte_tokens_decode_to_text_without_special_tokens() -> None:
    tokenizer = trainer.ByteTokenizer()
    ids = [trainer.BOS, *tokenizer.encode("héllo"), trainer.PAD, trainer.EOS]
    assert tokenizer.decode(ids) == "héllo"
    assert tokenizer.decode(tokenizer.encode("é")[:1]) == "\ufffd"  # cut inside a character
    # The attributes training reads are still plain integers.
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)


def test_throughput_counts_the_steps_since_the_last_report_without_evaluations() -> None:
    ticks = iter([0.0, 10.0, 12.0, 13.0, 15.0])
    throughput = trainer.Throughput([100, 200, 300, 400], first_step=2, clock=lambda: next(ticks))
    throughput.start()  # 10.0
    assert throughput.report(3) == 50.0  # step 3's 100 tokens in 2 s (compiling included)
    throughput.pause(0.5)  # an evaluation between the reports
    assert throughput.report(5) == 1000.0  # steps 4 and 5: 500 tokens in 1 s of training
    assert throughput.report(6) == 200.0


def test_the_output_directory_falls_back_to_the_checkpoints_grandparent(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    spec = json.loads(config.read_text())
    assert trainer.read_plan(config).output_dir == tmp_path
    del spec["output"]["dir"]
    config.write_text(json.dumps(spec))
    assert trainer.read_plan(config).output_dir == tmp_path


def test_predictions_are_written_whole_under_their_final_name(tmp_path: Path) -> None:
    rows = [{"line": 3, "prompt": "¿Qué?", "reference": "b", "prediction": "c", "scores": {}}]
    path = trainer.write_predictions(tmp_path / "eval", rows)
    assert path == tmp_path / "eval" / "predictions.jsonl"
    assert [p.name for p in path.parent.iterdir()] == ["predictions.jsonl"]
    assert path.read_text(encoding="utf-8") == json.dumps(rows[0], ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, TrainerOutput, str]:
    """One 8-step training of the preset, then 5 of its 6 held-out records generated in
    batches of 4 (the second one filled up with repeats)."""
    directory = tmp_path_factory.mktemp("generated")
    code, output, stderr = run_trainer(write_config(directory, **GENERATED))
    return directory, code, output, stderr


def test_every_generated_item_is_written_with_its_line_prompt_reference_and_scores(
    tunix_runtime: None, generated: tuple[Path, int, TrainerOutput, str]
) -> None:
    directory, code, _, stderr = generated
    assert code == 0, stderr[-3000:]
    items = predictions(directory)
    _, held_out = trainer.split_records(trainer.read_numbered_records(DEMO), 0.1, seed=42)
    assert len(held_out) == 6
    # The first eval_max_items held-out records, in the split's order, by their dataset line.
    assert [(i["line"], i["prompt"], i["reference"]) for i in items] == [
        (line, record["prompt"], record["completion"]) for line, record in held_out[:5]
    ]
    every = {name: cls() for name, cls in scorers.SCORERS.items()}
    for item in items:
        assert list(item) == PREDICTION_KEYS
        assert isinstance(item["prediction"], str)
        assert len(item["prediction"]) <= 32  # max_new_tokens byte tokens
        assert item["scores"] == {
            name: scorer.score(item["prediction"], item["reference"])
            for name, scorer in every.items()
        }
        assert all(0.0 <= value <= 1.0 for value in item["scores"].values())
    assert [p.name for p in (directory / "eval").iterdir()] == ["predictions.jsonl"]


def test_generation_reports_its_progress_and_the_scores_means(
    tunix_runtime: None, generated: tuple[Path, int, TrainerOutput, str]
) -> None:
    directory, code, output, stderr = generated
    assert code == 0, stderr[-3000:]
    # Before the first batch (while the sampler compiles), then after each batch of 4.
    assert evaluating(output) == [
        {"step": 8, "total_steps": 8, "phase": "evaluating", "item": item, "items": 5}
        for item in (0, 4, 5)
    ]
    assert output.progress_lines[-1]["item"] == 5  # nothing of the training after it
    result = output.payload
    assert result is not None
    assert result["eval_items"] == 5
    assert result["eval_seconds"] > 0
    items = predictions(directory)
    for name in scorers.SCORER_NAMES:
        assert result[name] == pytest.approx(math.fsum(i["scores"][name] for i in items) / 5)
    assert result["steps"] == 8


def test_each_step_reports_its_learning_rate_and_throughput_and_each_evaluation_its_loss(
    tunix_runtime: None, generated: tuple[Path, int, TrainerOutput, str]
) -> None:
    _, code, output, stderr = generated
    assert code == 0, stderr[-3000:]
    steps = [line for line in output.progress_lines if "loss" in line]
    assert [line["step"] for line in steps] == list(range(1, 9))
    for line in steps:
        assert set(line) == {
            "step",
            "total_steps",
            "loss",
            "loss_mean",
            "learning_rate",
            "tokens_per_second",
        }
        assert line["learning_rate"] == pytest.approx(1e-2)  # the run's, as the optimizer holds
        assert 0 < line["tokens_per_second"] < math.inf
    # One evaluation before the first step and one after each (8 steps: every step).
    evaluations = [line for line in output.progress_lines if "eval_loss" in line]
    assert [line["step"] for line in evaluations] == list(range(9))
    assert all(set(line) == {"step", "total_steps", "eval_loss"} for line in evaluations)
    assert output.payload is not None
    assert evaluations[-1]["eval_loss"] == pytest.approx(output.payload["eval_loss"])


def test_a_checkpoints_own_tokenizer_frames_prompts_and_decodes_completions(
    tmp_path: Path, tunix_runtime: None
) -> None:
    """What a real checkpoint's run does after training, with a Hugging Face tokenizer made
    offline and the preset's random weights (real weights are gigabytes)."""
    from tunix.utils import mesh as mesh_lib

    tiny_hub_tokenizer(tmp_path / "tokenizer")
    tokenizer = trainer.HubTokenizer(tmp_path / "tokenizer")
    plan = trainer.read_plan(write_config(tmp_path))
    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    hyper = plan.hyper | {"max_new_tokens": 4, "batch_size": 2}
    items = [trainer.HeldOut(7, "what is 2", "4")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`with mesh:` context manager")
        warnings.filterwarnings("ignore", message=r"Using deprecated _init_cache")
        model, _ = trainer.build_model(plan, None, mesh, seed=0)
        result = trainer.generation_eval(
            model, tokenizer, items, hyper=hyper, mesh=mesh, total_steps=0, output_dir=tmp_path
        )
    (item,) = predictions(tmp_path)
    assert (item["line"], item["prompt"], item["reference"]) == (7, "what is 2", "4")
    assert set(item["prediction"].split()) <= {"what", "is", "2", "4", "<unk>"}
    assert result["eval_items"] == 1
    assert set(result) == EVAL_KEYS
