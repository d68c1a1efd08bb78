"""The dataset registry over the API: upload, refusal without leftovers, list and detail."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs.models import Dataset
from tests.factories import DatasetFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

DATASETS = "/api/tunix/datasets"
GOOD = {"prompt": "What is 2+2?", "completion": "4"}
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
}


def upload(client: APIClient, key: str, data: bytes, **fields: str) -> Any:
    form = {"key": key, "file": SimpleUploadedFile("data.jsonl", data), **fields}
    return client.post(DATASETS, form, format="multipart")


def root() -> Path:
    return Path(settings.TUNIX_DATASETS_ROOT)


def stored_files() -> list[str]:
    """Dataset files and upload temporaries (hidden .upload-*.part) in the datasets root."""
    if not root().exists():
        return []
    return sorted(p.name for p in root().iterdir() if p.suffix in {".jsonl", ".part"})


def test_a_prompt_completion_upload_is_registered_and_stored(
    operator_client: APIClient, operator: Any, jsonl: Callable[..., bytes]
) -> None:
    data = jsonl(GOOD, GOOD, GOOD)
    response = upload(operator_client, "arith-v1", data)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["key"] == "arith-v1"
    assert (body["format"], body["record_count"], body["size_bytes"]) == (
        "prompt_completion",
        3,
        len(data),
    )
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["created_by"] == operator.username
    assert response["Location"] == f"http://testserver{DATASETS}/arith-v1"
    assert Dataset.objects.get(key="arith-v1").record_count == 3
    assert stored_files() == ["arith-v1.jsonl"]
    assert (root() / "arith-v1.jsonl").read_bytes() == data


def test_a_chat_upload_is_registered_as_chat(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    response = upload(operator_client, "chat-v1", jsonl(CHAT, CHAT))
    assert response.status_code == 201, response.content
    assert (response.json()["format"], response.json()["record_count"]) == ("chat", 2)
    assert stored_files() == ["chat-v1.jsonl"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([GOOD, GOOD, {"prompt": "p"}], "line 3: missing field 'completion'"),
        ([GOOD, "not json"], "line 2: invalid JSON"),
        ([GOOD, [1, 2]], "line 2: expected a JSON object"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "line 1: the last message"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_kept(
    operator_client: APIClient,
    jsonl: Callable[..., bytes],
    lines: list[Any],
    expected: str,
) -> None:
    body = problem(upload(operator_client, "bad-v1", jsonl(*lines)), 400)
    assert body["errors"][0]["field"] == "file"
    assert body["detail"].startswith(f"file: {expected}")
    assert not Dataset.objects.exists()
    assert stored_files() == []


def test_a_duplicate_key_is_a_409_and_keeps_the_first_upload(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    first = jsonl(GOOD)
    assert upload(operator_client, "dup-v1", first).status_code == 201

    body = problem(upload(operator_client, "dup-v1", jsonl(GOOD, GOOD)), 409)

    assert "dup-v1" in body["detail"]
    assert Dataset.objects.get().record_count == 1
    assert stored_files() == ["dup-v1.jsonl"]
    assert (root() / "dup-v1.jsonl").read_bytes() == first


@pytest.mark.parametrize(
    "key", ["../evil", "a/b", "x;rm -rf ~", "UPPER-v1", ".hidden", "a..b", "x" * 129, ""]
)
def test_a_bad_key_is_a_400_and_leaves_nothing(
    operator_client: APIClient, jsonl: Callable[..., bytes], key: str
) -> None:
    body = problem(upload(operator_client, key, jsonl(GOOD)), 400)
    assert body["errors"][0]["field"] == "key"
    assert not Dataset.objects.exists()
    assert stored_files() == []


def test_an_upload_declared_oversize_is_a_413_and_leaves_nothing(
    operator_client: APIClient, jsonl: Callable[..., bytes], settings: Any
) -> None:
    settings.TUNIX_DATASET_MAX_BYTES = 1024
    big = jsonl(*[GOOD] * 5000)  # far beyond the limit and its multipart allowance
    body = problem(upload(operator_client, "huge-v1", big), 413)
    assert "1024" in body["detail"]
    assert not Dataset.objects.exists()
    assert stored_files() == []


def test_a_file_just_over_the_limit_is_a_400_and_leaves_nothing(
    operator_client: APIClient, jsonl: Callable[..., bytes], settings: Any
) -> None:
    settings.TUNIX_DATASET_MAX_BYTES = 1024
    data = jsonl(*[GOOD] * 60)  # over 1024 bytes: refused while streaming, not from headers
    assert len(data) > 1024
    body = problem(upload(operator_client, "big-v1", data), 400)
    assert body["errors"][0]["field"] == "file"
    assert "larger than 1024 bytes" in body["detail"]
    assert not Dataset.objects.exists()
    assert stored_files() == []


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_an_empty_file_is_a_400(operator_client: APIClient, data: bytes) -> None:
    body = problem(upload(operator_client, "empty-v1", data), 400)
    assert body["errors"][0]["field"] == "file"
    assert not Dataset.objects.exists()
    assert stored_files() == []


def test_missing_and_unknown_form_fields_are_named(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    no_file = problem(operator_client.post(DATASETS, {"key": "x-v1"}, format="multipart"), 400)
    assert no_file["errors"][0]["field"] == "file"
    not_a_file = operator_client.post(DATASETS, {"key": "x-v1", "file": "text"}, format="multipart")
    assert problem(not_a_file, 400)["errors"][0]["field"] == "file"
    extra = problem(upload(operator_client, "x-v1", jsonl(GOOD), notes="hi"), 400)
    assert extra["errors"][0]["field"] == "notes"
    assert not Dataset.objects.exists()


def test_a_json_body_is_415(operator_client: APIClient) -> None:
    problem(operator_client.post(DATASETS, {"key": "x-v1"}, format="json"), 415)


def test_list_is_ordered_by_key(viewer_client: APIClient) -> None:
    DatasetFactory(key="zeta-v1")
    DatasetFactory(key="alpha-v1", record_count=5)

    response = viewer_client.get(DATASETS)

    assert response.status_code == 200
    body = response.json()
    assert [d["key"] for d in body] == ["alpha-v1", "zeta-v1"]
    assert set(body[0]) == {
        "key",
        "format",
        "record_count",
        "size_bytes",
        "sha256",
        "created_at",
        "created_by",
    }
    assert "file_path" not in body[0]  # server paths stay on the server
    assert body[0]["record_count"] == 5


def test_an_empty_registry_lists_nothing(viewer_client: APIClient) -> None:
    response = viewer_client.get(DATASETS)
    assert response.status_code == 200
    assert response.json() == []


def test_detail_returns_the_dataset(viewer_client: APIClient, demo_dataset: Dataset) -> None:
    response = viewer_client.get(f"{DATASETS}/tunix-demo-v1")
    assert response.status_code == 200
    body = response.json()
    assert (body["key"], body["record_count"], body["sha256"]) == (
        "tunix-demo-v1",
        64,
        demo_dataset.sha256,
    )


@pytest.mark.parametrize("key", ["missing-v1", "..", "UPPER"])
def test_an_unknown_key_is_a_404_problem(viewer_client: APIClient, key: str) -> None:
    DatasetFactory(key="present-v1")
    body = problem(viewer_client.get(f"{DATASETS}/{key}"), 404)
    assert key in body["detail"]
