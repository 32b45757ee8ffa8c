"""Microphone array geometry: where each microphone sits, the vendor presets, the config's
`array` section, and what a far source sounds like at each microphone (`plane_wave`).

Coordinates are metres in the array's own frame: x along its reference axis (bearing 0), y to
the right of it (bearing 90, clockwise seen from above), z up. The array stage (`array.py`)
turns this geometry into a beam and bearings; training simulates arrays with `plane_wave`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import numpy as np

SPEED_OF_SOUND = 343.0  # m/s in air at 20 C; set array.speed_of_sound for cold nights (331 + 0.6 T)
MAX_APERTURE_M = 1.0  # wider than this is a typo (centimetres for metres), not a small array

PresetName = Literal["respeaker-4mic", "respeaker-6mic", "uma-8"]


def _ring(n: int, radius: float) -> list[list[float]]:
    """n microphones evenly on a circle, the first at bearing 0, the rest clockwise."""
    angles = [2.0 * math.pi * i / n for i in range(n)]
    return [[radius * math.cos(a), radius * math.sin(a), 0.0] for a in angles]


@dataclass(frozen=True)
class ArrayGeometry:
    """Where each microphone sits and which device channel carries it."""

    name: str
    positions: np.ndarray  # (mics, 3) metres, array frame (x reference axis, y right, z up)
    mic_channels: tuple[int, ...]  # device channel of each microphone, in `positions` order
    device_channels: int  # channels the device delivers (some arrays add loopback channels)
    source: str = ""  # where the geometry comes from

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.mic_channels):
            raise ValueError(f"array {self.name}: {len(self.positions)} positions but "
                             f"{len(self.mic_channels)} channels")
        if max(self.mic_channels) >= self.device_channels:
            raise ValueError(f"array {self.name}: mic channel {max(self.mic_channels)} is beyond the "
                             f"device's {self.device_channels} channels")

    @property
    def mics(self) -> int:
        return len(self.positions)

    @property
    def dimensions(self) -> int:
        """1 for a line, 2 for a plane, 3 for a volume (to within a millimetre)."""
        centred = self.positions - self.positions.mean(axis=0)
        return int(np.sum(np.linalg.svd(centred, compute_uv=False) > 1e-3))

    @property
    def aperture_m(self) -> float:
        """The largest distance between two microphones."""
        diff = self.positions[:, None, :] - self.positions[None, :, :]
        return float(np.sqrt((diff**2).sum(-1)).max())

    def line_axis_deg(self) -> float:
        """Bearing of a linear array's line (its principal direction in the horizontal plane)."""
        centred = self.positions - self.positions.mean(axis=0)
        axis = np.linalg.svd(centred)[2][0]
        return math.degrees(math.atan2(axis[1], axis[0])) % 180.0


# Vendor geometries. Bearing 0 points from the board's centre to the microphone on channel 0
# (the centre microphone of the UMA-8 aside), and channels run clockwise seen from above, the
# side the microphones face. Check the direction on a new unit once (a sound from a known
# bearing); custom `mics` coordinates take any other layout.
PRESETS: dict[str, ArrayGeometry] = {
    # ReSpeaker 4-Mic Array for Raspberry Pi (Seeed, AC108 codec, 4 channels): four mics on the
    # corners of a square, opposite mics 81.27 mm apart (Seeed's DOA code for the board,
    # respeaker/mic_array, MIC_DISTANCE_4 = 0.08127, pairs (0, 2) and (1, 3)).
    "respeaker-4mic": ArrayGeometry(
        "respeaker-4mic", np.array(_ring(4, 0.08127 / 2)), (0, 1, 2, 3), 4,
        "Seeed ReSpeaker 4-Mic Array for Raspberry Pi: square, 81.27 mm diagonal"),
    # ReSpeaker 6-Mic Circular Array kit for Raspberry Pi (Seeed, 8 channels: 6 mics, then 2
    # playback loopback channels): six mics on a circle, opposite mics 92.18 mm apart (Seeed's
    # DOA code, MIC_DISTANCE_6 = 0.09218, pairs (0, 3), (1, 4), (2, 5)).
    "respeaker-6mic": ArrayGeometry(
        "respeaker-6mic", np.array(_ring(6, 0.09218 / 2)), (0, 1, 2, 3, 4, 5), 8,
        "Seeed ReSpeaker 6-Mic Circular Array for Raspberry Pi: circle, 92.18 mm diameter"),
    # miniDSP UMA-8 USB mic array with its raw multichannel firmware (8 channels): mic 1 in the
    # centre on channel 0, mics 2-7 evenly on a ring of 42.5 mm radius on channels 1-6 (the
    # 7-mic circular layout of the board's user manual); channel 7 carries no microphone.
    "uma-8": ArrayGeometry(
        "uma-8", np.array([[0.0, 0.0, 0.0], *_ring(6, 0.0425)]), (0, 1, 2, 3, 4, 5, 6), 8,
        "miniDSP UMA-8: centre mic plus six on a 42.5 mm radius ring"),
}


class ArraySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The microphone array, if any: a preset or custom coordinates, and what to do with it."""

    preset: PresetName | None = None  # respeaker-4mic | respeaker-6mic | uma-8; None: see mics
    # custom geometry instead of a preset: [x, y] or [x, y, z] metres per mic (x along the
    # reference axis, y to its right, z up), in the order of `channels`
    mics: list[Annotated[list[float], msgspec.Meta(min_length=2, max_length=3)]] | None = None
    channels: list[Annotated[int, msgspec.Meta(ge=0, le=63)]] | None = None  # device channel per mic
    heading_deg: Annotated[float, msgspec.Meta(ge=0.0, lt=360.0)] = 0.0  # compass bearing of axis
    beamform: bool = True  # steer a delay-and-sum beam; False: plain mix of the mic channels
    band_low_hz: Annotated[float, msgspec.Meta(ge=20.0)] = 200.0  # bearing band: rotor harmonics
    band_high_hz: Annotated[float, msgspec.Meta(le=24000.0)] = 4000.0
    speed_of_sound: Annotated[float, msgspec.Meta(ge=300.0, le=370.0)] = SPEED_OF_SOUND

    def __post_init__(self) -> None:
        if self.preset is not None and self.mics is not None:
            raise ValueError("give either array.preset or array.mics, not both")
        if self.mics is not None and len(self.mics) < 2:
            raise ValueError("array.mics needs at least two microphones")
        if self.mics is not None:
            if not all(math.isfinite(v) for mic in self.mics for v in mic):
                raise ValueError("array.mics holds a value that is not a number")
            points = self._positions()
            apart = [math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1 :]]
            if max(apart) > MAX_APERTURE_M:
                raise ValueError(f"array.mics are {max(apart):.2f} m apart at the most; give metres "
                                 f"(a small array spans under {MAX_APERTURE_M:.0f} m)")
            if min(apart) < 1e-3:
                raise ValueError("array.mics: two microphones at the same place")
        if self.channels is not None and (self.mics is None or len(self.channels) != len(self.mics)):
            raise ValueError("array.channels needs array.mics, one channel per microphone")
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError("array.channels: a channel is listed twice")
        if self.band_low_hz >= self.band_high_hz:
            raise ValueError(f"array.band_low_hz {self.band_low_hz} must be below band_high_hz "
                             f"{self.band_high_hz}")

    @property
    def enabled(self) -> bool:
        return self.preset is not None or self.mics is not None

    def geometry(self, device_channels: int | None = None) -> ArrayGeometry:
        """The geometry these settings describe (custom arrays take the device's channel count)."""
        if self.preset is not None:
            return PRESETS[self.preset]
        if self.mics is None:
            raise ValueError("no array configured")
        channels = tuple(self.channels) if self.channels is not None else tuple(range(len(self.mics)))
        return ArrayGeometry("custom", np.array(self._positions()), channels,
                             max(device_channels or 0, max(channels) + 1), "array.mics in the config")

    def _positions(self) -> list[list[float]]:
        """The custom mics as [x, y, z] (z 0 where only [x, y] is given)."""
        return [list(m) + [0.0] * (3 - len(m)) for m in self.mics or []]


def direction(azimuth_deg: np.ndarray | float, elevation_deg: np.ndarray | float) -> np.ndarray:
    """Unit vectors (..., 3) toward bearing `azimuth_deg` (clockwise), `elevation_deg` up."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                        np.sin(el)), axis=-1)


def plane_wave(signal: np.ndarray, rate: int, geometry: ArrayGeometry, azimuth_deg: float,
               elevation_deg: float = 0.0, speed_of_sound: float = SPEED_OF_SOUND) -> np.ndarray:
    """What the array's channels record of a far source `signal` from a direction.

    Exact fractional delays in the frequency domain (the clip is zero-padded so nothing wraps);
    channels without a microphone stay silent. Returns (n, device_channels) float32.
    """
    n = len(signal)
    reach = float(np.sqrt((geometry.positions**2).sum(axis=1)).max())  # from the origin, any side
    pad = int(np.ceil(reach / speed_of_sound * rate)) + 8
    size = 1 << int(np.ceil(np.log2(n + 2 * pad)))
    spectrum = np.fft.rfft(np.asarray(signal, np.float64), size)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    lead = geometry.positions @ direction(azimuth_deg, elevation_deg) / speed_of_sound  # s early
    out = np.zeros((n, geometry.device_channels), dtype=np.float32)
    for channel, t in zip(geometry.mic_channels, lead, strict=True):
        shifted = np.fft.irfft(spectrum * np.exp(2j * np.pi * freqs * t), size)
        out[:, channel] = shifted[:n]
    return out
