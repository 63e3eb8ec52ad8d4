"""Multi-scale drag embedding (paper Sec. 4.3, Eq. 3-4).

Each drag's start and end point (normalised image coordinates) is encoded with Fourier
features and a 3-layer MLP per scale; the start and end embeddings are concatenated
and scattered into a drag map at the start point's cell of that scale (sum over drags;
all other cells zero). The map is concatenated with the U-Net features O at that scale
and merged by a convolution initialised to zero, with a residual:

    I = O + Conv(M (+) O)

so an untrained PartRM computes exactly what its LGM initialisation computes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    """[..., 2] coordinates in [0, 1] -> [..., 2 + 4F]: the centred coordinates and
    sin/cos at frequencies pi * 2^k, k < F."""

    def __init__(self, num_frequencies: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        return 2 + 4 * len(self.freqs)

    def forward(self, coords: Tensor) -> Tensor:
        x = coords * 2.0 - 1.0
        angles = x[..., None] * self.freqs  # [..., 2, F]
        return torch.cat([x, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)


def drag_cells(points: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Row and column of the ``size`` x ``size`` grid cell holding each point (x, y in [0, 1]).

    x runs along columns (image x, to the right), y along rows (down).
    """
    col = (points[..., 0] * size).floor().long().clamp(0, size - 1)
    row = (points[..., 1] * size).floor().long().clamp(0, size - 1)
    return row, col


class ScaleEmbedding(nn.Module):
    """Drag map and zero-initialised merge for one U-Net scale."""

    def __init__(self, feature_channels: int, map_channels: int, fourier: FourierFeatures, hidden: int = 128, kernel_size: int = 1):
        super().__init__()
        if map_channels % 2:
            raise ValueError("map_channels must be even (start and end halves)")
        self.fourier = fourier
        self.map_channels = map_channels
        self.mlp = nn.Sequential(
            nn.Linear(fourier.out_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, map_channels // 2)
        )
        self.merge = nn.Conv2d(feature_channels + map_channels, feature_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.merge.weight)
        nn.init.zeros_(self.merge.bias)

    def drag_map(self, drags: Tensor, valid: Tensor, size: int) -> Tensor:
        """drags [BV, N, 4] (x0, y0, x1, y1), valid [BV, N] -> M [BV, C_M, size, size]."""
        bv, n, _ = drags.shape
        emb = torch.cat([self.mlp(self.fourier(drags[..., :2])), self.mlp(self.fourier(drags[..., 2:]))], dim=-1)  # [BV, N, C_M]
        emb = emb * valid[..., None].to(emb.dtype)
        row, col = drag_cells(drags[..., :2], size)
        flat_index = (torch.arange(bv, device=drags.device)[:, None] * size * size + row * size + col).reshape(-1)
        maps = emb.new_zeros(bv * size * size, self.map_channels)
        maps.index_add_(0, flat_index, emb.reshape(-1, self.map_channels))
        return maps.reshape(bv, size, size, self.map_channels).permute(0, 3, 1, 2)

    def forward(self, features: Tensor, drag_map: Tensor) -> Tensor:
        return features + self.merge(torch.cat([drag_map, features], dim=1))


class MultiScaleDragEmbedding(nn.Module):
    """Drag maps for a chosen set of U-Net hook levels (``UNet.forward``'s ``down_hook``)."""

    def __init__(self, hook_channels: tuple[int, ...], hook_sizes: tuple[int, ...], levels: tuple[int, ...],
                 num_frequencies: int = 8, hidden: int = 128, kernel_size: int = 1, max_map_channels: int = 1024):
        super().__init__()
        if not levels:
            raise ValueError("at least one drag-embedding level is needed")
        for level in levels:
            if not 0 <= level < len(hook_channels):
                raise ValueError(f"drag level {level} outside 0..{len(hook_channels) - 1}")
        self.levels = tuple(levels)
        self.sizes = {level: hook_sizes[level] for level in levels}
        self.fourier = FourierFeatures(num_frequencies)
        self.scales = nn.ModuleDict(
            {
                str(level): ScaleEmbedding(hook_channels[level], min(hook_channels[level], max_map_channels), self.fourier, hidden, kernel_size)
                for level in levels
            }
        )

    def hook(self, drags: Tensor, valid: Tensor):
        """A ``down_hook`` merging these drags (drags [B*V, N, 4], valid [B*V, N]) at every level."""
        maps: dict[int, Tensor] = {}

        def down_hook(level: int, features: Tensor) -> Tensor:
            if level not in self.sizes:
                return features
            if level not in maps:
                maps[level] = self.scales[str(level)].drag_map(drags, valid, features.shape[-1]).to(features.dtype)
            return self.scales[str(level)](features, maps[level])

        return down_hook


def levels_for_sizes(hook_sizes: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Hook levels whose feature size is in ``sizes`` (the first level of each size), e.g. the
    paper's ablation scales 128/32/8 for a 256 input."""
    levels = []
    for s in sizes:
        if s not in hook_sizes:
            raise ValueError(f"no U-Net level of size {s}; sizes are {sorted(set(hook_sizes), reverse=True)}")
        levels.append(hook_sizes.index(s))
    return tuple(sorted(set(levels)))
