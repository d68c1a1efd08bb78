"""Local mode's training process: ``python -m runs.trainer CONFIG``.

The worker writes CONFIG (the run's spec, every path absolute) and runs this module as the
run's child process. It reads the dataset JSONL (prompt/completion or chat; the loss counts the
completion only), holds out an evaluation split, builds the model (the tiny preset from random
weights, a Tunix-supported checkpoint from the worker host's model directory, or the export of
an earlier run that this one continues from), trains it with Tunix's ``PeftTrainer`` and optax
(full fine-tuning, or LoRA when ``lora_rank`` > 0), writes Orbax checkpoints and TensorBoard
metrics into the run's directory, and reports on stdout, one line each (see runs/progress.py):

    TUNIX_PROGRESS {"step": 3, "total_steps": 20, "loss": 4.81, "loss_mean": 5.02,
                    "learning_rate": 0.003, "tokens_per_second": 2210.5}
    TUNIX_PROGRESS {"step": 4, "total_steps": 20, "eval_loss": 4.62}     (after an evaluation)
    TUNIX_PROGRESS {"step": 20, "total_steps": 20, "phase": "evaluating", "item": 8, "items": 32}
    TUNIX_RESULT {"train_loss": ..., "eval_loss": ..., "steps": ..., "tokens_per_second": ...,
                  "eval_items": 32, "exact_match": ..., "token_f1": ..., "rouge_l": ...,
                  "eval_seconds": ...}
    TUNIX_ERROR {"reason": Reason.MODEL_UNAVAILABLE, "message": "..."}   (then exit code 2)

After training, the first ``eval_max_items`` held-out records are completed by Tunix's sampler
with the trained model (generation eval, the ``evaluating`` phase), scored by every scorer of
runs/scorers.py, and written to ``<output dir>/eval/predictions.jsonl``, one item a line:
``{"line", "prompt", "reference", "prediction", "scores"}``, ``line`` being the record's 1-based
line in the dataset file. The result reports each scorer's mean under its name.

Batches are padded to a few lengths (length_ladder), each holding examples of similar length,
so a corpus of mostly short records with a few long ones does not compute mostly padding;
``compiled_shapes`` in the result counts the padded shapes the run compiled.

``loss`` is the step's batch loss; ``loss_mean`` and ``train_loss`` are the mean over the last
progress.TRAIN_LOSS_WINDOW steps.

No Django: this runs on a worker host in a fresh interpreter. JAX and Tunix are imported only
once the config has been read and checked, so a bad config fails in milliseconds.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from runs import model_catalog, scorers, training_config
from runs.dryrun import ATTEMPT_PREFIX
from runs.outcomes import Reason
from runs.progress import ERROR_PREFIX, PROGRESS_PREFIX, RESULT_PREFIX, LossWindow

EXIT_REFUSED = 2  # the trainer refused the run and said why on a TUNIX_ERROR line
MAX_EVALS = 10  # evaluations per run, the last one always after the final step
# Padded lengths per run: each is one compilation of the train step and one of the eval step.
MAX_SHAPES = 5
LADDER_SLACK = 1.1  # fewer rungs are kept while they pad at most 10 % more than MAX_SHAPES would
# Each rung is at least twice the one below: closer rungs save too little padding per example
# to pay for a compilation, and no example is padded to more than twice the rung below its own.
RUNG_RATIO = 2
MAX_LADDER_CANDIDATES = 256  # distinct rounded lengths the ladder search considers
PAD, BOS, EOS, BYTE_OFFSET = 0, 1, 2, 3  # the tiny preset's byte tokenizer
TINY_VOCAB = 256 + BYTE_OFFSET
EVAL_DIR, PREDICTIONS_FILE = "eval", "predictions.jsonl"
TMP_PREFIX = ".tmp-"  # hidden from the artifact listing until renamed (runs/artifacts.py)
# LoRA targets by family: attention and MLP projections (and the head for the random-weight
# preset, whose frozen random head would otherwise cap what adapters can learn).
LORA_TARGETS = {
    "tiny": ".*_proj|.*lm_head",
    "llama3": ".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*up_proj|.*down_proj",
    "qwen2": ".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*up_proj|.*down_proj",
    "qwen3": ".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*up_proj|.*down_proj",
    "gemma3": ".*q_einsum|.*kv_einsum|.*gate_proj|.*up_proj|.*down_proj",
}


class TrainerError(Exception):
    """A run this trainer cannot train, with the Reason the run should get."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def emit(prefix: str, payload: dict[str, Any]) -> None:
    print(prefix + json.dumps(payload, sort_keys=True), flush=True)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    tokens: list[int]
    mask: list[int]  # 1 where the token is part of the completion (and carries loss)


class ByteTokenizer:
    """UTF-8 bytes as tokens: nothing to download, any text round-trips."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS
    sampling_pad_id = PAD

    def encode(self, text: str) -> list[int]:
        return [b + BYTE_OFFSET for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens left out; a generation may stop inside a
        character, or put bytes in an order UTF-8 refuses: those show as U+FFFD."""
        data = bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < TINY_VOCAB)
        return data.decode("utf-8", errors="replace")

    def chat_prompt(self, messages: list[dict[str, str]]) -> str | None:
        return None  # no chat template: the plain "role: content" rendering


