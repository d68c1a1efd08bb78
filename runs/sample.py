"""One prompt completed by a trained model: ``python -m runs.sample CONFIG``.

CONFIG is a small JSON file, every path absolute; the weights are either a run's checkpoint or
an export directory::

    {"run_dir": "/…/artifacts/<run id>", "step": 16,
     "prompt": "What is 2+2?", "max_new_tokens": 64, "temperature": 0.0, "seed": 0}
    {"export_dir": "/…/artifacts/<run id>/exports/16-merged", "prompt": …}

A run's checkpoint is restored as Tunix restores it to resume (runs/export.py
``restored_model``: the model built as the run built it, a LoRA run's adapters applied, the
saved parameters restored into it); ``step`` null takes the newest. An export directory is a
full or merged Llama 3 export (the tiny preset's included), loaded through Tunix's safetensors
loader (``load_export``); an adapter export holds no whole model, so the caller passes the
source run's checkpoint at the export's step instead. The tokenizer is the tiny preset's byte
tokenizer (an export marks it with tunix_rt_tokenizer.json) or the Hugging Face one next to the
weights.

Generation is the trainer's generation eval for one prompt (runs/trainer.py): Tunix's sampler,
the prompt framed as training framed it and cut to the run's ``max_seq_length`` (its start is
dropped), greedy at temperature 0, else sampling from the whole distribution at that
temperature (``top_p`` 1.0) with ``seed``.

It reports on stdout, one line (runs/progress.py):

    TUNIX_RESULT {"completion": "…", "prompt_tokens": 12, "prompt_cut": false,
                  "new_tokens": 40, "load_seconds": 6.1, "compile_seconds": 2.3,
                  "generate_seconds": 0.2}
    TUNIX_ERROR {"reason": "config_invalid", "message": "..."}   (then exit code 2)

The seconds, measured apart because the first two are the model's cost and the third the
sample's:

* ``load_seconds``: from the start of ``main`` until the model and its tokenizer are ready:
  importing JAX and Tunix, reading the weights, building the model (and the device work that
  takes, compilations of the model's initialisation included);
* ``compile_seconds``: the time JAX spent tracing, lowering and compiling during the sampler's
  call (the union of its own compile events' time spans): the first call's excess over a call
  whose programs are compiled already;
* ``generate_seconds``: the rest of that call: the prefill, the decode loop and the decoding of
  the tokens to text.

No Django: a worker runs this as a child process on the host that holds the run's directory.
JAX and Tunix are imported only once the request has been checked, so a refusal takes
milliseconds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs import export, trainer
from runs.dryrun import CONFIG_FILE_NAME
from runs.outcomes import Reason
from runs.progress import ERROR_PREFIX, RESULT_PREFIX
from runs.trainer import EXIT_REFUSED, TrainerError, emit

MAX_TEMPERATURE = 2.0
# The JAX events whose time spans are compilation, not execution (jax/_src/dispatch.py).
COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
# An export's config.json that states no context length (a hand-made one): long enough for any
# prompt the service lets through.
DEFAULT_MAX_POSITIONS = 8192


@dataclass(frozen=True)
class SampleRequest:
    prompt: str
    max_new_tokens: int
    temperature: float
    seed: int
    run_dir: Path | None = None  # a run's checkpoint …
    step: int | None = None
    export_dir: Path | None = None  # … or an export directory


@dataclass(frozen=True)
class Loaded:
    """A model ready to sample from: its tokenizer and the longest prompt it is given."""

    model: Any
    tokenizer: Any
    max_seq_length: int


# --------------------------------------------------------------------------- the request


def _absolute(spec: dict[str, Any], key: str) -> Path:
    value = spec.get(key)
    if not isinstance(value, str) or not Path(value).is_absolute():
        raise TrainerError(Reason.CONFIG_INVALID, f"{key} must be an absolute path")
    return Path(value)


def read_request(path: Path) -> SampleRequest:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(
            Reason.CONFIG_INVALID, f"cannot read sample config {path}: {exc}"
        ) from exc
    if not isinstance(spec, dict):
        raise TrainerError(Reason.CONFIG_INVALID, "the sample config must be a JSON object")
    if ("run_dir" in spec) == ("export_dir" in spec):
        raise TrainerError(Reason.CONFIG_INVALID, "give either run_dir or export_dir")
    prompt = spec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TrainerError(Reason.CONFIG_INVALID, "prompt must be a non-empty string")
    tokens = spec.get("max_new_tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise TrainerError(Reason.CONFIG_INVALID, "max_new_tokens must be an integer >= 1")
    temperature = spec.get("temperature", 0.0)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or not 0 <= temperature <= MAX_TEMPERATURE
    ):
        raise TrainerError(
            Reason.CONFIG_INVALID, f"temperature must be a number from 0 to {MAX_TEMPERATURE:g}"
        )
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainerError(Reason.CONFIG_INVALID, "seed must be an integer >= 0")
    common = {
        "prompt": prompt,
        "max_new_tokens": tokens,
        "temperature": float(temperature),
        "seed": seed,
    }
    if "export_dir" in spec:
        return SampleRequest(export_dir=_absolute(spec, "export_dir"), **common)
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise TrainerError(Reason.CONFIG_INVALID, "step must be a step number or null")
    return SampleRequest(run_dir=_absolute(spec, "run_dir"), step=step, **common)


def require_runtime() -> None:
    for module in ("jax", "tunix"):
        if importlib.util.find_spec(module) is None:
            raise TrainerError(
                Reason.RUNTIME_MISSING,
                f"sampling a trained model needs {module}, which this worker lacks "
                "(make install-tunix)",
            )


# --------------------------------------------------------------------------- loading


def load_run(run_dir: Path, step: int | None) -> Loaded:
    """A run's checkpoint at ``step`` (None: the newest) as Tunix restores it, LoRA adapters
    applied for a LoRA run, with the tokenizer the run trained with."""
    plan = trainer.read_plan(run_dir / CONFIG_FILE_NAME)
    if plan.model.is_preset:
        tokenizer: Any = trainer.ByteTokenizer()
    else:
        tokenizer = trainer.HubTokenizer(export.base_checkpoint(plan))
    model = export.restored_model(run_dir, step)
    return Loaded(model, tokenizer, int(plan.hyper["max_seq_length"]))


def export_tokenizer(directory: Path) -> Any:
    """The tiny preset's byte tokenizer where the export says so, else its Hugging Face one."""
    marker = directory / export.TOKENIZER_MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("type")
        except (OSError, ValueError, AttributeError) as exc:
            raise TrainerError(Reason.MODEL_UNAVAILABLE, f"cannot read {marker}: {exc}") from exc
        if kind != "bytes":
            raise TrainerError(
                Reason.MODEL_UNAVAILABLE, f"{marker} names an unknown tokenizer {kind!r}"
            )
        return trainer.ByteTokenizer()
    try:
        return trainer.HubTokenizer(directory)
    except (OSError, ValueError) as exc:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE, f"{directory} holds no tokenizer Tunix RT can load: {exc}"
        ) from exc


