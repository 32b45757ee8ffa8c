"""File sources read any rate and channel count as 16 kHz mono, and name what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nightear.errors import AudioError
from nightear.sources import WavSource
from tests.conftest import FIXTURES


def write_tone(path: Path, rate: int, channels: int, hz: float = 440.0, seconds: float = 2.0) -> None:
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * hz * t)
    sf.write(path, np.stack([tone] * channels, axis=1), rate, subtype="PCM_16")


@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 4), (22050, 1), (16000, 1)])
def test_any_rate_and_channels_become_16k_mono_at_the_same_pitch_and_level(
    tmp_path: Path, rate: int, channels: int
) -> None:
    path = tmp_path / "tone.wav"
    write_tone(path, rate, channels)
    y = WavSource(path, 16000).read_all()
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 32000) <= 2
    spectrum = np.abs(np.fft.rfft(y[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440.0) <= 1.0
    assert abs(np.sqrt(np.mean(y[4000:28000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_blocks_concatenate_to_the_whole_file() -> None:
    source = WavSource(FIXTURES / "drone_membo_44k_stereo.flac", 16000)
    assert source.input_rate == 44100 and source.channels == 2
    blocks = list(source.blocks(block_seconds=0.3))
    assert len(blocks) > 5
    assert np.array_equal(np.concatenate(blocks), source.read_all())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        WavSource(tmp_path / "nope.wav", 16000)


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a folder"):
        WavSource(tmp_path, 16000)


def test_corrupt_file() -> None:
    with pytest.raises(AudioError, match=r"corrupt\.wav: not a readable audio file"):
        WavSource(FIXTURES / "corrupt.wav", 16000)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: holds no audio"):
        WavSource(path, 16000)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero\.flac: not a readable audio file"):
        WavSource(path, 16000)


def test_truncated_wav_yields_what_it_holds_then_fails(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    data = (FIXTURES / "silence_16k.wav").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = WavSource(path, 16000)  # what the cut file holds is still scored
    blocks = []
    with pytest.raises(AudioError, match=r"cut\.wav: truncated"):
        for block in source.raw_blocks():
            blocks.append(block)
    assert sum(len(b) for b in blocks) == source.frames > 0


def test_truncated_flac_fails_on_read(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    data = (FIXTURES / "drone_bebop_16k.flac").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = WavSource(path, 16000)  # the header alone looks fine
    with pytest.raises(AudioError, match=r"cut\.flac: (truncated|unreadable at)"):
        source.read_all()


def test_non_finite_stream_samples_are_counted_and_scored_as_silence(model_path: Path) -> None:
    """A device stream is never refused for a bad sample: NaN and inf are counted and scored as
    silence, so the windows around them score what the rest of the audio says."""
    from nightear.classifier import OnnxClassifier
    from nightear.decision import DecisionConfig
    from nightear.pipeline import Pipeline

    classifier = OnnxClassifier(model_path)
    drone = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="float32")[0][:, None]
    broken = drone.copy()
    broken[16000:16100] = np.nan
    broken[30000] = np.inf
    cleaned = drone.copy()
    cleaned[16000:16100] = 0.0
    cleaned[30000] = 0.0
    runs = []
    for audio in (broken, cleaned):
        pipeline = Pipeline(classifier, DecisionConfig(), 16000, 1)
        outputs = [pipeline.push(block) for block in np.array_split(audio, 5)]
        runs.append((sum(o.nonfinite_samples for o in outputs),
                     [s.p for o in outputs for s in o.scores]))
    (bad_count, bad_scores), (clean_count, clean_scores) = runs
    assert (bad_count, clean_count) == (101, 0)
    assert bad_scores == clean_scores and all(np.isfinite(bad_scores)) and max(bad_scores) > 0.9
