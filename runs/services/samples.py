"""Try-it samples: a prompt completed by a finished training's checkpoint or a registered version.

A request is checked here (who asks, the prompt and the generation's limits, the run's
checkpoint) and becomes a sample row with its queue task in one transaction; a worker with the
training stack then runs ``python -m runs.sample`` as a child process (JAX stays out of the
worker, as for training and exports) and records the completion and how long it took. Each user
has at most MAX_ACTIVE_PER_USER samples waiting or running, so the queue cannot be flooded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from runs import artifacts, authorization, executor, selectors
from runs import export as export_format
from runs import sample as sample_process
from runs.execution import get_backend, local
from runs.models import (
    ExportStatus,
    ExportWeights,
    ModelVersion,
    RunStatus,
    Sample,
    SampleStatus,
    TunixRun,
)
from runs.outcomes import Reason, known_reason
from runs.services import worker_tasks
from runs.services.errors import Conflict, Forbidden, NotFound, ServiceError

log = logging.getLogger("tunix_rt.runs")

SAMPLE_FUNC = "runs.tasks.sample_run"
CONFIG_PREFIX = ".tmp-sample-"  # hidden from the artifact listing (runs/artifacts.py)
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_TEMPERATURE = 0.0
MAX_TEMPERATURE = sample_process.MAX_TEMPERATURE
MAX_SEED = 2**31 - 1
MAX_ACTIVE_PER_USER = 4
ACTIVE = (SampleStatus.PENDING, SampleStatus.RUNNING)
COMPILE_CACHE_MAX_BYTES = 2 * 1024**3  # JAX drops the least recently used entries beyond it
LOST_AFTER_SECONDS = 60  # past the timeout and the kill grace: its worker is gone
# The child's result line carries the whole completion: room for the longest one, escaped.
OUTPUT_MAX_BYTES = 256 * 1024
RUNTIME_MISSING_MESSAGE = (
    "sampling needs the Tunix runtime (JAX and google-tunix) on the worker host, and it is not "
    "installed here; run the worker where the training stack is (make install-tunix)"
)


def sample_timeout_seconds() -> int:
    return int(settings.TUNIX_SAMPLE_TIMEOUT_SECONDS)


def _check_prompt(prompt: Any) -> str:
    limit = int(settings.TUNIX_SAMPLE_MAX_PROMPT_CHARS)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ServiceError("prompt must not be empty", field="prompt")
    if len(prompt) > limit:
        raise ServiceError(
            f"prompt is {len(prompt)} characters; the limit is {limit}", field="prompt"
        )
    if "\x00" in prompt:
        raise ServiceError("prompt must not contain NUL characters", field="prompt")
    return prompt


def _check_tokens(max_new_tokens: Any) -> int:
    limit = int(settings.TUNIX_SAMPLE_MAX_NEW_TOKENS)
    if max_new_tokens is None:
        return min(DEFAULT_MAX_NEW_TOKENS, limit)
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= limit
    ):
        raise ServiceError(
            f"max_new_tokens must be an integer from 1 to {limit}", field="max_new_tokens"
        )
    return int(max_new_tokens)


def _check_temperature(temperature: Any) -> float:
    if temperature is None:
        return DEFAULT_TEMPERATURE
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= MAX_TEMPERATURE  # NaN fails both comparisons
    ):
        raise ServiceError(
            f"temperature must be a number from 0 to {MAX_TEMPERATURE:g} (0: greedy)",
            field="temperature",
        )
    return float(temperature)


def _check_seed(seed: Any, temperature: float) -> int:
    if seed is None:
        # Greedy decoding draws nothing; a sampled one gets its own seed, recorded so that it
        # can be asked for again.
        return 0 if temperature == 0 else secrets.randbelow(MAX_SEED + 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ServiceError(f"seed must be an integer from 0 to {MAX_SEED}", field="seed")
    return int(seed)


def _run_step(run: TunixRun, step: Any) -> int:
    """The checkpoint step to sample: ``step`` if the run has it, else its newest."""
    if run.status != RunStatus.COMPLETED or not get_backend(run.mode).trains:
        what = f"a {run.mode} run" if not get_backend(run.mode).trains else f"a {run.status} run"
        raise Conflict(f"only a completed training can be sampled; this is {what}")
    steps = artifacts.checkpoint_steps(run)
    if not steps:
        raise Conflict(f"run {run.id} has no complete checkpoint to sample")
    if step is None:
        return steps[-1]
    if step not in steps:
        listed = ", ".join(str(s) for s in steps)
        raise ServiceError(f"no checkpoint at step {step}; this run has {listed}", field="step")
    return int(step)


def _version_step(version: ModelVersion, step: Any) -> int:
    if step is not None and step != version.step:
        raise ServiceError(
            f"a registered version is sampled at its own step ({version.step})", field="step"
        )
    if version.export.status != ExportStatus.COMPLETED:
        raise Conflict(f"version {version} has no completed export to sample")
    return version.step


def sample_request(
    *,
    user: authorization.UserLike,
    run_id: UUID | str | None = None,
    version: ModelVersion | None = None,
    prompt: str,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    step: int | None = None,
    seed: int | None = None,
) -> Sample:
    """A sample of ``run_id``'s checkpoint at ``step`` (its newest when None) or of
    ``version``, queued on a worker with the training stack. Nothing is written when it is
    refused."""
    if (run_id is None) == (version is None):
        raise TypeError("sample_request takes either run_id or version")
    run: TunixRun | None = None
    if run_id is not None:
        run = selectors.run_get(run_id=run_id, owner=authorization.visible_owner(user))
        if run is None:
            raise NotFound(f"no run {run_id}")
    if not authorization.can_launch(user):
        raise Forbidden("sampling needs the runs.add_tunixrun permission")
    text = _check_prompt(prompt)
    tokens = _check_tokens(max_new_tokens)
    heat = _check_temperature(temperature)
    chosen_seed = _check_seed(seed, heat)
    if run is not None:
        chosen_step = _run_step(run, step)
    else:
        assert version is not None  # one of the two, checked above
        chosen_step = _version_step(version, step)
    owner = authorization.real_user(user)
    with transaction.atomic():
        if owner is not None:
            _refuse_a_flood(owner)
        sample = Sample.objects.create(
            run=run,
            version=version,
            step=chosen_step,
            prompt=text,
            max_new_tokens=tokens,
            temperature=heat,
            seed=chosen_seed,
            created_by=owner,
        )
        _enqueue(sample)
    return sample


def _refuse_a_flood(owner: User) -> None:
    """At most MAX_ACTIVE_PER_USER samples of one user waiting or running. The user's row is
    locked first, so two requests at once cannot both take the last place (PostgreSQL; SQLite
    writes one transaction at a time anyway)."""
    User.objects.select_for_update().filter(pk=owner.pk).exists()
    # A sample running far past its timeout lost its worker: it is over, and holds no place.
    now = timezone.now()
    lost = now - timedelta(
        seconds=sample_timeout_seconds() + settings.TUNIX_KILL_GRACE_SECONDS + LOST_AFTER_SECONDS
    )
    Sample.objects.filter(
        created_by=owner, status=SampleStatus.RUNNING, started_at__lt=lost
    ).update(
        status=SampleStatus.FAILED,
        error_reason=Reason.WORKER_LOST,
        error_message="the worker running this sample stopped before it finished",
        completed_at=now,
    )
    active = Sample.objects.filter(created_by=owner, status__in=ACTIVE).count()
    if active >= MAX_ACTIVE_PER_USER:
        raise Conflict(
            f"you have {active} samples waiting or running; the limit is "
            f"{MAX_ACTIVE_PER_USER}: ask again when one has finished"
        )


def _enqueue(sample: Sample) -> None:
    worker_tasks.enqueue(
        SAMPLE_FUNC, sample.id, name="sample", timeout_seconds=sample_timeout_seconds()
    )


def _claim(sample_id: UUID) -> Sample | None:
    return worker_tasks.claim(
        Sample,
        sample_id,
        timeout_seconds=sample_timeout_seconds(),
        related=("run", "version__export__run"),
    )


def _fail(sample: Sample, reason: str, message: str) -> str:
    log.info("sample_failed sample_id=%s reason=%s", sample.id, reason)
    return worker_tasks.fail(sample, reason, message)


def _weights(sample: Sample) -> tuple[Path, dict[str, Any]]:
    """(the run directory the child runs in, where its weights are): the run's checkpoint, or
    the version's export when it is a whole Llama 3 model Tunix loads back. An adapter export,
    or another family's, is sampled from the checkpoint it was exported from."""
    if sample.run is not None:
        run_dir = artifacts.run_directory(sample.run)
        return run_dir, {"run_dir": str(run_dir), "step": sample.step}
    version = sample.version
    assert version is not None  # the row's constraint: one of the two
    run_dir = artifacts.run_directory(version.export.run)
    export_dir = run_dir / version.export.directory
    if version.weights != ExportWeights.ADAPTER and _loadable_export(export_dir):
        return run_dir, {"export_dir": str(export_dir)}
    return run_dir, {"run_dir": str(run_dir), "step": version.step}


