"""The compare page: a few runs side by side, rendered on the server with plain links and a GET
form, so it works with JavaScript off.

The template gets dicts of ready-made strings. Django's template engine looks an attribute of an
object up by trying it as a key first and then listing the object's attributes, which for model
instances and dataclasses cost more than the rest of the page; formatting numbers with filters
cost as much again. bench/compare.py measures the page against its 100 ms budget.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from runs import authorization, charts, selectors
from runs.models import TunixRun
from runs.selectors.comparison import MetricCell
from runs.templatetags.tunix import metric_label, metric_value

TEMPLATE = "runs/run_compare.html"
# The scorers' names as the pages show them (the API and the CSV use the names themselves).
SCORE_LABELS = {"exact_match": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L"}
SETTING_LABELS = {"dataset_key": "dataset"}


def _query(runs: list[TunixRun], **params: object) -> str:
    """The page's query for these runs: each id as its own ``ids``, as the run list's checkboxes
    send them."""
    return urlencode([("ids", str(run.id)) for run in runs] + list(params.items()))


def _column(index: int, run: TunixRun, evaluated: bool) -> dict[str, Any]:
    colour = index % charts.PALETTE_SIZE
    url = reverse("web:run-detail", kwargs={"run_id": run.id})
    short = str(run.id)[:8]
    return {
        "id": str(run.id),
        "status": run.status,
        "dataset": run.dataset.key,
        "model_id": run.model_id,
        "mode": run.mode,
        "completed_at": run.completed_at,
        "colour": colour,
        "url": url,
        "short": short,
        "evaluated": evaluated,
        "header": format_html(
            '<span class="swatch c{}" aria-hidden="true"></span> <a class="mono" href="{}">{}</a>',
            colour,
            url,
            short,
        ),
    }


def _setting(value: Any) -> str:
    return "—" if value is None else str(value)


def _metric_cell(name: str, cell: MetricCell) -> dict[str, Any]:
    return {
        "text": "—" if cell.value is None else metric_value(cell.value, name),
        "best": cell.best,
    }


def _prediction_cell(found: selectors.Prediction | None, evaluated: bool) -> SafeString:
    """One run's cell of the items table, as HTML: the table's hundred cells are most of the
    page, and a template loop with its conditions per cell cost several milliseconds."""
    if found is None:
        note = "not among this run's items" if evaluated else "no evaluation"
        return format_html('<td><span class="muted">{}</span></td>', note)
    if not found.scores:
        return format_html('<td><span class="text">{}</span></td>', found.text)
    scores = " · ".join(
        f"{SCORE_LABELS.get(name, name)} {value:.2f}" for name, value in found.scores.items()
    )
    return format_html(
        '<td><span class="text">{}</span><span class="scores">{}</span></td>', found.text, scores
    )


def _items(request: HttpRequest, comparison: selectors.Comparison) -> dict[str, Any]:
    disagree = request.GET.get("disagree") == "1"
    items = selectors.comparison_items(comparison, disagree=disagree)
    try:
        asked = int(request.GET.get("page", "1"))
    except ValueError:
        asked = 1
    page = items.page(min(max(asked, 1), items.pages()))
    flag = {"disagree": 1} if disagree else {}
    runs = comparison.runs
    evaluated = comparison.evaluated

    def link(number: int | None) -> str | None:
        if number is None:
            return None
        return f"{request.path}?{_query(runs, **flag, page=number)}#items"

    return {
        "disagree": disagree,
        "counts": {
            "matched": items.matched,
            "disagreeing": items.disagreeing,
            "total": page.total,
            "number": page.number,
            "pages": page.pages,
        },
        "item_rows": [
            {
                "line": item.line,
                "prompt": item.prompt,
                "reference": item.reference,
                "disagree": item.disagree,
                "cells": SafeString(
                    "".join(
                        _prediction_cell(found, has_file)
                        for found, has_file in zip(item.predictions, evaluated, strict=True)
                    )
                ),
            }
            for item in page.items
        ],
        "previous_url": link(page.previous),
        "next_url": link(page.next),
        "csv_url": f"{reverse('api:run-compare-items-csv')}?{_query(runs, **flag)}",
    }


def _error(request: HttpRequest, message: str) -> HttpResponse:
    context = {"error": message, "min_runs": selectors.MIN_RUNS, "max_runs": selectors.MAX_RUNS}
    return render(request, TEMPLATE, context, status=400)


@require_GET
@login_required
def run_compare(request: HttpRequest) -> HttpResponse:
    """Runs side by side (ids=…&ids=…, 2 to 10): their loss curves on one chart, the settings
    that differ, their final metrics with the best of each marked, and their evaluation items
    (runs of one dataset only)."""
    try:
        comparison = selectors.run_comparison(
            run_ids=request.GET.getlist("ids"), owner=authorization.visible_owner(request.user)
        )
    except selectors.InvalidComparison as exc:
        return _error(request, str(exc))
    except selectors.RunsNotFound:
        raise Http404("no such run") from None
    runs, evaluated = comparison.runs, comparison.evaluated
    columns = [
        _column(index, run, has_file)
        for index, (run, has_file) in enumerate(zip(runs, evaluated, strict=True))
    ]
    context: dict[str, Any] = {
        "runs": runs,
        "columns": columns,
        "has_curves": any(run.loss_curve for run in runs),
        "config_rows": [
            {
                "name": row.name,
                "label": SETTING_LABELS.get(row.name, row.name),
                "values": [_setting(value) for value in row.values],
            }
            for row in comparison.config
        ],
        "metric_rows": [
            {
                "name": row.name,
                "label": metric_label(row.name),
                "better": row.better,
                "cells": [_metric_cell(row.name, cell) for cell in row.cells],
            }
            for row in comparison.metrics
        ],
        "dataset_keys": ", ".join(comparison.dataset_keys),
        "items_refusal": comparison.items_refusal,
    }
    if comparison.items_refusal is None:
        context.update(_items(request, comparison))
    return render(request, TEMPLATE, context)
