"""CUDA backend: gsplat 1.5.3's fused kernels (JIT-compiled on first use on a GPU machine).

gsplat's projection is the one the torch backend copies, so results agree up to float
rounding and three constants gsplat compiles in: alpha clamp 0.999 (``alpha_max`` is not
honoured), alpha threshold 1/255 and transmittance stop 1e-4 (configs asking for other
values of these are refused rather than silently ignored). gsplat always bins to 16x16
tiles; results do not depend on the tile size. ``benchmarks/compare_gsplat.py`` checks
the two backends against each other on a GPU.
"""

from __future__ import annotations

import math

from torch import Tensor

from .types import RasterConfig, RenderResult

GSPLAT_ALPHA_MIN = 1.0 / 255.0
GSPLAT_ALPHA_MAX = 0.999
GSPLAT_TRANSMITTANCE_MIN = 1e-4
GSPLAT_TILE_SIZE = 16


def _check_config(config: RasterConfig) -> None:
    if not math.isclose(config.alpha_min, GSPLAT_ALPHA_MIN, rel_tol=1e-6):
        raise ValueError(f"gsplat compiles in alpha_min = 1/255; got {config.alpha_min} (use backend='torch')")
    if not math.isclose(config.transmittance_min, GSPLAT_TRANSMITTANCE_MIN, rel_tol=1e-6):
        raise ValueError(
            f"gsplat compiles in transmittance_min = 1e-4; got {config.transmittance_min} (use backend='torch')"
        )
    if config.sigma_cutoff < math.sqrt(2.0 * math.log(1.0 / GSPLAT_ALPHA_MIN)):
        raise ValueError(
            f"gsplat cuts Gaussians only through alpha_min (3.33 sigma); sigma_cutoff={config.sigma_cutoff} "
            "needs backend='torch'"
        )


def render_gsplat(
    means: Tensor,  # [B, N, 3] CUDA
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    colors: Tensor,  # [B, N, 3]
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    background: Tensor | None,  # [B, C, 3]
    config: RasterConfig,
) -> RenderResult:  # [B, C, H, W, 3|1|1]
    """Render batched CUDA inputs with ``gsplat.rasterization`` (float32 inside, like its kernels)."""
    _check_config(config)
    try:
        import gsplat  # lazy: gsplat is CUDA-only and JIT-compiles its kernels on first use
    except ImportError as exc:  # pragma: no cover - gsplat is a declared dependency
        raise RuntimeError("backend 'gsplat' needs the gsplat package (pip install gsplat==1.5.3)") from exc

    dtype = means.dtype
    f32 = [t.float().contiguous() for t in (means, quats, scales, opacities, colors, viewmats, Ks)]
    bg = background.float().contiguous() if background is not None else None
    render, alpha, _meta = gsplat.rasterization(
        *f32,
        width=width,
        height=height,
        near_plane=config.near,
        far_plane=config.far,
        eps2d=config.eps2d,
        tile_size=GSPLAT_TILE_SIZE,
        backgrounds=bg,
        render_mode="RGB+ED",
        rasterize_mode="antialiased" if config.antialiased else "classic",
        packed=False,
    )  # render [B, C, H, W, 4] (rgb over background, expected depth), alpha [B, C, H, W, 1]
    return RenderResult(render[..., :3].to(dtype), alpha.to(dtype), render[..., 3:4].to(dtype))
