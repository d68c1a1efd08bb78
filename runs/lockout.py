"""Login throttling (django-axes) hooks: which address a login comes from, and what a locked-out
client is told. The counting and the lockout themselves are django-axes'."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from runs.problems import problem_response


def client_ip(request: HttpRequest) -> str:
    """The connection's address, or, behind a trusted proxy, the address that proxy saw (the
    last X-Forwarded-For entry: earlier ones are whatever the client claimed)."""
    if settings.TUNIX_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        last = str(forwarded).rsplit(",", 1)[-1].strip()
        if last:
            return last
    return str(request.META.get("REMOTE_ADDR", ""))


def cooloff_minutes() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)


def locked_out(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """429 with Retry-After: problem+json for the API, the login page's own message otherwise."""
    minutes = cooloff_minutes()
    detail = (
        f"too many failed logins for this account from this address; try again in {minutes} minutes"
    )
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = problem_response(429, detail, instance=request.path)
    else:
        response = render(request, "registration/locked_out.html", {"detail": detail}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
