"""PartRM's RGB-D mode: the static reconstruction is geometric, the network learns the motion.

Why it exists: the paper's PartRM stands on an LGM pretrained on Objaverse; no such weights
are reachable here and no CPU can pretrain one, so an RGB-only model trained from scratch
draws new objects as blurs. Depth cameras are common on robots, and with depth the static
reconstruction needs no network at all: the splatter image unprojected from the 4 input
views (``partrm.gsdb_render.splatter_from_view``, the ``gsdb build --source render``
construction) reaches 28 dB on held-out states at S = 128. What is left to learn is what
the drags change.

The network is LGM's multi-view U-Net (``unet.py``) on RGB + depth + Plücker rays, with the
paper's multi-scale drag embedding (Eq. 3-4, zero-initialised merges), and two heads whose
last layers start at zero: the moving part's **rigid motion** (axis-angle about the drag
region's centroid + translation, one per sample) from three pooled summaries — the U-Net
features over the region, the drags as 3D rays (``drag_features``) and the region's surface
(``surface_features``) — and a dense **appearance** change (log-scale, opacity, colour) on
the U-Net's output grid (32 vs 128 Gaussians per side in the CPU recipe), upsampled
bilinearly. Both are **gated at full splat resolution** by the propagated drag region (the
moving part's mask in each input view): position, rotation and scale change only inside it,
so a part boundary is as sharp as the mask and nothing outside the part moves; opacity and
colour may also change in a ring of ``appearance_ring`` cells around it, where opening a
part uncovers what the source views did not see (stage 2 learns that).

At prediction (not while training) the rigid motion is then taken along its own screw as
far as the user's drags say (``fit_amount``): the network reads the joint's axis and pivot
from the part's shape, the drags tell how far it moved, more precisely than a pooled
feature regresses it (on the test split: median amount error 0.30 -> 0.21).

An untrained model returns the static reconstruction exactly (every change is an exact 0,
a multiplication by exactly 1 or by the identity quaternion; the screw of no motion is no
motion, however far it is taken).
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
CHANGE = {"scale": slice(0, 3), "opacity": slice(3, 4), "rgb": slice(4, 7)}
"""Channels of the dense change head (per cell of the U-Net's output grid)."""
DENSE_CHANNELS = 7
MOTION_HIDDEN = 128
DRAG_FEATURES = 21  # per drag: start point, camera centre, start and end rays (relative to the region), 2D start, end, shifts
SHIFT_GAIN = 10.0
SURFACE_FEATURES = 6  # per Gaussian of the region: position relative to its centroid, normal


def _set_encoder(inputs: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())


def _pool(feats: Tensor, keep: Tensor) -> Tensor:
    """Masked mean and max over the set dim: feats [B, N, C], keep [B, N] -> [B, 2C] (zeros for an empty set)."""
    w = keep.to(feats.dtype)[..., None]
    mean = (feats * w).sum(1) / w.sum(1).clamp(min=1.0)
    peak = torch.where(keep[..., None], feats, torch.full_like(feats, -1.0)).amax(1)
    return torch.cat([mean, torch.where(keep.any(1, keepdim=True), peak, torch.zeros_like(peak))], dim=-1)


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
    fit_amount: bool = True  # at prediction, scale the motion along its screw to the user's drags (``fit_amount``)
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
        self.change = nn.Conv2d(HIDDEN, DENSE_CHANNELS, kernel_size=1)
        nn.init.zeros_(self.change.weight)
        nn.init.zeros_(self.change.bias)
        # the part's rigid motion (axis-angle, translation) from three pooled summaries: the U-Net's
        # features over the drag region, the drags as 3D rays (a set encoder), the region's surface
        self.drag_set = _set_encoder(DRAG_FEATURES, MOTION_HIDDEN)
        self.surface = _set_encoder(SURFACE_FEATURES, MOTION_HIDDEN // 2)
        self.motion = nn.Sequential(nn.Linear(2 * HIDDEN + 2 * MOTION_HIDDEN + MOTION_HIDDEN, MOTION_HIDDEN), nn.SiLU(),
                                    nn.Linear(MOTION_HIDDEN, MOTION_HIDDEN), nn.SiLU(), nn.Linear(MOTION_HIDDEN, 6))
        nn.init.zeros_(self.motion[-1].weight)
        nn.init.zeros_(self.motion[-1].bias)
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

    def changes(self, x: Tensor, static: Tensor, region: Tensor, drags: Optional[Tensor], valid: Optional[Tensor],
                cameras: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """U-Net input [B, V, 11, s, s], static splatter [B, V, 14, S, S], drag region
        [B, V, 1, S, S], drags, cameras (K for the input size, c2w) -> (the part's rigid motion
        [B, 6]: axis-angle about the region's centroid, translation; dense changes [B, V, 7, s, s])."""
        b, v = x.shape[:2]
        if drags is None:
            drags = x.new_zeros(b, v, 1, 4)
            valid = torch.zeros(b, v, 1, dtype=torch.bool, device=x.device)
        elif valid is None:
            valid = torch.ones(drags.shape[:-1], dtype=torch.bool, device=drags.device)
        hook = self.drag.hook(drags.reshape(b * v, *drags.shape[2:]).to(x.dtype), valid.reshape(b * v, -1))
        feats = F.silu(self.unet(x.flatten(0, 1), down_hook=hook, num_views=v))
        dense = self.change(feats)
        s = feats.shape[-1]
        cells = F.adaptive_max_pool2d(region.flatten(0, 1).to(feats.dtype), s).view(b, v, 1, s, s) > 0  # any Gaussian of the cell
        pooled = _pool(feats.view(b, v, -1, s * s).transpose(2, 3).flatten(1, 2), cells.flatten(1))
        centroid = region_centroid(static, region)
        drag_feats = drag_features(drags.to(x.dtype), static, centroid, *cameras)
        stride = max(1, static.shape[-1] // s)  # the surface summary reads one Gaussian per change cell: 1/16 of them at 128 vs 32
        surface = surface_features(static[..., ::stride, ::stride], centroid)
        keep_surface = region[..., ::stride, ::stride].flatten(1)
        summary = torch.cat([pooled, _pool(self.drag_set(drag_feats), valid.flatten(1)), _pool(self.surface(surface), keep_surface)], dim=1)
        return self.motion(summary), dense.view(b, v, *dense.shape[1:])

    def forward(self, x: Tensor, static: Tensor, region: Tensor, drags: Optional[Tensor] = None,
                valid: Optional[Tensor] = None, cameras: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
        """U-Net input [B, V, 11, s, s], static splatter [B, V, 14, S, S], drag region
        [B, V, 1, S, S] bool, drags, the input cameras (K at the input size, OpenCV c2w)
        -> the predicted splatter [B, V, 14, S, S]."""
        motion, dense = self.changes(x, static, region, drags, valid, cameras)
        if self.config.fit_amount and not self.training and drags is not None:
            motion = fit_amount(motion, static, region, drags, valid, *cameras)
        return apply_changes(static, motion, dense, region, self.config.appearance_ring)

    def reconstruct(self, rgb: Tensor, cameras: Any, drags: Optional[Tensor] = None, valid: Optional[Tensor] = None, *,
                    depth: Tensor, static: Tensor, region: Tensor) -> Tensor:
        """Inputs as ``prepare_inputs`` (cameras = (K, c2w)) -> Gaussians [B, V*S*S, 14] (object frame)."""
        K, c2w = cameras
        return LGM.gaussians(self(self.prepare_inputs(rgb, depth, K, c2w), static, region, drags, valid, (K, c2w)))

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


def region_centroid(static: Tensor, region: Tensor) -> Tensor:
    """Mean position [B, 3] of the static Gaussians in the drag region (0 for an empty region)."""
    w = region.to(static.dtype)
    return (static[:, :, layout.XYZ] * w).sum(dim=(1, 3, 4)) / w.sum(dim=(1, 3, 4)).clamp(min=1.0)


def _hat(w: Tensor) -> Tensor:
    """The cross-product (skew) matrices [..., 3, 3] of vectors [..., 3]."""
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).view(*w.shape[:-1], 3, 3)


def points_under(static: Tensor, uv: Tensor) -> Tensor:
    """The static Gaussians' positions [B, V, N, 3] under normalised image points uv [B, V, N, 2]
    (the Gaussian of each point's cell: the 3D point a drag starts from)."""
    b, v, n, _ = uv.shape
    S = static.shape[-1]
    col = (uv[..., 0] * S).floor().long().clamp(0, S - 1)
    row = (uv[..., 1] * S).floor().long().clamp(0, S - 1)
    xyz = static[:, :, layout.XYZ].flatten(3)  # [B, V, 3, S*S]
    return torch.gather(xyz, 3, (row * S + col)[:, :, None, :].expand(b, v, 3, n)).transpose(2, 3)


def drag_features(drags: Tensor, static: Tensor, centroid: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
    """Per drag [B, V*N, 21], in the object frame relative to the region's centroid: the 3D
    point under the start (the static Gaussian of its cell), the camera centre, the unit rays
    through start and end, the normalised 2D start and end, and the 2D and ray shifts
    (magnified). A drag's end is a ray
    in 3D: these are what a rigid motion consistent with it must satisfy."""
    b, v, n, _ = drags.shape
    point = points_under(static, drags[..., :2])  # [B, V, N, 3]
    K = K.to(drags.dtype)
    c2w = c2w.to(drags.dtype)
    size = 2.0 * K[..., 0, 2]  # principal point at the image centre: K is for a size x size image
    rays = []
    for uv in (drags[..., :2], drags[..., 2:]):
        pix = uv * size[..., None, None]
        cam = torch.stack([(pix[..., 0] - K[..., None, 0, 2]) / K[..., None, 0, 0],
                           (pix[..., 1] - K[..., None, 1, 2]) / K[..., None, 1, 1], torch.ones_like(pix[..., 0])], dim=-1)
        rays.append(F.normalize(torch.einsum("bvij,bvnj->bvni", c2w[..., :3, :3], cam), dim=-1))
    centre = (c2w[..., :3, 3] - centroid[:, None]).unsqueeze(2).expand(b, v, n, 3)
    c = centroid[:, None, None]
    # the shift is a few hundredths of the image: magnified so the encoder sees amounts, not only directions
    out = torch.cat([point - c, centre, rays[0], rays[1], drags, SHIFT_GAIN * (drags[..., 2:] - drags[..., :2]),
                     SHIFT_GAIN * (rays[1] - rays[0])], dim=-1)
    return out.flatten(1, 2)


def surface_features(static: Tensor, centroid: Tensor) -> Tensor:
    """Per Gaussian [B, V*S*S, 6]: position relative to the region's centroid and the normal
    (the rotation's local z, the geometric construction's surface normal)."""
    b = static.shape[0]
    g = static.permute(0, 1, 3, 4, 2).reshape(b, -1, static.shape[2])
    w, x, y, z = F.normalize(g[..., layout.ROTATION], dim=-1).unbind(-1)
    normal = torch.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], dim=-1)
    return torch.cat([g[..., layout.XYZ] - centroid[:, None], normal], dim=-1)


def rigid_from_axis_angle(motion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[B, 6] (axis-angle, translation) -> rotation [B, 3, 3], its quaternion (w, x, y, z) [B, 4]
    and the translation [B, 3]; a zero vector gives exactly the identity."""
    omega, t = motion[:, :3], motion[:, 3:]
    theta2 = (omega * omega).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp(min=1e-24))
    small = theta2 < 1e-12
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)  # sin(t) / t
    bb = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp(min=1e-24))  # (1 - cos t) / t^2
    half = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)  # sin(t/2) / t
    K = _hat(omega)
    eye = torch.eye(3, dtype=motion.dtype, device=motion.device).expand_as(K)
    R = eye + a[..., None] * K + bb[..., None] * (K @ K)
    quat = torch.cat([torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2)), half * omega], dim=-1)
    return R, quat, t


def apply_changes(static: Tensor, motion: Tensor, dense: Tensor, region: Tensor, appearance_ring: int) -> Tensor:
    """The static splatter [B, V, 14, S, S] changed by the rigid ``motion`` [B, 6] (axis-angle
    about the region's centroid, translation) inside ``region`` [B, V, 1, S, S] (position,
    rotation), and by ``dense`` [B, V, 7, s, s] (upsampled to S): scale inside the region,
    opacity and colour in its ring. Zero changes give ``static`` bit for bit."""
    b, v, c, S, _ = static.shape
    if dense.shape[-1] != S:
        dense = F.interpolate(dense.flatten(0, 1), size=(S, S), mode="bilinear", align_corners=False).view(b, v, -1, S, S)
    region = region.to(torch.bool)
    around = ring(region, appearance_ring)

    def ch(t: Tensor, s: slice) -> Tensor:
        return t[:, :, s]

    R, quat, t = rigid_from_axis_angle(motion.to(static.dtype))
    xyz = ch(static, layout.XYZ)
    rel = xyz - region_centroid(static, region).view(b, 1, 3, 1, 1)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    offset = torch.einsum("bij,bvjhw->bvihw", R - eye, rel) + t.view(b, 1, 3, 1, 1)  # x' = x + (R - I)(x - c) + t
    moved = torch.where(region, xyz + offset, xyz)
    rotated = quat_multiply(quat.view(b, 1, 1, 1, 4), ch(static, layout.ROTATION).movedim(2, -1)).movedim(-1, 2)
    rotation = torch.where(region, rotated, ch(static, layout.ROTATION))
    scale = torch.where(region, ch(static, layout.SCALE) * torch.exp(ch(dense, CHANGE["scale"])), ch(static, layout.SCALE))
    opacity = torch.where(around, (ch(static, layout.OPACITY) + ch(dense, CHANGE["opacity"])).clamp(0, 1), ch(static, layout.OPACITY))
    rgb = torch.where(around, (ch(static, layout.RGB) + ch(dense, CHANGE["rgb"])).clamp(0, 1), ch(static, layout.RGB))
    parts = {"xyz": moved, "opacity": opacity, "scale": scale, "rotation": rotation, "rgb": rgb}
    order = sorted(parts, key=lambda k: getattr(layout, k.upper()).start)
    return torch.cat([parts[k] for k in order], dim=2)


AMOUNTS = torch.linspace(0.0, 3.0, 61)
"""Screw amounts tried by ``fit_amount`` (1 = the network's motion), then refined 10x finer."""


def _left_jacobian(w: Tensor) -> Tensor:
    """SO(3)'s left Jacobian V(w) = I + (1 - cos t)/t^2 [w] + (t - sin t)/t^3 [w]^2 (series near 0)."""
    t2 = (w * w).sum(-1)[..., None, None]
    t = torch.sqrt(t2.clamp(min=1e-24))
    small = t2 < 1e-8
    a = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / t2.clamp(min=1e-24))
    b = torch.where(small, 1.0 / 6.0 - t2 / 120.0, (t - torch.sin(t)) / (t2 * t).clamp(min=1e-24))
    K = _hat(w)
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * K + b * (K @ K)


def screw_scaled(motion: Tensor, centroid: Tensor, amount: Tensor) -> Tensor:
    """The motion [B, 6] (axis-angle about ``centroid`` [B, 3], translation) taken ``amount``
    [B, A] times along its own screw (same axis line and pitch; 0 = still, 1 = itself)
    -> [B, A, 6] in the same form."""
    omega, t = motion[:, :3].double(), motion[:, 3:].double()
    c = centroid.double()
    R = rigid_from_axis_angle(motion.double())[0]
    u = t + c - torch.einsum("bij,bj->bi", R, c)  # x' = R x + u
    v = torch.linalg.solve(_left_jacobian(omega), u)  # the twist's linear part
    omega_s = amount.double()[..., None] * omega[:, None]  # [B, A, 3]
    v_s = amount.double()[..., None] * v[:, None]
    R_s = rigid_from_axis_angle(torch.cat([omega_s, v_s], -1).flatten(0, 1))[0].view(*omega_s.shape[:2], 3, 3)
    u_s = torch.einsum("baij,baj->bai", _left_jacobian(omega_s), v_s)
    t_s = u_s - c[:, None] + torch.einsum("baij,bj->bai", R_s, c)  # back to "about the centroid"
    return torch.cat([omega_s, t_s], -1).to(motion.dtype)


def _drag_error(motions: Tensor, centroid: Tensor, points: Tensor, ends: Tensor, keep: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
    """Mean squared image distance [B, A] between the user's drag ends and their start
    points moved by each of ``motions`` [B, A, 6] (points, ends [B, V, 3] / [B, V, 2] in
    normalised image units, keep [B, V])."""
    b, a = motions.shape[:2]
    R, _, t = rigid_from_axis_angle(motions.flatten(0, 1))
    R, t = R.view(b, a, 3, 3), t.view(b, a, 3)
    c = centroid[:, None, None]
    moved = torch.einsum("baij,bvj->bavi", R, points - c[:, 0]) + c + t[:, :, None]  # [B, A, V, 3]
    rot, origin = c2w[..., :3, :3], c2w[..., :3, 3]  # [B, V, 3, 3], [B, V, 3]
    cam = torch.einsum("bvji,bavj->bavi", rot, moved - origin[:, None])
    z = cam[..., 2].clamp(min=1e-6)
    size = 2.0 * K[..., 0, 2]  # principal point at the image centre
    u = (K[:, None, :, 0, 0] * cam[..., 0] / z + K[:, None, :, 0, 2]) / size[:, None]
    v = (K[:, None, :, 1, 1] * cam[..., 1] / z + K[:, None, :, 1, 2]) / size[:, None]
    err = (u - ends[:, None, :, 0]) ** 2 + (v - ends[:, None, :, 1]) ** 2
    w = keep[:, None].to(err.dtype)
    return (err * w).sum(-1) / w.sum(-1).clamp(min=1.0)


def fit_amount(motion: Tensor, static: Tensor, region: Tensor, drags: Tensor, valid: Optional[Tensor], K: Tensor,
               c2w: Tensor) -> Tensor:
    """The network's rigid motion [B, 6] scaled along its screw so that the user's drags fit.

    Why: the drags say *how far* the part moved far more precisely than a pooled feature can
    regress it, while the joint's axis and pivot come from the part's shape, which the
    network reads. Each view's first drag is the user's own (the others are propagated
    copies of its 2D shift, exact only for a translation); its start's 3D point is the
    static Gaussian under it. The amount (0 = still, 1 = the network's) minimising the mean
    squared image distance between the moved points' projections and the drag ends is found
    on a grid and refined; it carries no gradient (the network still learns the screw, and
    its own amount where no drag constrains it). A batch item without a valid user drag
    keeps the network's motion."""
    if valid is None:
        valid = torch.ones(drags.shape[:-1], dtype=torch.bool, device=drags.device)
    keep = valid[:, :, 0]
    with torch.no_grad():
        centroid = region_centroid(static, region).double()
        points = points_under(static, drags[:, :, :1, :2])[:, :, 0].double()  # [B, V, 3]: each user drag's start
        ends, K, c2w, base = drags[:, :, 0, 2:].double(), K.double(), c2w.double(), motion.detach().double()

        def best(amounts: Tensor) -> Tensor:
            err = _drag_error(screw_scaled(base, centroid, amounts), centroid, points, ends, keep, K, c2w)
            return amounts.gather(1, err.argmin(1, keepdim=True))

        step = float(AMOUNTS[1] - AMOUNTS[0])
        coarse = best(AMOUNTS.to(base)[None].expand(len(base), -1))
        amount = best((coarse + torch.linspace(-step, step, 21, dtype=base.dtype, device=base.device)[None]).clamp(min=0.0))
        amount = torch.where(keep.any(1, keepdim=True), amount, torch.ones_like(amount))
    return screw_scaled(motion, centroid.to(motion.dtype), amount.to(motion.dtype))[:, 0]
