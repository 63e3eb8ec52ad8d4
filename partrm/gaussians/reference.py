"""Naive dense rasterizer: every Gaussian at every pixel, composited in depth order.

The plain twin of the tile backend, written in textbook matrix form so that it is easy to
check by eye; tests compare the fast backends with it. Memory is O(N * H * W): small scenes only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from partdrag4d.rigid import quat_to_rotmat

from .types import RasterConfig, RenderResult


def render_reference(
    means: Tensor,  # [(B,) N, 3]
    quats: Tensor,  # [(B,) N, 4]
    scales: Tensor,  # [(B,) N, 3]
    opacities: Tensor,  # [(B,) N]
    colors: Tensor,  # [(B,) N, 3]
    viewmats: Tensor,  # [(B,) C, 4, 4]
    Ks: Tensor,  # [(B,) C, 3, 3]
    width: int,
    height: int,
    background=None,  # [3], scalar or [(B,) C, 3]
    config: RasterConfig | None = None,
) -> RenderResult:  # rgb [(B,) C, H, W, 3], alpha and depth [(B,) C, H, W, 1]
    """Same contract as ``render_gaussians``."""
    config = config or RasterConfig()
    if means.dim() == 3:
        results = [
            render_reference(
                means[b],
                quats[b],
                scales[b],
                opacities[b],
                colors[b],
                viewmats[b],
                Ks[b],
                width,
                height,
                _per_batch(background, b, means),
                config,
            )
            for b in range(means.shape[0])
        ]
        return RenderResult(*(torch.stack(t) for t in zip(*results)))
    images = [
        _render_one(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats[c],
            Ks[c],
            width,
            height,
            _per_camera(background, c, means),
            config,
        )
        for c in range(viewmats.shape[0])
    ]
    return RenderResult(*(torch.stack(t) for t in zip(*images)))


def _per_batch(background, b, like):
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    return bg[b] if bg.dim() == 3 else bg


def _per_camera(background, c, like):
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    return bg[c] if bg.dim() == 2 else bg.expand(3)


def _render_one(means, quats, scales, opacities, colors, viewmat, K, width, height, background, config):
    R = quat_to_rotmat(quats)
    S = torch.diag_embed(scales)
    cov3d = R @ S @ S @ R.transpose(-1, -2)  # [N, 3, 3]

    W, t = viewmat[:3, :3], viewmat[:3, 3]
    cam = means @ W.T + t  # [N, 3]
    x, y, z = cam.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    visible = (z >= config.near) & (z <= config.far)
    z_safe = torch.where(visible, z, torch.ones_like(z))

    # The Jacobian of the pinhole projection at the mean, with gsplat's clamp of x/z and y/z
    # to 1.3x the field of view (it only changes the footprint of Gaussians far off screen).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    ux = torch.clamp(x / z_safe, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    uy = torch.clamp(y / z_safe, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack(
        [
            torch.stack([fx / z_safe, zero, -fx * ux / z_safe], -1),
            torch.stack([zero, fy / z_safe, -fy * uy / z_safe], -1),
        ],
        -2,
    )  # [N, 2, 3]
    cov2d_raw = J @ W @ cov3d @ W.T @ J.transpose(-1, -2)
    cov2d = cov2d_raw + config.eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    det = torch.linalg.det(cov2d)
    visible = visible & (det > 0)
    cov2d = torch.where(visible[:, None, None], cov2d, torch.eye(2, dtype=means.dtype, device=means.device))
    conic = torch.linalg.inv(cov2d)
    opac = opacities
    if config.antialiased:
        opac = opac * torch.sqrt((torch.linalg.det(cov2d_raw) / torch.linalg.det(cov2d)).clamp(min=0))
    visible = visible & (opac >= config.alpha_min)
    mean2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], -1)  # [N, 2]

    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([cols, rows], -1).reshape(-1, 2).to(means) + 0.5  # [HW, 2] pixel centres
    d = pixels[None, :, :] - mean2d[:, None, :]  # [N, HW, 2]
    m = torch.einsum("npi,nij,npj->np", d, conic, d)  # squared Mahalanobis distance
    raw = opac[:, None] * torch.exp(-0.5 * m)
    drawn = visible[:, None] & (raw >= config.alpha_min) & (m <= config.sigma_cutoff**2)
    alpha = torch.where(drawn, torch.clamp(raw, max=config.alpha_max), torch.zeros_like(raw))  # [N, HW]

    order = torch.sort(torch.where(visible, z, torch.full_like(z, float("inf"))).detach(), stable=True).indices
    alpha, feats = alpha[order], torch.cat([colors, z[:, None], torch.ones_like(z)[:, None]], -1)[order]
    T_after = torch.cumprod(1 - alpha, dim=0)  # transmittance after each Gaussian if all were drawn
    T_before = torch.cat([torch.ones_like(T_after[:1]), T_after[:-1]], 0)
    weight = torch.where(T_after > config.transmittance_min, alpha * T_before, torch.zeros_like(alpha))
    out = (weight.T @ feats).reshape(height, width, 5)

    rgb, acc_depth, acc = out[..., :3], out[..., 3:4], out[..., 4:5]
    if background is not None:
        rgb = rgb + (1 - acc) * background
    return rgb, acc, acc_depth / acc.clamp(min=1e-10)
