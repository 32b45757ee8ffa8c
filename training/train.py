"""Training on CPU: every batch is drawn fresh from the field sampler (a real drone in real
background, or background alone), turned into features by the edge front-end and fed to the
CNN under a one-cycle learning rate. The model of the last epoch is kept: validation AUC on
mostly indoor clips picked an early, deaf epoch before, so epochs are chosen on the
leave-one-drone-out evaluation instead (`heldout`). Validation AUC, when there
are validation clips, still prints every epoch so a notebook or a terminal shows progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from nightear.frontend import FrontendConfig, MelBasis, log_mel
from nightear_training.augment import FieldSampler
from nightear_training.features import WINDOW_FRAMES, clip_windows
from nightear_training.model import CHANNELS, DroneCNN
from nightear_training.plain import PlainSampler

Batch = tuple[np.ndarray, np.ndarray]  # (n, n_mels, frames) float32 dB, (n,) labels 0/1


@dataclass(frozen=True)
class TrainConfig:
    """Knobs an ML engineer turns; defaults build the shipped model. The network and training
    variations the held-out evaluation rejected (a contrast channel, pooled bands, a level-free
    input, a time maximum, harmonic channels, a moving average of the weights, mixup, replayed
    hard negatives, style mixing, label smoothing, 3.4.0's head on fixed bands, its dropout and
    its SpecAugment) are gone from the code; their figures stay in the model's history
    (models/nightear-drone.history.md). The defaults: AdamW, one-cycle to 3e-3 over 1,000
    steps of 96 (ten "epochs" of 100 steps, so held-out runs can score along the way)."""

    epochs: int = 10  # the one-cycle schedule's length; held-out runs choose where to stop
    batches_per_epoch: int = 100
    batch_size: int = 96
    learning_rate: float = 3e-3  # the one-cycle schedule's peak
    stop_after: int | None = None  # end after this epoch of the `epochs`-long schedule
    weight_decay: float = 1e-3
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


class SampledBatches:
    """Balanced batches of field-like windows, as features from the edge front-end."""

    def __init__(self, sampler: FieldSampler | PlainSampler, frontend: FrontendConfig, mel_basis: MelBasis):
        self.sampler, self.frontend, self.mel_basis = sampler, frontend, mel_basis

    def __call__(self, seed: int, size: int) -> Batch:
        rng = np.random.default_rng(seed)
        share, i = self.sampler.config.positive_share, np.arange(size)
        labels = (np.floor((i + 1) * share) - np.floor(i * share)).astype(np.int64)  # 0.5: 0, 1, 0, 1, ...
        drawn = [self.sampler.labelled_window(rng, bool(y)) for y in labels]
        audio, labels = [y for y, _ in drawn], np.array([label for _, label in drawn], dtype=np.float32)
        return np.stack([log_mel(y, self.frontend, self.mel_basis) for y in audio]), labels


def clip_probabilities(
    score_windows: Callable[[np.ndarray], np.ndarray],
    features: Sequence[np.ndarray], window_frames: int, hop_frames: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean window probability per clip, and each clip's window probabilities (windows every
    `hop_frames`, by default a third of a window)."""
    hop_frames = hop_frames or max(1, window_frames // 3)
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
    batches: Callable[[int, int], Batch],
    val_features: Sequence[np.ndarray], val_labels: np.ndarray,
    config: TrainConfig = TrainConfig(), log: Callable[[str], None] = print,
    on_epoch: Callable[[int, DroneCNN], None] | None = None,
) -> tuple[DroneCNN, History]:
    """Train a DroneCNN on `batches(seed, size)`; returns the model after the last epoch and
    the history (`best_epoch`: the epoch of the best validation AUC, for information).
    `on_epoch(epoch, model)` sees the model after each epoch, e.g. to score held-out data.
    The next batch is drawn in a thread while the network trains."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    sample, _ = batches(int(rng.integers(2**62)), 256)
    model = DroneCNN(float(sample.mean()), float(sample.std()), channels=config.channels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * config.batches_per_epoch)
    loss_fn = nn.BCEWithLogitsLoss()
    history, best_auc = History(), -1.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            loss = _train_epoch(model, optimiser, schedule, loss_fn, batches, pool, config, rng)
            history.train_loss.append(loss)
            line = f"epoch {epoch:3d}/{config.epochs}  loss {loss:.4f}"
            if len(val_features) and 0 < val_labels.sum() < len(val_labels):
                probs, _ = clip_probabilities(torch_scorer(model), val_features, config.window_frames)
                auc = float(roc_auc_score(val_labels, probs))
                accuracy = float(((probs >= 0.5) == val_labels).mean())
                history.val_auc.append(auc)
                history.val_accuracy.append(accuracy)
                if auc > best_auc:
                    best_auc, history.best_epoch = auc, epoch
                line += f"  val AUC {auc:.5f}  val acc {accuracy:.4f}"
            history.seconds.append(time.perf_counter() - started)
            log(f"{line}  {history.seconds[-1]:5.1f} s")
            if on_epoch is not None:
                on_epoch(epoch, model)
                model.train()
            if config.stop_after is not None and epoch >= config.stop_after:
                break
    model.eval()
    return model, history


def _train_epoch(
    model: DroneCNN, optimiser: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    batches: Callable[[int, int], Batch], pool: ThreadPoolExecutor, config: TrainConfig,
    rng: np.random.Generator,
) -> float:
    model.train()
    seeds = rng.integers(2**62, size=config.batches_per_epoch)
    pending = pool.submit(batches, int(seeds[0]), config.batch_size)
    total = 0.0
    for i in range(config.batches_per_epoch):
        features, labels = pending.result()
        if i + 1 < config.batches_per_epoch:
            pending = pool.submit(batches, int(seeds[i + 1]), config.batch_size)
        x = torch.from_numpy(features[:, None])
        y = torch.from_numpy(labels.astype(np.float32))[:, None]
        optimiser.zero_grad()
        loss = loss_fn(model.logits(x), y)
        loss.backward()
        optimiser.step()
        schedule.step()
        total += float(loss.detach())
    return total / config.batches_per_epoch
