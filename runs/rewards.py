"""GRPO rewards: how a generated completion is scored during reinforcement learning.

A run names the rewards it trains with (``REWARD_NAMES``); it never sends code. Only the
rewards defined here, shipped with Tunix RT, ever run.

A reward is a small class; ``REWARDS`` holds one instance of each under its name. An instance
is called the way Tunix 0.1.7 calls a reward function (``tunix/rl/reward_manager.py``)::

    reward(prompts=[...], completions=[...], mode="train", answer=[...], ...) -> list[float]

with keyword arguments only: one float per completion; ``prompts`` and every dataset column
(``answer`` for a prompt_answer dataset, as a list or NumPy array) are aligned with
``completions``, one entry per generated completion; ``mode`` and any other keyword are
accepted and ignored. Tunix sums the rewards of a run and logs each as ``rewards/<name>``, the
name being the instance's ``__name__``. It also fills in keyword parameters whose names match
a field of its GRPO config: the rewards here take nothing but ``**kwargs`` beyond the two
lists, so none is filled in.

The final answer of a completion (``final_answer``) is the text after its last ``Answer:``
marker (any case) up to the end of the first non-empty line that follows, or, without a
marker, the last number in the completion. The prompts of a prompt_answer dataset ask for a
last line ``Answer: <number>`` (runs/demo/tunix-demo-math-v1.jsonl).

Pure Python, no Django: the trainer imports it, and the web process for the names and
descriptions (``describe``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

_MARKER = re.compile(r"answer\s*:", re.IGNORECASE)
# A number as people write one: optional sign, digits (thousands may be grouped with commas),
# an optional decimal part, an optional exponent; or a bare decimal part (".5").
_NUMBER = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_IN_TEXT = re.compile(rf"(?<![\w.]){_NUMBER}")
# A whole answer that is a number; "$" allowed after the sign (prices in word problems).
_NUMBER_ANSWER = re.compile(rf"([-+]?)\$?({_NUMBER})")
# Stripped from both ends of an answer: markdown emphasis and code, quotes.
_WRAPPING = "*_`\"'"
# A line the format reward accepts: "Answer:" exactly, then a value.
_ANSWER_LINE = re.compile(r"Answer:\s*\S")


def final_answer(completion: str) -> str | None:
    """The completion's final answer (see the module docstring), or None if it has none."""
    markers = list(_MARKER.finditer(completion))
    if markers:
        after = completion[markers[-1].end() :]
        return next((line.strip() for line in after.splitlines() if line.strip()), None)
    numbers = _NUMBER_IN_TEXT.findall(completion)
    return numbers[-1] if numbers else None


def _clean(text: str) -> str:
    """An answer without surrounding whitespace, emphasis, quotes or a closing full stop."""
    text = text.strip().strip(_WRAPPING).strip()
    return text.removesuffix(".").strip().strip(_WRAPPING).strip()


def parse_number(text: str) -> Decimal | None:
    """The value of an answer that is a number ("1,000", "42.0", "$3.50", "-7", "1e+21"),
    or None. Decimal, so equal values compare equal without rounding."""
    text = _clean(text)
    match = _NUMBER_ANSWER.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:1] in "+-" and sign:
        return None  # "-$-5" or "--5": not a number anyone writes
    try:
        return Decimal(sign + digits.replace(",", ""))
    except InvalidOperation:
        return None


def answers_match(given: str, reference: str) -> bool:
    """Numerically equal when both are numbers, else equal once case-folded, cleaned and
    with runs of whitespace collapsed."""
    given_number, reference_number = parse_number(given), parse_number(reference)
    if given_number is not None and reference_number is not None:
        return given_number == reference_number
    return " ".join(_clean(given).casefold().split()) == " ".join(
        _clean(reference).casefold().split()
    )


class Reward(ABC):
    """Scores each completion; called as Tunix calls a reward function (module docstring)."""

    name: ClassVar[str]

    @property
    def __name__(self) -> str:
        # Tunix names the reward's metric and its errors after the callable's __name__.
        return self.name

    @abstractmethod
    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **kwargs: Any
    ) -> list[float]: ...

    @classmethod
    def description(cls) -> str:
        """The docstring's first paragraph on one line, for the API and its documentation."""
        paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(paragraph.split())


class AnswerMatch(Reward):
    """1.0 when the completion's final answer (the text after its last "Answer:", else its
    last number) equals the dataset's reference answer, else 0.0; numbers compare by value
    ("42.0" equals "42", "1,000" equals "1000"), other answers as case-folded text.

    Needs the dataset's ``answer`` column: a prompt_answer dataset."""

    name = "answer_match"

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **kwargs: Any
    ) -> list[float]:
        if "answer" not in kwargs:
            raise ValueError("answer_match needs the dataset's 'answer' column (prompt_answer)")
        answers = list(kwargs["answer"])
        if len(answers) != len(completions):
            raise ValueError(
                f"answer_match got {len(answers)} answers for {len(completions)} completions"
            )
        scores = []
        for completion, reference in zip(completions, answers, strict=True):
            given = final_answer(str(completion))
            # str(): a NumPy string or number from the batch, or a number from the file.
            scores.append(float(given is not None and answers_match(given, str(reference))))
        return scores


class AnswerFormat(Reward):
    """1.0 when the completion's last non-empty line is "Answer: <value>" and no other line
    starts with "Answer:"; 0.5 when an "Answer: <value>" line is there but text follows it or
    another answer line precedes it; 0.0 without one.

    "Answer:" is matched exactly (capital A, at the start of a line, spaces before it
    allowed) and needs a value on the same line."""

    name = "format"

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **kwargs: Any
    ) -> list[float]:
        return [self.score(str(completion)) for completion in completions]

    @staticmethod
    def score(completion: str) -> float:
        lines = [line.strip() for line in completion.splitlines() if line.strip()]
        answer_lines = [index for index, line in enumerate(lines) if line.startswith("Answer:")]
        if not any(_ANSWER_LINE.match(lines[index]) for index in answer_lines):
            return 0.0
        if answer_lines == [len(lines) - 1]:
            return 1.0
        return 0.5


class LengthPenalty(Reward):
    """0.0 up to 256 characters, then 1/768 less for every character more, down to -1.0 at
    1,024 characters and beyond: discourages rambling without outweighing a right answer.

    Counts characters of the completion as generated, whitespace included."""

    name = "length_penalty"
    TARGET_CHARS: ClassVar[int] = 256
    # Characters beyond the target at which the penalty reaches its floor of -1.0.
    SPAN_CHARS: ClassVar[int] = 768

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **kwargs: Any
    ) -> list[float]:
        return [self.score(str(completion)) for completion in completions]

    @classmethod
    def score(cls, completion: str) -> float:
        excess = max(0, len(completion) - cls.TARGET_CHARS)
        return 0.0 - min(1.0, excess / cls.SPAN_CHARS)  # 0.0 - 0.0 is 0.0, not -0.0


REWARDS: dict[str, Reward] = {
    "answer_match": AnswerMatch(),
    "format": AnswerFormat(),
    "length_penalty": LengthPenalty(),
}
REWARD_NAMES = tuple(REWARDS)


def describe() -> dict[str, str]:
    """Each reward's one-line description, by name."""
    return {name: type(reward).description() for name, reward in REWARDS.items()}
