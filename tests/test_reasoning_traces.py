"""Reasoning traces (the replaced service's JSONL: prompt, final_answer, steps, meta,
trace_version) import as prompt/completion datasets, with or without their reasoning steps, and
then train, dry-run and checksum like any other dataset."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from runs import services, trainer
from runs.datasets import DatasetError, validate_stream
from runs.models import Dataset, TunixRun
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

DATASETS = "/api/tunix/datasets"


def trace(prompt: str, answer: str, *steps: str, **extra: Any) -> dict[str, Any]:
    """A record as the replaced service exported it."""
    return {
        "trace_version": "1.0",
        "prompt": prompt,
        "final_answer": answer,
        "steps": [{"i": i, "type": "reasoning", "content": text} for i, text in enumerate(steps)],
        "meta": {"source": "test", "index": 1},
        **extra,
    }


ADD = trace("What is 2 + 3?", "5", "Start from 2.", "Count up three: 3, 4, 5.")
REVERSE = trace("Reverse 'abc'.", "cba", "Read the letters from the end.")
WITH_REASONING = {
    "prompt": "What is 2 + 3?",
    "completion": "Reasoning:\n1. Start from 2.\n2. Count up three: 3, 4, 5.\nAnswer: 5",
}


def stored(dataset: Dataset) -> list[dict[str, Any]]:
    path = Path(settings.TUNIX_DATASETS_ROOT) / dataset.file_path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def leftovers() -> list[str]:
    root = Path(settings.TUNIX_DATASETS_ROOT)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def upload(client: APIClient, key: str, data: bytes, **fields: str) -> Any:
    form = {"key": key, "file": SimpleUploadedFile("traces.jsonl", data), **fields}
    return client.post(DATASETS, form, format="multipart")


def test_a_trace_file_imports_with_its_reasoning_by_default(jsonl: Callable[..., bytes]) -> None:
    dataset = services.dataset_import(key="traces-v1", source=io.BytesIO(jsonl(ADD, REVERSE)))

    assert (dataset.format, dataset.record_count) == ("prompt_completion", 2)
    assert stored(dataset) == [
        WITH_REASONING,
        {
            "prompt": "Reverse 'abc'.",
            "completion": "Reasoning:\n1. Read the letters from the end.\nAnswer: cba",
        },
    ]
    # The registry describes the stored file: what the dry-run checks and the trainer reads.
    data = (Path(settings.TUNIX_DATASETS_ROOT) / dataset.file_path).read_bytes()
    assert dataset.sha256 == hashlib.sha256(data).hexdigest()
    assert dataset.size_bytes == len(data)


def test_omitting_the_reasoning_keeps_the_final_answer_alone(
    jsonl: Callable[..., bytes],
) -> None:
    dataset = services.dataset_import(
        key="answers-v1", source=io.BytesIO(jsonl(ADD, REVERSE)), reasoning="omit"
    )
    assert stored(dataset) == [
        {"prompt": "What is 2 + 3?", "completion": "5"},
        {"prompt": "Reverse 'abc'.", "completion": "cba"},
    ]


def test_steps_as_strings_no_steps_blank_lines_and_unicode(jsonl: Callable[..., bytes]) -> None:
    data = jsonl(
        "",
        {"prompt": "Ünïcode?", "final_answer": "ja", "steps": ["Schritt eins", "Schritt zwei"]},
        "",
        {"prompt": "p", "final_answer": "a", "steps": [], "trace_version": "1.0"},
        "   ",
    )
    dataset = services.dataset_import(key="mixed-steps-v1", source=io.BytesIO(data))
    assert dataset.record_count == 2
    assert stored(dataset) == [
        {
            "prompt": "Ünïcode?",
            "completion": "Reasoning:\n1. Schritt eins\n2. Schritt zwei\nAnswer: ja",
        },
        # No steps: the answer keeps the layout every other completion has.
        {"prompt": "p", "completion": "Answer: a"},
    ]


@pytest.mark.parametrize(
    ("records", "line", "reason"),
    [
        ([ADD, {"prompt": "p", "steps": []}], 2, "missing field 'final_answer'"),
        ([{"final_answer": "a", "steps": []}], 1, "missing field 'prompt'"),
        ([{"prompt": "p", "final_answer": "a"}], 1, "missing field 'steps'"),
        ([{"prompt": "p", "trace_version": "1.0"}], 1, "missing field 'final_answer'"),
        (
            [{"prompt": "p", "final_answer": " ", "steps": []}],
            1,
            "'final_answer' must not be empty",
        ),
        ([{"prompt": "p", "final_answer": 5, "steps": []}], 1, "'final_answer' must be a string"),
        ([{"prompt": "p", "final_answer": "a", "steps": "think"}], 1, "'steps' must be a list"),
        ([{**ADD, "steps": [{"i": 0, "content": 7}]}], 1, "steps[0].content must be a string"),
        ([{**ADD, "steps": [{"i": 0, "content": " "}]}], 1, "steps[0].content must not be empty"),
        ([{**ADD, "steps": ["a", 3]}], 1, "steps[1] must be an object"),
        ([{**ADD, "steps": [{"i": 0, "content": "a"}, {"i": 0, "content": "b"}]}], 1, "repeats"),
        ([{**ADD, "steps": [{"i": -1, "content": "a"}]}], 1, "steps[0].i must be a non-negative"),
        ([{**ADD, "meta": "x"}], 1, "'meta' must be an object"),
        ([{**ADD, "trace_version": 1}], 1, "'trace_version' must be a string"),
        ([ADD, {"prompt": "p", "completion": "c"}], 2, "do not mix formats"),
        ([{"prompt": "p", "completion": "c"}, ADD], 2, "do not mix formats"),
    ],
)
def test_a_bad_trace_line_is_named_and_nothing_is_kept(
    jsonl: Callable[..., bytes], records: list[Any], line: int, reason: str
) -> None:
    with pytest.raises(services.ServiceError) as caught:
        services.dataset_import(key="bad-v1", source=io.BytesIO(jsonl(*records)))
    assert caught.value.message.startswith(f"line {line}: ")
    assert reason in caught.value.message
    assert caught.value.field == "file"
    assert not Dataset.objects.exists()
    assert leftovers() == []


def test_a_converted_record_over_the_record_limit_is_refused(
    settings: Any, jsonl: Callable[..., bytes]
) -> None:
    # Short in the upload, long once rendered: the stored file must pass the same limit when
    # the dry-run validates it again.
    settings.TUNIX_DATASET_MAX_RECORD_BYTES = 400
    many = {"prompt": "p", "final_answer": "a", "steps": ["x"] * 70}
    assert len(json.dumps(many)) < 400
    with pytest.raises(services.ServiceError, match="line 1: record longer than 400 bytes"):
        services.dataset_import(key="long-v1", source=io.BytesIO(jsonl(many)))
    assert leftovers() == []


def test_the_stored_format_is_all_the_dry_run_and_the_trainer_see(
    jsonl: Callable[..., bytes],
) -> None:
    dataset = services.dataset_import(key="traces-v1", source=io.BytesIO(jsonl(ADD, REVERSE)))
    path = Path(settings.TUNIX_DATASETS_ROOT) / dataset.file_path
    with path.open("rb") as handle:
        stats = validate_stream(handle, max_bytes=10**6, max_record_bytes=10**5)
    assert (stats.format, stats.record_count, stats.sha256) == (
        "prompt_completion",
        2,
        dataset.sha256,
    )
    records = trainer.read_records(path)
    assert trainer.prompt_and_completion(records[0], tokenizer=None) == (
        WITH_REASONING["prompt"],
        WITH_REASONING["completion"],
    )
    # Without the import's choice a trace is not a stored format.
    with pytest.raises(DatasetError, match="line 1: a reasoning-trace record"):
        validate_stream(io.BytesIO(jsonl(ADD)), max_bytes=10**6, max_record_bytes=10**5)


def test_a_trace_dataset_dry_runs(operator_client: APIClient, jsonl: Callable[..., bytes]) -> None:
    assert upload(operator_client, "traces-v1", jsonl(ADD, REVERSE)).status_code == 201
    response = operator_client.post(
        "/api/tunix/run",
        {"dataset_key": "traces-v1", "model_id": "google/gemma-3-270m"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed", response.json()
    assert "records:          2" in response.json()["stdout"]
    assert TunixRun.objects.get().status == "completed"


def test_the_api_upload_takes_the_reasoning_choice(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    default = upload(operator_client, "with-v1", jsonl(ADD))
    omitted = upload(operator_client, "without-v1", jsonl(ADD), reasoning="omit")

    assert (default.status_code, omitted.status_code) == (201, 201)
    assert default.json()["format"] == omitted.json()["format"] == "prompt_completion"
    assert stored(Dataset.objects.get(key="with-v1")) == [WITH_REASONING]
    assert stored(Dataset.objects.get(key="without-v1"))[0]["completion"] == "5"
    # Other formats are stored as uploaded, whatever the choice.
    plain = jsonl({"prompt": "p", "completion": "c"})
    assert upload(operator_client, "plain-v1", plain, reasoning="omit").status_code == 201
    assert (Path(settings.TUNIX_DATASETS_ROOT) / "plain-v1.jsonl").read_bytes() == plain


def test_an_unknown_reasoning_choice_is_a_400_naming_the_field(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    body = problem(upload(operator_client, "x-v1", jsonl(ADD), reasoning="some"), 400)
    assert body["errors"][0]["field"] == "reasoning"
    assert not Dataset.objects.exists()
    assert leftovers() == []
    with pytest.raises(services.ServiceError) as caught:
        services.dataset_import(key="x-v1", source=io.BytesIO(jsonl(ADD)), reasoning="some")
    assert caught.value.field == "reasoning"


def test_a_bad_trace_line_over_the_api_names_the_line(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    data = jsonl(ADD, {**REVERSE, "steps": [{"i": 0}]})
    body = problem(upload(operator_client, "bad-v1", data), 400)
    assert body["errors"] == [
        {"field": "file", "message": "line 2: steps[0].content must be a string"}
    ]
    assert not Dataset.objects.exists()
    assert leftovers() == []


def test_the_command_takes_the_reasoning_choice(
    tmp_path: Path, jsonl: Callable[..., bytes]
) -> None:
    source = tmp_path / "traces.jsonl"
    source.write_bytes(jsonl(ADD, REVERSE))
    out = io.StringIO()
    call_command("import_dataset", str(source), "--key", "t-v1", "--reasoning", "omit", stdout=out)
    assert "imported t-v1: 2 records (prompt_completion)" in out.getvalue()
    assert stored(Dataset.objects.get(key="t-v1"))[1] == {
        "prompt": "Reverse 'abc'.",
        "completion": "cba",
    }
    call_command("import_dataset", str(source), "--key", "t-v2", stdout=io.StringIO())
    assert stored(Dataset.objects.get(key="t-v2"))[0] == WITH_REASONING
    with pytest.raises(CommandError):
        call_command("import_dataset", str(source), "--key", "t-v3", "--reasoning", "maybe")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(ADD, {"prompt": "p", "steps": []}))
    with pytest.raises(CommandError, match=r"bad.jsonl: line 2: missing field 'final_answer'"):
        call_command("import_dataset", str(bad), "--key", "t-v4")
