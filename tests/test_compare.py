"""The plain recipe's sampler and network, and how recipes are compared: recordings cut as the
field meets them, the gunhoo range curve, the ambience that sets a threshold, and the fit check
counting a model's own recordings exactly as `nightear detect` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="training tests need the 'train' extra")

import torch  # noqa: E402

from nightear_training.data import ALL_SOURCES, EXCLUDED, SILENT_DRONE_CLIPS, load_clips  # noqa: E402
from nightear_training.heldout import SEGMENT_SECONDS, recordings  # noqa: E402
from nightear_training.model import DroneCNN  # noqa: E402
from nightear_training.per_recording import range_curve, threshold_setters  # noqa: E402
from nightear_training.plain import PlainConfig, PlainSampler  # noqa: E402
from nightear_training.propagation import rms_db  # noqa: E402

RATE = 16000
WINDOW = 15872  # samples of one 97-frame window


def _peak_hz(y: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / RATE)[np.argmax(spectrum)])


def test_plain_positive_holds_the_drone_near_its_rotor_rate_at_an_audible_snr():
    t = np.arange(RATE * 3) / RATE
    drone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.05, RATE * 3).astype(np.float32)
    config = PlainConfig(lowpass_probability=0.0, second_background_probability=0.0)
    sampler = PlainSampler({"tone": [drone]}, {"noise": [noise]}, WINDOW, config, RATE)
    rng = np.random.default_rng(1)
    for _ in range(20):
        y, label = sampler.labelled_window(rng, True)
        assert label == 1.0 and len(y) == WINDOW and np.abs(y).max() <= 1.0
        assert 850.0 <= _peak_hz(y) <= 1150.0  # +-15% of the recorded rotor rate
        background, _ = sampler.labelled_window(rng, False)
        assert abs(_peak_hz(background) - 1000.0) > 20 or rms_db(background) < rms_db(y)
    # the drone stands over its bed by -5 to +20 dB: the window is never quieter than its bed alone
    quiet = PlainSampler({"tone": [drone]}, {"noise": [noise]}, WINDOW,
                         PlainConfig(lowpass_probability=0.0, second_background_probability=0.0,
                                     background_gain_db=(0.0, 0.0), snr_db=(20.0, 20.0)), RATE)
    y, _ = quiet.labelled_window(np.random.default_rng(2), True)
    assert rms_db(y) == pytest.approx(rms_db(noise) + 20.0, abs=1.0)


def test_plain_sampler_draws_each_data_set_as_often_whatever_its_size():
    rng = np.random.default_rng(0)
    big = [np.full(WINDOW, 0.1, np.float32) for _ in range(1000)]
    small = [np.full(WINDOW, 0.3, np.float32)]
    sampler = PlainSampler({"d": [np.zeros(WINDOW, np.float32)]}, {"big": big, "small": small}, WINDOW,
                           PlainConfig(second_background_probability=0.0, background_gain_db=(0.0, 0.0)))
    levels = [float(sampler.window(rng, False)[0]) for _ in range(400)]
    assert 0.4 < np.mean(np.isclose(levels, 0.3)) < 0.6


def test_the_network_scores_a_pattern_wherever_it_lies_in_time():
    torch.manual_seed(0)
    model = DroneCNN().eval()
    x = torch.full((1, 1, 64, 97), -80.0)
    early, late = x.clone(), x.clone()
    early[..., 10:20, 8:24] = -20.0
    late[..., 10:20, 64:80] = -20.0
    with torch.no_grad():
        assert model(early).shape == (1, 1)
        assert float(model(early)) == pytest.approx(float(model(late)), abs=0.02)


def test_joined_short_clips_become_recordings_of_about_five_seconds():
    clips_audio = [np.full(RATE, i, np.float32) for i in range(12)]
    from nightear_training.data import Clip

    clips = [Clip(Path(f"/x/{i:02d}.flac"), f"drone/{i:02d}.flac", "drone", "drone:x", "g", "s", "", "train")
             for i in range(12)]
    out = recordings(clips, {c.path: a for c, a in zip(clips, clips_audio, strict=True)}, RATE)
    assert [len(y) / RATE for _, y in out] == [SEGMENT_SECONDS, 7.0]
    assert out[1][1][0] == 5.0  # in order: the second recording starts with the sixth clip
    assert len({name for name, _ in out}) == 2


def test_range_curve_and_threshold_setters_count_per_recording():
    loud, faint = np.full(12, 0.99), np.full(12, 0.2)
    scores = {"recordings": [("gunhoo-outdoor/10m-162x#0", "gunhoo", 0, loud),
                             ("gunhoo-outdoor/10m-162x#1", "gunhoo", 0, faint),
                             ("gunhoo-outdoor/drone/50m/50m-163x.flac", "gunhoo", 0, faint),
                             ("gunhoo-outdoor/10m-162x#0", "gunhoo", -10, loud)],
              "streams": [("ambience", 60.0, np.full(240, 0.1)), ("ambience", 60.0, np.full(240, 0.97))],
              "stream_names": ["ambience/quiet.ogg", "ambience/hum.ogg"]}
    assert range_curve(scores, 0.9) == {"10 m": {"heard": 1, "of": 2}, "50 m": {"heard": 0, "of": 1}}
    setters = threshold_setters(scores, 0.95)
    assert setters[0]["recording"] == "ambience/hum.ogg" and setters[0]["event_score"] >= 0.95
    assert setters[1]["recording"] == "ambience/quiet.ogg"


def test_gunhoo_downwash_and_empty_files_never_train_or_count(data_root):
    clips = load_clips(data_root, ALL_SOURCES)
    gunhoo = [c for c in clips if c.source == "gunhoo-outdoor"]
    assert gunhoo and all(c.split == EXCLUDED for c in gunhoo if c.kind.endswith(":1m"))
    silent = SILENT_DRONE_CLIPS["gunhoo-outdoor"]  # no sound at all: kept out too
    assert all(c.split == EXCLUDED for c in gunhoo if c.relpath in silent)
    assert not any(c.split == EXCLUDED for c in gunhoo
                   if not c.kind.endswith(":1m") and c.relpath not in silent)
    assert all(c.path.stat().st_size > 0 for c in clips)


def test_fit_check_counts_each_outdoor_recording_as_nightear_detect_does(data_root, tmp_path):
    """The fit check's verdict on every Svanstrom flight equals whether `nightear detect`, with
    the shipped model, prints an event for that file."""
    from nightear_training.compare import fit_of_file

    model = Path(__file__).resolve().parent.parent / "models" / "nightear-drone.onnx"
    result = fit_of_file(model, data_root, ("svanstrom-outdoor",))
    svanstrom = result["drones"]["svanstrom"]
    files = sorted((data_root / "svanstrom-outdoor" / "drone").glob("*.flac"))
    assert svanstrom["of"] == len(files) > 0
    run = subprocess.run([sys.executable, "-m", "nightear", "detect", "--model", str(model),
                          *map(str, files)], capture_output=True, text=True, check=True)
    detected = {Path(json.loads(line)["file"]).name for line in run.stdout.splitlines()}
    missed = {Path(name).name for name in svanstrom["missed"]}
    assert detected.isdisjoint(missed)
    assert len(detected) == svanstrom["heard"]


def test_spread_over_seeds_gives_each_figure_and_count_its_mean_and_range():
    from nightear_training.compare import spread

    runs = [{"recipe": "plain", "seed": s, "at_1_per_hour": {"threshold": t, "helicopters": h,
                                                             "share_by_level": {"0": share}}}
            for s, t, h, share in ((1, 0.9, "2/40", 0.5), (0, 0.96, "0/40", 0.7))]
    out = spread(runs)
    assert out["seeds"] == [0, 1]
    assert out["at_1_per_hour.threshold"] == {"mean": 0.93, "min": 0.9, "max": 0.96}
    assert out["at_1_per_hour.helicopters"] == {"mean": 1.0, "min": 0, "max": 2}  # heard of 40
    assert out["at_1_per_hour.share_by_level.0"]["mean"] == 0.6


def test_add_seeds_refuses_summaries_of_another_recipe(tmp_path):
    from nightear_training.build import BuildConfig, add_seeds

    (tmp_path / "nightear-drone.metrics.json").write_text(json.dumps({"training": {"recipe_name": "plain"}}))
    other = tmp_path / "field-seed0.json"
    other.write_text(json.dumps({"recipe": "field", "seed": 0}))
    with pytest.raises(ValueError, match="field-seed0.json"):
        add_seeds(BuildConfig(out_dir=tmp_path), [other])


def test_the_card_sets_another_recipes_seeds_and_fit_beside_the_built_one(tmp_path):
    """`add-seeds --beside`: the card's seed table has a column per recipe, leave one site out
    and fit from their own summaries, each figure as mean (range)."""
    from nightear_training.build import BuildConfig, add_seeds

    models = Path(__file__).resolve().parent.parent / "models"
    metrics = json.loads((models / "nightear-drone.metrics.json").read_text())
    metrics["training"]["recipe_name"] = "field"
    (tmp_path / "nightear-drone.metrics.json").write_text(json.dumps(metrics))

    def summary(recipe: str, seed: int, folds: str, **figures: object) -> Path:
        path = tmp_path / f"{recipe}-{folds}-seed{seed}.json"
        path.write_text(json.dumps({"recipe": recipe, "seed": seed, "folds": folds, **figures}))
        return path

    def sites(threshold: float, svanstrom: int) -> dict:
        return {"at_1_per_hour": {"threshold": threshold, "drones": {"svanstrom": {"0": f"{svanstrom}/15"}}}}

    def fit(heard: int) -> dict:
        return {"fit_at_0.95": {"outdoor": {"heard": heard, "of": 81}}}

    built = [summary("field", 0, "sites", **sites(0.99, 1)), summary("field", 1, "sites", **sites(0.995, 3)),
             summary("field", 0, "fit", **fit(10))]
    beside = [summary("plain", 0, "sites", **sites(0.998, 0)), summary("plain", 0, "fit", **fit(70)),
              summary("plain", 1, "fit", **fit(68))]
    add_seeds(BuildConfig(out_dir=tmp_path), built, beside, log=lambda _: None)
    card = (tmp_path / "nightear-drone.card.md").read_text()
    assert "| figure | `field` | `plain` |" in card
    assert "| svanstrom heard, as recorded | 2 (1-3) of 15 | 0 (0-0) of 15 |" in card
    assert "| fit at 0.95: own outdoor recordings heard | 10 (10-10) of 81 | 69 (68-70) of 81 |" in card
    assert "`field`: seeds 0, 1; fit 0; `plain`: seeds 0; fit 0, 1." in card


def test_the_command_line_offers_exactly_the_recipes_there_are():
    from nightear_training import __main__ as cli
    from nightear_training.recipe import DEFAULT_RECIPE, RECIPES

    assert set(cli.RECIPE_NAMES) == set(RECIPES) and cli.DEFAULT_RECIPE == DEFAULT_RECIPE


def test_a_stored_run_thinned_to_half_the_windows_is_what_the_unit_scores_at_half_the_rate():
    # an engineer weighing fewer windows a second (half the classifier's cost) rescores a stored
    # run instead of training again: that only holds if the thinned run is what the unit meets
    import soundfile as sf

    from nightear.classifier import OnnxClassifier
    from nightear.decision import DecisionConfig, mismatch, rescaled
    from nightear.pipeline import Detector
    from nightear_training.evaluate import count_events
    from nightear_training.per_recording import open_delays, thinned

    root = Path(__file__).resolve().parents[1]
    classifier = OnnxClassifier(root / "models" / "nightear-drone.onnx")
    audio, rate = sf.read(root / "examples" / "drone-pass.flac", dtype="float32", always_2d=True)
    assert rate == classifier.info.frontend.sample_rate
    mono = audio.mean(axis=1)
    threshold = classifier.info.threshold

    def unit(hop_seconds: float, decision: DecisionConfig) -> tuple[np.ndarray, int]:
        detector = Detector(classifier, decision, hop_seconds)
        out = detector.push(mono)
        opened = sum(c.kind == "open" for c in out.changes + detector.finish())
        return np.array([s.p for s in out.scores]), opened

    four = rescaled(DecisionConfig(), 0.5, 0.25)
    assert (four.smooth_windows, four.open_windows, four.close_windows) == (8, 1, 4)  # 3.4.0's
    fast, _ = unit(0.25, four)
    half = rescaled(four, 0.25, 0.5)
    assert half == DecisionConfig()  # the same 2-s mean and 1-s close, counted in half the windows
    # and a model whose threshold was chosen at four windows a second takes it without a warning
    assert mismatch(half, classifier.info.metadata["decision"], 0.5) is None
    slow, opened = unit(0.5, half)
    stored = {"recordings": [("pass", "drone", 0, fast)], "streams": [("ambience", 60.0, np.zeros(240))],
              "kinds": [], "lab_clips": []}
    run = thinned(stored, 2)
    np.testing.assert_allclose(run["recordings"][0][3], slow, atol=1e-6)
    assert opened >= 1 and count_events([run["recordings"][0][3]], threshold, half) == opened
    # its alert comes within the pass, no earlier than one window has been heard
    (delay,) = open_delays(run, threshold, 0.5, 1.0, half)
    assert 1.0 <= delay <= len(mono) / rate
