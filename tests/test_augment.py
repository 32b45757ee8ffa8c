"""Field simulation: mixing hits the SNR asked for, speed changes shift the rotor's pitch,
synthetic hum hums where told, the sampler draws what its knobs say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch", reason="training tests need the 'train' extra")

from nightear_training.augment import AugmentConfig, FieldSampler  # noqa: E402
from nightear_training.propagation import rms_db  # noqa: E402
from nightear_training.signals import (  # noqa: E402
    audibility,
    background_stream,
    broadband,
    change_speed,
    colour,
    loud_blocks,
    mix_at_snr,
    rotor_hum,
    tilt,
    wander_speed,
)

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


@pytest.mark.parametrize("blade_pass_hz", [45.0, 90.0, 250.0])
def test_rotor_hum_has_its_energy_at_the_blade_pass_harmonics(blade_pass_hz: float) -> None:
    hum = rotor_hum(2.0, blade_pass_hz, np.random.default_rng(1), rotors=4, noise_db=-30.0)
    assert rms_db(hum) == pytest.approx(0.0, abs=0.1)
    ratio = peak_hz(hum) / blade_pass_hz
    assert abs(ratio - round(ratio)) < 0.1 and round(ratio) >= 1


def test_tilt_raises_highs_and_lowers_lows() -> None:
    tilted = tilt(tone(4000.0) + tone(250.0), 2.0)
    spectrum = np.abs(np.fft.rfft(tilted))
    assert spectrum[4000] / spectrum[250] == pytest.approx(10 ** (2.0 * 4 / 20), rel=0.05)


def test_colour_reshapes_the_harmonics_within_its_bound() -> None:
    # another make or microphone: each harmonic louder or softer by up to +-6 dB, differently
    # every draw, a flat response when the bound is 0
    harmonics = [200.0 * k for k in range(1, 30)]
    comb = sum(tone(hz) for hz in harmonics)
    rng = np.random.default_rng(8)

    def gains_db(y: np.ndarray) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(y))
        reference = np.abs(np.fft.rfft(comb))
        return np.array([20 * np.log10(spectrum[int(hz)] / reference[int(hz)]) for hz in harmonics])

    first, second = gains_db(colour(comb, 6.0, rng)), gains_db(colour(comb, 6.0, rng))
    assert np.abs(first).max() <= 6.0 and np.abs(second).max() <= 6.0
    assert np.ptp(first) > 1.0 and np.abs(first - second).max() > 1.0
    assert np.abs(gains_db(colour(comb, 0.0, rng))).max() < 1e-3


def test_broadband_lowers_the_rotor_lines_over_the_noise_between_them() -> None:
    # a make whose lines stand less far over its own noise: the lines stay where they were,
    # the noise between them rises with the ratio asked for, the spectrum's shape is kept
    noise = 1e-4 * np.random.default_rng(2).standard_normal(RATE)
    hum = sum(tone(150.0 * k) / k for k in range(1, 13)) + noise
    freqs = np.fft.rfftfreq(len(hum), 1 / RATE)
    band = (freqs > 100) & (freqs < 2000)

    def prominence_db(y: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(y))[band] ** 2
        return float(10 * np.log10(power.max() / np.median(power)))

    rng = np.random.default_rng(3)
    raised = [broadband(hum, ratio, rng) for ratio in (-10.0, 0.0, 10.0)]
    prominence = [prominence_db(y) for y in (hum, *raised)]
    assert prominence[0] > 35.0 and all(np.diff(prominence) < -5.0)
    assert all(peak_hz(y) == pytest.approx(peak_hz(hum), abs=3.0) for y in raised)
    assert rms_db(raised[1] - hum) == pytest.approx(rms_db(hum), abs=0.1)
    octave = [(freqs >= lo) & (freqs < 2 * lo) for lo in (125.0, 250.0, 500.0, 1000.0)]
    levels = [[10 * np.log10(np.sum(np.abs(np.fft.rfft(y))[m] ** 2)) for m in octave]
              for y in (hum, raised[1])]
    assert np.ptp(np.subtract(*levels)) < 3.0  # about 3 dB more in every octave
    # the sampler's knob: positives drawn from the same comb, with and without it
    steady = AugmentConfig(clean_probability=1.0, lowpass_probability=0.0, speed=(1.0, 1.0),
                           tilt_db_per_octave=(0.0, 0.0))
    drawn = {p: np.median([prominence_db(FieldSampler([hum.astype(np.float32)], [noise], RATE,
                                                      replace(steady, broadband_probability=p))
                                         .window(np.random.default_rng(i), drone=True))
                           for i in range(8)])
             for p in (0.0, 1.0)}
    assert drawn[0.0] > 35.0 and drawn[1.0] < drawn[0.0] - 5.0


def test_windows_reach_the_microphone_with_an_echo_off_the_ground_when_asked() -> None:
    # a steady comb: without the echo every harmonic keeps its level against the others; with
    # it, some harmonics fall into the comb's notches and others rise, draw by draw
    hum = sum(tone(150.0 * k) / k for k in range(1, 13))
    steady = AugmentConfig(clean_probability=1.0, lowpass_probability=0.0, speed=(1.0, 1.0),
                           tilt_db_per_octave=(0.0, 0.0))

    def harmonic_db(y: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft(y[:RATE])) ** 2  # 1-Hz bins
        return np.array([10 * np.log10(power[150 * k - 3 : 150 * k + 4].sum()) for k in range(1, 13)])

    def reshaped_db(p: float, seed: int, drone: bool = True) -> float:
        sampler = FieldSampler([hum], [hum], RATE + 512, replace(
            steady, ground_reflection_probability=p if drone else 0.0,
            negative_ground_probability=0.0 if drone else p, background_mix_probability=0.0))
        change = harmonic_db(sampler.window(np.random.default_rng(seed), drone=drone)) - harmonic_db(hum)
        return float(np.std(change))  # the gain moves every harmonic alike; the echo does not

    assert max(reshaped_db(0.0, seed) for seed in range(6)) < 0.5
    assert np.median([reshaped_db(1.0, seed) for seed in range(6)]) > 2.0
    # and negatives (here the same comb as background) when asked, so a comb is no sign of a drone
    assert max(reshaped_db(0.0, seed, drone=False) for seed in range(6)) < 0.5
    assert np.median([reshaped_db(1.0, seed, drone=False) for seed in range(6)]) > 2.0


def test_a_split_rotor_comb_adds_a_second_comb_at_the_ratio_asked_for() -> None:
    # one recording's comb and, when asked, the same comb 1.2x higher a few dB under it
    steady = AugmentConfig(clean_probability=1.0, lowpass_probability=0.0, speed=(1.0, 1.0),
                           tilt_db_per_octave=(0.0, 0.0), rotor_split=(1.2, 1.2), rotor_split_db=(-3.0, -3.0))
    bed = [(1e-4 * np.random.default_rng(5).standard_normal(RATE)).astype(np.float32)]

    def line_db(y: np.ndarray, hz: float) -> float:
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        freqs = np.fft.rfftfreq(len(y), 1 / RATE)
        return float(20 * np.log10(spectrum[np.abs(freqs - hz) < 4].max() / np.median(spectrum)))

    for p in (0.0, 1.0):
        y = FieldSampler([tone(200.0, 2.0)], bed, RATE, replace(steady, rotor_split_probability=p)).window(
            np.random.default_rng(6), drone=True)
        assert line_db(y, 200.0) > 40.0
        if p:
            assert line_db(y, 240.0) == pytest.approx(line_db(y, 200.0) - 3.0, abs=1.5)
        else:
            assert line_db(y, 240.0) < line_db(y, 200.0) - 30.0


def test_background_stream_uses_each_clip_once() -> None:
    clips = [np.full(1600, i + 1, dtype=np.float32) for i in range(3)]
    stream = background_stream(clips)
    assert len(stream) == 4800 and stream[800] == 1.0 and stream[4000] == 3.0


def test_sampler_draws_windows_at_field_levels() -> None:
    rng = np.random.default_rng(3)
    drones = [tone(200.0, 2.0)]
    beds = [(0.01 * rng.standard_normal(RATE * 3)).astype(np.float32)]
    sampler = FieldSampler(drones, beds, 13056, AugmentConfig(synthetic_bank=4))
    levels = [rms_db(sampler.window(rng, drone=bool(i % 2))) for i in range(40)]
    assert all(-71.0 < level < -14.0 for level in levels)
    assert len(sampler.window(rng, drone=True)) == 13056


def high_band_share(y: np.ndarray) -> float:
    """Share of the spectrum's magnitude above 4 kHz."""
    spectrum = np.abs(np.fft.rfft(y))
    return float(spectrum[len(spectrum) // 2 :].sum() / spectrum.sum())


def test_negatives_slowed_and_absorbed_as_drones_are_when_asked() -> None:
    # a drone slowed to half speed has nothing above 4 kHz, and a far one little: negatives get
    # the same treatment when asked, so a band left empty is no sign of a drone
    rng = np.random.default_rng(4)
    drones = [tone(200.0, 2.0)]
    noise = [(0.1 * rng.standard_normal(RATE * 3)).astype(np.float32)]
    flat = dict(tilt_db_per_octave=(0.0, 0.0), background_mix_probability=0.0)
    plain = FieldSampler(drones, noise, RATE, AugmentConfig(**flat))
    slowed = FieldSampler(drones, noise, RATE, AugmentConfig(
        **flat, speed=(0.5, 0.5), negative_speed_probability=1.0))
    absorbed = FieldSampler(drones, noise, RATE, AugmentConfig(
        **flat, distance_m=(500.0, 500.0), negative_lowpass_probability=1.0))
    assert high_band_share(plain.window(rng, drone=False)) > 0.4
    assert high_band_share(slowed.window(rng, drone=False)) < 0.05
    assert high_band_share(absorbed.window(rng, drone=False)) < 0.3


def pitch_track(y: np.ndarray, size: int = 2048) -> list[float]:
    return [peak_hz(y[i : i + size]) for i in range(0, len(y) - size + 1, size)]


def test_wander_drifts_the_pitch_within_a_window_and_keeps_its_level() -> None:
    # a drone turning or passing by changes its pitch over a second; +-15% around 1000 Hz
    # sweeps the peak over more than 150 Hz, while a steady rate keeps it put
    y = tone(1000.0, 1.5)
    drifted = wander_speed(y, RATE, 0.15, np.random.default_rng(5))
    steady = wander_speed(y, RATE, 0.0, np.random.default_rng(5))
    assert len(drifted) == RATE
    assert max(pitch_track(drifted)) - min(pitch_track(drifted)) > 150.0
    assert max(pitch_track(steady)) - min(pitch_track(steady)) < 10.0
    # interpolated on an oversampled copy: a tone near the top keeps its level
    high = tone(7000.0, 1.5)
    assert rms_db(wander_speed(high, RATE, 0.05, np.random.default_rng(6))) == pytest.approx(
        rms_db(high), abs=0.5)


def test_a_paired_negative_is_its_positive_without_the_drone() -> None:
    # the same bed at the same gain and tilt: what the positive adds is the drone alone
    rng = np.random.default_rng(7)
    drones = [tone(200.0, 2.0)]
    noise = [(0.1 * rng.standard_normal(RATE * 3)).astype(np.float32)]
    config = AugmentConfig(paired_negative_probability=1.0, positive_share=0.5, lowpass_probability=0.0,
                           speed=(1.0, 1.0), background_mix_probability=0.0, snr_db=(10.0, 10.0),
                           tilt_db_per_octave=(0.0, 0.0))
    positive, negative = FieldSampler(drones, noise, RATE, config).pair(rng)
    assert -71.0 < rms_db(positive) < -14.0
    assert rms_db(positive) - rms_db(negative) == pytest.approx(10.4, abs=0.2)  # 10 dB SNR
    assert peak_hz(positive - negative) == pytest.approx(200.0, abs=2.0)
    assert peak_hz(negative) != pytest.approx(200.0, abs=20.0)


def test_positives_are_cut_where_the_drone_is_near_when_asked() -> None:
    # an outdoor pass: 2 s of the drone overhead, 8 s of the site alone while it is far away
    rng = np.random.default_rng(9)
    site = (0.002 * rng.standard_normal(RATE * 10)).astype(np.float32)
    recording = site.copy()
    recording[RATE * 6 : RATE * 8] += tone(600.0, 2.0)
    assert list(loud_blocks(recording, 10.0) / RATE) == pytest.approx(
        [6.0, 6.25, 6.5, 6.75, 7.0, 7.25, 7.5, 7.75])
    config = AugmentConfig(lowpass_probability=0.0, speed=(1.0, 1.0), clean_probability=1.0,
                           tilt_db_per_octave=(0.0, 0.0))

    def share_with_the_drone(loud_crop_db: float) -> float:
        sampler = FieldSampler([recording], [site], RATE // 2, replace(config, loud_crop_db=loud_crop_db))
        windows = [sampler.window(rng, True) for _ in range(200)]
        return float(np.mean([peak_hz(w) == pytest.approx(600.0, abs=5.0) for w in windows]))

    assert share_with_the_drone(10.0) == 1.0
    assert share_with_the_drone(0.0) < 0.4


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
    # pairs are a negative and a positive each: another share would label them wrongly
    with pytest.raises(ValueError, match="positive_share must be 0.5, got 0.25"):
        FieldSampler([tone(2000.0, 2.0)], noise, RATE,
                     replace(config, positive_share=0.25, paired_negative_probability=0.5))
    with pytest.raises(ValueError, match="positive_share must lie between 0 and 1, got 1.5"):
        FieldSampler([tone(2000.0, 2.0)], noise, RATE, replace(config, positive_share=1.5))


def test_positives_are_labelled_by_how_well_their_drone_is_heard_when_asked() -> None:
    # a 600 Hz line over white noise: at the same broadband SNR a line stands far higher in its
    # own band than noise spread over all of them would
    rng = np.random.default_rng(11)
    bed = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    line = tone(600.0) + tone(1200.0) + tone(1800.0)
    spread = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    heard = {name: audibility(mix_at_snr(y, bed, 0.0) - bed, bed)
             for name, y in (("line", line), ("spread", spread))}
    assert heard["spread"] == pytest.approx(0.0, abs=1.5) and heard["line"] > heard["spread"] + 6.0

    from nightear.frontend import FrontendConfig, librosa_mel_basis
    from nightear_training.train import SampledBatches

    config = AugmentConfig(lowpass_probability=0.0, speed=(1.0, 1.0), background_mix_probability=0.0,
                           tilt_db_per_octave=(0.0, 0.0), positive_share=0.5)
    comb = tone(600.0, 2.0) + tone(1200.0, 2.0) + tone(1800.0, 2.0)
    sampler = FieldSampler([comb], [bed], RATE // 2,
                           replace(config, snr_db=(-40.0, 10.0), audible_db=(0.0, 6.0)))
    labels = np.array([sampler.labelled_window(rng, True)[1] for _ in range(200)])
    assert labels.min() == 0.0 and labels.max() == 1.0 and 0.0 < labels.mean() < 1.0
    assert ((labels > 0) & (labels < 1)).any()  # a ramp, not a cut
    # labels follow the SNR: the same draws, every drone 10 dB louder, are heard more often
    louder = FieldSampler([comb], [bed], RATE // 2,
                          replace(config, snr_db=(-30.0, 20.0), audible_db=(0.0, 6.0)))
    assert np.mean([louder.labelled_window(rng, True)[1] for _ in range(200)]) > labels.mean()
    assert sampler.labelled_window(rng, False)[1] == 0.0
    # without audible_db, every positive is a 1 and batches hold 0/1 labels as before
    frontend = FrontendConfig()
    _, soft = SampledBatches(sampler, frontend, librosa_mel_basis(frontend))(seed=2, size=16)
    plain = FieldSampler([comb], [bed], RATE // 2, replace(config, snr_db=(-40.0, 10.0)))
    _, hard = SampledBatches(plain, frontend, librosa_mel_basis(frontend))(seed=2, size=16)
    assert set(hard.tolist()) == {0, 1} and soft[0::2].max() == 0.0 and soft[1::2].min() < 1.0


def test_drones_are_drawn_by_the_weights_asked_for() -> None:
    # an indoor toy and an outdoor drone, told apart by their pitch
    rng = np.random.default_rng(5)
    noise = [(0.001 * rng.standard_normal(RATE * 2)).astype(np.float32)]
    drones = {"toy": [tone(2000.0, 2.0)], "outdoor": [tone(300.0, 2.0)]}
    config = AugmentConfig(lowpass_probability=0.0, speed=(1.0, 1.0), snr_db=(20.0, 20.0),
                           tilt_db_per_octave=(0.0, 0.0), background_mix_probability=0.0)

    def toy_share(weights: tuple[tuple[str, float], ...]) -> float:
        sampler = FieldSampler(drones, noise, RATE // 2, replace(config, drone_weights=weights))
        return float(np.mean([peak_hz(sampler.window(rng, True)) > 1000.0 for _ in range(400)]))

    assert toy_share(()) == pytest.approx(0.5, abs=0.08)
    assert toy_share((("toy", 1.0), ("outdoor", 3.0))) == pytest.approx(0.25, abs=0.07)
    assert toy_share((("toy", 0.5),)) == pytest.approx(1 / 3, abs=0.08)  # unnamed drones weigh 1
    with pytest.raises(ValueError, match="drone_weights must be positive"):
        FieldSampler(drones, noise, RATE // 2, replace(config, drone_weights=(("toy", 0.0),)))


def test_positives_keep_their_recorded_rotor_rate_in_the_share_asked_for() -> None:
    # one drone at 300 Hz, its speed drawn from 0.5-0.6x unless played as recorded
    rng = np.random.default_rng(7)
    noise = [(0.001 * rng.standard_normal(RATE * 2)).astype(np.float32)]
    config = AugmentConfig(lowpass_probability=0.0, speed=(0.5, 0.6), snr_db=(20.0, 20.0),
                           tilt_db_per_octave=(0.0, 0.0), background_mix_probability=0.0)

    def native_share(p: float) -> float:
        sampler = FieldSampler([tone(300.0, 3.0)], noise, RATE // 2,
                               replace(config, native_speed_probability=p))
        return float(np.mean([abs(peak_hz(sampler.window(rng, True)) - 300.0) < 10.0 for _ in range(300)]))

    assert native_share(0.0) == 0.0
    assert native_share(0.3) == pytest.approx(0.3, abs=0.08)
    assert native_share(1.0) == 1.0
