"""Leave one drone out: how the recipe hears drones, sites and microphones it never met.

The field judges a model per recording (an event or not, through the daemon's decision logic),
at the shipped threshold, against false alarms per hour of real ambience. This module measures
exactly that, with models that never trained on what they are tested on:

- four folds, each trained without one drone: DroneAudioDataset's Bebop, its Mambo,
  svanstrom-outdoor (the whole source: its drones, site and microphone) and purdue-outdoor (its
  Phantoms and its Iris, and the whole site); every other negative group is held out in one of
  the four folds by a hash of its name, so every minute of ambience is scored out of fold;
- each held-out drone recording as recorded, and 10, 20 and 30 dB fainter: the extra distance
  that spreading needs for that loss, with the air's absorption over it (a low-pass), mixed into
  held-out ambience 20 dB under the recording's own level;
- helicopters and outdoor backgrounds per recording, held-out ambience (the ambience source but
  its streets and machinery, the outdoor sites' backgrounds, ESC-50's outdoor soundscapes)
  joined into streams for false alarms per hour with a Poisson 95% interval, and hard
  negatives per kind;
- scored after several epochs of the same run, so epochs and threshold are chosen here and not
  on validation AUC of mostly indoor clips.

Beside it, `same_site`: new flights of the outdoor makes trained on, at their own site and
microphone, each counted by a model that missed that flight but heard the others.

How the scores are counted (per recording, per hour, the low-alarm share) is
`per_recording`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nightear.decision import DEFAULT_HOP_SECONDS
from nightear.frontend import MelBasis, log_mel
from nightear_training.data import AMBIENCE, EXCLUDED, Clip, hash_fraction, lab_test_clips
from nightear_training.evaluate import threshold_for_rate
from nightear_training.features import clip_windows, eval_hop_frames, pad_to
from nightear_training.model import DroneCNN
from nightear_training.per_recording import (
    LEVELS_DB,
    Scores,
    arriving,
    choose,
    false_alarms,
    low_rate_share,
    range_curve,
    table,
)
from nightear_training.propagation import absorb, rms_db
from nightear_training.recipe import Recipe, train_recipe
from nightear_training.signals import background_stream, random_crop
from nightear_training.train import torch_scorer

RECORDED_AT_M = 50.0  # assumed distance of a recorded drone: -10 dB is 108 m further, -30 dB 1.5 km
BED_BELOW_DB = 20.0  # held-out ambience under the recording's own RMS level
MAX_RECORDINGS_PER_DRONE = 60  # the indoor toys have hundreds: scoring them all buys nothing
MIN_RECORDING_SECONDS = 3.0  # shorter clips (1-s DroneAudioDataset chunks) are joined by group
SEGMENT_SECONDS = 5.0  # joined short clips are cut into recordings this long: a session of 140
# one-second clips counts as 28 recordings, not as one that any 2-s stretch decides
ESC50_OUTDOOR = ("wind", "rain", "thunderstorm", "sea_waves", "crackling_fire", "water_drops",
                 "crickets", "insects", "frog", "chirping_birds", "crow", "airplane", "train")
# Ambience a border post does not hear at night, scored apart as hard negatives and not in the
# hour of ambience the threshold is chosen on: streets and traffic (a siting matter: a unit is
# not put beside a road), a carousel and a building site (shut at night), a beehive (bees stay
# in the hive at night; its hum carries a few metres), wind chimes, and white, pink and brown
# noise (no outdoor sound). Nature, wind, rain, animals, frogs, a village at night, trains,
# airplanes and boats pass a border post at night: they set the threshold.
NOT_FIELD_AMBIENCE = ("ambience:urban:", "ambience:places:carousel",
                      "ambience:places:construction-site", "ambience:things:", "ambience:noise:",
                      "ambience:animals:beehive")
HARD_NEGATIVES = {  # kind of sound -> the data's kinds that hold it
    "helicopter": ("helicopter", "esc50:helicopter"),
    "airplane": ("esc50:airplane", "ambience:transport:airplane"),
    "engine": ("esc50:engine",),
    "train": ("esc50:train", "ambience:transport:train"),
    "chainsaw": ("esc50:chainsaw",),
    "insects": ("esc50:insects",),
    "beehive": ("ambience:animals:beehive",),
    "synthetic noise": ("ambience:noise:",),
    "crickets": ("esc50:crickets", "ambience:animals:crickets"),
    "frogs": ("esc50:frog", "ambience:animals:frog", "ambience:frog:"),
    "urban and machinery": ("ambience:urban:", "ambience:places:carousel",
                            "ambience:places:construction-site", "ambience:things:"),
    "esc50 outdoor clips": tuple(f"esc50:{k}" for k in ESC50_OUTDOOR),
    "rooms and fans": ("background:indoor", "noise:"),
}


@dataclass(frozen=True)
class Fold:
    """One model of the evaluation: trained without these drones and whole sources."""

    name: str
    drones: tuple[str, ...]  # Clip.drone values held out
    sources: tuple[str, ...] = ()  # sources held out whole (their site and microphone too)


SITE_FOLDS = (  # each outdoor site held out whole: its drones, its site and its microphone
    Fold("svanstrom", ("svanstrom",), ("svanstrom-outdoor",)),
    Fold("purdue", ("phantom", "iris"), ("purdue-outdoor",)),
    Fold("gunhoo", ("gunhoo",), ("gunhoo-outdoor",)),
)
TOY_FOLDS = (Fold("bebop", ("bebop",)), Fold("mambo", ("mambo",)))  # reported apart
FOLDS = (*TOY_FOLDS, *SITE_FOLDS)


def fold_of_negative(clip: Clip, folds: Sequence[Fold] = FOLDS) -> str:
    """The fold that holds out a negative: its source's fold, else one by hash of its group."""
    for fold in folds:
        if clip.source in fold.sources:
            return fold.name
    return folds[int(hash_fraction(f"heldout/{clip.source}/{clip.group}") * len(folds))].name


