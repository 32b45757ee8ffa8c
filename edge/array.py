"""The array stage: where a sound comes from (SRP-PHAT) and a beam toward it (delay-and-sum).

Multichannel audio at the device's rate goes in, one mono stream at the same rate comes out
for the front-end. Each channel is cut into frames once (overlap-save, rectangular; the FFT
size is the power of two nearest 64 ms at the rate) and every frame's spectrum serves two ends:

- **Beam**: each microphone is delayed by a fractional-delay FIR (a windowed sinc, applied in
  the frequency domain) so that a plane wave from the steering direction adds in phase; sound
  from elsewhere and microphone self-noise do not, which is the array gain the classifier sees.
- **Bearing**: the cross-spectrum of every microphone pair, restricted to the drone band and
  PHAT-weighted (only phase counts, so loud low hum and faint harmonics vote alike), becomes a
  generalized cross-correlation over time lags (GCC-PHAT); summing each pair's correlation at
  the lag a direction predicts gives the steered response power (SRP-PHAT) over a grid of
  azimuths and elevations. Its peak is the bearing.

The beam follows the peak of a coarse SRP over the last second, re-aimed twice a second; the
fine SRP runs per scored window only while an event may be open (`ArrayStage.bearing`).

Coordinates are metres in the array's own frame: x along its reference axis (bearing 0), y to
the right of it (bearing 90, clockwise seen from above), z up. A planar array cannot tell a
source above its plane from its mirror image below; sources are taken to be above (drones fly).
A linear array cannot tell a bearing from its mirror image across the line: the event says so.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import numpy as np

from nightear.errors import AudioError

SPEED_OF_SOUND = 343.0  # m/s in air at 20 C; set array.speed_of_sound for cold nights (331 + 0.6 T)
FRAME_SECONDS = 0.064  # DOA/beam frame; its FFT size is the power of two nearest this at the rate
FIR_HALF_TAPS = 16  # half-length of the fractional-delay sinc
STEER_SECONDS = 0.5  # how often the beam is re-aimed
STEER_AVERAGE_SECONDS = 1.0  # the beam aims at the strongest direction of the last second
HISTORY_SECONDS = 8.0  # cross-spectra kept for bearings of windows already scored
MAX_APERTURE_M = 1.0  # wider than this is a typo (centimetres for metres), not a small array
LAG_STEP_S = 4e-6  # GCC lag resolution (1.4 mm of path); the SRP interpolates between lags

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


@dataclass(frozen=True)
class Bearing:
    """Where a window's sound came from, as the operator reads it."""

    bearing_deg: float  # clockwise from north when heading_deg is set, else from the axis
    elevation_deg: float | None  # above the horizon; None for a linear array
    coherence: float  # the SRP peak as mean GCC-PHAT over pairs: 1 one clean source, ~0 none
    mirror_deg: float | None = None  # a linear array's equally likely mirror bearing


