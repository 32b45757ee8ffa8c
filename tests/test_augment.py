"""Field simulation: mixing hits the SNR asked for, speed changes shift the rotor's pitch,
the sampler draws what its knobs say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch", reason="training tests need the 'train' extra")

from nightear_training.augment import AugmentConfig, FieldSampler  # noqa: E402
from nightear_training.propagation import rms_db  # noqa: E402
from nightear_training.signals import background_stream, change_speed, mix_at_snr, tilt  # noqa: E402

RATE = 16000


def peak_hz(y: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / RATE)[np.argmax(spectrum)])


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def test_mix_reaches_the_snr_asked_for() -> None:
    rng = np.random.default_rng(0)
    drone, bed = tone(180.0), (0.01 * rng.standard_normal(RATE)).astype(np.float32)
    for snr in (-10.0, 0.0, 15.0):
        mixed = mix_at_snr(drone, bed, snr)
        assert rms_db(mixed - bed) - rms_db(bed) == pytest.approx(snr, abs=0.01)


def test_speed_change_scales_the_blade_pass_frequency() -> None:
    assert peak_hz(change_speed(tone(200.0), 0.5)) == pytest.approx(100.0, abs=2.0)
    assert peak_hz(change_speed(tone(200.0), 1.15)) == pytest.approx(230.0, abs=2.0)



def test_tilt_raises_highs_and_lowers_lows() -> None:
    tilted = tilt(tone(4000.0) + tone(250.0), 2.0)
    spectrum = np.abs(np.fft.rfft(tilted))
    assert spectrum[4000] / spectrum[250] == pytest.approx(10 ** (2.0 * 4 / 20), rel=0.05)






def test_background_stream_uses_each_clip_once() -> None:
    clips = [np.full(1600, i + 1, dtype=np.float32) for i in range(3)]
    stream = background_stream(clips)
    assert len(stream) == 4800 and stream[800] == 1.0 and stream[4000] == 3.0


def test_sampler_draws_windows_at_field_levels() -> None:
    rng = np.random.default_rng(3)
    drones = [tone(200.0, 2.0)]
    beds = [(0.01 * rng.standard_normal(RATE * 3)).astype(np.float32)]
    sampler = FieldSampler(drones, beds, 13056, AugmentConfig())
    levels = [rms_db(sampler.window(rng, drone=bool(i % 2))) for i in range(40)]
    assert all(-71.0 < level < -14.0 for level in levels)
    assert len(sampler.window(rng, drone=True)) == 13056



def test_batches_hold_the_share_of_drone_windows_asked_for() -> None:
    # a 2 kHz "drone" in quiet noise: the drone windows are the ones whose loudest band is 2 kHz
    from nightear.frontend import FrontendConfig, librosa_mel_basis, log_mel
    from nightear_training.train import SampledBatches

    rng = np.random.default_rng(3)
    noise = [(0.01 * rng.standard_normal(RATE * 3)).astype(np.float32)]
    config = AugmentConfig(lowpass_probability=0.0, speed=(1.0, 1.0), background_mix_probability=0.0,
                           snr_db=(20.0, 20.0), tilt_db_per_octave=(0.0, 0.0))
    frontend = FrontendConfig()
    mel = librosa_mel_basis(frontend)
    drone_band = int(log_mel(tone(2000.0), frontend, mel).mean(axis=1).argmax())

    for share in (0.5, 0.25):
        sampler = FieldSampler([tone(2000.0, 2.0)], noise, RATE, replace(config, positive_share=share))
        features, labels = SampledBatches(sampler, frontend, mel)(seed=1, size=48)
        loudest = features.mean(axis=2).argmax(axis=1)
        assert labels.mean() == pytest.approx(share)
        assert list(loudest == drone_band) == list(labels.astype(bool))
    with pytest.raises(ValueError, match="positive_share must lie between 0 and 1, got 1.5"):
        FieldSampler([tone(2000.0, 2.0)], noise, RATE, replace(config, positive_share=1.5))


def test_each_drone_is_drawn_as_often_as_the_others_however_many_its_recordings() -> None:
    # an indoor toy of twelve clips and an outdoor drone of one, told apart by their pitch
    rng = np.random.default_rng(5)
    noise = [(0.001 * rng.standard_normal(RATE * 2)).astype(np.float32)]
    drones = {"toy": [tone(2000.0, 2.0)] * 12, "outdoor": [tone(300.0, 2.0)]}
    config = AugmentConfig(lowpass_probability=0.0, speed=(1.0, 1.0), snr_db=(20.0, 20.0),
                           tilt_db_per_octave=(0.0, 0.0), background_mix_probability=0.0)
    sampler = FieldSampler(drones, noise, RATE // 2, config)
    toy_share = np.mean([peak_hz(sampler.window(rng, True)) > 1000.0 for _ in range(400)])
    assert toy_share == pytest.approx(0.5, abs=0.08)
