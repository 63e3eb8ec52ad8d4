"""LPIPS (Zhang et al. 2018) with the VGG16 trunk, version 0.1, in plain PyTorch.

Why not the ``lpips`` package: it needs torchvision (which cannot be installed beside the
pinned torch) and downloads weights at construction. Here nothing is downloaded: the
weights are two local files the user passes on the command line,

* ``--vgg-weights``: torchvision's ImageNet VGG16 checkpoint ``vgg16-397923af.pth`` (the
  whole-model state dict; only its ``features.*`` tensors are used), or the same tensors as
  ``.safetensors`` (keys ``features.N.weight``/``features.N.bias`` or bare ``N.weight``);
* ``--lpips-weights``: the lpips package's ``lpips/weights/v0.1/vgg.pth`` (keys
  ``lin0.model.1.weight`` .. ``lin4.model.1.weight``, shapes ``[1, C, 1, 1]``), or the same
  tensors as ``.safetensors``.

The computation follows lpips v0.1 for ``net='vgg'`` with ``normalize=True``: inputs in
[0, 1] are mapped to [-1, 1], shifted/scaled by the ScalingLayer constants, passed through
VGG16 ``features`` (taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = outputs of modules
3, 8, 15, 22, 29), each tap is unit-normalised over channels, the squared difference goes
through a bias-free 1x1 conv (``linK``), is averaged over space and summed over the five
layers. One deliberate difference: the channel norm is computed as
``sqrt(max(sum x^2, eps^2)) + eps`` instead of ``sqrt(sum x^2) + eps``; the forward value
is the same wherever ``sum x^2 >= 1e-20`` (and the feature is ~0 elsewhere), but the
gradient stays finite where a whole feature vector is exactly zero (ReLU), where lpips's
formula yields NaN, which matters because stage-2 training uses this as a loss.

The module is frozen (parameters ``requires_grad=False``, always in eval mode: ``train()``
is a no-op for it) but differentiable with respect to its inputs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = [
    "LIN_CHANNELS",
    "LIN_KEYS",
    "LPIPS",
    "SCALE",
    "SHIFT",
    "TAP_INDICES",
    "VGG16Features",
    "VGG_CONV_INDICES",
    "load_lpips",
]

log = logging.getLogger(__name__)

# lpips ScalingLayer: applied to inputs in [-1, 1]; (x - SHIFT) / SCALE.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision vgg16 (config "D") features: conv3x3+ReLU per number, "M" = 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices of the conv layers inside ``features`` (the keys of a torchvision checkpoint).
VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# Outputs tapped by LPIPS: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
TAP_INDICES = (3, 8, 15, 22, 29)
LIN_CHANNELS = (64, 128, 256, 512, 512)
# Key names of the five linear layers in the lpips package's weights/v0.1/vgg.pth.
LIN_KEYS = tuple(f"lin{k}.model.1.weight" for k in range(5))
# LPIPS needs relu5_3, which sits after four 2x2 pools.
MIN_SIZE = 16

_EPS = 1e-10
_DISABLED_MESSAGE = "LPIPS disabled: no local VGG/LPIPS weights (pass --vgg-weights and --lpips-weights)"
_warned_disabled = False


class VGG16Features(nn.Module):
    """VGG16 ``features`` with torchvision's module numbering, so ``state_dict()`` keys are
    ``features.0.weight`` ... ``features.28.bias`` and a torchvision checkpoint loads as is."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The five LPIPS taps (relu1_2 .. relu5_3); the final pool is never run."""
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAP_INDICES:
                taps.append(x)
                if i == TAP_INDICES[-1]:
                    break
        return taps


