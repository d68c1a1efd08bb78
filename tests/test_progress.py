"""runs/progress.py: the trainer's progress lines, parsed without Django or Tunix."""

from __future__ import annotations

import pytest

from runs.progress import MAX_CURVE_POINTS, LineSplitter, ProgressTracker, thin


def test_progress_lines_update_step_total_loss_and_the_curve() -> None:
    tracker = ProgressTracker()
    tracker.feed_line('TUNIX_PROGRESS {"step": 1, "total_steps": 20, "loss": 5.5}')
    tracker.feed_line('TUNIX_PROGRESS {"step": 2, "total_steps": 20, "loss": 4.25}\n')
    assert tracker.take() == {
        "progress": {"step": 2, "total_steps": 20, "loss": 4.25},
        "loss_curve": [[1, 5.5], [2, 4.25]],
        "series": {},
        "metrics": {},
    }
    assert tracker.take() is None  # nothing new since


def test_the_result_line_gives_the_final_metrics() -> None:
    tracker = ProgressTracker()
    tracker.feed_line(
        'TUNIX_RESULT {"train_loss": 2.1, "eval_loss": 2.4, "steps": 20, '
        '"tokens_per_second": 812.5, "wall_seconds": 11.2, "compiled_shapes": 3, '
        '"ignored": "x"}'
    )
    assert tracker.snapshot()["metrics"] == {
        "train_loss": 2.1,
        "eval_loss": 2.4,
        "steps": 20.0,
        "tokens_per_second": 812.5,
        "wall_seconds": 11.2,
        "compiled_shapes": 3.0,
    }


@pytest.mark.parametrize(
    "line",
    [
        "step 3/20 loss 2.0",  # ordinary output
        "TUNIX_PROGRESS not json",
        'TUNIX_PROGRESS ["step", 3]',
        'TUNIX_PROGRESS {"step": -1, "loss": 2.0}',
        'TUNIX_PROGRESS {"step": 2.5, "loss": 2.0}',
        'TUNIX_PROGRESS {"step": true, "loss": 2.0}',
        'TUNIX_PROGRESS {"loss": 2.0}',
        "TUNIX_PROGRESS " + '{"step": 1, "pad": "' + "x" * 5000 + '"}',
    ],
)
def test_malformed_progress_is_ignored(line: str) -> None:
    tracker = ProgressTracker()
    tracker.feed_line(line)
    assert tracker.take() is None
    assert tracker.snapshot()["progress"] == {}


def test_non_finite_losses_and_impossible_totals_are_left_out() -> None:
    tracker = ProgressTracker()
    tracker.feed_line('TUNIX_PROGRESS {"step": 4, "total_steps": 2, "loss": NaN}')
    assert tracker.snapshot() == {
        "progress": {"step": 4, "total_steps": None, "loss": None},
        "loss_curve": [],
        "series": {},
        "metrics": {},
    }


def test_the_curve_stays_bounded_and_keeps_its_ends() -> None:
    curve = [[step, 1.0 / step] for step in range(1, 1001)]
    thinned = thin(curve)
    assert len(thinned) <= MAX_CURVE_POINTS
    assert thinned[0] == [1, 1.0]
    assert thinned[-1] == [1000, 1.0 / 1000]
    assert [p[0] for p in thinned] == sorted(p[0] for p in thinned)


def test_lines_split_across_chunks_are_joined_and_floods_stay_bounded() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, limit=100)
    splitter.feed(b'TUNIX_PROGRESS {"st')
    splitter.feed(b'ep": 1}\nplain \xe2\x9c')
    splitter.feed(b"\x93 text\n")
    splitter.feed(b"y" * 1000)  # no newline: not kept
    assert len(splitter.buffer) <= 100
    splitter.feed(b"\ntail")
    splitter.close()
    assert lines[:2] == ['TUNIX_PROGRESS {"step": 1}', "plain \u2713 text"]
    assert lines[-1] == "tail"


