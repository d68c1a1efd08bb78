"""django-q2's qcluster with a graceful drain.

On SIGTERM or SIGINT to this (master) process, workers stop taking new runs, and a training still
running TUNIX_SHUTDOWN_GRACE_SECONDS later is stopped and re-queued, so no run is left
"running". Signal only this process (systemd KillMode=mixed); see docs/architecture.md.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django_q import cluster as q_cluster
from django_q.cluster import Cluster
from django_q.conf import Conf
from django_q.management.commands import qcluster

from runs import (
    resources,
    worker,
)  # imported before the cluster forks: workers share its drain flag


class _SignalSafeSentinel(q_cluster.Sentinel):  # type: ignore[misc]
    """django-q2's sentinel lets SIGTERM kill it (and its workers, pusher and monitor, which
    inherit the disposition). When a whole process group or cgroup is signalled (Ctrl-C in a
    shell, honcho, `timeout`, systemd's default KillMode) the sentinel dies while the master
    waits on it and the master deadlocks (django-q2#346). Here the cluster's processes ignore
    SIGTERM; the master alone handles it, drains the workers and stops them in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, start=False, **kwargs)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.start()


def refusal(devices: list[dict[str, Any]], served: str) -> str | None:
    """Why a host with ``devices`` may not serve the resource class ``served`` (None: it may).
    Its workers must be able to run the largest request the class takes."""
    most = resources.configured(settings.TUNIX_RESOURCE_CLASSES).get(served)
    if most is None:
        return f"resource class {served!r} is not in TUNIX_RESOURCE_CLASSES"
    needed = resources.class_request(served, most)
    if resources.satisfies(devices, needed):
        return None
    return (
        f"this host cannot serve resource class {served} ({needed.describe()} per run): it has "
        f"{resources.describe_devices(devices)}; start this cluster on a host with those devices"
    )


def host_devices_for(served: str) -> list[dict[str, Any]]:
    """This host's devices (read in a child process, or as TUNIX_WORKER_DEVICES declares them),
    if they satisfy the class its cluster serves. The queue's routing is the guarantee that a
    run lands only on a host that can serve it, so a cluster started for a class on the wrong
    host refuses to start."""
    if settings.TUNIX_WORKER_DEVICES:
        try:
            devices = resources.declared_devices(settings.TUNIX_WORKER_DEVICES)
        except resources.ResourceError as exc:
            raise CommandError(f"TUNIX_WORKER_DEVICES: {exc}") from None
    else:
        devices = resources.detect_devices()
    if reason := refusal(devices, served):
        raise CommandError(reason)
    return devices


class Command(qcluster.Command):  # type: ignore[misc]  # django-q2 ships no types
    help = "Start a django-q2 cluster whose workers drain running Tunix runs on SIGTERM."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SECRET_KEY:  # django-q2 signs tasks with it
            raise RuntimeError("SECRET_KEY must be set to run a cluster")
        name = options.get("cluster_name")
        if name and name != Conf.CLUSTER_NAME:
            # django-q2 read its configuration when Django started, before this option.
            raise CommandError(
                f"start this cluster as `Q_CLUSTER_NAME={name} python manage.py qcluster`: the "
                "queue name must be in the environment when the process starts"
            )
        worker.set_host_devices(host_devices_for(worker.served_class()))
        q_cluster.Sentinel = _SignalSafeSentinel  # Cluster.start looks it up when it forks
        cluster = Cluster()
        # Cluster() installed django-q2's stop handlers; drain the workers before stopping.
        stop = cluster.sig_handler

        def drain_then_stop(signum: int, frame: FrameType | None) -> None:
            worker.begin_drain()
            stop(signum, frame)

        signal.signal(signal.SIGTERM, drain_then_stop)
        signal.signal(signal.SIGINT, drain_then_stop)
        cluster.start()
        if options.get("run_once", False):
            cluster.stop()
