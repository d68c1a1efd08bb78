"""GRPO rewards: exact values on known completions, called as Tunix calls them."""

from __future__ import annotations

import inspect
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from runs import rewards
from runs.rewards import REWARD_NAMES, REWARDS, final_answer, parse_number


def reward(name: str, completions: list[str], **columns: Any) -> list[float]:
    """One reward over ``completions``, with the keyword arguments Tunix passes."""
    prompts = ["What is 6 times 7?"] * len(completions)
    return REWARDS[name](prompts=prompts, completions=completions, mode="train", **columns)


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("6 times 7 is 42.\nAnswer: 42", "42"),
        ("Answer: 42", "42"),
        ("First I thought Answer: 40. Then: Answer: 42", "42"),  # the last marker counts
        ("ANSWER : 42", "42"),
        ("answer:\n\n  42\nThat is all.", "42"),  # the first non-empty line after the marker
        ("Answer: 42. Done", "42. Done"),
        ("Answer: 42.", "42."),  # cleaned when compared, not here
        ("Answer: **42**", "**42**"),
        ("Answer: 3,500", "3,500"),
        ("It costs $1,000 in all.", "1,000"),  # no marker: the last number
        ("7 minus 5 is 2", "2"),
        ("10-5=5", "5"),
        ("x2 and .5", ".5"),
        ("about 1e3", "1e3"),
        ("no number at all", None),
        ("Answer:   ", None),
        ("", None),
    ],
)
def test_the_final_answer_of_a_completion(completion: str, answer: str | None) -> None:
    assert final_answer(completion) == answer


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", Decimal(42)),
        ("42.0", Decimal(42)),
        ("1,000", Decimal(1000)),
        ("1,234,567.5", Decimal("1234567.5")),
        ("$3.50", Decimal("3.5")),
        ("-$3.50", Decimal("-3.5")),
        ("-7", Decimal(-7)),
        ("+7", Decimal(7)),
        (".5", Decimal("0.5")),
        ("1e+21", Decimal(10) ** 21),
        (" `42` ", Decimal(42)),
        ("42.", Decimal(42)),
        ("1,00", None),  # not a thousands grouping
        ("42 apples", None),
        ("forty-two", None),
        ("--5", None),
        ("-$-5", None),
        ("inf", None),
        ("NaN", None),
        ("", None),
    ],
)
def test_numbers_parse_as_written(text: str, value: Decimal | None) -> None:
    assert parse_number(text) == value


ANSWER_MATCH = [
    ("Answer: 42", "42", 1.0),
    ("Answer: 42.0", "42", 1.0),
    ("Answer: 42", "42.00", 1.0),
    ("Answer: 1,000", "1000", 1.0),
    ("Answer: 1000", "1,000", 1.0),
    ("Answer: $18", "18", 1.0),
    ("The total is 45 pages.", "45", 1.0),  # no marker: its last number
    ("Answer: 41", "42", 0.0),
    ("Answer: 42 apples", "42", 0.0),  # a number and a text: compared as texts
    ("I get 42, so Answer: 24", "42", 0.0),  # the marker wins over numbers before it
    ("Answer: 42\nor maybe 43", "42", 1.0),  # only the marker's line counts
    ("6 times 7 is 42, not 43", "42", 0.0),  # without a marker, the last number
    ("no idea", "42", 0.0),
    ("Answer: Paris", "paris", 1.0),
    ("Answer:  New   York.", "new york", 1.0),
    ("Answer: Lyon", "Paris", 0.0),
    ("Answer: a", "the", 0.0),  # texts are not stripped of articles
    ("", "42", 0.0),
]


@pytest.mark.parametrize(("completion", "answer", "expected"), ANSWER_MATCH)
def test_answer_match(completion: str, answer: str, expected: float) -> None:
    assert reward("answer_match", [completion], answer=[answer]) == [expected]


def test_answer_match_takes_tunix_batches_and_numbers_from_the_file() -> None:
    completions = ["Answer: 7", "Answer: 8", "Answer: 0.5", "Answer: 12"]
    # Tunix passes the batch's columns as NumPy arrays, one entry per completion.
    assert reward("answer_match", completions, answer=np.array(["7", "7", "0.5", "12"])) == [
        1.0,
        0.0,
        1.0,
        1.0,
    ]
    assert reward("answer_match", completions, answer=[7, 7, 0.5, 12.0]) == [1.0, 0.0, 1.0, 1.0]


