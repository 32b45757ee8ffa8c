"""Evidence: an audio clip per event, with pre-roll, and a spectrogram picture of it.

The daemon keeps the last minutes of audio in a preallocated ring; when an event closes, its
span plus a few seconds before it is written as a 16-bit WAV (temporary name, then rename) with
a PNG of its log-mel drawn with Pillow. Clips live under a byte quota, oldest deleted first,
and a full or failing disk costs the evidence, never the detection.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
import soundfile as sf

from nightear.errors import ConfigError
from nightear.frontend import FrontendConfig, MelBasis, log_mel
from nightear.sinks import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE

# a perceptual dark-blue -> green -> yellow ramp (anchor colours of matplotlib's viridis)
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])
FLOOR_DB, CEILING_DB = -100.0, -10.0  # the colour scale of every picture: comparable at a glance
# the names nightear gives its clips (start time, then the event id's first 8 hex digits): the
# quota deletes these and nothing else a person may have put in the folder
CLIP_NAME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{6}-[0-9a-f]{8}\.(wav|png)")


def clip_name(start: str, event_id: str) -> str:
    """The file stem of an event's clip: `2026-12-02T004711-1a2b3c4d` (UTC start, event id)."""
    return f"{start[:19].replace(':', '')}-{event_id[:8]}"


class ClipSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where clips go and how much room they may take."""

    folder: str | None = None  # None: no clips
    preroll_seconds: Annotated[float, msgspec.Meta(ge=0.0, le=30.0)] = 3.0
    max_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=600.0)] = 60.0  # longest clip kept
    quota_bytes: Annotated[int, msgspec.Meta(ge=1_000_000)] = 500_000_000


class AudioHistory:
    """The last `seconds` of the mono stream, preallocated; indices are stream sample counts."""

    def __init__(self, seconds: float, sample_rate: int):
        self._data = np.zeros(int(seconds * sample_rate), dtype=np.float32)
        self.sample_rate = sample_rate
        self.total = 0  # samples ever pushed

    def push(self, block: np.ndarray) -> None:
        size = len(self._data)
        block = block[-size:]
        start = (self.total + max(0, len(block) - size)) % size
        first = min(len(block), size - start)
        self._data[start : start + first] = block[:first]
        self._data[: len(block) - first] = block[first:]
        self.total += len(block)

    def span(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the stream, as much of it as is still held."""
        start, end = max(start, self.total - len(self._data), 0), min(end, self.total)
        idx = np.arange(start, max(start, end)) % len(self._data)
        return self._data[idx]


def spectrogram_png(y: np.ndarray, frontend: FrontendConfig, mel_basis: MelBasis, path: Path) -> None:
    """The clip's log-mel as a picture: time left to right, low frequencies at the bottom."""
    from PIL import Image

    frames = log_mel(y, frontend, mel_basis)[::-1]
    scaled = np.clip((frames - FLOOR_DB) / (CEILING_DB - FLOOR_DB), 0.0, 1.0)
    positions = np.linspace(0.0, 1.0, len(_ANCHORS))
    rgb = np.stack([np.interp(scaled, positions, _ANCHORS[:, c]) for c in range(3)], axis=-1)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    image.resize((max(1, image.width * 2), image.height * 3)).save(path, format="PNG")


class ClipWriter:
    """Writes an event's clip and picture, then trims the folder to its quota."""

    def __init__(self, settings: ClipSettings, frontend: FrontendConfig, mel_basis: MelBasis):
        self.settings, self.frontend, self.mel_basis = settings, frontend, mel_basis
        self.folder = Path(settings.folder or ".")
        try:
            self.folder.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"clips.folder {self.folder}: cannot create it ({exc.strerror})") from None

    def write(self, name: str, y: np.ndarray) -> tuple[Path, Path]:
        """`name`.wav and `name`.png in the folder (each via a temporary name); OSError on a
        full or failing disk, for the caller to report."""
        wav, png = self.folder / f"{name}.wav", self.folder / f"{name}.png"
        for final, write in ((wav, lambda p: sf.write(p, y, self.frontend.sample_rate,
                                                      subtype="PCM_16", format="WAV")),
                             (png, lambda p: spectrogram_png(y, self.frontend, self.mel_basis, p))):
            tmp = final.with_name(f".{final.name}.tmp")
            try:
                write(tmp)
                os.chmod(tmp, PRIVATE_FILE_MODE)
                os.replace(tmp, final)
            except (sf.SoundFileError, RuntimeError) as exc:  # libsndfile's own write errors
                raise OSError(f"{final}: {exc}") from None
            finally:
                tmp.unlink(missing_ok=True)
        self.enforce_quota()
        return wav, png

    def enforce_quota(self) -> list[Path]:
        """Delete the oldest of nightear's own clips, each with its picture, until the folder
        fits its quota; other files and folders are neither counted nor touched."""
        by_clip: dict[str, list[tuple[Path, os.stat_result]]] = {}
        for path in self.folder.iterdir():
            if not CLIP_NAME.fullmatch(path.name) or path.is_symlink() or not path.is_file():
                continue
            try:
                by_clip.setdefault(path.stem, []).append((path, path.stat()))
            except FileNotFoundError:  # removed while we looked
                continue
        oldest_first = sorted(by_clip.values(), key=lambda ps: min(st.st_mtime_ns for _, st in ps))
        used = sum(st.st_size for ps in oldest_first for _, st in ps)
        deleted: list[Path] = []
        for paths in oldest_first[:-1]:  # the clip just written always stays
            if used <= self.settings.quota_bytes:
                break
            for path, st in paths:
                used -= st.st_size
                path.unlink(missing_ok=True)
                deleted.append(path)
        return deleted
