"""Small display helpers for the pages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django import template
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from runs import charts
from runs.algorithms import ALGORITHMS
from runs.progress import TRAIN_LOSS_WINDOW, ranking_metrics

register = template.Library()


@register.inclusion_tag("runs/_chart.html")
def loss_chart(curve: list[list[float]], series: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's train loss by step as a line, its evaluations' losses as marks, on shared axes
    (inline SVG: no script, no CDN)."""
    lines = [charts.Line("train loss", curve, colour=0)]
    evaluations = (series or {}).get("eval_loss") or []
    if evaluations:
        lines.append(charts.Line("eval loss", evaluations, colour=1, dots=True))
    return chart_context(lines, testid="loss-chart", y_label="loss")


@register.inclusion_tag("runs/_chart.html")
def series_chart(series: dict[str, Any] | None, name: str, label: str) -> dict[str, Any]:
    """One of a run's other series (learning rate, tokens/s) by step."""
    points = (series or {}).get(name) or []
    return chart_context(
        [charts.Line(label, points, colour=2)],
        testid=f"{name.replace('_', '-')}-chart",
        y_label=label,
    )


@register.simple_tag
def signal_charts(algorithm: str, series: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The charts of a run's algorithm signals (DPO's rewards, GRPO's reward and KL) that it
    has points for, each group of signals on shared axes."""
    chosen = ALGORITHMS.get(algorithm)
    if chosen is None:
        return []
    found = []
    for title, keys in chosen.charts():
        lines = [
            charts.Line(chosen.signals[key], (series or {}).get(key) or [], colour=index)
            for index, key in enumerate(keys)
        ]
        context = chart_context(
            [line for line in lines if line.points],
            testid=f"{keys[0].replace('_', '-')}-chart",
            y_label=title,
        )
        if context["chart"] is not None:
            found.append({**context, "title": title})
    return found


@register.inclusion_tag("runs/_chart.html")
def compare_chart(runs: Sequence[Any]) -> dict[str, Any]:
    """Several runs' train losses as lines and their evaluations' losses as marks, one colour a
    run (in the order given, as the compare page's columns), on shared axes."""
    lines = []
    for colour, run in enumerate(runs):
        name = str(run.id)[:8]
        lines.append(charts.Line(f"{name} train loss", run.loss_curve or [], colour=colour))
        evaluations = (run.series or {}).get("eval_loss") or []
        if evaluations:
            lines.append(charts.Line(f"{name} eval loss", evaluations, colour=colour, dots=True))
    return chart_context(lines, testid="compare-chart", y_label="loss")


def chart_context(lines: list[charts.Line], *, testid: str, y_label: str) -> dict[str, Any]:
    chart = charts.layout(lines)
    if chart is None:
        return {"chart": None}
    first = chart.lines[0]
    return {
        "chart": chart,
        "testid": testid,
        "y_label": y_label,
        "points": first.count,  # the first line's, for watching a live chart grow
        "summary": (
            f"{y_label.capitalize()} by step, steps {chart.first_step:.0f} to "
            f"{chart.last_step:.0f}: {chart.high:.4f} at the highest, {chart.low:.4f} at the "
            "lowest"
        ),
    }


TIMESTAMP_FORMAT = "Y-m-d H:i:s T"  # T: the zone's name ("UTC"), so no reader has to guess it


@register.filter
def timestamp(value: datetime | None) -> SafeString | str:
    """A moment as ``<time>`` in the current time zone, the zone named in the text: every page
    and fragment shows times the same way."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}">{}</time>',
        local.isoformat(timespec="seconds"),
        dateformat.format(local, TIMESTAMP_FORMAT),
    )


@register.filter
def seconds(value: float | None) -> str:
    """0.004 -> '4 ms', 1.234 -> '1.2 s', 75 -> '1 min 15 s', None -> '—'."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


METRIC_LABELS = {
    "train_loss": f"train loss ({TRAIN_LOSS_WINDOW}-step mean)",
    "eval_loss": "eval loss",
    "steps": "steps",
    "tokens_per_second": "tokens/s",
    "wall_seconds": "wall time",
    "compiled_shapes": "compiled shapes",
    "eval_items": "items generated",
    "eval_seconds": "generation time",
    **ranking_metrics(),
}


@register.filter
def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


@register.filter
def metric_value(value: float, name: str) -> str:
    if name in {"wall_seconds", "eval_seconds"}:
        return seconds(value)
    if name in {"steps", "eval_items", "compiled_shapes"}:
        return f"{value:.0f}"
    if name == "tokens_per_second":
        return f"{value:,.0f}"
    return f"{value:.4f}"
