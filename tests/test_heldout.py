"""The leave-one-drone-out evaluation: what it holds out, how it counts a recording as heard,
how it makes a recording fainter, and how it states a rate of false alarms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="training tests need the 'train' extra")

from nightear.decision import DecisionConfig  # noqa: E402
from nightear.sources import WavSource  # noqa: E402
from nightear_training.augment import FieldSampler  # noqa: E402
from nightear_training.data import ALL_SOURCES, EXCLUDED, load_clips  # noqa: E402
from nightear_training.evaluate import count_events, threshold_for_rate  # noqa: E402
from nightear_training.heldout import (  # noqa: E402
    FOLDS,
    Fold,
    fainter,
    fold_items,
    fold_sets,
    held_out,
    same_site_parts,
)
from nightear_training.per_recording import (  # noqa: E402
    arriving,
    choose,
    event_score,
    false_alarms,
    low_rate_share,
    poisson_interval,
    table,
)
from nightear_training.propagation import rms_db  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

RATE = 16000


def test_every_negative_is_held_out_once_and_outdoor_sources_go_whole(data_root: Path) -> None:
    clips = [c for c in load_clips(data_root, ALL_SOURCES) if c.split != EXCLUDED]
    held = {fold.name: {c.path for c in held_out(fold, clips)} for fold in FOLDS}
    for c in clips:
        folds = [name for name, paths in held.items() if c.path in paths]
        assert len(folds) == 1, (c.relpath, folds)  # one model never heard it
    svanstrom = {c.path for c in clips if c.source == "svanstrom-outdoor"}
    assert svanstrom <= held["svanstrom"]  # its drones, helicopters and site together
    assert all(c.drone == "bebop" for c in clips if c.is_drone and c.path in held["bebop"])
    ambience = [c for c in clips if c.source == "ambience"]
    assert all(sum(c.path in p for p in held.values()) == 1 for c in ambience)
    assert min(sum(c.path in held[f.name] for c in ambience) for f in FOLDS) > 5  # spread over folds


def test_same_site_models_miss_each_outdoor_flight_once_and_keep_its_site(data_root: Path) -> None:
    # every Svanstrom flight is new to one of the two models, which both still hear the site
    clips = [c for c in load_clips(data_root, ALL_SOURCES) if c.split != EXCLUDED]
    parts = [{c.path for c in part} for part in same_site_parts(clips)]
    assert not parts[0] & parts[1]
    svanstrom = [c for c in clips if c.is_drone and c.drone == "svanstrom"]
    assert all(sum(c.path in p for p in parts) == 1 for c in svanstrom)
    assert abs(sum(c.path in parts[0] for c in svanstrom) - len(svanstrom) / 2) <= 0.5
    site = [c for c in clips if c.source == "svanstrom-outdoor" and not c.is_drone]
    assert all(0 < sum(c.path not in p for c in site) < len(site) for p in parts)
    drones = [c for c in clips if c.is_drone]
    assert [{c.group for c in drones if c.drone == "phantom" and c.path in p} for p in parts] == [
        {"p1", "purdue_p2"}, {"wsu_p2"}]
    assert not any(c.drone in ("bebop", "mambo", "iris") for c in drones if c.path in parts[0] | parts[1])


def test_streets_are_a_hard_negative_not_field_ambience_and_frogs_a_pool_of_their_own(
        data_root: Path) -> None:
    from nightear.frontend import librosa_mel_basis
    from nightear_training.recipe import Recipe, load_bank

    clips = load_clips(data_root, ALL_SOURCES)
    picked = {k: next(c for c in clips if c.kind == k) for k in
              ("ambience:urban:road", "ambience:nature:wind", "ambience:frog:green-frog")}
    drone = next(c for c in clips if c.drone == "bebop" and c.split != EXCLUDED)
    recipe = Recipe()
    audio = load_bank([*picked.values(), drone], recipe.frontend)
    items = fold_items(Fold("bebop", ("bebop",)), [*picked.values(), drone], audio, recipe,
                       librosa_mel_basis(recipe.frontend))
    seconds = {k: len(audio[c.path]) / RATE for k, c in picked.items()}
    ambience = sum(s.seconds for s in items.streams)
    assert ambience == pytest.approx(seconds["ambience:nature:wind"] + seconds["ambience:frog:green-frog"])
    kinds = {k.name: k.seconds for k in items.kinds}
    assert kinds["urban and machinery"] == pytest.approx(seconds["ambience:urban:road"])
    assert kinds["frogs"] == pytest.approx(seconds["ambience:frog:green-frog"])
    assert [picked[k].pool for k in picked] == ["ambience", "ambience", "animals"]


def test_runs_of_two_seeds_can_score_the_same_held_out_recordings(data_root: Path) -> None:
    # the fainter copies' beds are drawn by a seed: by the recipe's, unless `items_seed` fixes it
    from dataclasses import replace

    from nightear.frontend import librosa_mel_basis
    from nightear_training.recipe import Recipe, load_bank

    clips = [c for c in load_clips(data_root, ALL_SOURCES) if c.split != EXCLUDED]
    folds = FOLDS[:1]
    beds = [c for c in held_out(folds[0], clips) if c.source == "ambience"]
    picked = [*[c for c in clips if c.drone == "bebop"][:2], *[c for c in clips if c.drone == "mambo"][:2],
              *beds[:2]]
    first = Recipe()
    second = replace(first, train=replace(first.train, seed=1))
    audio, mel_basis = load_bank(picked, first.frontend), librosa_mel_basis(first.frontend)

    def fainter_windows(recipe: Recipe, items_seed: int | None) -> list[np.ndarray]:
        (_, _, items), = fold_sets(recipe, picked, audio, mel_basis, folds, items_seed)
        return [r.windows for r in items.recordings if r.level_db < 0]

    same = zip(fainter_windows(first, None), fainter_windows(second, 0), strict=True)
    assert all(np.array_equal(a, b) for a, b in same)
    drawn = zip(fainter_windows(first, None), fainter_windows(second, None), strict=True)
    assert not all(np.array_equal(a, b) for a, b in drawn)


def test_event_score_is_the_highest_threshold_that_opens_an_event() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        probs = rng.uniform(0, 1, 30) ** 3
        s = event_score(probs)
        assert count_events([probs], s) >= 1
        assert count_events([probs], s + 1e-9) == 0
    smoothed = DecisionConfig(smooth_windows=3)
    probs = rng.uniform(0, 1, 40)
    s = event_score(probs, smoothed)
    assert count_events([probs], s - 1e-9, smoothed) >= 1 and count_events([probs], s + 1e-9, smoothed) == 0


def test_fainter_drone_is_quieter_and_loses_its_highs_in_the_bed() -> None:
    drone = WavSource(FIXTURES / "drone_bebop_16k.flac", RATE).read_all()
    bed = WavSource(FIXTURES / "night_background_16k.flac", RATE).read_all()
    bed = np.resize(bed, len(drone))
    assert fainter(drone, bed, 0, RATE) is drone  # as recorded: untouched
    quiet = fainter(drone, np.zeros_like(bed), -20, RATE)
    assert -22.0 < rms_db(quiet) - rms_db(drone) < -20.0  # spreading, plus a little absorption

    def high_share(y: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(y)) ** 2
        return float(power[len(power) // 2 :].sum() / power.sum())

    assert high_share(fainter(drone, np.zeros_like(bed), -30, RATE)) < 0.5 * high_share(drone)
    mixed = fainter(drone, bed, -10, RATE)
    assert rms_db(mixed - fainter(drone, np.zeros_like(bed), -10, RATE)) == pytest.approx(
        rms_db(drone) - 20.0, abs=0.1)  # the bed sits 20 dB under the recording


def test_poisson_interval_of_no_events_is_not_zero_per_hour() -> None:
    low, high = poisson_interval(0, 1.5)
    assert low == 0.0 and high == pytest.approx(3.689 / 1.5, abs=0.01)
    low, high = poisson_interval(3, 1.0)
    assert low == pytest.approx(0.619, abs=0.01) and high == pytest.approx(8.767, abs=0.01)


def test_sampler_draws_each_drone_as_often_whatever_its_clip_count() -> None:
    rng = np.random.default_rng(1)
    many = [np.full(RATE, 0.1, dtype=np.float32) for _ in range(200)]  # a toy with 200 clips
    one = [np.full(RATE * 5, -0.1, dtype=np.float32)]  # an outdoor drone with one recording
    bed = {"ambience": [(0.01 * rng.standard_normal(RATE * 3)).astype(np.float32)]}
    sampler = FieldSampler({"toy": many, "outdoor": one}, bed, 4000)
    signs = [np.sign(sampler._drone(rng).mean()) for _ in range(400)]
    assert 0.4 < np.mean(np.array(signs) > 0) < 0.6


def test_the_recipe_can_leave_the_noise_mixed_toys_out_of_its_positives(data_root: Path) -> None:

    from nightear_training.recipe import Recipe, field_sampler

    clips = load_clips(data_root, ("drone-audio-dataset",))
    mixed = [c for c in clips if c.kind == "drone:bebop:mixed"][:3]
    clean = [c for c in clips if c.kind == "drone:bebop:clean"][:2]
    chosen = mixed + clean + [c for c in clips if c.kind.startswith("esc50:")][:2]
    audio = {c.path: np.full(RATE * 2, 0.1 if c in mixed else -0.1, np.float32) for c in chosen}
    recipe = Recipe()
    assert len(field_sampler(recipe, chosen, audio, 0).drones[0].recordings) == 5


def test_low_alarm_share_counts_drones_heard_over_the_ambience_tail() -> None:
    rng = np.random.default_rng(0)
    ambience = [("ambience", 3600.0, rng.uniform(0.0, 0.8, 14400))]  # an hour, never over 0.8
    def scores(drone_score: float) -> dict[str, list]:  # type: ignore[type-arg]
        return {"recordings": [(f"r{i}", d, lvl, np.full(8, drone_score)) for i, d in enumerate(("a", "b"))
                               for lvl in (0, -10, -20, -30)],
                "streams": ambience, "kinds": [], "lab_clips": []}
    assert low_rate_share(scores(0.99)) == 1.0  # every drone over every low-alarm threshold
    assert low_rate_share(scores(0.6)) == 0.0  # drones inside the ambience's range: none heard


def test_epoch_is_chosen_on_the_low_alarm_end_not_on_one_point() -> None:
    bursts = [0.995, 0.985, 0.975, 0.965, 0.955, 0.945, 0.935, 0.925]  # an hour: 8 loud moments
    stream = np.concatenate([np.r_[np.zeros(100), np.full(20, b)] for b in bursts])
    ambience = [("ambience", 3600.0, stream)]
    def scores(faint: float) -> dict[str, list]:  # type: ignore[type-arg]
        recordings = [(f"r{i}", d, lvl, np.full(8, 0.999 if lvl == 0 else faint))
                      for i, d in enumerate(("a", "b")) for lvl in (0, -10, -20, -30)]
        return {"recordings": recordings, "streams": ambience, "kinds": [], "lab_clips": []}
    # at 1 alarm an hour (threshold 0.99) every epoch hears the same: the drones as recorded;
    # only epoch 12 hears the fainter ones at the thresholds for 4 and 8 an hour
    by_epoch = {8: scores(0.1), 12: scores(0.97), 16: scores(0.1)}
    assert choose(by_epoch, 1.0) == (12, 0.99)
    assert choose({8: scores(0.1), 12: scores(0.1)}, 1.0)[0] == 8  # a tie goes to the earlier


def test_the_threshold_resolves_the_top_of_the_curve() -> None:
    # 87 minutes of ambience with two loud moments, 0.9994 and 0.998: one alarm is allowed at
    # 1 an hour, so the threshold goes just over the second, and a drone at 0.9988 is heard
    stream = np.concatenate([np.zeros(10000), np.full(8, 0.9994), np.zeros(10000),
                             np.full(8, 0.998), np.zeros(880)])
    scores = {"recordings": [("r", "a", lvl, np.full(8, 0.9988)) for lvl in (0, -10, -20, -30)],
              "streams": [("ambience", 87 * 60.0, stream)], "kinds": [], "lab_clips": []}
    threshold = threshold_for_rate(false_alarms(scores)["curve"], 1.0)
    assert 0.998 < threshold < 0.9988
    assert table(scores, threshold)["pooled"]["0"] == {"heard": 1, "of": 1}


def test_held_out_recordings_are_rescored_under_the_decision_logic_asked_for() -> None:
    # a recording whose only loud moment is one window: a 2-s mean (the default) does not open
    # an event on it at 0.9, deciding on each window alone does; the scores keep the windows,
    # so an engineer can compare decision settings without training again
    burst = np.r_[np.full(20, 0.1), 0.99, np.full(20, 0.1)]
    scores = {"recordings": [("r", "a", lvl, burst) for lvl in (0, -10, -20, -30)],
              "streams": [("ambience", 3600.0, np.zeros(14400))], "kinds": [], "lab_clips": []}
    assert table(scores, 0.9)["pooled"]["0"] == {"heard": 0, "of": 1}
    per_window = DecisionConfig(smooth_windows=1, open_windows=1)
    assert table(scores, 0.9, per_window)["pooled"]["0"] == {"heard": 1, "of": 1}
    assert low_rate_share(scores, 1.0, per_window) == 1.0 and low_rate_share(scores) == 0.0


def test_a_drone_arriving_in_a_stream_is_averaged_with_the_ambience_before_it() -> None:
    # a recording loud in its first window only: scored alone, the 2-s mean starts afresh and
    # that window opens an event; arriving after ambience (scored 0.1), the mean holds it back;
    # a drone loud all through is heard either way
    ambience = np.full(14400, 0.1)
    first = np.r_[0.99, np.full(20, 0.1)]
    steady = np.full(21, 0.99)
    scores = {"recordings": [(name, group, lvl, p) for name, group, p in (("first", "a", first),
                                                                           ("steady", "b", steady))
                             for lvl in (0, -10, -20, -30)],
              "streams": [("ambience", 3600.0, ambience)], "kinds": [], "lab_clips": []}
    lead = DecisionConfig().smooth_windows - 1
    led_in = arriving(scores, lead)
    assert [len(p) for _, _, _, p in led_in["recordings"]] == [21 + 2 * lead] * 8
    assert all(np.array_equal(p, q) for (_, _, _, p), (_, _, _, q)  # the daemon's history by default
               in zip(arriving(scores)["recordings"], led_in["recordings"], strict=True))
    quiet = [("quiet", "c", lvl, np.full(21, 0.1)) for lvl in (0, -10, -20, -30)]
    one_stretch = np.r_[0.99, np.full(lead - 1, 0.1)]  # every lead-in starts with a loud window,
    loud_lead = arriving({**scores, "streams": [("ambience", 1.0, one_stretch)], "recordings": quiet}, lead)
    assert all(p[lead] == 0.99 for _, _, _, p in loud_lead["recordings"])
    assert table(loud_lead, 0.9)["drones"]["c"]["0"]["heard"] == 0  # which is not judged alone
    assert table(scores, 0.9)["drones"]["a"]["0"]["heard"] == 1
    assert table(led_in, 0.9)["drones"]["a"]["0"]["heard"] == 0
    assert table(led_in, 0.9)["drones"]["b"]["0"]["heard"] == 1
    assert led_in["streams"] is scores["streams"] and arriving(scores, 0) is scores
    short = arriving({**scores, "streams": [("ambience", 1.0, np.full(4, 0.1))]}, lead)  # joined, repeated
    assert table(short, 0.9)["drones"]["a"]["0"]["heard"] == 0
    with pytest.raises(ValueError, match="no scored ambience"):
        arriving({**scores, "streams": []}, lead)


def test_lab_split_counts_say_of_how_many_drone_and_background_clips() -> None:
    lab = [("a", "drone", 0.97), ("b", "drone", 0.5), ("c", "drone", 0.99), ("d", "background", 0.96),
           ("e", "background", 0.1)]
    scores = {"recordings": [("r", "a", lvl, np.zeros(10)) for lvl in (0, -10, -20, -30)],
              "streams": [("ambience", 3600.0, np.zeros(100))], "kinds": [], "lab_clips": lab}
    assert table(scores, 0.95)["lab_test_split"] == {
        "clips": 5, "accuracy": 0.6, "drone_clips": 3, "drone_clips_missed": 1, "background_clips_over": 1}
