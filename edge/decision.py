"""Decision: a stream of window probabilities -> drone events, one per drone pass.

A single loud window is not a drone and a single quiet window inside a pass is not its end:
probabilities are smoothed (moving mean over `smooth_windows`), an event opens after
`open_windows` consecutive smoothed windows at or over the threshold and closes after
`close_windows` consecutive windows under it (hysteresis in time).
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import msgspec

from nightear.array import Bearing

# Two windows a second: held out (`python -m nightear_training hop`), as many drones heard as
# early, at as many false alarms, as at four, for half the classifier's time.
DEFAULT_HOP_SECONDS = 0.5
EARLIER_HOP_SECONDS = 0.25  # the hop of models whose metadata does not name one (3.4.0 and before)


class DecisionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Smoothing and hysteresis, counted in windows of `model.hop_seconds` (default 0.5 s);
    `threshold` None means the model's own threshold."""

    threshold: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] | None = None
    # a 2-s moving mean, opening on its first window over the threshold, closing after 1 s under:
    # held out, at 1 false alarm an hour it heard more drones than no mean and 2 windows in a row
    # (bursts of ambience that score like drones are shorter than 2 s; drone passes are longer)
    smooth_windows: Annotated[int, msgspec.Meta(ge=1, le=50)] = 4
    open_windows: Annotated[int, msgspec.Meta(ge=1, le=50)] = 1
    close_windows: Annotated[int, msgspec.Meta(ge=1, le=200)] = 2


WINDOW_COUNTS = ("smooth_windows", "open_windows", "close_windows")


def rescaled(config: DecisionConfig, from_hop: float, to_hop: float) -> DecisionConfig:
    """The same logic over the same seconds, counted in windows of another hop: the mean and the
    close in proportion; the open after as long over the threshold (1 window stays 1: at once)."""
    def windows(n: int) -> int:
        return max(1, round(n * from_hop / to_hop))

    return msgspec.structs.replace(
        config, smooth_windows=windows(config.smooth_windows),
        open_windows=1 + round((config.open_windows - 1) * from_hop / to_hop),
        close_windows=windows(config.close_windows))


def mismatch(config: DecisionConfig, chosen_for: str | None,
             hop_seconds: float = DEFAULT_HOP_SECONDS) -> str | None:
    """Where `config` at `hop_seconds` smooths or opens otherwise than the logic the model's
    threshold was chosen for (the model's `decision` metadata, JSON, at its `hop_seconds`,
    counted over the same seconds): there the threshold no longer gives the false alarms per
    hour its card states. None when they agree or the model does not say."""
    try:
        chosen = json.loads(chosen_for or "{}")
        hop = float(chosen.pop("hop_seconds", EARLIER_HOP_SECONDS))
        windows = {k: int(v) for k, v in chosen.items() if k in WINDOW_COUNTS}
    except (ValueError, TypeError, AttributeError):
        return None
    if not windows:
        return None
    expected = rescaled(DecisionConfig(**windows), hop, hop_seconds)
    differ = [f"decision.{k} is {getattr(config, k)}, the model's threshold was chosen for "
              f"{getattr(expected, k)}" for k in sorted(windows)
              if getattr(config, k) != getattr(expected, k)]
    if not differ:
        return None
    return "; ".join(differ) + f" (in windows of {hop_seconds:g} s; false alarms per hour not as measured)"


@dataclass(frozen=True)
class WindowScore:
    """One scored window: its time span in the stream (seconds), drone probability and, with
    an array, where its sound came from."""

    start_s: float
    end_s: float
    p: float
    bearing: Bearing | None = None


@dataclass(frozen=True)
class TrackPoint:
    """One window's bearing during an event: the drone's path as the array heard it."""

    t_s: float  # the window's start in the stream
    bearing_deg: float
    elevation_deg: float | None
    coherence: float
    p: float


@dataclass(frozen=True)
class DroneEvent:
    """One drone pass: from the first to the last window whose own probability is over the
    threshold. Confidences are raw window probabilities over that span; the bearing is the
    circular mean over its windows over the threshold, the spread their circular deviation."""

    start_s: float
    end_s: float
    peak_confidence: float
    mean_confidence: float
    windows: int
    bearing_deg: float | None = None
    bearing_spread_deg: float | None = None
    elevation_deg: float | None = None
    bearing_mirror_deg: float | None = None  # a linear array's mirror image of bearing_deg
    track: tuple[TrackPoint, ...] = ()


