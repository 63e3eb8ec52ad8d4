"""PartRM's RGB-D mode: the static reconstruction is geometric, the network learns the motion.

Why it exists: the paper's PartRM stands on an LGM pretrained on Objaverse; no such weights
are reachable here and no CPU can pretrain one, so an RGB-only model trained from scratch
draws new objects as blurs. Depth cameras are common on robots, and with depth the static
reconstruction needs no network at all: the splatter image unprojected from the 4 input
views (``partrm.gsdb_render.splatter_from_view``, the ``gsdb build --source render``
construction) reaches 28 dB on held-out states at S = 128. What is left to learn is what
the drags change.

The network is LGM's multi-view U-Net (``unet.py``) on RGB + depth + Plücker rays, with the
paper's multi-scale drag embedding (Eq. 3-4, zero-initialised merges), and a 1x1 output
convolution initialised to zero that predicts, per cell of its output grid, a change of
each Gaussian: position offset, rotation (a quaternion multiplied on the left), log-scale,
opacity and colour. The output grid is coarser than the Gaussians (32 vs 128 per side in
the CPU recipe); the change is upsampled bilinearly and **gated at full splat resolution**
by the propagated drag region (the moving part's mask in each input view, what the paper's
drag propagation produces): position, rotation and scale change only inside it, so a part
boundary is as sharp as the mask, and nothing outside the part can move. Opacity and colour
may also change in a ring of ``appearance_ring`` cells around it, where opening a part
uncovers what the source views did not see (stage 2 learns that).

An untrained model returns the static reconstruction exactly (every change is an exact 0,
a multiplication by exactly 1 or by the identity quaternion).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from partdrag4d.rigid import quat_multiply
from partdrag4d.store import atomic_write_bytes
from partrm.gaussians import layout
from partrm.models.drag_embedding import MultiScaleDragEmbedding, levels_for_sizes
from partrm.models.lgm import (DATASET_CAM_DISTANCE, IMAGENET_MEAN, IMAGENET_STD, LGM, CheckpointError, LGMConfig, plucker_rays,
                              read_checkpoint_metadata, read_checkpoint_tensors, reading_checkpoint)
from partrm.models.unet import UNet

MODES = ("rgb", "rgbd")
"""PartRM's input modes: the paper's RGB (LGM reconstructs), RGB-D (geometry reconstructs)."""
INPUT_CHANNELS = 11  # RGB (3) + depth about the ring distance (1) + depth validity (1) + Plücker (6)
HIDDEN = 32  # U-Net output channels before the zero-initialised change head
CHANGE = {"xyz": slice(0, 3), "rotation": slice(3, 7), "scale": slice(7, 10), "opacity": slice(10, 11), "rgb": slice(11, 14)}


@dataclass(frozen=True)
class RGBDConfig:
    """``unet``: the U-Net's architecture (an ``LGMConfig``; its ``splat_size`` is the change
    grid); ``splat_size``: the static reconstruction's Gaussians per view side (its
    ``input_views`` and construction are ``gsdb_render.RenderGsdbConfig``'s defaults)."""

    unet: LGMConfig = field(default_factory=LGMConfig.tiny)
    splat_size: int = 128
    drag_sizes: Optional[tuple[int, ...]] = None
    fourier_frequencies: int = 8
    mlp_hidden: int = 128
    merge_kernel: int = 1
    drag_views: str = "all"
    gate_fraction: float = 0.5  # a Gaussian's cell is in the drag region when this share of its pixels is
    appearance_ring: int = 2  # cells around the region where opacity and colour may change
    mode: str = "rgbd"

    def __post_init__(self) -> None:
        if self.splat_size % self.unet.splat_size:
            raise ValueError(f"splat_size {self.splat_size} must be a multiple of the U-Net's output size {self.unet.splat_size}")
        if not 0.0 < self.gate_fraction <= 1.0 or self.appearance_ring < 0:
            raise ValueError("gate_fraction must be in (0, 1] and appearance_ring >= 0")

    def levels(self) -> tuple[int, ...]:
        if self.drag_sizes is None:
            return tuple(range(len(self.unet.down_channels)))
        return levels_for_sizes(self.unet.hook_sizes, tuple(self.drag_sizes))

    def to_json(self) -> str:
        d = asdict(self)
        d["unet"] = json.loads(self.unet.to_json())
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "RGBDConfig":
        d = json.loads(text)
        unet = LGMConfig.from_json(json.dumps(d.pop("unet")))
        if d.get("drag_sizes") is not None:
            d["drag_sizes"] = tuple(d["drag_sizes"])
        return cls(unet=unet, **d)


