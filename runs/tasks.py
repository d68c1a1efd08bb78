"""django-q2 entry points: adapters from a queue message to a service call."""

from __future__ import annotations

from uuid import UUID

from runs import services, worker


def deliver_webhook(delivery_id: str) -> str:
    """Queue task for one webhook attempt."""
    return services.webhook_deliver(delivery_id=UUID(delivery_id))


def execute_run(run_id: str) -> str:
    """Queue task for one run; safe to deliver more than once (the claim decides)."""
    return services.run_worker_execute(run_id=UUID(run_id), drain_since=worker.drain_since)


def release_run(run_id: str) -> str:
    """Queue task: stop what an ended run left running on a cluster (idempotent)."""
    return services.run_release(run_id=UUID(run_id))


def export_run(export_id: str) -> str:
    """Queue task for one export; safe to deliver more than once (the claim decides)."""
    return services.export_execute(export_id=UUID(export_id))


def sample_run(sample_id: str) -> str:
    """Queue task for one try-it sample; safe to deliver more than once (the claim decides)."""
    return services.sample_execute(sample_id=UUID(sample_id))
