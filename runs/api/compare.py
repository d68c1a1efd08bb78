"""The answers of the run comparison endpoints (GET tunix/runs/compare, .../compare/items and
.../compare/items.csv): bodies built from selectors.Comparison, their schema for the OpenAPI
document, and the CSV download."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.settings import api_settings

from runs import authorization, selectors, services
from runs.api.serializers import (
    QueryIntegerField,
    RunSeriesSerializer,
    StrictSerializer,
    run_series,
)
from runs.models import RunStatus, TunixRun
from runs.scorers import SCORER_NAMES
from runs.selectors import MAX_RUNS, MIN_RUNS, Comparison, ItemSet
from runs.selectors.comparison import ComparedItem, ItemPage

MAX_PAGE = 10_000
# A cell a spreadsheet would read as a formula (or, for tab and carriage return, as the start
# of one in another cell) is written with a leading apostrophe, which shows it as text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class CompareItemsQuerySerializer(StrictSerializer):
    page = QueryIntegerField(default=1, min_value=1, max_value=MAX_PAGE, help_text="From 1")
    disagree = serializers.BooleanField(
        default=False,
        help_text="Only the items where the runs' predictions differ once normalised as the "
        "exact-match scorer does (runs without a prediction for an item are not counted)",
    )


class CompareCsvQuerySerializer(StrictSerializer):
    disagree = serializers.BooleanField(
        default=False, help_text="Only the items where the runs disagree (as for compare/items)"
    )


def run_entry(run: TunixRun, evaluated: bool) -> dict[str, Any]:
    return {
        "run_id": str(run.id),
        "status": run.status,
        "mode": run.mode,
        "dataset_key": run.dataset.key,
        "model_id": run.model_id,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "evaluated": evaluated,
        "series": run_series(run),
    }


def comparison_body(
    comparison: Comparison, *, items_url: str | None, csv_url: str | None
) -> dict[str, Any]:
    run_ids = [str(run.id) for run in comparison.runs]
    refusal = comparison.items_refusal
    return {
        "runs": [
            run_entry(run, evaluated)
            for run, evaluated in zip(comparison.runs, comparison.evaluated, strict=True)
        ],
        "config": [{"name": row.name, "values": list(row.values)} for row in comparison.config],
        "metrics": [
            {
                "name": row.name,
                "better": row.better,
                "values": [cell.value for cell in row.cells],
                "best": [
                    run_id for run_id, cell in zip(run_ids, row.cells, strict=True) if cell.best
                ],
            }
            for row in comparison.metrics
        ],
        "items": {
            "comparable": refusal is None,
            "detail": refusal,
            "url": items_url if refusal is None else None,
            "csv_url": csv_url if refusal is None else None,
        },
    }


def item_entry(item: ComparedItem, run_ids: Sequence[str]) -> dict[str, Any]:
    return {
        "line": item.line,
        "prompt": item.prompt,
        "reference": item.reference,
        "disagree": item.disagree,
        "predictions": [
            {
                "run_id": run_id,
                "prediction": None if found is None else found.text,
                "scores": {} if found is None else found.scores,
            }
            for run_id, found in zip(run_ids, item.predictions, strict=True)
        ],
    }


def items_body(
    comparison: Comparison,
    items: ItemSet,
    page: ItemPage,
    *,
    next_url: str | None,
    previous_url: str | None,
) -> dict[str, Any]:
    run_ids = [str(run.id) for run in comparison.runs]
    return {
        "runs": [
            {"run_id": run_id, "evaluated": evaluated}
            for run_id, evaluated in zip(run_ids, comparison.evaluated, strict=True)
        ],
        "data": [item_entry(item, run_ids) for item in page.items],
        "counts": {"items": items.matched, "disagree": items.disagreeing},
        "pagination": {
            "page": page.number,
            "per_page": page.per_page,
            "pages": page.pages,
            "total": page.total,
            "next": next_url,
            "previous": previous_url,
        },
    }


def safe_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_rows(comparison: Comparison, items: ItemSet) -> list[list[object]]:
    """The items side by side: line, prompt, reference, then each run's prediction and scores
    (empty where the run has none for the item), under a header naming each run."""
    header: list[object] = ["line", "prompt", "reference", "disagree"]
    for run in comparison.runs:
        header += [f"{run.id} prediction", *(f"{run.id} {name}" for name in SCORER_NAMES)]
    rows = [header]
    for item in items.items:
        row: list[object] = [item.line, item.prompt, item.reference, int(item.disagree)]
        for found in item.predictions:
            if found is None:
                row += [""] * (1 + len(SCORER_NAMES))
            else:
                row += [found.text, *(found.scores.get(name, "") for name in SCORER_NAMES)]
        rows.append(row)
    return rows


class CSVRenderer(BaseRenderer):
    """RFC 4180 CSV (comma, CRLF, quotes doubled) of a list of rows, every text cell safe to
    open in a spreadsheet."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for row in data or []:
            writer.writerow([safe_cell(cell) for cell in row])
        return buffer.getvalue().encode("utf-8")


# The answers' shapes, for the schema only (the views build these dicts themselves).


class CompareRunSerializer(serializers.Serializer[Any]):
    run_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    mode = serializers.CharField()
    dataset_key = serializers.CharField()
    model_id = serializers.CharField()
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    evaluated = serializers.BooleanField(
        help_text="the run has per-item predictions (eval/predictions.jsonl)"
    )
    series = RunSeriesSerializer()


class CompareConfigRowSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(
        help_text="dataset_key, model_id, mode or a hyperparameter, in that order"
    )
    values = serializers.ListField(
        child=serializers.JSONField(allow_null=True),
        help_text="one a run, in the order of runs; null where a run's config lacks it",
    )


class CompareMetricRowSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    better = serializers.ChoiceField(
        choices=["lower", "higher"],
        allow_null=True,
        help_text="which way is better; null for counts (steps, eval_items, compiled_shapes)",
    )
    values = serializers.ListField(
        child=serializers.FloatField(allow_null=True),
        help_text="one a run, in the order of runs; null where a run lacks it",
    )
    best = serializers.ListField(
        child=serializers.UUIDField(),
        help_text="the runs with the best value; empty when fewer than 2 runs have one, when "
        "they are all equal, or when no way is better",
    )


class CompareItemsLinkSerializer(serializers.Serializer[Any]):
    comparable = serializers.BooleanField(help_text="the runs share one dataset")
    detail = serializers.CharField(allow_null=True, help_text="why items cannot be compared")
    url = serializers.CharField(allow_null=True)
    csv_url = serializers.CharField(allow_null=True)


class ComparisonSerializer(serializers.Serializer[Any]):
    runs = CompareRunSerializer(many=True)
    config = CompareConfigRowSerializer(
        many=True, help_text="only the settings whose values differ between the runs"
    )
    metrics = CompareMetricRowSerializer(many=True, help_text="final metrics any run has")
    items = CompareItemsLinkSerializer()


class ComparePredictionSerializer(serializers.Serializer[Any]):
    run_id = serializers.UUIDField()
    prediction = serializers.CharField(
        allow_null=True, allow_blank=True, help_text="null: the run has no prediction for it"
    )
    scores = serializers.DictField(child=serializers.FloatField())


class CompareItemSerializer(serializers.Serializer[Any]):
    line = serializers.IntegerField(help_text="the record's line in the dataset, from 1")
    prompt = serializers.CharField(allow_blank=True)
    reference = serializers.CharField(allow_blank=True)
    disagree = serializers.BooleanField()
    predictions = ComparePredictionSerializer(many=True, help_text="one a run, in run order")


class CompareItemsRunSerializer(serializers.Serializer[Any]):
    run_id = serializers.UUIDField()
    evaluated = serializers.BooleanField()


class CompareCountsSerializer(serializers.Serializer[Any]):
    items = serializers.IntegerField(help_text="items any run evaluated")
    disagree = serializers.IntegerField(help_text="of which the runs disagree on")


class ComparePaginationSerializer(serializers.Serializer[Any]):
    page = serializers.IntegerField()
    per_page = serializers.IntegerField()
    pages = serializers.IntegerField()
    total = serializers.IntegerField(help_text="items the filter keeps")
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class CompareItemsSerializer(serializers.Serializer[Any]):
    runs = CompareItemsRunSerializer(many=True)
    data = CompareItemSerializer(many=True)  # type: ignore[assignment]
    counts = CompareCountsSerializer()
    pagination = ComparePaginationSerializer()


# Parsing a request, for the views.

IDS_PARAMETER = OpenApiParameter(
    "ids",
    {
        "type": "array",
        "items": {"type": "string", "format": "uuid"},
        "minItems": MIN_RUNS,
        "maxItems": MAX_RUNS,
    },
    required=True,
    explode=True,
    description=f"The runs to compare, {MIN_RUNS} to {MAX_RUNS} distinct run ids, in the order "
    "to show them: repeated (ids=a&ids=b) or comma-separated (ids=a,b)",
)


class CompareQuerySerializer(StrictSerializer):
    """No parameter besides ids: anything else is refused, as a typo should be."""


def query(request: Request, serializer: type[StrictSerializer]) -> dict[str, Any]:
    """The query's parameters other than ``ids``, validated."""
    skip = {"ids", api_settings.URL_FORMAT_OVERRIDE}
    raw = {key: value for key, value in request.query_params.items() if key not in skip}
    parsed = serializer(data=raw)
    parsed.is_valid(raise_exception=True)
    return dict(parsed.validated_data)


def comparison(request: Request) -> Comparison:
    try:
        return selectors.run_comparison(
            run_ids=request.query_params.getlist("ids"),
            owner=authorization.visible_owner(request.user),
        )
    except selectors.InvalidComparison as exc:
        raise services.ServiceError(str(exc), field="ids") from None
    except selectors.RunsNotFound as exc:
        raise services.NotFound(str(exc)) from None


def items(found: Comparison, *, disagree: bool) -> ItemSet:
    try:
        return selectors.comparison_items(found, disagree=disagree)
    except selectors.InvalidComparison as exc:
        raise services.ServiceError(str(exc), field="ids") from None


def url(request: Request, name: str, found: Comparison, **params: object) -> str:
    """An absolute URL of ``name`` for the same runs, ids written once, comma-separated."""
    ids = ",".join(str(run.id) for run in found.runs)
    query_string = urlencode({"ids": ids, **params}, safe=",")
    return request.build_absolute_uri(f"{reverse(name)}?{query_string}")
