"""The plain recipe's sampler: real drones into real backgrounds, and little else.

Where `FieldSampler` simulates distance, level, rotor rates of other makes and microphone tilts,
this one keeps each drone near its recorded rotor rate and lets the backgrounds' own variety do
the rest: a background drawn source first (each data set a pool, so thousands of 1-s clips do
not drown a few long recordings), then a clip and a crop at a random gain, sometimes a second
background over it; a positive adds a real drone (source first, then clip) at +-15% rotor
rate, often low-passed as distance and obstacles do, at an SNR where it is heard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from nightear_training.propagation import SAMPLE_RATE, rms_db
from nightear_training.signals import change_speed, random_crop

Pools = Mapping[str, Sequence[np.ndarray]]  # a data set -> its recordings


@dataclass(frozen=True)
class PlainConfig:
    """How the plain recipe draws an example; ranges are sampled uniformly."""

    background_gain_db: tuple[float, float] = (-30.0, 5.0)
    second_background_probability: float = 0.3
    second_background_gain_db: tuple[float, float] = (-30.0, 0.0)
    speed: tuple[float, float] = (0.85, 1.15)  # rotor rate, resampled
    lowpass_probability: float = 0.6
    lowpass_hz: tuple[float, float] = (1000.0, 7000.0)  # 2nd-order Butterworth cut-off
    snr_db: tuple[float, float] = (-5.0, 20.0)  # drone RMS over the background's, broadband
    floor_dbfs: float = -70.0  # a near-silent background counts as this loud for the SNR
    positive_share: float = 0.5


class PlainSampler:
    """One-window examples: background alone, or a drone mixed into one."""

    def __init__(self, drones: Pools, backgrounds: Pools, window_samples: int,
                 config: PlainConfig = PlainConfig(), sample_rate: int = SAMPLE_RATE, seed: int = 0):
        self.drones = {k: list(v) for k, v in drones.items() if len(v)}
        self.backgrounds = {k: list(v) for k, v in backgrounds.items() if len(v)}
        if not self.drones or not self.backgrounds:
            raise ValueError("the plain sampler needs drone and background recordings")
        self.n, self.config, self.sample_rate = window_samples, config, sample_rate
        self.seed = seed

    @staticmethod
    def _pick(pools: dict[str, list[np.ndarray]], rng: np.random.Generator) -> np.ndarray:
        members = pools[sorted(pools)[int(rng.integers(len(pools)))]]
        return members[int(rng.integers(len(members)))]

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        y = random_crop(self._pick(self.backgrounds, rng), self.n, rng).astype(np.float32)
        y = y * np.float32(10.0 ** (rng.uniform(*c.background_gain_db) / 20.0))
        if rng.random() < c.second_background_probability:
            other = random_crop(self._pick(self.backgrounds, rng), self.n, rng)
            y = y + other * np.float32(10.0 ** (rng.uniform(*c.second_background_gain_db) / 20.0))
        return y

    def _drone(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        factor = float(rng.uniform(*c.speed))
        recording = self._pick(self.drones, rng)
        # crop what the new rate needs, then resample: a long recording is never resampled whole
        need = int(np.ceil(self.n * factor)) + 64
        y = change_speed(random_crop(recording, need, rng), factor, self.sample_rate)
        y = random_crop(y, self.n, rng)
        if rng.random() < c.lowpass_probability:
            sos = butter(2, float(rng.uniform(*c.lowpass_hz)), fs=self.sample_rate, output="sos")
            y = sosfilt(sos, y)
        return np.asarray(y, dtype=np.float32)

    def labelled_window(self, rng: np.random.Generator, drone: bool) -> tuple[np.ndarray, float]:
        """`window_samples` of audio in [-1, 1] and its label (0 or 1)."""
        y = self._background(rng)
        if drone:
            d = self._drone(rng)
            bed_db = max(rms_db(y), self.config.floor_dbfs)
            target_db = bed_db + float(rng.uniform(*self.config.snr_db))
            y = y + d * np.float32(10.0 ** ((target_db - max(rms_db(d), -100.0)) / 20.0))
        return np.clip(y, -1.0, 1.0).astype(np.float32), float(drone)

    def window(self, rng: np.random.Generator, drone: bool) -> np.ndarray:
        return self.labelled_window(rng, drone)[0]
