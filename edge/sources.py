"""Audio sources: files and capture devices, as blocks of float32 samples.

`raw_blocks` gives what the device recorded, (n, channels) at its own rate, for the pipeline's
array stage; `WavSource.blocks` mixes down and resamples with soxr to the front-end's mono
format in one step, for training and tools that want a clip's samples.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import soundfile as sf
import soxr

from nightear.errors import AudioError

BLOCK_SECONDS = 1.0  # how much audio a file source reads at a time
MIN_FILE_RATE_HZ = 8000  # below it a recording holds nothing of the drone band's upper half
MAX_FILE_RATE_HZ = 1_000_000  # above it a header's rate is no real recording's
PLACEHOLDER_DATA_SIZES = (0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000)  # a streaming writer's "length unknown"
_SHORT_DATA = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


class WavSource:
    """A WAV/FLAC/OGG file (anything libsndfile reads), as 16 kHz (or `sample_rate`) mono blocks.

    Opening checks the file and its header so a missing, unreadable, corrupt or empty one fails
    before any block is read; a file that ends before its header says (a WAV cut short, a FLAC
    that breaks off, a non-finite sample) yields every good block first, then raises AudioError,
    so what it holds is still scored.
    """

    def __init__(self, path: str | Path, sample_rate: int):
        self.path = Path(path)
        self.sample_rate = sample_rate
        _check_readable(self.path)
        try:
            info = sf.info(os.fsencode(self.path))  # bytes: a name need not be valid UTF-8
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(f"{self.path}: not a readable audio file ({_open_fault(self.path, exc)})"
                             ) from None
        if info.frames <= 0:
            raise AudioError(f"{self.path}: holds no audio (0 frames)")
        if info.samplerate < MIN_FILE_RATE_HZ:
            raise AudioError(f"{self.path}: its sample rate, {info.samplerate} Hz, is too low to score: "
                             f"the model needs at least {MIN_FILE_RATE_HZ} Hz (drone harmonics to 4 kHz)")
        self.input_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.frames = int(info.frames)
        self.cut: str | None = None  # why the file ends before its header says: raised once read
        self.note: str | None = None  # something a user should know that is no error
        short = _SHORT_DATA.search(info.extra_info)
        if short and int(short.group(2)) < int(short.group(1)):
            promised, held = int(short.group(1)), int(short.group(2))
            if promised in PLACEHOLDER_DATA_SIZES:  # a streaming writer never came back to it
                self.note = (f"{self.path}: its header gives no length ({promised:#x}, as a streaming "
                             f"recorder leaves it): read to its end, {self.duration_s:.3f} s")
            else:
                self.cut = (f"{self.path}: truncated: header promises {promised} bytes of audio, "
                            f"file holds {held}; scored up to {self.duration_s:.3f} s")

    @property
    def duration_s(self) -> float:
        return self.frames / self.input_rate

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """Yield (n,) float32 mono blocks at `sample_rate`; raises AudioError on a bad read."""
        resampler = None
        if self.input_rate != self.sample_rate:
            resampler = soxr.ResampleStream(
                self.input_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
            )
        frames_read = 0
        for data in self.raw_blocks(block_seconds):
            frames_read += len(data)
            mono = data.mean(axis=1, dtype=np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=frames_read >= self.frames)
            yield mono

    def raw_blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """Yield (n, channels) float32 blocks at the file's own rate; AudioError on a bad read."""
        block_frames = max(1, int(block_seconds * self.input_rate))
        frames_read = 0
        try:
            with sf.SoundFile(os.fsencode(self.path)) as handle:
                while frames_read < self.frames:
                    data = handle.read(block_frames, dtype="float32", always_2d=True)
                    if len(data) == 0:
                        break
                    bad = ~np.isfinite(data).all(axis=1)
                    if bad.any():  # NaN or inf would score as a constant, silently
                        good = int(np.argmax(bad))
                        if good:
                            yield data[:good]
                        raise AudioError(f"{self.path}: non-finite sample (NaN or inf) at "
                                         f"{(frames_read + good) / self.input_rate:.3f} s")
                    frames_read += len(data)
                    yield data
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(f"{self.path}: unreadable at {frames_read / self.input_rate:.1f} s "
                             f"({_reason(exc)})") from None
        if self.cut is not None:
            raise AudioError(self.cut)
        if frames_read < self.frames:
            raise AudioError(
                f"{self.path}: truncated: header promises {self.frames} frames, "
                f"file holds {frames_read}"
            )

    def read_all(self) -> np.ndarray:
        """The whole file as one (n,) float32 mono array at `sample_rate`."""
        parts = list(self.blocks())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _reason(exc: Exception) -> str:
    """libsndfile's message without the file name it repeats (as text or as b'bytes')."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^Error opening b?(['\"]).*?\1: ", "", text)


def _check_readable(path: Path) -> None:
    """A regular file this user may read, or AudioError saying why in words: no such file, a name
    too long, permission denied, a folder, or a FIFO or device (which would block or never end)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise AudioError(f"{path}: is a folder, not an audio file")
        if not stat.S_ISREG(mode):
            raise AudioError(f"{path}: is not a regular file (a FIFO, device or socket): "
                             "give a recording saved to disk")
        with open(path, "rb"):
            pass
    except OSError as exc:
        why = "no such file" if exc.errno == errno.ENOENT else (exc.strerror or str(exc)).lower()
        raise AudioError(f"{path}: {why}") from None


