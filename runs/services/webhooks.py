"""Webhook deliveries (Standard Webhooks): one event per terminal transition and endpoint,
written in the transition's transaction, then attempted by a queue task with retries."""

from __future__ import annotations

import json
import logging
import random
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from runs import metrics
from runs import webhooks as webhook_client
from runs.models import (
    DeliveryStatus,
    Sweep,
    TunixRun,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpointState,
    duration_seconds,
)
from runs.services.telemetry import timed_write

log = logging.getLogger("tunix_rt.runs")

DELIVER_FUNC = "runs.tasks.deliver_webhook"


def _absolute(path: str) -> str:
    return f"{settings.TUNIX_PUBLIC_URL.rstrip('/')}{path}"


def run_event_payload(run: TunixRun) -> dict[str, Any]:
    def seconds(start: Any, end: Any) -> float | None:
        elapsed = duration_seconds(start, end)
        return None if elapsed is None else round(elapsed, 3)

    return {
        "type": f"run.{run.status}",
        "timestamp": timezone.now().isoformat(),
        "data": {
            "run_id": str(run.id),
            "status": run.status,
            "exit_code": run.exit_code,
            "error_reason": run.error_reason,
            "mode": run.mode,
            "algorithm": run.algorithm,
            "resources": run.resources or None,
            "dataset_key": run.dataset.key,
            "model_id": run.model_id,
            "attempt": run.attempt,
            "queued_at": run.queued_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "completed_at": run.completed_at.isoformat() if run.completed_at else None,
            "durations": {
                "queued_seconds": seconds(run.queued_at, run.started_at or run.completed_at),
                "run_seconds": seconds(run.started_at, run.completed_at),
                "total_seconds": seconds(run.queued_at, run.completed_at),
            },
            "links": {
                "run": _absolute(reverse("api:run-detail", kwargs={"run_id": run.id})),
                "status": _absolute(reverse("api:run-status", kwargs={"run_id": run.id})),
                "page": _absolute(reverse("web:run-detail", kwargs={"run_id": run.id})),
            },
        },
    }


def _enqueue_delivery(delivery: WebhookDelivery) -> None:
    from django_q.tasks import async_task

    async_task(
        DELIVER_FUNC,
        str(delivery.id),
        task_name=f"webhook-{delivery.id}",
        timeout=settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS + 60,
        ack_failure=True,
    )


def record_run_event(run_id: UUID) -> None:
    """A terminal-transition hook: one delivery per configured endpoint, queued at once."""
    if not settings.TUNIX_WEBHOOK_URLS:
        return
    run = TunixRun.objects.select_related("dataset").get(id=run_id)
    payload = run_event_payload(run)
    for url in settings.TUNIX_WEBHOOK_URLS:
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    run=run, event_type=payload["type"], endpoint=url, payload=payload
                )
        except IntegrityError:
            continue  # this event exists already: one event per transition
        _enqueue_delivery(delivery)


def sweep_event_payload(sweep: Sweep, *, best_value: float | None) -> dict[str, Any]:
    best = sweep.best_run_id
    return {
        "type": f"sweep.{sweep.status}",
        "timestamp": timezone.now().isoformat(),
        "data": {
            "sweep_id": str(sweep.id),
            "status": sweep.status,
            "metric": sweep.metric,
            "direction": sweep.direction,
            "n_trials": sweep.n_trials,
            "best_run_id": str(best) if best else None,
            "best_value": best_value,
            "created_at": sweep.created_at.isoformat(),
            "completed_at": sweep.completed_at.isoformat() if sweep.completed_at else None,
            "links": {
                "sweep": _absolute(reverse("api:sweep-detail", kwargs={"sweep_id": sweep.id})),
                "best_run": (
                    _absolute(reverse("api:run-detail", kwargs={"run_id": best})) if best else None
                ),
            },
        },
    }


def record_sweep_event(sweep: Sweep, *, best_value: float | None) -> None:
    """sweep.completed: one delivery per configured endpoint, in the transaction that ended the
    sweep (the unique (sweep, event type, endpoint) keeps it at one)."""
    if not settings.TUNIX_WEBHOOK_URLS:
        return
    payload = sweep_event_payload(sweep, best_value=best_value)
    for url in settings.TUNIX_WEBHOOK_URLS:
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    sweep=sweep, event_type=payload["type"], endpoint=url, payload=payload
                )
        except IntegrityError:
            continue
        _enqueue_delivery(delivery)


