"""The models local mode can train: one tiny preset for demos and CI, and the Tunix-supported
Gemma 3, Llama 3 and Qwen 2.5 / Qwen 3 checkpoints.

No Django and no JAX imports: the web host checks a submitted model id here (it has no Tunix
installed), and the trainer reads the same table on the worker host. A test keeps the real
models in step with Tunix's own registry (``tunix.models.registry``) where Tunix is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TINY_MODEL_ID = "tunix-rt/tiny-llama3"
TINY_FAMILY = "tiny"
DEFAULT_LEARNING_RATE = 2e-5  # pretrained weights: small steps
TINY_LEARNING_RATE = 3e-3  # random weights learn nothing visible at 2e-5
# Files a checkpoint directory must hold for the safetensors loader and the tokenizer.
CHECKPOINT_FILE_PATTERNS = ("*.safetensors", "config.json")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    family: str  # tiny | gemma3 | llama3 | qwen2 | qwen3
    description: str

    @property
    def is_preset(self) -> bool:
        return self.family == TINY_FAMILY

    @property
    def learning_rate(self) -> float:
        return TINY_LEARNING_RATE if self.is_preset else DEFAULT_LEARNING_RATE


def _entries(family: str, description: str, *ids: str) -> tuple[ModelEntry, ...]:
    return tuple(ModelEntry(model_id, family, description) for model_id in ids)


CATALOG: dict[str, ModelEntry] = {
    entry.id: entry
    for entry in (
        ModelEntry(
            TINY_MODEL_ID,
            TINY_FAMILY,
            "random-initialised 2-layer Llama 3 with a byte tokenizer; trains on CPU in seconds",
        ),
        *_entries(
            "gemma3",
            "Gemma 3",
            "google/gemma-3-270m",
            "google/gemma-3-270m-it",
            "google/gemma-3-1b-pt",
            "google/gemma-3-1b-it",
            "google/gemma-3-4b-pt",
            "google/gemma-3-4b-it",
            "google/gemma-3-12b-pt",
            "google/gemma-3-12b-it",
            "google/gemma-3-27b-pt",
            "google/gemma-3-27b-it",
        ),
        *_entries(
            "llama3",
            "Llama 3",
            "meta-llama/Llama-3.2-1B",
            "meta-llama/Llama-3.2-1B-Instruct",
            "meta-llama/Llama-3.2-3B",
            "meta-llama/Llama-3.2-3B-Instruct",
            "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-70B",
        ),
        *_entries(
            "qwen2",
            "Qwen 2.5",
            "Qwen/Qwen2.5-0.5B",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "Qwen/Qwen2.5-1.5B",
            "Qwen/Qwen2.5-1.5B-Instruct",
            "Qwen/Qwen2.5-3B",
            "Qwen/Qwen2.5-3B-Instruct",
            "Qwen/Qwen2.5-7B",
            "Qwen/Qwen2.5-7B-Instruct",
            "Qwen/Qwen2.5-Coder-0.5B",
            "Qwen/Qwen2.5-Math-1.5B",
        ),
        *_entries(
            "qwen3",
            "Qwen 3",
            "Qwen/Qwen3-0.6B",
            "Qwen/Qwen3-0.6B-Base",
            "Qwen/Qwen3-1.7B",
            "Qwen/Qwen3-1.7B-Base",
            "Qwen/Qwen3-4B",
            "Qwen/Qwen3-4B-Base",
            "Qwen/Qwen3-8B",
            "Qwen/Qwen3-8B-Base",
            "Qwen/Qwen3-14B",
            "Qwen/Qwen3-14B-Base",
        ),
    )
}


def lookup(model_id: str) -> ModelEntry | None:
    return CATALOG.get(model_id)


def default_learning_rate(model_id: str) -> float:
    entry = lookup(model_id)
    return entry.learning_rate if entry is not None else DEFAULT_LEARNING_RATE


def family_learning_rate(family: str | None) -> float:
    """The default for weights of ``family`` trained further: a tiny preset's weights were
    trained at the preset's rate and keep it."""
    return TINY_LEARNING_RATE if family == TINY_FAMILY else DEFAULT_LEARNING_RATE


FAMILIES = frozenset(entry.family for entry in CATALOG.values())


def unknown_model_message(model_id: str) -> str:
    return (
        f"unknown model {model_id!r}: local training supports {TINY_MODEL_ID} (tiny preset) "
        "and the Gemma 3, Llama 3, Qwen 2.5 and Qwen 3 checkpoints listed at GET /api/tunix/models"
    )


def checkpoint_directory(models_dir: Path, model_id: str) -> Path:
    """Where a worker host keeps ``model_id``'s checkpoint: ``<models_dir>/<org>/<name>``.
    Catalog ids are fixed strings, so the result stays below ``models_dir``."""
    if lookup(model_id) is None:
        raise ValueError(unknown_model_message(model_id))
    return models_dir.joinpath(*model_id.split("/"))


def missing_checkpoint_message(model_id: str, directory: Path, missing: list[str]) -> str:
    return (
        f"{model_id}: checkpoint directory {directory} lacks {', '.join(missing)} (put the "
        "Hugging Face safetensors checkpoint there, or allow downloads on the worker hosts with "
        "TUNIX_MODEL_DOWNLOAD=1)"
    )


def missing_checkpoint_files(directory: Path) -> list[str]:
    """The required checkpoint files ``directory`` lacks (all of them if it does not exist)."""
    return [
        pattern
        for pattern in CHECKPOINT_FILE_PATTERNS
        if not directory.is_dir() or not any(directory.glob(pattern))
    ]