class Srp:
    """SRP-PHAT from band-limited pair cross-spectra: a coarse grid, then a fine local search.

    Only lags within the array's aperture matter, and over them the PHAT cross-spectrum
    changes little from one bin to the next, so groups of neighbouring bins are summed before
    the lag transform (phase error under 0.25 rad at the largest lag): the same correlation
    for a fraction of the arithmetic.
    """

    COARSE_STEP_DEG = 5.0
    FINE_STEP_DEG = 1.0

    def __init__(self, geometry: ArrayGeometry, freqs: np.ndarray, speed_of_sound: float):
        pairs = [(i, j) for i in range(geometry.mics) for j in range(i + 1, geometry.mics)]
        self._baselines = np.array([geometry.positions[i] - geometry.positions[j] for i, j in pairs])
        self._c = speed_of_sound
        max_lag = float(np.sqrt((self._baselines**2).sum(-1)).max()) / speed_of_sound
        self._half = int(np.ceil(max_lag / LAG_STEP_S)) + 1
        spacing = float(freqs[1] - freqs[0])
        self.group = max(1, int(0.25 / (2 * np.pi * spacing * max_lag)))
        groups = len(freqs) // self.group
        self.n_freqs = groups * self.group
        centres = freqs[: self.n_freqs].reshape(groups, self.group).mean(axis=1)
        lags = np.arange(-self._half, self._half + 1) * LAG_STEP_S
        phase = 2 * np.pi * centres[:, None] * lags[None, :]
        # R(lag) = sum_f Re(G(f) e^{j 2 pi f lag}) = Re(G) cos - Im(G) sin, as one matmul
        self._basis = np.concatenate((np.cos(phase), -np.sin(phase))).astype(np.float32)
        self.pairs = pairs
        self.elevations = np.arange(0.0, 90.0, 10.0) if geometry.dimensions >= 2 else np.array([0.0])
        coarse_el = np.array([0.0, 30.0, 60.0]) if geometry.dimensions >= 2 else np.array([0.0])
        self.coarse_azimuths = np.arange(0.0, 360.0, self.COARSE_STEP_DEG)
        self._coarse_el = coarse_el
        self._coarse = self._lookup(self.coarse_azimuths[None, :], coarse_el[:, None])
        self._fine: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # per coarse peak

    def _lookup(self, azimuths: np.ndarray, elevations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each direction's lag falls in the flattened (pairs, lags) correlation."""
        grid = direction(azimuths, elevations).reshape(-1, 3)
        # mic i hears a plane wave from u earlier than mic j by (p_i - p_j).u / c, so the
        # cross-correlation of X_i X_j* peaks at minus that lag
        lag = -(grid @ self._baselines.T).T / self._c / LAG_STEP_S + self._half  # (pairs, grid)
        low = np.clip(np.floor(lag).astype(np.intp), 0, 2 * self._half - 1)
        index = low + (np.arange(len(self.pairs)) * (2 * self._half + 1))[:, None]
        return index, (lag - low).astype(np.float32)

    def _gcc(self, cross: np.ndarray) -> np.ndarray:
        """(pairs, freqs) cross-spectra -> flattened (pairs, lags) GCC-PHAT."""
        phat = cross[:, : self.n_freqs] / np.maximum(np.abs(cross[:, : self.n_freqs]), 1e-20)
        grouped = phat.reshape(len(self.pairs), -1, self.group).sum(axis=2)
        return (np.concatenate((grouped.real, grouped.imag), axis=1).astype(np.float32)
                @ self._basis).ravel()

    def _power(self, gcc: np.ndarray, lookup: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        index, frac = lookup
        value = gcc[index] * (1 - frac) + gcc[index + 1] * frac
        return value.sum(axis=0) / (len(self.pairs) * self.n_freqs)

    def steer(self, cross: np.ndarray) -> tuple[float, float]:
        """The coarse grid direction (azimuth, elevation) with the most power."""
        power = self._power(self._gcc(cross), self._coarse)
        e, a = divmod(int(np.argmax(power)), len(self.coarse_azimuths))
        return float(self.coarse_azimuths[a]), float(self._coarse_el[e])

    def peak(self, cross: np.ndarray) -> tuple[float, float, float]:
        """(azimuth_deg, elevation_deg, coherence) of the strongest direction: the coarse grid's
        best, searched again at 1 degree and every 10 degrees of elevation around it, both
        refined between grid points by a parabola through the peak and its neighbours."""
        gcc = self._gcc(cross)
        best = int(np.argmax(self._power(gcc, self._coarse))) % len(self.coarse_azimuths)
        if best not in self._fine:
            span = self.COARSE_STEP_DEG + 2 * self.FINE_STEP_DEG
            around = self.coarse_azimuths[best] + np.arange(-span, span + 1e-9, self.FINE_STEP_DEG)
            self._fine[best] = (around, *self._lookup(around[None, :], self.elevations[:, None]))
        azimuths, *lookup = self._fine[best]
        power = self._power(gcc, (lookup[0], lookup[1]))
        power = power.reshape(len(self.elevations), len(azimuths))
        e, a = divmod(int(np.argmax(power)), len(azimuths))
        az = float(azimuths[a]) + self.FINE_STEP_DEG * _vertex(power[e], a)
        el = float(self.elevations[e])
        if len(self.elevations) > 1:
            el += float(self.elevations[1] - self.elevations[0]) * _vertex(power[:, a], e)
        return az % 360.0, max(0.0, el), float(power[e, a])


def _vertex(values: np.ndarray, i: int) -> float:
    """Where between grid points a parabola through values[i-1:i+2] peaks (-0.5..0.5)."""
    if not 0 < i < len(values) - 1:
        return 0.0
    left, mid, right = values[i - 1], values[i], values[i + 1]
    curve = left - 2 * mid + right
    return float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5)) if curve < 0 else 0.0


