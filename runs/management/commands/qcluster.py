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

from runs import worker  # imported before the cluster forks: workers share its drain flag


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
