"""The generation eval's scorers (runs/scorers.py), on strings whose scores are worked out by
hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runs import scorers
from tests.support.clusters import REPO_ROOT


def score(name: str, prediction: str, reference: str) -> float:
    return scorers.SCORERS[name]().score(prediction, reference)


def test_the_registry_names_exact_match_token_f1_and_rouge_l() -> None:
    assert scorers.SCORER_NAMES == ("exact_match", "token_f1", "rouge_l")


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("  The Cat,   SAT!\n", "cat sat"),
        ("¿Qué tal?", "qué tal"),  # Unicode punctuation, not only ASCII
        ("An apple a day", "apple day"),
        ("Straße", "strasse"),  # case-folded, not only lower-cased
        ("", ""),
    ],
)
def test_normalisation_folds_case_and_drops_punctuation_articles_and_extra_space(
    text: str, normalised: str
) -> None:
    assert scorers.normalise(text) == normalised


def test_exact_match_ignores_case_punctuation_and_whitespace_only() -> None:
    assert score("exact_match", "  Hello,   WORLD!! ", "hello world") == 1.0
    assert score("exact_match", "The answer is 4.", "answer is 4") == 1.0
    assert score("exact_match", "hello worlds", "hello world") == 0.0
    assert score("exact_match", "4", "four") == 0.0
    assert score("exact_match", "", "") == 1.0


def test_token_f1_of_the_cat_sat_against_cat_sat_down_is_four_fifths() -> None:
    # Normalised: [cat, sat] against [cat, sat, down] ("the" is an article): 2 shared words,
    # precision 2/2, recall 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8.
    assert score("token_f1", "the cat sat", "cat sat down") == pytest.approx(0.8)
    assert score("token_f1", "cat sat down", "the cat sat") == pytest.approx(0.8)


def test_token_f1_counts_repeated_words_once_per_occurrence() -> None:
    # [cat, cat, cat] against [cat]: 1 shared, precision 1/3, recall 1, F1 = 0.5.
    assert score("token_f1", "cat cat cat", "cat") == pytest.approx(0.5)


def test_token_f1_of_empty_texts_is_one_and_of_one_empty_text_zero() -> None:
    assert score("token_f1", "", "") == 1.0
    assert score("token_f1", " ...! ", "") == 1.0  # nothing left once normalised
    assert score("token_f1", "", "cat") == 0.0
    assert score("token_f1", "dog", "") == 0.0
    assert score("token_f1", "dog", "cat") == 0.0
    assert score("token_f1", "Dog!", "dog") == 1.0


def test_rouge_l_is_the_longest_common_subsequence_f_measure() -> None:
    # [the cat sat on the mat] against [the cat lay on a mat]: the longest common
    # subsequence is "the cat on mat", 4 of 6 words either way: F = 2/3.
    assert score("rouge_l", "the cat sat on the mat", "the cat lay on a mat") == pytest.approx(
        2 / 3
    )
    # [a b c] against [a b c d e]: 3 shared, precision 1, recall 3/5, F = 0.75.
    assert score("rouge_l", "a b c", "a b c d e") == pytest.approx(0.75)
    assert score("rouge_l", "The Cat, sat.", "the cat sat") == 1.0
    assert score("rouge_l", "dog", "cat") == 0.0


def test_rouge_l_gives_text_without_ascii_words_nothing_as_rouge_score_does() -> None:
    # rouge-score's tokenizer keeps ASCII letters and digits only; the other scorers do not.
    assert score("rouge_l", "日本語", "日本語") == 0.0
    assert score("exact_match", "日本語", "日本語") == 1.0
    assert score("rouge_l", "", "") == 0.0


@pytest.mark.parametrize("name", scorers.SCORER_NAMES)
@pytest.mark.parametrize(
    ("prediction", "reference"),
    [("", ""), ("a", ""), ("x y z", "x y"), ("Hello, world", "hello world"), ("é", "e")],
)
def test_every_score_lies_between_zero_and_one(name: str, prediction: str, reference: str) -> None:
    assert 0.0 <= score(name, prediction, reference) <= 1.0


def test_means_average_each_scorer_over_the_items() -> None:
    items = [{"exact_match": 1.0, "token_f1": 0.5}, {"exact_match": 0.0, "token_f1": 0.25}]
    assert scorers.means(items) == {"exact_match": 0.5, "token_f1": 0.375}
    assert scorers.means([]) == {}


@pytest.mark.processes
def test_importing_the_scorers_does_not_import_rouge_score() -> None:
    """The web process imports runs.scorers for the metric names; NLTK takes a second."""
    code = "import sys, runs.scorers; print(sorted({'rouge_score', 'nltk'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_every_scorer_has_a_label_a_documented_metric_and_a_ranking() -> None:
    from runs.api.serializers import RunMetricsSerializer
    from runs.progress import HIGHER_IS_BETTER, RANKING_METRICS, RESULT_KEYS

    documented = RunMetricsSerializer().fields
    for name, scorer in scorers.SCORERS.items():
        assert scorer.label
        assert name in RESULT_KEYS
        assert name in documented, f"add {name} to RunMetricsSerializer"
        assert RANKING_METRICS[name] == scorer.label
        assert name in HIGHER_IS_BETTER
