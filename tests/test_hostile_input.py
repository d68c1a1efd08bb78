"""Hostile JSON bodies are refused cheaply, as problem+json, and leave nothing behind: too large
(Django refuses it by its Content-Length before reading it) or nested too deeply (the decoder
would otherwise recurse until Python gives up: a 500)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from runs.models import TunixRun
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

SUBMIT = "/api/tunix/run?mode=async"


@pytest.mark.parametrize("depth", [17, 1_000, 200_000])
def test_deeply_nested_json_is_a_400(
    operator_client: APIClient, demo_dataset: Any, depth: int
) -> None:
    body = '{"dataset_key": ' + "[" * depth + "]" * depth + "}"
    started = time.perf_counter()
    response = operator_client.post(SUBMIT, body, content_type="application/json")
    elapsed = time.perf_counter() - started
    assert "nested more than 16 levels" in problem(response, 400)["detail"]
    assert elapsed < 2.0  # refused without walking the whole structure in Python
    assert not TunixRun.objects.exists()


def test_sixteen_levels_still_parse(operator_client: APIClient, demo_dataset: Any) -> None:
    body = '{"x": ' + "[" * 15 + "]" * 15 + "}"
    response = operator_client.post(SUBMIT, body, content_type="application/json")
    # Parsed, then refused for what it says, not for how it is nested.
    assert "nested" not in problem(response, 400)["detail"]


def test_a_body_declared_too_large_is_refused_before_it_is_read(
    operator: Any, demo_dataset: Any, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    client = Client()
    client.force_login(operator)
    body = '{"model_id": "' + "x" * (128 * 1024) + '"}'
    response = client.post(SUBMIT, body, content_type="application/json")
    assert problem(response, 413)["status"] == 413
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    "body",
    ['{"learning_rate": NaN}', '{"num_epochs": Infinity}', "[1, 2", '"just a string"', "\ud800"],
)
def test_malformed_or_non_object_json_is_a_400(
    operator_client: APIClient, demo_dataset: Any, body: str
) -> None:
    response = operator_client.post(
        SUBMIT, body.encode("utf-8", "surrogatepass"), content_type="application/json"
    )
    problem(response, 400)
    assert not TunixRun.objects.exists()
