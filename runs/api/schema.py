"""OpenAPI post-processing: every error answer is documented as what it is, an RFC 9457
problem+json body, with the status codes the API's shared layers can produce."""

from __future__ import annotations

from typing import Any

from runs.problems import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

# Answers any operation can give, whatever its view does.
SHARED = {
    "401": "Not logged in (no or a bad token or session)",
    "403": "Logged in without the permission this needs, or a session write without CSRF token",
    "406": "The Accept header asks for a type the API does not serve",
    "503": "The server is overloaded and shed the request; retry after Retry-After seconds",
}
WITH_INPUT = {"400": "Invalid parameters or body; the problem names each field"}
WITH_PATH_PARAMS = {"404": "No such resource"}
WITH_BODY = {
    "413": "Request body too large",
    "415": "Unsupported request Content-Type",
}
THROTTLED = {"429": "Too many failed logins; retry after Retry-After seconds"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def problem_responses(result: dict[str, Any], **_: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS POSTPROCESSING_HOOKS)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            extra = dict(SHARED)
            parameters = operation.get("parameters", [])
            if parameters or "requestBody" in operation:
                extra.update(WITH_INPUT)
            if any(p.get("in") == "path" for p in parameters):
                extra.update(WITH_PATH_PARAMS)
            if "requestBody" in operation:
                extra.update(WITH_BODY)
            if path == "/api/auth/token":
                extra.update(THROTTLED)
            for code, description in extra.items():
                responses.setdefault(code, _problem(description))
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    responses[code] = _problem(response.get("description") or "Error")
    return result
