"""The preference (DPO, ORPO) and prompt_answer (GRPO) formats: validated line by line like the
others, never mixed with another format in one file, and matched to the algorithms that train
on them."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runs import datasets
from runs.algorithms import ALGORITHMS, format_refusal
from runs.datasets import DatasetError, DatasetStats, validate_stream
from runs.rewards import parse_number

DEMO = Path(__file__).resolve().parent.parent / "runs" / "demo"
PREFERENCE_DEMO = DEMO / "tunix-demo-preference-v1.jsonl"
MATH_DEMO = DEMO / "tunix-demo-math-v1.jsonl"

PREF = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
CONTEXT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Capital of France?"},
]
PREF_CHAT = {
    "messages": CONTEXT,
    "chosen": {"role": "assistant", "content": "Paris."},
    "rejected": "Lyon.",
}
QA = {"prompt": "What is 2 + 2? End with Answer: <number>.", "answer": "4"}
PC = {"prompt": "2+2?", "completion": "4"}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
TRACE = {"prompt": "2+3?", "final_answer": "5", "steps": ["Count up from 2."]}


def check(data: bytes, **options: Any) -> DatasetStats:
    return validate_stream(io.BytesIO(data), max_bytes=10**6, max_record_bytes=10**4, **options)


def pref(**changes: Any) -> dict[str, Any]:
    return {key: value for key, value in {**PREF, **changes}.items() if value is not None}


def pref_chat(**changes: Any) -> dict[str, Any]:
    return {key: value for key, value in {**PREF_CHAT, **changes}.items() if value is not None}


def qa(**changes: Any) -> dict[str, Any]:
    return {key: value for key, value in {**QA, **changes}.items() if value is not None}


def test_a_preference_file_is_stored_as_uploaded_and_counts_chosen_as_completion(
    jsonl: Callable[..., bytes],
) -> None:
    data = jsonl(PREF, "", pref(chosen="It is Paris."))
    sink = io.BytesIO()
    stats = check(data, sink=sink)
    assert (stats.format, stats.record_count, stats.source_format) == ("preference", 2, "")
    assert (stats.prompt_chars, stats.completion_chars) == (2 * 18, len("Paris.It is Paris."))
    assert sink.getvalue() == data
    assert stats.size_bytes == len(data)


def test_the_chat_form_takes_message_or_string_responses_after_a_user_turn(
    jsonl: Callable[..., bytes],
) -> None:
    string_chosen = pref_chat(chosen="Paris.", rejected={"role": "assistant", "content": "Nice."})
    stats = check(jsonl(PREF_CHAT, string_chosen))
    assert (stats.format, stats.record_count) == ("preference", 2)
    context_chars = sum(len(m["content"]) for m in CONTEXT)  # assistant turns included
    assert (stats.prompt_chars, stats.completion_chars) == (2 * context_chars, 2 * len("Paris."))


def test_the_two_preference_forms_may_share_a_file(jsonl: Callable[..., bytes]) -> None:
    assert check(jsonl(PREF, PREF_CHAT)).format == "preference"


def test_a_prompt_answer_file_takes_string_and_number_answers(
    jsonl: Callable[..., bytes],
) -> None:
    data = jsonl(QA, qa(answer=12), qa(answer=-0.5), qa(answer="Paris"))
    sink = io.BytesIO()
    stats = check(data, sink=sink)
    assert (stats.format, stats.record_count) == ("prompt_answer", 4)
    assert stats.prompt_chars == 4 * len(QA["prompt"])
    assert stats.completion_chars == len("4") + len("12") + len("-0.5") + len("Paris")
    assert sink.getvalue() == data  # numbers are stored as written, not converted


@pytest.mark.parametrize(
    ("answer", "text"),
    [("42", "42"), (" 42 ", " 42 "), (42, "42"), (42.0, "42.0"), (0.1, "0.1"), (1e21, "1e+21")],
)
def test_answer_text_is_what_the_rewards_compare(answer: str | int | float, text: str) -> None:
    assert datasets.answer_text(answer) == text


MISSING_REJECTED = "missing field 'rejected' (a preference record has chosen and rejected)"
MISSING_CHOSEN = "missing field 'chosen' (a preference record has chosen and rejected)"
SAME = "'chosen' and 'rejected' are the same response: nothing to prefer"
USER_LAST = "the last message must come from the user (chosen and rejected answer it)"
BAD_ROLE = "messages[0].role must be one of ['assistant', 'system', 'user']"
MISSING_PROMPT = "missing field 'prompt' (a prompt_answer record has prompt and answer)"


def mixed(record_format: str, file_format: str) -> str:
    return f"record is {record_format} but earlier records are {file_format}; do not mix formats"


BAD_LINES: list[tuple[list[Any], int, str]] = [
    # preference, prompt form
    ([PREF, pref(rejected=None)], 2, MISSING_REJECTED),
    ([pref(chosen=None)], 1, MISSING_CHOSEN),
    ([pref(prompt=None)], 1, "missing field 'prompt' (or use 'messages')"),
    ([pref(prompt=3)], 1, "field 'prompt' must be a string"),
    ([PREF, PREF, pref(prompt=" \n")], 3, "field 'prompt' must not be empty"),
    ([pref(chosen="")], 1, "field 'chosen' must not be empty"),
    ([pref(rejected="   ")], 1, "field 'rejected' must not be empty"),
    ([pref(chosen=["Paris."])], 1, "field 'chosen' must be a string"),
    (
        [pref(chosen={"role": "assistant", "content": "Paris."})],
        1,
        "field 'chosen' must be a string",
    ),
    ([PREF, pref(rejected="Paris.")], 2, SAME),
    ([pref(chosen=" Paris.\n", rejected="Paris.")], 1, SAME),
    # preference, chat form
    ([pref_chat(messages=[])], 1, "'messages' must be a non-empty list"),
    ([pref_chat(messages=[{"role": "robot", "content": "x"}])], 1, BAD_ROLE),
    (
        [pref_chat(messages=[{"role": "user", "content": 1}])],
        1,
        "messages[0].content must be a string",
    ),
    # A context ending with the assistant's message makes a chat record (see below).
    ([PREF_CHAT, pref_chat(messages=CONTEXT[:3])], 2, mixed("chat", "preference")),
    ([pref_chat(messages=CONTEXT[:1])], 1, USER_LAST),
    (
        [pref_chat(messages=[*CONTEXT[:3], {"role": "user", "content": " "}])],
        1,
        "messages[3].content must not be empty",
    ),
    (
        [pref_chat(chosen={"role": "user", "content": "Paris."})],
        1,
        "chosen.role must be 'assistant'",
    ),
    ([pref_chat(chosen={"content": "Paris."})], 1, "chosen.role must be 'assistant'"),
    ([pref_chat(rejected={"role": "assistant"})], 1, "rejected.content must be a string"),
    ([pref_chat(rejected=5)], 1, "field 'rejected' must be an assistant message or a string"),
    (
        [pref_chat(chosen={"role": "assistant", "content": ""})],
        1,
        "field 'chosen' must not be empty",
    ),
    ([pref_chat(rejected=None)], 1, MISSING_REJECTED),
    ([PREF_CHAT, pref_chat(rejected=" Paris. ")], 2, SAME),
    # prompt_answer
    ([QA, {"answer": "4"}], 2, MISSING_PROMPT),
    ([qa(prompt=7)], 1, "field 'prompt' must be a string"),
    ([qa(prompt="")], 1, "field 'prompt' must not be empty"),
    ([qa(answer="")], 1, "field 'answer' must not be empty"),
    ([qa(answer=" \t")], 1, "field 'answer' must not be empty"),
    ([qa(answer=True)], 1, "field 'answer' must be a string or a number"),
    ([qa(answer=[4])], 1, "field 'answer' must be a string or a number"),
    ([qa(answer={"value": 4})], 1, "field 'answer' must be a string or a number"),
    ([QA, '{"prompt": "p", "answer": null}'], 2, "field 'answer' must be a string or a number"),
    (['{"prompt": "p", "answer": NaN}'], 1, "field 'answer' must be a finite number"),
    (['{"prompt": "p", "answer": -Infinity}'], 1, "field 'answer' must be a finite number"),
    (['{"prompt": "p", "answer": 1e400}'], 1, "field 'answer' must be a finite number"),
    # the first record decides the file's format
    ([PREF, PC], 2, mixed("prompt_completion", "preference")),
    ([PC, PREF], 2, mixed("preference", "prompt_completion")),
    ([CHAT, PREF_CHAT], 2, mixed("preference", "chat")),
    ([QA, QA, PREF], 3, mixed("preference", "prompt_answer")),
    ([PC, "", QA], 3, mixed("prompt_answer", "prompt_completion")),
    ([QA, CHAT], 2, mixed("chat", "prompt_answer")),
]


@pytest.mark.parametrize(("records", "line", "reason"), BAD_LINES)
def test_a_bad_line_is_refused_with_its_number_and_reason(
    jsonl: Callable[..., bytes], records: list[Any], line: int, reason: str
) -> None:
    with pytest.raises(DatasetError) as caught:
        check(jsonl(*records))
    assert (caught.value.line, caught.value.reason) == (line, reason)
    assert str(caught.value) == f"line {line}: {reason}"


def test_a_trace_file_does_not_take_prompt_answer_records(jsonl: Callable[..., bytes]) -> None:
    with pytest.raises(DatasetError) as caught:
        check(jsonl(TRACE, QA), reasoning="include")
    assert (caught.value.line, caught.value.reason) == (
        2,
        mixed("prompt_answer", "reasoning_trace"),
    )


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        # Keys a format does not name are ignored, as they always were.
        ({**PC, "chosen": "x", "answer": "y"}, "prompt_completion"),
        ({**CHAT, "answer": "y"}, "chat"),
        ({**QA, "steps": ["think"], "meta": {"source": "gsm8k"}}, "prompt_answer"),
        ({**PREF, "steps": ["think"], "id": 7}, "preference"),
        # Records with a reply of their own read as they did before the preference format:
        # a chat file holding whole conversations as chosen and rejected stays a chat file.
        ({**CHAT, "chosen": CHAT["messages"], "rejected": []}, "chat"),
        ({**PREF_CHAT, "messages": CONTEXT[:3]}, "chat"),
        ({**PC, "rejected": "no"}, "prompt_completion"),
        # A trace is known by its final_answer, whatever else it carries (stored converted).
        ({**TRACE, "answer": "5"}, "prompt_completion"),
        ({**TRACE, "chosen": "5", "rejected": "6"}, "prompt_completion"),
        # Steps alone make a trace only without a newer format's field.
        ({"prompt": "2+3?", "steps": ["Count."], "answer": "5"}, "prompt_answer"),
    ],
)
def test_which_format_a_record_has(record: dict[str, Any], fmt: str) -> None:
    stats = check(json.dumps(record).encode(), reasoning="omit")
    assert stats.format == fmt


def test_a_trace_needs_an_import_to_be_converted_and_the_refusal_lists_the_formats(
    jsonl: Callable[..., bytes],
) -> None:
    with pytest.raises(DatasetError) as caught:
        check(jsonl(TRACE))
    assert caught.value.reason.endswith(
        "stored datasets hold prompt_completion, chat, preference, prompt_answer records"
    )


def test_bounds_apply_to_the_new_formats(jsonl: Callable[..., bytes]) -> None:
    data = jsonl(PREF, pref(chosen="x" * 200))
    with pytest.raises(DatasetError) as caught:
        validate_stream(io.BytesIO(data), max_bytes=10**6, max_record_bytes=100)
    assert str(caught.value) == "line 2: record longer than 100 bytes"
    with pytest.raises(DatasetError, match="file larger than 50 bytes"):
        validate_stream(io.BytesIO(data), max_bytes=50, max_record_bytes=10**4)


@pytest.mark.parametrize("path", [PREFERENCE_DEMO, MATH_DEMO], ids=lambda path: path.name)
def test_the_demo_files_validate_in_any_chunking(path: Path) -> None:
    data = path.read_bytes()
    whole = check(data)
    for size in (1, 7, 4096):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        stats = validate_stream(chunks, max_bytes=10**6, max_record_bytes=10**4)
        assert stats == whole


def test_the_preference_demo_has_32_distinct_pairs() -> None:
    stats = check(PREFERENCE_DEMO.read_bytes())
    assert (stats.format, stats.record_count) == ("preference", 32)
    records = [json.loads(line) for line in PREFERENCE_DEMO.read_text().splitlines()]
    assert len({record["prompt"] for record in records}) == 32
    assert all(set(record) == {"prompt", "chosen", "rejected"} for record in records)


def test_the_math_demo_asks_for_an_answer_line_and_answers_with_numbers() -> None:
    stats = check(MATH_DEMO.read_bytes())
    assert (stats.format, stats.record_count) == ("prompt_answer", 32)
    records = [json.loads(line) for line in MATH_DEMO.read_text().splitlines()]
    assert len({record["prompt"] for record in records}) == 32
    for record in records:
        assert set(record) == {"prompt", "answer"}
        assert record["prompt"].endswith('End your reply with a line "Answer: <number>".')
        assert parse_number(record["answer"]) is not None, record


# Each algorithm's formats and format_refusal: what a run of each algorithm may train on.


def test_every_format_an_algorithm_takes_is_a_stored_format() -> None:
    taken = set().union(*(algorithm.formats for algorithm in ALGORITHMS.values()))
    assert taken == set(datasets.STORED_FORMATS)
    assert tuple(ALGORITHMS) == ("sft", "dpo", "orpo", "grpo")


@pytest.mark.parametrize(
    ("algorithm", "fmt"),
    [
        ("sft", "prompt_completion"),
        ("sft", "chat"),
        ("dpo", "preference"),
        ("orpo", "preference"),
        ("grpo", "prompt_answer"),
    ],
)
def test_an_algorithm_takes_its_formats(algorithm: str, fmt: str) -> None:
    assert format_refusal(algorithm, fmt) is None


@pytest.mark.parametrize(
    ("algorithm", "fmt", "key", "reason"),
    [
        (
            "dpo",
            "prompt_completion",
            "tunix-demo-v1",
            "dpo trains on preference pairs {prompt, chosen, rejected}; "
            "dataset tunix-demo-v1 is prompt_completion (sft trains on it)",
        ),
        (
            "orpo",
            "prompt_answer",
            "",
            "orpo trains on preference pairs {prompt, chosen, rejected}; "
            "the dataset is prompt_answer (grpo trains on it)",
        ),
        (
            "grpo",
            "preference",
            "pairs-v1",
            "grpo trains on prompts with a reference answer {prompt, answer}; "
            "dataset pairs-v1 is preference (dpo and orpo train on it)",
        ),
        (
            "sft",
            "prompt_answer",
            "math-v1",
            "sft trains on prompt/completion or chat records; "
            "dataset math-v1 is prompt_answer (grpo trains on it)",
        ),
        (
            "grpo",
            "reasoning_trace",
            "",
            "grpo trains on prompts with a reference answer {prompt, answer}; "
            "the dataset is reasoning_trace (no algorithm trains on it)",
        ),
        ("ppo", "preference", "", "unknown algorithm 'ppo': one of sft, dpo, orpo, grpo"),
    ],
)
def test_a_refusal_says_what_the_algorithm_needs_and_who_takes_the_dataset(
    algorithm: str, fmt: str, key: str, reason: str
) -> None:
    assert format_refusal(algorithm, fmt, dataset_key=key) == reason
