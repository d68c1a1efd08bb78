"""Small display helpers for the pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from runs.progress import TRAIN_LOSS_WINDOW

register = template.Library()

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 160, 8


@register.inclusion_tag("runs/_loss_chart.html")
def loss_chart(curve: list[list[float]]) -> dict[str, Any]:
    """An inline SVG line of loss by step (no script, no CDN); the y axis spans the losses."""
    points = [(float(step), float(loss)) for step, loss in curve]
    if not points:
        return {"points": ""}
    steps = [p[0] for p in points]
    losses = [p[1] for p in points]
    low_step, high_step = min(steps), max(steps)
    low, high = min(losses), max(losses)
    step_span = (high_step - low_step) or 1.0
    loss_span = (high - low) or 1.0
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD

    def xy(step: float, loss: float) -> str:
        x = CHART_PAD + (step - low_step) / step_span * inner_w
        y = CHART_PAD + (high - loss) / loss_span * inner_h
        return f"{x:.1f},{y:.1f}"

    return {
        "points": " ".join(xy(step, loss) for step, loss in points),
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "first": points[0],
        "last": points[-1],
        "low": low,
        "high": high,
        "count": len(points),
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
}


@register.filter
def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


@register.filter
def metric_value(value: float, name: str) -> str:
    if name == "wall_seconds":
        return seconds(value)
    if name == "steps":
        return f"{value:.0f}"
    if name == "tokens_per_second":
        return f"{value:,.0f}"
    return f"{value:.4f}"
