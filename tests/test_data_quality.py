"""The shared recordings as training and the held-out evaluation take them: a drone clip that
holds no sound would teach that silence is a drone and count as a drone missed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch", reason="the training package needs the 'train' extra")

from nightear_training.data import ALL_SOURCES, EXCLUDED, SILENT_DRONE_CLIPS, load_clips  # noqa: E402


def _peak(path: Path) -> int:
    samples, _ = sf.read(path, dtype="int16", always_2d=True)
    return int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0


def test_every_drone_clip_used_holds_sound_and_the_silent_ones_are_kept_out(data_root: Path) -> None:
    clips = load_clips(data_root, ALL_SOURCES)
    drones = [c for c in clips if c.is_drone]
    listed = {(source, path) for source, paths in SILENT_DRONE_CLIPS.items() for path in paths}
    silent = {(c.source, c.relpath) for c in drones if _peak(c.path) <= 1}  # +-1 of 16 bits
    assert silent == listed
    assert all(c.split == EXCLUDED for c in drones if (c.source, c.relpath) in listed)
