"""A small CNN over log-mel windows, sized for an INT8 model of tens of kilobytes that scores a
window in well under a millisecond on one Pi core.

Input (batch, 1, n_mels, frames) in dB; the fixed dB normalisation (training-set mean and
spread) is part of the network, so the exported model takes front-end output as it is.
Output (batch, 1): probability of a drone.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (16, 32, 64, 64)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class DroneCNN(nn.Module):
    """Conv blocks that each pool, then each channel's mean over bands and frames (the pattern
    counts wherever it lies: another make's rotor harmonics sit in other bands), one linear
    layer. 3.4.0's head on fixed bands, with dropout and SpecAugment, fitted its own outdoor
    recordings worse (models/nightear-drone.history.md, 4.0.0 work, third session)."""

    mean_db: torch.Tensor  # buffers: saved and exported with the weights
    std_db: torch.Tensor

    def __init__(self, mean_db: float = -60.0, std_db: float = 20.0, channels: tuple[int, ...] = CHANNELS):
        super().__init__()
        self.register_buffer("mean_db", torch.tensor(float(mean_db)))
        self.register_buffer("std_db", torch.tensor(float(std_db)))
        blocks, c_in = [], 1
        for c_out in channels:
            blocks.append(_block(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean_db) / self.std_db).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))
