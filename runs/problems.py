"""RFC 9457 problem details as plain Django answers, for what answers outside DRF (middleware,
Django's error handlers). The API's exception handler (runs/api/problems.py) builds the same
body."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
API_PREFIX = "/api/"


def problem(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }


def problem_response(status: int, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse(
        problem(status, detail, **extra), status=status, content_type=PROBLEM_CONTENT_TYPE
    )


def request_error(exception: Exception) -> tuple[int, str]:
    """Status and detail for a request Django itself refuses: a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE (413), too many fields or a Host not allowed (400)."""
    status = 413 if isinstance(exception, RequestDataTooBig) else 400
    return status, str(exception) or HTTPStatus(status).phrase


def unknown_endpoint(request: HttpRequest) -> JsonResponse:
    return problem_response(404, f"no such endpoint {request.path}", instance=request.path)


class DebugApiErrorsMiddleware:
    """Under DEBUG, Django answers what it refuses outside any view (a path no pattern matches,
    a Host not in ALLOWED_HOSTS) with its HTML debug pages and never calls handler404 or
    handler400. Under /api/ those answers are problem+json as without DEBUG, so a client sees
    the documented shape whatever DEBUG is; pages keep Django's debug pages. What API views
    raise is answered by the API's exception handler, whatever DEBUG is."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not settings.DEBUG or not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost as exc:
            status, detail = request_error(exc)
            return problem_response(status, detail, instance=request.path)
        response = self.get_response(request)
        unresolved = getattr(request, "resolver_match", None) is None
        if (
            response.status_code == 404
            and unresolved
            and response.get("Content-Type") != PROBLEM_CONTENT_TYPE
        ):
            return unknown_endpoint(request)
        return response
