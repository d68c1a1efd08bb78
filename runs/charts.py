"""Line charts, scatters and parallel coordinates as plain SVG coordinates: axes with
round-numbered ticks, several series, a legend. The pages draw them with no script (they work
with JavaScript off and under the CSP); this module only does the arithmetic, so it needs no
Django."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PALETTE_SIZE = 8  # colours c0..c7 in static/runs/app.css; more series reuse them
WIDTH, HEIGHT = 640, 240
# Room for the tick labels: left for the values, below for the steps.
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 10, 30
TICKS = 5


@dataclass(frozen=True)
class Line:
    label: str
    points: Sequence[Sequence[float]]  # [step, value], steps ascending
    colour: int = 0
    dots: bool = False  # a few separate measurements (evaluations): marks, not a line


@dataclass(frozen=True)
class Tick:
    at: float  # pixels along its axis
    label: str


@dataclass(frozen=True)
class DrawnLine:
    label: str
    colour: int
    dots: bool
    polyline: str  # "x,y x,y ..." (empty for dots)
    marks: list[tuple[float, float]]  # the dots' centres
    count: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    right: int  # x of the plot's right edge
    bottom: int  # y of the plot's bottom edge
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    lines: list[DrawnLine]
    low: float
    high: float
    first_step: float
    last_step: float


def nice_ticks(low: float, high: float, count: int = TICKS) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart, whichever is
    nearest the even spacing) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    rough = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(rough))
    step = min((m * magnitude for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / rough)))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def tick_label(value: float, spacing: float) -> str:
    """Enough decimals to tell neighbouring ticks apart, no more."""
    if spacing >= 1 and float(value).is_integer():
        return f"{value:,.0f}"
    decimals = max(0, -math.floor(math.log10(spacing))) if spacing > 0 else 2
    if abs(value) < 1e-3 and value != 0:
        return f"{value:.1e}"
    return f"{value:.{decimals}f}"


def layout(lines: Sequence[Line], width: int = WIDTH, height: int = HEIGHT) -> Chart | None:
    """Pixel positions for ``lines`` on shared axes; None when no line has a point."""
    drawn = [line for line in lines if line.points]
    if not drawn:
        return None
    steps = [float(p[0]) for line in drawn for p in line.points]
    values = [float(p[1]) for line in drawn for p in line.points]
    x_values = nice_ticks(min(steps), max(steps))
    y_values = nice_ticks(min(values), max(values))
    x_low, x_high = x_values[0], x_values[-1]
    y_low, y_high = y_values[0], y_values[-1]
    right, bottom = width - RIGHT, height - BOTTOM

    def x(step: float) -> float:
        return LEFT + (step - x_low) / ((x_high - x_low) or 1.0) * (right - LEFT)

    def y(value: float) -> float:
        return TOP + (y_high - value) / ((y_high - y_low) or 1.0) * (bottom - TOP)

    x_spacing = (x_values[1] - x_values[0]) if len(x_values) > 1 else 1.0
    y_spacing = (y_values[1] - y_values[0]) if len(y_values) > 1 else 1.0
    result = []
    for line in drawn:
        coords = [(round(x(float(s)), 1), round(y(float(v)), 1)) for s, v in line.points]
        result.append(
            DrawnLine(
                label=line.label,
                colour=line.colour % PALETTE_SIZE,
                dots=line.dots,
                polyline="" if line.dots else " ".join(f"{a},{b}" for a, b in coords),
                marks=coords if line.dots or len(coords) == 1 else [],
                count=len(coords),
            )
        )
    return Chart(
        width=width,
        height=height,
        left=LEFT,
        top=TOP,
        right=right,
        bottom=bottom,
        x_ticks=[Tick(round(x(v), 1), tick_label(v, x_spacing)) for v in x_values],
        y_ticks=[Tick(round(y(v), 1), tick_label(v, y_spacing)) for v in y_values],
        lines=result,
        low=min(values),
        high=max(values),
        first_step=min(steps),
        last_step=max(steps),
    )


# A sweep's charts: the metric against each searched parameter (a small scatter each), and
# parallel coordinates (an axis a parameter and one for the metric, a line a trial).
SMALL_WIDTH, SMALL_HEIGHT = 320, 200
PARALLEL_HEIGHT = 280
PARALLEL_TOP = 28  # room above the axes for their names
LINEAR, LOG, CATEGORY = "linear", "log", "category"


@dataclass(frozen=True)
class Scale:
    """How values sit along an axis: linear, log (a log-scale parameter's range spans decades:
    linear, most trials would crowd one end), or category (``categories`` in order; a value is
    its index)."""

    kind: str = LINEAR
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    label: str  # what the mark is, for the title a pointer shows
    state: str  # the trial's status ("completed", "pruned", ...)
    colour: int = 0
    best: bool = False


@dataclass(frozen=True)
class DrawnMark:
    cx: float
    cy: float
    label: str
    state: str
    colour: int
    best: bool


@dataclass(frozen=True)
class Scatter:
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    marks: list[DrawnMark]


@dataclass(frozen=True)
class Path:
    label: str
    values: Sequence[float | None]  # one a coordinate; None where the trial has no value
    state: str
    colour: int = 0
    best: bool = False


@dataclass(frozen=True)
class DrawnAxis:
    x: float
    label: str
    ticks: list[Tick]  # at: y in pixels


@dataclass(frozen=True)
class DrawnPath:
    label: str
    state: str
    colour: int
    best: bool
    # "x,y x,y ..." per unbroken run of values: a missing value (a pruned trial has no final
    # metric) breaks the line rather than joining its neighbours across it.
    segments: list[str]
    marks: list[tuple[float, float]]  # single values with no neighbour to join
    count: int  # values drawn


@dataclass(frozen=True)
class Parallel:
    width: int
    height: int
    top: int
    bottom: int
    axes: list[DrawnAxis]
    paths: list[DrawnPath]


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten covering [low, high] (both positive), with 2 and 5 times them in between
    when the range spans two decades or less."""
    first = math.floor(math.log10(low))
    last = math.ceil(math.log10(high))
    if last == first:
        last += 1
    multiples = (1, 2, 5) if last - first <= 2 else (1,)
    candidates = sorted(
        float(f"{10.0**exponent * m:.12g}")
        for exponent in range(first, last + 1)
        for m in multiples
    )
    below = max(c for c in candidates if c <= low * (1 + 1e-9))
    above = min(c for c in candidates if c >= high * (1 - 1e-9))
    return [c for c in candidates if below <= c <= above]


def _positions(
    values: Sequence[float], scale: Scale
) -> tuple[list[tuple[float, str]], Callable[[float], float]]:
    """An axis's ticks (fraction along it, label) and its map from a value to a fraction."""
    if scale.kind == CATEGORY:
        count = len(scale.categories) or 1

        def slot(value: float) -> float:
            return (value + 0.5) / count

        return [(slot(i), label) for i, label in enumerate(scale.categories)], slot
    if not values:
        return [], lambda value: 0.5
    if scale.kind == LOG and min(values) > 0:
        ticks = log_ticks(min(values), max(values))
        low, high = math.log10(ticks[0]), math.log10(ticks[-1])

        def along_log(value: float) -> float:
            return (math.log10(value) - low) / ((high - low) or 1.0)

        return [(along_log(t), f"{t:g}") for t in ticks], along_log
    ticks = nice_ticks(min(values), max(values))
    spacing = (ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    start, end = ticks[0], ticks[-1]

    def along(value: float) -> float:
        return (value - start) / ((end - start) or 1.0)

    return [(along(t), tick_label(t, spacing)) for t in ticks], along


def scatter(
    marks: Sequence[Mark],
    *,
    x_scale: Scale = Scale(),  # frozen: one shared default is safe
    width: int = SMALL_WIDTH,
    height: int = SMALL_HEIGHT,
) -> Scatter | None:
    """Pixel positions for ``marks`` (x on ``x_scale``, y linear); None without a mark."""
    if not marks:
        return None
    right, bottom = width - RIGHT, height - BOTTOM
    x_ticks, x_at = _positions([m.x for m in marks], x_scale)
    y_ticks, y_at = _positions([m.y for m in marks], Scale())

    def x(value: float) -> float:
        return round(LEFT + x_at(value) * (right - LEFT), 1)

    def y(value: float) -> float:
        return round(bottom - y_at(value) * (bottom - TOP), 1)

    return Scatter(
        width=width,
        height=height,
        left=LEFT,
        top=TOP,
        right=right,
        bottom=bottom,
        x_ticks=[Tick(round(LEFT + at * (right - LEFT), 1), label) for at, label in x_ticks],
        y_ticks=[Tick(round(bottom - at * (bottom - TOP), 1), label) for at, label in y_ticks],
        marks=[
            DrawnMark(x(m.x), y(m.y), m.label, m.state, m.colour % PALETTE_SIZE, m.best)
            # The best last, so it is drawn over the marks it may hide.
            for m in sorted(marks, key=lambda m: m.best)
        ],
    )


def parallel(
    axes: Sequence[tuple[str, Scale]],
    paths: Sequence[Path],
    *,
    width: int = WIDTH,
    height: int = PARALLEL_HEIGHT,
) -> Parallel | None:
    """Parallel coordinates: ``axes`` (name, scale) evenly spaced left to right, each path a
    polyline through its values; None without an axis or a path."""
    if not axes or not paths:
        return None
    top, bottom = PARALLEL_TOP, height - TOP
    step = (width - LEFT - LEFT) / max(1, len(axes) - 1)
    xs = [round(LEFT + i * step, 1) if len(axes) > 1 else width / 2 for i in range(len(axes))]
    drawn_axes: list[DrawnAxis] = []
    maps: list[Callable[[float], float]] = []
    for index, (name, scale) in enumerate(axes):
        values = [float(v) for p in paths if (v := p.values[index]) is not None]
        ticks, at = _positions(values, scale)
        maps.append(at)
        drawn_axes.append(
            DrawnAxis(
                x=xs[index],
                label=name,
                ticks=[Tick(round(bottom - f * (bottom - top), 1), label) for f, label in ticks],
            )
        )
    drawn_paths = []
    for path in paths:
        runs: list[list[tuple[float, float]]] = [[]]
        for index, value in enumerate(path.values):
            if value is None:
                runs.append([])
                continue
            y = round(bottom - maps[index](float(value)) * (bottom - top), 1)
            runs[-1].append((xs[index], y))
        joined = [r for r in runs if len(r) > 1]
        drawn_paths.append(
            DrawnPath(
                label=path.label,
                state=path.state,
                colour=path.colour % PALETTE_SIZE,
                best=path.best,
                segments=[" ".join(f"{a},{b}" for a, b in r) for r in joined],
                marks=[r[0] for r in runs if len(r) == 1],
                count=sum(len(r) for r in runs),
            )
        )
    drawn_paths.sort(key=lambda p: p.best)  # the best drawn last, over the others
    return Parallel(
        width=width, height=height, top=top, bottom=bottom, axes=drawn_axes, paths=drawn_paths
    )
