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

Coordinates are the array's own frame (`geometry.py`). A planar array cannot tell a
source above its plane from its mirror image below; sources are taken to be above (drones fly).
A linear array cannot tell a bearing from its mirror image across the line: the event says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nightear.errors import AudioError
from nightear.geometry import ArrayGeometry, ArraySettings, direction

FRAME_SECONDS = 0.064  # DOA/beam frame; its FFT size is the power of two nearest this at the rate
FIR_HALF_TAPS = 16  # half-length of the fractional-delay sinc
STEER_SECONDS = 0.5  # how often the beam is re-aimed
STEER_AVERAGE_SECONDS = 1.0  # the beam aims at the strongest direction of the last second
HISTORY_SECONDS = 8.0  # cross-spectra kept for bearings of windows already scored
LAG_STEP_S = 4e-6  # GCC lag resolution (1.4 mm of path); the SRP interpolates between lags
CHUNK_FRAMES = 8  # frames worked through at once: a block of any size uses the same buffers


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
    band spectra of every frame for bearings (see the module docstring).

    Float32 throughout, with every buffer made once: a block is copied into the frame buffer,
    its frames go through one FFT for all channels together, and a block of any size is worked
    through CHUNK_FRAMES frames at a time, so nothing grows with it; only the mono samples it
    returns are new. The pair cross-spectra are made and summed over frames only when a steer
    or a bearing asks for them (the band spectra of 4 mics are smaller than the 6 pairs').
    """

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
        self._band = (int(band[0]), int(band[-1]) + 1)
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
        self._all_channels = geometry.mic_channels == tuple(range(geometry.device_channels))
        self._steer_every = max(1, round(STEER_SECONDS * rate / self.hop))
        self._steer_frames = max(1, round(STEER_AVERAGE_SECONDS * rate / self.hop))
        self.frames_done = 0
        self.samples_in = self.samples_out = 0  # per channel, pushed in and given out
        self._kept_frames = int(HISTORY_SECONDS * rate / self.hop) + 1
        self._allocate(geometry.mics, len(self._pair_i), len(band))

    def _allocate(self, mics: int, pairs: int, band: int) -> None:
        """The stage's working memory, made once: samples, spectra, beams and band spectra."""
        bins = self.n_fft // 2 + 1
        self._samples = np.zeros((mics, (CHUNK_FRAMES - 1) * self.hop + self.n_fft), np.float32)
        self._held = self.taps - 1  # samples at the buffer's start not yet framed (zeros at first)
        step_mic, step = self._samples.strides
        self._framed = [np.lib.stride_tricks.as_strided(  # its first `count` frames, uncopied
            self._samples, (count, mics, self.n_fft), (self.hop * step, step_mic, step), writeable=False)
            for count in range(CHUNK_FRAMES + 1)]
        self._spectra = np.empty((CHUNK_FRAMES, mics, bins), np.complex64)
        self._weighted = np.empty((CHUNK_FRAMES, mics, bins), np.complex64)
        self._beams = np.empty((CHUNK_FRAMES, bins), np.complex64)
        self._beam_audio = np.empty((CHUNK_FRAMES, self.n_fft), np.float32)
        # each frame's band spectra (Hann-windowed in frequency) for at least the last
        # _kept_frames frames, with as many rows again to fill before the oldest are dropped
        # (one move per _kept_frames frames): frame f of the stream sits at row f - _band_first
        self._band_spectra = np.zeros((2 * self._kept_frames + CHUNK_FRAMES, mics, band), np.complex64)
        self._band_first = 0

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
        self._filter_cache[steering] = np.fft.rfft(fir, self.n_fft).astype(np.complex64)
        return self._filter_cache[steering]

    def push(self, block: np.ndarray) -> np.ndarray:
        """block: (n, device_channels) float32. Returns the mono samples it completes."""
        if block.ndim != 2 or block.shape[1] != self.geometry.device_channels:
            raise AudioError(f"array {self.geometry.name} needs {self.geometry.device_channels} "
                             f"channels, got {block.shape[1] if block.ndim == 2 else 1}")
        total = self._held + len(block)
        frames = (total - self.n_fft) // self.hop + 1 if total >= self.n_fft else 0
        out = np.empty(frames * self.hop, np.float32)
        room, taken, done = self._samples.shape[1], 0, 0
        while True:
            take = min(len(block) - taken, room - self._held)
            self._copy_in(block[taken : taken + take])
            taken += take
            count = (self._held - self.n_fft) // self.hop + 1 if self._held >= self.n_fft else 0
            if count:
                self._frames(count, out[done * self.hop : (done + count) * self.hop])
                done += count
            if taken == len(block):
                break
        self.samples_in += len(block)
        self.samples_out += len(out)
        return out

    def _copy_in(self, piece: np.ndarray) -> None:
        """Append (n, device_channels) samples to the frame buffer, mic channels only."""
        end = self._held + len(piece)
        if self._all_channels:
            self._samples[:, self._held : end] = piece.T
        else:
            for row, channel in enumerate(self.geometry.mic_channels):
                self._samples[row, self._held : end] = piece[:, channel]
        self._held = end

    def _frames(self, count: int, out: np.ndarray) -> None:
        """Beam and cross-spectra of the `count` whole frames at the buffer's start; the beam's
        count * hop new samples go to `out`."""
        # (frames, mics, bins); numpy's stubs know only complex128 for `out`, its FFT does float32
        spectra = np.fft.rfft(self._framed[count], axis=2, out=self._spectra[:count])  # type: ignore[arg-type]
        rest = self._held - count * self.hop
        self._samples[:, :rest] = self._samples[:, count * self.hop : self._held]
        self._held = rest
        first = self.frames_done - self._band_first  # this chunk's first row in _band_spectra
        if first + count > len(self._band_spectra):
            self._forget(first)
            first = self._kept_frames
        self._hann_band(spectra, self._band_spectra[first : first + count])
        start = 0
        for k in range(count):  # the aim as of each frame: re-aimed every _steer_every frames
            self.frames_done += 1
            if self.steering is not None and self.frames_done % self._steer_every == 0:
                self._beam(spectra[start : k + 1], self._beams[start : k + 1])
                start = k + 1
                self._steer()
        self._beam(spectra[start:count], self._beams[start:count])
        audio = np.fft.irfft(self._beams[:count], self.n_fft, axis=1,
                             out=self._beam_audio[:count])  # type: ignore[arg-type]
        out.reshape(count, self.hop)[:] = audio[:, self.taps - 1 :]

    def _beam(self, spectra: np.ndarray, beams: np.ndarray) -> None:
        """(frames, mics, bins) spectra -> (frames, bins) beam spectra with the current aim."""
        weighted = self._weighted[: len(spectra)]
        np.multiply(spectra, self._filters, out=weighted)
        np.add.reduce(weighted, axis=1, out=beams)

    def _hann_band(self, spectra: np.ndarray, band: np.ndarray) -> None:
        """The bearing band of (frames, mics, bins) spectra, Hann-windowed in frequency: -1/4,
        1/2, -1/4 of neighbouring bins tames the rectangular frames' leakage for the bearing
        (the beam takes the frames as they are)."""
        low, high = self._band
        np.add(spectra[:, :, low - 1 : high - 1], spectra[:, :, low + 1 : high + 1], out=band)
        band *= -0.5
        band += spectra[:, :, low:high]
        band *= 0.5

    def _cross(self, rows: slice) -> np.ndarray:
        """Every mic pair's cross-spectrum X_i X_j* summed over the frames in `rows` of
        _band_spectra, as (pairs, band)."""
        x = self._band_spectra[rows]  # (frames, mics, band)
        products = x[:, self._pair_i] * x[:, self._pair_j].conj()
        return np.add.reduce(products, axis=0)

    def _forget(self, used: int) -> None:
        """Keep only the newest _kept_frames of the `used` rows of band spectra, moved to the
        start: older frames are past what a bearing may ask for."""
        drop = used - self._kept_frames
        self._band_spectra[: self._kept_frames] = self._band_spectra[drop:used]
        self._band_first += drop

    def _steer(self) -> None:
        """Re-aim the beam at the strongest direction of the last STEER_AVERAGE_SECONDS; new
        filters only when that direction moves (they are cached per direction)."""
        end = self.frames_done - self._band_first
        steering = self.srp.steer(self._cross(slice(max(0, end - self._steer_frames), end)))
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
        oldest = max(self._band_first, self.frames_done - self._kept_frames)
        ends = (np.arange(oldest, self.frames_done) + 1) * self.hop / self.rate
        inside = np.flatnonzero((ends - self.n_fft / self.rate >= start_s - lag - 1e-9)
                                & (ends <= end_s - lag + 1e-9))
        if not len(inside):
            return None
        first = oldest - self._band_first
        rows = slice(first + int(inside[0]), first + int(inside[-1]) + 1)
        azimuth, elevation, coherence = self.srp.peak(self._cross(rows))
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