class HubTokenizer:
    """A checkpoint directory's own tokenizer (Hugging Face files next to the weights)."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.bos_id = self.tokenizer.bos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        # Tunix's sampler treats every token equal to the pad id as padding, in the prompt and
        # in what it generates; without a pad token of its own, stand in with the end token
        # (as Tunix's own adapter does), never with a real token such as id 0.
        pad = self.tokenizer.pad_token_id
        self.sampling_pad_id = pad if pad is not None else (self.eos_id or 0)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return str(
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )


def prompt_and_completion(record: dict[str, Any], tokenizer: Any) -> tuple[str, str]:
    """Chat records train on their last assistant message; everything before is the prompt."""
    if "messages" not in record:
        return str(record["prompt"]), str(record["completion"])
    messages = record["messages"]
    context = messages[:-1]
    rendered = tokenizer.chat_prompt(context)
    if rendered is None:
        rendered = "".join(f"{m['role']}: {m['content']}\n" for m in context) + "assistant: "
    return rendered, str(messages[-1]["content"])


def encode(record: dict[str, Any], tokenizer: Any, max_length: int) -> Example | None:
    """Tokens and loss mask for one record, cut to ``max_length``; None if no completion
    token survives the cut (the prompt alone is longer than the limit)."""
    prompt, completion = prompt_and_completion(record, tokenizer)
    head = ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(prompt)
    tail = tokenizer.encode(completion) + (
        [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    )
    tokens = (head + tail)[:max_length]
    mask = ([0] * len(head) + [1] * len(tail))[:max_length]
    if sum(mask) == 0:
        return None
    return Example(tokens, mask)


def read_numbered_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Each record with its 1-based line number in the file, blank lines counted: the
    identity a held-out item keeps across runs of the dataset. Lines end at "\n" only, as
    runs/datasets.py reads them (a "\r" is JSON whitespace there, not a line end)."""
    with path.open(encoding="utf-8", newline="\n") as handle:
        return [(number, json.loads(line)) for number, line in enumerate(handle, 1) if line.strip()]


def read_records(path: Path) -> list[dict[str, Any]]:
    return [record for _, record in read_numbered_records(path)]


Item = TypeVar("Item")