def drag_region(masks: Tensor, size: int, fraction: float) -> Tensor:
    """Moving-part masks [..., H, W] (bool, render size) -> [..., 1, size, size] bool: a cell is
    in the region when at least ``fraction`` of its pixels are."""
    *lead, h, w = masks.shape
    m = masks.reshape(-1, 1, h, w).float()
    share = F.adaptive_avg_pool2d(m, size) if h % size == 0 else F.interpolate(m, size=(size, size), mode="area")
    return (share >= fraction - 1e-6).reshape(*lead, 1, size, size)


def ring(region: Tensor, cells: int) -> Tensor:
    """``region`` [..., 1, S, S] dilated by ``cells`` (a square neighbourhood)."""
    if cells == 0:
        return region
    shape = region.shape
    m = region.reshape(-1, 1, *shape[-2:]).float()
    return (F.max_pool2d(m, 2 * cells + 1, stride=1, padding=cells) > 0).reshape(shape)


class RGBDPartRM(nn.Module):
    """Static splatter images + RGB-D input views + drags -> the target state's splatter images."""

    mode = "rgbd"

    def __init__(self, config: RGBDConfig = RGBDConfig()):
        super().__init__()
        self.config = config
        c = config.unet
        self.unet = UNet(INPUT_CHANNELS, HIDDEN, down_channels=c.down_channels, down_attention=c.down_attention,
                         mid_attention=c.mid_attention, up_channels=c.up_channels, up_attention=c.up_attention,
                         layers_per_block=c.layers_per_block, attention_heads=c.attention_heads, norm_groups=c.norm_groups,
                         num_views=c.num_views)
        self.change = nn.Conv2d(HIDDEN, layout.NUM_CHANNELS, kernel_size=1)
        nn.init.zeros_(self.change.weight)
        nn.init.zeros_(self.change.bias)
        self.drag = MultiScaleDragEmbedding(self.unet.hook_channels, c.hook_sizes, config.levels(), config.fourier_frequencies,
                                            config.mlp_hidden, config.merge_kernel)
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    @property
    def input_size(self) -> int:
        return self.config.unet.input_size

    # ------------------------------------------------------------ inputs

    def prepare_inputs(self, rgb: Tensor, depth: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
        """rgb [B, V, 3, H, W] on white in [0, 1], planar depth [B, V, 1, H, W] (inf: background),
        K for H x W, OpenCV c2w (object frame) -> the U-Net input [B, V, 11, s, s]."""
        b, v, _, h, w = rgb.shape
        size = self.input_size
        if depth.shape[-2:] != (h, w):
            raise ValueError(f"depth {tuple(depth.shape[-2:])} and RGB {(h, w)} of the input views differ in size")
        valid = torch.isfinite(depth)
        centred = torch.where(valid, depth - DATASET_CAM_DISTANCE, torch.zeros_like(depth))
        x = torch.cat([(rgb - self.rgb_mean.to(rgb)) / self.rgb_std.to(rgb), centred.to(rgb), valid.to(rgb)], dim=2)
        K = K.to(torch.float64).clone()
        if (h, w) != (size, size):
            x = F.interpolate(x.reshape(b * v, 5, h, w), size=(size, size), mode="area").view(b, v, 5, size, size)
            K[..., 0, :] *= size / w
            K[..., 1, :] *= size / h
        rays = plucker_rays(K, c2w.to(torch.float64), size, size, dtype=rgb.dtype)
        return torch.cat([x, rays.to(x.device)], dim=2)

    # ------------------------------------------------------------ forward

    def changes(self, x: Tensor, drags: Optional[Tensor], valid: Optional[Tensor]) -> Tensor:
        """U-Net input [B, V, 11, s, s] + drags -> raw changes [B, V, 14, S_net, S_net]."""
        b, v = x.shape[:2]
        hook = None
        if drags is not None:
            if valid is None:
                valid = torch.ones(drags.shape[:-1], dtype=torch.bool, device=drags.device)
            hook = self.drag.hook(drags.reshape(b * v, *drags.shape[2:]).to(x.dtype), valid.reshape(b * v, -1))
        feats = self.unet(x.flatten(0, 1), down_hook=hook, num_views=v)
        out = self.change(F.silu(feats))
        return out.view(b, v, *out.shape[1:])

    def forward(self, x: Tensor, static: Tensor, region: Tensor, drags: Optional[Tensor] = None,
                valid: Optional[Tensor] = None) -> Tensor:
        """U-Net input [B, V, 11, s, s], static splatter [B, V, 14, S, S], drag region
        [B, V, 1, S, S] bool -> the predicted splatter [B, V, 14, S, S]."""
        return apply_changes(static, self.changes(x, drags, valid), region, self.config.appearance_ring)

    def reconstruct(self, rgb: Tensor, cameras: Any, drags: Optional[Tensor] = None, valid: Optional[Tensor] = None, *,
                    depth: Tensor, static: Tensor, region: Tensor) -> Tensor:
        """Inputs as ``prepare_inputs`` (cameras = (K, c2w)) -> Gaussians [B, V*S*S, 14] (object frame)."""
        K, c2w = cameras
        return LGM.gaussians(self(self.prepare_inputs(rgb, depth, K, c2w), static, region, drags, valid))

    # ------------------------------------------------------------ weights

    def save(self, path: Union[str, Path]) -> None:
        """Weights and config in one safetensors file, written atomically."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(Path(path), safetensors_bytes(state, metadata={"format": "pt", "partrm_rgbd_config": self.config.to_json()}))

    @classmethod
    def load(cls, path: Union[str, Path], map_location: str = "cpu") -> "RGBDPartRM":
        path = Path(path)
        what = "RGB-D PartRM checkpoint"
        meta = read_checkpoint_metadata(path, what)
        if "partrm_rgbd_config" not in meta:
            raise CheckpointError(f"{path}: cannot load {what}: no partrm_rgbd_config metadata")
        with reading_checkpoint(path, what):  # a config or tensors that do not fit: damaged
            model = cls(RGBDConfig.from_json(meta["partrm_rgbd_config"]))
            model.load_state_dict(read_checkpoint_tensors(path, map_location, what), strict=True)
        return model


def apply_changes(static: Tensor, raw: Tensor, region: Tensor, appearance_ring: int) -> Tensor:
    """The static splatter [B, V, 14, S, S] changed by ``raw`` [B, V, 14, s, s] (upsampled to S)
    inside ``region`` [B, V, 1, S, S] (position, rotation, scale) and its ring (opacity, colour).
    Zero changes give ``static`` bit for bit."""
    b, v, c, S, _ = static.shape
    if raw.shape[-1] != S:
        raw = F.interpolate(raw.flatten(0, 1), size=(S, S), mode="bilinear", align_corners=False).view(b, v, c, S, S)
    region = region.to(torch.bool)
    around = ring(region, appearance_ring)

    def ch(t: Tensor, s: slice) -> Tensor:
        return t[:, :, s]

    xyz = torch.where(region, ch(static, layout.XYZ) + ch(raw, CHANGE["xyz"]), ch(static, layout.XYZ))
    turn = ch(raw, CHANGE["rotation"]) + torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=raw.dtype, device=raw.device).view(1, 1, 4, 1, 1)
    turn = F.normalize(turn, dim=2)
    rotated = quat_multiply(turn.movedim(2, -1), ch(static, layout.ROTATION).movedim(2, -1)).movedim(-1, 2)
    rotation = torch.where(region, rotated, ch(static, layout.ROTATION))
    scale = torch.where(region, ch(static, layout.SCALE) * torch.exp(ch(raw, CHANGE["scale"])), ch(static, layout.SCALE))
    opacity = torch.where(around, (ch(static, layout.OPACITY) + ch(raw, CHANGE["opacity"])).clamp(0, 1), ch(static, layout.OPACITY))
    rgb = torch.where(around, (ch(static, layout.RGB) + ch(raw, CHANGE["rgb"])).clamp(0, 1), ch(static, layout.RGB))
    parts = {"xyz": xyz, "opacity": opacity, "scale": scale, "rotation": rotation, "rgb": rgb}
    order = sorted(parts, key=lambda k: getattr(layout, k.upper()).start)
    return torch.cat([parts[k] for k in order], dim=2)
