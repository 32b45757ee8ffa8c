"""How held-out scores are counted, as the field counts them: per recording an event or not
through the daemon's decision logic, false alarms per hour of ambience with a Poisson 95%
interval, the low-alarm share that chooses an epoch, and recordings led in by ambience as a
drone arrives in a stream. Pure functions of stored window probabilities, so a stored run is
rescored under any threshold or decision settings without training again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import chi2

from nightear.decision import DecisionConfig, EventTracker, WindowScore
from nightear_training.evaluate import count_events, false_alarm_curve, threshold_for_rate

LEVELS_DB = (0, -10, -20, -30)  # as recorded, then fainter
# Above 0.99 the grid is even in logit (0.2 apart, to 0.9999): steps of 0.001 near 0.999 are 0.7
# in logit, and one such step decided between an ambience event and a missed drone.
THRESHOLDS = np.unique(np.round(np.concatenate((
    np.linspace(0.5, 0.9, 9), np.linspace(0.91, 0.98, 8),
    1.0 / (1.0 + np.exp(-np.linspace(np.log(99.0), np.log(9999.0), 24))))), 5))

# "recordings": [(name, group, level, window probs)], "streams", "kinds", ..., "hop_seconds"
Scores = dict[str, Any]


def poisson_interval(count: int, hours: float) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a rate per hour from `count` events in `hours`."""
    low = 0.0 if count == 0 else float(chi2.ppf(0.025, 2 * count)) / 2
    high = float(chi2.ppf(0.975, 2 * count + 2)) / 2
    return round(low / hours, 3), round(high / hours, 3)


def event_score(probs: np.ndarray, decision: DecisionConfig = DecisionConfig()) -> float:
    """The highest threshold at which the decision logic opens an event on these window
    probabilities: the best `open_windows`-long run's lowest (smoothed) probability."""
    p = np.asarray(probs, dtype=np.float64)
    if decision.smooth_windows > 1:
        kernel = np.ones(decision.smooth_windows)
        p = np.convolve(p, kernel)[: len(p)] / np.minimum(np.arange(1, len(p) + 1), len(kernel))
    k = decision.open_windows
    if len(p) < k:
        return 0.0
    runs = np.lib.stride_tricks.sliding_window_view(p, k)
    return float(runs.min(axis=1).max())


def arriving(scores: Scores, lead_windows: int = DecisionConfig().smooth_windows - 1,
             seed: int = 0) -> Scores:
    """`scores` with each recording preceded by `lead_windows` windows of scored ambience (a
    random stretch of the out-of-fold streams, joined), as a drone arrives in a stream the daemon
    has been scoring: a recording scored alone starts the moving mean afresh, so its first
    windows are smoothed over fewer windows than the ambience that sets the threshold (by
    default the daemon's mean's history: one window fewer than it averages). The
    stretch is itself led in by as many windows scored 0, so that its own first windows are not
    judged alone either: only a drone, or the ambience at its own rate, opens an event."""
    if lead_windows <= 0:
        return scores
    pool = np.concatenate([np.asarray(p, dtype=np.float64) for _, _, p in scores["streams"]] or [np.zeros(0)])
    if not len(pool):
        raise ValueError("no scored ambience to lead a recording in: the scores hold no stream")
    pool = np.resize(pool, max(len(pool), lead_windows))
    starts = np.random.default_rng(seed).integers(0, len(pool) - lead_windows + 1, len(scores["recordings"]))
    quiet = np.zeros(lead_windows)
    return {**scores, "recordings": [
        (name, group, level, np.concatenate((quiet, pool[s : s + lead_windows], p)))
        for (name, group, level, p), s in zip(scores["recordings"], starts, strict=True)]}


def false_alarms(scores: Scores, thresholds: Sequence[float] = tuple(THRESHOLDS),
                 decision: DecisionConfig = DecisionConfig()) -> dict[str, object]:
    """Events per hour of out-of-fold ambience against the threshold."""
    streams = [p for _, _, p in scores["streams"]]
    seconds: dict[str, float] = {}
    for source, secs, _ in scores["streams"]:
        seconds[source] = seconds.get(source, 0.0) + secs
    hours = sum(seconds.values()) / 3600.0
    curve = [{**point, "interval95": poisson_interval(int(point["events"]), hours)}
             for point in false_alarm_curve(streams, hours, thresholds, decision)]
    return {"unique_minutes": round(hours * 60, 1),
            "minutes_by_source": {k: round(v / 60, 1) for k, v in sorted(seconds.items())},
            "curve": curve}