class ArrayStage:
    """Multichannel blocks at the device's rate in, one beamformed mono stream out, plus the
    pair cross-spectra of every frame for bearings (see the module docstring)."""

    def __init__(self, geometry: ArrayGeometry, settings: ArraySettings, rate: int):
        self.geometry, self.settings, self.rate = geometry, settings, rate
        self.c = settings.speed_of_sound
        self.n_fft = 1 << round(math.log2(FRAME_SECONDS * rate))
        # the beam's delays are taken about the array's centroid, wherever the coordinates put
        # their origin; the farthest mic from it sets how far they reach either way
        self._centred = geometry.positions - geometry.positions.mean(axis=0)
        reach = float(np.sqrt((self._centred**2).sum(axis=1)).max()) / self.c * rate  # samples
        self.taps = 2 * FIR_HALF_TAPS + int(np.ceil(2 * reach)) + 1
        self.hop = self.n_fft - (self.taps - 1)
        # every beam delays by this much, so that each mic's own delay is positive
        self.latency_samples = FIR_HALF_TAPS + reach
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / rate)
        high = min(settings.band_high_hz, 0.45 * rate)
        band = np.flatnonzero((freqs >= settings.band_low_hz) & (freqs <= high))
        too_narrow = (f"array.band_low_hz..band_high_hz ({settings.band_low_hz:.0f}-"
                      f"{settings.band_high_hz:.0f} Hz) is too narrow for bearings at {rate} Hz "
                      f"(usable up to {high:.0f} Hz); widen it")
        if len(band) < 4:
            raise AudioError(too_narrow)
        self._edged = slice(int(band[0]) - 1, int(band[-1]) + 2)  # the band and a bin either side
        self._pair_i, self._pair_j = np.triu_indices(geometry.mics, 1)
        self.srp = Srp(geometry, freqs[band], self.c)
        if self.srp.n_freqs < 4 * self.srp.group:
            raise AudioError(too_narrow)
        self._linear = geometry.dimensions == 1
        self._line_deg = geometry.line_axis_deg() if self._linear else 0.0
        # where the beam points (array frame); None: no beam, every mic weighs the same
        self.steering: tuple[float, float] | None = (0.0, 0.0) if settings.beamform else None
        self._filter_cache: dict[tuple[float, float] | None, np.ndarray] = {}
        self._filters = self._beam_filters(self.steering)
        self._pending = np.zeros((geometry.mics, self.taps - 1))
        self._all_channels = geometry.mic_channels == tuple(range(geometry.device_channels))
        self._steer_every = max(1, round(STEER_SECONDS * rate / self.hop))
        self._steer_frames = max(1, round(STEER_AVERAGE_SECONDS * rate / self.hop))
        self.frames_done = 0
        self.samples_in = self.samples_out = 0  # per channel, pushed in and given out
        self._history: deque[tuple[float, float, np.ndarray]] = deque(
            maxlen=int(HISTORY_SECONDS * rate / self.hop) + 1)

    def _beam_filters(self, steering: tuple[float, float] | None) -> np.ndarray:
        """Each mic's windowed-sinc delay toward a direction, as (mics, n_fft/2+1) spectra;
        without a direction only the common delay, i.e. the plain mean of the mics. Cached: the
        beam only ever points at the coarse grid's directions."""
        cached = self._filter_cache.get(steering)
        if cached is not None:
            return cached
        lead = np.zeros(self.geometry.mics)
        if steering is not None:
            lead = self._centred @ direction(*steering) / self.c * self.rate
        delay = self.latency_samples + lead  # the earliest mic waits longest
        k = np.arange(self.taps)[None, :] - delay[:, None]
        window = np.where(np.abs(k) < FIR_HALF_TAPS, 0.5 + 0.5 * np.cos(np.pi * k / FIR_HALF_TAPS), 0.0)
        fir = np.sinc(k) * window / self.geometry.mics
        self._filter_cache[steering] = np.fft.rfft(fir, self.n_fft)
        return self._filter_cache[steering]

    def push(self, block: np.ndarray) -> np.ndarray:
        """block: (n, device_channels) float32. Returns the mono samples it completes."""
        if block.ndim != 2 or block.shape[1] != self.geometry.device_channels:
            raise AudioError(f"array {self.geometry.name} needs {self.geometry.device_channels} "
                             f"channels, got {block.shape[1] if block.ndim == 2 else 1}")
        self.samples_in += len(block)
        mics = block if self._all_channels else block[:, self.geometry.mic_channels]
        samples = np.concatenate((self._pending, mics.T), axis=1)  # float64: the FFT's own type
        count = (samples.shape[1] - self.n_fft) // self.hop + 1 if samples.shape[1] >= self.n_fft else 0
        if count == 0:
            self._pending = samples
            return np.zeros(0, dtype=np.float32)
        step_mic, step = samples.strides
        frames = np.lib.stride_tricks.as_strided(samples, (self.geometry.mics, count, self.n_fft),
                                                 (step_mic, self.hop * step, step), writeable=False)
        spectra = np.fft.rfft(frames, axis=2)  # (mics, frames, bins)
        self._pending = samples[:, count * self.hop :]
        # a Hann window applied in frequency (-1/4, 1/2, -1/4 of neighbouring bins) tames the
        # rectangular frames' leakage for the bearing; the beam takes the frames as they are
        edged = spectra[:, :, self._edged].view(np.float64)  # (mics, frames, 2 * bins): re, im
        x = (0.5 * edged[:, :, 2:-2] - 0.25 * (edged[:, :, :-4] + edged[:, :, 4:])).astype(np.float32)
        x = x.view(np.complex64)
        cross = x[self._pair_i] * np.conj(x[self._pair_j])  # (pairs, frames, band)
        beams = np.empty((count, spectra.shape[2]), dtype=np.complex128)
        for k in range(count):
            beams[k] = (spectra[:, k] * self._filters).sum(axis=0)  # the aim as of this frame
            self._frame_done(cross[:, k])
        out = np.fft.irfft(beams, self.n_fft, axis=1)[:, self.taps - 1 :].ravel().astype(np.float32)
        self.samples_out += len(out)
        return out

    def _frame_done(self, cross: np.ndarray) -> None:
        """Keep the frame's pair cross-spectra; re-aim the beam every STEER_SECONDS."""
        end_s = (self.frames_done + 1) * self.hop / self.rate
        self._history.append((end_s - self.n_fft / self.rate, end_s, cross))
        self.frames_done += 1
        if self.steering is not None and self.frames_done % self._steer_every == 0:
            recent = [c for _, _, c in list(self._history)[-self._steer_frames :]]
            steering = self.srp.steer(np.sum(recent, axis=0))
            if steering != self.steering:
                self.steering = steering
                self._filters = self._beam_filters(steering)

    def finish(self) -> np.ndarray:
        """End of stream: the mono samples still held back, as many as were pushed in."""
        owed = self.samples_in - self.samples_out
        tail = self.push(np.zeros((self.n_fft, self.geometry.device_channels), np.float32))
        return tail[:owed]

    def bearing(self, start_s: float, end_s: float) -> Bearing | None:
        """The bearing of the sound between two stream times (seconds of the mono output),
        from the frames that lie in that span; None when none do, yet or any more (frames are
        kept for HISTORY_SECONDS)."""
        lag = self.latency_samples / self.rate
        spans = [b for s, e, b in self._history if s >= start_s - lag - 1e-9 and e <= end_s - lag + 1e-9]
        if not spans:
            return None
        azimuth, elevation, coherence = self.srp.peak(np.sum(spans, axis=0))
        heading = self.settings.heading_deg
        mirror = None
        if self._linear:
            mirror = round((2 * self._line_deg - azimuth + heading) % 360.0, 1)
        return Bearing(round((azimuth + heading) % 360.0, 1),
                       None if self._linear else round(elevation, 1),
                       round(coherence, 3), mirror)


class ChannelMix:
    """The stage without an array: the mean of the channels (one matrix-vector product), as a
    single microphone or a stereo file has always been heard."""

    def __init__(self, channels: int):
        self._weights = np.full(channels, 1.0 / channels, dtype=np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        return block @ self._weights

    def finish(self) -> np.ndarray:
        return np.zeros(0, np.float32)  # holds nothing back
