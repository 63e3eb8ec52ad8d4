"""The geometric Gaussian database: splatter images built from the renders themselves.

The dataset holds exact RGBA and planar depth for every view, so a state's splatter image
[V, 14, S, S] (``partrm.gaussians.layout``; the layout LGM outputs and stage 1 compares
with) can be built from its V input views without any network:

- **position**: the pixel's depth unprojected through its camera (object frame). A splat
  cell covers ``f x f`` render pixels (``f = render size / S``); its Gaussian sits at the
  alpha-weighted mean of the cell's front-most surface (pixels within ``depth_tolerance``
  footprints of the nearest depth), so a cell on a part edge does not float between
  surfaces;
- **colour**: the alpha-weighted mean of that surface's (straight-alpha) colours;
- **opacity**: the cell's mean alpha (its coverage); background cells get opacity 0;
- **scale**: in the surface plane, the std that the rasterizer (which adds its 0.3 px^2
  low-pass) draws as ``footprint_scale`` splat pixels in the Gaussian's own view, i.e. a
  multiple of the pixel footprint ``depth / focal``; stretched along the tilt direction by
  ``1 / cos`` of the viewing angle (at most ``max_stretch``); ``thickness`` of that along the
  normal;
- **rotation**: the surface frame (normals from the depth map's finite differences, taken on
  the side with the smaller depth jump, oriented toward the camera), as a unit quaternion.

Background cells are placed on their pixel's ray at the depth of the object centre (clamped
to [-1, 1]^3 like LGM's xyz), white, facing the camera, with opacity 0: they never render,
and stage 1 has a well-defined target for them.

``refine_splatter`` optionally fits the foreground Gaussians to all 12 views of the state
(MSE on rgb composited on white + alpha MSE, the CPU rasterizer or gsplat on CUDA) for a
fixed number of steps; background Gaussians stay transparent. ``build_render_gsdb`` writes
``gsdb.h5`` in the same layout and with the same resumable parts as the teacher database.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from partdrag4d import store
from partdrag4d.cameras import NUM_VIEWS
from partrm.data import DEFAULT_INPUT_VIEWS, load_view
from partrm.gaussians import RasterConfig, gaussians_from_lgm, layout, write_ply
from partrm.gaussians.views import render_views
from partrm.gsdb import GSDB_FILE
from partrm.gsdb_build import build_parts
from partrm.metrics import psnr
from partrm.models.lgm import matrix_to_quat
from partrm.part_motion import flat_splatter


@dataclass(frozen=True)
class RenderGsdbConfig:
    """How splatter images are built from renders (recorded in ``gsdb.h5``'s attributes)."""

    splat_size: int = 128  # S: LGM big's 128; must divide the render resolution
    input_views: tuple[int, ...] = DEFAULT_INPUT_VIEWS
    footprint_scale: float = 0.5  # drawn std in the surface plane (the rasterizer's low-pass included), in splat pixels
    min_footprint: float = 0.15  # floor of the Gaussian's own std, in render pixels
    thickness: float = 0.1  # std along the normal, relative to the in-plane std
    max_stretch: float = 3.0  # cap on the 1 / cos(viewing angle) stretch of grazing surfaces
    depth_tolerance: float = 3.0  # front-surface band of a cell, in render-pixel footprints x f
    refine_steps: int = 0  # photometric refinement steps per state (0: geometry only)
    refine_views_per_step: int = 4  # of the 12 views, rendered per refinement step
    refine_size: int = 256  # refinement render size (at most the render resolution)
    refine_lr: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_views", tuple(int(v) for v in self.input_views))
        if self.splat_size < 1:
            raise ValueError(f"splat_size must be >= 1, got {self.splat_size}")
        if not self.input_views or any(not 0 <= v < NUM_VIEWS for v in self.input_views):
            raise ValueError(f"input_views must be ring views 0..{NUM_VIEWS - 1}, got {self.input_views}")
        for name in ("footprint_scale", "thickness", "max_stretch", "depth_tolerance", "refine_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.refine_steps < 0 or self.refine_views_per_step < 1 or self.refine_size < 1:
            raise ValueError("refine_steps must be >= 0, refine_views_per_step and refine_size >= 1")

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# --------------------------------------------------------------------------- geometry


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Planar depth [H, W] (inf = background) -> object-frame points [H, W, 3] (NaN where no depth)."""
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    z = np.where(np.isfinite(depth), depth, np.nan)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def _fill_points(points: np.ndarray, depth: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels that have coverage (alpha > 0) but no depth sample (anti-aliased silhouette pixels
    whose depth sample missed the object) take the surface point and depth of the nearest pixel
    that has one, so they stay on the surface instead of extending it along their own rays."""
    finite = np.isfinite(depth)
    holes = (alpha > 0) & ~finite
    if not holes.any() or not finite.any():
        return points, depth
    _, (ri, ci) = distance_transform_edt(~finite, return_indices=True)
    points, depth = points.copy(), depth.copy()
    points[holes] = points[ri[holes], ci[holes]]
    depth[holes] = depth[ri[holes], ci[holes]]
    return points, depth


def _one_sided(points: np.ndarray, depth: np.ndarray, axis: int) -> np.ndarray:
    """Finite difference of ``points`` along ``axis`` taken toward the neighbour with the
    smaller depth jump (so silhouettes and part edges do not bend the normals); NaN if neither exists."""
    def shift(a: np.ndarray, k: int) -> np.ndarray:
        out = np.full_like(a, np.nan)
        src = [slice(None)] * a.ndim
        dst = [slice(None)] * a.ndim
        if k > 0:
            src[axis], dst[axis] = slice(k, None), slice(None, -k)
        else:
            src[axis], dst[axis] = slice(None, k), slice(-k, None)
        out[tuple(dst)] = a[tuple(src)]
        return out

    fwd = shift(points, 1) - points
    bwd = points - shift(points, -1)
    z = np.where(np.isfinite(depth), depth, np.nan)
    jf = np.abs(shift(z, 1) - z)
    jb = np.abs(z - shift(z, -1))
    jf = np.where(np.isnan(jf), np.inf, jf)
    jb = np.where(np.isnan(jb), np.inf, jb)
    return np.where((jf <= jb)[..., None], fwd, bwd)


def _normals(points: np.ndarray, depth: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Unit normals [H, W, 3] of the point map, facing the camera; NaN where undefined."""
    du = _one_sided(points, depth, axis=1)
    dv = _one_sided(points, depth, axis=0)
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm
    facing = np.einsum("hwc,hwc->hw", n, center - points)
    return np.where((facing < 0)[..., None], -n, n)


def _frame_quaternions(normal: np.ndarray, ray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (w, x, y, z) [N, 4] whose local z is ``normal`` and local x is perpendicular to
    the viewing ray (so local y is the tilt direction), and |cos| of the viewing angle [N]."""
    n = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    t1 = np.cross(n, ray)
    small = np.linalg.norm(t1, axis=-1) < 1e-8  # surface seen head-on: any in-plane axis
    if small.any():
        helper = np.where(np.abs(n[small, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
        t1[small] = np.cross(n[small], helper)
    t1 /= np.linalg.norm(t1, axis=-1, keepdims=True)
    t2 = np.cross(n, t1)
    R = np.stack([t1, t2, n], axis=-1)  # columns = local axes
    quats = matrix_to_quat(torch.from_numpy(R)).numpy()
    return quats, np.abs(np.einsum("nc,nc->n", n, ray))


def splatter_from_view(rgba: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                       cfg: RenderGsdbConfig = RenderGsdbConfig()) -> np.ndarray:
    """One view (RGBA uint8 or float [H, W, 4] straight alpha, planar depth [H, W] with inf as
    background, its K for H x W and OpenCV c2w) -> splatter image [14, S, S] float32."""
    h, w = depth.shape
    S = cfg.splat_size
    if h != w or h % S:
        raise ValueError(f"render resolution {w}x{h} is not a square multiple of the splat size {S}")
    f = h // S
    rgba = np.asarray(rgba, dtype=np.float64)
    if rgba.max() > 1.0:
        rgba = rgba / 255.0
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    depth = np.asarray(depth, dtype=np.float64)
    points = unproject_depth(depth, K, c2w)
    center = c2w[:3, 3]
    normals = _normals(points, depth, center)
    points, depth = _fill_points(points, depth, alpha)
    normals, _ = _fill_points(normals, np.where(np.isfinite(normals[..., 0]), depth, np.inf), alpha)
    fg = (alpha > 0) & np.isfinite(depth)

    def cells(a: np.ndarray) -> np.ndarray:  # [H, W, ...] -> [S, S, f*f, ...]
        a = a.reshape(S, f, S, f, *a.shape[2:])
        return np.moveaxis(a, 2, 1).reshape(S, S, f * f, *a.shape[4:])

    z = np.where(fg, depth, np.inf)
    zc, ac, fgc = cells(z), cells(alpha), cells(fg)
    focal = float(K[0, 0])
    zmin = zc.min(axis=2)
    band = cfg.depth_tolerance * f * np.where(np.isfinite(zmin), zmin, 0.0) / focal
    member = fgc & (zc <= (zmin + band)[..., None])
    weight = np.where(member, ac, 0.0)
    wsum = weight.sum(axis=2)
    occupied = wsum > 0
    safe = np.where(occupied, wsum, 1.0)[..., None]

    def wmean(a: np.ndarray) -> np.ndarray:
        return (np.nan_to_num(cells(a)) * weight[..., None]).sum(axis=2) / safe

    xyz = wmean(points)
    colour = wmean(rgb)
    nrm = wmean(np.nan_to_num(normals))
    opacity = np.where(occupied, ac.mean(axis=2), 0.0)

    # background cells (and cells whose normal is undefined) face the camera
    rows, cols = np.meshgrid(np.arange(S) + 0.5, np.arange(S) + 0.5, indexing="ij")
    Ks = K.copy()
    Ks[:2] /= f
    dirs_cam = np.stack([(cols - Ks[0, 2]) / Ks[0, 0], (rows - Ks[1, 2]) / Ks[1, 1], np.ones_like(cols)], axis=-1)
    dirs = dirs_cam @ c2w[:3, :3].T
    forward = c2w[:3, 2]
    d0 = float(np.linalg.norm(center))  # planar depth of the object centre (the ring looks at it)
    xyz = np.where(occupied[..., None], xyz, center + d0 * dirs)
    colour = np.where(occupied[..., None], colour, 1.0)
    nlen = np.linalg.norm(nrm, axis=-1, keepdims=True)
    nrm = np.where(occupied[..., None] & (nlen > 1e-6), nrm / np.maximum(nlen, 1e-12), -forward)

    # The rasterizer adds eps2d px^2 to every projected covariance; the Gaussian's own std is
    # chosen so that the drawn std in its view is footprint_scale splat pixels.
    own_px = np.sqrt(max((cfg.footprint_scale * f) ** 2 - RasterConfig().eps2d, cfg.min_footprint**2))
    planar = np.einsum("ijc,c->ij", xyz - center, forward)
    footprint = own_px * planar / focal
    ray = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    quats, cos = _frame_quaternions(nrm.reshape(-1, 3), ray.reshape(-1, 3))
    stretch = 1.0 / np.maximum(cos.reshape(S, S), 1.0 / cfg.max_stretch)
    scale = np.stack([footprint, footprint * stretch, cfg.thickness * footprint], axis=-1)

    out = np.concatenate([np.clip(xyz, -1.0, 1.0), opacity[..., None], scale, quats.reshape(S, S, 4),
                          np.clip(colour, 0.0, 1.0)], axis=-1)
    return np.ascontiguousarray(out.transpose(2, 0, 1)).astype(np.float32)


def read_state_views(root: Path, state_id: str, views) -> tuple[list[np.ndarray], np.ndarray, list]:
    """RGBA [H, W, 4] uint8 of ``views``, depth [V_all, H, W] and the state's cameras."""
    folder = store.render_dir(root, state_id)
    if not store.has_render(folder):  # an incomplete render folder: DamagedFile
        raise FileNotFoundError(f"state {state_id}: {folder} not found (render the dataset first)")
    depth, _, cams = store.read_render(folder)
    return [store.read_rgba(folder, v) for v in views], depth, cams


def views_splatter(rgba: Sequence[np.ndarray], depth: Sequence[np.ndarray], cams: Sequence, cfg: RenderGsdbConfig) -> np.ndarray:
    """The geometric splatter image [V, 14, S, S] of views (RGBA, planar depth, camera), one per view."""
    return np.stack([splatter_from_view(im, d, c.K, c.c2w, cfg) for im, d, c in zip(rgba, depth, cams)])


def state_splatter(root: Path, state_id: str, cfg: RenderGsdbConfig = RenderGsdbConfig()) -> np.ndarray:
    """The geometric splatter image [V, 14, S, S] of one rendered state (before refinement)."""
    rgba, depth, cams = read_state_views(root, state_id, cfg.input_views)
    return views_splatter(rgba, [depth[v] for v in cfg.input_views], [cams[v] for v in cfg.input_views], cfg)


def as_stored(splatter: np.ndarray) -> np.ndarray:
    """``splatter`` rounded through float16 as ``gsdb.h5`` stores it (float32): an RGB-D model's
    static input built at inference is then the same numbers it read from the database in training."""
    return splatter.astype(np.float16).astype(np.float32)


# --------------------------------------------------------------------------- photometric refinement


def _logit(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


def state_targets(root: Path, state_id: str, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All 12 views of a state at ``size``: rgb composited on white [12, 3, s, s], alpha [12, 1, s, s],
    K [12, 3, 3] and OpenCV c2w [12, 4, 4] (float32)."""
    folder = store.render_dir(root, state_id)
    _, _, cams = store.read_render(folder)
    views = [load_view(folder / store.view_png_name(v), size, 1.0) for v in range(NUM_VIEWS)]
    cams = [c.resized(size, size) for c in cams]
    return (torch.from_numpy(np.stack([v[0] for v in views])), torch.from_numpy(np.stack([v[1] for v in views])),
            torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32),
            torch.tensor(np.stack([c.c2w for c in cams]), dtype=torch.float32))


def refine_splatter(splatter: np.ndarray, targets, cfg: RenderGsdbConfig, seed: int = 0,
                    device: str = "cpu") -> np.ndarray:
    """Photometric fit of the foreground Gaussians of ``splatter`` [V, 14, S, S] to the state's
    views (``state_targets``), ``cfg.refine_steps`` Adam steps on ``cfg.refine_views_per_step``
    seeded random views each; the layout and the transparent background are kept."""
    if cfg.refine_steps == 0:
        return splatter
    rgb_t, alpha_t, K, c2w = (t.to(device) for t in targets)
    size = rgb_t.shape[-1]
    g = torch.from_numpy(splatter).to(device, torch.float32).permute(0, 2, 3, 1).reshape(-1, layout.NUM_CHANNELS)
    fg = g[:, layout.OPACITY].squeeze(-1) > 0
    base = g.clone()
    params = {
        "xyz": g[fg, layout.XYZ].clone().requires_grad_(True),
        "opacity": _logit(g[fg, layout.OPACITY]).requires_grad_(True),
        "scale": torch.log(g[fg, layout.SCALE]).requires_grad_(True),
        "rotation": g[fg, layout.ROTATION].clone().requires_grad_(True),
        "rgb": _logit(g[fg, layout.RGB]).requires_grad_(True),
    }
    median_scale = float(g[fg, layout.SCALE].median()) if fg.any() else 0.01
    lrs = {"xyz": 0.5 * median_scale * cfg.refine_lr / 0.01, "opacity": 5 * cfg.refine_lr, "scale": cfg.refine_lr,
           "rotation": cfg.refine_lr, "rgb": 2.5 * cfg.refine_lr}
    optimizer = torch.optim.Adam([{"params": [p], "lr": lrs[k]} for k, p in params.items()])
    generator = torch.Generator().manual_seed(seed)
    k = min(cfg.refine_views_per_step, rgb_t.shape[0])

    def assemble() -> torch.Tensor:
        out = base.clone()
        out[fg] = torch.cat([params["xyz"].clamp(-1, 1), torch.sigmoid(params["opacity"]), torch.exp(params["scale"]),
                             F.normalize(params["rotation"], dim=-1), torch.sigmoid(params["rgb"])], dim=-1)
        return out

    for _ in range(cfg.refine_steps):
        views = torch.randperm(rgb_t.shape[0], generator=generator)[:k].to(device)
        rgb, alpha = render_views(assemble()[None], K[views][None], c2w[views][None], size)
        loss = F.mse_loss(rgb[0], rgb_t[views]) + F.mse_loss(alpha[0], alpha_t[views])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = assemble()
    v, _, s, _ = splatter.shape
    return out.reshape(v, s, s, layout.NUM_CHANNELS).permute(0, 3, 1, 2).cpu().numpy().astype(np.float32)


def build_state(root: Path, state_id: str, cfg: RenderGsdbConfig, device: str = "cpu") -> np.ndarray:
    """Geometric splatter image of one state, refined when ``cfg.refine_steps`` > 0."""
    splatter = state_splatter(root, state_id, cfg)
    if cfg.refine_steps:
        size = min(cfg.refine_size, int(store.read_render(store.render_dir(root, state_id))[0].shape[-1]))
        seed = int.from_bytes(state_id.encode()[-8:].rjust(8, b"\0"), "little") % (2**31) + cfg.seed
        splatter = refine_splatter(splatter, state_targets(root, state_id, size), cfg, seed=seed, device=device)
    return splatter


# --------------------------------------------------------------------------- database


def build_render_gsdb(root: Path, out: Path | None = None, cfg: RenderGsdbConfig = RenderGsdbConfig(),
                      part_size: int = 16, device: str = "cpu", ply_dir: Path | None = None, progress: bool = True,
                      split: str | None = None, ply_options: dict | None = None):
    """Build ``gsdb.h5`` from the renders of every state (resumable parts, like ``build_gsdb``)."""
    root = Path(root)
    out = Path(out) if out else root / GSDB_FILE
    records = [r for r in store.manifest_states(root) if split is None or r.get("split") == split]
    # states not rendered are left out (and listed); a render folder without its files raises DamagedFile
    rendered = {r["state_id"]: store.has_render(store.render_dir(root, r["state_id"])) for r in records}
    ids = [sid for sid, ok in rendered.items() if ok]

    def compute(chunk: list[str]):
        for sid in chunk:
            s = build_state(root, sid, cfg, device)
            if ply_dir is not None:
                _write_ply(Path(ply_dir) / f"{sid}.ply", s, ply_options)
            yield sid, s

    attrs = {"source": "render", "render_config": cfg.to_json(), "splat_size": cfg.splat_size,
             "input_views": json.dumps(list(cfg.input_views))}
    t0 = time.perf_counter()
    summary = build_parts(out, ids, compute, attrs, part_size=part_size, progress=progress, desc="gsdb (render)")
    summary.seconds = time.perf_counter() - t0
    summary.not_rendered = [sid for sid, ok in rendered.items() if not ok]
    return summary


def _write_ply(path: Path, splatter: np.ndarray, options: dict | None = None) -> None:
    flat = torch.from_numpy(flat_splatter(splatter))
    gs = gaussians_from_lgm(flat[flat[:, layout.OPACITY.start] > 0])
    write_ply(path, *gs, **(options or {}))


# --------------------------------------------------------------------------- quality


def reconstruction_psnr(splatter: np.ndarray, root: Path, state_id: str, views, size: int = 256) -> np.ndarray:
    """Full-image PSNR (white background) of the splatter's renders of ``views`` at ``size``."""
    rgb_t, _, K, c2w = state_targets(root, state_id, size)
    views = torch.as_tensor(list(views))
    g = torch.from_numpy(flat_splatter(splatter))[None].float()
    with torch.inference_mode():
        rgb, _ = render_views(g, K[views][None], c2w[views][None], size)
    return psnr(rgb[0].clamp(0, 1), rgb_t[views]).numpy()
