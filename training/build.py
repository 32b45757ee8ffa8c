"""One call that rebuilds a model from the shared data and measures it the way the field will:

leave one drone out (four models, each never hearing one drone, site or microphone, nor a
quarter of the ambience) -> the epoch and the threshold for the target false alarms per hour,
chosen on what they never heard -> the shipped model trained on every group to that epoch ->
ONNX with metadata -> INT8 -> INT8-vs-FP32 check -> the test split (per source, per kind),
recall against SNR and distance, alert latency -> metrics JSON, model card and report.
`build()` with the defaults makes the shipped model.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from nightear.classifier import OnnxClassifier
from nightear.decision import DEFAULT_HOP_SECONDS, DecisionConfig
from nightear.frontend import librosa_mel_basis
from nightear_training import card, report
from nightear_training.compare import figures, fit
from nightear_training.data import (
    ALL_SOURCES,
    EXCLUDED,
    Clip,
    load_clips,
    manifest_sha256,
    split_summary,
)
from nightear_training.evaluate import accuracy_threshold, evaluate_model
from nightear_training.export import export_onnx, model_metadata
from nightear_training.quantize import quantize_int8
from nightear_training.recipe import (
    DEFAULT_RECIPE,
    RECIPES,
    Recipe,
    clip_log_mels,
    field_sampler,
    load_bank,
    train_recipe,
)
from nightear_training.train import SampledBatches, clip_probabilities, torch_scorer

MODEL_NAME = "nightear-drone"
MODEL_VERSION = "4.1.0"
CALIBRATION_WINDOWS = 512
@dataclass(frozen=True)
class BuildConfig:
    out_dir: Path = Path("models")
    name: str = MODEL_NAME
    version: str = MODEL_VERSION
    data_root: Path | None = None
    sources: tuple[str, ...] = ALL_SOURCES
    max_clips_per_split: int | None = None  # a tiny build for notebooks and CI
    recipe_name: str = DEFAULT_RECIPE  # a name of `RECIPES`, for the card and provenance checks
    recipe: Recipe = field(default_factory=lambda: RECIPES[DEFAULT_RECIPE])
    target_false_alarms_per_hour: float = 1.0
    heldout: bool = True  # leave one outdoor site out; False: threshold from validation clips (quick)
    heldout_epochs: tuple[int, ...] = ()  # epochs scored held out (the schedule's end when empty)
    heldout_scores: Path | None = None  # pickle {epoch: raw out-of-fold scores} here, for other thresholds
    # a `compare` run's leave-one-site-out scores of this recipe and seed (its `<recipe>-seed<n>.pkl`,
    # with its .json beside it), used instead of training those models again
    heldout_from: Path | None = None
    extra_clips: tuple[Clip, ...] = ()  # new field recordings (see data.load_folder)


def _subsample(clips: list[Clip], limit: int | None, seed: int) -> list[Clip]:
    """At most `limit` clips per source, split and label, chosen at random but reproducibly."""
    if limit is None:
        return clips
    rng = np.random.default_rng(seed)
    keys = sorted({(c.source, c.split, c.label) for c in clips})
    out: list[Clip] = []
    for key in keys:
        members = [c for c in clips if (c.source, c.split, c.label) == key]
        out.extend(members[i] for i in sorted(rng.permutation(len(members))[: max(1, limit // 2)]))
    return out


def build(config: BuildConfig = BuildConfig(), log: Callable[[str], None] = print) -> dict[str, object]:
    """Build, check, measure and document a model; returns the metrics written next to it."""
    started = time.perf_counter()
    recipe, frontend = config.recipe, config.recipe.frontend
    clips = _subsample(load_clips(config.data_root, config.sources), config.max_clips_per_split,
                       recipe.train.seed) + list(config.extra_clips)
    mel_basis = librosa_mel_basis(frontend)
    audio = load_bank(clips, frontend)
    split = {s: [c for c in clips if c.split == s] for s in ("train", "val", "test")}
    log(f"{len(clips)} clips from {', '.join(config.sources)}: "
        f"train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])}")
    usable = [c for c in clips if c.split != EXCLUDED]
    heldout = _heldout(config, clips, audio, mel_basis, log)
    if heldout is not None:
        raw = heldout.pop("scores")
        if config.heldout_scores is not None:
            import pickle

            config.heldout_scores.write_bytes(pickle.dumps(raw))
        stop, threshold = int(heldout["chosen_epoch"]), float(heldout["threshold"])
        heldout["sites"] = figures(raw[stop], threshold)
        log(f"held out: epoch {stop}, threshold {threshold:.5f} for <= "
            f"{config.target_false_alarms_per_hour} false alarms per hour of ambience")
    else:
        stop, threshold = recipe.train.epochs, 0.5
    same = None
    if config.heldout:  # new flights of trained makes at trained sites, by models that missed them
        from nightear_training.heldout import same_site

        same = same_site(recipe, clips, audio, mel_basis, stop, threshold, log)
    # the shipped model hears every group, trained as the held-out runs were, to the chosen epoch
    shipped = recipe.stopped_after(stop)
    model, history, train_seconds = train_recipe(shipped, usable, [], audio, mel_basis, log)
    log(f"default model trained on {len(usable)} clips in {train_seconds / 60:.1f} min")
    if heldout is None:
        val_probs, _ = clip_probabilities(
            torch_scorer(model), clip_log_mels(split["val"], audio, frontend, mel_basis,
                                               recipe.train.window_frames), recipe.train.window_frames)
        threshold = accuracy_threshold(val_probs, np.array([int(c.is_drone) for c in split["val"]]))
        log(f"threshold {threshold:.4f} (fewest clip errors on the validation split, trained on)")

    config.out_dir.mkdir(parents=True, exist_ok=True)
    decision = {**{k: v for k, v in msgspec.to_builtins(DecisionConfig()).items() if k != "threshold"},
                "hop_seconds": DEFAULT_HOP_SECONDS}  # the windows those counts are of
    metadata = model_metadata(frontend, mel_basis, recipe.train.window_frames, threshold, config.name,
                              config.version, manifest_sha256(clips),
                              extra={"training_sources": json.dumps(list(config.sources)),
                                     "false_alarms_per_hour_target":
                                         str(config.target_false_alarms_per_hour),
                                     # the decision logic the threshold was chosen for
                                     "decision": json.dumps(decision)})
    fp32_path = export_onnx(model, config.out_dir / f"{config.name}.fp32.onnx", frontend.n_mels,
                            recipe.train.window_frames, metadata)
    calibration = _calibration_windows(recipe, split["train"], audio, mel_basis)
    int8_path = quantize_int8(fp32_path, config.out_dir / f"{config.name}.onnx", calibration)

    metrics: dict[str, object] = {
        "model": {"name": config.name, "version": config.version, "file": int8_path.name,
                  "bytes": int8_path.stat().st_size, "threshold": round(threshold, 5),
                  "decision": decision,
                  "training_manifest_sha256": metadata["training_manifest_sha256"],
                  "sources": list(config.sources)},
        "split": split_summary(clips),
        "training": {"recipe_name": config.recipe_name,
                     "epochs_run": len(history.train_loss), "clips": len(usable),
                     "train_seconds": round(train_seconds, 1), "recipe": msgspec.to_builtins(recipe),
                     "history": asdict(history)},
    }
    metrics.update(evaluate_model(OnnxClassifier(int8_path), OnnxClassifier(fp32_path), clips, audio,
                                  log=log))
    metrics["fit"] = fit(OnnxClassifier(int8_path).score, usable, audio, recipe, mel_basis, threshold)
    log(f"fit: its own outdoor drone recordings heard {metrics['fit']['outdoor']}")
    if same is not None:
        metrics["same_site"] = same
    if heldout is not None:
        at = heldout["at_threshold"]
        metrics["heldout"] = heldout
        metrics["false_alarms"] = {
            "target_per_hour": config.target_false_alarms_per_hour, "folds": len(heldout["folds"]),
            **heldout["false_alarm_curve"], "at_threshold": at["ambience"],
            "hard_negatives": at["hard_negatives"],
        }
    metrics["total_seconds"] = round(time.perf_counter() - started, 1)
    metrics["machine"] = _machine()
    _write(config, metrics)
    log(f"wrote {int8_path} ({int8_path.stat().st_size / 1024:.0f} KiB), its card, metrics and report "
        f"in {metrics['total_seconds'] / 60:.1f} min")
    return metrics


def requantize(config: BuildConfig = BuildConfig(), log: Callable[[str], None] = print) -> dict[str, object]:
    """Quantize a built model's FP32 file again, as `build` does (same calibration windows), and
    remeasure what depends on the INT8 file; training and held-out figures stay as they are."""
    base = config.out_dir / config.name
    fp32_path, int8_path = Path(f"{base}.fp32.onnx"), Path(f"{base}.onnx")  # as `build` names them
    metrics = json.loads(Path(f"{base}.metrics.json").read_text())
    recipe, sources = _built_with(metrics, base)
    clips = load_clips(config.data_root, sources)
    audio = load_bank(clips, recipe.frontend)
    train_clips = [c for c in clips if c.split == "train"]
    quantize_int8(fp32_path, int8_path, _calibration_windows(
        recipe, train_clips, audio, librosa_mel_basis(recipe.frontend)))
    metrics["model"]["bytes"] = int8_path.stat().st_size
    metrics["requantized"] = _machine()
    metrics.update(evaluate_model(OnnxClassifier(int8_path), OnnxClassifier(fp32_path), clips, audio,
                                  log=log))
    _write(config, metrics)
    log(f"requantized {int8_path} ({int8_path.stat().st_size:,} bytes) and rewrote its card and report")
    return metrics


def add_same_site(config: BuildConfig = BuildConfig(),
                  log: Callable[[str], None] = print) -> dict[str, object]:
    """Measure a built model's recipe on new flights of trained makes at trained sites (as
    `build` does) and add the figures to its metrics, card and report; nothing else changes."""
    from nightear_training.heldout import same_site

    base = config.out_dir / config.name
    metrics = json.loads(Path(f"{base}.metrics.json").read_text())
    recipe, sources = _built_with(metrics, base)
    clips = load_clips(config.data_root, sources)
    audio = load_bank(clips, recipe.frontend)
    same = same_site(recipe, clips, audio, librosa_mel_basis(recipe.frontend),
                     int(metrics["training"]["epochs_run"]), float(metrics["model"]["threshold"]), log)
    metrics["same_site"] = {**same, "machine": _machine()}
    _write(config, metrics)
    log(f"added the same-site figures to {base}.metrics.json and rewrote its card and report")
    return metrics


def _built_with(metrics: dict, base: Path) -> tuple[Recipe, tuple[str, ...]]:
    """The recipe (of `RECIPES`, by the name the build recorded; 3.4.0's and earlier: the field
    recipe) and the sources a built model was made from; refused when this code's recipe of
    that name is not the one its metrics record."""
    built = metrics["training"]["recipe"]
    recipe = RECIPES[metrics["training"].get("recipe_name", "field")]
    current = json.loads(json.dumps(msgspec.to_builtins(recipe)))  # tuples as JSON lists
    # a knob added since the build is absent from its metrics: it ran at the knob's default
    if any((built.get(part) or {}).get(k, v) != v for part in current if current[part]
           for k, v in current[part].items()) or bool(built.get("plain")) != bool(current.get("plain")):
        raise ValueError(f"{base}.metrics.json: built with another recipe than this code's of that "
                         "name; rebuild it with build-default")
    return recipe, tuple(metrics["model"]["sources"])


def _heldout(config: BuildConfig, clips: list[Clip], audio: dict, mel_basis,
             log: Callable[[str], None]) -> dict | None:
    """Leave one outdoor site out: trained here, or the scores of a `compare` run of this very
    recipe and seed (refused when its summary names another)."""
    from nightear_training.heldout import SITE_FOLDS, leave_one_drone_out, summarise

    recipe = config.recipe
    if config.heldout_from is not None:
        import pickle

        made_by = json.loads(config.heldout_from.with_suffix(".json").read_text())
        if (made_by["recipe"], made_by["seed"]) != (config.recipe_name, recipe.train.seed):
            raise ValueError(f"{config.heldout_from}: scores of recipe {made_by['recipe']} seed "
                             f"{made_by['seed']}, not {config.recipe_name} seed {recipe.train.seed}")
        scores = pickle.loads(config.heldout_from.read_bytes())
        return {"folds": {f.name: None for f in SITE_FOLDS}, "from": str(config.heldout_from),
                **summarise({recipe.train.epochs: scores}, config.target_false_alarms_per_hour, log)}
    if not config.heldout:
        return None
    epochs = tuple(e for e in config.heldout_epochs if e <= recipe.train.epochs) or (recipe.train.epochs,)
    return leave_one_drone_out(recipe, clips, audio, mel_basis, epochs, config.target_false_alarms_per_hour,
                               folds=SITE_FOLDS, log=log, items_seed=0)


def add_seeds(config: BuildConfig, runs: Sequence[Path], beside: Sequence[Path] = (),
              log: Callable[[str], None] = print) -> dict[str, object]:
    """Add the recipe's spread over seeds (`compare`'s per-seed summaries, `<recipe>-seed<n>.json`,
    of the built model's recipe, leave one site out and fit) to its metrics and card, and other
    recipes' spreads (`beside`) for the card to set beside it; nothing else changes."""
    from nightear_training.compare import recipe_spreads

    base = config.out_dir / config.name
    metrics = json.loads(Path(f"{base}.metrics.json").read_text())
    summaries = [json.loads(p.read_text()) for p in runs]
    built = metrics["training"].get("recipe_name")
    wrong = [str(p) for p, s in zip(runs, summaries, strict=True) if s["recipe"] != built]
    keys = [(s["seed"], s.get("folds", "sites")) for s in summaries]
    if wrong or len(set(keys)) != len(keys):
        raise ValueError(f"need one summary per seed of recipe {built}; not: "
                         f"{', '.join(wrong) or 'a seed twice'}")
    metrics["seeds"] = recipe_spreads(summaries)[built]
    others = recipe_spreads([json.loads(p.read_text()) for p in beside])
    metrics["seeds_beside"] = {name: v for name, v in others.items() if name != built}
    _write(config, metrics)
    log(f"added the spread over seeds {metrics['seeds']['seeds']} to {base}.metrics.json and its card"
        + (f", beside {', '.join(metrics['seeds_beside'])}" if metrics["seeds_beside"] else ""))
    return metrics


