"""Reads for comparing a few runs side by side: the settings that tell them apart, their final
metrics with the best of each row marked, and their evaluation items matched by dataset line.

Items come from each run's ``eval/predictions.jsonl`` artifact (one JSON object a line: the
dataset line number, prompt, reference, prediction and scores), read from the artifact storage
the web hosts share. A run without that file (a dry-run, a failed run, ``eval_max_items`` 0) is
simply not evaluated: its column stays empty and nothing else changes.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any, Literal
from uuid import UUID

import orjson

from runs import artifacts
from runs.models import TunixRun
from runs.progress import HIGHER_IS_BETTER, LOWER_IS_BETTER, algorithm_results, all_result_keys
from runs.scorers import SCORER_NAMES, normalise
from runs.training_config import PARAMS

MIN_RUNS, MAX_RUNS = 2, 10
ITEMS_PER_PAGE = 20
PREDICTIONS_PATH = "eval/predictions.jsonl"
# A generation eval writes a few hundred short records; a file far beyond that is not one the
# trainer wrote, and a page must not read gigabytes to show twenty rows.
MAX_PREDICTIONS_BYTES = 8 * 1024 * 1024
MAX_ID_TEXT = 40  # how much of a malformed id an error message repeats

Better = Literal["lower", "higher"]
COMPARED_FIELDS = (
    "id",
    "dataset__key",
    "model_id",
    "mode",
    "status",
    "config",
    "queued_at",
    "started_at",
    "completed_at",
    "loss_curve",
    "series",
    "metrics",
)


class InvalidComparison(ValueError):
    """The ``ids`` asked for cannot be compared: too few, too many, or not run ids."""


class DifferentDatasets(InvalidComparison):
    """Items are matched by dataset line, which means nothing across datasets."""


class RunsNotFound(LookupError):
    """Some ids name no run this user may see (someone else's run is as absent as a missing
    one)."""

    def __init__(self, missing: Sequence[UUID]) -> None:
        super().__init__(f"no run {missing[0]}")
        self.missing = list(missing)


def parse_run_ids(values: Iterable[str]) -> list[UUID]:
    """The distinct run ids in ``values`` (each a run id or a comma-separated list of them), in
    the order first given."""
    found: dict[UUID, None] = {}
    for value in values:
        for piece in value.split(","):
            text = piece.strip()
            if not text:
                continue
            try:
                found[UUID(text)] = None
            except ValueError:
                shown = text if len(text) <= MAX_ID_TEXT else f"{text[:MAX_ID_TEXT]}…"
                raise InvalidComparison(f"{shown!r} is not a run id") from None
    if not found:
        raise InvalidComparison(
            f"name {MIN_RUNS} to {MAX_RUNS} runs to compare: ids=<run id>,<run id>"
        )
    if len(found) < MIN_RUNS:
        raise InvalidComparison(f"compare at least {MIN_RUNS} different runs; got {len(found)}")
    if len(found) > MAX_RUNS:
        raise InvalidComparison(f"compare at most {MAX_RUNS} runs at a time; got {len(found)}")
    return list(found)


@dataclass(frozen=True)
class ConfigRow:
    name: str
    values: tuple[Any, ...]  # one a run, None where a run's config lacks it


@dataclass(frozen=True)
class MetricCell:
    value: float | None
    best: bool


@dataclass(frozen=True)
class MetricRow:
    name: str
    better: Better | None  # None: a count (steps, items), where more is not better
    cells: tuple[MetricCell, ...]


@dataclass(frozen=True)
class Comparison:
    runs: list[TunixRun]  # in the order asked for
    predictions: tuple[Path | None, ...]  # per run: its predictions file, if it has one
    config: list[ConfigRow]  # only the fields whose values differ
    metrics: list[MetricRow]

    @property
    def evaluated(self) -> tuple[bool, ...]:
        return tuple(path is not None for path in self.predictions)

    @property
    def dataset_keys(self) -> list[str]:
        return list(dict.fromkeys(run.dataset.key for run in self.runs))

    @property
    def items_refusal(self) -> str | None:
        """Why these runs' items cannot be compared, or None when they can."""
        keys = self.dataset_keys
        if len(keys) == 1:
            return None
        return (
            "items can be compared only between runs of one dataset; these runs use "
            + ", ".join(keys)
        )


