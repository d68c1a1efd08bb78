"""Execution backends by mode: how a run of each mode is executed and supervised.

Adding a mode is one module with an ``ExecutionBackend`` subclass (runs/execution/base.py) and
one line below; ``manage.py makemigrations`` then records the new value in the mode column's
constraint. This module imports nothing else, so the models can list the modes cheaply; a
backend's module is imported the first time a run of its mode executes.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runs.execution.base import ExecutionBackend

BACKENDS: dict[str, str] = {
    "dry-run": "runs.execution.dryrun.DryRunBackend",
    "local": "runs.execution.local.LocalBackend",
    "ray": "runs.execution.ray.RayBackend",
}
MODES: tuple[str, ...] = tuple(BACKENDS)


class UnknownMode(LookupError):
    def __init__(self, mode: str) -> None:
        super().__init__(f"unknown mode {mode!r}; known modes: {', '.join(MODES)}")
        self.mode = mode


@cache
def get_backend(mode: str) -> ExecutionBackend:
    """The backend that executes runs of ``mode``; UnknownMode for anything not registered."""
    try:
        path = BACKENDS[mode]
    except KeyError:
        raise UnknownMode(mode) from None
    module_name, _, class_name = path.rpartition(".")
    backend: ExecutionBackend = getattr(importlib.import_module(module_name), class_name)()
    if backend.mode != mode:
        raise LookupError(f"{path} is registered as {mode!r} but says it is {backend.mode!r}")
    return backend
