"""JSONL dataset validation: streaming, bounded, and precise about the first bad line.

Pure Python (no Django) so the worker's dry-run and the import path share one validator.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, cast

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
CHAT_ROLES = frozenset({"system", "user", "assistant"})
FORMAT_PROMPT_COMPLETION = "prompt_completion"
FORMAT_CHAT = "chat"


class DatasetError(ValueError):
    """A dataset (or its key) was refused; ``line`` is 1-based when a record is at fault."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise DatasetError(
            "dataset key must match ^[a-z0-9][a-z0-9_.-]{0,127}$ "
            "(lower-case name-version, e.g. tunix-demo-v1)"
        )
    if ".." in key:
        raise DatasetError("dataset key must not contain '..'")
    return key


@dataclass(frozen=True)
class DatasetStats:
    format: str
    record_count: int
    size_bytes: int
    sha256: str
    prompt_chars: int
    completion_chars: int

    @property
    def tokens_estimate(self) -> int:
        # About four characters a token for English text with a sub-word tokenizer.
        return (self.prompt_chars + self.completion_chars + 3) // 4


def _record_format(record: Any) -> tuple[str, int, int]:
    """Return (format, prompt chars, completion chars) or raise with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        prompt = completion = 0
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(f"messages[{index}] must be an object")
            role, content = message.get("role"), message.get("content")
            if role not in CHAT_ROLES:
                raise ValueError(f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}")
            if not isinstance(content, str):
                raise ValueError(f"messages[{index}].content must be a string")
            if role == "assistant":
                completion += len(content)
            else:
                prompt += len(content)
        if messages[-1].get("role") != "assistant":
            raise ValueError("the last message must come from the assistant")
        return FORMAT_CHAT, prompt, completion
    for field in ("prompt", "completion"):
        if field not in record:
            raise ValueError(f"missing field '{field}' (or use 'messages')")
        if not isinstance(record[field], str):
            raise ValueError(f"field '{field}' must be a string")
    if not record["completion"].strip():
        raise ValueError("field 'completion' must not be empty")
    return FORMAT_PROMPT_COMPLETION, len(record["prompt"]), len(record["completion"])


def validate_stream(
    chunks: Iterable[bytes] | IO[bytes],
    *,
    max_bytes: int,
    max_record_bytes: int,
    sink: IO[bytes] | None = None,
) -> DatasetStats:
    """Validate JSONL read from ``chunks``, copying the bytes to ``sink`` as they pass.

    Raises DatasetError naming the first bad line. Memory stays bounded by max_record_bytes.
    """
    digest = hashlib.sha256()
    size = 0
    count = prompt_chars = completion_chars = 0
    fmt: str | None = None
    line_no = 0
    pending = b""

    def check(raw: bytes) -> None:
        nonlocal count, prompt_chars, completion_chars, fmt
        if len(raw) > max_record_bytes:
            raise DatasetError(f"record longer than {max_record_bytes} bytes", line=line_no)
        text = raw.strip()
        if not text:
            return  # blank lines are allowed and ignored
        try:
            record = json.loads(text)
        except UnicodeDecodeError:
            raise DatasetError("not valid UTF-8", line=line_no) from None
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"invalid JSON: {exc.msg} (column {exc.colno})", line=line_no
            ) from None
        except RecursionError:
            raise DatasetError("JSON nested too deeply", line=line_no) from None
        try:
            record_fmt, p_chars, c_chars = _record_format(record)
        except ValueError as exc:
            raise DatasetError(str(exc), line=line_no) from None
        if fmt is None:
            fmt = record_fmt
        elif record_fmt != fmt:
            raise DatasetError(
                f"record is {record_fmt} but earlier records are {fmt}; do not mix formats",
                line=line_no,
            )
        count += 1
        prompt_chars += p_chars
        completion_chars += c_chars

    if isinstance(chunks, Iterable) and not hasattr(chunks, "read"):
        iterable: Iterable[bytes] = chunks
    else:
        stream = cast("IO[bytes]", chunks)
        iterable = iter(lambda: stream.read(65536), b"")
    for chunk in iterable:
        size += len(chunk)
        if size > max_bytes:
            raise DatasetError(f"file larger than {max_bytes} bytes")
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
        pending += chunk
        start = 0
        while (newline := pending.find(b"\n", start)) >= 0:
            line_no += 1
            check(pending[start:newline])
            start = newline + 1
        pending = pending[start:]
        if len(pending) > max_record_bytes:
            raise DatasetError(f"record longer than {max_record_bytes} bytes", line=line_no + 1)
    if pending:
        line_no += 1
        check(pending)
    if count == 0 or fmt is None:
        raise DatasetError("dataset has no records")
    return DatasetStats(
        format=fmt,
        record_count=count,
        size_bytes=size,
        sha256=digest.hexdigest(),
        prompt_chars=prompt_chars,
        completion_chars=completion_chars,
    )
