"""Training on CPU: random window crops with level and masking augmentation, class-balanced
loss, validation AUC every epoch, early stopping on it. Prints one line per epoch so a
notebook or a terminal shows progress."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from nightear_training.features import WINDOW_FRAMES, clip_windows
from nightear_training.model import CHANNELS, DroneCNN

EVAL_HOP_FRAMES = 16  # windows every 0.256 s, as the daemon scores them


@dataclass(frozen=True)
class TrainConfig:
    """Knobs an ML engineer turns; defaults build the shipped model."""

    epochs: int = 60
    patience: int = 20  # epochs without a better validation AUC before stopping
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    gain_db: float = 15.0  # level augmentation: +-gain_db on the whole window
    mask_bands: int = 8  # SpecAugment: up to this many mel bands masked per window
    mask_frames: int = 8  # and up to this many frames
    mix_probability: float = 0.5  # share of windows mixed with a random background window
    mix_db: tuple[float, float] = (-25.0, 5.0)  # background level change before mixing, dB
    window_frames: int = WINDOW_FRAMES
    channels: tuple[int, ...] = CHANNELS  # conv channels per block
    seed: int = 0
    threads: int = 2


@dataclass
class History:
    """Per-epoch figures, for plots in a notebook."""

    train_loss: list[float] = field(default_factory=list)
    val_auc: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0


def _random_crops(features: Sequence[np.ndarray], width: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((len(features), features[0].shape[0], width), dtype=np.float32)
    for i, f in enumerate(features):
        start = rng.integers(0, f.shape[1] - width + 1)
        out[i] = f[:, start : start + width]
    return out


def mix_power_db(a_db: np.ndarray, b_db: np.ndarray) -> np.ndarray:
    """Log-mel of the sum of two uncorrelated sounds: their band powers add."""
    return (10.0 * np.logaddexp(a_db * _LN10_OVER_10, b_db * _LN10_OVER_10) / np.log(10.0)).astype(
        np.float32)


_LN10_OVER_10 = np.log(10.0) / 10.0


def augment(batch: np.ndarray, backgrounds: np.ndarray, config: TrainConfig,
            rng: np.random.Generator) -> np.ndarray:
    """Mix in a random background (labels stay: a drone in noise is still a drone, two
    backgrounds are still background), change the level (a dB offset is a gain on the
    waveform), mask one band and one time span."""
    n, n_mels, n_frames = batch.shape
    mix = rng.random(n) < config.mix_probability
    offsets = rng.uniform(*config.mix_db, size=(n, 1, 1)).astype(np.float32)
    out = np.where(mix[:, None, None], mix_power_db(batch, backgrounds + offsets), batch)
    gains = rng.uniform(-config.gain_db, config.gain_db, size=(n, 1, 1)).astype(np.float32)
    out = np.maximum(out + gains, -100.0)
    floor = out.min(axis=(1, 2), keepdims=True)
    for i in range(n):
        b = rng.integers(0, config.mask_bands + 1)
        f0 = rng.integers(0, n_mels - b + 1)
        out[i, f0 : f0 + b, :] = floor[i]
        t = rng.integers(0, config.mask_frames + 1)
        t0 = rng.integers(0, n_frames - t + 1)
        out[i, :, t0 : t0 + t] = floor[i]
    return out


def clip_probabilities(
    score_windows: Callable[[np.ndarray], np.ndarray],
    features: Sequence[np.ndarray], window_frames: int, hop_frames: int = EVAL_HOP_FRAMES,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean window probability per clip, and each clip's window probabilities."""
    per_clip = [score_windows(clip_windows(f, window_frames, hop_frames)) for f in features]
    return np.array([p.mean() for p in per_clip]), per_clip


def torch_scorer(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Windows (k, n_mels, frames) -> (k,) probabilities with a torch model in eval mode."""
    def score(windows: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(windows[:, None])).numpy().reshape(-1)
    return score


def train(
    train_features: Sequence[np.ndarray], train_labels: np.ndarray,
    val_features: Sequence[np.ndarray], val_labels: np.ndarray,
    config: TrainConfig = TrainConfig(), log: Callable[[str], None] = print,
) -> tuple[DroneCNN, History]:
    """Train a DroneCNN; returns the model of the best validation AUC and the history."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    sample = np.concatenate([f.ravel() for f in train_features[:: max(1, len(train_features) // 500)]])
    model = DroneCNN(train_features[0].shape[0], float(sample.mean()), float(sample.std()),
                     channels=config.channels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    positives = float(train_labels.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(train_labels) - positives) / positives))
    history, best_auc, best_state, stale = History(), -1.0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss = _train_epoch(model, optimiser, loss_fn, train_features, train_labels, config, rng)
        schedule.step()
        probs, _ = clip_probabilities(torch_scorer(model), val_features, config.window_frames)
        auc = float(roc_auc_score(val_labels, probs))
        accuracy = float(((probs >= 0.5) == val_labels).mean())
        history.train_loss.append(loss)
        history.val_auc.append(auc)
        history.val_accuracy.append(accuracy)
        history.seconds.append(time.perf_counter() - started)
        better = auc > best_auc
        if better:
            best_auc, best_state, stale, history.best_epoch = auc, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            stale += 1
        log(f"epoch {epoch:3d}/{config.epochs}  loss {loss:.4f}  val AUC {auc:.5f}  "
            f"val acc {accuracy:.4f}  {history.seconds[-1]:5.1f} s{'  *best' if better else ''}")
        if stale >= config.patience:
            log(f"early stop: no better validation AUC for {config.patience} epochs")
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history


def _train_epoch(
    model: DroneCNN, optimiser: torch.optim.Optimizer, loss_fn: nn.Module,
    features: Sequence[np.ndarray], labels: np.ndarray, config: TrainConfig,
    rng: np.random.Generator,
) -> float:
    model.train()
    order = rng.permutation(len(features))
    backgrounds = np.flatnonzero(labels == 0)
    total, seen = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        idx = order[start : start + config.batch_size]
        crops = _random_crops([features[i] for i in idx], config.window_frames, rng)
        others = _random_crops([features[i] for i in rng.choice(backgrounds, len(idx))],
                               config.window_frames, rng)
        batch = augment(crops, others, config, rng)
        x = torch.from_numpy(batch[:, None])
        y = torch.from_numpy(labels[idx].astype(np.float32))[:, None]
        optimiser.zero_grad()
        loss = loss_fn(model.logits(x), y)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / seen
