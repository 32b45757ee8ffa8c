"""Audio sources: they deliver mono float32 blocks at the front-end's sample rate.

A source hides where audio comes from (a file now, a microphone array in the daemon) and
what it looked like there (any sample rate, any channel count): it mixes down and resamples
with soxr, so every later stage sees one format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from nightear.errors import AudioError

BLOCK_SECONDS = 1.0  # how much audio a file source reads at a time
_SHORT_DATA = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


class WavSource:
    """A WAV/FLAC/OGG file (anything libsndfile reads), as 16 kHz (or `sample_rate`) mono blocks.

    Opening checks the header so a corrupt, empty or truncated file fails before any block is
    read; a decode error or missing frames found later raise AudioError too.
    """

    def __init__(self, path: str | Path, sample_rate: int):
        self.path = Path(path)
        self.sample_rate = sample_rate
        if not self.path.exists():
            raise AudioError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise AudioError(f"{self.path}: is a folder, not an audio file")
        try:
            info = sf.info(str(self.path))
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(f"{self.path}: not a readable audio file ({_reason(exc)})") from None
        if info.frames <= 0:
            raise AudioError(f"{self.path}: holds no audio (0 frames)")
        short = _SHORT_DATA.search(info.extra_info)
        if short and int(short.group(2)) < int(short.group(1)):
            raise AudioError(
                f"{self.path}: truncated: header promises {short.group(1)} bytes of audio, "
                f"file holds {short.group(2)}"
            )
        self.input_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.frames = int(info.frames)

    @property
    def duration_s(self) -> float:
        return self.frames / self.input_rate

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """Yield (n,) float32 mono blocks at `sample_rate`; raises AudioError on a bad read."""
        block_frames = max(1, int(block_seconds * self.input_rate))
        resampler = None
        if self.input_rate != self.sample_rate:
            resampler = soxr.ResampleStream(
                self.input_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
            )
        frames_read = 0
        try:
            with sf.SoundFile(str(self.path)) as handle:
                while frames_read < self.frames:
                    data = handle.read(block_frames, dtype="float32", always_2d=True)
                    if len(data) == 0:
                        break
                    frames_read += len(data)
                    mono = data.mean(axis=1, dtype=np.float32)
                    if resampler is not None:
                        mono = resampler.resample_chunk(mono, last=frames_read >= self.frames)
                    yield mono
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(f"{self.path}: unreadable at {frames_read / self.input_rate:.1f} s "
                             f"({_reason(exc)})") from None
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
    """libsndfile's message without the file name it repeats."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^Error opening '.*?': ", "", text)
