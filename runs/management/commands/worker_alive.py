"""Liveness of this host's workers, for a container HEALTHCHECK or a monitoring agent: exits 0
when a qcluster worker process on this host heart-beat within TUNIX_STALE_AFTER_SECONDS, 1
otherwise, saying why. Workers serve no HTTP, so /healthz cannot tell."""

from __future__ import annotations

import socket
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs import selectors


class Command(BaseCommand):
    help = "Exit 0 if a worker on this host reported recently, else 1 with the reason."

    def handle(self, *args: Any, **options: Any) -> None:
        host = socket.gethostname()
        seen = selectors.worker_last_seen(host=host)
        limit = settings.TUNIX_STALE_AFTER_SECONDS
        if seen is None:
            raise CommandError(f"no worker on {host} has reported yet")
        age = (timezone.now() - seen).total_seconds()
        if age > limit:
            raise CommandError(
                f"the newest worker heartbeat on {host} is {age:.0f} s old (limit {limit} s)"
            )
        self.stdout.write(f"ok: a worker on {host} reported {age:.0f} s ago")
