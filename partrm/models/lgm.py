"""LGM (Large Multi-View Gaussian Model): 4 posed views -> 14-channel splatter images.

Facts taken from the official release (3DTopia/LGM), re-implemented here:

* Input: per view 9 channels = ImageNet-normalised RGB (white background) followed by
  the Plücker ray embedding (o x d, d) of every pixel centre.
* U-Net (see ``unet.py``) + a 1x1 conv (``conv``), then per-channel activations:
  xyz clamp(-1, 1), opacity sigmoid, scale 0.1 * softplus, rotation normalised over
  its 4 channels (the "fixrot" checkpoint was fine-tuned with this fix), rgb
  0.5 * tanh + 0.5.
* Camera normalisation: all cameras are expressed in a frame where the first input
  camera has the fixed OpenGL pose ``orbit_camera(elevation=0, azimuth=0, radius=1.5)``
  = identity rotation at (0, 0, 1.5) (looking down -z, y up). Object-to-camera
  distance is rescaled so the world fits the [-1, 1]^3 cube that xyz is clamped to.
  ``lgm_frame_transform`` builds that frame from our OpenCV cameras.
* The official checkpoint ``model_fp16_fixrot.safetensors`` (config ``big``) holds
  fp16 ``unet.*`` and ``conv.*`` tensors only (the LPIPS module is dropped from the
  official state dict), so this model, which has no LPIPS, loads it with strict=True.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from partdrag4d.errors import DamagedFile, ToolkitError
from partdrag4d.rigid import quat_multiply, quat_to_rotmat
from partrm.gaussians import layout
from partrm.models.unet import DownHook, UNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LGM_CAM_RADIUS = 1.5
DATASET_CAM_DISTANCE = 2.4  # partdrag4d.cameras.CAMERA_DISTANCE
DEFAULT_LGM_SCALE = LGM_CAM_RADIUS / DATASET_CAM_DISTANCE
WEIGHTS_FLAG = "--lgm-weights"

ArrayLike = Union[Tensor, np.ndarray]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LGMConfig:
    """Architecture + input conventions. ``frame`` picks the frame Gaussians are predicted in.

    ``frame="object"`` (our own models): Plücker rays use object-frame cameras, output
    xyz are object coordinates. ``frame="lgm"`` (official weights): cameras are moved
    to LGM's canonical frame (``lgm_frame_transform``), outputs mapped back.
    """

    name: str = "custom"
    input_size: int = 256
    splat_size: int = 128
    num_views: int = 4
    down_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024)
    down_attention: tuple[bool, ...] = (False, False, False, True, True, True)
    mid_attention: bool = True
    up_channels: tuple[int, ...] = (1024, 1024, 512, 256, 128)
    up_attention: tuple[bool, ...] = (True, True, True, False, False)
    layers_per_block: int = 2
    attention_heads: int = 16
    norm_groups: int = 32
    fov_y_deg: float = 49.1  # what the official weights were trained with (our ring uses the same)
    frame: str = "object"
    lgm_scale: float = DEFAULT_LGM_SCALE
    cam_radius: float = LGM_CAM_RADIUS

    def __post_init__(self) -> None:
        for name in ("down_channels", "down_attention", "up_channels", "up_attention"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n_down, n_up = len(self.down_channels), len(self.up_channels)
        if self.input_size % 2 ** (n_down - 1):
            raise ValueError(f"input_size {self.input_size} is not divisible by 2**{n_down - 1} (the U-Net depth)")
        expected = self.input_size // 2 ** (n_down - n_up)
        if self.splat_size != expected:
            raise ValueError(f"splat_size must be {expected} for input {self.input_size} with {n_down} down / {n_up} up blocks")
        if self.frame not in ("object", "lgm"):
            raise ValueError(f"frame must be 'object' or 'lgm', not {self.frame!r}")

    @classmethod
    def big(cls, **overrides: Any) -> "LGMConfig":
        """LGM big (the released checkpoint): 256 input, 4 x 128^2 = 65,536 Gaussians, ~415 M parameters."""
        return cls(**{"name": "big", **overrides})

    @classmethod
    def small(cls, **overrides: Any) -> "LGMConfig":
        """LGM small: same encoder, one up block fewer, 4 x 64^2 Gaussians."""
        cfg = dict(name="small", splat_size=64, up_channels=(1024, 1024, 512, 256), up_attention=(True, True, True, False))
        return cls(**{**cfg, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "LGMConfig":
        """Test/CPU model (not LGM's own "tiny" ablation): 64 input, 4 x 32^2 = 4,096 Gaussians."""
        cfg = dict(
            name="tiny", input_size=64, splat_size=32,
            down_channels=(16, 32, 64, 64), down_attention=(False, False, True, True),
            up_channels=(64, 64, 32), up_attention=(True, True, False),
            attention_heads=4, norm_groups=8,
        )
        return cls(**{**cfg, **overrides})

    @classmethod
    def preset(cls, name: str, input_size: int = 0, **overrides: Any) -> "LGMConfig":
        """A preset by name; ``input_size`` (0: the preset's) runs its architecture at another
        resolution, the splatter image scaled with it (tiny at 32: 4 x 16^2 Gaussians), which
        makes a CPU step several times cheaper."""
        presets = {"big": cls.big, "small": cls.small, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown LGM preset {name!r}; choose one of {sorted(presets)}")
        cfg = presets[name](**overrides)
        if input_size and input_size != cfg.input_size:
            stride = cfg.input_size // cfg.splat_size
            if input_size % stride:
                raise ValueError(f"input_size {input_size} of preset {name!r} must be a multiple of {stride} (input / splat size)")
            cfg = replace(cfg, input_size=input_size, splat_size=input_size // stride)
        return cfg

    @property
    def num_gaussians(self) -> int:
        return self.num_views * self.splat_size**2

    @property
    def hook_sizes(self) -> tuple[int, ...]:
        """Spatial size at each ``down_hook`` level (big: 256, 128, 64, 32, 16, 8, 8)."""
        return (self.input_size,) + self.down_block_sizes

    @property
    def down_block_sizes(self) -> tuple[int, ...]:
        """Spatial size of each down block's output (big: 128, 64, 32, 16, 8, 8)."""
        n = len(self.down_channels)
        return tuple(self.input_size // 2 ** min(i + 1, n - 1) for i in range(n))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LGMConfig":
        return cls(**json.loads(text))


# --------------------------------------------------------------------------- rays


def _as_f64(x: ArrayLike) -> Tensor:
    return torch.as_tensor(x).to(torch.float64) if isinstance(x, np.ndarray) else x.to(torch.float64)


def plucker_rays(K: ArrayLike, c2w: ArrayLike, height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Plücker embedding (o x d, d) of every pixel centre: [..., 6, H, W].

    OpenCV cameras; ``K`` is for the height x width image with pixel centres at +0.5
    (what ``partdrag4d.cameras`` uses, and what LGM's ray generator does). ``d`` is
    the unit world direction, ``o`` the camera centre. LGM's channel order: moment first.
    """
    K, c2w = _as_f64(K), _as_f64(c2w)
    device = c2w.device
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=device) + 0.5,
        torch.arange(width, dtype=torch.float64, device=device) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    dirs_cam = pix @ torch.linalg.inv(K).transpose(-1, -2)[..., None, :, :]  # [..., H, W, 3]
    rot = c2w[..., :3, :3]
    d = F.normalize(dirs_cam @ rot.transpose(-1, -2)[..., None, :, :], dim=-1)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    rays = torch.cat([torch.cross(o, d, dim=-1), d], dim=-1)  # [..., H, W, 6]
    return rays.movedim(-1, -3).to(dtype)


# --------------------------------------------------------------------------- frames and similarity transforms


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions (w, x, y, z), w >= 0.

    Uses the largest of 4w^2, 4x^2, 4y^2, 4z^2 as the divisor so it is stable for all rotations.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    t = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    a = m[..., 2, 1] - m[..., 1, 2]
    b = m[..., 0, 2] - m[..., 2, 0]
    c = m[..., 1, 0] - m[..., 0, 1]
    xy = m[..., 0, 1] + m[..., 1, 0]
    xz = m[..., 0, 2] + m[..., 2, 0]
    yz = m[..., 1, 2] + m[..., 2, 1]
    candidates = torch.stack([
        torch.stack([t[..., 0], a, b, c], -1),
        torch.stack([a, t[..., 1], xy, xz], -1),
        torch.stack([b, xy, t[..., 2], yz], -1),
        torch.stack([c, xz, yz, t[..., 3]], -1),
    ], dim=-2)  # [..., 4 candidates, 4]
    best = t.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def _split_similarity(M: Tensor, allow_reflection: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """M = [s*Q | t] -> (A = s*Q, t, s, proper rotation Q') with Q' = ±Q; raises if M is no similarity."""
    A, t = M[..., :3, :3], M[..., :3, 3]
    det = torch.linalg.det(A)
    if bool((det.abs() < 1e-12).any()):
        raise ValueError("transform is singular")
    if not allow_reflection and bool((det < 0).any()):
        raise ValueError("transform contains a reflection; cameras cannot be mirrored")
    s = det.abs() ** (1.0 / 3.0)
    # A reflection -Q' acts on a centred ellipsoid like the rotation Q' (its covariance is even).
    Q = A / (s * torch.sign(det))[..., None, None]
    eye = torch.eye(3, dtype=Q.dtype, device=Q.device)
    if not torch.allclose(Q @ Q.transpose(-1, -2), eye.expand_as(Q), atol=1e-6):
        raise ValueError("transform is not a similarity (uniform scale x rotation + translation)")
    return A, t, s, Q


def invert_similarity(M: ArrayLike) -> Tensor:
    """Inverse of x -> s*Q*x + t (float64, batched over leading dims)."""
    M = _as_f64(M)
    A, t, s, _ = _split_similarity(M, allow_reflection=True)
    A_inv = A.transpose(-1, -2) / (s**2)[..., None, None]
    out = torch.zeros_like(M)
    out[..., :3, :3] = A_inv
    out[..., :3, 3] = -(A_inv @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def lgm_frame_transform(first_input_c2w_opencv: ArrayLike, scale: float = DEFAULT_LGM_SCALE,
                        radius: float = LGM_CAM_RADIUS) -> Tensor:
    """Similarity [..., 4, 4] mapping object coordinates into LGM's canonical frame.

    In that frame the first input camera is LGM's reference OpenGL pose: identity
    rotation at (0, 0, ``radius``) (OpenCV: diag(1, -1, -1)), and lengths are
    multiplied by ``scale``. With ``scale = radius / camera distance`` (default
    1.5 / 2.4 for our ring) the object's origin maps to LGM's origin.
    """
    c2w = _as_f64(first_input_c2w_opencv)
    R, c = c2w[..., :3, :3], c2w[..., :3, 3]
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64, device=c2w.device))
    A = scale * flip @ R.transpose(-1, -2)
    M = torch.zeros(c2w.shape, dtype=torch.float64, device=c2w.device)
    M[..., :3, :3] = A
    M[..., :3, 3] = -(A @ c[..., None])[..., 0]
    M[..., 2, 3] += radius
    M[..., 3, 3] = 1.0
    return M


def lgm_frame_inverse(first_input_c2w_opencv: ArrayLike, scale: float = DEFAULT_LGM_SCALE,
                      radius: float = LGM_CAM_RADIUS) -> Tensor:
    """LGM canonical frame -> object frame (inverse of ``lgm_frame_transform``)."""
    return invert_similarity(lgm_frame_transform(first_input_c2w_opencv, scale, radius))


def transform_c2w(M: ArrayLike, c2w: ArrayLike) -> Tensor:
    """Cameras (OpenCV c2w [..., 4, 4]) expressed in the frame x' = M x; rotations stay orthonormal."""
    M, c2w = _as_f64(M), _as_f64(c2w)
    A, t, _, Q = _split_similarity(M, allow_reflection=False)
    out = torch.zeros(*torch.broadcast_shapes(M.shape[:-2], c2w.shape[:-2]), 4, 4, dtype=torch.float64, device=c2w.device)
    out[..., 3, 3] = 1.0
    out[..., :3, :3] = Q @ c2w[..., :3, :3]
    out[..., :3, 3] = (A @ c2w[..., :3, 3, None])[..., 0] + t
    return out


def transform_gaussians(gaussians: Tensor, M: ArrayLike) -> Tensor:
    """Apply the similarity x' = s*Q*x + t to activated Gaussians [..., N, 14].

    Means are transformed, scales multiplied by s, quaternions (w, x, y, z) left-multiplied
    by Q's quaternion, so each covariance becomes (sQ) Sigma (sQ)^T. ``M`` is [4, 4] or
    batched like the Gaussians' leading dims. Opacity and colour are unchanged.
    """
    M = _as_f64(M).to(gaussians.device)
    A, t, s, Q = _split_similarity(M, allow_reflection=True)
    g = gaussians.to(torch.float64)
    xyz = torch.einsum("...ij,...nj->...ni", A, g[..., layout.XYZ]) + t[..., None, :]
    scale = g[..., layout.SCALE] * s[..., None, None]
    rot = quat_multiply(matrix_to_quat(Q)[..., None, :], F.normalize(g[..., layout.ROTATION], dim=-1))
    out = torch.cat([xyz, g[..., layout.OPACITY], scale, F.normalize(rot, dim=-1), g[..., layout.RGB]], dim=-1)
    return out.to(gaussians.dtype)


# --------------------------------------------------------------------------- model


def activate_splatter(raw: Tensor, dim: int = 2) -> Tensor:
    """LGM's activations on a raw 14-channel tensor along ``dim`` (layout in ``partrm.gaussians.layout``)."""
    def ch(s: slice) -> Tensor:
        return raw.narrow(dim, s.start, s.stop - s.start)

    return torch.cat([
        ch(layout.XYZ).clamp(-1.0, 1.0),
        torch.sigmoid(ch(layout.OPACITY)),
        0.1 * F.softplus(ch(layout.SCALE)),
        F.normalize(ch(layout.ROTATION), dim=dim),
        0.5 * torch.tanh(ch(layout.RGB)) + 0.5,
    ], dim=dim)


def _existing_weights(path: Union[str, Path]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"LGM weights not found at '{path}': download model_fp16_fixrot.safetensors "
            f"(huggingface.co/ashawkey/LGM) yourself and pass its path with {WEIGHTS_FLAG}"
        )
    return path


class CheckpointMismatchError(ToolkitError, RuntimeError):
    """The checkpoint's tensors do not match the model built from the config."""


class CheckpointError(DamagedFile):
    """A checkpoint that cannot be used: not a safetensors file (e.g. a dataset file passed as
    one), truncated or damaged, or without what its loader needs; the message names the file."""


_MAGIC = {b"\x89HDF\r\n\x1a\n": "an HDF5 file (a drags.h5 or gsdb.h5?)", b"\x89PNG": "a PNG image",
          b"PK\x03\x04": "a zip archive (a .npz, or a torch .pt file?)", b"{": "a JSON file"}


def _file_kind(path: Path) -> Optional[str]:
    """What a file that is not a safetensors checkpoint is, from its first bytes (None: unknown)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


@contextmanager
def reading_checkpoint(path: Union[str, Path], what: str = "checkpoint") -> Iterator[None]:
    """Around the reading of a checkpoint file: whatever a damaged or wrong-kind file makes the
    readers raise becomes one ``CheckpointError`` naming the file and ``what`` it should be (a
    missing file stays a ``FileNotFoundError``, a tensor mismatch a ``CheckpointMismatchError``)."""
    try:
        yield
    except (DamagedFile, CheckpointMismatchError, FileNotFoundError):
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError) as exc:
        kind = _file_kind(Path(path)) if isinstance(exc, SafetensorError) else None
        if kind is not None:
            raise CheckpointError(f"{path}: cannot load {what}: it is {kind}, not a safetensors file") from None
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load {what} ({reason})") from None


def read_checkpoint_metadata(path: Union[str, Path], what: str = "checkpoint") -> dict[str, str]:
    """A safetensors file's metadata (header only); ``CheckpointError`` when it is not one."""
    with reading_checkpoint(path, what), safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_checkpoint_tensors(path: Union[str, Path], device: str = "cpu", what: str = "checkpoint") -> dict[str, Tensor]:
    """Every tensor of a safetensors file; ``CheckpointError`` when it is damaged or not one."""
    with reading_checkpoint(path, what):
        return load_file(str(path), device=device)


LGM_PRESETS = ("tiny", "small", "big")
"""``LGMConfig.preset`` names, smallest first."""
FRAMES = ("object", "lgm")
"""Camera frames LGM weights can be trained in (``LGMConfig.frame``)."""
OFFICIAL_LAYOUT_PRESETS = ("big", "small", "tiny")
"""Presets a checkpoint without metadata is matched against, in this order (``big`` is the
released ``model_fp16_fixrot.safetensors``)."""


def checkpoint_layout(path: Union[str, Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, read from its header only (no data)."""
    with reading_checkpoint(path, "LGM weights"), safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def preset_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a preset's state dict (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = LGM(LGMConfig.preset(name))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def detect_preset(layout: dict[str, tuple[int, ...]]) -> Optional[str]:
    """The preset whose state dict has exactly these names and shapes, or None."""
    layout = {k: tuple(v) for k, v in layout.items()}
    for name in OFFICIAL_LAYOUT_PRESETS:
        if preset_layout(name) == layout:
            return name
    return None


class LGM(nn.Module):
    """Multi-view images + Plücker rays -> activated splatter images [B, V, 14, S, S]."""

    plucker_rays = staticmethod(plucker_rays)

    def __init__(self, config: Optional[LGMConfig] = None) -> None:
        super().__init__()
        self.config = config if config is not None else LGMConfig.big()
        c = self.config
        self.unet = UNet(
            9, layout.NUM_CHANNELS,
            down_channels=c.down_channels, down_attention=c.down_attention, mid_attention=c.mid_attention,
            up_channels=c.up_channels, up_attention=c.up_attention, layers_per_block=c.layers_per_block,
            attention_heads=c.attention_heads, norm_groups=c.norm_groups, num_views=c.num_views,
        )
        self.conv = nn.Conv2d(layout.NUM_CHANNELS, layout.NUM_CHANNELS, kernel_size=1)  # in the official checkpoint
        # Non-persistent: not in the checkpoint, so strict loading still matches it.
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    # ----------------------------------------------------------------- shapes for hooks

    @property
    def down_block_channels(self) -> tuple[int, ...]:
        """Channels of each down block's output (big: 64, 128, 256, 512, 1024, 1024)."""
        return self.unet.down_block_channels

    @property
    def hook_channels(self) -> tuple[int, ...]:
        """Channels of what ``down_hook`` receives at each level (big: 64, 64, 128, 256, 512, 1024, 1024)."""
        return self.unet.hook_channels

    @property
    def hook_strides(self) -> tuple[int, ...]:
        """Input size / feature size at each hook level (big: 1, 2, 4, 8, 16, 32, 32)."""
        return self.unet.hook_strides

    @property
    def down_block_strides(self) -> tuple[int, ...]:
        """Input size / feature size at each level (big: 2, 4, 8, 16, 32, 32)."""
        return self.unet.down_block_strides

    # ----------------------------------------------------------------- forward

    def forward(self, images: Tensor, down_hook: Optional[DownHook] = None) -> Tensor:
        """[B, V, 9, H, W] -> activated splatter [B, V, 14, S, S].

        ``down_hook(level, feats[B*V, C, h, w])`` is forwarded to ``UNet.forward``.
        """
        b, v, c, h, w = images.shape
        if c != 9:
            raise ValueError(f"LGM expects 9 input channels (RGB + Plücker), got {c}")
        raw = self.conv(self.unet(images.reshape(b * v, c, h, w), down_hook=down_hook, num_views=v))
        return activate_splatter(raw.view(b, v, layout.NUM_CHANNELS, *raw.shape[-2:]), dim=2)

    @staticmethod
    def gaussians(splatter: Tensor) -> Tensor:
        """[B, V, 14, S, S] -> [B, V*S*S, 14] in (view, row, col) order."""
        b, v, c, s1, s2 = splatter.shape
        return splatter.permute(0, 1, 3, 4, 2).reshape(b, v * s1 * s2, c)

    # ----------------------------------------------------------------- inputs

    def _camera_tensors(self, cameras: Any, batch: int, views: int, height: int, width: int) -> tuple[Tensor, Tensor]:
        """(K [B,V,3,3] for the height x width image, OpenCV c2w [B,V,4,4]) in float64."""
        if isinstance(cameras, (tuple, list)) and len(cameras) == 2 and isinstance(cameras[0], (Tensor, np.ndarray)):
            K, c2w = _as_f64(cameras[0]), _as_f64(cameras[1])
        else:
            rows = cameras if isinstance(cameras[0], (list, tuple)) else [cameras] * batch
            cams = [[cam if (cam.width, cam.height) == (width, height) else cam.resized(width, height) for cam in row]
                    for row in rows]
            K = torch.tensor(np.array([[cam.K for cam in row] for row in cams]), dtype=torch.float64)
            c2w = torch.tensor(np.array([[cam.c2w for cam in row] for row in cams]), dtype=torch.float64)
        K = K.expand(batch, views, 3, 3) if K.dim() < 4 else K
        c2w = c2w.expand(batch, views, 4, 4) if c2w.dim() < 4 else c2w
        if K.shape != (batch, views, 3, 3) or c2w.shape != (batch, views, 4, 4):
            raise ValueError(f"cameras do not match {batch} x {views} views: K {tuple(K.shape)}, c2w {tuple(c2w.shape)}")
        return K, c2w

    def prepare_inputs(self, rgb: Tensor, cameras: Any, frame: Optional[ArrayLike] = None) -> Tensor:
        """RGB [B, V, 3, H, W] in [0, 1] (white background) + cameras -> LGM input [B, V, 9, S_in, S_in].

        ``cameras`` is ``(K, c2w)`` (OpenCV, K for the H x W images; [B, V, ...] or [V, ...])
        or ``partdrag4d.cameras.Camera`` objects (a list of V, or B lists of V).
        ``frame`` ([4, 4] or [B, 4, 4]) moves the cameras into the model's frame first
        (e.g. ``lgm_frame_transform``); None keeps the object frame. Images are
        resized (bilinear, as LGM does) to ``input_size`` and K with them.
        """
        b, v, _, h, w = rgb.shape
        K, c2w = self._camera_tensors(cameras, b, v, h, w)
        if frame is not None:
            frame = _as_f64(frame)
            c2w = transform_c2w(frame if frame.dim() == 2 else frame[:, None], c2w)
        size = self.config.input_size
        if (h, w) != (size, size):
            rgb = F.interpolate(rgb.reshape(b * v, 3, h, w), size=(size, size), mode="bilinear", align_corners=False)
            rgb = rgb.view(b, v, 3, size, size)
            K = K.clone()
            K[..., 0, :] *= size / w
            K[..., 1, :] *= size / h
        rgb = (rgb - self.rgb_mean.to(rgb)) / self.rgb_std.to(rgb)
        rays = plucker_rays(K.to(rgb.device), c2w.to(rgb.device), size, size, dtype=rgb.dtype)
        return torch.cat([rgb, rays], dim=2)

    def model_frame(self, first_input_c2w: ArrayLike) -> Tensor:
        """Object -> model-frame similarity per ``config.frame`` ([..., 4, 4], float64)."""
        c2w = _as_f64(first_input_c2w)
        if self.config.frame == "lgm":
            return lgm_frame_transform(c2w, self.config.lgm_scale, self.config.cam_radius)
        return torch.eye(4, dtype=torch.float64, device=c2w.device).expand(c2w.shape).clone()

    def object_frame_inputs(self, rgb: Tensor, cameras: Any) -> tuple[Tensor, Optional[Tensor]]:
        """Images + object-frame cameras -> (model input [B, V, 9, S, S], the object -> model
        frame similarity, or None when the model works in the object frame).

        With ``config.frame == "lgm"`` the cameras go to LGM's canonical frame, built from
        the first view; ``splatter_to_object`` brings the prediction back."""
        b, v, _, h, w = rgb.shape
        K, c2w = self._camera_tensors(cameras, b, v, h, w)
        frame = self.model_frame(c2w[:, 0]) if self.config.frame == "lgm" else None
        return self.prepare_inputs(rgb, (K, c2w), frame), frame

    def splatter_to_object(self, splatter: Tensor, frame: Optional[Tensor]) -> Tensor:
        """Splatter images [B, V, 14, S, S] predicted in ``frame`` -> the object frame (same layout)."""
        if frame is None:
            return splatter
        b, v, c, s1, s2 = splatter.shape
        g = transform_gaussians(self.gaussians(splatter), invert_similarity(frame))
        return g.reshape(b, v, s1, s2, c).permute(0, 1, 4, 2, 3).contiguous()

    def reconstruct(self, rgb: Tensor, cameras: Any, down_hook: Optional[DownHook] = None) -> Tensor:
        """Images + object-frame cameras -> Gaussians [B, V*S*S, 14] in the object frame."""
        x, frame = self.object_frame_inputs(rgb, cameras)
        return self.gaussians(self.splatter_to_object(self(x, down_hook=down_hook), frame))

    # ----------------------------------------------------------------- weights

    def load_weights(self, state: dict[str, Tensor], source: str = "state dict") -> "LGM":
        """Strict load with one readable error listing missing / unexpected / mis-shaped keys."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mis_shaped = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or mis_shaped:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
            if mis_shaped:
                k = mis_shaped[0]
                parts.append(f"{len(mis_shaped)} with other shapes (e.g. {k}: file {tuple(state[k].shape)} "
                             f"vs model {tuple(own[k].shape)})")
            raise CheckpointMismatchError(
                f"{source} does not match LGM config {self.config.name!r}: " + "; ".join(parts)
                + ". The official model_fp16_fixrot.safetensors needs the 'big' preset."
            )
        cast = {k: v.to(dtype=own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
        self.load_state_dict(cast, strict=True)
        return self

    def load_official(self, path: Union[str, Path]) -> "LGM":
        """Load a local safetensors checkpoint (fp16 is cast to the model's dtype). Never downloads."""
        path = _existing_weights(path)
        return self.load_weights(read_checkpoint_tensors(path, what="LGM weights"), source=str(path))

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], config: Optional[LGMConfig] = None, frame: Optional[str] = None,
                        announce: bool = True) -> "LGM":
        """Build and load a local checkpoint.

        Without ``config``: the config this project saved in the file's metadata; a file
        without it is a foreign checkpoint (the official ``model_fp16_fixrot.safetensors``):
        its preset is the one whose tensor names and shapes it matches (``detect_preset``),
        in LGM's own camera frame (``frame="lgm"``), said in one line on stderr.
        ``frame`` ("lgm" or "object") forces the frame either way (``--lgm-frame``).
        """
        path = _existing_weights(path)  # fail before building a 415 M-parameter model
        if config is None:
            meta = read_checkpoint_metadata(path, "LGM weights")
            if "lgm_config" in meta:
                with reading_checkpoint(path, "LGM weights"):
                    config = LGMConfig.from_json(meta["lgm_config"])
            else:
                layout = checkpoint_layout(path)
                name = detect_preset(layout)
                if name is None:
                    raise CheckpointMismatchError(
                        f"{path} has no project metadata and its {len(layout)} tensors match no LGM preset "
                        f"({', '.join(OFFICIAL_LAYOUT_PRESETS)}): not an LGM checkpoint this project can load")
                config = LGMConfig.preset(name, frame="lgm")
                if announce and frame in (None, "lgm"):
                    print(f"{path}: no project metadata, tensors match LGM {name!r}: official weights, loaded in LGM's camera "
                          f"frame (frame='lgm'; --lgm-frame object overrides)", file=sys.stderr)
        if frame is not None and frame != config.frame:
            config = replace(config, frame=frame)
        model = cls(config)
        return model.load_official(path)

    def save(self, path: Union[str, Path], half: bool = False) -> None:
        """Write the state dict (fp16 with ``half``) and the config as safetensors metadata."""
        state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.state_dict().items()}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"format": "pt", "lgm_config": self.config.to_json()})
