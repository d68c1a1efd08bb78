"""How a generated completion is scored against the held-out reference, each a number in [0, 1].

A scorer is a small class with ``score(prediction, reference) -> float``; ``SCORERS`` names
them, and the trainer reports each one's mean under its name (see runs/trainer.py). Importing
this module is cheap (the web process does, for the metric names): a scorer that needs a
library imports it when it is made.

Normalisation (``normalise``) follows the SQuAD evaluation script, with Unicode in mind:
case-folded, punctuation removed (ASCII punctuation and every Unicode punctuation character),
the English articles "a", "an" and "the" dropped, and runs of whitespace collapsed to one
space.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _is_punctuation(char: str) -> bool:
    # string.punctuation has ASCII symbols such as "$" and "+" that Unicode files under S*, and
    # Unicode has punctuation such as "¿" and "。" that string.punctuation lacks: drop both.
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalise(text: str) -> str:
    """SQuAD-style normalisation (see the module docstring)."""
    text = "".join(c for c in text.casefold() if not _is_punctuation(c))
    return " ".join(_ARTICLES.sub(" ", text).split())


class Scorer(ABC):
    """Scores one prediction against its reference; higher is better, 1.0 is a match."""

    label: ClassVar[str]  # how pages and rankings name it ("best ROUGE-L")

    @abstractmethod
    def score(self, prediction: str, reference: str) -> float: ...


class ExactMatch(Scorer):
    """1.0 when prediction and reference are equal once normalised, else 0.0."""

    label = "exact match"

    def score(self, prediction: str, reference: str) -> float:
        return float(normalise(prediction) == normalise(reference))


class TokenF1(Scorer):
    """The harmonic mean of precision and recall of the normalised words, counted as a
    multiset (SQuAD's F1). Two empty texts agree (1.0); one empty text scores 0.0."""

    label = "token F1"

    def score(self, prediction: str, reference: str) -> float:
        predicted, expected = normalise(prediction).split(), normalise(reference).split()
        if not predicted or not expected:
            return float(predicted == expected)
        shared = sum((Counter(predicted) & Counter(expected)).values())
        if shared == 0:
            return 0.0
        precision, recall = shared / len(predicted), shared / len(expected)
        return 2 * precision * recall / (precision + recall)


class RougeL(Scorer):
    """ROUGE-L F-measure (longest common subsequence of words) from Google's rouge-score
    package, without stemming.

    rouge-score's tokenizer lower-cases and keeps only ASCII letters and digits: text in
    other scripts has no tokens for it, and a text without tokens scores 0.0 against
    anything, as the package has it. The other scorers cover such text."""

    label = "ROUGE-L"

    def __init__(self) -> None:
        # rouge-score imports NLTK (about a second): paid by the trainer, not by importers.
        from rouge_score import rouge_scorer

        self._scorer: Any = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def score(self, prediction: str, reference: str) -> float:
        result = self._scorer.score(target=reference, prediction=prediction)
        return float(result["rougeL"].fmeasure)


SCORERS: dict[str, type[Scorer]] = {
    "exact_match": ExactMatch,
    "token_f1": TokenF1,
    "rouge_l": RougeL,
}
SCORER_NAMES = tuple(SCORERS)


def score_all(scorers: dict[str, Scorer], prediction: str, reference: str) -> dict[str, float]:
    """Every scorer's score of one prediction, by name."""
    return {name: scorer.score(prediction, reference) for name, scorer in scorers.items()}


def means(scores: list[dict[str, float]]) -> dict[str, float]:
    """Each scorer's mean over ``scores`` (one dict per item, the same names in each)."""
    names = scores[0] if scores else {}
    return {name: math.fsum(s[name] for s in scores) / len(scores) for name in names}