def split_records(
    records: list[Item], eval_fraction: float, seed: int
) -> tuple[list[Item], list[Item]]:
    """Shuffle with the run's seed, then hold the first ``eval_fraction`` out for evaluation.
    The order depends on the count alone, so records with their line numbers split as the
    bare records do."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - reproducible split, not a secret
    held_out = int(len(shuffled) * eval_fraction)
    return shuffled[held_out:], shuffled[:held_out]


def length_ladder(
    lengths: Sequence[int], limit: int, batch_size: int, max_shapes: int = MAX_SHAPES
) -> list[int]:
    """The lengths batches are padded to, shortest first: the fewest rungs (at most
    ``max_shapes``) whose padded tokens come within LADDER_SLACK of the best ``max_shapes``
    rungs can do for these lengths. Every shape costs a compilation of the train step and
    one of the eval step, so a rung that saves little padding is not worth its compile.

    Rungs are multiples of 8 (coarser for very spread lengths, to bound the search), the top
    one the longest example's, never above ``limit``, each at least RUNG_RATIO times the one
    below. Every rung below the top holds at least a batch of examples: a shape compiled for
    part of one batch costs more than it saves."""
    granule = 8
    while len({-(-n // granule) for n in lengths}) > MAX_LADDER_CANDIDATES:
        granule *= 2
    counts = Counter(min(limit, -(-n // granule) * granule) for n in lengths)
    values = sorted(counts)
    held = [0]  # held[j]: examples at or below values[j - 1]
    for value in values:
        held.append(held[-1] + counts[value])
    top = len(values)
    # padded[k][j]: fewest padded tokens for the examples up to values[j - 1] with k rungs,
    # the highest at values[j - 1]; below[k][j]: where that highest rung's bucket starts.
    padded = [[0.0] + [math.inf] * top]
    below: list[list[int]] = [[0] * (top + 1)]
    for _ in range(max_shapes):
        previous, row, start = padded[-1], [math.inf] * (top + 1), [0] * (top + 1)
        for j in range(1, top + 1):
            for i in range(j):
                in_bucket = held[j] - held[i]
                if (j < top and in_bucket < batch_size) or (
                    i > 0 and values[j - 1] < RUNG_RATIO * values[i - 1]
                ):
                    break  # starting the bucket higher only makes both worse
                cost = previous[i] + in_bucket * values[j - 1]
                if cost < row[j]:
                    row[j], start[j] = cost, i
        padded.append(row)
        below.append(start)
    best = min(padded[k][top] for k in range(1, max_shapes + 1))
    rungs = next(k for k in range(1, max_shapes + 1) if padded[k][top] <= best * LADDER_SLACK)
    ladder, j = [], top
    for k in range(rungs, 0, -1):
        ladder.append(values[j - 1])
        j = below[k][j]
    return ladder[::-1]


def bucket_length(length: int, ladder: Sequence[int]) -> int:
    """The rung an example of ``length`` tokens is padded to: the shortest that holds it."""
    return next(rung for rung in ladder if rung >= length)


def padded_length(batch: Sequence[Example], ladder: Sequence[int]) -> int:
    return bucket_length(max(len(e.tokens) for e in batch), ladder)


def plan_steps(train_count: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    total = math.ceil(train_count / batch_size) * epochs
    return min(total, max_steps) if max_steps else total


def eval_interval(total_steps: int, max_evals: int = MAX_EVALS) -> int:
    """The smallest divisor of ``total_steps`` giving at most ``max_evals`` evaluations, so the
    last one always falls on the final step."""
    for divisor in range(1, total_steps + 1):
        if total_steps % divisor == 0 and total_steps // divisor <= max_evals:
            return divisor
    return total_steps


def batch_arrays(
    examples: Sequence[Example], length: int, pad_id: int
) -> tuple[list[list[int]], list[list[int]]]:
    tokens = [e.tokens + [pad_id] * (length - len(e.tokens)) for e in examples]
    masks = [e.mask + [0] * (length - len(e.mask)) for e in examples]
    return tokens, masks


def train_batches(
    examples: Sequence[Example], batch_size: int, steps: int, seed: int, ladder: Sequence[int]
) -> Iterator[list[Example]]:
    """``steps`` full batches of examples of similar length, reproducible from the seed (a
    resumed run skips the first ones and must get the rest unchanged): each epoch is shuffled,
    ordered by rung (a stable sort, so the shuffle decides the order within a rung), cut into
    batches, and the batches shuffled. The epoch's short batch, the one holding its longest
    examples, is topped up with its shortest ones, which pad nothing more. Every example is
    trained on once an epoch, and an epoch is ``ceil(len(examples) / batch_size)`` steps, as
    plan_steps counts."""
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible order, not a secret
    produced = 0
    while examples and produced < steps:
        epoch = list(examples)
        rng.shuffle(epoch)
        epoch.sort(key=lambda e: bucket_length(len(e.tokens), ladder))
        batches = [epoch[i : i + batch_size] for i in range(0, len(epoch), batch_size)]
        batches[-1] += itertools.islice(itertools.cycle(epoch), batch_size - len(batches[-1]))
        rng.shuffle(batches)
        yield from batches[: steps - produced]
        produced += len(batches)


def eval_batches(
    examples: Sequence[Example], batch_size: int, ladder: Sequence[int]
) -> list[list[Example]]:
    """Every held-out example exactly once, grouped by rung (shortest first; split order within
    a rung). A rung's batches have as many rows as it has examples, up to ``batch_size``, so
    the one long example of a small split is evaluated as one row of its length rather than a
    batch of padding, at every evaluation. A rung's last batch is topped up with copies of its
    first examples that carry no loss (their masks are zero); eval_loss_fn weighs each token
    once, so neither the grouping nor the top-up changes the evaluation loss."""
    rungs: dict[int, list[Example]] = {}
    for example in examples:
        rungs.setdefault(bucket_length(len(example.tokens), ladder), []).append(example)
    batches = []
    for rung in sorted(rungs):
        held = rungs[rung]
        rows = min(batch_size, len(held))
        for start in range(0, len(held), rows):
            batch = held[start : start + rows]
            blanks = (Example(e.tokens, [0] * len(e.mask)) for e in itertools.cycle(held))
            batches.append(batch + list(itertools.islice(blanks, rows - len(batch))))
    return batches


def eval_loss_fn(batches: Sequence[Sequence[Example]]) -> Callable[..., Any]:
    """The evaluation loss of one of ``batches``: its completion tokens' negative
    log-likelihood summed, scaled so that the mean over the batches, which Tunix logs, and
    their sum over the batch count, which the trainer reports, are the mean over every
    held-out completion token (each predicted from the token before it), as the training
    loss is for a batch. Tunix's default would be the mean of the batches' own means, which
    depends on how the examples are grouped."""
    import jax
    import jax.numpy as jnp

    targets = sum(sum(e.mask[1:]) for batch in batches for e in batch)
    scale = len(batches) / max(1, targets)

    def loss(
        model: Any, input_tokens: Any, input_mask: Any, positions: Any, attention_mask: Any
    ) -> Any:
        logits, _ = model(input_tokens, positions, None, attention_mask)
        log_probs = jax.nn.log_softmax(logits[:, :-1, :].astype(jnp.float32))
        picked = jnp.take_along_axis(log_probs, input_tokens[:, 1:, None], axis=-1)[..., 0]
        return -jnp.sum(picked * input_mask[:, 1:]) * scale

    return loss


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Plan:
    run_id: str
    model: model_catalog.ModelEntry
    checkpoint_dir: Path | None  # a real model's weights; None for the preset
    allow_download: bool
    dataset: Path
    hyper: dict[str, Any]
    checkpoints: Path
    metrics: Path
    output_dir: Path  # the run's artifact directory: generation eval writes eval/ there
    resume: bool = False  # continue from an earlier attempt's newest checkpoint
    algorithm: str = training_config.SFT  # a name in runs/algorithms' ALGORITHMS
    # An earlier run's export this one continues from (a Hugging Face directory), and the
    # catalog model those weights began as (Tunix names a real family's architecture by it).
    export_dir: Path | None = None
    base_model_id: str | None = None


def plan_model(model: dict[str, Any]) -> tuple[model_catalog.ModelEntry, Path | None]:
    """The model a spec names, and the export it continues from (None: a catalog model)."""
    model_id = model["id"]
    export_dir = model.get("export_dir")
    if not export_dir:
        entry = model_catalog.lookup(model_id)
        if entry is None:
            raise TrainerError(
                Reason.MODEL_UNAVAILABLE, model_catalog.unknown_model_message(model_id)
            )
        return entry, None
    family = model.get("family")
    if family not in model_catalog.FAMILIES:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{model_id}: the built-in trainer cannot continue a model of family {family!r}",
        )
    if not Path(export_dir).is_absolute():
        raise TrainerError(Reason.CONFIG_INVALID, "model.export_dir must be absolute")
    description = f"continues {model.get('base_model_id') or family} from {export_dir}"
    return model_catalog.ModelEntry(model_id, family, description), Path(export_dir)


def read_plan(config_path: Path) -> Plan:
    try:
        spec = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(
            Reason.CONFIG_INVALID, f"cannot read run config {config_path}: {exc}"
        ) from exc
    from runs import algorithms  # not at the top: the algorithms' modules import this one

    # Configs written before runs chose an algorithm are SFT's.
    algorithm = spec.get("algorithm", algorithms.DEFAULT_ALGORITHM)
    if algorithm not in algorithms.ALGORITHMS:
        raise TrainerError(Reason.CONFIG_INVALID, algorithms.unknown_algorithm_message(algorithm))
    entry, export_dir = plan_model(spec["model"])
    checkpoint = spec["model"].get("checkpoint_dir")
    if export_dir is not None and not entry.is_preset:
        # A real family's export is a whole checkpoint directory (weights, config, tokenizer):
        # it is loaded, and checked, as a catalog model's is, never downloaded.
        checkpoint = str(export_dir)
    output = spec["output"]
    for key in ("checkpoints", "metrics"):
        if not Path(output[key]).is_absolute():  # Orbax refuses relative paths
            raise TrainerError(Reason.CONFIG_INVALID, f"output.{key} must be absolute")
    # Configs written before output.dir existed: checkpoints are <dir>/checkpoints/attempt-<n>.
    output_dir = (
        Path(output["dir"]) if output.get("dir") else Path(output["checkpoints"]).parents[1]
    )
    return Plan(
        run_id=spec["run_id"],
        model=entry,
        checkpoint_dir=Path(checkpoint) if checkpoint else None,
        allow_download=export_dir is None and bool(spec["model"].get("allow_download")),
        dataset=Path(spec["dataset"]["path"]),
        # A config written before a hyperparameter existed (a run re-queued across an
        # upgrade) gets its default.
        hyper={**training_config.defaults(algorithm), **spec["training"]},
        checkpoints=Path(output["checkpoints"]),
        metrics=Path(output["metrics"]),
        output_dir=output_dir,
        resume=bool(output.get("resume")),
        algorithm=algorithm,
        export_dir=export_dir,
        base_model_id=spec["model"].get("base_model_id") if export_dir is not None else None,
    )


CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_DONE = "_CHECKPOINT_METADATA"  # Orbax writes it last: the checkpoint is complete


@dataclass(frozen=True, order=True)
class Checkpoint:
    attempt: int
    step: int
    path: Path  # <run dir>/checkpoints/attempt-<n>/<subdir>/<step>


def attempt_number(directory: Path) -> int | None:
    suffix = directory.name.removeprefix(ATTEMPT_PREFIX)
    return int(suffix) if directory.name.startswith(ATTEMPT_PREFIX) and suffix.isdigit() else None


def find_checkpoints(run_dir: Path, subdir: str = "") -> list[Checkpoint]:
    """Every complete checkpoint of every attempt of the run, oldest attempt and step first.
    ``subdir`` is where the algorithm's Tunix trainer keeps them under an attempt's directory
    (GRPO's RL cluster: ``actor``; "" for SFT and DPO)."""
    found = []
    root = run_dir / CHECKPOINTS_DIR
    for attempt_dir in root.iterdir() if root.is_dir() else ():
        attempt = attempt_number(attempt_dir)
        steps = attempt_dir / subdir
        if attempt is None or not steps.is_dir():
            continue
        for step_dir in steps.iterdir():
            if step_dir.name.isdigit() and (step_dir / CHECKPOINT_DONE).is_file():
                found.append(Checkpoint(attempt, int(step_dir.name), step_dir))
    return sorted(found)


def newest_earlier_checkpoint(checkpoints: Path, subdir: str = "") -> Path | None:
    """The newest complete checkpoint of the attempts before the one writing to
    ``checkpoints`` (``<run dir>/checkpoints/attempt-<n>``): where a re-queued training
    resumes."""
    current = attempt_number(checkpoints)
    if current is None:
        return None
    earlier = [c for c in find_checkpoints(checkpoints.parents[1], subdir) if c.attempt < current]
    return max(earlier, key=lambda c: (c.step, c.attempt)).path if earlier else None


def seed_from_earlier_attempt(plan: Plan, subdir: str = "") -> int | None:
    """Copy the newest earlier checkpoint into this attempt's directory (``subdir`` of it),
    where Tunix restores it (model, optimizer state and step) and skips the batches already
    trained. Returns the step it resumes from. A copy, not a link: each attempt's directory
    stays its own. Nothing is copied once this attempt has checkpoints of its own."""
    if not plan.resume or (plan.checkpoints.is_dir() and any(plan.checkpoints.iterdir())):
        return None
    source = newest_earlier_checkpoint(plan.checkpoints, subdir)
    if source is None:
        return None
    target = plan.checkpoints / subdir
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target / source.name)
    attempt = source.parents[len(Path(subdir).parts)].name
    print(f"resuming from step {source.name} of {attempt}", flush=True)
    return int(source.name)


