"""Dry-run: every check a training makes before it trains, and the config it would use."""

from __future__ import annotations

from django.conf import settings

from runs.dryrun import dry_run
from runs.execution.base import ExecutionBackend, RunSpec
from runs.outcomes import Ending, Reason, RunOutcome


def check(run: RunSpec) -> RunOutcome:
    """Validate the dataset against the registry, re-check the hyperparameters and write the
    config file; completed with a summary, or failed saying why."""
    result = dry_run(
        spec=run.spec,
        expected_sha256=run.dataset_sha256,
        expected_records=run.dataset_records,
        max_bytes=settings.TUNIX_DATASET_MAX_BYTES,
        max_record_bytes=settings.TUNIX_DATASET_MAX_RECORD_BYTES,
        config_path=run.config_path,
    )
    if result.ok:
        return RunOutcome(Ending.COMPLETED, exit_code=0, stdout=result.summary)
    return RunOutcome.failure(Reason(result.reason), result.message, exit_code=1)


class DryRunBackend(ExecutionBackend):
    mode = "dry-run"

    def prepare(self, run: RunSpec) -> RunOutcome:
        return check(run)