def test_a_new_attempt_continues_or_replaces_the_curve() -> None:
    curve = [[float(step), 5.0 - step / 10] for step in range(1, 11)]
    resumed = ProgressTracker(curve=[list(p) for p in curve])
    resumed.feed_line('TUNIX_PROGRESS {"step": 6, "total_steps": 20}')  # restored step 6
    resumed.feed_line('TUNIX_PROGRESS {"step": 7, "total_steps": 20, "loss": 4.0}')
    assert [p[0] for p in resumed.curve] == [1, 2, 3, 4, 5, 6, 7]
    assert resumed.curve[-1] == [7, 4.0]
    restarted = ProgressTracker(curve=[list(p) for p in curve])
    restarted.feed_line('TUNIX_PROGRESS {"step": 0, "total_steps": 20}')
    assert restarted.curve == []
    retried = ProgressTracker(curve=[list(p) for p in curve])
    retried.feed_line('TUNIX_PROGRESS {"step": 3, "total_steps": 20, "loss": 9.0}')
    assert retried.curve[-1] == [3, 9.0]
    assert len(retried.curve) == 3


def test_learning_rate_tokens_per_second_and_eval_loss_are_series_by_step() -> None:
    tracker = ProgressTracker()
    for step, loss in ((1, 5.0), (2, 4.5)):
        tracker.feed_line(
            f'TUNIX_PROGRESS {{"step": {step}, "total_steps": 4, "loss": {loss}, '
            f'"learning_rate": 0.003, "tokens_per_second": {1000 * step}}}'
        )
    tracker.feed_line('TUNIX_PROGRESS {"step": 2, "total_steps": 4, "eval_loss": 4.75}')
    snapshot = tracker.snapshot()
    assert snapshot["loss_curve"] == [[1, 5.0], [2, 4.5]]  # the evaluation is not a resume
    assert snapshot["series"] == {
        "learning_rate": [[1, 0.003], [2, 0.003]],
        "tokens_per_second": [[1, 1000], [2, 2000]],
        "eval_loss": [[2, 4.75]],
    }
    assert snapshot["progress"] == {"step": 2, "total_steps": 4, "loss": 4.5}


def test_generation_eval_shows_as_a_phase_with_items_done_of_all() -> None:
    tracker = ProgressTracker()
    tracker.feed_line('TUNIX_PROGRESS {"step": 4, "total_steps": 4, "loss": 3.0}')
    tracker.feed_line(
        'TUNIX_PROGRESS {"step": 4, "total_steps": 4, "phase": "evaluating", "item": 8, '
        '"items": 20}'
    )
    tracker.feed_line(  # impossible counts are ignored
        'TUNIX_PROGRESS {"step": 4, "total_steps": 4, "phase": "evaluating", "item": 30, '
        '"items": 20}'
    )
    assert tracker.snapshot()["progress"] == {
        "step": 4,
        "total_steps": 4,
        "loss": 3.0,
        "phase": "evaluating",
        "item": 8,
        "items": 20,
    }
    assert tracker.curve == [[4, 3.0]]


def test_a_resumed_attempt_drops_the_stopped_attempts_later_series_points() -> None:
    tracker = ProgressTracker(
        curve=[[1, 5.0], [2, 4.0], [3, 3.0]],
        series={"eval_loss": [[2, 4.2], [3, 3.1]], "learning_rate": [[1, 0.1], [3, 0.1]]},
    )
    tracker.feed_line('TUNIX_PROGRESS {"step": 2, "total_steps": 4}')  # restored at step 2
    assert tracker.snapshot()["series"] == {
        "eval_loss": [[2, 4.2]],
        "learning_rate": [[1, 0.1]],
    }


def test_every_series_stays_bounded_like_the_curve() -> None:
    tracker = ProgressTracker()
    for step in range(1, 1001):
        tracker.feed_line(
            f'TUNIX_PROGRESS {{"step": {step}, "loss": 1.0, "learning_rate": 0.5, '
            f'"tokens_per_second": {step}}}'
        )
        tracker.feed_line(f'TUNIX_PROGRESS {{"step": {step}, "eval_loss": 2.0}}')
    for points in tracker.snapshot()["series"].values():
        assert len(points) <= MAX_CURVE_POINTS
        assert points[-1][0] == 1000
