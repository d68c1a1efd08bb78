"""How answers are rendered: JSON serialised by orjson, and DRF's choice of renderer
remembered.

FastJSONRenderer writes DRF's JSONRenderer output, several times faster.
The same bytes as DRF's compact, unicode JSON for what the API returns (dicts, lists, strings,
numbers, None; DRF's encoder for anything else: lazy strings, dates, decimals), with two
deliberate differences: a NaN or infinite float is written as null where DRF's strict mode
would fail the request, and a float's exponent has no padding (1e-5, not 1e-05). Pretty-printed
answers (``Accept: application/json; indent=4``) are left to DRF.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.utils.encoders import JSONEncoder

_default = JSONEncoder().default
OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
# U+2028 and U+2029 are valid in JSON but end a line in older JavaScript; DRF escapes them.
_LINE_SEPARATOR = "\u2028".encode()
_PARAGRAPH_SEPARATOR = "\u2029".encode()


def dumps(data: Any, *, option: int = 0) -> bytes:
    out = orjson.dumps(data, default=_default, option=OPTIONS | option)
    if _LINE_SEPARATOR in out or _PARAGRAPH_SEPARATOR in out:
        out = out.replace(_LINE_SEPARATOR, b"\\u2028").replace(_PARAGRAPH_SEPARATOR, b"\\u2029")
    return out


class FastJSONRenderer(JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}) is not None:
            return bytes(super().render(data, accepted_media_type, renderer_context))
        return dumps(data)


class CachedContentNegotiation(DefaultContentNegotiation):
    """DRF's content negotiation, its answer remembered for each list of renderers, format and
    Accept header: parsing and ranking the Accept header cost a poll about as much as its
    database query. Clients send a handful of distinct headers; the table is bounded anyway,
    since the header is the client's to choose. Refusals (406) are not remembered."""

    MAX_ENTRIES = 512
    _chosen: dict[tuple[Any, ...], tuple[int, str]] = {}
    _lock = threading.Lock()

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderers = renderers if isinstance(renderers, Sequence) else list(renderers)
        format_ = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        key = (tuple(map(type, renderers)), format_, request.META.get("HTTP_ACCEPT", "*/*"))
        hit = self._chosen.get(key)
        if hit is None:
            renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            hit = (next(i for i, r in enumerate(renderers) if r is renderer), media_type)
            with self._lock:
                if len(self._chosen) >= self.MAX_ENTRIES:
                    self._chosen.clear()
                self._chosen[key] = hit
        return renderers[hit[0]], hit[1]
