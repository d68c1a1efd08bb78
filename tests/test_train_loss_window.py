"""The reported training loss is a mean over the last TRAIN_LOSS_WINDOW steps, not whatever
the final batch happened to give; each step's own loss still draws the curve."""

from __future__ import annotations

import json
import statistics

import pytest

from runs import trainer
from runs.progress import PROGRESS_PREFIX, TRAIN_LOSS_WINDOW, LossWindow, ProgressTracker


def progress_lines(out: str) -> list[dict[str, float]]:
    return [
        json.loads(line.removeprefix(PROGRESS_PREFIX))
        for line in out.splitlines()
        if line.startswith(PROGRESS_PREFIX)
    ]


def test_the_window_is_ten_steps_and_says_so() -> None:
    assert TRAIN_LOSS_WINDOW == 10  # docs/operations.md and docs/api.md name this number


def test_the_window_averages_the_last_steps_only() -> None:
    window = LossWindow(size=3)
    assert window.add(6.0) == 6.0  # fewer steps than the window: all of them
    assert window.add(3.0) == 4.5
    assert window.add(3.0) == 4.0
    assert window.add(0.0) == 2.0  # the first step has left the window


def test_the_trainer_reports_the_step_loss_and_the_windowed_mean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, float] = {}
    report = trainer.step_reporter(total_steps=15, seen=seen)
    # A noisy run: the last batch happens to be an easy one.
    losses = [5.0, 4.0, 4.5, 3.0, 3.5, 2.5, 3.0, 2.0, 2.8, 2.2, 2.6, 1.9, 2.4, 2.1, 0.2]
    for step, loss in enumerate(losses, start=1):
        report(step, loss)
    lines = progress_lines(capsys.readouterr().out)
    assert [line["loss"] for line in lines] == losses  # the curve keeps every batch
    assert lines[0]["loss_mean"] == 5.0
    assert lines[-1]["loss_mean"] == pytest.approx(statistics.fmean(losses[-10:]))
    # What TUNIX_RESULT reports as train_loss: the mean, not the last batch's 0.2.
    assert seen["train_loss"] == pytest.approx(statistics.fmean(losses[-10:]))
    assert seen["train_loss"] != losses[-1]


def test_progress_keeps_the_mean_beside_the_step_loss() -> None:
    tracker = ProgressTracker()
    tracker.feed_line(
        'TUNIX_PROGRESS {"step": 7, "total_steps": 20, "loss": 1.5, "loss_mean": 2.25}'
    )
    snapshot = tracker.snapshot()
    assert snapshot["progress"] == {"step": 7, "total_steps": 20, "loss": 1.5, "loss_mean": 2.25}
    assert snapshot["loss_curve"] == [[7, 1.5]]
    # A trainer that reports no mean (an older one, or another program) keeps the old shape.
    tracker.feed_line('TUNIX_PROGRESS {"step": 8, "total_steps": 20, "loss": 1.25}')
    assert tracker.snapshot()["progress"] == {"step": 8, "total_steps": 20, "loss": 1.25}
    tracker.feed_line('TUNIX_PROGRESS {"step": 9, "loss": 1.0, "loss_mean": NaN}')
    assert "loss_mean" not in tracker.snapshot()["progress"]
