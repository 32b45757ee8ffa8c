"""Evidence clips: pre-roll from the ring, WAV and PNG written whole, oldest deleted first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from nightear.frontend import FrontendConfig, librosa_mel_basis
from nightear.sinks.clips import AudioHistory, ClipSettings, ClipWriter, clip_name

RATE = 16000


def test_history_returns_the_stream_span_it_still_holds() -> None:
    history = AudioHistory(2.0, RATE)
    stream = np.arange(5 * RATE, dtype=np.float32)
    for block in np.array_split(stream, 37):
        history.push(block)
    assert np.array_equal(history.span(4 * RATE, 4 * RATE + 100), stream[4 * RATE : 4 * RATE + 100])
    assert np.array_equal(history.span(0, 5 * RATE), stream[3 * RATE :])  # older audio is gone
    assert len(history.span(5 * RATE, 6 * RATE)) == 0  # nothing from the future


def test_clip_and_picture_are_written_and_the_quota_keeps_the_newest(tmp_path: Path) -> None:
    config = FrontendConfig()
    writer = ClipWriter(ClipSettings(folder=str(tmp_path), quota_bytes=1_000_000), config,
                        librosa_mel_basis(config))
    t = np.arange(10 * RATE) / RATE
    y = (0.1 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)  # 320 KB as 16-bit WAV
    names = [clip_name(f"2026-12-02T00:4{i}:11.000+00:00", f"{i}a2b3c4d-0000") for i in range(4)]
    paths = [writer.write(name, y) for name in names]
    wav, png = paths[-1]
    assert sf.info(wav).duration == 10.0 and sf.info(wav).samplerate == RATE
    with Image.open(png) as image:
        assert image.format == "PNG" and image.height == 64 * 3
    left = sorted(p.name for p in tmp_path.iterdir())
    # 4 clips of 325 kB do not fit in 1 MB: the oldest goes, with its picture
    assert left == [f"{names[i]}.{ext}" for i in (1, 2, 3) for ext in ("png", "wav")]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 1_000_000


def test_the_quota_deletes_only_nightears_own_clips(tmp_path: Path) -> None:
    import os

    config = FrontendConfig()
    writer = ClipWriter(ClipSettings(folder=str(tmp_path), quota_bytes=1_000_000), config,
                        librosa_mel_basis(config))
    y = (0.1 * np.sin(2 * np.pi * 180 * np.arange(10 * RATE) / RATE)).astype(np.float32)
    holiday = tmp_path / "holiday-recording.wav"  # a person's own file, older and bigger than any clip
    sf.write(holiday, np.zeros(30 * RATE, np.float32), RATE, subtype="PCM_16")
    os.utime(holiday, (0, 0))
    (tmp_path / "old.wav").mkdir()  # a folder with a clip's suffix
    (tmp_path / "old.wav" / "keep.txt").write_text("mine")
    names = [clip_name(f"2026-12-02T00:4{i}:11.000+00:00", f"{i}a2b3c4d-0000") for i in range(4)]
    for name in names:
        writer.write(name, y)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["holiday-recording.wav", "old.wav"] +
                          [f"{names[i]}.{ext}" for i in (1, 2, 3) for ext in ("png", "wav")])
    assert (tmp_path / "old.wav" / "keep.txt").read_text() == "mine"
    assert sf.info(holiday).duration == 30.0
