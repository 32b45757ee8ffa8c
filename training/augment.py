"""Training windows that sound like the field: `FieldSampler` draws a real drone (its rotor
rate changed, absorbed over a distance) into real night ambience at an audible SNR, or the
ambience alone, through a random microphone tilt and level. The waveform operations it uses
live in `signals`; what it draws, and how often, is `AugmentConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nightear_training.propagation import SAMPLE_RATE, absorb, rms_db
from nightear_training.signals import change_speed, mix_at_snr, random_crop, tilt

Pools = Mapping[str, Sequence[np.ndarray]]  # a name (a drone, a kind of background) -> recordings

# Where negatives and beds are drawn from, and how often: outdoor ambience and outdoor sites
# first, so 4,000 one-second ESC-50 clips do not drown 73 minutes of real ambience; animals and
# frogs apart (the held-out evaluation's ambience false alarms were toads, frogs and crows).
BACKGROUND_POOL_WEIGHTS = (("ambience", 0.20), ("animals", 0.25), ("outdoor", 0.20),
                           ("helicopter", 0.10), ("esc50", 0.15), ("noise", 0.10))
BED_POOLS = ("ambience", "animals", "outdoor", "esc50", "noise")  # a drone is never mixed into a helicopter


@dataclass(frozen=True)
class AugmentConfig:
    """How training examples are drawn; ranges are sampled uniformly (speeds log-uniformly).

    Every positive is a real drone recording mixed into real background at an SNR the drone
    stays audible at. The variations the held-out evaluation (`nightear_training.heldout`)
    rejected (synthetic and large drones, clean drones, ground echoes, drifting and split rotor
    rates, a drone's own colour or broadband noise, paired or altered negatives, crops at the
    loudest moments, soft audibility labels, drone weights) are gone from the code; their
    figures stay in the model's history (models/nightear-drone.history.md).
    """

    snr_db: tuple[float, float] = (0.0, 20.0)  # drone RMS over background RMS: audible, labelled drone
    lowpass_probability: float = 0.6  # air absorption over a distance (the SNR is set after it)
    distance_m: tuple[float, float] = (20.0, 500.0)
    speed: tuple[float, float] = (0.85, 1.15)  # rotor rate, near the recorded one: at 3.4.0's
    # 0.5-2x every harmonic comb was a drone, and to stay quiet on helicopters, engines and
    # animals the network doubted them all (it heard 9-12 of its own 81 outdoor recordings at
    # 0.95, at +-15% 39); held out by site, as many drones for as few alarms
    level_dbfs: tuple[float, float] = (-70.0, -15.0)  # RMS of the final window, either class
    tilt_db_per_octave: tuple[float, float] = (-2.0, 2.0)
    # share of training windows that hold a drone; below 0.5 the model meets more of the
    # ambience it must stay quiet on per step (the interleaving keeps 0.5's draws unchanged).
    # 1/3 held out above 0.5 in four paired runs (two seeds on two hosts, +0.02 to +0.07 in
    # low-alarm share), 1/4 below: 3.4.0 trains on 1/3
    positive_share: float = 1.0 / 3.0
    background_mix_probability: float = 0.3  # a negative (or a bed) made of two backgrounds
    background_pools: tuple[tuple[str, float], ...] = BACKGROUND_POOL_WEIGHTS


def _as_pools(recordings: Sequence[np.ndarray] | Pools, name: str) -> dict[str, list[np.ndarray]]:
    if isinstance(recordings, Mapping):
        return {k: list(v) for k, v in recordings.items() if len(v)}
    return {name: list(recordings)} if len(recordings) else {}


class _Pool:
    """Recordings of one pool, drawn in proportion to the square root of their length: long
    ambience more often than a 1-s clip, but not in proportion."""

    def __init__(self, recordings: list[np.ndarray]):
        self.recordings = recordings
        root = np.sqrt(np.array([max(len(r), 1) for r in recordings], dtype=np.float64))
        self.weights = root / root.sum()

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return self.recordings[int(rng.choice(len(self.recordings), p=self.weights))]


class FieldSampler:
    """Draws labelled training windows that sound like the field: a real drone in real
    background at an audible SNR, or background alone.

    drones: recordings, or a mapping from each drone (make, site) to its recordings: a drone is
    chosen first, uniformly, then one of its recordings, so 1,300 clips of two indoor toys weigh
    as much as two drones, not as 98% of the positives. backgrounds: recordings, or a mapping
    from pool names (see `BACKGROUND_POOL_WEIGHTS`; unknown pools share the weight of "noise")
    to recordings. All mono float32 at `sample_rate`. `window(rng, drone)` gives `n_samples`.
    `seed` is accepted for the samplers' common signature; every draw comes from the `rng`
    each window is given.
    """

    def __init__(self, drones: Sequence[np.ndarray] | Pools, backgrounds: Sequence[np.ndarray] | Pools,
                 n_samples: int, config: AugmentConfig = AugmentConfig(),
                 sample_rate: int = SAMPLE_RATE, seed: int = 0):
        if not 0.0 < config.positive_share < 1.0:
            raise ValueError(f"positive_share must lie between 0 and 1, got {config.positive_share}")
        drone_pools = _as_pools(drones, "drone")
        background_pools = _as_pools(backgrounds, "ambience")
        if not drone_pools or not background_pools:
            raise ValueError("FieldSampler needs at least one drone and one background recording")
        self.drones = [_Pool(v) for _, v in sorted(drone_pools.items())]
        self.n_samples, self.config, self.sample_rate = n_samples, config, sample_rate
        weights = dict(config.background_pools)
        names = sorted(background_pools)
        self._pools = {k: _Pool(background_pools[k]) for k in names}
        raw = np.array([weights.get(k, weights.get("noise", 0.1)) for k in names])
        self._negative_names, self._negative_p = names, raw / raw.sum()
        beds = [k for k in names if k in BED_POOLS] or names
        bed_raw = np.array([weights.get(k, weights.get("noise", 0.1)) for k in beds])
        self._bed_names, self._bed_p = beds, bed_raw / bed_raw.sum()

    def _background(self, rng: np.random.Generator, bed: bool = False) -> np.ndarray:
        n = self.n_samples
        names, p = (self._bed_names, self._bed_p) if bed else (self._negative_names, self._negative_p)
        pool = self._pools[names[rng.choice(len(names), p=p)]]
        y = random_crop(pool.draw(rng), n, rng).astype(np.float32)
        if rng.random() < self.config.background_mix_probability:
            other = random_crop(self._pools[names[rng.choice(len(names), p=p)]].draw(rng), n, rng)
            y = mix_at_snr(other, y, rng.uniform(-10.0, 10.0))
        return y

    def _drone(self, rng: np.random.Generator) -> np.ndarray:
        """`n_samples` of a drone recording (drone first, then recording), played faster or
        slower by a factor drawn from `speed`."""
        rng.random()  # spent, as 3.4.0 spent it (on large drones), so a seed draws 3.4.0's windows
        pool = self.drones[rng.integers(len(self.drones))]
        recording = pool.draw(rng)
        low, high = self.config.speed
        factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        need = int(np.ceil(self.n_samples * factor)) + 16
        return change_speed(random_crop(recording, need, rng), factor, self.sample_rate)[: self.n_samples]

    def _audible_drone(self, rng: np.random.Generator) -> np.ndarray:
        """A drone as it arrives: its speed, and in some the air's absorption over a distance."""
        y, c = self._drone(rng), self.config
        if rng.random() < c.lowpass_probability:
            y = absorb(y, rng.uniform(*c.distance_m), self.sample_rate)
        return y

    def window(self, rng: np.random.Generator, drone: bool) -> np.ndarray:
        """One example of `n_samples` at a random level."""
        return self.labelled_window(rng, drone)[0]

    def labelled_window(self, rng: np.random.Generator, drone: bool) -> tuple[np.ndarray, float]:
        """One example and its label: 1 for a drone in a bed, 0 for background alone."""
        if drone:
            y = self._audible_drone(rng)
            rng.random()  # spent, as 3.4.0 spent it (on clean drones), so a seed draws 3.4.0's windows
            y = mix_at_snr(y, self._background(rng, bed=True), rng.uniform(*self.config.snr_db))
        else:
            y = self._background(rng)
        return self._heard(rng, y), float(drone)

    def _heard(self, rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
        """`y` through a random microphone tilt and at a random level; clipped to full scale."""
        c = self.config
        y = tilt(y, rng.uniform(*c.tilt_db_per_octave), self.sample_rate)
        level = rms_db(y)
        if level > -90.0:  # digital silence stays silence
            y = y * np.float32(10.0 ** ((rng.uniform(*c.level_dbfs) - level) / 20.0))
        return np.clip(y, -1.0, 1.0).astype(np.float32)