def run_comparison(*, run_ids: Iterable[str], owner: int | None = None) -> Comparison:
    """The runs ``run_ids`` names (see parse_run_ids), if ``owner`` (set: only that user's
    runs are visible) may see every one of them.

    Raises InvalidComparison for ids that cannot be compared and RunsNotFound for ids that
    name no visible run."""
    keys = parse_run_ids(run_ids)
    runs = TunixRun.objects.select_related("dataset").only(*COMPARED_FIELDS).filter(id__in=keys)
    if owner is not None:
        runs = runs.filter(created_by_id=owner)
    by_id = {run.id: run for run in runs}
    missing = [key for key in keys if key not in by_id]
    if missing:
        raise RunsNotFound(missing)
    ordered = [by_id[key] for key in keys]
    return Comparison(
        runs=ordered,
        predictions=tuple(_predictions_file(run) for run in ordered),
        config=_config_rows(ordered),
        metrics=_metric_rows(ordered),
    )


def _config_rows(runs: list[TunixRun]) -> list[ConfigRow]:
    def setting(name: str) -> Callable[[TunixRun], Any]:
        return lambda run: run.config.get(name) if isinstance(run.config, dict) else None

    fields: list[tuple[str, Callable[[TunixRun], Any]]] = [
        ("dataset_key", lambda run: run.dataset.key),
        ("model_id", lambda run: run.model_id),
        ("mode", lambda run: run.mode),
        ("algorithm", lambda run: run.algorithm),
    ]
    known = list(dict.fromkeys(param.name for param in PARAMS))  # a name may have several rows
    # Settings of older or newer releases than this one's PARAMS: still shown when they differ.
    others = {name for run in runs if isinstance(run.config, dict) for name in run.config}
    for name in [*known, *sorted(others - set(known))]:
        fields.append((name, setting(name)))
    rows = []
    for name, read in fields:
        values = tuple(read(run) for run in runs)
        if any(value != values[0] for value in values[1:]):
            rows.append(ConfigRow(name=name, values=values))
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _metric_rows(runs: list[TunixRun]) -> list[MetricRow]:
    metrics = [run.metrics if isinstance(run.metrics, dict) else {} for run in runs]
    present = {name for values in metrics for name in values}
    ordered = all_result_keys()
    names = [name for name in ordered if name in present]
    names += sorted(present - set(ordered))
    rows = []
    for name in names:
        values = [_number(values.get(name)) for values in metrics]
        known = [value for value in values if value is not None]
        if not known:
            continue
        better: Better | None = (
            "lower"
            if name in LOWER_IS_BETTER
            else "higher"
            if name in HIGHER_IS_BETTER or name in algorithm_results()
            else None
        )
        best: float | None = None
        # A best needs a rival: one value alone, or every run equal, marks nothing.
        if better is not None and len(known) >= 2 and min(known) != max(known):
            best = min(known) if better == "lower" else max(known)
        cells = tuple(MetricCell(value, value is not None and value == best) for value in values)
        rows.append(MetricRow(name=name, better=better, cells=cells))
    return rows


# Items


@dataclass(frozen=True)
class Prediction:
    text: str
    scores: dict[str, float]  # by scorer name, each in [0, 1]


@dataclass(frozen=True)
class _Record:
    prompt: str
    reference: str
    prediction: Prediction
    normalised: str  # the prediction as the exact-match scorer compares it


@dataclass(frozen=True)
class ComparedItem:
    line: int  # the record's 1-based line in the dataset: what matches items across runs
    prompt: str
    reference: str
    predictions: tuple[Prediction | None, ...]  # one a run; None where it has none for this line
    disagree: bool  # the runs that answered did not all answer the same (once normalised)


@dataclass(frozen=True)
class ItemPage:
    items: list[ComparedItem]
    number: int
    per_page: int
    pages: int
    total: int  # items the filter kept, on every page

    @property
    def previous(self) -> int | None:
        return min(self.number - 1, self.pages) if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None


