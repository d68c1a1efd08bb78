"""A finished run's checkpoint as a Hugging Face model directory: ``python -m runs.export CONFIG``.

CONFIG is a small JSON file, every path absolute::

    {"run_dir": "/…/artifacts/<run id>", "step": 16, "lora_format": "merged", "output": "/…/new"}

``step`` null exports the newest complete checkpoint of the newest attempt that has one.
``lora_format`` is "merged" (the adapters folded into the weights) or "adapter" (PEFT's LoRA
files); it means something for LoRA runs only: a full fine-tune always exports every weight.
The directory appears whole or not at all: it is written as a hidden sibling (``.tmp-…``, which
the artifact listing skips) and renamed into place. What it holds:

    model.safetensors           every weight, Hugging Face's names and layouts (full, merged)
    config.json                 the base checkpoint's; for the tiny preset a LlamaForCausalLM one
    tokenizer files             the base checkpoint's; for the tiny preset's byte tokenizer,
                                tunix_rt_tokenizer.json saying how Tunix RT rebuilds it
    adapter_model.safetensors   (adapter) the LoRA pairs, PEFT's names and orientation
    adapter_config.json         (adapter) PEFT's LoRA config
    base/                       (adapter of the tiny preset) its random-initialised base model,
                                which exists nowhere else, in the layout above
    export.json                 the manifest: run, attempt, step, files with sizes and sha256,
                                and the sha256 of the whole export (see export_digest)

It reports on stdout like the trainer (runs/progress.py), one line:

    TUNIX_RESULT {"step": 16, "attempt": 1, "weights": "merged", "files": [...], "bytes": ...,
                  "sha256": "...", "seconds": 3.1, "output": "/…/new"}
    TUNIX_ERROR {"reason": "config_invalid", "message": "..."}   (then exit code 2)

Llama 3 (which the tiny preset is) is written here, its names and layouts the inverse of Tunix's
loader (tunix/models/llama3/params.py), since Tunix 0.1.7 has no saver for it; Gemma 3 and
Qwen 3 LoRA runs merge through Tunix's own savers; anything else is refused.

No Django: the worker runs this as a child process on the host that holds the run's directory.
JAX, Orbax and Tunix are imported only once the request has been checked, so a refusal takes
milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs import model_catalog, trainer
from runs.dryrun import CONFIG_FILE_NAME
from runs.outcomes import Reason
from runs.progress import ERROR_PREFIX, RESULT_PREFIX
from runs.trainer import EXIT_REFUSED, TMP_PREFIX, TrainerError, emit

MERGED, ADAPTER = "merged", "adapter"
LORA_FORMATS = (MERGED, ADAPTER)
FULL = "full"  # what a full fine-tune exports, whatever lora_format says
MANIFEST_FILE = "export.json"
MANIFEST_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
TOKENIZER_MARKER = "tunix_rt_tokenizer.json"
BASE_DIR = "base"
# Files of a base checkpoint directory that are weights, in any framework: an export writes its
# own and copies the rest (config, tokenizer, generation config, licence).
WEIGHT_SUFFIXES = (".safetensors", ".index.json", ".bin", ".pt", ".pth", ".h5", ".msgpack")
# Tunix 0.1.7's Llama 3 attention calls apply_rope without the config's rope_theta, so every
# Llama 3 it trains or runs rotates with that function's default. The tiny preset's config.json
# states it, so that Hugging Face's Llama computes what Tunix computed.
TUNIX_LLAMA3_ROPE_THETA = 1_000_000
# Families this module maps itself, and those whose LoRA runs Tunix's own saver merges.
OWN_FAMILIES = frozenset({"tiny", "llama3"})
SAVER_MODULES = {"gemma3": "tunix.models.gemma3.params", "qwen3": "tunix.models.qwen3.params"}
LORA_A, LORA_B = "_lora_a", "_lora_b"  # qwix's suffixes on the adapted weight's name

# Tunix's Llama 3 parameter paths to Hugging Face's names: the inverse of the loader's mapping.
# ``split`` counts the leading axes of the Tunix array that are the layer's input: Hugging Face
# keeps a projection as one [out, in] matrix, Tunix as [in axes..., out axes...] (q_proj is
# [embed, heads, head_dim], o_proj [heads, head_dim, embed]); None keeps the array as it is.
LLAMA3_NAMES: tuple[tuple[re.Pattern[str], str, int | None], ...] = (
    (re.compile(r"embedder\.input_embedding"), "model.embed_tokens.weight", None),
    (
        re.compile(r"layers\.(\d+)\.attn\.([qkv])_proj\.w"),
        r"model.layers.\1.self_attn.\2_proj.weight",
        1,
    ),
    (re.compile(r"layers\.(\d+)\.attn\.o_proj\.w"), r"model.layers.\1.self_attn.o_proj.weight", 2),
    (
        re.compile(r"layers\.(\d+)\.mlp\.(gate|up|down)_proj\.kernel"),
        r"model.layers.\1.mlp.\2_proj.weight",
        1,
    ),
    (
        re.compile(r"layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.w"),
        r"model.layers.\1.\2.weight",
        None,
    ),
    (re.compile(r"final_norm\.w"), "model.norm.weight", None),
    (re.compile(r"lm_head\.w"), "lm_head.weight", 1),
)


# --------------------------------------------------------------------------- checkpoints


# The checkpoint layout is the trainer's (it writes and resumes from it).
Checkpoint = trainer.Checkpoint
find_checkpoints = trainer.find_checkpoints


def choose_checkpoint(found: Sequence[Checkpoint], step: int | None, run_id: str) -> Checkpoint:
    """The checkpoint of ``step`` (of the newest attempt that has it; a resumed attempt starts
    from a copy of the one before's), or, for None, the newest of the newest attempt."""
    if not found:
        raise TrainerError(Reason.CONFIG_INVALID, f"run {run_id} has no complete checkpoint")
    if step is None:
        newest = max(c.attempt for c in found)
        return max(c for c in found if c.attempt == newest)
    matching = [c for c in found if c.step == step]
    if not matching:
        steps = ", ".join(str(s) for s in sorted({c.step for c in found}))
        raise TrainerError(
            Reason.CONFIG_INVALID,
            f"run {run_id} has no checkpoint of step {step}; it has checkpoints of steps {steps}",
        )
    return max(matching)


def flatten(tree: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """A nested parameter dict as {"layers.0.attn.q_proj.w": array}: Tunix's paths, without
    the trailing "value" of an nnx Variable."""
    if not isinstance(tree, Mapping):
        return {".".join(path[:-1] if path[-1:] == ("value",) else path): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, (*path, str(key)))
    return flat


def restore_params(checkpoint: Checkpoint) -> dict[str, Any]:
    """The parameters a checkpoint holds, exactly as Tunix's PeftTrainer saved them: every
    weight, or for a LoRA run only the adapters (it saves ``nnx.state(model, nnx.LoRAParam)``
    then), as NumPy arrays on the host. Restored without a model to restore into: a full
    fine-tune's export needs none, and host arrays need no device layout matching the one the
    training had."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    directory = checkpoint.path / "model_params"
    saved = ocp.PyTreeCheckpointHandler().metadata(directory).tree  # what each leaf is
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(
            directory, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    return {path: np.asarray(array) for path, array in flatten(restored).items()}


# --------------------------------------------------------------------------- Llama 3 mapping


def llama3_name(path: str) -> tuple[str, int | None]:
    """Hugging Face's name of a Tunix Llama 3 parameter, and its ``split`` (LLAMA3_NAMES)."""
    for pattern, template, split in LLAMA3_NAMES:
        match = pattern.fullmatch(path)
        if match:
            return match.expand(template), split
    raise ValueError(f"no Hugging Face name for the Tunix Llama 3 parameter {path!r}")


def as_hf_matrix(array: Any, split: int) -> Any:
    """A Tunix [in axes..., out axes...] array as Hugging Face's [out, in] matrix."""
    import numpy as np

    rows = math.prod(array.shape[:split])
    return np.ascontiguousarray(array.reshape(rows, -1).T)


def llama3_to_hf(params: dict[str, Any]) -> dict[str, Any]:
    """Tunix Llama 3 weights under Hugging Face's names, in its layouts."""
    import numpy as np

    tensors = {}
    for path, array in params.items():
        name, split = llama3_name(path)
        tensors[name] = np.ascontiguousarray(array) if split is None else as_hf_matrix(array, split)
    return tensors


@dataclass(frozen=True)
class Adapter:
    """One LoRA pair in PEFT's terms: the weight changes by ``b @ a * alpha / rank``."""

    module: str  # Hugging Face's module name, e.g. model.layers.0.self_attn.q_proj
    a: Any  # PEFT's lora_A: [rank, in]
    b: Any  # PEFT's lora_B: [out, rank]


def llama3_adapters(params: dict[str, Any], rank: int) -> list[Adapter]:
    """A LoRA checkpoint's pairs in PEFT's orientation. qwix keeps ``w_lora_a`` as [in axes...,
    rank] and ``w_lora_b`` as [rank, out axes...], and adds ``x @ a @ b * alpha / rank``."""
    import numpy as np

    pairs: dict[str, dict[str, Any]] = {}
    for path, array in params.items():
        suffix = next((s for s in (LORA_A, LORA_B) if path.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"{path!r} in a LoRA run's checkpoint is not an adapter")
        pairs.setdefault(path.removesuffix(suffix), {})[suffix] = array
    adapters = []
    for weight, pair in sorted(pairs.items()):
        a, b = pair[LORA_A], pair[LORA_B]
        if a.shape[-1] != rank or b.shape[0] != rank:
            raise ValueError(f"{weight}: adapters {a.shape} and {b.shape} are not of rank {rank}")
        name, _ = llama3_name(weight)
        adapters.append(
            Adapter(
                module=name.removesuffix(".weight"),
                a=np.ascontiguousarray(a.reshape(-1, rank).T),
                b=np.ascontiguousarray(b.reshape(rank, -1).T),
            )
        )
    return adapters


def merge(base: dict[str, Any], adapters: Sequence[Adapter], scale: float) -> dict[str, Any]:
    """Hugging Face weights with the adapters folded in, computed in float32 and stored in the
    base weight's dtype."""
    import numpy as np

    merged = dict(base)
    for adapter in adapters:
        key = f"{adapter.module}.weight"
        weight = merged[key]
        delta = adapter.b.astype(np.float32) @ adapter.a.astype(np.float32) * scale
        merged[key] = (weight.astype(np.float32) + delta).astype(weight.dtype)
    return merged


def peft_files(
    adapters: Sequence[Adapter], rank: int, alpha: float, base_model: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_model.safetensors' tensors, adapter_config.json) as PEFT saves a LoRA model."""
    tensors = {}
    for adapter in adapters:
        tensors[f"base_model.model.{adapter.module}.lora_A.weight"] = adapter.a
        tensors[f"base_model.model.{adapter.module}.lora_B.weight"] = adapter.b
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted({a.module.rsplit(".", 1)[-1] for a in adapters}),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,  # the scale is alpha / r, as qwix's
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    return tensors, config


def llama3_hf_config(config: Any, dtype: str, max_positions: int) -> dict[str, Any]:
    """A LlamaForCausalLM config.json for a Tunix Llama 3 ModelConfig (the tiny preset's)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "rope_theta": TUNIX_LLAMA3_ROPE_THETA,
        "rope_scaling": None,
        "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": bool(config.weight_tying),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "max_position_embeddings": max_positions,
        "bos_token_id": trainer.BOS,
        "eos_token_id": trainer.EOS,
        "pad_token_id": trainer.PAD,
        "torch_dtype": dtype,
    }


def llama3_model_config(hf: dict[str, Any]) -> Any:
    """Tunix's Llama 3 ModelConfig for a Hugging Face config.json (the tiny preset is not one
    of Tunix's named configs). rope_theta is kept for the record: Tunix 0.1.7 ignores it."""
    from tunix.models.llama3 import model as llama3

    heads = int(hf["num_attention_heads"])
    return llama3.ModelConfig(
        num_layers=int(hf["num_hidden_layers"]),
        vocab_size=int(hf["vocab_size"]),
        embed_dim=int(hf["hidden_size"]),
        hidden_dim=int(hf["intermediate_size"]),
        num_heads=heads,
        head_dim=int(hf.get("head_dim") or int(hf["hidden_size"]) // heads),
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        rope_theta=int(hf.get("rope_theta", TUNIX_LLAMA3_ROPE_THETA)),
        norm_eps=float(hf["rms_norm_eps"]),
        weight_tying=bool(hf.get("tie_word_embeddings", False)),
    )


# --------------------------------------------------------------------------- writing


def save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy, for bf16 checkpoints
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # PyTorch's metadata: transformers refuses safetensors files without a known format.
    save_file(tensors, str(path), metadata={"format": "pt"})


def load_tensors(directory: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint directory's safetensors files (one, or shards)."""
    import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy, for bf16 checkpoints
    from safetensors.numpy import load_file

    tensors: dict[str, Any] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors |= load_file(str(path))
    return tensors


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def copy_base_files(base: Path, target: Path, *, skip: Sequence[str] = ()) -> None:
    """The base checkpoint directory's files other than its weights: config, tokenizer,
    generation config, licence (subdirectories such as Meta's ``original/`` are left out)."""
    for path in sorted(base.iterdir()):
        if (
            path.is_file()
            and not path.name.startswith(".")
            and not path.name.endswith(WEIGHT_SUFFIXES)
            and path.name not in skip
        ):
            shutil.copyfile(path, target / path.name)


def write_byte_tokenizer(directory: Path) -> None:
    """How Tunix RT rebuilds the tiny preset's tokenizer (runs/trainer.py ByteTokenizer)."""
    write_json(
        directory / TOKENIZER_MARKER,
        {
            "type": "bytes",
            "byte_offset": trainer.BYTE_OFFSET,
            "pad_id": trainer.PAD,
            "bos_id": trainer.BOS,
            "eos_id": trainer.EOS,
        },
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(directory: Path) -> list[dict[str, Any]]:
    """Every file below ``directory`` (the manifest aside), by relative name, sorted: its
    size and sha256."""
    files = []
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != MANIFEST_FILE:
            files.append({"name": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return files


def export_digest(files: Sequence[dict[str, Any]]) -> str:
    """The export's content address: sha256 of one ``<name>\\t<sha256>\\n`` line per file, in
    name order. The manifest is not a file of it, so equal weights give an equal digest."""
    lines = "".join(f"{f['name']}\t{f['sha256']}\n" for f in sorted(files, key=lambda f: f["name"]))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file and directory below ``directory`` to disk before the rename that
    publishes it: a crash then leaves the whole export or none of it."""
    for path in [*sorted(directory.rglob("*")), directory]:
        fsync_path(path)


# --------------------------------------------------------------------------- the export


def tunix_version() -> str | None:
    try:
        return importlib.metadata.version("google-tunix")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_supported(family: str, weights: str) -> None:
    if family in OWN_FAMILIES or (family in SAVER_MODULES and weights == MERGED):
        return
    what = {FULL: "a full fine-tune", MERGED: "merged LoRA weights", ADAPTER: "LoRA adapters"}
    raise TrainerError(
        Reason.CONFIG_INVALID,
        f"cannot export {what[weights]} of a {family} model: Tunix RT writes Llama 3 (and the "
        "tiny preset) itself, and Tunix's own savers write merged LoRA runs of Gemma 3 and "
        "Qwen 3 only",
    )


def base_checkpoint(plan: trainer.Plan) -> Path:
    """A real model's base checkpoint directory, which every export of it needs (its config
    and tokenizer, and for merged weights the weights the adapters change)."""
    directory = plan.checkpoint_dir
    if directory is None:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id}: the run's config names no base checkpoint directory",
        )
    missing = model_catalog.missing_checkpoint_files(directory)
    if missing:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE,
            f"{plan.model.id}: the base checkpoint directory {directory} lacks "
            f"{', '.join(missing)}; an export of the run needs it where the run trained",
        )
    return directory


def require_runtime() -> None:
    for module in ("tunix", "orbax.checkpoint", "safetensors"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise TrainerError(
                Reason.RUNTIME_MISSING,
                f"exporting a checkpoint needs {module}, which this worker lacks "
                "(make install-tunix)",
            )


@contextlib.contextmanager
def tunix_mesh() -> Iterator[Any]:
    """A one-device mesh, entered as the trainer enters its own: Tunix's model code reads the
    mesh from ``with mesh:``, which JAX reports as deprecated on every use (the trainer's main
    silences it likewise; here also for callers that import this module, such as tests)."""
    from tunix.utils import mesh as mesh_lib

    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`with mesh:` context manager")
        with mesh:
            yield mesh


def tiny_base(plan: trainer.Plan, *, weights: bool) -> tuple[dict[str, Any], Any]:
    """The tiny preset's base weights (Tunix paths; none unless ``weights``) and ModelConfig,
    rebuilt as the trainer built them: random, from the run's seed. Without the weights the
    model is only traced, not initialised (seconds saved: the random init compiles)."""
    import numpy as np
    from flax import nnx

    seed = int(plan.hyper["seed"])
    with tunix_mesh() as mesh:
        if not weights:
            abstract = nnx.eval_shape(lambda: trainer.build_model(plan, None, mesh, seed)[0])
            return {}, abstract.config
        model, _ = trainer.build_model(plan, None, mesh, seed)
    params = flatten(nnx.state(model, nnx.Param).to_pure_dict())
    return {path: np.asarray(array) for path, array in params.items()}, model.config


def write_llama3(
    plan: trainer.Plan, checkpoint: Checkpoint, base: Path | None, weights: str, staging: Path
) -> None:
    """The tiny preset or a Llama 3 checkpoint, mapped by this module."""
    rank, alpha = int(plan.hyper["lora_rank"]), float(plan.hyper["lora_alpha"])
    params = restore_params(checkpoint)
    if base is None:  # the tiny preset: its base weights and config come from the seed
        tiny_params, tiny_config = tiny_base(plan, weights=weights != FULL)
        base_weights = llama3_to_hf(tiny_params)
    else:
        base_weights = load_tensors(base) if weights == MERGED else {}

    def write_model(directory: Path, tensors: dict[str, Any]) -> None:
        save_tensors(directory / WEIGHTS_FILE, tensors)
        if base is None:
            dtype = str(next(iter(tensors.values())).dtype)
            max_positions = int(plan.hyper["max_seq_length"])
            write_json(directory / CONFIG_FILE, llama3_hf_config(tiny_config, dtype, max_positions))
            write_byte_tokenizer(directory)
        else:
            copy_base_files(base, directory)

    if weights == FULL:
        write_model(staging, llama3_to_hf(params))
        return
    adapters = llama3_adapters(params, rank)
    if weights == MERGED:
        write_model(staging, merge(base_weights, adapters, alpha / rank))
        return
    tensors, config = peft_files(adapters, rank, alpha, plan.model.id)
    save_tensors(staging / ADAPTER_WEIGHTS_FILE, tensors)
    write_json(staging / ADAPTER_CONFIG_FILE, config)
    if base is None:
        write_byte_tokenizer(staging)
        write_model(staging / BASE_DIR, base_weights)
    else:  # the tokenizer; a config.json would make the directory look like a whole model
        copy_base_files(base, staging, skip=(CONFIG_FILE,))


def restore_model(plan: trainer.Plan, checkpoint: Checkpoint, base: Path | None) -> Any:
    """The trained model as Tunix restores it to resume: built as the trainer built it (with
    its LoRA adapters for a LoRA run), then Tunix's CheckpointManager restores the saved
    parameters into it."""
    from tunix.sft import checkpoint_manager

    seed, rank = int(plan.hyper["seed"]), int(plan.hyper["lora_rank"])
    manager = checkpoint_manager.CheckpointManager(str(checkpoint.path.parent))
    try:
        with tunix_mesh() as mesh:
            model, _ = trainer.build_model(plan, base, mesh, seed)
            if rank > 0:
                model = trainer.with_lora(
                    model, plan.model.family, rank, float(plan.hyper["lora_alpha"]), seed
                )
            manager.maybe_restore(model, step=checkpoint.step, restore_only_lora_params=rank > 0)
    finally:
        manager.close()
    return model


def write_with_tunix_saver(
    plan: trainer.Plan, checkpoint: Checkpoint, base: Path, staging: Path
) -> None:
    """A Gemma 3 or Qwen 3 LoRA run merged by Tunix's own saver, which folds the adapters
    into the base checkpoint's model.safetensors and copies its other files."""
    if not (base / WEIGHTS_FILE).is_file():
        raise TrainerError(
            Reason.CONFIG_INVALID,
            f"Tunix's saver merges into one {WEIGHTS_FILE}; {base} holds its weights in shards",
        )
    saver = importlib.import_module(SAVER_MODULES[plan.model.family])
    model = restore_model(plan, checkpoint, base)
    saver.save_lora_merged_model_as_safetensors(
        str(base),
        str(staging),
        model,
        int(plan.hyper["lora_rank"]),
        float(plan.hyper["lora_alpha"]),
    )


def export_run(
    run_dir: Path, output: Path, *, step: int | None = None, lora_format: str = MERGED
) -> dict[str, Any]:
    """Export the run in ``run_dir`` (its tunix_config.json and checkpoints/) at ``step`` (None:
    the newest) to the new directory ``output``, and return its manifest (export.json).
    Raises TrainerError for an export it refuses, before anything is written."""
    if lora_format not in LORA_FORMATS:
        raise TrainerError(
            Reason.CONFIG_INVALID, f"lora_format must be one of {', '.join(LORA_FORMATS)}"
        )
    if not run_dir.is_absolute() or not output.is_absolute():
        raise TrainerError(Reason.CONFIG_INVALID, "run_dir and output must be absolute paths")
    if output.exists() or output.is_symlink():
        raise TrainerError(
            Reason.CONFIG_INVALID, f"{output} already exists: an export never replaces one"
        )
    plan = trainer.read_plan(run_dir / CONFIG_FILE_NAME)
    rank = int(plan.hyper["lora_rank"])
    weights = lora_format if rank > 0 else FULL
    check_supported(plan.model.family, weights)
    from runs import algorithms

    subdir = algorithms.ALGORITHMS[plan.algorithm].checkpoint_subdir
    checkpoint = choose_checkpoint(find_checkpoints(run_dir, subdir), step, plan.run_id)
    base = None if plan.model.is_preset else base_checkpoint(plan)
    require_runtime()

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f"{TMP_PREFIX}{output.name}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        if plan.model.family in OWN_FAMILIES:
            write_llama3(plan, checkpoint, base, weights, staging)
        else:
            assert base is not None  # only real models have Tunix savers
            write_with_tunix_saver(plan, checkpoint, base, staging)
        files = describe_files(staging)
        manifest = {
            "version": MANIFEST_VERSION,
            "run_id": plan.run_id,
            "model_id": plan.model.id,
            "family": plan.model.family,
            "algorithm": plan.algorithm,
            "attempt": checkpoint.attempt,
            "step": checkpoint.step,
            "weights": weights,
            "lora_format": lora_format if rank > 0 else None,
            "lora_rank": rank or None,
            "lora_alpha": float(plan.hyper["lora_alpha"]) if rank > 0 else None,
            "tunix_version": tunix_version(),
            "files": files,
            "bytes": sum(f["bytes"] for f in files),
            "sha256": export_digest(files),
        }
        write_json(staging / MANIFEST_FILE, manifest)
        fsync_tree(staging)
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_path(output.parent)  # the rename itself
    return manifest


# --------------------------------------------------------------------------- loading back


def load_export(directory: Path) -> Any:
    """A full or merged export loaded back through Tunix's own safetensors loader for its
    family, its ModelConfig built from config.json. Llama 3 (model_type "llama") only."""
    hf = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if hf.get("model_type") != "llama":
        raise ValueError(
            f"{directory}: loading model_type {hf.get('model_type')!r} back is not done"
        )
    if not (directory / WEIGHTS_FILE).is_file():
        raise ValueError(f"{directory} holds no {WEIGHTS_FILE} (an adapter export?)")
    from tunix.models.llama3 import params as llama3_params

    return llama3_params.create_model_from_safe_tensors(str(directory), llama3_model_config(hf))


def model_logits(model: Any, tokens: Sequence[Sequence[int]]) -> Any:
    """The model's logits [batch, length, vocab] (float32 NumPy) on unpadded ``tokens``,
    each position seeing itself and those before it."""
    import jax.numpy as jnp
    import numpy as np

    ids = jnp.asarray(tokens, dtype=jnp.int32)
    batch, length = ids.shape
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    causal = jnp.broadcast_to(
        jnp.tril(jnp.ones((length, length), dtype=bool)), (batch, length, length)
    )
    logits, _ = model(ids, positions, None, causal)
    return np.asarray(logits, dtype=np.float32)


def export_logits(directory: Path, tokens: Sequence[Sequence[int]]) -> Any:
    """What the registry checks an export by: its logits on ``tokens``, loaded through Tunix."""
    return model_logits(load_export(directory), tokens)


def restored_model(run_dir: Path, step: int | None = None) -> Any:
    """The run's trained model at ``step`` (None: the newest), as Tunix restores it."""
    plan = trainer.read_plan(run_dir / CONFIG_FILE_NAME)
    from runs import algorithms

    subdir = algorithms.ALGORITHMS[plan.algorithm].checkpoint_subdir
    checkpoint = choose_checkpoint(find_checkpoints(run_dir, subdir), step, plan.run_id)
    base = None if plan.model.is_preset else base_checkpoint(plan)
    return restore_model(plan, checkpoint, base)


# --------------------------------------------------------------------------- the process


@dataclass(frozen=True)
class ExportRequest:
    run_dir: Path
    output: Path
    step: int | None
    lora_format: str


def read_request(path: Path) -> ExportRequest:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(
            Reason.CONFIG_INVALID, f"cannot read export config {path}: {exc}"
        ) from exc
    if not isinstance(spec, dict):
        raise TrainerError(Reason.CONFIG_INVALID, "the export config must be a JSON object")
    paths = {}
    for key in ("run_dir", "output"):
        value = spec.get(key)
        if not isinstance(value, str) or not Path(value).is_absolute():
            raise TrainerError(Reason.CONFIG_INVALID, f"{key} must be an absolute path")
        paths[key] = Path(value)
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise TrainerError(Reason.CONFIG_INVALID, "step must be a step number or null")
    lora_format = spec.get("lora_format", MERGED)
    if lora_format not in LORA_FORMATS:
        raise TrainerError(
            Reason.CONFIG_INVALID, f"lora_format must be one of {', '.join(LORA_FORMATS)}"
        )
    return ExportRequest(paths["run_dir"], paths["output"], step, lora_format)


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        out("usage: python -m runs.export CONFIG.json")
        return EXIT_REFUSED
    trainer.quiet_output()
    started = time.monotonic()
    try:
        request = read_request(Path(args[0]))
        manifest = export_run(
            request.run_dir, request.output, step=request.step, lora_format=request.lora_format
        )
    except TrainerError as exc:
        emit(ERROR_PREFIX, {"reason": exc.reason, "message": exc.message})
        return EXIT_REFUSED
    emit(
        RESULT_PREFIX,
        {
            "step": manifest["step"],
            "attempt": manifest["attempt"],
            "weights": manifest["weights"],
            "files": [f["name"] for f in manifest["files"]],
            "bytes": manifest["bytes"],
            "sha256": manifest["sha256"],
            "seconds": round(time.monotonic() - started, 3),
            "output": str(request.output),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
