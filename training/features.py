"""Features for training, computed by the edge front-end itself.

The daemon's `WavSource` reads and resamples, the daemon's `log_mel` computes the frames: the
model is trained on exactly what it will hear in the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nightear.frontend import FrontendConfig, MelBasis, log_mel
from nightear.sources import WavSource
from nightear_training.data import Clip

WINDOW_FRAMES = 48  # frames per classifier window: 47 * 256 + 1024 samples = 0.816 s at 16 kHz
EVAL_HOP_FRAMES = 16  # windows every 0.256 s, as the daemon scores them


def load_audio(clip: Clip, config: FrontendConfig) -> np.ndarray:
    """A clip as mono float32 at the front-end's rate."""
    return WavSource(clip.path, config.sample_rate).read_all()


def pad_to(y: np.ndarray, n_samples: int) -> np.ndarray:
    """Repeat a clip shorter than `n_samples` (no silent padding: -100 dB frames never occur
    in a live stream, so the model must not learn from them)."""
    if len(y) >= n_samples:
        return y
    return np.resize(y, n_samples) if len(y) else np.zeros(n_samples, dtype=y.dtype)


def clip_features(
    clip: Clip, config: FrontendConfig, mel_basis: MelBasis, window_frames: int = WINDOW_FRAMES
) -> np.ndarray:
    """(n_mels, n_frames >= window_frames) float32 log-mel of one clip."""
    y = pad_to(load_audio(clip, config), config.samples_for_frames(window_frames))
    return log_mel(y, config, mel_basis)


def features_for(
    clips: Sequence[Clip], config: FrontendConfig, mel_basis: MelBasis,
    window_frames: int = WINDOW_FRAMES, workers: int = 2,
) -> list[np.ndarray]:
    """Log-mel of every clip, in order (threads: decoding and FFTs release the GIL)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: clip_features(c, config, mel_basis, window_frames), clips))


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
