"""Audio and windows for training, the daemon's way.

The daemon's `WavSource` reads and resamples, the daemon's `log_mel` computes the frames (in
`recipe` and `train`), and windows are cut here as the daemon cuts them: the model is trained
and measured on exactly what it will hear in the field.
"""

from __future__ import annotations

import numpy as np

from nightear.decision import DEFAULT_HOP_SECONDS
from nightear.frontend import FrontendConfig
from nightear.sources import WavSource
from nightear_training.data import Clip

WINDOW_FRAMES = 97  # frames per classifier window: 96 * 160 + 512 samples = 0.992 s at 16 kHz


def eval_hop_frames(config: FrontendConfig) -> int:
    """Frames between scored windows, as the daemon scores them (`DEFAULT_HOP_SECONDS`)."""
    return max(1, round(DEFAULT_HOP_SECONDS * config.sample_rate / config.hop_length))


def load_audio(clip: Clip, config: FrontendConfig) -> np.ndarray:
    """A clip as mono float32 at the front-end's rate."""
    return WavSource(clip.path, config.sample_rate).read_all()


def pad_to(y: np.ndarray, n_samples: int) -> np.ndarray:
    """Repeat a clip shorter than `n_samples` (no silent padding: -100 dB frames never occur
    in a live stream, so the model must not learn from them)."""
    if len(y) >= n_samples:
        return y
    return np.resize(y, n_samples) if len(y) else np.zeros(n_samples, dtype=y.dtype)


def window_starts(n_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """Start frames of the windows that cover a clip: every hop, plus one flush with the end."""
    last = n_frames - window_frames
    starts = list(range(0, last + 1, hop_frames))
    if starts[-1] != last:
        starts.append(last)
    return starts


def clip_windows(features: np.ndarray, window_frames: int, hop_frames: int) -> np.ndarray:
    """(n_mels, n_frames) -> (k, n_mels, window_frames) windows covering the clip."""
    starts = window_starts(features.shape[1], window_frames, hop_frames)
    return np.stack([features[:, s : s + window_frames] for s in starts])
