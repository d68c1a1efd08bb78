"""How a run's execution can end: the words the trainer, the dry-run, the execution backends and
the database share. No Django: the trainer runs in a fresh interpreter on a worker host, and the
models build their choices and constraints from these values, so each is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Ending(StrEnum):
    """The terminal statuses an execution can report (models.RunStatus has the others)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Reason(StrEnum):
    """Why a run failed; stored in TunixRun.error_reason (models.FailureReason)."""

    NONE = ""
    DATASET_INVALID = "dataset_invalid"
    CONFIG_INVALID = "config_invalid"
    RUNTIME_MISSING = "runtime_missing"
    MODEL_UNAVAILABLE = "model_unavailable"
    NONZERO_EXIT = "nonzero_exit"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"
    # A sweep's pruner stopped the trial early (its run is cancelled, not failed).
    PRUNED = "pruned"
    # What runs the job (a Ray cluster) could not be reached, refused it, or lost it.
    BACKEND_UNAVAILABLE = "backend_unavailable"


REASON_LABELS: dict[Reason, str] = {
    Reason.NONE: "none",
    Reason.DATASET_INVALID: "dataset invalid",
    Reason.CONFIG_INVALID: "configuration invalid",
    Reason.RUNTIME_MISSING: "Tunix runtime missing",
    Reason.MODEL_UNAVAILABLE: "model unavailable",
    Reason.NONZERO_EXIT: "non-zero exit",
    Reason.TIMEOUT: "timeout",
    Reason.WORKER_LOST: "worker lost",
    Reason.INTERNAL_ERROR: "internal error",
    Reason.PRUNED: "pruned (early stopping)",
    Reason.BACKEND_UNAVAILABLE: "execution backend unavailable",
}


def known_reason(value: str) -> bool:
    """A reason a run may be failed with (a trainer may report anything)."""
    return value in Reason._value2member_map_ and value != Reason.NONE


@dataclass(frozen=True)
class RunOutcome:
    """What an execution ended in; services.run_finish records it on the run."""

    status: str  # an Ending
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    reason: str = ""  # a Reason when failed
    message: str = ""
    # A ProgressTracker snapshot (progress, loss_curve, metrics): the final word of a training.
    progress: dict[str, Any] | None = None

    @classmethod
    def failure(cls, reason: Reason, message: str, **fields: Any) -> RunOutcome:
        """A failed outcome whose stderr says why (what the run's page shows first)."""
        fields.setdefault("stderr", message + "\n")
        return cls(status=Ending.FAILED, reason=reason, message=message, **fields)
