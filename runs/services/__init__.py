"""Every write Tunix RT makes, by sub-domain; the only place a run's status changes.

| module | what it writes |
| --- | --- |
| errors | (nothing: what services refuse with) |
| datasets | dataset registration |
| submission | RunRequest validation, idempotent replays, run rows with their queue tasks |
| queue | a run's queue task, in the caller's transaction |
| status | the status machine: claim, heartbeat, finish, terminal hooks |
| execution | executing a claimed run through its backend (runs/execution/), sync runs |
| recovery | re-queue, cancel, the reaper, releasing jobs left on a cluster, worker heartbeats |
| webhooks | webhook events, attempts and retries |
| exports | a finished training's checkpoint as a Hugging Face directory, written by a worker |
| samples | try-it completions of a finished training or a registered version, by a worker |
| worker_tasks | what exports and samples share: the claim, the child's result line, the row's end |
| registry | the model registry: exports promoted to numbered versions, aliases and their moves |
| sweeps | hyperparameter sweeps: trials asked of Optuna, submitted as runs, pruned, ended |
| telemetry | timed writes and this process's metrics row |

Callers import from here (``from runs import services``); the modules import each other
directly.
"""

from runs.outcomes import RunOutcome
from runs.services.datasets import dataset_import, dataset_path
from runs.services.errors import (
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    IllegalTransition,
    NotFound,
    ServiceError,
)
from runs.services.execution import (
    run_execute,
    run_spec,
    run_sync,
    run_worker_execute,
    worker_identity,
)
from runs.services.exports import EXPORT_FUNC, export_execute, export_files, export_request
from runs.services.queue import TASK_FUNC, enqueue_run, task_queue, task_timeout_seconds
from runs.services.recovery import (
    ReapReport,
    run_cancel,
    run_reap,
    run_release,
    run_requeue,
    worker_heartbeat,
    worker_heartbeat_prune,
)
from runs.services.registry import (
    registry_alias_delete,
    registry_alias_set,
    registry_model_delete,
    registry_model_update,
    registry_promote,
    registry_version_delete,
    registry_version_in_use,
)
from runs.services.samples import SAMPLE_FUNC, sample_execute, sample_request
from runs.services.status import (
    ALLOWED_TRANSITIONS,
    TERMINAL_HOOKS,
    run_claim,
    run_finish,
    run_heartbeat,
)
from runs.services.submission import RunRequest, Submission, request_fingerprint, run_submit
from runs.services.sweeps import (
    SweepRequest,
    sweep_advance,
    sweep_cancel,
    sweep_create,
    sweep_reconcile,
    sweep_trial_report,
)
from runs.services.webhooks import (
    DELIVER_FUNC,
    record_run_event,
    run_event_payload,
    webhook_deliver,
    webhook_endpoint_enable,
    webhook_schedule,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DELIVER_FUNC",
    "EXPORT_FUNC",
    "SAMPLE_FUNC",
    "TASK_FUNC",
    "TERMINAL_HOOKS",
    "Conflict",
    "Forbidden",
    "IdempotencyMismatch",
    "IllegalTransition",
    "NotFound",
    "ReapReport",
    "RunOutcome",
    "RunRequest",
    "ServiceError",
    "Submission",
    "SweepRequest",
    "dataset_import",
    "dataset_path",
    "enqueue_run",
    "export_execute",
    "export_files",
    "export_request",
    "record_run_event",
    "registry_alias_delete",
    "registry_alias_set",
    "registry_model_delete",
    "registry_model_update",
    "registry_promote",
    "registry_version_delete",
    "registry_version_in_use",
    "request_fingerprint",
    "run_cancel",
    "run_claim",
    "run_event_payload",
    "run_execute",
    "run_finish",
    "run_heartbeat",
    "run_reap",
    "run_release",
    "run_requeue",
    "run_spec",
    "run_submit",
    "run_sync",
    "run_worker_execute",
    "sample_execute",
    "sample_request",
    "sweep_advance",
    "sweep_cancel",
    "sweep_create",
    "sweep_reconcile",
    "sweep_trial_report",
    "task_queue",
    "task_timeout_seconds",
    "webhook_deliver",
    "webhook_endpoint_enable",
    "webhook_schedule",
    "worker_heartbeat",
    "worker_heartbeat_prune",
    "worker_identity",
]
