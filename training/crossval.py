"""Models trained without part of the data, to measure what no model can have memorised.

- `kfold_false_alarms`: every minute of background in the data, each scored by a model that
  never trained on its recording (k folds by group), run through the daemon's decision logic:
  events per hour against the threshold, and per kind the share of windows over it.
- `leave_one_source_out`: train without one outdoor source, test on all of it: the closest we
  come to a drone, a place and a microphone the model never met.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from nightear.frontend import MelBasis
from nightear_training.augment import background_stream
from nightear_training.data import EXCLUDED, Clip, hash_fraction
from nightear_training.evaluate import audio_window_probs, false_alarm_curve
from nightear_training.features import EVAL_HOP_FRAMES
from nightear_training.recipe import Recipe, train_recipe
from nightear_training.train import torch_scorer

THRESHOLDS = np.unique(np.concatenate((np.linspace(0.05, 0.95, 19), np.linspace(0.955, 0.995, 9),
                                       [0.9975, 0.999, 0.9995, 0.9999])))


@dataclass
class OutOfFold:
    """Background scored by models that never trained on it."""

    stream_probs: list[np.ndarray]  # one per (fold, source): its clips joined end to end
    clip_probs: dict[str, np.ndarray]  # kind -> window probabilities of all its clips
    seconds_by_source: dict[str, float]
    curve: list[dict[str, float]]

    @property
    def hours(self) -> float:
        return sum(self.seconds_by_source.values()) / 3600.0

    def kind_false_positive_share(self, threshold: float, kinds: Sequence[str]) -> dict[str, dict]:
        out = {}
        for kind in kinds:
            probs = self.clip_probs.get(kind)
            if probs is not None and len(probs):
                out[kind] = {"windows": int(len(probs)),
                             "share_over_threshold": round(float((probs >= threshold).mean()), 4)}
        return out


def fold_of(clip: Clip, folds: int) -> int:
    return int(hash_fraction(f"fold/{clip.source}/{clip.group}") * folds)


def kfold_false_alarms(
    recipe: Recipe, clips: Sequence[Clip], audio: dict[Path, np.ndarray], mel_basis: MelBasis,
    folds: int = 3, log: Callable[[str], None] = print,
) -> OutOfFold:
    """Train `folds` models, each without one fold of background groups, and score that fold."""
    usable = [c for c in clips if c.split != EXCLUDED]
    result = OutOfFold([], {}, {}, [])
    window = recipe.train.window_frames
    for fold in range(folds):
        held = [c for c in usable if not c.is_drone and fold_of(c, folds) == fold]
        held_paths = {c.path for c in held}
        train_clips = [c for c in usable if c.split == "train" and c.path not in held_paths]
        val_clips = [c for c in usable if c.split == "val" and c.path not in held_paths]
        log(f"fold {fold + 1}/{folds}: training without {len(held)} background clips")
        model, _, _ = train_recipe(recipe, train_clips, val_clips, audio, mel_basis,
                                   log=lambda line: None)
        score = torch_scorer(model)
        for source in sorted({c.source for c in held}):
            members = [c for c in held if c.source == source]
            stream = background_stream([audio[c.path] for c in members])
            result.stream_probs.append(audio_window_probs(
                score, stream, recipe.frontend, mel_basis, window, EVAL_HOP_FRAMES))
            result.seconds_by_source[source] = (result.seconds_by_source.get(source, 0.0)
                                                + len(stream) / recipe.frontend.sample_rate)
        for clip in held:
            probs = audio_window_probs(score, audio[clip.path], recipe.frontend, mel_basis, window,
                                       EVAL_HOP_FRAMES)
            result.clip_probs[clip.kind] = np.concatenate((result.clip_probs.get(clip.kind, []), probs))
    result.curve = false_alarm_curve(result.stream_probs, result.hours, THRESHOLDS)
    return result


def leave_one_source_out(
    recipe: Recipe, clips: Sequence[Clip], audio: dict[Path, np.ndarray], mel_basis: MelBasis,
    sources: Sequence[str], threshold: float, log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """For each source: train on the others' train split, test on every clip of it."""
    usable = [c for c in clips if c.split != EXCLUDED]
    window = recipe.train.window_frames
    out: dict[str, dict[str, float]] = {}
    for source in sources:
        test = [c for c in usable if c.source == source]
        if not any(c.is_drone for c in test) or all(c.is_drone for c in test):
            continue
        log(f"leave {source} out: training on the other sources")
        model, _, _ = train_recipe(recipe, [c for c in usable if c.source != source and c.split == "train"],
                                   [c for c in usable if c.source != source and c.split == "val"],
                                   audio, mel_basis, log=lambda line: None)
        score = torch_scorer(model)
        per_clip = [audio_window_probs(score, audio[c.path], recipe.frontend, mel_basis, window,
                                       EVAL_HOP_FRAMES) for c in test]
        labels = np.array([int(c.is_drone) for c in test])
        means = np.array([p.mean() for p in per_clip])
        drone_windows = np.concatenate([p for p, y in zip(per_clip, labels, strict=True) if y])
        other_windows = np.concatenate([p for p, y in zip(per_clip, labels, strict=True) if not y])
        out[source] = {
            "drone_clips": int(labels.sum()), "background_clips": int(len(labels) - labels.sum()),
            "clip_roc_auc": round(float(roc_auc_score(labels, means)), 4),
            "window_recall": round(float((drone_windows >= threshold).mean()), 4),
            "window_false_positive_rate": round(float((other_windows >= threshold).mean()), 4),
        }
    return out
