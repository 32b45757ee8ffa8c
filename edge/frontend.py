"""Log-mel front-end shared by the daemon and by training.

One implementation of the features, so a model never sees features it was not trained on.
Pure functions for whole clips plus `StreamingLogMel` for blocks of any size; both give the
same frames bit for bit, because every frame is computed from its own samples only (per-row
FFT, a sparse mel projection summed in a fixed order) and the dB reference is fixed: no
per-clip normalisation, so a stream scores the same whatever its chunking.

The mel basis is librosa's (`librosa_mel_basis`), built at training time and shipped inside
the model file as `MelBasis` JSON, so the daemon never imports librosa (about 0.9 s and
130 MB of start-up) to listen.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import numpy as np

from nightear.errors import ModelError

FEATURE_VERSION = "nightear-logmel-1"  # periodic Hann, power 2, slaney mel, 10*log10, no centring
AMIN_POWER = 1e-10  # power floor: the quietest value any band can take is -100 dB re full scale


class FrontendConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of the log-mel front-end; a model file carries the ones it was trained with."""

    sample_rate: Annotated[int, msgspec.Meta(ge=8000, le=48000)] = 16000
    n_fft: Annotated[int, msgspec.Meta(ge=64, le=8192)] = 512  # 32 ms
    hop_length: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 160  # 10 ms
    n_mels: Annotated[int, msgspec.Meta(ge=8, le=256)] = 64
    fmin: Annotated[float, msgspec.Meta(ge=0.0)] = 30.0
    fmax: Annotated[float, msgspec.Meta(gt=0.0)] = 8000.0

    def __post_init__(self) -> None:
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length {self.hop_length} exceeds n_fft {self.n_fft}")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax} "
                f"sample_rate={self.sample_rate}"
            )

    @property
    def n_bins(self) -> int:
        """Number of one-sided FFT bins."""
        return self.n_fft // 2 + 1

    def samples_for_frames(self, n_frames: int) -> int:
        """Samples needed to compute `n_frames` frames (no centring)."""
        return (n_frames - 1) * self.hop_length + self.n_fft

    def frames_in(self, n_samples: int) -> int:
        """Whole frames that `n_samples` samples give (no centring)."""
        return 0 if n_samples < self.n_fft else (n_samples - self.n_fft) // self.hop_length + 1


