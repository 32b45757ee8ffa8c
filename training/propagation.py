"""Sound in the open air: how loud a drone is at a distance, and against what night.

- `propagate`: spherical spreading and ISO 9613-1 atmospheric absorption over a distance
  (`absorb`: the absorption alone, for a level set afterwards);
- `a_weighted_rms_db`: how loud a signal is to a sound level meter;
- `Scene`, `drone_at`, `ambience_at`, `at_distance`: a drone of a given sound level at a given
  distance in a night of a given level, as the range measurements simulate it.

Augmentation (`augment`) draws distances from here; the range and array evaluations use the
scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
REFERENCE_DISTANCE_M = 1.0


def iso9613_absorption_db_per_m(
    freq_hz: np.ndarray, temperature_c: float = 15.0, humidity_pct: float = 70.0,
    pressure_kpa: float = 101.325,
) -> np.ndarray:
    """Pure-tone atmospheric absorption coefficient (dB/m), ISO 9613-1:1993 equations 3-5."""
    f = np.asarray(freq_hz, dtype=np.float64)
    t = temperature_c + 273.15
    t0, t01, pr = 293.15, 273.16, 101.325
    pa = pressure_kpa / pr
    c = -6.8346 * (t01 / t) ** 1.261 + 4.6151
    h = humidity_pct * 10.0**c / pa  # molar concentration of water vapour, %
    fr_o = pa * (24.0 + 4.04e4 * h * (0.02 + h) / (0.391 + h))
    fr_n = pa * (t / t0) ** -0.5 * (9.0 + 280.0 * h * np.exp(-4.170 * ((t / t0) ** (-1 / 3) - 1.0)))
    return 8.686 * f**2 * (
        1.84e-11 / pa * (t / t0) ** 0.5
        + (t / t0) ** -2.5 * (
            0.01275 * np.exp(-2239.1 / t) / (fr_o + f**2 / fr_o)
            + 0.1068 * np.exp(-3352.0 / t) / (fr_n + f**2 / fr_n)
        )
    )


def propagate(y: np.ndarray, distance_m: float, sample_rate: int = SAMPLE_RATE,
              temperature_c: float = 15.0, humidity_pct: float = 70.0) -> np.ndarray:
    """A sound recorded at 1 m, as heard `distance_m` away: -20 log10(d) dB of spherical
    spreading and a frequency-dependent absorption of alpha(f) * d dB."""
    n = len(y)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    loss_db = iso9613_absorption_db_per_m(freqs, temperature_c, humidity_pct) * distance_m
    spectrum = np.fft.rfft(y) * 10.0 ** (-loss_db / 20.0)
    spreading = REFERENCE_DISTANCE_M / max(distance_m, REFERENCE_DISTANCE_M)
    return (np.fft.irfft(spectrum, n) * spreading).astype(np.float32)


def absorb(y: np.ndarray, distance_m: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The air's absorption alone over `distance_m` (a low-pass, no spreading loss): for a
    level that is set afterwards."""
    return propagate(y, distance_m, sample_rate) * np.float32(max(distance_m, REFERENCE_DISTANCE_M))


def rms_db(y: np.ndarray) -> float:
    """Root-mean-square level in dB re full scale (-200 for silence)."""
    return float(10.0 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def a_weighting_db(freq_hz: np.ndarray) -> np.ndarray:
    """IEC 61672-1 A-weighting in dB (0 dB at 1 kHz)."""
    f2 = np.maximum(np.asarray(freq_hz, dtype=np.float64), 1e-3) ** 2
    ra = 12194.0**2 * f2**2 / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2))
    return 20.0 * np.log10(ra) + 2.0


def a_weighted_rms_db(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """A-weighted RMS level in dB re full scale: how loud `y` is to a sound level meter."""
    spectrum = np.fft.rfft(y) * 10.0 ** (a_weighting_db(np.fft.rfftfreq(len(y), 1 / sample_rate)) / 20)
    return rms_db(np.fft.irfft(spectrum, len(y)))


@dataclass(frozen=True)
class Scene:
    """Levels that turn a distance into a signal-to-noise ratio (A-weighted, dB SPL).

    source_dba: the drone at 1 m; ambient_dba: the night; full_scale_dba: the SPL that maps
    to 0 dBFS at the microphone (sets where the scene sits in the recorder's range).
    """

    source_dba: float = 75.0
    ambient_dba: float = 30.0
    full_scale_dba: float = 90.0


def drone_at(drone: np.ndarray, distance_m: float, scene: Scene = Scene(),
             sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A drone recorded close, scaled to the scene's source level at 1 m, then heard from
    `distance_m` away."""
    gain_db = scene.source_dba - scene.full_scale_dba - a_weighted_rms_db(drone, sample_rate)
    return propagate(drone * 10.0 ** (gain_db / 20.0), distance_m, sample_rate)


def ambience_at(ambience: np.ndarray, scene: Scene = Scene(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Ambience scaled to the scene's ambient level."""
    gain_db = scene.ambient_dba - scene.full_scale_dba - a_weighted_rms_db(ambience, sample_rate)
    return (ambience * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def at_distance(drone: np.ndarray, ambience: np.ndarray, distance_m: float, scene: Scene = Scene(),
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A drone `distance_m` away in `ambience` (same length), at the scene's levels."""
    return (drone_at(drone, distance_m, scene, sample_rate)
            + ambience_at(ambience, scene, sample_rate)).astype(np.float32)
