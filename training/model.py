"""A small CNN over log-mel windows, sized for an INT8 model of tens of kilobytes that scores a
window in well under a millisecond on one Pi core.

Input (batch, 1, n_mels, frames) in dB; the fixed dB normalisation (training-set mean and
spread) is part of the network, so the exported model takes front-end output as it is.
Output (batch, 1): probability of a drone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

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
    (a drone is a spectral shape: rotor harmonics), then one linear layer."""

    def __init__(self, n_mels: int, mean_db: float = -60.0, std_db: float = 20.0,
                 channels: tuple[int, ...] = CHANNELS, dropout: float = 0.2, contrast_bands: int = 0,
                 pool_bands: bool = False, level_free: bool = False, time_max: bool = False,
                 harmonics: tuple[int, ...] = (), band_hz: Sequence[float] | None = None,
                 global_pool: bool = False):
        super().__init__()
        self.register_buffer("mean_db", torch.tensor(float(mean_db)))
        self.register_buffer("std_db", torch.tensor(float(std_db)))
        if contrast_bands < 0 or contrast_bands % 2 == 0 and contrast_bands:
            raise ValueError(f"contrast_bands must be 0 or odd, got {contrast_bands}")
        self.contrast_bands = contrast_bands
        # level_free: each window less its own mean dB, so a microphone's gain and a drone's
        # distance move nothing but the SNR (the training levels span -70 to -15 dBFS anyway)
        self.level_free = level_free
        # harmonics (needs band_hz, the bands' centres): more input channels, each band's h-th
        # harmonic's band moved onto it (zero where h times the band lies above the top band),
        # so the first convolution sees a comb f, 2f, 3f... at one place whatever its spacing
        self.harmonics = tuple(harmonics)
        if self.harmonics:
            if band_hz is None or len(band_hz) != n_mels:
                raise ValueError(f"harmonics need band_hz with {n_mels} band centres")
            centres = torch.log(torch.tensor([float(f) for f in band_hz]))
            target = centres[None, :] + torch.log(torch.tensor([float(h) for h in self.harmonics]))[:, None]
            self.register_buffer("harmonic_index", (target[..., None] - centres).abs().argmin(dim=-1))
            self.register_buffer("harmonic_mask", (target <= centres[-1] + 1e-3).float()[None, :, :, None])
        blocks, c_in = [], (2 if contrast_bands else 1) + len(self.harmonics)
        for i, c_out in enumerate(channels):
            blocks.append(_block(c_in, c_out, pool=global_pool or i < len(channels) - 1))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        # pool_bands: the head sees each channel's mean and maximum over the bands, not every
        # band: a pattern counts wherever it lies in frequency (another rotor rate, another
        # microphone's colour), as the convolutions already treat it
        self.pool_bands = pool_bands
        # global_pool: each channel's mean over bands and frames, wherever the pattern lies
        self.global_pool = global_pool
        freq_out = 1 if global_pool else 2 if pool_bands else n_mels // 2 ** (len(channels) - 1)
        # time_max: the head sees each band's maximum over time beside its mean, so a drone
        # heard in part of the window (passing, turning, gusts masking it) is not averaged away
        self.time_max = time_max
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in * freq_out * (2 if time_max else 1), 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        centre = x.mean(dim=(2, 3), keepdim=True) if self.level_free else self.mean_db
        x = (x - centre) / self.std_db
        if self.contrast_bands:  # a second channel: each band less its neighbours' mean (dB)
            k = self.contrast_bands
            local = F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
            x = torch.cat((x, x - local), dim=1)
        if self.harmonics:  # (batch, 1 + len(harmonics), bands, frames)
            stacked = x[:, :1, self.harmonic_index.flatten(), :].reshape(
                x.shape[0], len(self.harmonics), x.shape[2], x.shape[3]) * self.harmonic_mask
            x = torch.cat((x, stacked), dim=1)
        x = self.features(x)
        if self.global_pool:
            return self.head(self.dropout(x.mean(dim=(2, 3))))
        x = torch.cat((x.mean(dim=3), x.amax(dim=3)), dim=1) if self.time_max else x.mean(dim=3)
        if self.pool_bands:
            x = torch.stack((x.mean(dim=2), x.amax(dim=2)), dim=2)
        return self.head(self.dropout(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))