def test_answer_match_needs_an_answer_for_each_completion() -> None:
    with pytest.raises(ValueError, match=r"needs the dataset's 'answer' column"):
        reward("answer_match", ["Answer: 1"])
    with pytest.raises(ValueError, match="got 1 answers for 2 completions"):
        reward("answer_match", ["Answer: 1", "Answer: 2"], answer=["1"])


FORMAT = [
    ("6 times 7 is 42.\nAnswer: 42", 1.0),
    ("Answer: 42", 1.0),
    ("Answer: 42\n\n  \n", 1.0),  # blank lines after it do not count
    ("   Answer: forty-two", 1.0),  # any value
    ("Reasoning first.\n  Answer:42", 1.0),
    ("Answer: 42\nBecause 6 times 7 is 42.", 0.5),  # text follows the answer
    ("Answer: 40\nAnswer: 42", 0.5),  # two answers
    ("Answer:\nAnswer: 42", 0.5),  # an empty answer line before it
    ("The answer is 42.", 0.0),
    ("answer: 42", 0.0),  # "Answer:" exactly
    ("So, Answer: 42", 0.0),  # at the start of a line
    ("Answer:", 0.0),
    ("Answer:   \n42", 0.0),  # the value on the marker's line
    ("", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), FORMAT)
def test_format(completion: str, expected: float) -> None:
    assert reward("format", [completion]) == [expected]


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (256, 0.0),
        (257, -1 / 768),
        (448, -0.25),
        (640, -0.5),
        (1023, -767 / 768),
        (1024, -1.0),
        (50_000, -1.0),
    ],
)
def test_length_penalty(length: int, expected: float) -> None:
    [value] = reward("length_penalty", ["x" * length])
    assert value == expected
    assert str(value) != "-0.0"


def test_rewards_return_one_float_per_completion() -> None:
    completions = ["Answer: 42", "42", "Answer: 41\nok", "x" * 2000]
    answers = ["42"] * 4
    values = {name: reward(name, completions, answer=answers) for name in REWARD_NAMES}
    assert values == {
        "answer_match": [1.0, 1.0, 0.0, 0.0],
        "format": [1.0, 0.0, 0.5, 0.0],
        "length_penalty": [0.0, 0.0, 0.0, -1.0],
    }
    assert all(type(v) is float for vs in values.values() for v in vs)


def test_the_registry_names_metrics_and_describes_each_reward() -> None:
    assert REWARD_NAMES == ("answer_match", "format", "length_penalty")
    descriptions = rewards.describe()
    assert list(descriptions) == list(REWARD_NAMES)
    for name, fn in REWARDS.items():
        # Tunix logs each reward as rewards/<__name__>.
        assert fn.__name__ == name
        # Beyond prompts and completions only **kwargs: Tunix fills a named parameter from its
        # GRPO config when a field has that name.
        parameters = inspect.signature(fn).parameters
        assert list(parameters) == ["prompts", "completions", "kwargs"]
        assert descriptions[name]
        assert "\n" not in descriptions[name]
    assert descriptions["length_penalty"].startswith("0.0 up to 256 characters")


def test_tunix_sums_the_rewards_and_logs_each_by_name(tunix_runtime: None) -> None:
    from tunix.rl.grpo.grpo_learner import GRPOConfig
    from tunix.rl.reward_manager import SequenceRewardManager

    manager = SequenceRewardManager(
        reward_fns=[REWARDS[name] for name in REWARD_NAMES], algo_config=GRPOConfig()
    )
    completions = ["Answer: 42", "I think 41\nAnswer: 41", "x" * 640 + "\nAnswer: 42"]
    result = manager(
        prompts=["p1", "p1", "p2"],
        completions=completions,
        answer=np.array(["42", "42", "42"]),
        mode="train",
    )
    penalty = -(len(completions[2]) - 256) / 768  # 651 characters
    assert result["rewards"].tolist() == pytest.approx([2.0, 1.0, 2.0 + penalty])
    metrics = result["log_metrics"]
    assert metrics["rewards/answer_match"][0].tolist() == [1.0, 0.0, 1.0]
    assert metrics["rewards/format"][0].tolist() == [1.0, 1.0, 1.0]
    assert metrics["rewards/length_penalty"][0].tolist() == [0.0, 0.0, penalty]