def circular_mean(degrees: list[float]) -> tuple[float, float]:
    """Mean direction and circular standard deviation (both degrees) of bearings."""
    angles = [math.radians(d) for d in degrees]
    c = sum(math.cos(a) for a in angles) / len(angles)
    s = sum(math.sin(a) for a in angles) / len(angles)
    length = min(1.0, math.hypot(c, s))
    spread = math.degrees(math.sqrt(max(0.0, -2.0 * math.log(length)))) if length > 1e-12 else 180.0
    return math.degrees(math.atan2(s, c)) % 360.0, spread


@dataclass(frozen=True)
class EventChange:
    """An event opened (a live alert) or closed (its final extent)."""

    kind: Literal["open", "close"]
    event: DroneEvent


@dataclass
class _OpenEvent:
    """Windows since the event opened; its extent runs over raw (unsmoothed) probabilities, so
    smoothing delays the decision but never stretches the event past the drone."""

    threshold: float
    windows: list[WindowScore] = field(default_factory=list)

    def snapshot(self) -> DroneEvent:
        over = [i for i, w in enumerate(self.windows) if w.p >= self.threshold]
        span = self.windows[over[0] : over[-1] + 1] if over else self.windows
        probs = [w.p for w in span]
        event = DroneEvent(
            start_s=span[0].start_s, end_s=span[-1].end_s, peak_confidence=max(probs),
            mean_confidence=sum(probs) / len(probs), windows=len(span),
        )
        located = [(w, w.bearing) for w in span if w.bearing is not None]
        if not located:
            return event
        heard = [b for w, b in located if w.p >= self.threshold] or [b for _, b in located]
        bearing, spread = circular_mean([b.bearing_deg for b in heard])
        elevations = [b.elevation_deg for b in heard if b.elevation_deg is not None]
        mirrors = [b.mirror_deg for b in heard if b.mirror_deg is not None]
        track = tuple(TrackPoint(w.start_s, b.bearing_deg, b.elevation_deg, b.coherence, w.p)
                      for w, b in located)
        return replace(
            event, bearing_deg=round(bearing, 1), bearing_spread_deg=round(spread, 1),
            elevation_deg=round(sum(elevations) / len(elevations), 1) if elevations else None,
            bearing_mirror_deg=round(circular_mean(mirrors)[0], 1) if mirrors else None, track=track,
        )


class EventTracker:
    """Feed window scores in time order; get EventChange objects back."""

    def __init__(self, config: DecisionConfig, threshold: float):
        self.config = config
        self.threshold = threshold
        self._recent: deque[WindowScore] = deque(maxlen=config.smooth_windows)
        self._run: list[WindowScore] = []  # consecutive windows over threshold, event closed
        self._open: _OpenEvent | None = None
        self._under = 0

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def push(self, score: WindowScore) -> list[EventChange]:
        self._recent.append(score)
        over = sum(w.p for w in self._recent) / len(self._recent) >= self.threshold
        if self._open is None:
            return self._push_closed(score, over)
        self._open.windows.append(score)
        if over:
            self._under = 0
            return []
        self._under += 1
        if self._under >= self.config.close_windows:
            return self.flush()
        return []

    def _push_closed(self, score: WindowScore, over: bool) -> list[EventChange]:
        if not over:
            self._run.clear()
            return []
        self._run.append(score)
        if len(self._run) < self.config.open_windows:
            return []
        # the mean rises after the pass has begun: its own windows over the threshold just before
        # the run belong to the event, so it starts where the drone did
        rise: list[WindowScore] = []
        for w in reversed([w for w in self._recent if w.start_s < self._run[0].start_s]):
            if w.p < self.threshold:
                break
            rise.insert(0, w)
        self._open = _OpenEvent(self.threshold, windows=rise + self._run)
        self._run.clear()
        self._under = 0
        return [EventChange("open", self._open.snapshot())]

    def current(self) -> DroneEvent | None:
        """The open event as it stands now (None when none is open)."""
        return self._open.snapshot() if self._open is not None else None

    def flush(self) -> list[EventChange]:
        """Close the open event, if any (end of stream, or shutdown)."""
        if self._open is None:
            self._run.clear()
            return []
        event = self._open.snapshot()
        self._open = None
        self._under = 0
        self._run.clear()
        return [EventChange("close", event)]
