"""Dataset registry over the API: upload, validation, limits, listing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs.models import Dataset

pytestmark = pytest.mark.django_db

URL = "/api/tunix/datasets"
GOOD = {"prompt": "2+2?", "completion": "4"}


def upload(client: APIClient, key: str, data: bytes) -> Any:
    return client.post(
        URL, {"key": key, "file": SimpleUploadedFile("d.jsonl", data)}, format="multipart"
    )


def leftovers() -> list[str]:
    root = Path(settings.TUNIX_DATASETS_ROOT)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_registers_and_lists(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    response = upload(operator_client, "api-v1", jsonl(GOOD, GOOD))
    assert response.status_code == 201
    body = response.json()
    assert (body["key"], body["record_count"], body["format"]) == ("api-v1", 2, "prompt_completion")
    assert response["Location"].endswith("/api/tunix/datasets/api-v1")
    assert operator_client.get(URL).json()[0]["key"] == "api-v1"
    assert operator_client.get(f"{URL}/api-v1").json()["sha256"] == body["sha256"]
    assert leftovers() == ["api-v1.jsonl"]


def test_chat_upload(operator_client: APIClient, jsonl: Callable[..., bytes]) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert upload(operator_client, "chat-v1", jsonl(chat)).json()["format"] == "chat"


def test_bad_line_is_named_and_nothing_is_kept(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    response = upload(operator_client, "bad-v1", jsonl(GOOD, GOOD, {"prompt": "p"}))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert "line 3: missing field 'completion'" in response.json()["detail"]
    assert not Dataset.objects.exists()
    assert leftovers() == []


@pytest.mark.parametrize("key", ["../evil", "a/b", "x;ls", "UP-v1", ".hidden"])
def test_bad_keys_are_refused(
    operator_client: APIClient, jsonl: Callable[..., bytes], key: str
) -> None:
    response = upload(operator_client, key, jsonl(GOOD))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "key"
    assert leftovers() == []


def test_duplicate_key_is_a_409(operator_client: APIClient, jsonl: Callable[..., bytes]) -> None:
    upload(operator_client, "dup-v1", jsonl(GOOD))
    response = upload(operator_client, "dup-v1", jsonl(GOOD, GOOD))
    assert response.status_code == 409
    assert Dataset.objects.get().record_count == 1


def test_oversized_uploads_are_refused_and_leave_nothing(
    operator_client: APIClient, jsonl: Callable[..., bytes], settings: Any
) -> None:
    settings.TUNIX_DATASET_MAX_BYTES = 2048
    big = jsonl(*[GOOD] * 200)  # ~7 KB: over the limit, under the multipart allowance
    response = upload(operator_client, "big-v1", big)
    assert response.status_code == 400
    assert "larger than 2048 bytes" in response.json()["detail"]
    huge = jsonl(*[GOOD] * 5000)  # ~170 KB: refused from Content-Length alone
    response = upload(operator_client, "huge-v1", huge)
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert not Dataset.objects.exists()
    assert leftovers() == []


def test_empty_file_and_missing_fields(operator_client: APIClient) -> None:
    assert upload(operator_client, "empty-v1", b"").status_code == 400
    response = operator_client.post(URL, {"key": "nofile-v1"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "file"


def test_unknown_dataset_is_404(viewer_client: APIClient) -> None:
    response = viewer_client.get(f"{URL}/missing-v1")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
