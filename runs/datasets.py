"""JSONL dataset validation: streaming, bounded, and precise about the first bad line.

Pure Python (no Django) so the worker's dry-run and the import path share one validator.

Stored formats, one JSON object a line; a file's first record decides its format and every
other record must have the same one. Keys not named here are ignored (and kept in the file).

* ``prompt_completion``: ``{"prompt": str, "completion": str}``; the completion is not empty.
* ``chat``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``,
  not empty, the last message the assistant's (what SFT trains on).
* ``preference`` (DPO, ORPO), in either of two forms:

  - ``{"prompt": str, "chosen": str, "rejected": str}``;
  - ``{"messages": [context...], "chosen": response, "rejected": response}``: the context is
    checked as a chat record's messages but ends with a non-empty user message (the turn both
    responses answer); a response is an assistant message ``{"role": "assistant", "content":
    str}`` or its content as a bare string.

  None of prompt, chosen and rejected may be empty, and chosen and rejected must differ once
  surrounding whitespace is stripped. A record is a preference record when it has ``chosen``
  or ``rejected`` and no reply of its own: no ``completion``, and no ``messages`` ending with
  an assistant message. Those records are prompt_completion and chat records, their other keys
  ignored, as they were before the preference format existed (stored datasets are validated
  again before every run, so their reading must not change).
* ``prompt_answer`` (GRPO): ``{"prompt": str, "answer": str | number}``: the answer is the
  reference the rewards check (runs/rewards.py). A number (an integer, or a finite float) is
  stored as written and read as ``answer_text`` gives it; write a string to keep more digits
  than a double holds. Neither field may be empty. A record is a prompt_answer record when it
  has ``answer`` and neither ``completion`` nor ``messages`` (nor a trace's ``final_answer``).

Reasoning traces (the format of the service Tunix RT replaces: ``prompt``, ``final_answer``,
``steps``, ``meta``, ``trace_version``) are accepted on import and stored converted, as
prompt/completion records: training, the dry-run, the checksum and the record count then see
one of the stored formats, and the choice of keeping the reasoning is made once, at import.

Which algorithm trains on which format each algorithm declares (runs/algorithms/);
``runs.algorithms.format_refusal`` says why a run cannot use a dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, cast

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
CHAT_ROLES = frozenset({"system", "user", "assistant"})
FORMAT_PROMPT_COMPLETION = "prompt_completion"
FORMAT_CHAT = "chat"
FORMAT_PREFERENCE = "preference"
FORMAT_PROMPT_ANSWER = "prompt_answer"
# What a stored dataset may hold: the values of runs.models.DatasetFormat.
STORED_FORMATS = (FORMAT_PROMPT_COMPLETION, FORMAT_CHAT, FORMAT_PREFERENCE, FORMAT_PROMPT_ANSWER)
# Accepted on import only: stored as prompt_completion.
FORMAT_REASONING_TRACE = "reasoning_trace"
# Any of these, without 'completion' or 'messages', makes a record a trace; 'steps' and
# 'trace_version' only without 'final_answer' do not when the record has a field of the newer
# formats (below).
TRACE_FIELDS = ("final_answer", "steps", "trace_version")
_NEWER_FORMAT_FIELDS = ("chosen", "rejected", "answer")
# What a trace's completion holds: its steps rendered as reasoning before the final answer, or
# the final answer alone.
REASONING_INCLUDE = "include"
REASONING_OMIT = "omit"
REASONING_CHOICES = (REASONING_INCLUDE, REASONING_OMIT)
# Python's default limit on converting a digit string: the trainer reads the stored file with
# the same json module, so a longer integer could not be read back.
MAX_INT_DIGITS = 4300


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
    # The records' format as uploaded when it differs from the stored one (reasoning_trace).
    source_format: str = ""

    @property
    def tokens_estimate(self) -> int:
        # About four characters a token for English text with a sub-word tokenizer.
        return (self.prompt_chars + self.completion_chars + 3) // 4


def is_trace(record: dict[str, Any]) -> bool:
    if "messages" in record or "completion" in record:
        return False
    # Every trace accepted before the newer formats has a final_answer, and stays a trace.
    if "final_answer" in record:
        return True
    if any(name in record for name in _NEWER_FORMAT_FIELDS):
        return False
    return any(name in record for name in TRACE_FIELDS)


def answer_text(answer: str | int | float) -> str:
    """The reference answer of a prompt_answer record as text: a string as written, an
    integer's digits, a float's shortest round-trip form (``42.0``, ``0.1``, ``1e+21``)."""
    return answer if isinstance(answer, str) else repr(answer)


def response_text(response: str | dict[str, Any]) -> str:
    """A preference record's chosen or rejected response as text (a bare string, or an
    assistant message's content)."""
    return response if isinstance(response, str) else str(response["content"])


