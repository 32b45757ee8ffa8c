"""Evaluation arithmetic: events are counted as the daemon raises them, the threshold meets the
false-alarm target, range is read off the recall curve."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="evaluation needs the 'train' extra")

from nightear_training.evaluate import (  # noqa: E402
    count_events,
    false_alarm_curve,
    range_at_recall,
    threshold_for_rate,
)


def test_events_are_counted_per_pass_not_per_window() -> None:
    quiet, loud = [0.1] * 20, [0.95] * 8
    stream = np.array(quiet + loud + quiet + [0.95] + quiet + loud + quiet)
    assert count_events([stream], 0.5) == 2  # the lone loud window raises nothing
    assert count_events([stream, stream], 0.5) == 4
    assert count_events([stream], 0.99) == 0


def test_threshold_is_the_lowest_that_meets_the_target_rate() -> None:
    rng = np.random.default_rng(0)
    streams = [rng.uniform(0, 1, 400) ** 4 for _ in range(6)]  # one "hour"
    curve = false_alarm_curve(streams, 1.0, np.linspace(0.1, 0.99, 90))
    assert curve[0]["per_hour"] > curve[-1]["per_hour"]
    chosen = threshold_for_rate(curve, 1.0)
    assert count_events(streams, chosen) <= 1
    below = max(p["threshold"] for p in curve if p["threshold"] < chosen)
    assert count_events(streams, below) > 1


def test_range_is_interpolated_in_log_distance() -> None:
    recall = {"50": 1.0, "100": 0.9, "200": 0.5, "400": 0.1}
    assert range_at_recall(recall, 0.9) == 100.0
    assert range_at_recall(recall, 0.5) == 200.0
    assert range_at_recall(recall, 0.7) == pytest.approx(np.sqrt(100 * 200), rel=1e-3)
    assert range_at_recall({"25": 0.3, "50": 0.1}, 0.5) is None
    assert range_at_recall({"25": 1.0, "50": 0.95}, 0.9) == 50.0
