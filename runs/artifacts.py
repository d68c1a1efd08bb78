"""A run's artifact files (its config, checkpoints, metrics): listed and served from below the
run's own directory, never from anywhere a request could point at."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from runs.models import TunixRun
from runs.paths import UnsafePathError, safe_join

MAX_LISTED = 1000
HIDDEN_PREFIX = ".tmp-"  # files being written atomically


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the run's directory, "/"-separated
    size_bytes: int
    modified_at: datetime


def run_directory(run: TunixRun) -> Path:
    return safe_join(Path(settings.TUNIX_ARTIFACTS_ROOT), run.output_dir)


def list_artifacts(run: TunixRun, limit: int = MAX_LISTED) -> tuple[list[Artifact], bool]:
    """Regular files below the run's directory, by path; True if more than ``limit`` exist.
    Symbolic links are neither listed nor followed."""
    root = run_directory(run)
    if not root.is_dir():
        return [], False
    found: list[Artifact] = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        subdirectories.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if name.startswith(HIDDEN_PREFIX) or path.is_symlink() or not path.is_file():
                continue
            if len(found) == limit:
                return found, True
            stat = path.stat()
            found.append(
                Artifact(
                    path=path.relative_to(root).as_posix(),
                    size_bytes=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                )
            )
    return found, False


def artifact_path(run: TunixRun, relative: str) -> Path:
    """The file ``relative`` names below the run's directory.

    Raises FileNotFoundError for anything that is not a regular file there: a missing file, a
    directory, a symbolic link, or a path that would leave the directory.
    """
    parts = relative.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise FileNotFoundError(relative)
    root = run_directory(run)
    try:
        path = safe_join(root, *parts)
    except UnsafePathError:
        raise FileNotFoundError(relative) from None
    unresolved = root.joinpath(*parts)
    if unresolved.is_symlink() or not path.is_file() or parts[-1].startswith(HIDDEN_PREFIX):
        raise FileNotFoundError(relative)
    return path


def checkpoint_steps(run: TunixRun) -> list[int]:
    """The steps of the run's complete checkpoints, in every attempt, ascending: what an export
    may be asked for (the trainer's layout; GRPO's under its algorithm's subdirectory)."""
    from runs import trainer
    from runs.algorithms import ALGORITHMS

    algorithm = ALGORITHMS.get(run.algorithm)
    subdir = algorithm.checkpoint_subdir if algorithm else ""
    return sorted({c.step for c in trainer.find_checkpoints(run_directory(run), subdir)})
