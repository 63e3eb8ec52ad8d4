"""Rendering LGM Gaussians into a batch of camera views, the way training, evaluation,
inference and the geometric database all do it: channel-first images composited on a
background, and intrinsics rescaled to the render size."""

from __future__ import annotations

import torch

from .rasterize import gaussians_from_lgm, render_gaussians


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    """Straight-alpha ``rgb`` [..., 3, H, W] over a uniform ``background`` (white by default)."""
    return rgb * alpha + background * (1.0 - alpha)


def render_views(gaussians: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor, size: int, background: float = 1.0):
    """Gaussians [B, N, 14] -> rgb [B, C, 3, H, W], alpha [B, C, 1, H, W] for cameras
    [B, C, ...] (``K`` pixel intrinsics at ``size``, ``c2w`` OpenCV camera-to-world)."""
    g = gaussians_from_lgm(gaussians.float())
    viewmats = torch.linalg.inv(c2w.float())
    out = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, viewmats, K.float(), size, size, background=background)
    return out.rgb.permute(0, 1, 4, 2, 3), out.alpha.permute(0, 1, 4, 2, 3)


def scale_K(K: torch.Tensor, from_size: int, to_size: int) -> torch.Tensor:
    """Pixel intrinsics of an image of ``from_size`` for the same camera at ``to_size``."""
    if from_size == to_size:
        return K
    K = K.clone()
    K[..., :2, :] *= to_size / from_size
    return K
