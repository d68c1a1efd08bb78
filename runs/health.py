"""Liveness and readiness, as JSON, without a login."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

_migrated = False  # once true it stays true for the life of the process


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; touches nothing else."""
    return JsonResponse({"status": "ok"})


def _migrations_applied() -> bool:
    global _migrated
    if not _migrated:
        executor = MigrationExecutor(connection)
        _migrated = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    return _migrated


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: database reachable, migrations applied, a worker heart-beating, and
    every live worker able to read the tasks this host queues (same SECRET_KEY)."""
    from runs import selectors

    checks: dict[str, dict[str, object]] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except DatabaseError as exc:
        checks["database"] = {"ok": False, "reason": f"database unreachable: {exc}"}
    if checks["database"]["ok"]:
        applied = _migrations_applied()
        checks["migrations"] = (
            {"ok": True}
            if applied
            else {"ok": False, "reason": "migrations not applied: run manage.py migrate"}
        )
        fleet = selectors.worker_fleet()
        newest = fleet.newest_seen
        limit = timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS)
        if newest is None:
            checks["worker"] = {"ok": False, "reason": "no worker has ever reported"}
        elif timezone.now() - newest > limit:
            age = (timezone.now() - newest).total_seconds()
            checks["worker"] = {
                "ok": False,
                "reason": f"newest worker heartbeat is {age:.0f} s old (limit {limit.seconds} s)",
            }
        elif fleet.foreign_hosts:
            # A worker that cannot verify this host's task signatures drops (or hands back)
            # every run queued here, while its heartbeat looks healthy.
            checks["worker"] = {
                "ok": False,
                "reason": selectors.describe_foreign_workers(fleet.foreign_hosts),
            }
        else:
            checks["worker"] = {"ok": True}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


class ProbeMiddleware:
    """Answers GET /healthz and /readyz before anything else runs: a probe addresses the
    process by IP or container name, which ALLOWED_HOSTS (rightly) does not list, and a
    liveness answer must not wait on the database (the metrics flush, sessions). First in
    MIDDLEWARE."""

    PROBES = {"/healthz": healthz, "/readyz": readyz}

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        probe = self.PROBES.get(request.path_info)
        if probe is not None and request.method in {"GET", "HEAD"}:
            response = probe(request)
            # CommonMiddleware, which would say it, never sees a probe's answer: without it
            # gunicorn sends the body chunked, and a client on a kept-alive connection that
            # does not decode chunks waits for the connection to close.
            response["Content-Length"] = str(len(response.content))
            return response
        return self.get_response(request)
