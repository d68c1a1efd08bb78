"""A JSON parser that refuses hostile bodies cheaply: too large (by Content-Length, before
reading) or nested too deeply (Python's decoder would otherwise raise RecursionError, a 500)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 16  # the API's bodies are flat objects; a little room for clients' extra fields


class PayloadTooLarge(APIException):
    status_code = 413
    default_detail = "request body too large"
    default_code = "payload_too_large"


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, counting no further than ``limit`` + 1."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


class BoundedJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        if request is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if limit is not None and length > limit:
                raise PayloadTooLarge(f"JSON body of {length} bytes; the limit is {limit}")
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
        if _depth(data, MAX_DEPTH) > MAX_DEPTH:
            raise ParseError(f"JSON nested more than {MAX_DEPTH} levels deep")
        return data