def _backoff_seconds(attempts: int, retry_after: float | None) -> float:
    base = settings.TUNIX_WEBHOOK_BACKOFF_SECONDS * (2 ** (attempts - 1))
    delay = min(base, settings.TUNIX_WEBHOOK_BACKOFF_MAX_SECONDS)
    delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter spreads retries out
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.TUNIX_WEBHOOK_BACKOFF_MAX_SECONDS))
    return delay


def webhook_deliver(*, delivery_id: UUID) -> str:
    """One attempt for a queued delivery; records it and decides what comes next."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(id=delivery_id, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.DELIVERING, updated_at=now
    )
    if not claimed:
        return "skipped"
    delivery = WebhookDelivery.objects.get(id=delivery_id)
    if WebhookEndpointState.objects.filter(
        url=delivery.endpoint, disabled_at__isnull=False
    ).exists():
        WebhookDelivery.objects.filter(id=delivery.id).update(
            status=DeliveryStatus.DISABLED, updated_at=now, completed_at=now
        )
        return DeliveryStatus.DISABLED
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
    headers = webhook_client.signed_headers(
        secret=settings.TUNIX_WEBHOOK_SECRET, message_id=delivery.message_id, body=body, now=now
    )
    result = webhook_client.post(
        url=delivery.endpoint,
        body=body,
        headers=headers,
        timeout=settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS,
        allow_private=settings.TUNIX_WEBHOOK_ALLOW_PRIVATE,
    )
    number = delivery.attempts + 1
    done = timezone.now()
    fields: dict[str, Any] = {
        "attempts": number,
        "last_status_code": result.status_code,
        "last_error": result.error[:2000],
        "updated_at": done,
    }
    if result.delivered:
        fields.update(status=DeliveryStatus.SUCCEEDED, completed_at=done)
    elif result.status_code == 410:
        fields.update(status=DeliveryStatus.DISABLED, completed_at=done)
    elif number >= settings.TUNIX_WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=DeliveryStatus.FAILED, completed_at=done)
    else:
        delay = _backoff_seconds(number, result.retry_after_seconds)
        fields.update(
            status=DeliveryStatus.PENDING, next_attempt_at=done + timedelta(seconds=delay)
        )
    with timed_write("webhook_attempt"):
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            attempted_at=now,
            status_code=result.status_code,
            latency_ms=round(result.latency_ms, 3),
            error=result.error[:2000],
        )
        WebhookDelivery.objects.filter(id=delivery.id, status=DeliveryStatus.DELIVERING).update(
            **fields
        )
        if result.status_code == 410:
            WebhookEndpointState.objects.update_or_create(
                url=delivery.endpoint,
                defaults={"disabled_at": done, "reason": "endpoint answered 410 Gone"},
            )
    metrics.WEBHOOK_ATTEMPTS.labels(str(fields["status"])).inc()
    log.info(
        "webhook_attempt",
        extra={
            "fields": {
                "delivery": delivery.message_id,
                "run_id": delivery.run_id,
                "sweep_id": delivery.sweep_id,
                "attempt": number,
                "status_code": result.status_code,
                "ms": round(result.latency_ms, 1),
                "outcome": fields["status"],
            }
        },
    )
    return str(fields["status"])


def webhook_schedule(*, batch: int = 100) -> int:
    """Queue deliveries whose retry is due; put back ones whose worker vanished mid-attempt."""
    now = timezone.now()
    stuck_before = now - timedelta(seconds=settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS + 120)
    WebhookDelivery.objects.filter(
        status__in=[DeliveryStatus.QUEUED, DeliveryStatus.DELIVERING], updated_at__lt=stuck_before
    ).update(status=DeliveryStatus.PENDING, next_attempt_at=now, updated_at=now)
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:batch]
    )
    queued = 0
    for delivery_id in due:
        with transaction.atomic():
            moved = WebhookDelivery.objects.filter(
                id=delivery_id, status=DeliveryStatus.PENDING
            ).update(status=DeliveryStatus.QUEUED, updated_at=now)
            if moved:
                _enqueue_delivery(WebhookDelivery.objects.get(id=delivery_id))
                queued += 1
    return queued


def webhook_endpoint_enable(*, url: str) -> None:
    """An operator re-enables an endpoint that answered 410."""
    WebhookEndpointState.objects.filter(url=url).update(disabled_at=None, reason="")