def _loadable_export(directory: Path) -> bool:
    try:
        config = json.loads((directory / export_format.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and config.get("model_type") == "llama"
        and (directory / export_format.WEIGHTS_FILE).is_file()
    )


def sample_environment() -> dict[str, str]:
    """The training process's environment, with JAX's persistent compilation cache on (unless
    the worker's environment sets it otherwise): the second sample of a model and shape reads
    what the first compiled, seconds less on a CPU."""
    env = local.trainer_environment()
    cache = settings.TUNIX_SAMPLE_COMPILE_CACHE_DIR
    if cache:
        env.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
        # Every program, not only those that took a second to compile: loading the tiny preset
        # is many small ones.
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        if importlib.util.find_spec("filelock") is not None:  # JAX's eviction needs it
            env.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILE_CACHE_MAX_BYTES))
    return env


def sample_execute(*, sample_id: UUID) -> str:
    """Generate the sample (a worker's queue task); safe to deliver more than once (the claim
    decides). Returns the status it ended in, or "skipped"."""
    sample = _claim(sample_id)
    if sample is None:
        return "skipped"
    if not local.tunix_runtime_available():
        return _fail(sample, Reason.RUNTIME_MISSING, RUNTIME_MISSING_MESSAGE)
    run_dir, weights = _weights(sample)
    if not run_dir.is_dir():
        return _fail(
            sample,
            Reason.MODEL_UNAVAILABLE,
            f"the run's directory {run_dir} is not on this worker host",
        )
    config = run_dir / f"{CONFIG_PREFIX}{sample.id}.json"
    config.write_text(
        json.dumps(
            {
                **weights,
                "prompt": sample.prompt,
                "max_new_tokens": sample.max_new_tokens,
                "temperature": sample.temperature,
                "seed": sample.seed,
            }
        ),
        encoding="utf-8",
    )
    try:
        result = executor.execute(
            [sys.executable, "-m", "runs.sample", str(config)],
            cwd=run_dir,
            env=sample_environment(),
            timeout_seconds=sample_timeout_seconds(),
            max_output_bytes=max(OUTPUT_MAX_BYTES, settings.TUNIX_OUTPUT_MAX_BYTES),
            kill_grace_seconds=settings.TUNIX_KILL_GRACE_SECONDS,
        )
    finally:
        config.unlink(missing_ok=True)
    summary, error = worker_tasks.child_report(result.stdout)
    if result.timed_out:
        return _fail(sample, Reason.TIMEOUT, f"the sample took over {sample_timeout_seconds()} s")
    if result.exit_code == 0 and summary is not None and "completion" in summary:
        load, compile_ = _seconds(summary, "load_seconds"), _seconds(summary, "compile_seconds")
        generate = _seconds(summary, "generate_seconds")
        # The row has two columns: the model's cost (loading and compiling) and the sample's.
        worker_tasks.finish(
            sample,
            status=SampleStatus.COMPLETED,
            completion=str(summary["completion"]).replace("\x00", "\ufffd"),
            load_seconds=round(load + compile_, 3),
            generate_seconds=generate,
        )
        log.info(
            "sample_completed sample_id=%s load_seconds=%.3f compile_seconds=%.3f "
            "generate_seconds=%.3f process_seconds=%.3f new_tokens=%s weights=%s",
            sample.id,
            load,
            compile_,
            generate,
            result.duration_seconds,
            summary.get("new_tokens"),
            "export" if "export_dir" in weights else "checkpoint",
        )
        return SampleStatus.COMPLETED
    if error is not None:
        reason = error[0] if known_reason(error[0]) else Reason.NONZERO_EXIT
        return _fail(sample, reason, error[1])
    tail = (result.stderr or result.stdout)[-2000:]
    return _fail(sample, Reason.NONZERO_EXIT, f"exit code {result.exit_code}: {tail}")


def _seconds(summary: dict[str, Any], key: str) -> float:
    try:
        return max(0.0, float(summary.get(key) or 0.0))
    except (TypeError, ValueError):
        return 0.0
