"""What a qcluster process adds to django-q2: a shutdown drain flag and the reaper thread.

The drain flag is a multiprocessing Event created in the qcluster master before the cluster
forks, so every worker inherits it; runs' qcluster command sets it on SIGTERM. The reaper runs
as a daemon thread in every worker process (django-q2's post_spawn signal), so recovery needs no
extra process and works on every host that runs a cluster. Each tick also writes the worker's
heartbeat, with the id of the key it reads queue tasks with (runs.broker.signing_key_id), which
web hosts compare with their own.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

log = logging.getLogger("tunix_rt.worker")

_drain_event = multiprocessing.get_context("fork").Event()
_drain_seen: float | None = None
# What this host has, read once by the qcluster master before it forks (runs.resources), so
# every worker's heartbeat reports it without importing JAX.
_host_devices: list[dict[str, Any]] = []


def set_host_devices(devices: list[dict[str, Any]]) -> None:
    global _host_devices
    _host_devices = devices


def served_class() -> str:
    """The resource class this process's cluster serves, from the queue it was started for."""
    from django_q.conf import Conf

    from runs import resources

    return resources.class_of_queue(
        str(Conf.CLUSTER_NAME),
        settings.TUNIX_RESOURCE_QUEUE_BASE,
        resources.configured(settings.TUNIX_RESOURCE_CLASSES),
    )


def begin_drain() -> None:
    """Tell every worker of this cluster that shutdown has begun."""
    _drain_event.set()


def drain_since() -> float | None:
    """Monotonic time this process first saw the drain flag, or None while not draining."""
    global _drain_seen
    if _drain_seen is None and _drain_event.is_set():
        _drain_seen = time.monotonic()
    return _drain_seen


def reap_once() -> None:
    """One tick: say this worker is alive, recover lost runs, publish this process's metrics."""
    from runs import services
    from runs.services import telemetry

    close_old_connections()
    try:
        services.worker_heartbeat(
            worker_id=services.worker_identity(),
            devices=_host_devices,
            resource_class=served_class(),
        )
        services.run_reap()
        services.sweep_reconcile()
        services.webhook_schedule()
        telemetry.flush()
        telemetry.compact()
        services.worker_heartbeat_prune()
    except Exception:  # a database blip must not kill the thread; the next tick retries
        log.exception("reaper_error")
    finally:
        close_old_connections()


def _reaper_loop() -> None:
    interval = settings.TUNIX_REAPER_INTERVAL_SECONDS
    reap_once()  # announce this worker at once
    # Spread the workers' ticks so they do not all query at once.
    time.sleep(random.uniform(0, interval))  # noqa: S311 - jitter, not security
    while not _drain_event.is_set():
        reap_once()
        time.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311
    connection.close()


def start_reaper(sender: Any = None, proc_name: str = "", **kwargs: Any) -> None:
    """post_spawn receiver: one reaper thread per worker process."""
    from runs import metrics
    from runs.broker import signing_key_id

    metrics.set_role("worker")
    thread = threading.Thread(target=_reaper_loop, name="tunix-reaper", daemon=True)
    thread.start()
    # The key id is what /readyz compares across hosts: logging it lets an operator match a
    # "different SECRET_KEY" report to this host's log.
    log.info(
        "reaper_started",
        extra={"fields": {"process": proc_name, "signing_key_id": signing_key_id()}},
    )
