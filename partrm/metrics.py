"""Image metrics for training logs and the benchmark tables: PSNR, SSIM, LPIPS, per-group means.

Conventions: images are float tensors [B, 3, H, W] with values in [0, 1] (clamp renders
before scoring; nothing here clamps silently), and every metric returns one value per image
([B]) so callers can attach it to per-sample rows and aggregate by category with
``aggregate``. LPIPS is optional (it needs local weights, see ``partrm.lpips``): when the
model is None the LPIPS value is None, which ``aggregate`` treats as n/a.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from pytorch_msssim import ssim as _ms_ssim
from torch import Tensor

from partrm.lpips import LPIPS

__all__ = ["OVERALL", "aggregate", "alpha_composite", "lpips_distance", "psnr", "ssim"]

OVERALL = "overall"
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _check_pair(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {list(pred.shape)} and target {list(target.shape)} differ in shape")
    if pred.ndim != 4:
        raise ValueError(f"{name} expects [B, C, H, W] images, got {list(pred.shape)}")


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, [B] float64: ``10 log10(data_range^2 / MSE)``, MSE over C, H, W.

    Computed in float64 so that a known error reproduces the closed form exactly. Identical
    images give ``+inf`` (no cap: a cap would hide that a benchmark sample is degenerate; an
    inf in a table mean is visible and traceable to its row).
    """
    _check_pair(pred, target, "psnr")
    diff = pred.detach().double() - target.detach().double()
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM [B] via ``pytorch_msssim.ssim``: Gaussian window 11, sigma 1.5,
    K = (0.01, 0.03), data_range 1, valid (unpadded) filtering, mean over channels and space.

    The usual benchmark setting (as in Wang et al. 2004 and the LGM/PartRM evaluations);
    differentiable, so it can also serve as a loss.
    """
    _check_pair(pred, target, "ssim")
    return _ms_ssim(pred, target, data_range=1.0, size_average=False, win_size=SSIM_WINDOW, win_sigma=SSIM_SIGMA)


def lpips_distance(model: LPIPS | None, pred: Tensor, target: Tensor) -> Tensor | None:
    """Per-image LPIPS-VGG [B], or None when LPIPS is disabled (no local weights)."""
    if model is None:
        return None
    _check_pair(pred, target, "lpips")
    return model(pred, target)


def alpha_composite(rgb: Tensor, alpha: Tensor, background: float | Sequence[float] | Tensor,
                    premultiplied: bool = False) -> Tensor:
    """Composite [..., 3, H, W] colour with [..., 1, H, W] alpha over a background.

    ``premultiplied=False`` (straight alpha, e.g. the rendered RGBA PNGs):
    ``rgb * alpha + bg * (1 - alpha)``; ``premultiplied=True`` (e.g. a Gaussian render with
    no background): ``rgb + bg * (1 - alpha)``. ``background`` is a scalar, 3 values, or a
    tensor broadcastable to ``rgb`` (e.g. [B, 3, 1, 1]). Prediction and ground truth must be
    composited the same way before scoring, or the background dominates the metrics.
    """
    if alpha.shape[-3] != 1 or rgb.shape[-3] != 3:
        raise ValueError(f"alpha_composite expects rgb [..., 3, H, W] and alpha [..., 1, H, W], got {list(rgb.shape)} and {list(alpha.shape)}")
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    if bg.ndim == 1:
        if bg.shape[0] != 3:
            raise ValueError(f"background must be a scalar, 3 values or a broadcastable tensor, got shape {list(bg.shape)}")
        bg = bg.view(3, 1, 1)
    colour = rgb if premultiplied else rgb * alpha
    return colour + bg * (1.0 - alpha)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, Tensor):
        return v.numel() == 1
    return isinstance(v, numbers.Real)


def aggregate(rows: Iterable[Mapping[str, Any]], by: str) -> dict[Any, dict[str, float | int | None]]:
    """Per-group means of per-sample metric rows, plus an ``'overall'`` entry (all rows).

    ``rows`` are dicts such as ``{"category": "drawer", "object": "40147", "psnr": 24.1,
    "ssim": 0.91, "lpips": None}``. The metrics are the keys (other than ``by``) whose values
    are numbers (python/numpy scalars, one-element tensors) or None; keys holding other
    values (ids, names) are ignored, and a key mixing numbers with other values is an error.
    None means n/a: it is left out of that metric's mean. Per group (first-seen order, then
    ``'overall'``) the result holds ``metric -> mean`` (None when every value is n/a),
    ``'count' -> rows`` and ``'<metric>_count' -> values that entered the mean``.
    """
    rows = list(rows)
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for i, row in enumerate(rows):
        if by not in row:
            raise KeyError(f"aggregate: row {i} has no '{by}' field (keys: {sorted(row)})")
        g = row[by]
        if g == OVERALL:
            raise ValueError(f"aggregate: group name '{OVERALL}' is reserved for the all-rows mean")
        groups.setdefault(g, []).append(row)

    metrics: list[str] = []
    kinds: dict[str, set[bool]] = {}
    for row in rows:
        for k, v in row.items():
            if k == by:
                continue
            if k not in kinds:
                kinds[k] = set()
                metrics.append(k)
            if v is not None:
                kinds[k].add(_is_number(v))
    mixed = [k for k, s in kinds.items() if len(s) > 1]
    if mixed:
        raise TypeError(f"aggregate: fields {mixed} mix numbers with other values")
    metrics = [k for k in metrics if kinds[k] != {False}]

    def summarise(members: list[Mapping[str, Any]]) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        for m in metrics:
            vals = [float(r[m]) for r in members if r.get(m) is not None]
            out[m] = math.fsum(vals) / len(vals) if vals else None
            out[f"{m}_count"] = len(vals)
        out["count"] = len(members)
        return out

    result = {g: summarise(members) for g, members in groups.items()}
    result[OVERALL] = summarise(rows)
    return result