def _open_fault(path: Path, exc: Exception) -> str:
    """Why libsndfile refused a file, in words: its header's sample rate or channel count where a
    WAV header is what is wrong, else libsndfile's reason."""
    reason = _reason(exc)
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE" and (at := head.find(b"fmt ")) >= 0:
        order = "<" if head[:4] == b"RIFF" else ">"
        channels, rate = struct.unpack_from(f"{order}HI", head, at + 10) if len(head) >= at + 16 else (0, 0)
        if not 0 < rate <= MAX_FILE_RATE_HZ:
            return f"its header gives a sample rate of {rate} Hz"
        if channels == 0:
            return "its header gives 0 channels"
    if "SF_INFO struct incomplete" in reason:
        return "its header gives no valid sample rate or channel count"
    return reason


class AudioSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The capture device, as the daemon opens it."""

    device: str | int | None = None  # name (or part of it) or index; None: the system default
    # channels to open; None: as many as array.preset delivers, else 1
    channels: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None
    sample_rate: Annotated[int, msgspec.Meta(ge=8000, le=192000)] = 16000  # the device's rate
    block_seconds: Annotated[float, msgspec.Meta(ge=0.01, le=1.0)] = 0.1  # PortAudio callback size
    buffer_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=600.0)] = 10.0  # ring buffer length
    stall_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=600.0)] = 5.0  # silence = a lost device


def int16_to_float(raw: np.ndarray) -> np.ndarray:
    """(frames, channels) int16 as the device delivers it -> float32 in [-1, 1]."""
    return raw.astype(np.float32) * np.float32(1.0 / 32768.0)


def _portaudio() -> Any:
    """sounddevice, imported only where a microphone is used (it needs libportaudio2)."""
    try:
        import sounddevice
    except OSError as exc:
        raise AudioError(f"PortAudio is missing ({exc}); install it: apt-get install libportaudio2"
                         ) from None
    return sounddevice


def list_devices() -> list[dict[str, object]]:
    """Capture devices PortAudio sees: index, name, input channels, default rate."""
    sd = _portaudio()
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_sample_rate": d["default_samplerate"]}
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def rescan_devices() -> None:
    """PortAudio lists the devices once, when it starts: start it again (no stream may be open)
    so that a microphone plugged back in is found under its name."""
    sd = _portaudio()
    sd._terminate()
    sd._initialize()


class RingBuffer:
    """Preallocated single-producer single-consumer ring of (frames, channels) int16.

    The audio callback writes, the pipeline thread reads; neither waits for the other. When
    the reader falls behind by the whole ring, new audio is dropped and counted, never queued.
    """

    def __init__(self, frames: int, channels: int):
        self._data = np.zeros((frames, channels), dtype=np.int16)
        self._written = 0  # total frames ever written; only the writer changes it
        self._read = 0  # total frames ever read; only the reader changes it
        self.dropped_frames = 0
        self.ready = threading.Event()
        # (first frame, monotonic capture time) of each block written and not yet read past
        self._captured: deque[tuple[int, float]] = deque(maxlen=4096)

    def write(self, block: np.ndarray, captured: float | None = None) -> None:
        """Copy a block in; `captured` is the monotonic time its first frame was recorded."""
        n, size = len(block), len(self._data)
        if n > size - (self._written - self._read):
            self.dropped_frames += n
            return
        start = self._written % size
        first = min(n, size - start)
        self._data[start : start + first] = block[:first]
        self._data[: n - first] = block[first:]
        if captured is not None:
            self._captured.append((self._written, captured))
        self._written += n
        self.ready.set()

    def read(self) -> tuple[np.ndarray, int]:
        """Everything written since the last read, as a copy, and the index of its first frame."""
        self.ready.clear()
        written, size, first_index = self._written, len(self._data), self._read
        n, start = written - self._read, self._read % size
        first = min(n, size - start)
        out = np.concatenate((self._data[start : start + first], self._data[: n - first]))
        self._read = written
        return out, first_index

    def captured_at(self, index: int, sample_rate: int) -> float | None:
        """When frame `index` (read already) was recorded, on the monotonic clock."""
        anchors = self._captured
        while len(anchors) > 1 and anchors[1][0] <= index:
            anchors.popleft()
        if not anchors or anchors[0][0] > index:
            return None
        first, captured = anchors[0]
        return captured + (index - first) / sample_rate


class CaptureTimeline:
    """Seconds into a stream -> the monotonic time they were captured, and from that UTC.

    A stream's sample count is no clock: a device that delivers faster or slower than real time,
    pauses, or loses frames to a full ring puts "start + samples" minutes off. Each block is
    anchored to its capture time; only anchors that differ from the previous one's prediction by
    more than `TOLERANCE_S` are kept, so a steady device costs one anchor.
    """

    TOLERANCE_S = 0.02

    def __init__(self) -> None:
        self._anchors: deque[tuple[float, float]] = deque(maxlen=100_000)  # (stream s, monotonic)

    def add(self, stream_s: float, captured: float) -> None:
        if self._anchors:
            last_s, last_t = self._anchors[-1]
            if abs(last_t + (stream_s - last_s) - captured) <= self.TOLERANCE_S:
                return
        self._anchors.append((stream_s, captured))

    def monotonic(self, stream_s: float) -> float:
        if not self._anchors:
            return time.monotonic()
        later = None  # the first anchor after stream_s: a block delivered faster than real time
        for anchor_s, anchor_t in reversed(self._anchors):  # recent times are asked for most
            if anchor_s <= stream_s:
                break
            later = anchor_t
        t = anchor_t + (stream_s - anchor_s)
        return t if later is None else min(t, later)  # never after audio captured later

    def utc(self, stream_s: float) -> datetime:
        """The wall-clock time of `stream_s`, through the clock as it reads now (after NTP)."""
        return datetime.now(UTC) - timedelta(seconds=time.monotonic() - self.monotonic(stream_s))


class MicSource:
    """A capture device as (n, channels) float32 blocks at the device's rate.

    PortAudio's callback only copies into the ring buffer; the array stage, resampling and
    everything after run on the caller's thread. Input overflows (PortAudio could not keep up)
    and dropped frames (the pipeline could not) are counted, never fatal.
    """

    def __init__(self, settings: AudioSettings, channels: int):
        self.settings, self.channels = settings, channels
        self.sample_rate = settings.sample_rate
        self.sd = _portaudio()
        try:
            self.device_info = self.sd.query_devices(settings.device, "input")
        except (ValueError, self.sd.PortAudioError) as exc:
            name = "default" if settings.device is None else repr(settings.device)
            raise AudioError(f"audio device {name}: {exc}; `nightear devices` lists the capture "
                             "devices") from None
        if channels > self.device_info["max_input_channels"]:
            raise AudioError(f"audio device {self.device_info['name']!r} has "
                             f"{self.device_info['max_input_channels']} input channels, config asks "
                             f"for {channels}")
        frames = int(settings.buffer_seconds * settings.sample_rate)
        self.ring = RingBuffer(frames, channels)
        self.overflows = 0

    def check(self) -> None:
        """Ask PortAudio whether the device takes these settings, without opening it."""
        s = self.settings
        try:
            self.sd.check_input_settings(device=s.device, channels=self.channels, dtype="int16",
                                         samplerate=s.sample_rate)
        except (ValueError, self.sd.PortAudioError) as exc:
            raise AudioError(f"audio device {self.device_info['name']!r} refuses {self.channels} ch "
                             f"at {s.sample_rate} Hz: {exc}") from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now = time.monotonic()
        if status.input_overflow:
            self.overflows += 1
        # PortAudio's ADC time of the first frame, where the host API gives one; else the
        # callback's own time less the block it waited for
        age = time_info.currentTime - time_info.inputBufferAdcTime
        if not (time_info.inputBufferAdcTime > 0 and 0.0 <= age < 1.0):
            age = frames / self.sample_rate
        self.ring.write(indata, now - age)

    def blocks(self, stop: threading.Event) -> Iterator[tuple[np.ndarray, float]]:
        """Yield ((n, channels) float32 block, monotonic capture time of its first frame) until
        `stop` is set; an empty block every half second without audio, so the caller's loop
        goes on (and pings the watchdog); AudioError if the device fails."""
        s = self.settings
        try:
            with self.sd.InputStream(device=s.device, channels=self.channels, samplerate=s.sample_rate,
                                     dtype="int16", blocksize=int(s.block_seconds * s.sample_rate),
                                     callback=self._callback) as stream:
                yield from self._read(stream, stop)
        except self.sd.PortAudioError as exc:
            raise AudioError(f"audio device {self.device_info['name']!r} failed: {exc}") from None

    def _read(self, stream: Any, stop: threading.Event) -> Iterator[tuple[np.ndarray, float]]:
        s = self.settings
        heard = time.monotonic()
        while not stop.is_set():
            self.ring.ready.wait(timeout=0.5)
            raw, first = self.ring.read()
            if len(raw):
                heard = time.monotonic()
                # a backlog (the pipeline fell behind) goes on in 1-s pieces, so memory
                # stays bounded however much the ring held
                for start in range(0, len(raw), s.sample_rate):
                    piece = raw[start : start + s.sample_rate]
                    captured = self.ring.captured_at(first + start, s.sample_rate)
                    if captured is None:
                        captured = heard - (len(raw) - start) / s.sample_rate
                    yield int16_to_float(piece), captured
                continue
            yield np.zeros((0, self.channels), np.float32), time.monotonic()
            if time.monotonic() - heard > s.stall_seconds or not stream.active:
                # a USB microphone pulled out often just stops calling back
                raise AudioError(f"audio device {self.device_info['name']!r} delivered no "
                                 f"audio for {s.stall_seconds:.0f} s")

