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
from runs.execution import UnknownMode, get_backend
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


# A sweep's trials on its charts: a colour a status, the best trial in its own. Pruned trials
# are also drawn differently (hollow marks, dashed lines), so no reading depends on colour.
TRIAL_COLOURS = {"completed": 0, "pruned": 4, "running": 5, "pending": 5}
OTHER_TRIAL_COLOUR = 6  # failed, or cancelled for another reason than pruning
BEST_TRIAL_COLOUR = 1


def trial_colour(state: str, best: bool) -> int:
    return BEST_TRIAL_COLOUR if best else TRIAL_COLOURS.get(state, OTHER_TRIAL_COLOUR)


def param_text(value: Any) -> str:
    """A hyperparameter's value as the sweep's table and charts show it."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def shown_value(trial: Any, metric: str) -> float | None:
    """The metric a trial is charted at: its final value, or for a pruned trial the last
    value its pruner judged (it has no final one)."""
    if trial.value is not None:
        return float(trial.value)
    if not trial.pruned:
        return None
    points = (trial.run.series or {}).get(metric) or []
    return float(points[-1][1]) if points else None


def param_scale(dimension: dict[str, Any]) -> charts.Scale:
    """The axis a searched parameter's values go on, as the sweep's space defines it."""
    if "choices" in dimension:
        return charts.Scale(charts.CATEGORY, tuple(param_text(c) for c in dimension["choices"]))
    return charts.Scale(charts.LOG if dimension.get("log") else charts.LINEAR)


def _position(value: Any, scale: charts.Scale) -> float | None:
    if scale.kind == charts.CATEGORY:
        text = param_text(value)
        return float(scale.categories.index(text)) if text in scale.categories else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def param_charts(
    space: dict[str, dict[str, Any]], trials: Sequence[Any], *, metric: str, best: Any
) -> list[dict[str, Any]]:
    """A small scatter per searched parameter: each trial's metric against its value, the
    pruned ones at the value they were pruned at, the best trial marked."""
    found = []
    label = metric_label(metric)
    for name, dimension in space.items():
        scale = param_scale(dimension)
        marks = []
        for trial in trials:
            x, y = _position(trial.params.get(name), scale), shown_value(trial, metric)
            if x is None or y is None:
                continue
            is_best = best is not None and trial.number == best.number
            marks.append(
                charts.Mark(
                    x,
                    y,
                    label=f"trial {trial.number}: {name} {param_text(trial.params.get(name))}, "
                    f"{label} {y:.4g} ({trial.status}{', best' if is_best else ''})",
                    state=trial.status,
                    colour=trial_colour(trial.status, is_best),
                    best=is_best,
                )
            )
        chart = charts.scatter(marks, x_scale=scale)
        if chart is None:
            continue
        pruned = sum(1 for m in marks if m.state == "pruned")
        axis = {charts.LOG: ", log scale", charts.CATEGORY: ", by choice"}.get(scale.kind, "")
        summary = (
            f"{label.capitalize()} against {name}{axis}: {len(marks)} "
            f"trial{'s' if len(marks) != 1 else ''}"
            + (f", {pruned} pruned (at their last reported value)" if pruned else "")
        )
        if best is not None and best.value is not None:
            summary += (
                f"; the best, trial {best.number}, has {name} "
                f"{param_text(best.params.get(name))} and {label} {best.value:.4g}"
            )
        found.append(
            {
                "chart": chart,
                "name": name,
                "testid": f"param-chart-{name.replace('_', '-')}",
                "x_label": name,
                "y_label": label,
                "points": len(marks),
                "summary": summary,
            }
        )
    return found


def parallel_chart(
    space: dict[str, dict[str, Any]], trials: Sequence[Any], *, metric: str, best: Any
) -> dict[str, Any]:
    """Parallel coordinates: an axis a searched parameter and a last one for the metric, a
    line a trial (the best in its colour and thicker, pruned ones dashed)."""
    names = list(space)
    scales = [param_scale(space[name]) for name in names]
    label = metric_label(metric)
    paths = []
    for trial in trials:
        values = [_position(trial.params.get(n), s) for n, s in zip(names, scales, strict=True)]
        values.append(trial.value)  # a pruned trial has no final value: its line stops short
        if all(v is None for v in values):
            continue
        is_best = best is not None and trial.number == best.number
        paths.append(
            charts.Path(
                label=f"trial {trial.number} ({trial.status}{', best' if is_best else ''})",
                values=values,
                state=trial.status,
                colour=trial_colour(trial.status, is_best),
                best=is_best,
            )
        )
    chart = charts.parallel([*zip(names, scales, strict=True), (label, charts.Scale())], paths)
    if chart is None:
        return {"chart": None}
    return {
        "chart": chart,
        "testid": "parallel-chart",
        "lines": len(chart.paths),
        "summary": (
            f"Parallel coordinates of {len(chart.paths)} trial{'s' if len(paths) != 1 else ''}: "
            f"an axis each for {', '.join(names)} and {label}; a line a trial, through its "
            "values. The trials table lists the same values."
        ),
    }


def trial_curves(trials: Sequence[Any], *, best: Any) -> dict[str, Any]:
    """The trials' train losses as lines and their evaluations' losses as marks, a colour a
    trial in trial order (the palette repeats after eight), on shared axes."""
    lines = []
    for trial in trials:
        name = f"trial {trial.number}"
        if best is not None and trial.number == best.number:
            name += " (best)"
        colour = trial.number % charts.PALETTE_SIZE
        lines.append(charts.Line(f"{name} train loss", trial.run.loss_curve or [], colour=colour))
        evaluations = (trial.run.series or {}).get("eval_loss") or []
        if evaluations:
            lines.append(charts.Line(f"{name} eval loss", evaluations, colour=colour, dots=True))
    return chart_context(lines, testid="sweep-curves", y_label="loss")


@register.simple_tag
def execution_url(mode: str, reference: str) -> str:
    """Where the job a run's execution_ref names can be looked at ("" when nowhere)."""
    if not reference:
        return ""
    try:
        return get_backend(mode).reference_url(reference) or ""
    except UnknownMode:
        return ""
