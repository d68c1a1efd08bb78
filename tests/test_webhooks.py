"""Completion webhooks, delivered to a real HTTP receiver on 127.0.0.1 (a private address these
tests allow, as an operator would with TUNIX_WEBHOOK_ALLOW_PRIVATE=1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from runs import services
from runs.models import (
    DeliveryStatus,
    RunStatus,
    TunixRun,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpointState,
)
from tests.factories import TunixRunFactory, submitted_run
from tests.support.clusters import wait_for
from tests.support.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as server:
        yield server


@pytest.fixture
def hooks(settings: Any, receiver: Receiver) -> Any:
    settings.TUNIX_WEBHOOK_SECRET = SECRET
    settings.TUNIX_WEBHOOK_ALLOW_PRIVATE = True
    settings.TUNIX_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.TUNIX_PUBLIC_URL = "https://tunix.example"

    def point_at(*paths: str) -> None:
        settings.TUNIX_WEBHOOK_URLS = [receiver.url(p) for p in paths]

    return point_at


def finish(run: TunixRun, status: str = RunStatus.COMPLETED) -> None:
    outcome = services.RunOutcome(
        status=status,
        exit_code=0 if status == RunStatus.COMPLETED else 1,
        reason="" if status == RunStatus.COMPLETED else "nonzero_exit",
    )
    assert services.run_finish(run_id=run.id, attempt=run.attempt, outcome=outcome)


def delivery_tasks() -> list[str]:
    return [
        SignedPackage.loads(p)["args"][0]
        for p in OrmQ.objects.values_list("payload", flat=True)
        if SignedPackage.loads(p)["func"] == services.DELIVER_FUNC
    ]


def attempt_now(delivery: WebhookDelivery) -> str:
    """What the retry loop does when the delivery is due: queue it, then the task runs."""
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
    assert services.webhook_schedule() == 1
    return services.webhook_deliver(delivery_id=delivery.id)


@pytest.mark.django_db
def test_terminal_transition_queues_a_signed_event_in_its_own_transaction(
    hooks: Any, receiver: Receiver
) -> None:
    hooks("/ok")
    run = TunixRunFactory(running=True)
    finish(run)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.QUEUED
    assert delivery_tasks() == [str(delivery.id)]
    assert services.webhook_deliver(delivery_id=delivery.id) == DeliveryStatus.SUCCEEDED
    [got] = receiver.on("/ok")
    assert got.verified  # checked by the receiver with the standardwebhooks library
    assert got.headers["webhook-id"] == delivery.message_id
    body = got.json()
    assert body["type"] == "run.completed"
    data = body["data"]
    assert (data["run_id"], data["status"], data["exit_code"]) == (str(run.id), "completed", 0)
    assert data["algorithm"] == "sft"
    assert data["resources"] is None  # it asked for nothing
    assert data["durations"]["run_seconds"] >= 0
    assert data["links"]["run"] == f"https://tunix.example/api/tunix/runs/{run.id}"
    attempt = WebhookAttempt.objects.get()
    assert (attempt.number, attempt.status_code) == (1, 200)
    assert attempt.latency_ms > 0


@pytest.mark.django_db
def test_every_terminal_status_sends_its_event(hooks: Any) -> None:
    hooks("/ok")
    failed, cancelled = TunixRunFactory(running=True), TunixRunFactory()
    finish(failed, RunStatus.FAILED)
    services.run_cancel(run_id=cancelled.id)
    types = set(WebhookDelivery.objects.values_list("event_type", flat=True))
    assert types == {"run.failed", "run.cancelled"}


@pytest.mark.django_db
def test_no_endpoint_no_delivery(settings: Any) -> None:
    settings.TUNIX_WEBHOOK_URLS = []
    finish(TunixRunFactory(running=True))
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_rolled_back_transition_sends_nothing(hooks: Any) -> None:
    hooks("/ok")
    run = TunixRunFactory(running=True)

    def finish_then_fail() -> None:
        with transaction.atomic():
            finish(run)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        finish_then_fail()
    assert not WebhookDelivery.objects.exists()
    assert delivery_tasks() == []


@pytest.mark.django_db
def test_server_errors_are_retried_with_backoff_and_the_same_id(
    hooks: Any, receiver: Receiver
) -> None:
    hooks("/flaky")
    run = TunixRunFactory(running=True)
    finish(run)
    delivery = WebhookDelivery.objects.get()
    before = timezone.now()
    assert services.webhook_deliver(delivery_id=delivery.id) == DeliveryStatus.PENDING
    delivery.refresh_from_db()
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at > before + timedelta(seconds=4)  # backoff, not a hot loop
    assert services.webhook_schedule() == 0  # not due yet
    assert attempt_now(delivery) == DeliveryStatus.PENDING
    assert attempt_now(delivery) == DeliveryStatus.SUCCEEDED
    ids = {r.headers["webhook-id"] for r in receiver.on("/flaky")}
    assert ids == {delivery.message_id}
    codes = list(WebhookAttempt.objects.values_list("status_code", flat=True))
    assert codes == [500, 500, 200]


@pytest.mark.django_db
def test_retry_after_is_honoured(hooks: Any) -> None:
    hooks("/busy")
    finish(TunixRunFactory(running=True))
    delivery = WebhookDelivery.objects.get()
    services.webhook_deliver(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at >= timezone.now() + timedelta(seconds=110)


@pytest.mark.django_db
def test_slow_and_down_receivers_are_recorded_as_errors(hooks: Any, receiver: Receiver) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    hooks("/slow")
    finish(TunixRunFactory(running=True))
    slow = WebhookDelivery.objects.get()
    assert services.webhook_deliver(delivery_id=slow.id) == DeliveryStatus.PENDING
    slow_attempt = WebhookAttempt.objects.get(delivery=slow)
    assert slow_attempt.status_code is None
    assert "timed out" in slow_attempt.error.lower()
    assert slow_attempt.latency_ms < 2900  # the 1 s timeout cut it short

    from django.conf import settings

    settings.TUNIX_WEBHOOK_URLS = [f"http://127.0.0.1:{closed_port}/hook"]
    finish(TunixRunFactory(running=True))
    down = WebhookDelivery.objects.exclude(id=slow.id).get()
    assert services.webhook_deliver(delivery_id=down.id) == DeliveryStatus.PENDING
    assert "refused" in WebhookAttempt.objects.get(delivery=down).error.lower()


@pytest.mark.django_db
def test_redirects_are_not_followed(hooks: Any, receiver: Receiver) -> None:
    hooks("/redirect")
    finish(TunixRunFactory(running=True))
    delivery = WebhookDelivery.objects.get()
    assert services.webhook_deliver(delivery_id=delivery.id) == DeliveryStatus.PENDING
    assert receiver.on("/ok") == []
    assert WebhookAttempt.objects.get().status_code == 302


@pytest.mark.django_db
def test_410_disables_the_endpoint(hooks: Any, receiver: Receiver) -> None:
    hooks("/gone")
    finish(TunixRunFactory(running=True))
    first = WebhookDelivery.objects.get()
    assert services.webhook_deliver(delivery_id=first.id) == DeliveryStatus.DISABLED
    assert WebhookEndpointState.objects.get(url=first.endpoint).disabled_at is not None
    finish(TunixRunFactory(running=True))
    second = WebhookDelivery.objects.exclude(id=first.id).get()
    assert services.webhook_deliver(delivery_id=second.id) == DeliveryStatus.DISABLED
    assert len(receiver.on("/gone")) == 1  # the disabled endpoint was not called again
    services.webhook_endpoint_enable(url=first.endpoint)
    assert WebhookEndpointState.objects.get(url=first.endpoint).disabled_at is None


@pytest.mark.django_db
def test_attempts_are_limited(hooks: Any, settings: Any) -> None:
    hooks("/fail")
    settings.TUNIX_WEBHOOK_MAX_ATTEMPTS = 3
    finish(TunixRunFactory(running=True))
    delivery = WebhookDelivery.objects.get()
    assert services.webhook_deliver(delivery_id=delivery.id) == DeliveryStatus.PENDING
    assert attempt_now(delivery) == DeliveryStatus.PENDING
    assert attempt_now(delivery) == DeliveryStatus.FAILED
    assert services.webhook_schedule() == 0


@pytest.mark.django_db
def test_a_delivery_lost_mid_attempt_is_tried_again(hooks: Any) -> None:
    hooks("/ok")
    finish(TunixRunFactory(running=True))
    delivery = WebhookDelivery.objects.get()
    long_ago = timezone.now() - timedelta(hours=1)
    WebhookDelivery.objects.filter(id=delivery.id).update(
        status=DeliveryStatus.DELIVERING, updated_at=long_ago
    )
    assert services.webhook_schedule() == 1
    assert services.webhook_deliver(delivery_id=delivery.id) == DeliveryStatus.SUCCEEDED


@pytest.mark.django_db
def test_one_event_per_transition_even_after_recovery(hooks: Any, settings: Any) -> None:
    hooks("/ok")
    stale = timezone.now() - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS + 5)
    run = TunixRunFactory(running=True, heartbeat_at=stale)
    services.run_reap()  # the worker was lost: back to pending, no event yet
    assert not WebhookDelivery.objects.exists()
    again = services.run_claim(run_id=run.id, worker_id="w2")
    assert again is not None
    finish(again)
    finish_again = services.RunOutcome(status=RunStatus.COMPLETED, exit_code=0)
    assert not services.run_finish(run_id=run.id, attempt=1, outcome=finish_again)  # stale
    assert WebhookDelivery.objects.count() == 1
    services.record_run_event(run.id)  # even a duplicate call adds nothing
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_run_finished_by_a_qcluster_is_delivered_by_the_queue(
    clusters: Any, receiver: Receiver, settings: Any
) -> None:
    run = submitted_run()
    clusters(
        1,
        TUNIX_WEBHOOK_URLS=receiver.url("/ok"),
        TUNIX_WEBHOOK_SECRET=SECRET,
        TUNIX_WEBHOOK_ALLOW_PRIVATE="1",
    )
    wait_for(lambda: receiver.on("/ok"), 30, what="the webhook to arrive")
    [got] = receiver.on("/ok")
    assert got.verified
    assert got.json()["data"]["run_id"] == str(run.id)
    wait_for(
        lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).exists(),
        10,
        what="the delivery to be recorded",
    )