class MelBasis:
    """A sparse mel filterbank: filter i weights FFT bins `bins[offsets[i]:offsets[i+1]]`.

    Sparse because a slaney filterbank of 64 x 513 has under 1,000 non-zero weights: the
    projection is cheap, it fits in model metadata, and its summation order is fixed.
    """

    def __init__(self, bins: np.ndarray, weights: np.ndarray, offsets: np.ndarray, n_bins: int):
        self.bins = np.asarray(bins, dtype=np.intp)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.offsets = np.asarray(offsets, dtype=np.intp)
        self.n_bins = int(n_bins)
        counts = np.diff(np.append(self.offsets, len(self.bins)))
        if len(self.bins) != len(self.weights) or np.any(counts <= 0):
            raise ModelError("mel basis is malformed: every filter needs at least one FFT bin")
        if self.bins.size and (self.bins.min() < 0 or self.bins.max() >= self.n_bins):
            raise ModelError(f"mel basis addresses bins outside 0..{self.n_bins - 1}")

    @property
    def n_mels(self) -> int:
        return len(self.offsets)

    @classmethod
    def from_dense(cls, basis: np.ndarray) -> MelBasis:
        """From a dense (n_mels, n_bins) matrix such as `librosa.filters.mel` returns."""
        rows = [np.flatnonzero(row) for row in basis]
        offsets = np.cumsum([0] + [len(r) for r in rows[:-1]])
        bins = np.concatenate(rows)
        weights = np.concatenate([basis[i, r] for i, r in enumerate(rows)])
        return cls(bins, weights, offsets, basis.shape[1])

    def to_dense(self) -> np.ndarray:
        """The (n_mels, n_bins) matrix, for tests and plots."""
        dense = np.zeros((self.n_mels, self.n_bins))
        rows = np.repeat(np.arange(self.n_mels), np.diff(np.append(self.offsets, len(self.bins))))
        dense[rows, self.bins] = self.weights
        return dense

    def to_json(self) -> str:
        weights = [float(np.float32(w)) for w in self.weights]
        return json.dumps(
            {"n_bins": self.n_bins, "offsets": self.offsets.tolist(), "bins": self.bins.tolist(),
             "weights": weights},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> MelBasis:
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(data["bins"], data["weights"], data["offsets"], data["n_bins"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"mel basis in model metadata is unreadable: {exc}") from None

    def project(self, power: np.ndarray) -> np.ndarray:
        """(n_frames, n_bins) power -> (n_frames, n_mels) mel power."""
        return np.add.reduceat(power[:, self.bins] * self.weights, self.offsets, axis=1)


def librosa_mel_basis(config: FrontendConfig) -> MelBasis:
    """librosa's slaney mel filterbank for `config`. Imports librosa: training and tests only."""
    import librosa

    dense = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
        fmin=config.fmin, fmax=config.fmax,
    )
    return MelBasis.from_dense(dense)


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, as librosa and scipy use for spectral analysis."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def power_to_db(power: np.ndarray) -> np.ndarray:
    """Power -> dB re 1.0 (a full-scale sine's band power), floored at AMIN_POWER."""
    return 10.0 * np.log10(np.maximum(power, AMIN_POWER))


def _frames_to_log_mel(
    frames: np.ndarray, window: np.ndarray, mel_basis: MelBasis
) -> np.ndarray:
    """(n_frames, n_fft) samples -> (n_mels, n_frames) float32 log-mel."""
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return power_to_db(mel_basis.project(power)).T.astype(np.float32)


def log_mel(y: np.ndarray, config: FrontendConfig, mel_basis: MelBasis) -> np.ndarray:
    """Log-mel of a whole mono clip at `config.sample_rate`.

    y: (n_samples,) float audio in [-1, 1]. Returns (n_mels, n_frames) float32 dB, frames
    starting at sample 0 every hop_length samples (no centring, like a stream).
    """
    y = np.asarray(y, dtype=np.float64)
    n_frames = config.frames_in(len(y))
    if n_frames == 0:
        return np.zeros((mel_basis.n_mels, 0), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(y, config.n_fft)[:: config.hop_length]
    return _frames_to_log_mel(view[:n_frames], hann_window(config.n_fft), mel_basis)


class StreamingLogMel:
    """Streaming log-mel: push blocks of any size, get the frames they complete.

    Keeps the samples of the frame that is not yet complete; `push` returns exactly the frames
    `log_mel` would give for the concatenated stream.
    """

    def __init__(self, config: FrontendConfig, mel_basis: MelBasis):
        if mel_basis.n_mels != config.n_mels or mel_basis.n_bins != config.n_bins:
            raise ModelError(
                f"mel basis is {mel_basis.n_mels}x{mel_basis.n_bins}, "
                f"front-end needs {config.n_mels}x{config.n_bins}"
            )
        self.config = config
        self.mel_basis = mel_basis
        self._window = hann_window(config.n_fft)
        self._pending = np.zeros(0, dtype=np.float64)
        self.frames_emitted = 0

    def reset(self) -> None:
        """Forget the partial frame, as at the start of a new stream."""
        self._pending = np.zeros(0, dtype=np.float64)
        self.frames_emitted = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """block: (n,) mono samples. Returns (n_mels, new_frames) float32."""
        samples = np.concatenate((self._pending, np.asarray(block, dtype=np.float64)))
        n_frames = self.config.frames_in(len(samples))
        if n_frames == 0:
            self._pending = samples
            return np.zeros((self.config.n_mels, 0), dtype=np.float32)
        hop = self.config.hop_length
        view = np.lib.stride_tricks.as_strided(samples, (n_frames, self.config.n_fft),
                                               (hop * samples.strides[0], samples.strides[0]),
                                               writeable=False)  # frames without copying
        out = _frames_to_log_mel(view, self._window, self.mel_basis)
        self._pending = samples[n_frames * hop :].copy()
        self.frames_emitted += n_frames
        return out