def held_out(fold: Fold, clips: Sequence[Clip], folds: Sequence[Fold] = FOLDS) -> list[Clip]:
    """What `fold`'s model never hears: its drones, its sources, its share of the negatives."""
    return [c for c in clips if c.source in fold.sources
            or (c.is_drone and c.drone in fold.drones)
            or (not c.is_drone and fold_of_negative(c, folds) == fold.name)]


def fainter(recording: np.ndarray, bed: np.ndarray, level_db: float, sample_rate: int) -> np.ndarray:
    """A recording `level_db` fainter as a drone further away would be (spreading and the air's
    absorption over the extra distance), in `bed` (same length) 20 dB under its own level."""
    if level_db == 0:
        return recording
    extra_m = RECORDED_AT_M * (10.0 ** (-level_db / 20.0) - 1.0)
    y = absorb(recording, extra_m, sample_rate) * np.float32(10.0 ** (level_db / 20.0))
    gain = 10.0 ** ((rms_db(recording) - BED_BELOW_DB - rms_db(bed)) / 20.0)
    return (y + bed * np.float32(gain)).astype(np.float32)


@dataclass
class Item:
    """One thing scored: a recording at a level, or a stream of ambience; its windows' features."""

    name: str
    group: str  # a drone, "helicopter", "background", or a stream's source
    level_db: int
    seconds: float
    windows: np.ndarray  # (k, n_mels, frames)
    kinds: tuple[str, ...] = ()


