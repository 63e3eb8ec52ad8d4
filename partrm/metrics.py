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

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _ms_ssim
from scipy.stats import bootstrap
from torch import Tensor

from partrm.lpips import LPIPS

__all__ = ["OVERALL", "PSNR_CAP", "aggregate", "alpha_composite", "bootstrap_ci", "dilate_mask", "lpips_distance", "psnr",
           "recovery_ratio", "region_lpips", "region_psnr", "region_ssim", "ssim"]

OVERALL = "overall"
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
PSNR_CAP = 100.0
"""Region PSNRs are capped here (an MSE of 1e-10 on [0, 1] images), so identical regions give a
finite value and group means, deltas and the recovery ratio stay defined."""


def _check_pair(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {list(pred.shape)} and target {list(target.shape)} differ in shape")
    if pred.ndim != 4:
        raise ValueError(f"{name} expects [B, C, H, W] images, got {list(pred.shape)}")


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0, cap: float | None = None) -> Tensor:
    """Per-image PSNR in dB, [B] float64: ``10 log10(data_range^2 / MSE)``, MSE over C, H, W.

    Computed in float64 so that a known error reproduces the closed form exactly. Identical
    images give ``+inf`` unless ``cap`` is given (the full-image benchmark columns keep inf:
    an inf in a table mean is visible and traceable to its row; the region metrics, whose
    means enter ratios, cap at ``PSNR_CAP``).
    """
    _check_pair(pred, target, "psnr")
    diff = pred.detach().double() - target.detach().double()
    mse = diff.pow(2).flatten(1).mean(dim=1)
    out = 10.0 * torch.log10(data_range**2 / mse)
    return out.clamp(max=cap) if cap is not None else out


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM [B] via ``pytorch_msssim.ssim``: Gaussian window 11, sigma 1.5,
    K = (0.01, 0.03), data_range 1, valid (unpadded) filtering, mean over channels and space.

    The usual benchmark setting (as in Wang et al. 2004 and the LGM/PartRM evaluations);
    differentiable, so it can also serve as a loss.
    """
    _check_pair(pred, target, "ssim")
    return _ms_ssim(pred, target, data_range=1.0, size_average=False, win_size=SSIM_WINDOW, win_sigma=SSIM_SIGMA)


def _check_mask(pred: Tensor, mask: Tensor, name: str) -> Tensor:
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != pred.shape[0] or mask.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"{name}: mask must be [B, 1, H, W] matching images {list(pred.shape)}, got {list(mask.shape)}")
    return mask.to(device=pred.device, dtype=torch.bool)


def dilate_mask(mask: Tensor, pixels: int) -> Tensor:
    """Boolean masks [B, 1, H, W] grown by ``pixels`` (square structuring element: every pixel
    within Chebyshev distance ``pixels`` of the mask joins it)."""
    if pixels <= 0:
        return mask.bool()
    return F.max_pool2d(mask.float(), kernel_size=2 * pixels + 1, stride=1, padding=pixels) > 0.5


def region_psnr(pred: Tensor, target: Tensor, mask: Tensor, pooled: bool = False, data_range: float = 1.0,
                cap: float | None = PSNR_CAP) -> Tensor:
    """PSNR over the pixels of ``mask`` [B, 1, H, W] only (MSE over C and the masked pixels):
    [B], or one value for all images together with ``pooled`` (the masked pixels of every
    view form one region). Pixels outside the mask do not count at all. An empty region
    gives NaN (n/a); a perfect one ``cap`` (None: inf)."""
    _check_pair(pred, target, "region_psnr")
    m = _check_mask(pred, mask, "region_psnr").double()
    sq = (pred.detach().double() - target.detach().double()).pow(2) * m
    dims = (0, 1, 2, 3) if pooled else (1, 2, 3)
    count = m.sum(dim=dims) * pred.shape[1]
    mse = sq.sum(dim=dims) / count
    out = 10.0 * torch.log10(data_range**2 / mse)
    out = out.clamp(max=cap) if cap is not None else out
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def _gauss_window(size: int, sigma: float, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(pred: Tensor, target: Tensor) -> Tensor:
    """The SSIM map [B, C, H - 10, W - 10] with ``ssim``'s settings (Gaussian window 11,
    sigma 1.5, K = (0.01, 0.03), data range 1, valid filtering): its mean over C, H, W is
    ``ssim``. Map pixel (i, j) is the window centred on image pixel (i + 5, j + 5)."""
    _check_pair(pred, target, "ssim_map")
    c = pred.shape[1]
    g = _gauss_window(SSIM_WINDOW, SSIM_SIGMA, pred.dtype, pred.device)

    def blur(x: Tensor) -> Tensor:
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    c1, c2 = SSIM_K[0] ** 2, SSIM_K[1] ** 2
    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x**2
    syy = blur(target * target) - mu_y**2
    sxy = blur(pred * target) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs


def region_ssim(pred: Tensor, target: Tensor, mask: Tensor, pooled: bool = False) -> Tensor:
    """Mean of the SSIM map over the windows centred on ``mask`` pixels: [B] (or one value
    with ``pooled``); NaN where no window centre is in the mask. A full mask gives ``ssim``.
    (A window near the region's border also sees a few pixels outside it: SSIM is a local
    statistic; the region's dilation keeps those pixels background or the part's own.)"""
    m = _check_mask(pred, mask, "region_ssim")
    r = SSIM_WINDOW // 2
    m = m[..., r : m.shape[-2] - r, r : m.shape[-1] - r].to(pred.dtype)
    smap = ssim_map(pred.detach(), target.detach()).mean(dim=1, keepdim=True)
    dims = (0, 1, 2, 3) if pooled else (1, 2, 3)
    count = m.sum(dim=dims)
    out = (smap * m).sum(dim=dims) / count.clamp(min=1)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def region_lpips(model: LPIPS | None, pred: Tensor, target: Tensor, mask: Tensor, pooled: bool = False) -> Tensor | None:
    """LPIPS averaged over the mask at every VGG layer (the mask area-resized to each layer):
    [B] or one value with ``pooled``; None without LPIPS weights."""
    if model is None:
        return None
    _check_pair(pred, target, "region_lpips")
    return model(pred, target, mask=_check_mask(pred, mask, "region_lpips"), pooled=pooled)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean (``scipy.stats.bootstrap``, seeded). Fewer
    than 2 finite values: (None, None); all values equal: that value twice."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return None, None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def recovery_ratio(method: float | None, static: float | None, oracle: float | None, eps: float = 1e-6) -> float | None:
    """Motion recovery ratio R = (method - static) / (oracle - static): 0 = no better than not
    moving anything, 1 = as good as the true motion applied to the teacher's Gaussians.
    None (undefined) when a value is missing or not finite, or when the oracle does not
    differ from static by more than ``eps`` (nothing to recover)."""
    if method is None or static is None or oracle is None:
        return None
    if not all(math.isfinite(v) for v in (method, static, oracle)):
        return None
    gap = oracle - static
    if abs(gap) <= eps:
        return None
    return (method - static) / gap


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
