"""A JSON parser that refuses bodies nested too deeply, cheaply: Python's decoder would otherwise
raise RecursionError (a 500). Size needs nothing here: DRF reads a JSON body through Django's
request.body, which refuses one over DATA_UPLOAD_MAX_MEMORY_SIZE by its Content-Length before
reading it (answered 413 problem+json by runs.api.problems.api_aware_bad_request)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 16  # the API's bodies are flat objects; a little room for clients' extra fields


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
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
        if _depth(data, MAX_DEPTH) > MAX_DEPTH:
            raise ParseError(f"JSON nested more than {MAX_DEPTH} levels deep")
        return data