def render_trace_completion(final_answer: str, steps: list[str], reasoning: str) -> str:
    """A trace's completion. With the reasoning, the layout the replaced service trained on
    (its SFT export), so its clients' models see the completions they were trained with:

        Reasoning:
        1. <first step>
        2. <second step>
        Answer: <final answer>
    """
    if reasoning == REASONING_OMIT:
        return final_answer
    lines = [f"{number}. {text}" for number, text in enumerate(steps, 1)]
    return "\n".join([*(["Reasoning:", *lines] if lines else []), f"Answer: {final_answer}"])


def _trace_step(index: int, step: Any, seen: set[int]) -> str:
    """One step's text: an object with ``content`` (and optionally ``i`` and ``type``, as the
    replaced service wrote them) or a plain string."""
    if isinstance(step, str):
        content = step
    elif isinstance(step, dict):
        if not isinstance(step.get("content"), str):
            raise ValueError(f"steps[{index}].content must be a string")
        content = step["content"]
        if "i" in step:
            number = step["i"]
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise ValueError(f"steps[{index}].i must be a non-negative integer")
            if number in seen:
                raise ValueError(f"steps[{index}].i repeats step index {number}")
            seen.add(number)
        if "type" in step and not isinstance(step["type"], str):
            raise ValueError(f"steps[{index}].type must be a string")
    else:
        raise ValueError(f"steps[{index}] must be an object with 'content' (or a string)")
    if not content.strip():
        raise ValueError(f"steps[{index}].content must not be empty")
    return content


def trace_to_prompt_completion(record: dict[str, Any], reasoning: str) -> dict[str, str]:
    """The prompt/completion record stored for a reasoning-trace record; raises ValueError
    naming the field at fault. Steps keep the order they have in the file; ``meta`` and
    ``trace_version`` are checked for their type and not stored."""
    for name in ("prompt", "final_answer", "steps"):
        if name not in record:
            raise ValueError(f"missing field '{name}' (reasoning-trace record)")
    for name in ("prompt", "final_answer"):
        if not isinstance(record[name], str):
            raise ValueError(f"field '{name}' must be a string")
    if not record["final_answer"].strip():
        raise ValueError("field 'final_answer' must not be empty")
    if not isinstance(record["steps"], list):
        raise ValueError("field 'steps' must be a list")
    if "trace_version" in record and not isinstance(record["trace_version"], str):
        raise ValueError("field 'trace_version' must be a string")
    if record.get("meta") is not None and not isinstance(record["meta"], dict):
        raise ValueError("field 'meta' must be an object")
    seen: set[int] = set()
    steps = [_trace_step(index, step, seen) for index, step in enumerate(record["steps"])]
    completion = render_trace_completion(record["final_answer"], steps, reasoning)
    return {"prompt": record["prompt"], "completion": completion}


def _messages(messages: Any) -> tuple[list[dict[str, Any]], int, int]:
    """A chat record's messages checked, with the characters outside and inside the
    assistant's messages."""
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
    return messages, prompt, completion


def _response(record: dict[str, Any], field: str, *, chat: bool) -> str:
    """A preference record's chosen or rejected response, checked; its text."""
    if field not in record:
        raise ValueError(f"missing field '{field}' (a preference record has chosen and rejected)")
    value = record[field]
    if chat and isinstance(value, dict):
        if value.get("role") != "assistant":
            raise ValueError(f"{field}.role must be 'assistant'")
        if not isinstance(value.get("content"), str):
            raise ValueError(f"{field}.content must be a string")
    elif not isinstance(value, str):
        shape = "an assistant message or a string" if chat else "a string"
        raise ValueError(f"field '{field}' must be {shape}")
    text = response_text(value)
    if not text.strip():
        raise ValueError(f"field '{field}' must not be empty")
    return text


