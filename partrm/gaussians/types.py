"""The shared types of the Gaussian renderer: its configuration and its result, and the
activated Gaussian fields. The dispatcher (``rasterize``) and both backends take them from
here, so no backend imports the dispatcher that imports it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

BACKENDS = ("auto", "torch", "gsplat")


@dataclass(frozen=True)
class RasterConfig:
    """Rasterization constants; the defaults follow 3DGS / gsplat.

    near, far: Gaussians whose centre has camera z outside [near, far] are culled.
    eps2d: low-pass filter added to the projected covariance (px^2), 3DGS's 0.3.
    antialiased: multiply opacity by sqrt(det(cov2d) / det(cov2d + eps2d)) (Mip-Splatting),
        gsplat's ``rasterize_mode="antialiased"``; off by default like 3DGS.
    sigma_cutoff: a Gaussian is ignored where its Mahalanobis distance exceeds this. The
        default 3.33 never binds for opacity <= 1 because alpha_min already cuts at
        sqrt(2 ln 255) = 3.329 sigma (exactly gsplat's behaviour); 3.0 cuts every Gaussian at 3 sigma.
    alpha_min: contributions with alpha below this are skipped (3DGS's 1/255).
    alpha_max: alpha is clamped to this (3DGS's 0.99; gsplat compiles in 0.999).
    transmittance_min: front-to-back compositing stops before transmittance would drop to
        or below this (3DGS's 1e-4; the Gaussian that would cross it is not drawn).
    tile_size: torch backend only; square tile edge in pixels for binning. 8 is about twice
        as fast as 16 on the CPU; results do not depend on it. gsplat always uses 16.
    chunk_elements: torch backend only; upper bound on tiles x Gaussians x pixels evaluated
        in one step, which bounds peak memory.
    depth_slice: torch backend only; Gaussians per tile composited per step. Tiles whose
        pixels are all saturated are dropped between steps (the early stop of 3DGS).
    recompute_backward: torch backend only; keep only the transmittance in front of each
        step and recompute the rest in backward, so memory stays bounded by chunk_elements
        (about 10% slower than keeping every step's buffers, which costs ~8 bytes per
        tile pixel x Gaussian pair).
    compiled: torch backend on CPU tensors: composite with the compiled per-pixel loops of
        ``tile_kernels.py`` (several times faster; depth_slice, chunk_elements and
        recompute_backward then do not apply); False: the vectorised torch ops, which other
        devices always use. Both give the dense reference's result.
    backend: "auto" (gsplat for CUDA tensors, else torch), "torch", or "gsplat".
    """

    near: float = 0.01
    far: float = 1e10
    eps2d: float = 0.3
    antialiased: bool = False
    sigma_cutoff: float = 3.33
    alpha_min: float = 1.0 / 255.0
    alpha_max: float = 0.99
    transmittance_min: float = 1e-4
    tile_size: int = 8
    chunk_elements: int = 1 << 21
    depth_slice: int = 32
    recompute_backward: bool = True
    compiled: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not (0.0 < self.near < self.far):
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if not (self.eps2d >= 0.0 and math.isfinite(self.eps2d)):
            raise ValueError(f"eps2d must be finite and >= 0, got {self.eps2d}")
        if not self.sigma_cutoff > 0.0:
            raise ValueError(f"sigma_cutoff must be > 0, got {self.sigma_cutoff}")
        if not (0.0 < self.alpha_min < self.alpha_max <= 1.0):
            raise ValueError(f"need 0 < alpha_min < alpha_max <= 1, got {self.alpha_min}, {self.alpha_max}")
        if not (0.0 <= self.transmittance_min < 1.0):
            raise ValueError(f"transmittance_min must be in [0, 1), got {self.transmittance_min}")
        if not (isinstance(self.tile_size, int) and self.tile_size >= 1):
            raise ValueError(f"tile_size must be a positive int, got {self.tile_size!r}")
        if not (isinstance(self.chunk_elements, int) and self.chunk_elements >= 1):
            raise ValueError(f"chunk_elements must be a positive int, got {self.chunk_elements!r}")
        if not (isinstance(self.depth_slice, int) and self.depth_slice >= 1):
            raise ValueError(f"depth_slice must be a positive int, got {self.depth_slice!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


class RenderResult(NamedTuple):
    """Rendered images, channel-last.

    rgb: [..., C, H, W, 3], composited over the background (premultiplied if none).
    alpha: [..., C, H, W, 1], 1 - final transmittance.
    depth: [..., C, H, W, 1], alpha-normalised expected planar camera z of the Gaussian
        centres, sum(w z) / sum(w); 0 where nothing was drawn (gsplat's "ED").
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor


class Gaussians(NamedTuple):
    """Activated Gaussian parameters, in the order ``render_gaussians`` takes them.

    means [..., N, 3], quats [..., N, 4] (w, x, y, z; normalised by the renderer),
    scales [..., N, 3] (positive), opacities [..., N] in [0, 1], colors [..., N, 3] rgb.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor
