"""Dataset import: validation names the first bad line; a refused file leaves nothing."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from runs import services
from runs.datasets import DatasetError, validate_key, validate_stream
from runs.models import Dataset
from tests.conftest import DEMO_DATASET

pytestmark = pytest.mark.django_db

GOOD = {"prompt": "2+2?", "completion": "4"}
CHAT = {
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
}


def _nothing_left() -> bool:
    root = Path(settings.TUNIX_DATASETS_ROOT)
    leftovers = list(root.iterdir()) if root.exists() else []
    return not leftovers and not Dataset.objects.exists()


@pytest.mark.parametrize(
    ("records", "line", "reason"),
    [
        (["{not json"], 1, "invalid JSON"),
        ([GOOD, '["a list"]'], 2, "expected a JSON object"),
        ([GOOD, GOOD, {"prompt": "p"}], 3, "missing field 'completion'"),
        ([{"prompt": 1, "completion": "c"}], 1, "'prompt' must be a string"),
        ([{"prompt": "p", "completion": "  "}], 1, "must not be empty"),
        ([GOOD, CHAT], 2, "do not mix formats"),
        ([{"messages": []}], 1, "non-empty list"),
        ([{"messages": [{"role": "robot", "content": "x"}]}], 1, "role must be one of"),
        ([{"messages": [{"role": "assistant", "content": 3}]}], 1, "content must be a string"),
        ([{"messages": [{"role": "user", "content": "x"}]}], 1, "last message"),
    ],
)
def test_bad_record_is_named_with_line_and_reason(
    jsonl: Callable[..., bytes], records: list[object], line: int, reason: str
) -> None:
    with pytest.raises(services.ServiceError) as caught:
        services.dataset_import(key="bad-v1", source=io.BytesIO(jsonl(*records)))
    assert f"line {line}:" in caught.value.message
    assert reason in caught.value.message
    assert caught.value.field == "file"
    assert _nothing_left()


def test_invalid_utf8_is_refused(jsonl: Callable[..., bytes]) -> None:
    data = jsonl(GOOD) + b'{"prompt": "\xff\xfe", "completion": "x"}\n'
    with pytest.raises(services.ServiceError, match="line 2"):
        services.dataset_import(key="bad-v1", source=io.BytesIO(data))
    assert _nothing_left()


def test_deeply_nested_json_is_refused_cheaply() -> None:
    data = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    with pytest.raises(services.ServiceError, match="line 1"):
        services.dataset_import(key="deep-v1", source=io.BytesIO(data))
    assert _nothing_left()


def test_oversized_record_and_file_are_refused(settings, jsonl: Callable[..., bytes]) -> None:
    settings.TUNIX_DATASET_MAX_RECORD_BYTES = 100
    big = {"prompt": "x" * 200, "completion": "y"}
    with pytest.raises(services.ServiceError, match="record longer than 100 bytes"):
        services.dataset_import(key="big-v1", source=io.BytesIO(jsonl(GOOD, big)))
    assert _nothing_left()
    settings.TUNIX_DATASET_MAX_RECORD_BYTES = 10_000
    settings.TUNIX_DATASET_MAX_BYTES = 1024
    with pytest.raises(services.ServiceError, match="file larger than 1024 bytes"):
        services.dataset_import(key="big-v1", source=io.BytesIO(jsonl(*[GOOD] * 100)))
    assert _nothing_left()


def test_empty_dataset_is_refused() -> None:
    with pytest.raises(services.ServiceError, match="no records"):
        services.dataset_import(key="empty-v1", source=io.BytesIO(b"\n\n"))
    assert _nothing_left()


@pytest.mark.parametrize(
    "key",
    ["../etc-v1", "a/b-v1", "x;rm -rf ~", "$(id)", "Upper-v1", "", ".hidden-v1", "a..b", "k" * 129],
)
def test_unsafe_keys_are_refused(key: str, jsonl: Callable[..., bytes]) -> None:
    with pytest.raises(services.ServiceError) as caught:
        services.dataset_import(key=key, source=io.BytesIO(jsonl(GOOD)))
    assert caught.value.field == "key"
    assert _nothing_left()
    with pytest.raises(DatasetError):
        validate_key(key)


def test_import_records_stats_and_file(jsonl: Callable[..., bytes]) -> None:
    data = jsonl(GOOD, "", GOOD)
    dataset = services.dataset_import(key="ok-v1", source=io.BytesIO(data))
    assert dataset.record_count == 2  # the blank line is not a record
    assert dataset.format == "prompt_completion"
    assert dataset.size_bytes == len(data)
    import hashlib

    assert dataset.sha256 == hashlib.sha256(data).hexdigest()
    stored = Path(settings.TUNIX_DATASETS_ROOT) / dataset.file_path
    assert stored.read_bytes() == data
    assert [p.name for p in stored.parent.iterdir()] == ["ok-v1.jsonl"]


def test_chat_format_is_detected(jsonl: Callable[..., bytes]) -> None:
    dataset = services.dataset_import(key="chat-v1", source=io.BytesIO(jsonl(CHAT, CHAT)))
    assert (dataset.format, dataset.record_count) == ("chat", 2)


def test_duplicate_key_is_a_conflict_and_keeps_the_original(jsonl: Callable[..., bytes]) -> None:
    first = services.dataset_import(key="dup-v1", source=io.BytesIO(jsonl(GOOD)))
    with pytest.raises(services.Conflict):
        services.dataset_import(key="dup-v1", source=io.BytesIO(jsonl(GOOD, GOOD)))
    assert Dataset.objects.get(key="dup-v1").sha256 == first.sha256
    root = Path(settings.TUNIX_DATASETS_ROOT)
    assert sorted(p.name for p in root.iterdir()) == ["dup-v1.jsonl"]


def test_streaming_validation_accepts_chunks_split_anywhere(jsonl: Callable[..., bytes]) -> None:
    data = jsonl(*[{"prompt": f"p{i} é", "completion": "c€"} for i in range(50)])
    for size in (1, 2, 3, 7, 64):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        stats = validate_stream(chunks, max_bytes=10**6, max_record_bytes=1000)
        assert stats.record_count == 50


def test_command_imports_the_demo_dataset() -> None:
    out = io.StringIO()
    call_command("import_dataset", str(DEMO_DATASET), "--key", "tunix-demo-v1", stdout=out)
    assert "imported tunix-demo-v1: 64 records" in out.getvalue()
    assert Dataset.objects.get(key="tunix-demo-v1").record_count == 64
    out = io.StringIO()
    call_command(
        "import_dataset", str(DEMO_DATASET), "--key", "tunix-demo-v1", "--skip-existing", stdout=out
    )
    assert "already registered" in out.getvalue()


def test_command_reports_bad_files_clearly(tmp_path: Path, jsonl: Callable[..., bytes]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(GOOD, "{oops"))
    with pytest.raises(CommandError, match=r"bad.jsonl: line 2: invalid JSON"):
        call_command("import_dataset", str(bad), "--key", "bad-v1")
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_dataset", str(tmp_path / "missing.jsonl"), "--key", "m-v1")
    with pytest.raises(CommandError, match="dataset key must match"):
        call_command("import_dataset", str(bad), "--key", "../evil")
    assert _nothing_left()
