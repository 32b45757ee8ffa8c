"""Field conditions, simulated on the waveform: each function makes one difference between the
shared recordings (close, loud, mostly indoors) and the field (a drone 100 m away or more, under
wind and insects, perhaps another make spinning its rotors at another rate), on the fly:

- `mix_at_snr`: a drone into a background at a chosen signal-to-noise ratio;
- `change_speed`: rotor rate (and so pitch) up or down, as resampling does;
- `wander_speed`: the rate drifting within a window (a knob of the sampler, off);
- `rotor_hum`: a synthetic multirotor (several detuned rotors, blade-pass harmonics with slow
  rpm wander, broadband noise), for the 40-100 Hz hum of large drones missing from the data;
- `tilt`: a microphone's response tilted by up to a few dB per octave;
- `colour`: a random smooth response over log frequency (a knob, off: measured held out);
- `broadband`: a drone's own broadband noise raised under its rotor lines, for makes whose
  lines stand less far over their noise than the trained drones' do (a knob, off: measured
  held out);
- `background_stream`: long ambience made of real clips joined end to end;
- `loud_blocks`: where a drone recording holds its drone, for cutting positives there (a
  knob, off: measured held out);
- `audibility`: how far a drone stands over its bed in the bands where it stands highest, for
  labelling positives by what can be heard of them (a knob, off: measured held out).

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


def colour(y: np.ndarray, response_db: float, rng: np.random.Generator,
           sample_rate: int = SAMPLE_RATE, low_hz: float = 30.0) -> np.ndarray:
    """`y` through a random smooth response of up to +-`response_db` dB: three cosines over
    log frequency (30 Hz-Nyquist), each of random amplitude and phase."""
    freqs = np.clip(np.fft.rfftfreq(len(y), 1.0 / sample_rate), low_hz, sample_rate / 2)
    x = np.pi * np.log2(freqs / low_hz) / np.log2(sample_rate / 2 / low_hz)
    return _through(y, sum(rng.uniform(-1.0, 1.0) * response_db / 3
                           * np.cos(k * x + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3)))


def broadband(y: np.ndarray, ratio_db: float, rng: np.random.Generator,
              sample_rate: int = SAMPLE_RATE, octaves: float = 0.5) -> np.ndarray:
    """`y` plus noise of its own spectrum smoothed over `octaves` (random phases), the noise
    `ratio_db` above `y`: the same sound with its tonal lines standing less far over the noise
    between them, as drones of other propellers and frames may sound."""
    power = np.square(np.abs(np.fft.rfft(y)), dtype=np.float64)
    freqs = np.fft.rfftfreq(len(y), 1.0 / sample_rate)
    cum = np.concatenate(([0.0], np.cumsum(power)))
    low = np.searchsorted(freqs, freqs * 2.0 ** (-octaves / 2))
    high = np.maximum(np.searchsorted(freqs, freqs * 2.0 ** (octaves / 2), side="right"), low + 1)
    envelope = np.sqrt((cum[high] - cum[low]) / (high - low))
    noise = np.fft.irfft(envelope * np.exp(2j * np.pi * rng.random(len(envelope))), len(y))
    return mix_at_snr(noise.astype(np.float32), y, ratio_db)


def rotor_hum(
    seconds: float, blade_pass_hz: float, rng: np.random.Generator, rotors: int = 4,
    sample_rate: int = SAMPLE_RATE, detune: float = 0.03, wander: float = 0.02,
    harmonics: int = 12, noise_db: float = -10.0,
) -> np.ndarray:
    """A synthetic multirotor: `rotors` rotors detuned by up to +-`detune`, each a blade-pass
    fundamental with `harmonics` harmonics (random roll-off and phases), its rate wandering by
    up to +-`wander` over seconds; plus broadband noise `noise_db` below the hum. Unit RMS."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    hum = np.zeros(n)
    for _ in range(rotors):
        f0 = blade_pass_hz * (1.0 + rng.uniform(-detune, detune))
        rate_hz, phase = rng.uniform(0.1, 1.0), rng.uniform(0, 2 * np.pi)
        inst = f0 * (1.0 + wander * np.sin(2 * np.pi * rate_hz * t + phase))
        cycles = np.cumsum(inst) / sample_rate
        rolloff = rng.uniform(0.5, 1.5)
        for k in range(1, harmonics + 1):
            if k * f0 * (1 + wander) >= sample_rate / 2:
                break
            hum += k**-rolloff * np.sin(2 * np.pi * k * cycles + rng.uniform(0, 2 * np.pi))
    hum /= np.sqrt(np.mean(hum**2)) + 1e-12
    noise = _pink_noise(n, rng)
    return (hum + noise * 10.0 ** (noise_db / 20.0)).astype(np.float32) / np.float32(
        np.sqrt(1.0 + 10.0 ** (noise_db / 10.0)))


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0.0
    y = np.fft.irfft(spectrum, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def wander_speed(y: np.ndarray, n: int, wander: float, rng: np.random.Generator,
                 sample_rate: int = SAMPLE_RATE, oversample: int = 4) -> np.ndarray:
    """`n` samples of `y` played at a rate that drifts by up to +-`wander` around 1 (a slow
    sine of random period and phase: a ramp or a wobble within a window). Interpolated on an
    `oversample` times oversampled copy, so the top band loses well under a dB."""
    up = soxr.resample(y, sample_rate, sample_rate * oversample)
    t = np.arange(n) / sample_rate
    period_hz, phase = rng.uniform(0.2, 2.0), rng.uniform(0.0, 2.0 * np.pi)
    rate = 1.0 + wander * np.sin(2.0 * np.pi * period_hz * t + phase)
    position = np.concatenate(([0.0], np.cumsum(rate[:-1]))) * oversample
    return np.interp(position, np.arange(len(up)), up).astype(np.float32)


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


LOUD_BLOCK_S = 0.25  # the grain of `loud_blocks`, and of the crops cut around them


def loud_blocks(y: np.ndarray, within_db: float, sample_rate: int = SAMPLE_RATE,
                band_hz: tuple[float, float] = (200.0, 4000.0), block_s: float = LOUD_BLOCK_S) -> np.ndarray:
    """Start samples of the `block_s` blocks of `y` whose level in the rotors' band is within
    `within_db` of its loudest second (a second, so that one click does not set the bar): where
    a drone recording holds its drone, not the site's background while the drone is far."""
    block = max(int(block_s * sample_rate), 1)
    count = len(y) // block
    if count < 2:
        return np.zeros(1, dtype=np.int64)
    freqs = np.fft.rfftfreq(len(y), 1.0 / sample_rate)
    band = _through(y, np.where((freqs >= band_hz[0]) & (freqs <= band_hz[1]), 0.0, -120.0))
    energy = np.square(band[: count * block], dtype=np.float64).reshape(count, block).mean(axis=1)
    span = min(count, max(int(round(1.0 / block_s)), 1))
    loudest = np.convolve(energy, np.ones(span) / span, mode="valid").max()
    level = 10.0 * np.log10(energy + 1e-20)
    return np.flatnonzero(level >= 10.0 * np.log10(loudest + 1e-20) - within_db) * block


def audibility(drone: np.ndarray, bed: np.ndarray, sample_rate: int = SAMPLE_RATE,
               band_hz: tuple[float, float] = (100.0, 8000.0), per_octave: int = 3, rank: int = 3,
               n_fft: int = 512) -> float:
    """dB by which `drone` stands over `bed` (both as mixed, same length) in its `rank`-th best
    band of 1/`per_octave` octave, their power averaged over Hann frames of `n_fft` (as the
    front-end resolves them): a comb of a few strong lines is heard where they stand over the
    bed, however far under it the drone's total power lies (the third band, not the first, so
    that one line the bed happens to lack is not enough)."""
    def power(x: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(np.resize(x, max(len(x), n_fft)), n_fft)
        spectra = np.fft.rfft(frames[:: n_fft // 2] * np.hanning(n_fft), axis=1)
        return np.square(np.abs(spectra)).mean(axis=0)

    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    bands = int(np.log2(band_hz[1] / band_hz[0]) * per_octave)
    edges = band_hz[0] * 2.0 ** (np.arange(bands + 1) / per_octave)
    index = np.searchsorted(edges, freqs, side="right") - 1
    inside = (index >= 0) & (index < bands)
    occupied = np.bincount(index[inside], minlength=bands) > 0  # low bands narrower than a bin
    drone_power, bed_power = (np.bincount(index[inside], power(x)[inside], bands)[occupied]
                              for x in (drone, bed))
    ratio = np.sort(10.0 * np.log10((drone_power + 1e-20) / (bed_power + 1e-20)))
    return float(ratio[-min(rank, len(ratio))])
