"""What every page module shares: the permission decorator, polled fragments, and a run as
this user may see it."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import HTMX_STOP_POLLING

from runs import authorization, selectors
from runs.models import TunixRun

View = Callable[..., HttpResponse]


def allowed(rule: str) -> Callable[[View], View]:
    """403 unless the authorization policy's ``rule`` (looked up at each request, so the policy
    module stays the one place it is defined) allows the requesting user."""
    if not callable(getattr(authorization, rule, None)):
        raise AttributeError(f"runs.authorization has no rule {rule!r}")

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not getattr(authorization, rule)(request.user):
                raise PermissionDenied("this needs a permission you do not have")
            return view(request, *args, **kwargs)

        return guarded

    return decorate


def poll_context() -> dict[str, Any]:
    return {"poll_seconds": settings.TUNIX_POLL_SECONDS}


def fragment(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    version: str,
    active: bool,
    render_context: Callable[[], dict[str, Any]] | None = None,
) -> HttpResponse:
    """Render a polled fragment, or 304 if the browser already has this version of it.
    ``render_context`` adds what only a render needs (never computed for a 304)."""
    etag = f'W/"{hashlib.sha256(version.encode()).hexdigest()[:24]}"'
    if active and etag in request.headers.get("If-None-Match", ""):
        response = HttpResponse(status=304)
    else:
        extra = render_context() if render_context is not None else {}
        response = render(request, template, {**context, **extra, **poll_context()})
        if not active:
            response.status_code = HTMX_STOP_POLLING
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache, private"
    return response


def get_run(request: HttpRequest, run_id: UUID) -> TunixRun:
    """The run, if this user may see it; someone else's run is as absent as a missing one."""
    run = selectors.run_get(run_id=run_id, owner=authorization.visible_owner(request.user))
    if run is None:
        raise Http404("no such run")
    return run
