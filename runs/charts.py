"""Line charts as plain SVG coordinates: axes with round-numbered ticks, several series, a
legend. The pages draw them with no script (they work with JavaScript off and under the CSP);
this module only does the arithmetic, so it needs no Django."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
