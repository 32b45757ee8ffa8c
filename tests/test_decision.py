"""Smoothing and hysteresis turn window scores into one event per drone pass."""

from __future__ import annotations

from nightear.decision import DecisionConfig, EventChange, EventTracker, WindowScore, mismatch

HOP_S, WINDOW_S = 0.25, 0.8


def run(probs: list[float], **config: int) -> list[EventChange]:
    tracker = EventTracker(DecisionConfig(smooth_windows=config.pop("smooth_windows", 1), **config),
                           threshold=0.5)
    changes: list[EventChange] = []
    for i, p in enumerate(probs):
        changes += tracker.push(WindowScore(i * HOP_S, i * HOP_S + WINDOW_S, p))
    return changes + tracker.flush()


def test_a_single_loud_window_raises_no_event() -> None:
    assert run([0.1, 0.9, 0.1, 0.1, 0.95, 0.2], open_windows=2) == []


def test_event_opens_after_k_windows_and_reports_its_start() -> None:
    changes = run([0.1, 0.8, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], open_windows=2, close_windows=4)
    assert [c.kind for c in changes] == ["open", "close"]
    opened, closed = changes[0].event, changes[1].event
    assert opened.start_s == 1 * HOP_S and opened.windows == 2  # alert as soon as k windows agree
    assert closed.start_s == 1 * HOP_S
    assert closed.end_s == 3 * HOP_S + WINDOW_S  # end of the last window over the threshold
    assert closed.peak_confidence == 0.9
    assert abs(closed.mean_confidence - (0.8 + 0.9 + 0.9) / 3) < 1e-9


def test_short_dips_inside_a_pass_keep_one_event() -> None:
    probs = [0.9, 0.9, 0.2, 0.3, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
    closes = [c for c in run(probs, open_windows=2, close_windows=3) if c.kind == "close"]
    assert len(closes) == 1
    assert closes[0].event.end_s == 7 * HOP_S + WINDOW_S


def test_m_quiet_windows_close_and_a_new_pass_opens_a_new_event() -> None:
    probs = [0.9, 0.9, 0.1, 0.1, 0.9, 0.9]
    closes = [c.event for c in run(probs, open_windows=2, close_windows=2) if c.kind == "close"]
    assert [(e.start_s, e.windows) for e in closes] == [(0.0, 2), (4 * HOP_S, 2)]


def test_event_still_open_at_end_of_stream_is_closed_by_flush() -> None:
    changes = run([0.2, 0.9, 0.9, 0.9], open_windows=2, close_windows=10)
    assert [c.kind for c in changes] == ["open", "close"]
    assert changes[-1].event.end_s == 3 * HOP_S + WINDOW_S


def test_smoothing_ignores_an_isolated_spike_but_follows_a_sustained_rise() -> None:
    assert run([0.1, 0.85, 0.1, 0.1], smooth_windows=2, open_windows=1) == []
    changes = run([0.1, 0.7, 0.7, 0.7, 0.1, 0.1, 0.1, 0.1], smooth_windows=2, open_windows=1,
                  close_windows=2)
    assert [c.kind for c in changes] == ["open", "close"]
    opened = changes[0].event
    assert opened.end_s == 2 * HOP_S + WINDOW_S  # alerted on the first window whose smoothed p is over
    assert opened.start_s == 1 * HOP_S  # from where the drone was first heard


def test_smoothing_delays_the_alert_but_never_stretches_the_event() -> None:
    changes = run([0.1, 0.9, 0.9, 0.9, 0.3, 0.1, 0.1, 0.1, 0.1], smooth_windows=2, open_windows=2,
                  close_windows=3)
    closed = changes[-1].event
    assert closed.start_s == 1 * HOP_S  # the first window that heard the drone
    assert closed.end_s == 3 * HOP_S + WINDOW_S  # window 4 is over only once smoothed


def test_an_event_bearing_is_the_circular_mean_of_its_windows_across_north() -> None:
    from nightear.array import Bearing

    tracker = EventTracker(DecisionConfig(smooth_windows=1, open_windows=2, close_windows=2), threshold=0.5)
    windows = [(0.9, 356.0), (0.9, 2.0), (0.95, 6.0), (0.2, 180.0), (0.1, 180.0)]  # then it fades
    changes: list[EventChange] = []
    for i, (p, bearing) in enumerate(windows):
        changes += tracker.push(WindowScore(i * HOP_S, i * HOP_S + WINDOW_S, p,
                                            Bearing(bearing, 20.0, 0.8)))
    opened, closed = changes[0].event, changes[-1].event
    assert opened.bearing_deg == 359.0  # the alert already says where: between 356 and 2, not 179
    assert closed.bearing_deg == 1.3 and closed.elevation_deg == 20.0
    assert 3.0 < closed.bearing_spread_deg < 6.0  # type: ignore[operator]
    # the track holds every window of the pass; the faded windows after it do not count
    assert [t.bearing_deg for t in closed.track] == [356.0, 2.0, 6.0]


def test_without_an_array_events_have_no_bearing() -> None:
    (closed,) = [c.event for c in run([0.9, 0.9, 0.1, 0.1, 0.1, 0.1]) if c.kind == "close"]
    assert closed.bearing_deg is None and closed.track == ()


def test_the_default_two_second_mean_ignores_a_burst_and_hears_a_pass() -> None:
    hop = 0.5  # the default: two windows a second

    def events(probs: list[float]) -> list[EventChange]:
        tracker, out = EventTracker(DecisionConfig(), threshold=0.5), []
        for i, p in enumerate(probs):
            out += tracker.push(WindowScore(i * hop, i * hop + WINDOW_S, p))
        return out + tracker.flush()

    quiet = [0.1] * 4
    assert events(quiet + [0.99] + quiet) == []  # a toad's short buzz, in one window
    opened, closed = (c.event for c in events(quiet + [0.9] * 6 + quiet))
    assert 4 * hop < opened.end_s - WINDOW_S <= 6 * hop  # a 3-s pass, heard within its first second
    assert opened.start_s == closed.start_s == 4 * hop  # yet the event starts where the pass did
    assert closed.end_s == 9 * hop + WINDOW_S  # and ends where it did


def test_a_config_that_smooths_otherwise_than_the_model_was_thresholded_for_is_named() -> None:
    chosen_for = '{"smooth_windows": 8, "open_windows": 1, "close_windows": 4}'  # 3.4.0: 0.25-s windows
    assert mismatch(DecisionConfig(), chosen_for) is None  # 4 and 2 windows of 0.5 s: the same seconds
    assert mismatch(DecisionConfig(smooth_windows=8, close_windows=4), chosen_for, 0.25) is None
    assert mismatch(DecisionConfig(smooth_windows=1), None) is None  # an older model does not say
    note = mismatch(DecisionConfig(smooth_windows=1, close_windows=6), chosen_for)
    assert note is not None and "decision.smooth_windows is 1" in note and "chosen for 4" in note
    assert "decision.close_windows is 6" in note and "open_windows" not in note
    assert "windows of 0.5 s" in note
    # a config written for four windows a second, run at two: a 4-s mean, named
    note = mismatch(DecisionConfig(smooth_windows=8, close_windows=4), chosen_for, 0.5)
    assert note is not None and "decision.smooth_windows is 8" in note and "chosen for 4" in note
    newer = '{"smooth_windows": 4, "open_windows": 1, "close_windows": 2, "hop_seconds": 0.5}'
    assert mismatch(DecisionConfig(), newer) is None
    assert "chosen for 8" in (mismatch(DecisionConfig(), newer, 0.25) or "")
