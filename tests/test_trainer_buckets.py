"""Length bucketing with the real tiny preset and real Tunix: a batch's loss does not depend on
how far it is padded, and a corpus of skewed lengths trains through several padded shapes and
resumes exactly."""

from __future__ import annotations

import json
import math
import random
import statistics
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runs import trainer
from tests.test_trainer import TrainerOutput, attempt_config, run_trainer, write_config

# No database: the PostgreSQL pass of `make test` runs these once.
pytestmark = [pytest.mark.timeout(600), pytest.mark.database_independent]

RECORDS = [
    {"prompt": "What is 2+2?", "completion": "4"},
    {"prompt": "Name a colour.", "completion": "Blue, like the sky over the sea at noon."},
    {"prompt": "Spell it out: " + "x" * 30, "completion": "y" * 55},
    {"prompt": "Hi", "completion": "Hello there."},
]


@contextmanager
def on_mesh(mesh: Any) -> Iterator[None]:
    """Tunix reads the mesh from ``with mesh:``, which JAX reports as deprecated each time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`with mesh:` context manager")
        with mesh:
            yield


def jitted_eval(tmp_path: Path, eval_loss: Any = None) -> Callable[[list[Any], int], float]:
    """The tiny preset's evaluation loss as Tunix's PeftTrainer computes it (its default loss,
    or ``eval_loss``, jitted), fed the trainer's own model inputs; the same weights each call."""
    import optax
    from tunix.sft import peft_trainer
    from tunix.utils import mesh as mesh_lib

    plan = trainer.read_plan(write_config(tmp_path))
    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`with mesh:` context manager")
        model, _ = trainer.build_model(plan, None, mesh, seed=0)
    tunix = peft_trainer.PeftTrainer(
        model, optax.adamw(1e-3), peft_trainer.TrainingConfig(eval_every_n_steps=1, max_steps=1)
    ).with_gen_model_input_fn(lambda x: trainer.model_inputs(x, trainer.PAD))
    if eval_loss is not None:
        tunix.eval_loss_fn = eval_loss
    _, step = tunix.jit_train_and_eval_step()

    def loss(batch: list[Any], length: int) -> float:
        with on_mesh(mesh):
            return float(step(trainer.training_input(batch, length, trainer.PAD))[0])

    return loss


@pytest.fixture
def eval_step(tunix_runtime: None, tmp_path: Path) -> Callable[[list[Any], int], float]:
    return jitted_eval(tmp_path)


def test_a_batch_loss_does_not_depend_on_its_padding(
    tunix_runtime: None, eval_step: Callable[[list[Any], int], float]
) -> None:
    tokenizer = trainer.ByteTokenizer()
    batch = [e for e in (trainer.encode(r, tokenizer, 2048) for r in RECORDS) if e]
    longest = max(len(e.tokens) for e in batch)
    tight, bucketed, far = (eval_step(batch, n) for n in (longest, longest + 24, 512))
    assert bucketed == pytest.approx(tight, rel=1e-5)
    assert far == pytest.approx(tight, rel=1e-5)
    # And it is the mean over the batch's completion tokens (each predicted from the token
    # before it), whatever the padding: each example alone, unpadded, weighted by its count.
    counts = [sum(e.mask[1:]) for e in batch]
    alone = [eval_step([e], len(e.tokens)) for e in batch]
    expected = sum(c * loss for c, loss in zip(counts, alone, strict=True)) / sum(counts)
    assert tight == pytest.approx(expected, rel=1e-5)
    assert len(set(alone)) == len(alone)  # the examples' losses differ: the weighting shows