def _preference_format(record: dict[str, Any]) -> tuple[str, int, int]:
    chat = "messages" in record
    if chat:
        messages, user_chars, assistant_chars = _messages(record["messages"])
        # The context's assistant turns are prompt here: the responses come after them.
        prompt_chars = user_chars + assistant_chars
        last = len(messages) - 1
        if messages[last]["role"] != "user":
            raise ValueError(
                "the last message must come from the user (chosen and rejected answer it)"
            )
        if not messages[last]["content"].strip():
            raise ValueError(f"messages[{last}].content must not be empty")
    else:
        if "prompt" not in record:
            raise ValueError("missing field 'prompt' (or use 'messages')")
        if not isinstance(record["prompt"], str):
            raise ValueError("field 'prompt' must be a string")
        if not record["prompt"].strip():
            raise ValueError("field 'prompt' must not be empty")
        prompt_chars = len(record["prompt"])
    chosen = _response(record, "chosen", chat=chat)
    rejected = _response(record, "rejected", chat=chat)
    if chosen.strip() == rejected.strip():
        raise ValueError("'chosen' and 'rejected' are the same response: nothing to prefer")
    return FORMAT_PREFERENCE, prompt_chars, len(chosen)


def _prompt_answer_format(record: dict[str, Any]) -> tuple[str, int, int]:
    if "prompt" not in record:
        raise ValueError("missing field 'prompt' (a prompt_answer record has prompt and answer)")
    if not isinstance(record["prompt"], str):
        raise ValueError("field 'prompt' must be a string")
    if not record["prompt"].strip():
        raise ValueError("field 'prompt' must not be empty")
    answer = record["answer"]
    # bool is an int to Python, but true/false is no reference answer.
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        raise ValueError("field 'answer' must be a string or a number")
    if isinstance(answer, float) and not math.isfinite(answer):
        raise ValueError("field 'answer' must be a finite number")
    text = answer_text(answer)
    if not text.strip():
        raise ValueError("field 'answer' must not be empty")
    return FORMAT_PROMPT_ANSWER, len(record["prompt"]), len(text)


def _has_reply(record: dict[str, Any]) -> bool:
    """Whether the record carries its own reply: a completion, or messages ending with the
    assistant's (a prompt_completion or chat record, whatever other keys it has)."""
    if "completion" in record:
        return True
    messages = record.get("messages")
    return (
        isinstance(messages, list)
        and bool(messages)
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "assistant"
    )


