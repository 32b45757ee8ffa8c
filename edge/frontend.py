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
CHUNK_FRAMES = 32  # frames a stream works through at once: blocks of any size use the same buffers
CLIP_CHUNK_FRAMES = 2048  # frames a whole clip is worked through at once (20 s; ~40 MB of buffers)


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


class _Workspace:
    """Every buffer the log-mel of up to `frames` frames needs, made once, so that a stream's
    blocks allocate nothing but the frames they return. Each row (frame) is worked alone, in
    the same order whatever the number of rows: the streaming and whole-clip paths agree bit
    for bit."""

    def __init__(self, config: FrontendConfig, mel_basis: MelBasis, frames: int):
        self.window = hann_window(config.n_fft)
        self.mel_basis = mel_basis
        self.windowed = np.empty((frames, config.n_fft))
        self.spectrum = np.empty((frames, config.n_bins), np.complex128)
        self.squares = np.empty((frames, 2 * config.n_bins))  # re^2, im^2 of each bin, interleaved
        self.power = np.empty((frames, config.n_bins))
        self.gathered = np.empty((frames, len(mel_basis.bins)))
        self.mel = np.empty((frames, mel_basis.n_mels))

    def log_mel(self, frames: np.ndarray, out: np.ndarray) -> None:
        """(n, n_fft) samples -> `out`, (n_mels, n) float32 log-mel."""
        n, basis = len(frames), self.mel_basis
        windowed = np.multiply(frames, self.window, out=self.windowed[:n])
        spectrum = np.fft.rfft(windowed, axis=1, out=self.spectrum[:n])
        squares = np.square(spectrum.view(np.float64), out=self.squares[:n])
        power = np.add(squares[:, 0::2], squares[:, 1::2], out=self.power[:n])
        gathered = np.take(power, basis.bins, axis=1, out=self.gathered[:n], mode="clip")
        gathered *= basis.weights
        mel = np.add.reduceat(gathered, basis.offsets, axis=1, out=self.mel[:n])
        np.maximum(mel, AMIN_POWER, out=mel)  # power_to_db, in place
        np.log10(mel, out=mel)
        mel *= 10.0
        out[...] = mel.T


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
    out = np.empty((mel_basis.n_mels, n_frames), np.float32)
    work = _Workspace(config, mel_basis, min(n_frames, CLIP_CHUNK_FRAMES))
    for start in range(0, n_frames, CLIP_CHUNK_FRAMES):  # memory stays flat for long recordings
        end = min(start + CLIP_CHUNK_FRAMES, n_frames)
        work.log_mel(view[start:end], out[:, start:end])
    return out


class StreamingLogMel:
    """Streaming log-mel: push blocks of any size, get the frames they complete.

    Keeps the samples of the frame that is not yet complete in a buffer made once, and works a
    block through CHUNK_FRAMES frames at a time; `push` returns exactly the frames `log_mel`
    would give for the concatenated stream.
    """

    def __init__(self, config: FrontendConfig, mel_basis: MelBasis):
        if mel_basis.n_mels != config.n_mels or mel_basis.n_bins != config.n_bins:
            raise ModelError(
                f"mel basis is {mel_basis.n_mels}x{mel_basis.n_bins}, "
                f"front-end needs {config.n_mels}x{config.n_bins}"
            )
        self.config = config
        self.mel_basis = mel_basis
        self._work = _Workspace(config, mel_basis, CHUNK_FRAMES)
        self._samples = np.zeros(config.samples_for_frames(CHUNK_FRAMES))
        step = self._samples.strides[0]
        self._framed = [np.lib.stride_tricks.as_strided(  # the buffer's first `count` frames
            self._samples, (count, config.n_fft), (config.hop_length * step, step), writeable=False)
            for count in range(CHUNK_FRAMES + 1)]
        self._held = 0  # samples at the buffer's start, not yet a whole frame
        self.frames_emitted = 0

    def reset(self) -> None:
        """Forget the partial frame, as at the start of a new stream."""
        self._held = 0
        self.frames_emitted = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """block: (n,) mono samples. Returns (n_mels, new_frames) float32."""
        config, hop = self.config, self.config.hop_length
        out = np.empty((config.n_mels, config.frames_in(self._held + len(block))), np.float32)
        taken = done = 0
        while True:
            take = min(len(block) - taken, len(self._samples) - self._held)
            self._samples[self._held : self._held + take] = block[taken : taken + take]
            self._held += take
            taken += take
            count = config.frames_in(self._held)
            if count:
                self._work.log_mel(self._framed[count], out[:, done : done + count])
                done += count
                rest = self._held - count * hop
                self._samples[:rest] = self._samples[count * hop : self._held]
                self._held = rest
            if taken == len(block):
                break
        self.frames_emitted += done
        return out