def resolve_checkpoint(plan: Plan) -> Path:
    """The real model's checkpoint directory, downloaded first if allowed and missing."""
    directory = plan.checkpoint_dir
    if directory is None:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id} needs a checkpoint directory on the worker host "
            "(set TUNIX_MODELS_DIR there)",
        )
    missing = model_catalog.missing_checkpoint_files(directory)
    if missing and plan.allow_download:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(
                repo_id=plan.model.id,
                local_dir=str(directory),
                allow_patterns=["*.safetensors", "*.json", "tokenizer*", "*.model"],
            )
        except Exception as exc:  # network, auth, gated repository: all mean "not here"
            raise TrainerError(
                Reason.MODEL_UNAVAILABLE,
                f"{plan.model.id} is not in {directory} and downloading it failed: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        missing = model_catalog.missing_checkpoint_files(directory)
    if missing:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            model_catalog.missing_checkpoint_message(plan.model.id, directory, missing),
        )
    return directory


# --------------------------------------------------------------------------- training


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's framing, if anything: Tunix's loader trusts the
    header's length, so a damaged file would have it try to allocate whatever that says."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{path.name} is too short to be a safetensors file"
            length = int.from_bytes(head, "little")
            if length > size - 8:
                return f"{path.name}: its header claims {length} bytes; the file has {size}"
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as exc:
        return f"{path.name}: {type(exc).__name__}: {exc}"
    return None if isinstance(header, dict) else f"{path.name}: its header is not an object"


def check_export_weights(plan: Plan, directory: Path) -> None:
    for weights in sorted(directory.glob("*.safetensors")):
        if problem := safetensors_problem(weights):
            raise TrainerError(
                Reason.MODEL_UNAVAILABLE,
                f"{plan.model.id}: damaged export in {directory}: {problem}",
            )


