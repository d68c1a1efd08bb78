"""Datasets for the preference and reinforcement algorithms, through the registry: the demo
files import with their formats, an upload of each format is stored as sent, and a bad line is
named with nothing kept."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs import services
from runs.datasets import STORED_FORMATS
from runs.models import Dataset, DatasetFormat
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

DEMO = Path(__file__).resolve().parent.parent / "runs" / "demo"
PAIR = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
CHAT_PAIR = {
    "messages": [{"role": "user", "content": "Say hi"}],
    "chosen": {"role": "assistant", "content": "Hi!"},
    "rejected": "Go away.",
}
PROBLEM = {"prompt": "What is 6 times 7? End with Answer: <number>", "answer": 42}


def lines(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def nothing_left() -> bool:
    root = Path(settings.TUNIX_DATASETS_ROOT)
    return not (root.exists() and any(root.iterdir())) and not Dataset.objects.exists()


def test_the_registry_knows_exactly_the_formats_the_validator_stores() -> None:
    assert set(DatasetFormat.values) == set(STORED_FORMATS)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("tunix-demo-preference-v1", "preference"), ("tunix-demo-math-v1", "prompt_answer")],
)
def test_each_demo_file_imports_with_its_format_byte_for_byte(name: str, fmt: str) -> None:
    source = DEMO / f"{name}.jsonl"
    with source.open("rb") as handle:
        dataset = services.dataset_import(key=name, source=handle)
    assert (dataset.format, dataset.record_count) == (fmt, 32)
    stored = Path(settings.TUNIX_DATASETS_ROOT) / dataset.file_path
    assert stored.read_bytes() == source.read_bytes()
    assert dataset.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("records", "line", "reason"),
    [
        ([PAIR, {**PAIR, "rejected": " Paris. "}], 2, "same response"),
        ([PROBLEM, {"prompt": "x", "answer": True}], 2, "answer"),
        ([PAIR, {"prompt": "p", "completion": "c"}], 2, "do not mix formats"),
        ([PROBLEM, PAIR], 2, "do not mix formats"),
    ],
)
def test_a_bad_line_of_the_new_formats_is_named_and_nothing_is_kept(
    records: list[object], line: int, reason: str
) -> None:
    with pytest.raises(services.ServiceError) as caught:
        services.dataset_import(key="bad-v1", source=io.BytesIO(lines(*records)))
    assert f"line {line}:" in caught.value.message
    assert reason in caught.value.message
    assert caught.value.field == "file"
    assert nothing_left()


def test_preference_and_prompt_answer_uploads_are_registered_as_sent(
    operator_client: APIClient,
) -> None:
    for key, data, fmt in (
        ("pairs-v1", lines(PAIR, CHAT_PAIR), "preference"),
        ("math-v1", lines(PROBLEM, {"prompt": "1+1?", "answer": "2"}), "prompt_answer"),
    ):
        form = {"key": key, "file": SimpleUploadedFile("data.jsonl", data)}
        response = operator_client.post("/api/tunix/datasets", form, format="multipart")
        assert response.status_code == 201, response.content
        assert response.json()["format"] == fmt
        stored = Path(settings.TUNIX_DATASETS_ROOT) / Dataset.objects.get(key=key).file_path
        assert stored.read_bytes() == data


def test_an_upload_with_a_pair_that_prefers_nothing_is_a_400_naming_the_line(
    operator_client: APIClient,
) -> None:
    data = lines(PAIR, PAIR, {**PAIR, "chosen": "Lyon."})
    form = {"key": "pairs-v1", "file": SimpleUploadedFile("data.jsonl", data)}
    body = problem(operator_client.post("/api/tunix/datasets", form, format="multipart"), 400)
    assert body["errors"][0]["field"] == "file"
    assert body["detail"].startswith("file: line 3: "), body
    assert nothing_left()