def _record_format(record: Any) -> tuple[str, int, int]:
    """Return (format, prompt chars, completion chars) or raise with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if ("chosen" in record or "rejected" in record) and not _has_reply(record):
        return _preference_format(record)
    if "messages" in record:
        messages, prompt, completion = _messages(record["messages"])
        if messages[-1].get("role") != "assistant":
            raise ValueError("the last message must come from the assistant")
        return FORMAT_CHAT, prompt, completion
    if "answer" in record and "completion" not in record:
        return _prompt_answer_format(record)
    for field in ("prompt", "completion"):
        if field not in record:
            raise ValueError(f"missing field '{field}' (or use 'messages')")
        if not isinstance(record[field], str):
            raise ValueError(f"field '{field}' must be a string")
    if not record["completion"].strip():
        raise ValueError("field 'completion' must not be empty")
    return FORMAT_PROMPT_COMPLETION, len(record["prompt"]), len(record["completion"])


class _IntegerTooLong(ValueError):
    pass


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _IntegerTooLong(f"integer of {digits} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


def _encode_record(record: dict[str, str]) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # A lone surrogate (from a \ud800 escape) has no UTF-8 form; escaped, it round-trips.
        return json.dumps(record).encode()


def validate_stream(
    chunks: Iterable[bytes] | IO[bytes],
    *,
    max_bytes: int,
    max_record_bytes: int,
    sink: IO[bytes] | None = None,
    reasoning: str | None = None,
) -> DatasetStats:
    """Validate JSONL read from ``chunks``, writing the dataset to store to ``sink``.

    Files of the stored formats are written as they arrive, byte for byte. Reasoning
    traces are accepted only with ``reasoning`` (include or omit) and written converted, one
    prompt/completion record a line. Size, checksum and character counts describe what is
    written; ``max_bytes`` bounds what is read. Raises DatasetError naming the first bad line.
    Memory stays bounded by max_record_bytes.
    """
    if reasoning is not None and reasoning not in REASONING_CHOICES:
        raise DatasetError(f"reasoning must be one of {', '.join(REASONING_CHOICES)}")
    digest = hashlib.sha256()
    size = written = 0
    count = prompt_chars = completion_chars = 0
    fmt: str | None = None
    line_no = 0
    pending = b""
    held = b""  # blank lines before the first record: kept only if the file is not converted

    def emit(data: bytes) -> None:
        nonlocal written
        written += len(data)
        digest.update(data)
        if sink is not None:
            sink.write(data)

    def check(raw: bytes, ending: bytes) -> None:
        nonlocal count, prompt_chars, completion_chars, fmt, held
        if len(raw) > max_record_bytes:
            raise DatasetError(f"record longer than {max_record_bytes} bytes", line=line_no)
        text = raw.strip()
        if not text:  # blank lines are allowed and ignored
            if fmt is None:
                held += raw + ending
            elif fmt != FORMAT_REASONING_TRACE:
                emit(raw + ending)
            return
        try:
            record = json.loads(text, parse_int=_parse_int)
        except UnicodeDecodeError:
            raise DatasetError("not valid UTF-8", line=line_no) from None
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"invalid JSON: {exc.msg} (column {exc.colno})", line=line_no
            ) from None
        except _IntegerTooLong as exc:
            raise DatasetError(str(exc), line=line_no) from None
        except RecursionError:
            raise DatasetError("JSON nested too deeply", line=line_no) from None
        converted: dict[str, str] | None = None
        try:
            if isinstance(record, dict) and is_trace(record):
                if reasoning is None:
                    raise ValueError(
                        "a reasoning-trace record (final_answer, steps) is converted only on "
                        "import (reasoning=include or omit); stored datasets hold "
                        f"{', '.join(STORED_FORMATS)} records"
                    )
                converted = trace_to_prompt_completion(record, reasoning)
                record_fmt = FORMAT_REASONING_TRACE
                p_chars, c_chars = len(converted["prompt"]), len(converted["completion"])
            else:
                record_fmt, p_chars, c_chars = _record_format(record)
        except ValueError as exc:
            raise DatasetError(str(exc), line=line_no) from None
        if fmt is None:
            fmt = record_fmt
            if fmt != FORMAT_REASONING_TRACE:
                emit(held)
            held = b""
        elif record_fmt != fmt:
            raise DatasetError(
                f"record is {record_fmt} but earlier records are {fmt}; do not mix formats",
                line=line_no,
            )
        if converted is not None:
            line = _encode_record(converted)
            if len(line) > max_record_bytes:
                raise DatasetError(
                    f"record longer than {max_record_bytes} bytes once converted", line=line_no
                )
            emit(line + b"\n")
        else:
            emit(raw + ending)
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
        pending += chunk
        start = 0
        while (newline := pending.find(b"\n", start)) >= 0:
            line_no += 1
            check(pending[start:newline], b"\n")
            start = newline + 1
        pending = pending[start:]
        if len(pending) > max_record_bytes:
            raise DatasetError(f"record longer than {max_record_bytes} bytes", line=line_no + 1)
    if pending:
        line_no += 1
        check(pending, b"")
    if count == 0 or fmt is None:
        raise DatasetError("dataset has no records")
    converted_from = fmt == FORMAT_REASONING_TRACE
    return DatasetStats(
        format=FORMAT_PROMPT_COMPLETION if converted_from else fmt,
        record_count=count,
        size_bytes=written,
        sha256=digest.hexdigest(),
        prompt_chars=prompt_chars,
        completion_chars=completion_chars,
        source_format=fmt if converted_from else "",
    )
