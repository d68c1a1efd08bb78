"""RFC 9457 problem details as plain Django answers, for what answers outside DRF (middleware,
Django's error handlers). The API's exception handler (runs/api/problems.py) builds the same
body."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.http import JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"


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