class _NetLin(nn.Module):
    """Bias-free 1x1 conv behind an identity at index 0, so its weight is ``model.1.weight``
    like the lpips package's NetLinLayer (whose index 0 is a Dropout that is inert in eval)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _unit_normalise(f: Tensor) -> Tensor:
    """Divide by the channel L2 norm (+eps, as lpips), with a finite gradient at zero."""
    sq = (f * f).sum(dim=1, keepdim=True)
    return f / (torch.sqrt(sq.clamp_min(_EPS * _EPS)) + _EPS)


class LPIPS(nn.Module):
    """LPIPS-VGG v0.1 distance between images in [0, 1]: ``model(pred, target) -> [B]``.

    ``LPIPS()`` has untrained weights (PyTorch default conv init, non-negative random linear
    weights, so it is still a pseudo-distance): only useful for tests. Use ``from_files`` or
    ``load_lpips`` for the real metric.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = VGG16Features()
        for k, c in enumerate(LIN_CHANNELS):
            lin = _NetLin(c)
            nn.init.uniform_(lin.model[1].weight, 0.0, 1.0 / c)
            setattr(self, f"lin{k}", lin)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @property
    def lins(self) -> list[_NetLin]:
        return [getattr(self, f"lin{k}") for k in range(len(LIN_CHANNELS))]

    def freeze(self) -> "LPIPS":
        """Eval mode and no parameter gradients; called after every weight change."""
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "LPIPS":
        """Always eval: a parent's ``.train()`` must not change a frozen metric."""
        return super().train(False)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None, pooled: bool = False) -> Tensor:
        """Per-image distance [B] for pred, target [B, 3, H, W] in [0, 1] (H, W >= 16).

        ``mask`` [B, 1, H, W]: average each layer's distance map over the mask (area-resized
        to the layer, as a weight) instead of the whole image; ``pooled``: one value over all
        images (their masks together). An empty mask gives NaN."""
        if pred.shape != target.shape:
            raise ValueError(f"LPIPS: pred {list(pred.shape)} and target {list(target.shape)} differ in shape")
        if pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"LPIPS expects [B, 3, H, W] images, got {list(pred.shape)}")
        if min(pred.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS needs H, W >= {MIN_SIZE} (relu5_3 is 1/16 resolution), got {list(pred.shape[-2:])}")
        b = pred.shape[0]
        x = torch.cat([pred, target], dim=0)
        x = ((2.0 * x - 1.0) - self.shift) / self.scale  # lpips normalize=True, then ScalingLayer
        total = x.new_zeros(1 if pooled else b)
        for feat, lin in zip(self.net(x), self.lins):
            f = _unit_normalise(feat)
            diff = lin((f[:b] - f[b:]) ** 2)
            if mask is None:
                total = total + (diff.mean() if pooled else diff.mean(dim=(1, 2, 3)))
                continue
            w = torch.nn.functional.adaptive_avg_pool2d(mask.to(diff.dtype), diff.shape[-2:])
            dims = (0, 1, 2, 3) if pooled else (1, 2, 3)
            total = total + (diff * w).sum(dim=dims) / w.sum(dim=dims)
        return total[0] if pooled else total

    @classmethod
    def from_files(cls, vgg_path: str | Path, lin_path: str | Path, device: torch.device | str | None = None) -> "LPIPS":
        """Build from a torchvision VGG16 checkpoint and the lpips v0.1 linear weights
        (``.pth`` via ``torch.load(weights_only=True)`` or ``.safetensors``)."""
        vgg_file = _existing(vgg_path, "VGG16 weights", "--vgg-weights", "torchvision's vgg16-397923af.pth")
        lin_file = _existing(lin_path, "LPIPS linear weights", "--lpips-weights", "the lpips package's weights/v0.1/vgg.pth")
        model = cls()
        model.net.features.load_state_dict(_vgg_features(_read_tensors(vgg_file), vgg_file), strict=True)
        lin_sd = _read_tensors(lin_file)
        missing = [k for k in LIN_KEYS if k not in lin_sd]
        if missing:
            raise ValueError(f"{lin_file}: not lpips VGG linear weights, missing {missing} (have {sorted(lin_sd)[:8]})")
        for k, (key, c) in enumerate(zip(LIN_KEYS, LIN_CHANNELS)):
            w = lin_sd[key]
            if tuple(w.shape) != (1, c, 1, 1):
                raise ValueError(f"{lin_file}: {key} has shape {list(w.shape)}, expected [1, {c}, 1, 1] (VGG trunk)")
            with torch.no_grad():
                getattr(model, f"lin{k}").model[1].weight.copy_(w)
        model.freeze()
        return model.to(device) if device is not None else model


def load_lpips(vgg_path: str | Path | None, lin_path: str | Path | None,
               device: torch.device | str | None = None) -> LPIPS | None:
    """The LPIPS metric from the two CLI paths, or None when neither is given (the caller then
    skips the LPIPS term and reports n/a; a warning says so once per process). Giving only
    one of the two is a usage error (ValueError naming the missing flag)."""
    global _warned_disabled
    if vgg_path is None and lin_path is None:
        if not _warned_disabled:
            log.warning(_DISABLED_MESSAGE)
            _warned_disabled = True
        return None
    if vgg_path is None:
        raise ValueError("LPIPS needs the VGG16 trunk too: pass --vgg-weights PATH (torchvision's vgg16-397923af.pth)")
    if lin_path is None:
        raise ValueError("LPIPS needs its linear layers too: pass --lpips-weights PATH (the lpips package's weights/v0.1/vgg.pth)")
    return LPIPS.from_files(vgg_path, lin_path, device=device)


def _existing(path: str | Path, what: str, flag: str, expected: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: '{p}' (pass {flag} PATH pointing at {expected})")
    return p


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """A flat name->tensor dict from .safetensors or a (weights-only) torch checkpoint."""
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return obj


def _vgg_features(sd: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """``features.N.*`` of a whole-model checkpoint (classifier ignored) or bare ``N.*`` keys."""
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    if not feats:
        feats = {k: v for k, v in sd.items() if re.fullmatch(r"\d+\.(weight|bias)", k)}
    expected = {f"{i}.{n}" for i in VGG_CONV_INDICES for n in ("weight", "bias")}
    if set(feats) != expected:
        missing = sorted(expected - set(feats), key=lambda s: int(s.split(".")[0]))
        extra = sorted(set(feats) - expected)
        raise ValueError(f"{path}: not a torchvision VGG16 checkpoint (features missing {missing[:6]}, unexpected {extra[:6]})")
    return feats
