"""The front-end is librosa's log-mel, chunking never changes it, and its dB scale is fixed."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from nightear.errors import ModelError
from nightear.frontend import FrontendConfig, MelBasis, StreamingLogMel, librosa_mel_basis, log_mel
from tests.conftest import FIXTURES

CONFIG = FrontendConfig()
RATE = CONFIG.sample_rate


@pytest.fixture(scope="module")
def basis() -> MelBasis:
    return librosa_mel_basis(CONFIG)


def harmonic_hum(f0_hz: float, seconds: float, harmonics: int = 6) -> np.ndarray:
    """A rotor-like tone: a blade-pass fundamental and its harmonics, falling in level."""
    t = np.arange(int(seconds * RATE)) / RATE
    return sum(0.3 / k * np.sin(2 * np.pi * k * f0_hz * t) for k in range(1, harmonics + 1))


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=y, sr=RATE, n_fft=CONFIG.n_fft, hop_length=CONFIG.hop_length, center=False,
        n_mels=CONFIG.n_mels, fmin=CONFIG.fmin, fmax=CONFIG.fmax, power=2.0,
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


@pytest.mark.parametrize("signal", ["drone_fixture", "hum_in_noise", "quiet_noise"])
def test_matches_librosa_melspectrogram_within_1e4_db(basis: MelBasis, signal: str) -> None:
    rng = np.random.default_rng(1)
    y = {
        "drone_fixture": lambda: sf.read(FIXTURES / "drone_bebop_16k.flac")[0],
        "hum_in_noise": lambda: harmonic_hum(180.0, 2.0) + 0.01 * rng.standard_normal(2 * RATE),
        "quiet_noise": lambda: 1e-4 * rng.standard_normal(2 * RATE),
    }[signal]()
    ours = log_mel(y, CONFIG, basis)
    reference = librosa_log_mel(np.asarray(y, dtype=np.float64))
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) < 1e-4


def test_one_block_or_100_uneven_blocks_give_identical_frames(basis: MelBasis) -> None:
    y, _ = sf.read(FIXTURES / "drone_bebop_16k.flac", dtype="float32")
    whole = StreamingLogMel(CONFIG, basis).push(y)
    cuts = np.sort(np.random.default_rng(7).choice(len(y), 99, replace=False))
    cuts[:3] = [5, 5, 100]  # an empty block and blocks far shorter than a hop
    stream = StreamingLogMel(CONFIG, basis)
    blocks = [stream.push(b) for b in np.split(y, np.sort(cuts))]
    assert len(blocks) == 100
    assert np.array_equal(np.concatenate(blocks, axis=1), whole)
    assert np.array_equal(whole, log_mel(y, CONFIG, basis))
    assert stream.frames_emitted == whole.shape[1] == CONFIG.frames_in(len(y))


def test_reset_starts_a_new_stream(basis: MelBasis) -> None:
    stream = StreamingLogMel(CONFIG, basis)
    y = harmonic_hum(200.0, 1.0)
    first = stream.push(y[:1500])
    stream.reset()
    assert np.array_equal(stream.push(y[:1500]), first)


def test_fixed_db_reference_no_per_clip_normalisation(basis: MelBasis) -> None:
    y = harmonic_hum(150.0, 1.0) + 0.01 * np.random.default_rng(2).standard_normal(RATE)
    loud, quiet = log_mel(y, CONFIG, basis), log_mel(0.1 * y, CONFIG, basis)
    assert np.allclose(loud - quiet, 20.0, atol=1e-3)  # 20 dB quieter, nothing rescaled
    silence = log_mel(np.zeros(RATE), CONFIG, basis)
    assert np.all(silence == -100.0)  # the floor is absolute: digital silence is -100 dB


@pytest.mark.parametrize("blade_pass_hz", [45.0, 80.0, 180.0, 350.0])
def test_blade_pass_frequency_lands_in_its_mel_band(basis: MelBasis, blade_pass_hz: float) -> None:
    """Small quadcopters hum at 150-400 Hz, heavy multirotors at 40-100 Hz: both resolved."""
    t = np.arange(RATE) / RATE
    frames = log_mel(0.5 * np.sin(2 * np.pi * blade_pass_hz * t), CONFIG, basis)
    peak_band = int(np.argmax(frames.mean(axis=1)))
    centres = librosa.mel_frequencies(CONFIG.n_mels + 2, fmin=CONFIG.fmin, fmax=CONFIG.fmax)[1:-1]
    assert abs(centres[peak_band] - blade_pass_hz) < 50.0


def test_mel_basis_round_trips_through_json_and_equals_librosa(basis: MelBasis) -> None:
    dense = librosa.filters.mel(sr=RATE, n_fft=CONFIG.n_fft, n_mels=CONFIG.n_mels,
                                fmin=CONFIG.fmin, fmax=CONFIG.fmax)
    again = MelBasis.from_json(basis.to_json())
    assert np.array_equal(again.to_dense().astype(np.float32), dense)
    assert again.n_mels == CONFIG.n_mels and again.n_bins == CONFIG.n_bins


def test_streaming_refuses_a_basis_of_another_shape(basis: MelBasis) -> None:
    with pytest.raises(ModelError, match=r"mel basis is 64x257, front-end needs 40x257"):
        StreamingLogMel(FrontendConfig(n_mels=40), basis)


def test_config_rejects_fmax_above_nyquist() -> None:
    with pytest.raises(ValueError, match="fmax"):
        FrontendConfig(fmax=9000.0)