def load_tiny_export(plan: Plan, mesh: Any) -> tuple[Any, Any]:
    """The tiny preset's weights as an earlier run exported them, with its byte tokenizer."""
    directory = plan.export_dir
    assert directory is not None
    from runs import export  # not at the top: runs.export imports this module

    if not directory.is_dir():
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id}: the export directory {directory} is missing on this worker host",
        )
    if not (directory / export.TOKENIZER_MARKER).is_file():
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id}: {directory} is not an export of the tiny preset (it lacks "
            f"{export.TOKENIZER_MARKER})",
        )
    check_export_weights(plan, directory)
    from safetensors import SafetensorError

    try:
        with mesh:
            model = export.load_export(directory)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id}: cannot load the export in {directory}: {type(exc).__name__}: {exc}",
        ) from exc
    return model, ByteTokenizer()


def build_model(plan: Plan, checkpoint: Path | None, mesh: Any, seed: int) -> tuple[Any, Any]:
    """(model, tokenizer) for the plan's model: random weights for the preset, the weights of
    the export a run continues from, else the checkpoint directory's."""
    from flax import nnx

    if plan.export_dir is not None and plan.model.is_preset:
        return load_tiny_export(plan, mesh)
    if plan.model.is_preset:
        from tunix.models.llama3 import model as llama3

        config = llama3.ModelConfig(
            num_layers=2,
            vocab_size=TINY_VOCAB,
            embed_dim=64,
            hidden_dim=128,
            num_heads=4,
            head_dim=16,
            num_kv_heads=2,
            rope_theta=10_000,
            norm_eps=1e-5,
        )
        with mesh:
            return llama3.Llama3(config, rngs=nnx.Rngs(seed)), ByteTokenizer()
    assert checkpoint is not None
    if plan.export_dir is not None:
        check_export_weights(plan, checkpoint)
    from tunix.models import automodel, naming

    # A continued run's own id (models:/…) names no architecture; the model it began as does.
    model_name = naming.ModelNaming(model_id=plan.base_model_id or plan.model.id).model_name
    try:
        config = automodel.call_model_config(model_name)
        model = automodel.create_model_from_safe_tensors(model_name, str(checkpoint), config, mesh)
        tokenizer = HubTokenizer(checkpoint)
    except (OSError, ValueError, KeyError) as exc:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id}: cannot load the checkpoint in {checkpoint}: "
            f"{type(exc).__name__}: {exc}",
        ) from exc
    return model, tokenizer


def step_reporter(total_steps: int, seen: dict[str, float]) -> Callable[..., None]:
    """What the trainer says after each step: its progress line, with the step's batch loss
    and the mean over the last TRAIN_LOSS_WINDOW steps, which is also what the result line
    reports as ``train_loss`` (one batch's loss is too noisy to stand for the run), and any
    ``extra`` numbers of the step (learning rate, throughput)."""
    window = LossWindow()

    def report(step: int, loss: float, **extra: float) -> None:
        mean = window.add(loss)
        seen["train_loss"] = mean
        emit(
            PROGRESS_PREFIX,
            {"step": step, "total_steps": total_steps, "loss": loss, "loss_mean": mean, **extra},
        )

    return report