def table(scores: Scores, threshold: float, decision: DecisionConfig = DecisionConfig()) -> dict[str, object]:
    """At one threshold: per drone and level, recordings heard; helicopters and backgrounds
    with an event; ambience events per hour; hard negatives per kind."""
    heard: dict[str, dict[str, list[int]]] = {}
    for _, group, level, p in scores["recordings"]:
        heard.setdefault(group, {}).setdefault(str(level), [0, 0])
        heard[group][str(level)][0] += int(event_score(p, decision) >= threshold)
        heard[group][str(level)][1] += 1
    drones = {g: {lvl: {"heard": h, "of": n} for lvl, (h, n) in v.items()}
              for g, v in heard.items() if g not in ("helicopter", "background")}
    certain = [g for g in drones if "uncertain" not in g]
    pooled = {str(lvl): {"heard": sum(drones[g][str(lvl)]["heard"] for g in certain),
                         "of": sum(drones[g][str(lvl)]["of"] for g in certain)} for lvl in LEVELS_DB}
    mean_share = {str(lvl): round(float(np.mean([drones[g][str(lvl)]["heard"] / drones[g][str(lvl)]["of"]
                                                 for g in certain])), 3) for lvl in LEVELS_DB}
    hours = sum(secs for _, secs, _ in scores["streams"]) / 3600.0
    events = count_events([p for _, _, p in scores["streams"]], threshold, decision)
    kinds: dict[str, dict[str, float]] = {}
    for kind, secs, p in scores["kinds"]:
        k = kinds.setdefault(kind, {"seconds": 0.0, "windows": 0, "over": 0, "events": 0})
        k["seconds"] += secs
        k["windows"] += len(p)
        k["over"] += int((p >= threshold).sum())
        k["events"] += count_events([p], threshold, decision)
    lab = scores.get("lab_clips", [])
    lab_right = sum(int((p >= threshold) == (label == "drone")) for _, label, p in lab)
    return {
        "threshold": round(threshold, 5),
        "lab_test_split": {"clips": len(lab), "accuracy": round(lab_right / len(lab), 4) if lab else None,
                           "drone_clips": sum(int(y == "drone") for _, y, _ in lab),
                           "drone_clips_missed": sum(int(p < threshold) for _, y, p in lab if y == "drone"),
                           "background_clips_over": sum(int(p >= threshold) for _, y, p in lab
                                                        if y != "drone")},
        "drones": drones, "pooled": pooled, "mean_share_over_drones": mean_share,
        "helicopters": {"with_event": heard.get("helicopter", {}).get("0", [0, 0])[0],
                        "of": heard.get("helicopter", {}).get("0", [0, 0])[1]},
        "backgrounds": {"with_event": heard.get("background", {}).get("0", [0, 0])[0],
                        "of": heard.get("background", {}).get("0", [0, 0])[1]},
        "ambience": {"unique_minutes": round(hours * 60, 1), "events": events,
                     "per_hour": round(events / hours, 3) if hours else None,  # none held out
                     "interval95": poisson_interval(events, hours) if hours else None},
        "hard_negatives": {kind: {"minutes": round(k["seconds"] / 60, 1),
                                  "share_of_windows": round(k["over"] / max(k["windows"], 1), 4),
                                  "events": int(k["events"]),
                                  "events_per_hour": round(k["events"] / (k["seconds"] / 3600), 2)}
                           for kind, k in kinds.items()},
    }


LOW_ALARM_MULTIPLES = (1.0, 2.0, 4.0, 8.0)  # of the target rate: the low-alarm end of the curve


def low_rate_share(scores: Scores, target_per_hour: float = 1.0,
                   decision: DecisionConfig = DecisionConfig()) -> float:
    """Mean over drones of the share heard (as recorded, -10 and -20 dB), averaged over the
    thresholds for 1, 2, 4 and 8 times `target_per_hour` false alarms per hour: the low-alarm
    end of the curve, steadier than its single point, which one or two ambience recordings
    decide."""
    curve = false_alarms(scores, decision=decision)["curve"]
    values = []
    for rate in (target_per_hour * m for m in LOW_ALARM_MULTIPLES):
        share = table(scores, threshold_for_rate(curve, rate), decision)["mean_share_over_drones"]
        values.append(np.mean([share["0"], share["-10"], share["-20"]]))
    return round(float(np.mean(values)), 3)


