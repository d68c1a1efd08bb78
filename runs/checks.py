"""Startup checks: refuse a queue configuration that would fight the run timeouts.

django-q2 runs these before qcluster starts (and before runserver and migrate), so a worker
never starts with limits that would kill or redeliver a run the executor is still handling.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags
from django.core.checks import register as register_check
from django.core.exceptions import ImproperlyConfigured

from runs import resources
from runs.addresses import literal_private_host


def refuse_private_webhook_targets() -> None:
    """Stop start-up when a webhook URL is an IP literal that is not public (names are checked
    at each delivery, on every address they resolve to)."""
    if settings.TUNIX_WEBHOOK_ALLOW_PRIVATE:
        return
    for url in settings.TUNIX_WEBHOOK_URLS:
        if host := literal_private_host(url):
            raise ImproperlyConfigured(
                f"webhook URL {url!r} targets {host}, not a public address; set "
                "TUNIX_WEBHOOK_ALLOW_PRIVATE=1 to allow private targets"
            )


def queue_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    q = settings.Q_CLUSTER
    longest_run = settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS + settings.TUNIX_KILL_GRACE_SECONDS + 60
    timeout = q.get("timeout")
    retry = q.get("retry")
    if not timeout or timeout < longest_run:
        errors.append(
            Error(
                f"Q_CLUSTER timeout ({timeout}) must be at least the longest run: "
                f"TUNIX_RUN_TIMEOUT_MAX_SECONDS + kill grace + 60 = {longest_run} s",
                id="runs.E001",
            )
        )
    # A claimed task can wait behind ceil((queue_limit + bulk) / workers) others in memory
    # while its redelivery clock runs.
    waits = math.ceil((q.get("queue_limit", 1) + q.get("bulk", 1)) / max(q.get("workers", 1), 1))
    if timeout and (not retry or retry <= (1 + waits) * timeout):
        errors.append(
            Error(
                f"Q_CLUSTER retry ({retry}) must exceed (1 + {waits}) x timeout ({timeout}), "
                "or a task still running would be delivered again",
                id="runs.E002",
            )
        )
    if not q.get("ack_failures") or not q.get("max_attempts"):
        errors.append(
            Error(
                "Q_CLUSTER needs ack_failures=True and max_attempts > 0 so a failing task "
                "cannot loop forever",
                id="runs.E003",
            )
        )
    if q.get("orm") != "default":
        errors.append(
            Error(
                "Q_CLUSTER orm must be 'default' so a run and its task commit together",
                id="runs.E004",
            )
        )
    try:
        resources.configured(settings.TUNIX_RESOURCE_CLASSES)
    except resources.ResourceError as exc:
        errors.append(Error(f"TUNIX_RESOURCE_CLASSES: {exc}", id="runs.E006"))
    try:
        resources.configured(settings.TUNIX_RAY_RESOURCE_CLASSES)
    except resources.ResourceError as exc:
        errors.append(Error(f"TUNIX_RAY_RESOURCE_CLASSES: {exc}", id="runs.E007"))
    if settings.DATABASES["default"].get("OPTIONS", {}).get("pool"):
        errors.append(
            Error("the database 'pool' option breaks forked qcluster workers", id="runs.E005")
        )
    return errors


def register() -> None:
    register_check(queue_limits, Tags.compatibility, deploy=False)
