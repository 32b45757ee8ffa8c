"""A unit's health as the fleet sees it: the heartbeat's measurements.

Most come from the daemon's counters; the rest are read from the system when a heartbeat is
due (load, SoC temperature where the Pi exposes it, free disk, clips folder use), and the
low-frequency level is measured from the audio itself, because wind is what makes an outdoor
unit deaf and a technician should see it before asking why.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nightear import __version__
from nightear.schema import SCHEMA_VERSION, HeartbeatMessage
from nightear.sinks.broker import utc_now
from nightear.sinks.metrics import Counters

if TYPE_CHECKING:
    from nightear.classifier import ModelInfo
    from nightear.config import Settings

LOW_FREQ_BAND_HZ = (20.0, 150.0)  # wind noise lives here; rotor hum of small drones above it
LOW_FREQ_SECONDS = 60  # the level is the mean power over the last minute
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")  # millidegrees C on a Pi


class LowFrequencyMeter:
    """Mean 20-150 Hz power of the last minute of mono audio, in dBFS (a full-scale sine is
    0 dBFS). One FFT per second of audio: nothing next to the classifier."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._pending = np.zeros(0, np.float32)
        self._seconds: deque[float] = deque(maxlen=LOW_FREQ_SECONDS)
        freqs = np.fft.rfftfreq(sample_rate, 1.0 / sample_rate)
        self._band = (freqs >= LOW_FREQ_BAND_HZ[0]) & (freqs <= LOW_FREQ_BAND_HZ[1])
        self._window = np.hanning(sample_rate).astype(np.float32)
        self._scale = 2.0 / float(np.sum(self._window**2) * sample_rate)  # Parseval with the window

    def push(self, samples: np.ndarray) -> None:
        """Mono float samples in [-1, 1] at `sample_rate`."""
        data = np.concatenate((self._pending, samples.astype(np.float32, copy=False)))
        whole = len(data) // self.sample_rate
        for k in range(whole):
            second = data[k * self.sample_rate : (k + 1) * self.sample_rate]
            spectrum = np.fft.rfft(second * self._window)
            self._seconds.append(float(np.sum(np.abs(spectrum[self._band]) ** 2)) * self._scale)
        self._pending = data[whole * self.sample_rate :]

    @property
    def dbfs(self) -> float | None:
        """The level, or None before the first second of audio."""
        if not self._seconds:
            return None
        power = sum(self._seconds) / len(self._seconds)
        return round(10.0 * math.log10(2.0 * power + 1e-20), 1)  # 2x: a sine's RMS^2 is 1/2


def load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def soc_temperature_c() -> float | None:
    """The SoC temperature where the kernel exposes it (a Raspberry Pi does), else None."""
    try:
        return round(int(THERMAL_ZONE.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def disk_free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system that holds `path` (the event store)."""
    try:
        return shutil.disk_usage(Path(path).parent).free
    except OSError:
        return None


def folder_bytes(folder: str | Path | None) -> int | None:
    """Bytes the files in `folder` take (the clips against their quota); None without one."""
    if not folder:
        return None
    try:
        return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return None


def heartbeat_message(settings: Settings, node: str, counters: Counters, info: ModelInfo,
                      meter: LowFrequencyMeter | None, pending: int) -> HeartbeatMessage:
    """The unit's health now, as the schema's heartbeat."""
    return HeartbeatMessage(
        schema=SCHEMA_VERSION, node=node, site=settings.mqtt.site, sent=utc_now(),
        interval_s=settings.mqtt.heartbeat_seconds,
        uptime_s=round(time.monotonic() - counters.started, 1), nightear_version=__version__,
        model=f"{info.name}-{info.version}", model_sha256=info.sha256,
        audio_seconds=round(counters.audio_seconds, 1), input_overflows=counters.input_overflows,
        dropped_frames=counters.dropped_frames, events=counters.events, pending_events=pending,
        load_1m=load_1m(), soc_temp_c=soc_temperature_c(),
        disk_free_bytes=disk_free_bytes(settings.store.path) if settings.store.path else None,
        clips_bytes=folder_bytes(settings.clips.folder),
        clips_quota_bytes=settings.clips.quota_bytes if settings.clips.folder else None,
        low_freq_dbfs=meter.dbfs if meter is not None else None, position=settings.position,
        heading_deg=settings.array.heading_deg if settings.array.enabled else None,
    )
