"""The lab task as 1.0.0 measured it: DroneAudioDataset's grouped test split, scored by one model
of the shipped recipe that trained on every group but that split's.

The leave-one-drone-out figure scores each Bebop clip by a model that never heard a Bebop: a
field question. The lab question is another: a model that heard other recordings of the same two
toys and rooms, does it tell the split's clips from its background clips at the shipped
threshold? Each clip counts by its mean window probability, windows cut as the daemon cuts them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nightear.frontend import MelBasis
from nightear_training.data import DRONE_AUDIO_DATASET, EXCLUDED, Clip
from nightear_training.features import eval_hop_frames
from nightear_training.recipe import Recipe, clip_log_mels, train_recipe
from nightear_training.train import clip_probabilities, torch_scorer


def lab_test_clips(clips: Sequence[Clip]) -> list[Clip]:
    """DroneAudioDataset's grouped test split: what the lab model never trains on."""
    return [c for c in clips if c.source == DRONE_AUDIO_DATASET and c.split == "test"]


def lab_test_split(recipe: Recipe, clips: Sequence[Clip], audio: dict[Path, np.ndarray],
                   mel_basis: MelBasis, stop_after: int, threshold: float,
                   log: Callable[[str], None] = print) -> dict[str, object] | None:
    """Train the recipe to `stop_after` epochs on every usable clip but the lab test split, and
    count that split's clips right at `threshold`; None when the clips hold no such split."""
    test = lab_test_clips(clips)
    if not any(c.is_drone for c in test) or all(c.is_drone for c in test):
        return None
    held = {c.path for c in test}
    train_clips = [c for c in clips if c.split != EXCLUDED and c.path not in held]
    log(f"lab model: {len(train_clips)} clips, without the lab test split's {len(test)}")
    model, _, seconds = train_recipe(recipe.stopped_after(stop_after), train_clips, [], audio,
                                     mel_basis, log)
    features = clip_log_mels(test, audio, recipe.frontend, mel_basis, recipe.train.window_frames)
    probs, _ = clip_probabilities(torch_scorer(model), features, recipe.train.window_frames,
                                  eval_hop_frames(recipe.frontend))
    drone = np.array([c.is_drone for c in test])
    over = probs >= threshold

    def by_kind(mask: np.ndarray) -> dict[str, int]:  # which sounds the errors are, most first
        return dict(Counter(c.kind for c, wrong in zip(test, mask, strict=True) if wrong).most_common())

    return {"clips": len(test), "drone_clips": int(drone.sum()), "trained_on": len(train_clips),
            "epochs": stop_after, "threshold": round(threshold, 5),
            "accuracy": round(float((over == drone).mean()), 4),
            "drone_clips_missed": int((drone & ~over).sum()),
            "background_clips_over": int((~drone & over).sum()),
            "missed_by_kind": by_kind(drone & ~over), "over_by_kind": by_kind(~drone & over),
            "train_seconds": round(seconds, 1)}