class Throughput:
    """Real (not padding) tokens a second of the steps since the previous report, evaluation
    time left out: each report follows the read-back of its step's loss, so the steps
    between two reports are done when the second one is made.

    ``step_tokens[i]`` is the real token count of step ``first_step + 1 + i``."""

    def __init__(
        self,
        step_tokens: Sequence[int],
        first_step: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cumulative = [0, *itertools.accumulate(step_tokens)]
        self.first_step = first_step
        self.reported = first_step
        self.clock = clock
        self.since = clock()
        self.paused = 0.0

    def start(self) -> None:
        """The clock starts with the training (compiling the first step counts)."""
        self.since, self.paused = self.clock(), 0.0

    def pause(self, seconds: float) -> None:
        self.paused += seconds

    def report(self, step: int) -> float:
        now = self.clock()
        tokens = (
            self.cumulative[step - self.first_step]
            - self.cumulative[self.reported - self.first_step]
        )
        elapsed = now - self.since - self.paused
        self.reported, self.since, self.paused = step, now, 0.0
        return round(tokens / elapsed, 1) if elapsed > 0 else 0.0


def tunix_training_options(plan: Plan, total_steps: int, every: int) -> dict[str, Any]:
    """What every algorithm's Tunix training config shares: the step budget, evaluations every
    ``every`` steps, Orbax checkpoints and TensorBoard metrics in the run's directories."""
    import orbax.checkpoint as ocp
    from tunix.sft import metrics_logger

    return {
        "eval_every_n_steps": every,
        "max_steps": total_steps,
        "checkpoint_root_directory": str(plan.checkpoints),
        "checkpointing_options": ocp.CheckpointManagerOptions(
            # About four checkpoints a run (the last one always): each costs a pause.
            save_interval_steps=max(every, math.ceil(total_steps / 4)),
            max_to_keep=2,
        ),
        "metrics_logging_options": metrics_logger.MetricsLoggerOptions(
            log_dir=str(plan.metrics), flush_every_n_steps=max(1, every)
        ),
        "pbar_description": None,
    }


def run_optimizer(plan: Plan) -> Any:
    """AdamW at the run's learning rate (the model's default when unset), held in the
    optimizer state where current_learning_rate reads it back."""
    import optax

    rate = float(plan.hyper.get("learning_rate") or plan.model.learning_rate)
    return optax.inject_hyperparams(optax.adamw)(learning_rate=rate)


def quiet_hooks() -> type[Any]:
    """Tunix's TrainingHooks with every hook doing nothing (all six are abstract): a trainer's
    reporting hooks override the ones they use."""
    from tunix.sft import hooks

    class Quiet(hooks.TrainingHooks):  # type: ignore[misc]
        def on_train_start(self, _trainer: Any) -> None: ...
        def on_train_end(self, _trainer: Any) -> None: ...
        def on_train_step_start(self, _trainer: Any) -> None: ...
        def on_train_step_end(self, _trainer: Any, _step: int, _loss: Any) -> None: ...
        def on_eval_step_start(self, _trainer: Any) -> None: ...
        def on_eval_step_end(self, _trainer: Any, _eval_loss: Any) -> None: ...

    return Quiet


def current_learning_rate(tunix_trainer: Any) -> float | None:
    """The learning rate in the optimizer's state (optax.inject_hyperparams keeps it there;
    Tunix logs it from there too, so it is on the host by the time a step is reported), or
    None for an optimizer that does not hold one."""
    import numpy as np

    try:
        rate = tunix_trainer.optimizer.opt_state.hyperparams["learning_rate"]
    except (AttributeError, KeyError, TypeError):
        return None
    return float(np.asarray(rate.get_value() if hasattr(rate, "get_value") else rate))


def training_input(batch: Sequence[Example], length: int, pad_id: int) -> Any:
    """A batch as Tunix's trainer takes it, right-padded to ``length``."""
    import numpy as np
    from tunix.sft import peft_trainer

    tokens, masks = batch_arrays(batch, length, pad_id)
    return peft_trainer.TrainingInput(
        input_tokens=np.array(tokens, np.int32), input_mask=np.array(masks, bool)
    )


def model_inputs(batch: Any, pad_id: int) -> dict[str, Any]:
    """The model's arguments for a batch: positions count real tokens only and the causal
    mask hides the padding, so a token's logits, and the loss (Tunix's mean over the
    completion tokens of the batch), do not depend on how far the batch is padded."""
    from tunix.sft import utils

    real = batch.input_tokens != pad_id
    return {
        "input_tokens": batch.input_tokens,
        "input_mask": batch.input_mask,
        "positions": utils.build_positions_from_mask(real),
        "attention_mask": utils.make_causal_attn_mask(real),
    }


def with_lora(model: Any, family: str, rank: int, alpha: float, seed: int) -> Any:
    import qwix
    from flax import nnx

    provider = qwix.LoraProvider(module_path=LORA_TARGETS[family], rank=rank, alpha=alpha)
    return qwix.apply_lora_to_model(
        model, provider, rngs=nnx.Rngs(seed + 2), **model.get_model_input()
    )


# --------------------------------------------------------------------------- generation eval


@dataclass(frozen=True)
class HeldOut:
    """A held-out record as generation eval sees it."""

    line: int  # the record's 1-based line in the dataset file
    prompt: str  # as training renders it (a chat record's context through its template)
    reference: str  # the completion the model was trained to give


def held_out_items(
    rows: Sequence[tuple[int, dict[str, Any]]], tokenizer: Any, limit: int
) -> list[HeldOut]:
    """The first ``limit`` held-out records, in the split's order."""
    return [
        HeldOut(line, *prompt_and_completion(record, tokenizer)) for line, record in rows[:limit]
    ]


def frame_prompt(tokenizer: Any, text: str, limit: int | None = None) -> tuple[list[int], bool]:
    """A prompt's tokens as training frames them (BOS, then the prompt), keeping the last
    ``limit`` of them with BOS still first; and whether the prompt's start was cut."""
    bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
    ids = list(tokenizer.encode(text))
    room = len(ids) if limit is None else max(0, limit - len(bos))
    if len(ids) <= room:
        return bos + ids, False
    return bos + ids[len(ids) - room :], True


class SamplerTokenizer:
    """The run's tokenizer as Tunix's sampler takes it: generate/tokenizer_adapter.py wants
    ``encode``, ``decode`` and the special ids as methods.

    ``encode`` frames a prompt as training does (BOS, then the prompt's tokens) and keeps its
    last ``prompt_length`` tokens, BOS first: the sampler never meets a longer prompt, which
    would make it compile another shape. BOS is framed here (so ``bos_id()`` is None and the
    sampler adds none), because the sampler would leave out a BOS whose id is 0."""

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def encode(self, text: str) -> list[int]:
        return frame_prompt(self.tokenizer, text, self.prompt_length)[0]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids))

    def bos_id(self) -> None:
        return None

    def eos_id(self) -> int:
        # No end token (training appended none): an id no token has, so generation runs to
        # max_new_tokens.
        return -1 if self.tokenizer.eos_id is None else int(self.tokenizer.eos_id)

    def pad_id(self) -> int:
        return int(self.tokenizer.sampling_pad_id)


def generation_shape(
    prompt_lengths: Sequence[int], max_seq_length: int, max_new_tokens: int
) -> tuple[int, int]:
    """(prompt length, cache size) of a run's generation, fixed for all its batches so the
    sampler compiles once: the smallest power of two that holds the longest framed prompt,
    at most max_seq_length (the longest sequence the run trained on; longer prompts lose
    their start), and room after it for max_new_tokens."""
    longest = max([1, *prompt_lengths])
    prompt_length = min(1 << (longest - 1).bit_length(), max_seq_length)
    return prompt_length, prompt_length + max_new_tokens


