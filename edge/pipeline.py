"""The pipeline for one audio stream: front-end -> windows -> classifier -> decision.

`Detector.push(block)` is the one path audio takes, whether it comes from a file or a
microphone, so `nightear detect` and the daemon give the same scores on the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.decision import DecisionConfig, EventChange, EventTracker, WindowScore
from nightear.frontend import StreamingLogMel

DEFAULT_HOP_SECONDS = 0.25  # one window scored about every quarter second


@dataclass(frozen=True)
class DetectorOutput:
    scores: list[WindowScore]
    changes: list[EventChange]


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
    ):
        frontend = classifier.info.frontend
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
            start_s = start * self._frame_seconds
            score = WindowScore(start_s, start_s + self._window_seconds, float(p))
            scores.append(score)
            changes.extend(self.tracker.push(score))
        return DetectorOutput(scores, changes)

    def finish(self) -> list[EventChange]:
        """End of stream: close any open event."""
        return self.tracker.flush()
