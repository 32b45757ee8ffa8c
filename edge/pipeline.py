"""The pipeline for one audio stream: array (or channel mix) -> resampling -> front-end ->
windows -> classifier -> decision.

`Pipeline.push(block)` is the one path device-format audio takes, whether it comes from a
file or a microphone, so `nightear detect` and the daemon give the same scores and bearings on
the same audio. `Detector` is its mono part, from 16 kHz samples on, which training shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import soxr

from nightear.array import ArrayStage, Bearing, ChannelMix
from nightear.classifier import OnnxClassifier
from nightear.decision import DEFAULT_HOP_SECONDS, DecisionConfig, EventChange, EventTracker, WindowScore
from nightear.errors import AudioError
from nightear.frontend import StreamingLogMel
from nightear.geometry import ArraySettings

Locator = Callable[[float, float], Bearing | None]


@dataclass(frozen=True)
class DetectorOutput:
    scores: list[WindowScore]
    changes: list[EventChange]
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # the mono it scored
    nonfinite_samples: int = 0  # NaN or inf in the block, scored as silence and counted


def score_line(score: WindowScore) -> dict[str, object]:
    """A scored window as `--scores` prints it: start, probability and, with an array, bearing."""
    line: dict[str, object] = {"t_s": round(score.start_s, 3), "p": round(score.p, 4)}
    if score.bearing is not None:
        line.update(bearing_deg=score.bearing.bearing_deg, elevation_deg=score.bearing.elevation_deg)
    return line


class FrameWindows:
    """Collects log-mel frames and cuts windows of `window_frames` every `hop_frames`."""

    def __init__(self, n_mels: int, window_frames: int, hop_frames: int):
        self.window_frames = window_frames
        self.hop_frames = hop_frames
        self._frames = np.zeros((n_mels, 0), dtype=np.float32)
        self._first_frame = 0  # stream index of self._frames[:, 0]
        self._next_start = 0  # stream index of the next window's first frame

    def push(self, frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """frames: (n_mels, n). Returns windows (k, n_mels, window_frames) and their start frames."""
        self._frames = np.concatenate((self._frames, frames), axis=1)
        end = self._first_frame + self._frames.shape[1]
        starts = list(range(self._next_start, end - self.window_frames + 1, self.hop_frames))
        windows = np.stack(
            [self._frames[:, s - self._first_frame : s - self._first_frame + self.window_frames]
             for s in starts]
        ) if starts else np.zeros((0, self._frames.shape[0], self.window_frames), np.float32)
        if starts:
            self._next_start = starts[-1] + self.hop_frames
        drop = max(0, self._next_start - self._first_frame)
        self._frames = self._frames[:, drop:]
        self._first_frame += drop
        return windows, starts


class Detector:
    """One stream's state: push mono blocks at the model's sample rate, get scores and events."""

    def __init__(
        self,
        classifier: OnnxClassifier,
        decision: DecisionConfig,
        hop_seconds: float = DEFAULT_HOP_SECONDS,
        locator: Locator | None = None,
    ):
        frontend = classifier.info.frontend
        self.locator = locator  # bearings of windows that may belong to an event
        self.classifier = classifier
        self.frontend = StreamingLogMel(frontend, classifier.mel_basis)
        hop_frames = max(1, round(hop_seconds * frontend.sample_rate / frontend.hop_length))
        self.windows = FrameWindows(frontend.n_mels, classifier.window_frames, hop_frames)
        threshold = decision.threshold if decision.threshold is not None else classifier.info.threshold
        self.tracker = EventTracker(decision, threshold)
        self._frame_seconds = frontend.hop_length / frontend.sample_rate
        self._window_seconds = frontend.samples_for_frames(classifier.window_frames) / frontend.sample_rate

    @property
    def window_seconds(self) -> float:
        return self._window_seconds

    def push(self, block: np.ndarray) -> DetectorOutput:
        windows, starts = self.windows.push(self.frontend.push(block))
        probs = self.classifier.score(windows)
        scores: list[WindowScore] = []
        changes: list[EventChange] = []
        for start, p in zip(starts, probs, strict=True):
            start_s, end_s = start * self._frame_seconds, start * self._frame_seconds + self._window_seconds
            bearing = None
            if self.locator is not None and (p >= self.tracker.threshold or self.tracker.is_open):
                bearing = self.locator(start_s, end_s)
            score = WindowScore(start_s, end_s, float(p), bearing)
            scores.append(score)
            changes.extend(self.tracker.push(score))
        return DetectorOutput(scores, changes, block)

    def finish(self) -> list[EventChange]:
        """End of stream: close any open event."""
        return self.tracker.flush()


class Pipeline:
    """Device-format audio in: (n, channels) float32 blocks at the device's rate.

    With an array configured the array stage beamforms and locates; without one the channels
    are averaged, so a single microphone (or a stereo file) takes the path it always took.
    """

    def __init__(self, classifier: OnnxClassifier, decision: DecisionConfig, input_rate: int,
                 channels: int, array: ArraySettings | None = None,
                 hop_seconds: float = DEFAULT_HOP_SECONDS):
        self.input_rate, self.channels = input_rate, channels
        rate = classifier.info.frontend.sample_rate
        self.stage: ArrayStage | ChannelMix
        locator = None
        if array is not None and array.enabled:
            geometry = array.geometry(channels)
            if channels != geometry.device_channels:
                raise AudioError(f"array {geometry.name} delivers {geometry.device_channels} channels, "
                                 f"the audio has {channels}")
            self.stage = ArrayStage(geometry, array, input_rate)
            locator = self.stage.bearing
        else:
            self.stage = ChannelMix(channels)
        self._resampler = (soxr.ResampleStream(input_rate, rate, 1, dtype="float32", quality="HQ")
                           if input_rate != rate else None)
        self.detector = Detector(classifier, decision, hop_seconds, locator)

    @property
    def sample_rate(self) -> int:
        """The rate of the mono stream the detector scores."""
        return self.detector.classifier.info.frontend.sample_rate

    def push(self, block: np.ndarray) -> DetectorOutput:
        """block: (n, channels) float32 at the input rate."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise AudioError(f"expected {self.channels}-channel audio, got "
                             f"{block.shape[1] if block.ndim == 2 else 1} channels")
        nonfinite = 0
        if not np.isfinite(np.add.reduce(block, axis=None)):  # any NaN or inf makes the sum one
            bad = ~np.isfinite(block)
            nonfinite = int(np.count_nonzero(bad))
        if nonfinite:  # one NaN would poison every window it touches: silence instead, counted
            block = np.where(bad, np.float32(0.0), block)
        mono = self.stage.push(block)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        output = self.detector.push(mono)
        return replace(output, nonfinite_samples=nonfinite) if nonfinite else output

    def finish(self) -> DetectorOutput:
        """End of stream: score what the resampler still holds, then close any open event."""
        tail = self.stage.finish()
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(tail, last=True)
        output = self.detector.push(tail)
        return DetectorOutput(output.scores, output.changes + self.detector.finish(), output.audio)
