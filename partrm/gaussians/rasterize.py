"""One rendering API for 3D Gaussians, with a CPU (pure PyTorch) and a CUDA (gsplat) backend.

Conventions are those of ``partdrag4d.cameras``: ``viewmats`` are OpenCV world-to-camera
matrices (x right, y down, z forward), ``Ks`` are pixel intrinsics, and the centre of pixel
(col, row) is at (col + 0.5, row + 0.5). Shapes use gsplat's letters: N Gaussians,
C cameras, B objects (optional batch), H x W pixels.

Images are channel-last, ``[..., C, H, W, 3]`` like gsplat's output (so the gsplat path needs
no copies); use ``rgb.permute(..., 3, 1, 2)``-style moves for ``[C, 3, H, W]`` models.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import layout
from .gsplat_backend import render_gsplat
from .torch_backend import render_torch
from .types import BACKENDS, Gaussians, RasterConfig, RenderResult

__all__ = ["BACKENDS", "Gaussians", "RasterConfig", "RenderResult", "gaussians_from_lgm", "gaussians_to_lgm",
           "render_gaussians", "select_backend"]


def gaussians_from_lgm(x: Tensor) -> Gaussians:
    """Split LGM's 14-channel Gaussians ``[..., N, 14]`` (``layout``) into API fields (views, no copy)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[-1] != layout.NUM_CHANNELS:
        raise ValueError(f"expected [..., N, {layout.NUM_CHANNELS}], got {tuple(x.shape)}")
    return Gaussians(
        means=x[..., layout.XYZ],
        quats=x[..., layout.ROTATION],
        scales=x[..., layout.SCALE],
        opacities=x[..., layout.OPACITY].squeeze(-1),
        colors=x[..., layout.RGB],
    )


def gaussians_to_lgm(g: Gaussians) -> Tensor:
    """Pack API fields back into LGM's ``[..., N, 14]`` layout (inverse of ``gaussians_from_lgm``)."""
    fields = [
        (layout.XYZ, g.means),
        (layout.OPACITY, g.opacities[..., None]),
        (layout.SCALE, g.scales),
        (layout.ROTATION, g.quats),
        (layout.RGB, g.colors),
    ]
    parts = [t for _, t in sorted(fields, key=lambda f: f[0].start)]
    out = torch.cat(parts, dim=-1)
    if out.shape[-1] != layout.NUM_CHANNELS:
        raise ValueError(f"fields do not add up to {layout.NUM_CHANNELS} channels: {out.shape[-1]}")
    return out


def render_gaussians(
    means: Tensor,  # [N, 3] or [B, N, 3], world frame
    quats: Tensor,  # [(B,) N, 4] w, x, y, z (need not be unit)
    scales: Tensor,  # [(B,) N, 3] positive
    opacities: Tensor,  # [(B,) N] in [0, 1]
    colors: Tensor,  # [(B,) N, 3]
    viewmats: Tensor,  # [(B,) C, 4, 4] OpenCV world-to-camera
    Ks: Tensor,  # [(B,) C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    background: Tensor | Sequence[float] | float | None = None,  # [3] or [(B,) C, 3]; None: premultiplied
    config: RasterConfig | None = None,
) -> RenderResult:  # rgb [(B,) C, H, W, 3], alpha and depth [(B,) C, H, W, 1]
    """Render Gaussians for a batch of cameras; differentiable w.r.t. every tensor input (gsplat: not Ks).

    With a batch dimension, object b is rendered by its own cameras ``viewmats[b]``.
    ``background`` is added as ``T_final * background`` (white: ``background=1.0``).
    """
    config = config if config is not None else RasterConfig()
    if not isinstance(config, RasterConfig):
        raise TypeError(f"config must be a RasterConfig, got {type(config).__name__}")
    batched, bg = _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background)
    if not batched:
        means, quats, scales, opacities, colors = (t[None] for t in (means, quats, scales, opacities, colors))
        viewmats, Ks = viewmats[None], Ks[None]
        bg = bg[None] if bg is not None else None

    backend = select_backend(config.backend, means)
    if backend == "gsplat":
        result = render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, bg, config)
    else:
        result = render_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, bg, config)
    if not batched:
        result = RenderResult(*(t[0] for t in result))
    return result


def select_backend(name: str, means: Tensor) -> str:
    """Resolve "auto" and check that the requested backend can run on these tensors."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "torch":
        return "torch"
    if name == "gsplat":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'gsplat' needs CUDA, which is not available here; use backend='torch'")
        if not means.is_cuda:
            raise RuntimeError("backend 'gsplat' needs CUDA tensors; move the inputs to a GPU or use backend='torch'")
        return "gsplat"
    return "gsplat" if means.is_cuda else "torch"


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background):
    """Check shapes, dtypes and devices; return (batched, background as [(B,) C, 3] or None)."""
    named = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks)
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    dtype, device = means.dtype, means.device
    for name, t in named.items():
        if t.dtype != dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but means has {dtype}; use one dtype")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but means is on {device}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")

    if means.dim() not in (2, 3) or means.shape[-1] != 3:
        raise ValueError(f"means must be [N, 3] or [B, N, 3], got {tuple(means.shape)}")
    batched = means.dim() == 3
    lead = tuple(means.shape[:-1])  # (N,) or (B, N)
    expect = {"quats": lead + (4,), "scales": lead + (3,), "opacities": lead, "colors": lead + (3,)}
    for name, shape in expect.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(
                f"{name} must have shape {list(shape)} to match means {list(means.shape)}, got {list(named[name].shape)}"
            )
    cam_lead = lead[:-1]  # () or (B,)
    if (
        viewmats.dim() != len(cam_lead) + 3
        or tuple(viewmats.shape[: len(cam_lead)]) != cam_lead
        or viewmats.shape[-2:] != (4, 4)
    ):
        raise ValueError(f"viewmats must be [{'B, ' if batched else ''}C, 4, 4], got {list(viewmats.shape)}")
    C = viewmats.shape[-3]
    if C == 0:
        raise ValueError("need at least one camera")
    if tuple(Ks.shape) != cam_lead + (C, 3, 3):
        raise ValueError(f"Ks must have shape {list(cam_lead + (C, 3, 3))} to match viewmats, got {list(Ks.shape)}")

    bg = None
    if background is not None:
        bg = torch.as_tensor(background, dtype=dtype, device=device)
        if bg.dim() == 0:
            bg = bg.expand(3)
        try:
            bg = torch.broadcast_to(bg, cam_lead + (C, 3))
        except RuntimeError:
            raise ValueError(
                f"background must be a scalar, [3] or [{'B, ' if batched else ''}C, 3], got {list(bg.shape)}"
            ) from None
    return batched, bg