def test_the_evaluation_loss_weighs_every_held_out_completion_token_once(
    tunix_runtime: None, tmp_path: Path, eval_step: Callable[[list[Any], int], float]
) -> None:
    """Grouped by rung, with top-up rows, the trainer's evaluation loss is still the mean over
    every held-out completion token; Tunix's default (the mean of the batches' means) is not."""
    tokenizer = trainer.ByteTokenizer()
    held_out = [e for e in (trainer.encode(r, tokenizer, 2048) for r in RECORDS * 3) if e]
    ladder = sorted({-(-len(e.tokens) // 8) * 8 for e in held_out})
    batches = trainer.eval_batches(held_out, 2, ladder)
    assert any(not any(e.mask) for b in batches for e in b)  # some rows are top-ups
    lengths = [trainer.padded_length(b, ladder) for b in batches]
    counts = [sum(e.mask[1:]) for e in held_out]
    alone = [eval_step([e], len(e.tokens)) for e in held_out]
    expected = sum(c * loss for c, loss in zip(counts, alone, strict=True)) / sum(counts)

    (tmp_path / "grouped").mkdir()
    grouped = jitted_eval(tmp_path / "grouped", trainer.eval_loss_fn(batches))
    summed = sum(grouped(b, n) for b, n in zip(batches, lengths, strict=True))
    assert summed / len(batches) == pytest.approx(expected, rel=1e-5)
    means = [eval_step(b, n) for b, n in zip(batches, lengths, strict=True)]
    assert sum(means) / len(means) != pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- a skewed corpus


def skewed_corpus(path: Path, count: int = 120) -> Path:
    """Prompt/completion records of lognormal sizes: median 30 bytes, the longest 400."""
    normal = statistics.NormalDist()
    sigma = math.log(400 / 30) / normal.inv_cdf((count - 0.5) / count)
    rng = random.Random(5)
    lines = []
    for i in range(count):
        size = max(6, round(30 * math.exp(sigma * normal.inv_cdf((i + 0.5) / count))))
        text = "".join(rng.choices("abcdefgh ", k=size))
        lines.append(json.dumps({"prompt": text[: size // 3], "completion": text[size // 3 :]}))
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def on_corpus(config: Path, corpus: Path) -> Path:
    spec = json.loads(config.read_text())
    spec["dataset"]["path"] = str(corpus)
    config.write_text(json.dumps(spec))
    return config


def planned_shapes(corpus: Path, steps: int) -> tuple[int, int]:
    """(real tokens, padded lengths) of an uninterrupted run of ``steps`` steps, from the
    trainer's own data functions."""
    train, held_out = trainer.split_records(trainer.read_records(corpus), 0.1, seed=42)
    tokenizer = trainer.ByteTokenizer()
    train_examples = [e for e in (trainer.encode(r, tokenizer, 2048) for r in train) if e]
    eval_examples = [e for e in (trainer.encode(r, tokenizer, 2048) for r in held_out) if e]
    lengths = [len(e.tokens) for e in train_examples + eval_examples]
    ladder = trainer.length_ladder(lengths, 2048, 8)
    batches = list(trainer.train_batches(train_examples, 8, steps, 42, ladder))
    shapes = {trainer.padded_length(b, ladder) for b in batches}
    evaluated = trainer.eval_batches(eval_examples, 8, ladder)
    eval_shapes = {(len(b), trainer.padded_length(b, ladder)) for b in evaluated}
    return sum(len(e.tokens) for b in batches for e in b), len(shapes) + len(eval_shapes)


@pytest.fixture(scope="module")
def skewed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, TrainerOutput, str]:
    """One uninterrupted 16-step training on a skewed corpus."""
    directory = tmp_path_factory.mktemp("skewed")
    corpus = skewed_corpus(directory / "skewed.jsonl")
    code, output, stderr = run_trainer(on_corpus(write_config(directory, max_steps=16), corpus))
    return corpus, code, output, stderr


def test_a_skewed_corpus_trains_through_several_padded_shapes(
    tunix_runtime: None, skewed_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    corpus, code, output, stderr = skewed_run
    assert code == 0, stderr[-3000:]
    assert [int(step) for step, _ in output.curve] == list(range(1, 17))
    real_tokens, shapes = planned_shapes(corpus, 16)
    assert output.payload is not None
    assert output.payload["compiled_shapes"] == shapes
    assert 3 <= shapes <= 2 * trainer.MAX_SHAPES  # the train step's and the eval step's
    assert output.result["tokens_per_second"] * output.result["wall_seconds"] == pytest.approx(
        real_tokens, rel=0.01
    )
    assert math.isfinite(output.result["eval_loss"])


def test_a_resumed_skewed_training_feeds_the_uninterrupted_runs_batches(
    tmp_path: Path, tunix_runtime: None, skewed_run: tuple[Path, int, TrainerOutput, str]
) -> None:
    """Attempt 1 stops at step 8; attempt 2 restores it and trains 9..16 to the losses of the
    uninterrupted run, batches of every padded length included."""
    corpus, _, uninterrupted, _ = skewed_run
    code, _, stderr = run_trainer(on_corpus(attempt_config(tmp_path, 1, max_steps=8), corpus))
    assert code == 0, stderr[-3000:]
    code, second, stderr = run_trainer(on_corpus(attempt_config(tmp_path, 2, max_steps=16), corpus))
    assert code == 0, stderr[-3000:]
    assert [int(step) for step, _ in second.curve] == list(range(9, 17))
    assert [loss for _, loss in second.curve] == pytest.approx(
        [loss for _, loss in uninterrupted.curve[8:]], rel=1e-4
    )
