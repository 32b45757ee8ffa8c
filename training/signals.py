"""Field conditions, simulated on the waveform: each function makes one difference between the
shared recordings (close, loud, mostly indoors) and the field (a drone 100 m away or more, under
wind and insects, perhaps another make spinning its rotors at another rate), on the fly:

- `mix_at_snr`: a drone into a background at a chosen signal-to-noise ratio;
- `change_speed`: rotor rate (and so pitch) up or down, as resampling does;
- `tilt`: a microphone's response tilted by up to a few dB per octave;
- `background_stream`: long ambience made of real clips joined end to end;
- `random_crop`: a window from anywhere in a recording.

`augment.FieldSampler` draws training windows with these. audiomentations was weighed: its
AirAbsorption is, in its own words, not scientifically accurate and stops at 100 m, its
background mixing reads files from disk on every call, and gain, speed and tilt are a line or
two of numpy and soxr each; so nothing here needs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soxr

from nightear_training.propagation import SAMPLE_RATE, rms_db


def mix_at_snr(signal: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """`signal` scaled so its RMS is `snr_db` above the background's, plus the background."""
    gain_db = rms_db(background) + snr_db - rms_db(signal)
    return (background + signal * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def change_speed(y: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Play `y` `factor` times faster: every frequency times `factor`, length divided by it."""
    return soxr.resample(y, sample_rate * factor, sample_rate).astype(np.float32)


def tilt(y: np.ndarray, db_per_octave: float, sample_rate: int = SAMPLE_RATE,
         pivot_hz: float = 1000.0) -> np.ndarray:
    """A microphone response tilted by `db_per_octave` around `pivot_hz` (30 Hz-Nyquist)."""
    freqs = np.maximum(np.fft.rfftfreq(len(y), 1.0 / sample_rate), 30.0)
    return _through(y, db_per_octave * np.log2(freqs / pivot_hz))


def _through(y: np.ndarray, gain_db: np.ndarray) -> np.ndarray:
    """`y` through a response given in dB at each of its rfft bins."""
    return np.fft.irfft(np.fft.rfft(y) * 10.0 ** (gain_db / 20.0), len(y)).astype(np.float32)


def background_stream(clips: Sequence[np.ndarray], fade_samples: int = 160) -> np.ndarray:
    """Real ambience clips joined end to end, each once, with short fades (no clicks)."""
    ramp = np.linspace(0.0, 1.0, fade_samples, dtype=np.float32)
    parts = []
    for clip in clips:
        part = np.array(clip, dtype=np.float32)
        if len(part) > 2 * fade_samples:
            part[:fade_samples] *= ramp
            part[-fade_samples:] *= ramp[::-1]
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def random_crop(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples from a random place in `y` (repeated when `y` is shorter)."""
    if len(y) < n:
        y = np.resize(y, n)
    start = int(rng.integers(0, len(y) - n + 1))
    return y[start : start + n]
