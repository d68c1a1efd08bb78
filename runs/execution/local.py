"""Local: the trainer as a child process group on the worker host that claimed the run."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from django.conf import settings

from runs import executor
from runs.execution.base import ExecutionBackend, RunSpec
from runs.execution.dryrun import check
from runs.outcomes import Ending, Reason, RunOutcome

RUNTIME_MISSING_MESSAGE = (
    "local mode needs the Tunix runtime on the worker host, and it is not installed here "
    "(install it with: pip install -r requirements-tunix.txt)"
)


def tunix_runtime_available() -> bool:
    return importlib.util.find_spec("tunix") is not None


def trainer_argv(config_path: Path) -> list[str]:
    """The configured trainer, or the project's Tunix trainer, with the run's config."""
    prefix = settings.TUNIX_TRAINER_COMMAND or [sys.executable, "-m", "runs.trainer"]
    return [*prefix, str(config_path)]


def trainer_environment() -> dict[str, str]:
    """The training process's environment: the worker's, with the project importable (the
    child runs in the run's directory) and the Hugging Face hub offline unless this worker
    host may download models."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(settings.BASE_DIR), env.get("PYTHONPATH", "")) if p
    )
    env.update(offline_environment())
    return env


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_environment() -> dict[str, str]:
    """The Hugging Face libraries kept offline, unless this deployment may download models."""
    return {} if settings.TUNIX_MODEL_DOWNLOAD else dict.fromkeys(OFFLINE_VARIABLES, "1")


class LocalBackend(ExecutionBackend):
    mode = "local"
    trains = True

    def prepare(self, run: RunSpec) -> RunOutcome | None:
        # Everything dry-run checks must hold before a real training starts.
        checked = check(run)
        if checked.status != Ending.COMPLETED:
            return checked
        if not settings.TUNIX_TRAINER_COMMAND and not tunix_runtime_available():
            return RunOutcome.failure(Reason.RUNTIME_MISSING, RUNTIME_MISSING_MESSAGE)
        return None

    def start(self, run: RunSpec) -> executor.Job:
        return executor.ProcessJob(
            trainer_argv(run.config_path), cwd=run.output_dir, env=trainer_environment()
        )