def _calibration_windows(recipe: Recipe, train_clips: list[Clip], audio: dict, mel_basis) -> np.ndarray:
    """Half windows drawn as training draws them (drones by make, backgrounds by pool), half
    real training windows."""
    sampler = field_sampler(recipe, train_clips, audio, seed=recipe.train.seed + 1)
    sampled, _ = SampledBatches(sampler, recipe.frontend, mel_basis)(recipe.train.seed + 2,
                                                                      CALIBRATION_WINDOWS // 2)
    rng = np.random.default_rng(recipe.train.seed)
    half = CALIBRATION_WINDOWS // 2
    picks = rng.choice(len(train_clips), half, replace=len(train_clips) < half)
    real = clip_log_mels([train_clips[i] for i in picks], audio, recipe.frontend, mel_basis,
                         recipe.train.window_frames)
    width = recipe.train.window_frames
    crops = [f[:, s : s + width] for f in real
             for s in [int(rng.integers(0, f.shape[1] - width + 1))]]
    return np.concatenate((sampled, np.stack(crops)))


def _write(config: BuildConfig, metrics: dict[str, object]) -> None:
    base = config.out_dir / config.name
    Path(f"{base}.metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    Path(f"{base}.card.md").write_text(card.render(metrics))
    report.write(metrics, config.out_dir, config.name)


def _machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