def load_export_dir(directory: Path) -> Loaded:
    """A full or merged Llama 3 export, through Tunix's safetensors loader."""
    if not directory.is_dir():
        raise TrainerError(Reason.MODEL_UNAVAILABLE, f"no export directory {directory}")
    if (directory / export.ADAPTER_WEIGHTS_FILE).is_file() and not (
        directory / export.WEIGHTS_FILE
    ).is_file():
        raise TrainerError(
            Reason.CONFIG_INVALID,
            f"{directory} is an adapter export, which holds no whole model: sample the run's "
            "checkpoint it was exported from",
        )
    try:
        hf = json.loads((directory / export.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE, f"cannot read {directory / export.CONFIG_FILE}: {exc}"
        ) from exc
    tokenizer = export_tokenizer(directory)
    try:
        model = export.load_export(directory)
    except ValueError as exc:
        raise TrainerError(Reason.CONFIG_INVALID, str(exc)) from exc
    except OSError as exc:
        raise TrainerError(
            Reason.MODEL_UNAVAILABLE, f"cannot load the export in {directory}: {exc}"
        ) from exc
    positions = int(hf.get("max_position_embeddings") or DEFAULT_MAX_POSITIONS)
    return Loaded(model, tokenizer, positions)


# --------------------------------------------------------------------------- generating


class CompileClock:
    """Seconds JAX spent compiling while the clock ran: the union of the time spans of its
    compile events (a trace nests the traces of the functions it calls; each second counts
    once)."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def _record(self, event: str, start: float, end: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            self.spans.append((start, end))

    @contextlib.contextmanager
    def running(self) -> Iterator[CompileClock]:
        import jax.monitoring

        jax.monitoring.register_event_time_span_listener(self._record)
        try:
            yield self
        finally:
            jax.monitoring.unregister_event_time_span_listener(self._record)

    @property
    def seconds(self) -> float:
        total, reached = 0.0, -math.inf
        for start, end in sorted(self.spans):
            if end > reached:
                total += end - max(start, reached)
                reached = end
        return total


def generate(
    loaded: Loaded, prompt: str, *, max_new_tokens: int, temperature: float, seed: int
) -> dict[str, Any]:
    """``prompt`` completed as the trainer's generation eval completes a held-out prompt,
    with the seconds of the sampler's call split into compiling and generating."""
    from tunix.generate import sampler as sampler_lib

    framed, cut = trainer.frame_prompt(loaded.tokenizer, prompt, loaded.max_seq_length)
    prompt_length, cache_size = trainer.generation_shape(
        [len(framed)], loaded.max_seq_length, max_new_tokens
    )
    config = loaded.model.config
    clock = CompileClock()
    started = time.monotonic()
    with clock.running(), export.tunix_mesh():
        sampler = sampler_lib.Sampler(
            loaded.model,
            trainer.SamplerTokenizer(loaded.tokenizer, prompt_length),
            sampler_lib.CacheConfig(
                cache_size=cache_size,
                num_layers=config.num_layers,
                num_kv_heads=config.num_kv_heads,
                head_dim=config.head_dim,
            ),
        )
        output = sampler(
            [prompt],
            max_generation_steps=max_new_tokens,
            max_prompt_length=prompt_length,
            echo=False,
            temperature=temperature,
            top_p=1.0 if temperature > 0 else None,
            seed=seed,
        )
    elapsed = time.monotonic() - started
    compiled = min(clock.seconds, elapsed)
    return {
        "completion": output.text[0],
        # prompt_length holds the framed prompt whole: the sampler frames it the same way.
        "prompt_tokens": len(framed),
        "prompt_cut": cut,
        "new_tokens": len(output.tokens[0]),
        "compile_seconds": round(compiled, 3),
        "generate_seconds": round(elapsed - compiled, 3),
    }


def sample(request: SampleRequest, *, started: float | None = None) -> dict[str, Any]:
    """Load the request's weights, complete its prompt, and say how long each part took."""
    started = time.monotonic() if started is None else started
    require_runtime()
    if request.export_dir is not None:
        loaded = load_export_dir(request.export_dir)
    else:
        assert request.run_dir is not None  # read_request gives one of the two
        loaded = load_run(request.run_dir, request.step)
    load_seconds = round(time.monotonic() - started, 3)
    result = generate(
        loaded,
        request.prompt,
        max_new_tokens=request.max_new_tokens,
        temperature=request.temperature,
        seed=request.seed,
    )
    return {**result, "load_seconds": load_seconds}


# --------------------------------------------------------------------------- the process


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        out("usage: python -m runs.sample CONFIG.json")
        return EXIT_REFUSED
    trainer.quiet_output()
    try:
        result = sample(read_request(Path(args[0])), started=started)
    except TrainerError as exc:
        emit(ERROR_PREFIX, {"reason": exc.reason, "message": exc.message})
        return EXIT_REFUSED
    emit(RESULT_PREFIX, result)
    return 0


if __name__ == "__main__":
    # As runs.trainer: the imported module's TrainerError is the class main() catches.
    from runs import sample as sample_module

    code = sample_module.main()
    # The answer is out: skip the interpreter's teardown, which for JAX, Orbax and Tunix takes
    # most of a second that the person waiting for the sample would otherwise wait too.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