def recordings(clips: Sequence[Clip], audio: dict[Path, np.ndarray],
               rate: int) -> list[tuple[str, np.ndarray]]:
    """Whole recordings: a file, or a group's short clips joined in order."""
    out: list[tuple[str, np.ndarray]] = []
    short: dict[tuple[str, str], list[np.ndarray]] = {}
    for c in sorted(clips, key=lambda c: (c.source, c.group, c.relpath)):
        if len(audio[c.path]) >= MIN_RECORDING_SECONDS * rate:
            out.append((f"{c.source}/{c.relpath}", audio[c.path]))
        else:
            short.setdefault((c.source, c.group), []).append(audio[c.path])
    step = int(SEGMENT_SECONDS * rate)
    for (source, group), parts in short.items():
        joined = np.concatenate(parts)
        # a rest shorter than half a segment joins the last piece
        ends = [k * step for k in range(1, max(1, round(len(joined) / step)))] + [len(joined)]
        pieces = [joined[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        out += [(f"{source}/{group}" + (f"#{k}" if len(pieces) > 1 else ""), piece)
                for k, piece in enumerate(pieces)]
    return out


@dataclass
class FoldItems:
    """Everything one fold's model is scored on."""

    fold: str
    recordings: list[Item] = field(default_factory=list)  # drones (every level) and negatives
    streams: list[Item] = field(default_factory=list)  # ambience for false alarms per hour
    kinds: list[Item] = field(default_factory=list)  # hard negatives, one stream per kind
    lab_clips: list[Item] = field(default_factory=list)  # DroneAudioDataset test split, per clip


def recording_windows(y: np.ndarray, recipe: Recipe, mel_basis: MelBasis) -> np.ndarray:
    """A recording's windows (k, n_mels, frames), cut as the daemon cuts them."""
    fe, width = recipe.frontend, recipe.train.window_frames
    return clip_windows(log_mel(pad_to(y, fe.samples_for_frames(width)), fe, mel_basis), width,
                        eval_hop_frames(fe))


def scored(score: Callable[[np.ndarray], np.ndarray], windows: np.ndarray) -> np.ndarray:
    """Window probabilities, scored 512 windows at a time (a long recording's windows at once
    would hold the network's activations for all of them)."""
    return np.concatenate([score(windows[i : i + 512]) for i in range(0, len(windows), 512)])


def fold_items(fold: Fold, held: Sequence[Clip], audio: dict[Path, np.ndarray], recipe: Recipe,
               mel_basis: MelBasis, seed: int = 0) -> FoldItems:
    """Cut the held-out clips of one fold into the items it is scored on (features once)."""
    rate = recipe.frontend.sample_rate
    rng = np.random.default_rng(seed)

    def windows(y: np.ndarray) -> np.ndarray:
        return recording_windows(y, recipe, mel_basis)

    items = FoldItems(fold.name)
    ambience = [audio[c.path] for c in held if c.source == AMBIENCE] or [
        audio[c.path] for c in held if not c.is_drone]
    for drone in fold.drones:
        members = recordings([c for c in held if c.is_drone and c.drone == drone
                              and c.split != EXCLUDED], audio, rate)
        uncertain = recordings([c for c in held if c.is_drone and c.drone == drone
                                and c.split == EXCLUDED], audio, rate)
        if len(members) > MAX_RECORDINGS_PER_DRONE:
            members = [members[i] for i in sorted(rng.permutation(len(members))[:MAX_RECORDINGS_PER_DRONE])]
        for group, chosen in ((drone, members), (f"{drone} (uncertain)", uncertain)):
            for name, y in chosen:
                bed = random_crop(ambience[rng.integers(len(ambience))], len(y), rng)
                for level in LEVELS_DB:
                    items.recordings.append(Item(name, group, level, len(y) / rate,
                                                 windows(fainter(y, bed, level, rate))))
    negatives = [c for c in held if not c.is_drone and c.split != EXCLUDED]
    for kind, group in (("helicopter", "helicopter"), ("esc50:helicopter", "helicopter"),
                        ("background", "background"), ("background:site", "background")):
        for name, y in recordings([c for c in negatives if c.kind == kind], audio, rate):
            items.recordings.append(Item(name, group, 0, len(y) / rate, windows(y)))
    # the threshold's hour: continuous outdoor recordings, each its own stream (named, so the
    # recordings that set a threshold can be told); 1-s clips and indoor rooms are hard negatives
    streams = {
        AMBIENCE: [c for c in negatives if c.source == AMBIENCE
                   and not c.kind.startswith(NOT_FIELD_AMBIENCE)],
        "outdoor sites": [c for c in negatives if c.pool == "outdoor" and not c.kind.endswith(":indoor")
                          and len(audio[c.path]) >= MIN_RECORDING_SECONDS * rate],
    }
    for source, members in streams.items():
        for c in members:
            y = audio[c.path]
            items.streams.append(Item(f"{c.source}/{c.relpath}", source, 0, len(y) / rate, windows(y)))
    for c in lab_test_clips(held):  # the lab task: its grouped test split, each clip out of fold
        items.lab_clips.append(Item(c.relpath, c.label, 0, len(audio[c.path]) / rate,
                                    windows(audio[c.path])))
    for kind, prefixes in HARD_NEGATIVES.items():
        members = [c for c in negatives if c.kind.startswith(prefixes)]
        if members:
            y = background_stream([audio[c.path] for c in members])
            items.kinds.append(Item(kind, kind, 0, len(y) / rate, windows(y)))
    return items


def score_items(score: Callable[[np.ndarray], np.ndarray], items: FoldItems) -> Scores:
    """Window probabilities of every item by one model (recordings, streams, kinds), and each
    lab clip's mean: the decision logic is applied later, so any settings can be rescored."""
    def probs(item: Item) -> np.ndarray:
        return scored(score, item.windows)

    return {
        "recordings": [(r.name, r.group, r.level_db, probs(r)) for r in items.recordings],
        "streams": [(s.group, s.seconds, probs(s)) for s in items.streams],
        "stream_names": [s.name for s in items.streams],
        "kinds": [(k.group, k.seconds, probs(k)) for k in items.kinds],
        "lab_clips": [(c.name, c.group, float(probs(c).mean())) for c in items.lab_clips],
        "hop_seconds": DEFAULT_HOP_SECONDS,  # windows cut as the unit cuts them (`eval_hop_frames`)
    }


def merge(scores: Sequence[Scores]) -> Scores:
    """The folds' scores as one out-of-fold set."""
    hop = next((s["hop_seconds"] for s in scores if "hop_seconds" in s), DEFAULT_HOP_SECONDS)
    return {**{key: [x for s in scores for x in s.get(key, [])]
               for key in ("recordings", "streams", "stream_names", "kinds", "lab_clips")},
            "hop_seconds": hop}


def fold_sets(recipe: Recipe, clips: Sequence[Clip], audio: dict[Path, np.ndarray], mel_basis: MelBasis,
              folds: Sequence[Fold] = FOLDS, items_seed: int | None = None,
              ) -> list[tuple[Fold, list[Clip], FoldItems]]:
    """Per fold: the clips its model trains on (every group but the fold's) and its items (the
    recordings drawn and made fainter with `items_seed`, by default the recipe's seed)."""
    usable = [c for c in clips if c.split != EXCLUDED]
    seed = recipe.train.seed if items_seed is None else items_seed
    out = []
    for fold in folds:
        held = held_out(fold, clips, folds)
        held_paths = {c.path for c in held}
        train_clips = [c for c in usable if c.path not in held_paths]
        if any(c.is_drone for c in held) and any(c.is_drone for c in train_clips):
            out.append((fold, train_clips, fold_items(fold, held, audio, recipe, mel_basis, seed=seed)))
    return out


def leave_one_drone_out(
    recipe: Recipe, clips: Sequence[Clip], audio: dict[Path, np.ndarray], mel_basis: MelBasis,
    epochs: Sequence[int], target_per_hour: float = 1.0, folds: Sequence[Fold] = FOLDS,
    log: Callable[[str], None] = print, items_seed: int | None = None,
) -> dict[str, object]:
    """Train one model per fold on every group but the fold's, score its held-out items after
    each of `epochs`; choose the epoch and threshold; return the figures at that choice and the
    per-epoch summaries (`scores` holds every scored epoch's raw out-of-fold scores, by epoch,
    for other thresholds). `items_seed` draws the held-out recordings apart from the training
    seed: runs of several seeds then score the very same recordings, to compare or average."""
    by_epoch: dict[int, list[Scores]] = {e: [] for e in epochs}
    trained: dict[str, int] = {}
    for fold, train_clips, items in fold_sets(recipe, clips, audio, mel_basis, folds, items_seed):
        trained[fold.name] = len(train_clips)
        log(f"leave {fold.name} out: {len(train_clips)} training clips, {len(items.recordings)} "
            f"held-out recordings, {sum(s.seconds for s in items.streams) / 60:.1f} min of ambience")

        def on_epoch(epoch: int, model: DroneCNN, items: FoldItems = items) -> None:
            if epoch in by_epoch:
                by_epoch[epoch].append(score_items(torch_scorer(model), items))

        train_recipe(recipe, train_clips, [], audio, mel_basis, log=log, on_epoch=on_epoch)
    merged = {e: merge(s) for e, s in by_epoch.items() if s}
    return {"folds": trained, **summarise(merged, target_per_hour, log)}


def summarise(merged: dict[int, Scores], target_per_hour: float,
              log: Callable[[str], None] = print) -> dict[str, object]:
    """Out-of-fold scores by epoch -> the chosen epoch and threshold, the figures there and by
    epoch (`scores` keeps every epoch's raw scores, for other thresholds)."""
    epoch, threshold = choose(merged, target_per_hour)
    fa = false_alarms(merged[epoch])
    summary: dict[str, dict[str, object]] = {}
    for e, scores in merged.items():
        t = threshold_for_rate(false_alarms(scores)["curve"], target_per_hour)
        row = table(scores, t)
        summary[str(e)] = {"threshold": row["threshold"], "pooled": row["pooled"],
                           "mean_share_over_drones": row["mean_share_over_drones"],
                           "helicopters": row["helicopters"], "ambience": row["ambience"],
                           "low_alarm_share": low_rate_share(scores, target_per_hour),
                           "low_alarm_share_arriving": low_rate_share(arriving(scores), target_per_hour)}
        log(f"epoch {e}: threshold {t:.4f}, low-alarm share {summary[str(e)]['low_alarm_share']}, "
            f"heard {row['mean_share_over_drones']}, "
            f"helicopters {row['helicopters']}, ambience {row['ambience']}")
    return {
        "epochs_scored": list(merged), "chosen_epoch": epoch,
        "target_per_hour": target_per_hour, "threshold": round(threshold, 5),
        "at_threshold": table(merged[epoch], threshold), "false_alarm_curve": fa,
        "at_threshold_arriving": table(arriving(merged[epoch]), threshold),
        "by_epoch": summary, "scores": merged,
    }


# Same site, other recordings: outdoor drones whose make, site and microphone the model trained
# on, but not these recordings (new flights of a campaign it learnt from). Two models, each
# without one part: Svanstrom's recordings and gunhoo-outdoor's sessions alternately by a hash of
# their group, the Phantom's sessions P1 and Purdue's P2 against WSU's P2 (LGgram's single flight
# always trained), and a quarter of the negatives by group.
SAME_SITE_PARTS = (("p1", "purdue_p2"), ("wsu_p2",))
SAME_SITE_ALTERNATE = ("svanstrom", "gunhoo")  # drones whose groups alternate between the parts


def same_site_parts(clips: Sequence[Clip]) -> list[list[Clip]]:
    """The clips each same-site model never hears: its outdoor drone recordings and a quarter
    of the negatives (usable clips only)."""
    usable = [c for c in clips if c.split != EXCLUDED]
    alternate: list[set[Path]] = [set() for _ in SAME_SITE_PARTS]
    for drone in SAME_SITE_ALTERNATE:
        groups = sorted({c.group for c in usable if c.is_drone and c.drone == drone},
                        key=lambda g: hash_fraction(f"samesite/{g}"))
        for c in usable:
            if c.is_drone and c.drone == drone:
                alternate[groups.index(c.group) % len(SAME_SITE_PARTS)].add(c.path)
    parts = []
    for k, phantom_groups in enumerate(SAME_SITE_PARTS):
        parts.append([c for c in usable if c.path in alternate[k]
                      or (c.is_drone and c.drone == "phantom" and c.group in phantom_groups)
                      or (not c.is_drone and k / 4 <= hash_fraction(f"samesite/{c.source}/{c.group}")
                          < (k + 1) / 4)])
    return parts


def same_site(recipe: Recipe, clips: Sequence[Clip], audio: dict[Path, np.ndarray],
              mel_basis: MelBasis, epoch: int, threshold: float,
              log: Callable[[str], None] = print) -> dict[str, object]:
    """Recordings heard of flights of trained makes at trained sites, each by a model trained to
    `epoch` without it, at `threshold`; with the ambience those models never heard."""
    usable = [c for c in clips if c.split != EXCLUDED]
    fold = Fold("same site", ("svanstrom", "phantom", "gunhoo"))
    scores = []
    for held in same_site_parts(clips):
        paths = {c.path for c in held}
        train_clips = [c for c in usable if c.path not in paths]
        items = fold_items(fold, held, audio, recipe, mel_basis, seed=0)
        log(f"same site: {len(train_clips)} training clips, {len(items.recordings)} held-out recordings")
        model, _, _ = train_recipe(recipe.stopped_after(epoch), train_clips, [], audio, mel_basis, log)
        scores.append(score_items(torch_scorer(model), items))
    merged = merge(scores)
    at = table(merged, threshold)
    kept = ("drones", "pooled", "mean_share_over_drones", "ambience", "helicopters", "backgrounds")
    return {"epoch": epoch, "threshold": threshold, **{k: at[k] for k in kept},
            "gunhoo_range": range_curve(merged, threshold)}