def write_predictions(directory: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``directory/predictions.jsonl``, written whole or not at all: a reader (the artifact
    listing, a comparison of runs) never sees half of it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PREDICTIONS_FILE
    partial = directory / f"{TMP_PREFIX}{PREDICTIONS_FILE}"
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def generation_eval(
    model: Any,
    tokenizer: Any,
    items: Sequence[HeldOut],
    *,
    hyper: dict[str, Any],
    mesh: Any,
    total_steps: int,
    output_dir: Path,
) -> dict[str, Any]:
    """Complete ``items`` with Tunix's sampler and the trained ``model`` (adapters applied),
    score every completion with every scorer, write them to eval/predictions.jsonl, and
    return the result's keys: ``eval_items``, each scorer's mean, ``eval_seconds``.

    One fixed batch shape (rows, prompt length, cache size) for every call: the sampler
    compiles its prefill and its decode loop once per shape, seconds each on a CPU. The last
    batch is filled up with repeats of its own items, whose completions are dropped."""
    from tunix.generate import sampler as sampler_lib

    started = time.monotonic()
    count = len(items)

    def progress(done: int) -> None:
        emit(
            PROGRESS_PREFIX,
            {
                "step": total_steps,
                "total_steps": total_steps,
                "phase": "evaluating",
                "item": done,
                "items": count,
            },
        )

    progress(0)  # the sampler compiles first: "evaluating 0 of n" meanwhile
    scoring = {name: scorer() for name, scorer in scorers.SCORERS.items()}
    max_new_tokens = int(hyper["max_new_tokens"])
    prompt_length, cache_size = generation_shape(
        [len(frame_prompt(tokenizer, item.prompt)[0]) for item in items],
        int(hyper["max_seq_length"]),
        max_new_tokens,
    )
    adapter = SamplerTokenizer(tokenizer, prompt_length)
    config = model.config
    sampler = sampler_lib.Sampler(
        model,
        adapter,
        sampler_lib.CacheConfig(
            cache_size=cache_size,
            num_layers=config.num_layers,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
        ),
    )
    temperature = float(hyper["temperature"])
    seed = int(hyper["seed"])
    rows = min(int(hyper["batch_size"]), count)
    completions: list[str] = []
    for index, start in enumerate(range(0, count, rows)):
        batch = list(items[start : start + rows])
        filled = batch + list(itertools.islice(itertools.cycle(batch), rows - len(batch)))
        with mesh:
            output = sampler(
                [item.prompt for item in filled],
                max_generation_steps=max_new_tokens,
                max_prompt_length=prompt_length,
                echo=False,
                # Greedy at 0; else sampling from the whole distribution at that temperature
                # (top_p=1.0 is what makes Tunix sample), seeded per batch so batches differ.
                temperature=temperature,
                top_p=1.0 if temperature > 0 else None,
                seed=seed + index,
            )
        completions.extend(output.text[: len(batch)])
        progress(len(completions))

    predictions: list[dict[str, Any]] = []
    scores: list[dict[str, float]] = []
    for item, completion in zip(items, completions, strict=True):
        scores.append(scorers.score_all(scoring, completion, item.reference))
        framed, cut = frame_prompt(tokenizer, item.prompt, prompt_length)
        bos = 0 if tokenizer.bos_id is None else 1
        predictions.append(
            {
                "line": item.line,
                # What the model was given: the prompt, or what was left of it after the cut.
                "prompt": tokenizer.decode(framed[bos:]) if cut else item.prompt,
                "reference": item.reference,
                "prediction": completion,
                "scores": scores[-1],
            }
        )
    write_predictions(output_dir / EVAL_DIR, predictions)
    return {
        "eval_items": count,
        **scorers.means(scores),
        "eval_seconds": round(time.monotonic() - started, 3),
    }


def train(plan: Plan, *, resumed_from: int = 0) -> dict[str, Any]:
    """Train with the plan's algorithm, once this worker's Tunix is known to provide it."""
    from runs import algorithms

    algorithm = algorithms.ALGORITHMS[plan.algorithm]
    missing = algorithms.missing_module(algorithm)
    if missing is not None:
        raise TrainerError(
            Reason.RUNTIME_MISSING,
            f"{algorithm.label} needs {missing}, which this worker's Tunix does not provide "
            "(install a google-tunix that has it)",
        )
    return algorithm.train(plan, resumed_from=resumed_from)


def train_sft(plan: Plan, *, resumed_from: int = 0) -> dict[str, Any]:
    hyper = plan.hyper
    seed = int(hyper["seed"])
    numbered = read_numbered_records(plan.dataset)
    train_rows, eval_rows = split_records(numbered, float(hyper["eval_fraction"]), seed)
    train_records = [record for _, record in train_rows]
    eval_records = [record for _, record in eval_rows]
    # A missing checkpoint is reported before the slow imports.
    checkpoint = None if plan.model.is_preset else resolve_checkpoint(plan)

    import jax
    import numpy as np
    from tunix.sft import peft_trainer
    from tunix.utils import mesh as mesh_lib

    batch_size = int(hyper["batch_size"])
    devices = jax.device_count() if batch_size % jax.device_count() == 0 else 1
    mesh = mesh_lib.create_mesh((devices, 1), ("fsdp", "tp"))
    model, tokenizer = build_model(plan, checkpoint, mesh, seed)

    def encode_all(rows: list[dict[str, Any]]) -> list[Example]:
        encoded = (encode(r, tokenizer, int(hyper["max_seq_length"])) for r in rows)
        return [e for e in encoded if e is not None]

    train_examples, eval_examples = encode_all(train_records), encode_all(eval_records)
    if not train_examples:
        raise TrainerError(
            Reason.CONFIG_INVALID,
            "no training example keeps a completion token within max_seq_length "
            f"({hyper['max_seq_length']}); raise it or lower eval_fraction",
        )
    ladder = length_ladder(
        [len(e.tokens) for e in [*train_examples, *eval_examples]],
        int(hyper["max_seq_length"]),
        batch_size,
    )
    total_steps = plan_steps(
        len(train_examples), batch_size, int(hyper["num_epochs"]), hyper.get("max_steps")
    )
    every = eval_interval(total_steps)

    def to_input(batch: list[Example]) -> Any:
        return training_input(batch, padded_length(batch, ladder), tokenizer.pad_id)

    if int(hyper["lora_rank"]) > 0:
        with mesh:
            model = with_lora(
                model, plan.model.family, int(hyper["lora_rank"]), float(hyper["lora_alpha"]), seed
            )

    config = peft_trainer.TrainingConfig(**tunix_training_options(plan, total_steps, every))
    optimizer = run_optimizer(plan)
    trainer = peft_trainer.PeftTrainer(model, optimizer, config)
    trainer = trainer.with_gen_model_input_fn(lambda x: model_inputs(x, tokenizer.pad_id))
    evaluated = eval_batches(eval_examples, batch_size, ladder) if eval_examples else []
    eval_set = [to_input(b) for b in evaluated] or None
    if evaluated:
        trainer.eval_loss_fn = eval_loss_fn(evaluated)
    seen: dict[str, float] = {}
    report_step = step_reporter(total_steps, seen)
    # Compiling from here (and, when resuming, restoring the checkpoint of that step).
    emit(PROGRESS_PREFIX, {"step": resumed_from, "total_steps": total_steps})
    # Tokens the training actually sees, step by step (padding not counted), and the padded
    # lengths this process compiles for; the batches are reproducible from the seed, so count
    # them without keeping them (a resumed run skips the batches before its checkpoint unseen).
    step_tokens: list[int] = []
    padded_tokens = 0
    train_lengths: set[int] = set()
    for batch in itertools.islice(
        train_batches(train_examples, batch_size, total_steps, seed, ladder), resumed_from, None
    ):
        step_tokens.append(sum(len(e.tokens) for e in batch))
        train_lengths.add(padded_length(batch, ladder))
        padded_tokens += len(batch) * padded_length(batch, ladder)
    real_tokens = sum(step_tokens)
    throughput = Throughput(step_tokens, first_step=resumed_from)
    evaluating_since: list[float] = []  # when the running evaluation's first batch started

    class Report(quiet_hooks()):  # type: ignore[misc]
        def on_train_step_end(self, tunix_trainer: Any, step: int, loss: Any) -> None:
            batch_loss = float(np.mean(np.asarray(loss)))  # waits for the step to finish
            extra = {"tokens_per_second": throughput.report(int(step))}
            rate = current_learning_rate(tunix_trainer)
            if rate is not None:
                extra["learning_rate"] = rate
            report_step(int(step), batch_loss, **extra)

        def on_eval_step_start(self, _trainer: Any) -> None:
            if not evaluating_since:
                evaluating_since.append(time.monotonic())

        def on_eval_step_end(self, tunix_trainer: Any, eval_loss: Any) -> None:
            # Tunix hands over the sum over the evaluation batches (see eval_loss_fn).
            assert eval_set is not None
            seen["eval_loss"] = float(np.asarray(eval_loss)) / len(eval_set)
            throughput.pause(time.monotonic() - evaluating_since.pop())
            emit(
                PROGRESS_PREFIX,
                {
                    "step": int(tunix_trainer.train_steps),
                    "total_steps": total_steps,
                    "eval_loss": seen["eval_loss"],
                },
            )

    trainer.with_training_hooks(Report())
    eval_shapes = {(len(b), padded_length(b, ladder)) for b in evaluated}
    compiled_shapes = len(train_lengths) + len(eval_shapes)
    print(
        f"padded lengths {ladder}: training uses {sorted(train_lengths)}, evaluation "
        f"{sorted(length for _, length in eval_shapes)} ({compiled_shapes} compilations); "
        f"{real_tokens} of {padded_tokens} training tokens are real",
        flush=True,
    )
    started = time.monotonic()
    throughput.start()
    with mesh:
        trainer.train(
            (
                to_input(b)
                for b in train_batches(train_examples, batch_size, total_steps, seed, ladder)
            ),
            eval_set,
        )
    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "steps": int(trainer.train_steps),
        "train_loss": seen.get("train_loss"),
        "eval_loss": seen.get("eval_loss"),
        "tokens_per_second": round(real_tokens / wall, 1),
        "wall_seconds": round(wall, 3),
        "compiled_shapes": compiled_shapes,
    }
    # Generation eval, after the training's own time is taken: it is not training throughput.
    # An error here fails the run like any trainer error (the checkpoints are written by now).
    items = held_out_items(eval_rows, tokenizer, int(hyper["eval_max_items"]))
    if items:
        result |= generation_eval(
            trainer.model,
            tokenizer,
            items,
            hyper=hyper,
            mesh=mesh,
            total_steps=total_steps,
            output_dir=plan.output_dir,
        )
    return {k: v for k, v in result.items() if v is not None}