def choose(scores_by_epoch: dict[int, Scores], target_per_hour: float,
           decision: DecisionConfig = DecisionConfig()) -> tuple[int, float]:
    """The epoch that hears most held-out drones over the low-alarm end of the curve (the
    low-alarm share at 1, 2, 4 and 8 times the target rate: the target's point alone is decided
    by one or two ambience recordings), and its threshold for the target rate. Ties go to the
    earlier epoch."""
    best = (-1.0, 0, 0.5)
    for epoch, scores in sorted(scores_by_epoch.items()):
        value = low_rate_share(scores, target_per_hour, decision)
        if value > best[0]:
            threshold = threshold_for_rate(false_alarms(scores, decision=decision)["curve"], target_per_hour)
            best = (value, epoch, threshold)
    return best[1], best[2]


def threshold_setters(scores: Scores, threshold: float, n: int = 3,
                      decision: DecisionConfig = DecisionConfig()) -> list[dict[str, object]]:
    """The ambience recordings most like a drone: each with the highest threshold at which it
    would raise an event. Those at or over `threshold` raised its false alarms; the first one
    under it is what keeps the threshold from going lower."""
    names = scores.get("stream_names") or [group for group, _, _ in scores["streams"]]
    ranked = sorted(((event_score(p, decision), name) for name, (_, _, p) in
                     zip(names, scores["streams"], strict=True)), reverse=True)
    over = [r for r in ranked if r[0] >= threshold]
    under = [r for r in ranked if r[0] < threshold][: max(1, n - len(over))]
    return [{"recording": name, "event_score": round(value, 5)} for value, name in over + under]


DISTANCE = re.compile(r"/(\d+)m[-/]")  # gunhoo-outdoor's labelled distance in a recording's name


def range_curve(scores: Scores, threshold: float, group: str = "gunhoo",
                decision: DecisionConfig = DecisionConfig()) -> dict[str, dict[str, int]]:
    """Recordings of one drone heard as recorded, by the distance labelled in their names."""
    curve: dict[int, list[int]] = {}
    for name, g, level, p in scores["recordings"]:
        match = DISTANCE.search(name)
        if g == group and level == 0 and match:
            counts = curve.setdefault(int(match.group(1)), [0, 0])
            counts[0] += int(event_score(p, decision) >= threshold)
            counts[1] += 1
    return {f"{d} m": {"heard": h, "of": n} for d, (h, n) in sorted(curve.items())}


def thinned(scores: Scores, every: int) -> Scores:
    """`scores` as a unit scoring one window in `every` would have scored them (the same
    windows, `every` times the hop): what fewer windows a second would cost, without training."""
    def keep(p: np.ndarray) -> np.ndarray:
        return np.asarray(p)[::every]

    return {**scores,
            "recordings": [(n, g, lvl, keep(p)) for n, g, lvl, p in scores["recordings"]],
            "streams": [(g, secs, keep(p)) for g, secs, p in scores["streams"]],
            "kinds": [(k, secs, keep(p)) for k, secs, p in scores["kinds"]]}


def open_delays(scores: Scores, threshold: float, hop_seconds: float, window_seconds: float,
                decision: DecisionConfig = DecisionConfig()) -> list[float]:
    """Seconds from a drone recording's start (as it arrives in scored ambience, `arriving`) to
    the end of the window on which the decision logic opens its event, for each recording
    heard as recorded: how long an operator waits for the alert."""
    lead = decision.smooth_windows - 1
    delays = []
    for _, group, level, p in arriving(scores, lead)["recordings"]:
        if level != 0 or group in ("helicopter", "background"):
            continue
        tracker = EventTracker(decision, threshold)
        for i, value in enumerate(p):
            if any(c.kind == "open" for c in tracker.push(WindowScore(i, i + 1, float(value)))):
                if i >= 2 * lead:  # opened on the drone, not on the ambience leading it in
                    delays.append(round((i - 2 * lead) * hop_seconds + window_seconds, 3))
                break
    return delays
