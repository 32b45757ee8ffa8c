"""A small CNN over log-mel windows, sized for an INT8 model of tens of kilobytes that scores a
window in well under a millisecond on one Pi core.

Input (batch, 1, n_mels, frames) in dB; the fixed dB normalisation (training-set mean and
spread) is part of the network, so the exported model takes front-end output as it is.
Output (batch, 1): probability of a drone.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (16, 32, 48, 64)


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class DroneCNN(nn.Module):
    """Four conv blocks; the time axis is averaged away at the end, the frequency axis is kept
    (a drone is a spectral shape: rotor harmonics), then one linear layer. With `global_pool`
    (the plain recipe's network) every block pools and the head sees each channel's mean over
    bands and frames, wherever the pattern lies."""

    mean_db: torch.Tensor  # buffers: saved and exported with the weights
    std_db: torch.Tensor

    def __init__(self, n_mels: int, mean_db: float = -60.0, std_db: float = 20.0,
                 channels: tuple[int, ...] = CHANNELS, dropout: float = 0.2, global_pool: bool = False):
        super().__init__()
        self.register_buffer("mean_db", torch.tensor(float(mean_db)))
        self.register_buffer("std_db", torch.tensor(float(std_db)))
        blocks, c_in = [], 1
        for i, c_out in enumerate(channels):
            blocks.append(_block(c_in, c_out, pool=global_pool or i < len(channels) - 1))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.global_pool = global_pool
        freq_out = 1 if global_pool else n_mels // 2 ** (len(channels) - 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in * freq_out, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features((x - self.mean_db) / self.std_db)
        if self.global_pool:
            return self.head(self.dropout(x.mean(dim=(2, 3))))
        return self.head(self.dropout(x.mean(dim=3).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))