def quiet_output() -> None:
    """What a child process (trainer, export, sample) prints is its run's: no progress bars,
    and none of the deprecation warnings Tunix triggers on every step."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    # Tunix's trainer reads the mesh from `with mesh:`, which JAX now reports as deprecated on
    # every use.
    warnings.filterwarnings("ignore", message=r".*`with mesh:` context manager")
    # Likewise Tunix's sampler, for models that bring no KV cache of their own (Llama 3).
    warnings.filterwarnings("ignore", message=r"Using deprecated _init_cache")


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        out("usage: python -m runs.trainer CONFIG.json")
        return EXIT_REFUSED
    quiet_output()
    try:
        plan = read_plan(Path(args[0]))
        plan.checkpoints.mkdir(parents=True, exist_ok=True)
        plan.metrics.mkdir(parents=True, exist_ok=True)
        from runs import algorithms

        subdir = algorithms.ALGORITHMS[plan.algorithm].checkpoint_subdir
        resumed_from = seed_from_earlier_attempt(plan, subdir)
        result = train(plan, resumed_from=resumed_from or 0)
    except TrainerError as exc:
        emit(ERROR_PREFIX, {"reason": exc.reason, "message": exc.message})
        return EXIT_REFUSED
    emit(RESULT_PREFIX, result)
    return 0


if __name__ == "__main__":
    # Run as the imported module, not as __main__: the algorithms' modules import
    # runs.trainer, and its TrainerError must be the class main() catches.
    from runs import trainer

    sys.exit(trainer.main())
