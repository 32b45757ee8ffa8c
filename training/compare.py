"""Comparing recipes the way the field judges them, over seeds, and the fit check.

A recipe is judged by leave one outdoor site out (`heldout.SITE_FOLDS`: each site's drones, site
and microphone never heard), per recording through the daemon's decision logic, at the
threshold its own out-of-fold outdoor ambience sets for one false alarm an hour and at fixed
thresholds; two seeds of one recipe differ, so each recipe runs several seeds (in parallel
processes, one core each) and every figure is reported as mean and range. A change counts
only where it moves a figure beyond that range.

`fit`: the shipped model on what it trained on, counted the same way. A model that does not hear
its own outdoor recordings cannot hear new ones.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nightear.decision import DEFAULT_HOP_SECONDS, EARLIER_HOP_SECONDS, DecisionConfig, rescaled
from nightear.frontend import MelBasis, librosa_mel_basis
from nightear_training.data import (
    ALL_SOURCES,
    DRONE_AUDIO_DATASET,
    EXCLUDED,
    Clip,
    lab_test_clips,
    load_clips,
)
from nightear_training.evaluate import threshold_for_rate
from nightear_training.heldout import (
    SITE_FOLDS,
    TOY_FOLDS,
    leave_one_drone_out,
    recording_windows,
    recordings,
    scored,
)
from nightear_training.per_recording import (
    Scores,
    event_score,
    false_alarms,
    open_delays,
    range_curve,
    table,
    thinned,
    threshold_setters,
)
from nightear_training.recipe import RECIPES, Recipe, load_bank, train_recipe
from nightear_training.train import torch_scorer

FIXED_THRESHOLDS = (0.9, 0.95)  # beside each seed's own 1/h threshold: comparable across runs
FIT_STRICT_THRESHOLD = 0.99  # where held-out thresholds for one false alarm an hour land
FOLD_SETS = {"sites": SITE_FOLDS, "all": (*TOY_FOLDS, *SITE_FOLDS)}


def figures(scores: Scores, threshold: float,
            decision: DecisionConfig = DecisionConfig()) -> dict[str, object]:
    """What the field would see at `threshold`: outdoor drones heard per site and level, the
    range curve, negatives with an event, false alarms per hour per kind, the recordings that
    set the threshold."""
    at = table(scores, threshold, decision)
    return {
        "threshold": round(threshold, 5),
        "drones": {g: {lvl: f"{v['heard']}/{v['of']}" for lvl, v in levels.items()}
                   for g, levels in at["drones"].items()},
        "share_by_level": at["mean_share_over_drones"],
        "gunhoo_range": range_curve(scores, threshold, decision=decision),
        "helicopters": f"{at['helicopters']['with_event']}/{at['helicopters']['of']}",
        "backgrounds": f"{at['backgrounds']['with_event']}/{at['backgrounds']['of']}",
        "ambience": at["ambience"],
        "hard_negatives_per_hour": {k: v["events_per_hour"] for k, v in at["hard_negatives"].items()},
        "threshold_setters": threshold_setters(scores, threshold, decision=decision),
    }


def seed_run(recipe_name: str, seed: int, folds: str, out_dir: Path, data_root: Path | None = None,
             threads: int = 1) -> dict[str, object]:
    """One seed of a recipe through leave one site out; raw scores pickled beside the summary.
    `folds="fit"` holds nothing out: one model on every set, counted on its own recordings (the
    fit check at fixed thresholds, a quarter of the time)."""
    base = RECIPES[recipe_name]
    recipe = replace(base, train=replace(base.train, seed=seed, threads=threads))
    clips = load_clips(data_root, ALL_SOURCES)
    audio = load_bank(clips, recipe.frontend)
    mel_basis = librosa_mel_basis(recipe.frontend)
    started = time.perf_counter()
    log_path = out_dir / f"{recipe_name}-seed{seed}.log"
    with log_path.open("w") as log_file:
        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        if folds == "fit":
            usable = [c for c in clips if c.split != EXCLUDED]
            model, _, _ = train_recipe(recipe, usable, [], audio, mel_basis, log=log)
            own = fit_scores(torch_scorer(model), usable, audio, recipe, mel_basis)
            figures_at = {f"fit_at_{t}": fit_at(own, t) for t in (*FIXED_THRESHOLDS, FIT_STRICT_THRESHOLD)}
        else:
            run = leave_one_drone_out(recipe, clips, audio, mel_basis, (recipe.train.epochs,), 1.0,
                                      FOLD_SETS[folds], log=log, items_seed=0)
            scores = run.pop("scores")[int(run["chosen_epoch"])]
            (out_dir / f"{recipe_name}-seed{seed}.pkl").write_bytes(pickle.dumps(scores))
            figures_at = {"at_1_per_hour": figures(scores, float(run["threshold"])),
                          **{f"at_{t}": figures(scores, t) for t in FIXED_THRESHOLDS}}
    summary = {"recipe": recipe_name, "seed": seed, "folds": folds,
               "minutes": round((time.perf_counter() - started) / 60, 1), **figures_at}
    (out_dir / f"{recipe_name}-seed{seed}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _seed_run_args(args: tuple) -> dict[str, object]:
    return seed_run(*args)


def compare(recipe_names: Sequence[str], seeds: Sequence[int], out_dir: Path, folds: str = "sites",
            data_root: Path | None = None, processes: int = 2,
            log: Callable[[str], None] = print) -> dict[str, object]:
    """Every recipe at every seed (`processes` at a time, one core each), then each figure's
    mean and range over the seeds, per recipe: written to `out_dir/compare.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed, folds, out_dir, data_root) for name in recipe_names for seed in seeds]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        runs = []
        for summary in pool.imap_unordered(_seed_run_args, jobs):
            first = summary.get("at_1_per_hour") or summary[f"fit_at_{FIXED_THRESHOLDS[-1]}"]
            log(f"{summary['recipe']} seed {summary['seed']}: {summary['minutes']} min, "
                f"{first.get('share_by_level') or first.get('outdoor')} at {first['threshold']}")
            runs.append(summary)
    result = {name: spread([r for r in runs if r["recipe"] == name]) for name in recipe_names}
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def spread(runs: Sequence[dict]) -> dict[str, object]:
    """Each numeric figure (and each `heard/of` count) over seeds: mean, min and max."""
    flat = [_flatten(r) for r in sorted(runs, key=lambda r: r["seed"])]
    out: dict[str, object] = {"seeds": [r["seed"] for r in sorted(runs, key=lambda r: r["seed"])]}
    for key in flat[0] if flat else []:
        values = [f.get(key) for f in flat]
        if all(isinstance(v, float | int) for v in values):
            out[key] = {"mean": round(float(np.mean(values)), 3), "min": min(values), "max": max(values)}
    return out


def recipe_spreads(summaries: Sequence[dict]) -> dict[str, dict[str, object]]:
    """Per recipe, the `spread` of its leave-one-site-out summaries and of its fit summaries
    (`--folds fit`) in one mapping: `seeds` are the former's, `fit_seeds` the latter's."""
    out: dict[str, dict[str, object]] = {}
    for name in sorted({s["recipe"] for s in summaries}):
        merged: dict[str, object] = {"seeds": []}
        for folds in sorted({s.get("folds", "sites") for s in summaries if s["recipe"] == name}):
            part = spread([s for s in summaries if s["recipe"] == name and s.get("folds", "sites") == folds])
            merged["fit_seeds" if folds == "fit" else "seeds"] = part.pop("seeds")
            merged.update(part)
        out[name] = merged
    return out


def _flatten(tree: object, prefix: str = "") -> dict[str, float]:
    """A summary's numbers by dotted path; a `heard/of` count as two numbers (`path`, `path.of`)."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, str) and "/" in tree and tree.replace("/", "").isdigit():
        heard, of = (int(x) for x in tree.split("/"))
        out[prefix.rstrip(".")] = heard
        out[prefix.rstrip(".") + ".of"] = of
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out[prefix.rstrip(".")] = tree
    return out


def hop_comparison(scores: Scores, every: Sequence[int] = (1, 2), target_per_hour: float = 1.0,
                   window_seconds: float = 1.0) -> dict[str, object]:
    """A stored run's figures had the unit scored one window in `k` (the classifier's cost over
    `k`), for each `k`: its own threshold for `target_per_hour` and the fixed ones, the drones
    heard, false alarms, and how long each heard recording waits for its alert (median, p90);
    the decision logic over the same seconds at every hop."""
    stored_hop = float(scores.get("hop_seconds", EARLIER_HOP_SECONDS))
    out: dict[str, object] = {}
    for k in every:
        hop = stored_hop * k
        run, decision = thinned(scores, k), rescaled(DecisionConfig(), DEFAULT_HOP_SECONDS, hop)
        own = threshold_for_rate(false_alarms(run, decision=decision)["curve"], target_per_hour)
        row: dict[str, object] = {"hop_seconds": hop, "decision": {
            "smooth_windows": decision.smooth_windows, "close_windows": decision.close_windows}}
        for name, t in (("at_1_per_hour", own), *((f"at_{t}", t) for t in FIXED_THRESHOLDS)):
            delays = open_delays(run, t, hop, window_seconds, decision)
            row[name] = {**figures(run, t, decision),
                         "open_delay_s": {"recordings": len(delays),
                                          "median": float(np.median(delays)) if delays else None,
                                          "p90": float(np.percentile(delays, 90)) if delays else None}}
        out[f"hop_{hop:g}_s"] = row
    return out


def fit(score: Callable[[np.ndarray], np.ndarray], trained: Sequence[Clip], audio: dict[Path, np.ndarray],
        recipe: Recipe, mel_basis: MelBasis, threshold: float) -> dict[str, object]:
    """The model on the drone recordings it trained on, as recorded: per recording for the
    outdoor sets, per group of 1-s clips for the toys (each joined, as `heldout.recordings`
    joins them), an event or not through the daemon's decision logic at `threshold`; and the
    lab test split per clip by its mean window probability, when it was trained on."""
    return fit_at(fit_scores(score, trained, audio, recipe, mel_basis), threshold)


@dataclass(frozen=True)
class FitScores:
    """What `fit` counts, before a threshold: per drone each recording's (name, event score);
    each lab test clip's (is a drone, mean window probability)."""

    drones: dict[str, list[tuple[str, float]]]
    lab: list[tuple[bool, float]]


def fit_scores(score: Callable[[np.ndarray], np.ndarray], trained: Sequence[Clip],
               audio: dict[Path, np.ndarray], recipe: Recipe, mel_basis: MelBasis) -> FitScores:
    """What `fit` counts, scored once: each trained recording's event score (the highest
    smoothed score the decision sees) and each lab clip's mean, to be read at any threshold."""
    usable = [c for c in trained if c.split != EXCLUDED]
    drones: dict[str, list[tuple[str, float]]] = {}
    for drone in sorted({c.drone for c in usable if c.is_drone}):
        drones[drone] = [
            (name, event_score(scored(score, recording_windows(y, recipe, mel_basis))))
            for name, y in recordings([c for c in usable if c.is_drone and c.drone == drone], audio,
                                      recipe.frontend.sample_rate)]
    lab = [(c.is_drone, float(scored(score, recording_windows(audio[c.path], recipe, mel_basis)).mean()))
           for c in lab_test_clips(usable)]
    return FitScores(drones, lab)


def fit_at(scores: FitScores, threshold: float) -> dict[str, object]:
    """`fit_scores` read at `threshold`: heard per drone, outdoor in all, lab accuracy."""
    out: dict[str, dict[str, object]] = {}
    for drone, recorded in scores.drones.items():
        out[drone] = {"heard": sum(s >= threshold for _, s in recorded), "of": len(recorded),
                      "missed": [n for n, s in recorded if s < threshold][:20]}
    outdoor = [v for d, v in out.items() if d not in ("bebop", "mambo")]
    result: dict[str, object] = {
        "threshold": threshold, "drones": out,
        "outdoor": {"heard": sum(int(v["heard"]) for v in outdoor), "of": sum(int(v["of"]) for v in outdoor)},
    }
    if scores.lab:
        right = sum(int((mean >= threshold) == is_drone) for is_drone, mean in scores.lab)
        result["lab_test_split"] = {"clips": len(scores.lab), "accuracy": round(right / len(scores.lab), 4)}
    return result


def fit_of_file(model_path: Path, data_root: Path | None = None,
                sources: tuple[str, ...] | None = None) -> dict[str, object]:
    """`fit` of a model file on the shared sets it names as its training sources (or those of
    them given), at its own threshold, scored by the daemon's classifier (INT8 as shipped)."""
    from nightear.classifier import OnnxClassifier

    classifier = OnnxClassifier(model_path)
    trained = tuple(json.loads(classifier.info.metadata.get("training_sources", "null"))
                    or (DRONE_AUDIO_DATASET,))
    sources = tuple(s for s in trained if sources is None or s in sources)
    recipe = RECIPES["field"]
    clips = load_clips(data_root, sources)
    audio = load_bank(clips, recipe.frontend)
    return fit(classifier.score, clips, audio, recipe, librosa_mel_basis(recipe.frontend),
               classifier.info.threshold)


def file_on_site(model_path: Path, site: str, data_root: Path | None = None) -> dict[str, object]:
    """A model file on one outdoor site's fold of the leave-one-site-out evaluation, at its own
    threshold: held out only for a model that never trained on that site (3.4.0 never heard
    gunhoo-outdoor). Its ambience figures mean little: the fold's share of the other negatives
    may have been trained on."""
    from nightear.classifier import OnnxClassifier
    from nightear_training.heldout import fold_items, held_out, score_items

    fold = next(f for f in SITE_FOLDS if f.name == site)
    classifier = OnnxClassifier(model_path)
    recipe = RECIPES["field"]
    clips = load_clips(data_root, ALL_SOURCES)
    audio = load_bank(clips, recipe.frontend)
    items = fold_items(fold, held_out(fold, clips, SITE_FOLDS), audio, recipe,
                       librosa_mel_basis(recipe.frontend), seed=0)
    return {"model": classifier.info.version, "site": site,
            **figures(score_items(classifier.score, items), classifier.info.threshold)}

