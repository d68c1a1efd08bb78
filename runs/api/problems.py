"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.views.defaults import bad_request, page_not_found, server_error
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler

from runs.problems import (
    API_PREFIX,
    PROBLEM_CONTENT_TYPE,
    problem,
    problem_response,
    request_error,
    unknown_endpoint,
)
from runs.services.errors import (
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    ServiceError,
)


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested error structure as a flat list of {field, message}."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name)
        return out
    if isinstance(detail, list):
        out = []
        for item in detail:
            out += _flatten(item, prefix)
        return out
    return [{"field": prefix, "message": str(detail)}]


def service_error_to_api(exc: ServiceError) -> exceptions.APIException:
    if isinstance(exc, NotFound):
        return exceptions.NotFound(exc.message)
    if isinstance(exc, Forbidden):
        return exceptions.PermissionDenied(exc.message)
    if isinstance(exc, IdempotencyMismatch):
        error = exceptions.APIException(exc.message)
        error.status_code = 422
        return error
    if isinstance(exc, Conflict):
        error = exceptions.APIException(exc.message)
        error.status_code = 409
        return error
    if exc.field:
        return exceptions.ValidationError({exc.field: [exc.message]})
    return exceptions.ValidationError(exc.message)


def request_error_to_api(
    exc: SuspiciousOperation | BadRequest, request: Any
) -> exceptions.APIException:
    """What Django refuses while a view reads the request (a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields). Answered here rather than left to
    handler400, which Django skips under DEBUG for its HTML debug page."""
    status, detail = request_error(exc)
    if isinstance(exc, SuspiciousOperation):
        # The log line Django's own handling writes, which operators may alert on.
        logging.getLogger(f"django.security.{exc.__class__.__name__}").error(
            detail, extra={"status_code": status, "request": getattr(request, "_request", None)}
        )
    error = exceptions.APIException(detail)
    error.status_code = status
    return error


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        exc = service_error_to_api(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation | BadRequest):
        exc = request_error_to_api(exc, context.get("request"))
    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django's 500 handling and logging take over
    extra: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        extra["errors"] = errors
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    elif isinstance(exc, exceptions.APIException):
        detail = str(exc.detail)
    else:  # pragma: no cover - exception_handler only answers APIException and Http404
        detail = str(exc)
    request = context.get("request")
    if request is not None:
        extra["instance"] = request.path
    response.data = problem(response.status_code, detail, **extra)
    renderer = getattr(request, "accepted_renderer", None)
    if getattr(renderer, "media_type", "") != "text/html":
        # Whatever the view renders on success (the schema view: YAML), a problem is JSON.
        # A browser that asked for HTML keeps the browsable error page.
        if request is not None:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = PROBLEM_CONTENT_TYPE
        response.content_type = PROBLEM_CONTENT_TYPE
    return response


def api_aware_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: a problem+json answer anywhere under /api/, Django's page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return unknown_endpoint(request)
    return page_not_found(request, exception)


def api_aware_server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an unexpected failure under /api/ is a problem+json 500 like every other
    API error (Django has logged the traceback); pages get Django's page. Under DEBUG Django
    shows its traceback page instead, which is what a developer wants then."""
    if request.path.startswith(API_PREFIX):
        return problem_response(
            500, "the server failed to answer this request", instance=request.path
        )
    return server_error(request)


def api_aware_bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: what Django refuses before any view runs (a bad Host), as problem+json
    under /api/."""
    if request.path.startswith(API_PREFIX):
        status, detail = request_error(exception)
        return problem_response(status, detail, instance=request.path)
    return bad_request(request, exception)
