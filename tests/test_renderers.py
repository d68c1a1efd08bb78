"""The API's JSON renderer writes what DRF's JSONRenderer writes, faster."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer

from runs.api.renderers import FastJSONRenderer

PAYLOADS: list[Any] = [
    {"data": [], "pagination": {"limit": 20, "next_cursor": None, "next": None}},
    {
        "run_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "queued_at": dt.datetime(2026, 11, 30, 9, 1, 2, 345678, tzinfo=dt.UTC),
        "started_at": dt.datetime(2026, 11, 30, 9, 1, 2, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 11, 30, 9, 1, 2),
        "day": dt.date(2026, 11, 30),
        "elapsed": dt.timedelta(seconds=90),
        "loss": 0.125,
        "steps": 24,
        "rate": Decimal("0.5"),
    },
    {"title": gettext_lazy("Not found."), "errors": {"f": [ErrorDetail("bad", code="x")]}},
    {"text": 'naïve \u2013 学習 \U0001f680 "quoted" back\\slash \n tab\t', "ctl": "\x00\x1f"},
    {"separators": "line\u2028paragraph\u2029end"},
    {1: "integer key"},
    [True, False, None, 0, -1, 2**53],
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_fast_renderer_writes_the_bytes_drfs_renderer_writes(payload: Any) -> None:
    assert FastJSONRenderer().render(payload) == JSONRenderer().render(payload)


def test_a_pretty_printed_answer_is_drfs() -> None:
    payload = {"a": [1, 2]}
    media_type = "application/json; indent=4"
    assert FastJSONRenderer().render(payload, media_type) == JSONRenderer().render(
        payload, media_type
    )
    assert b"\n    " in FastJSONRenderer().render(payload, media_type)


def test_a_nan_loss_is_written_as_null_instead_of_failing_the_answer() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        JSONRenderer().render({"loss": float("nan")})
    assert FastJSONRenderer().render({"loss": float("nan")}) == b'{"loss":null}'


def test_nothing_to_render_is_an_empty_body() -> None:
    assert FastJSONRenderer().render(None) == b""


@pytest.mark.parametrize(
    ("accept", "query"),
    [
        (None, {}),
        ("*/*", {}),
        ("application/json", {}),
        ("application/json; indent=4", {}),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", {}),
        ("text/html", {"format": "json"}),
        ("application/*", {}),
        ("image/png, */*;q=0.1", {}),
    ],
)
def test_the_remembered_negotiation_chooses_what_drf_chooses(
    accept: str | None, query: dict[str, str]
) -> None:
    from rest_framework.exceptions import NotAcceptable
    from rest_framework.negotiation import DefaultContentNegotiation
    from rest_framework.renderers import BrowsableAPIRenderer
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from runs.api.renderers import CachedContentNegotiation

    headers = {"HTTP_ACCEPT": accept} if accept else {}
    renderers = [FastJSONRenderer(), BrowsableAPIRenderer()]

    def choice(negotiation: Any, request: Request) -> Any:
        try:
            return negotiation.select_renderer(request, renderers)
        except NotAcceptable:
            return "406"

    for _ in range(2):  # the first answer is worked out, the second remembered
        request = Request(APIRequestFactory().get("/api/tunix/runs", query, **headers))
        chosen = choice(CachedContentNegotiation(), request)
        assert chosen == choice(DefaultContentNegotiation(), request)


def test_a_media_type_no_renderer_offers_is_refused_every_time() -> None:
    from rest_framework.exceptions import NotAcceptable
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from runs.api.renderers import CachedContentNegotiation

    request = Request(APIRequestFactory().get("/api/tunix/runs", HTTP_ACCEPT="image/png"))
    for _ in range(2):
        with pytest.raises(NotAcceptable):
            CachedContentNegotiation().select_renderer(request, [FastJSONRenderer()])