@dataclass(frozen=True)
class ItemSet:
    items: list[ComparedItem]  # after the filter, by line
    matched: int  # every line some run evaluated
    disagreeing: int

    def pages(self, per_page: int = ITEMS_PER_PAGE) -> int:
        return max(1, math.ceil(len(self.items) / per_page))

    def page(self, number: int, per_page: int = ITEMS_PER_PAGE) -> ItemPage:
        """Page ``number`` (from 1); past the last page it holds no items."""
        start = (number - 1) * per_page
        return ItemPage(
            items=self.items[start : start + per_page],
            number=number,
            per_page=per_page,
            pages=self.pages(per_page),
            total=len(self.items),
        )


def comparison_items(comparison: Comparison, *, disagree: bool = False) -> ItemSet:
    """Every item some run evaluated, matched across the runs by dataset line; with
    ``disagree``, only those where the runs' predictions differ after the exact-match
    normalisation (runs without a prediction for the item are not asked).

    Raises DifferentDatasets when the runs do not share one dataset."""
    refusal = comparison.items_refusal
    if refusal is not None:
        raise DifferentDatasets(refusal)
    per_run = [_read_predictions(path) for path in comparison.predictions]
    lines = sorted({line for records in per_run if records for line in records})
    matched: list[ComparedItem] = []
    for line in lines:
        found = [records.get(line) if records else None for records in per_run]
        first = next(record for record in found if record is not None)
        answers = {record.normalised for record in found if record is not None}
        matched.append(
            ComparedItem(
                line=line,
                prompt=first.prompt,
                reference=first.reference,
                predictions=tuple(None if r is None else r.prediction for r in found),
                disagree=len(answers) > 1,
            )
        )
    disagreeing = [item for item in matched if item.disagree]
    return ItemSet(
        items=disagreeing if disagree else matched,
        matched=len(matched),
        disagreeing=len(disagreeing),
    )


def _predictions_file(run: TunixRun) -> Path | None:
    try:
        return artifacts.artifact_path(run, PREDICTIONS_PATH)
    except FileNotFoundError:
        return None


# Parsed predictions files by (path, modification time, size): a finished run's file does not
# change, and paging through items would otherwise parse and normalise every file each time.
_parsed: dict[tuple[str, int, int], dict[int, _Record]] = {}
_parsed_lock = threading.Lock()
MAX_CACHED_BYTES = 32 * 1024 * 1024  # of source files, across every cached one


def _read_predictions(path: Path | None) -> dict[int, _Record] | None:
    """The predictions of ``path`` by dataset line; None without a readable file. Lines that
    are not a well-formed record are skipped, and so is a second record of the same line."""
    if path is None:
        return None
    try:
        # No link followed and no blocking open, even if the file was swapped for one since
        # artifacts.artifact_path looked at it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            stat = os.fstat(descriptor)
            if not S_ISREG(stat.st_mode):
                return None
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            cached = _parsed.get(key)
            if cached is not None:
                return cached
            data = handle.read(MAX_PREDICTIONS_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_PREDICTIONS_BYTES:
        data = data[: data.rfind(b"\n", 0, MAX_PREDICTIONS_BYTES) + 1]  # whole lines only
    records: dict[int, _Record] = {}
    for raw in data.splitlines():
        parsed = _record(raw)
        if parsed is not None and parsed[0] not in records:
            records[parsed[0]] = parsed[1]
    _remember(key, records)
    return records


def _remember(key: tuple[str, int, int], records: dict[int, _Record]) -> None:
    with _parsed_lock:
        _parsed[key] = records
        total = sum(cached_size for _, _, cached_size in _parsed)
        while total > MAX_CACHED_BYTES and len(_parsed) > 1:
            oldest = next(iter(_parsed))  # insertion order: the first cached goes first
            total -= oldest[2]
            del _parsed[oldest]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _record(raw: bytes) -> tuple[int, _Record] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    line, prediction = data.get("line"), _text(data.get("prediction"))
    if type(line) is not int or line < 1 or prediction is None:
        return None
    raw_scores = data.get("scores")
    scores: dict[str, float] = {}
    if isinstance(raw_scores, dict):
        for name in SCORER_NAMES:
            score = _number(raw_scores.get(name))
            if score is not None:
                scores[name] = score
    return line, _Record(
        prompt=_text(data.get("prompt")) or "",
        reference=_text(data.get("reference")) or "",
        prediction=Prediction(text=prediction, scores=scores),
        normalised=normalise(prediction),
    )
