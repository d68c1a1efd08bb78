"""A JSON parser that refuses bodies nested too deeply, cheaply: Python's decoder would otherwise
raise RecursionError (a 500). Size needs nothing here: DRF reads a JSON body through Django's
request.body, which refuses one over DATA_UPLOAD_MAX_MEMORY_SIZE by its Content-Length before
reading it (answered 413 problem+json by runs.api.problems.problem_exception_handler).

Its errors say where a body is wrong: a syntax error by line and column, NaN, Infinity, an
overflowing number or an integer too long to convert by the field that holds it (as `errors`,
like any field error), never by the decoder's own words."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 16  # the API's bodies are flat objects; a little room for clients' extra fields
# No field takes an integer anywhere near this long. Converting a long digit string costs
# quadratic time, and past 4300 digits Python refuses with advice about its own settings.
MAX_INT_DIGITS = 100


class LengthRequired(APIException):
    status_code = 411
    default_detail = (
        "a request body needs a Content-Length header; chunked transfer encoding "
        "(Transfer-Encoding: chunked) is not supported"
    )
    default_code = "length_required"


def require_content_length(meta: Mapping[str, Any]) -> None:
    """Refuse a chunked body that arrived without a length. Django reads a request body only
    as far as its Content-Length, so such a body would be taken for an empty one and answered
    with misleading "field is required" errors (gunicorn hands the body over, unread)."""
    if "chunked" not in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared <= 0:
        raise LengthRequired()


class JSONBodyError(ValidationError):
    """A body that is not JSON the API accepts: a 400 whose ``errors`` name the field or, for a
    syntax error, the position."""


class _Refused:
    """A value the decoder met but the API refuses, kept in place so its field can be named."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _refuse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a number JSON allows; send a finite number")


def _parse_int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(f"integer of {digits} digits is too large (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 32 else f"{text[:29]}..."
        return _Refused(f"{shown} is out of range for a number")
    return value


def _find_refused(value: Any, path: str = "") -> tuple[str, _Refused] | None:
    """The first refused value and its dotted path (list items by index). Only called on data
    already known to be at most MAX_DEPTH deep."""
    if isinstance(value, _Refused):
        return path, value
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, child in items:
        found = _find_refused(child, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


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
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            # str.encode refuses bytes-to-bytes codecs (bz2_codec) that would inflate a body
            # after its size was checked.
            "".encode(encoding)
        except (LookupError, UnicodeError):
            raise JSONBodyError([f"unsupported charset {encoding!r} in Content-Type"]) from None
        raw = stream.read()
        try:
            text = raw.decode(encoding) if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as exc:
            raise JSONBodyError([f"body is not valid {encoding} at byte {exc.start}"]) from None
        try:
            data = json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_int=_parse_int,
                parse_float=_parse_float,
            )
        except RecursionError:
            raise JSONBodyError([f"JSON nested more than {MAX_DEPTH} levels deep"]) from None
        except json.JSONDecodeError as exc:
            message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise JSONBodyError([message]) from None
        if _depth(data, MAX_DEPTH) > MAX_DEPTH:
            raise JSONBodyError([f"JSON nested more than {MAX_DEPTH} levels deep"])
        found = _find_refused(data)
        if found is not None:
            field, refused = found
            raise JSONBodyError({field: [refused.message]} if field else [refused.message])
        return data
