"""Inference: one image (or a dataset state) + drags -> the Gaussians of the moved state.

Multi-view inputs come from a pluggable source:
- ``dataset``: the state's own rendered input views (ring views 0/3/6/9) and cameras;
- ``scene``: an RGB-D scene folder in nerfstudio's layout, for RGB-D models
  (``partrm.scene_input``);
- ``zero123pp``: Zero123++ (diffusers) generating the other views from one image, with
  weights from a local folder (``--zero123-weights``); never downloaded.
The user's drags live in the input image (the first input view, pixel coordinates,
x right, y down). They are propagated over the moving part's region (``--region``:
the dataset's mask, SAM with a local checkpoint, or the weight-free colour region).

Outputs: ``prediction.ply`` (3DGS, object frame), ``turntable.png`` and ``.gif``
(renders around the camera ring) and ``drags.png`` (the input with the drags drawn,
beside the prediction rendered from the input view).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from partdrag4d import cameras, store
from partdrag4d.errors import ToolkitError
from partrm.data import camera_tensors, load_view, resize_depth
from partrm.gaussians import gaussians_from_lgm, write_ply
from partrm.gaussians.views import render_views, scale_K
from partrm.models.rgbd import drag_region
from partrm.predict import StaticCache, mode_of
from partrm.propagation import propagate, region_provider
from partrm.scene_input import carry_region, read_scene, scene_inputs


class InputError(ToolkitError, ValueError):
    """Unusable inference input (drags, image, state)."""


def parse_drags(texts: list[str] | None, json_path: Optional[Path] = None) -> np.ndarray:
    """``x0,y0:x1,y1`` strings and/or a JSON list of [x0, y0, x1, y1] (or of
    ``{"start": [x0, y0], "end": [x1, y1]}``) -> [K, 4] pixels, every coordinate finite."""
    drags = []
    for t in texts or []:
        try:
            a, b = t.split(":")
            drags.append([*map(float, a.split(",")), *map(float, b.split(","))])
        except ValueError:
            raise InputError(f"bad drag {t!r}: expected x0,y0:x1,y1 in input-image pixels") from None
        if len(drags[-1]) != 4:
            raise InputError(f"bad drag {t!r}: expected x0,y0:x1,y1 in input-image pixels")
    if json_path is not None:
        drags += _json_drags(Path(json_path))
    if not drags:
        raise InputError("no drags given: use --drag x0,y0:x1,y1 (repeatable) or --drags FILE.json")
    arr = np.asarray(drags, dtype=np.float64)
    for k, d in enumerate(arr):
        if not np.isfinite(d).all():
            raise InputError(f"drag {k + 1} ({_drag_text(d)}): coordinates must be finite numbers")
    return arr


def _json_drags(path: Path) -> list[list[float]]:
    """The drags of a ``--drags`` file; anything else is one line naming the file and the drag."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: {store.damage_reason(exc)}; expected a JSON list of [x0, y0, x1, y1]") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: a JSON {type(data).__name__}, expected a list of [x0, y0, x1, y1]")
    drags = []
    for k, d in enumerate(data):
        if isinstance(d, dict) and isinstance(d.get("start"), list) and isinstance(d.get("end"), list):
            d = [*d["start"], *d["end"]]
        if not (isinstance(d, list) and len(d) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in d)):
            raise InputError(f"{path}: drag {k + 1} is {json.dumps(d)[:60]}, expected 4 numbers [x0, y0, x1, y1] "
                             '(or {"start": [x0, y0], "end": [x1, y1]})')
        drags.append([float(x) for x in d])
    return drags


def _drag_text(d: np.ndarray) -> str:
    return f"{d[0]:g},{d[1]:g}:{d[2]:g},{d[3]:g}"


def check_drags_in_image(drags_px: np.ndarray, width: int, height: int) -> None:
    """Refuse a drag whose start or end lies outside the ``width`` x ``height`` input image."""
    for k, d in enumerate(drags_px):
        for name, (x, y) in (("starts", d[:2]), ("ends", d[2:])):
            if not (0 <= x <= width and 0 <= y <= height):
                raise InputError(f"drag {k + 1} ({_drag_text(d)}) {name} outside the {width} x {height} input image "
                                 f"(pixels, x in [0, {width}], y in [0, {height}])")


@dataclass
class MultiView:
    rgb: torch.Tensor  # [V, 3, S, S] in [0, 1], on white
    K: torch.Tensor  # [V, 3, 3] for S
    c2w: torch.Tensor  # [V, 4, 4] OpenCV, object frame
    first_rgba: np.ndarray  # the user's image [H, W, 4] uint8
    mask: Optional[np.ndarray] = None  # dataset part mask of the first view [H, W]
    depth: Optional[torch.Tensor] = None  # RGB-D: planar depth [V, 1, S, S] (inf: background)
    full_depth: Optional[np.ndarray] = None  # RGB-D: planar depth [V, H, W] at the render size
    masks: Optional[np.ndarray] = None  # RGB-D: the moving part's mask in every input view [V, H, W]
    static: Optional[torch.Tensor] = None  # RGB-D: the geometric static reconstruction [V, 14, S', S']
    full_K: Optional[np.ndarray] = None  # RGB-D: K [V, 3, 3] at the render size
    full_c2w: Optional[np.ndarray] = None


def dataset_views(root: Path, state_id: str, size: int, input_views=(0, 3, 6, 9), depth: bool = False,
                  splat_size: int = 128) -> MultiView:
    """A dataset state's input views; ``depth``: also what an RGB-D model reads (depth, the
    moving part's masks in every view, the geometric static reconstruction at ``splat_size``)."""
    folder = store.render_dir(root, state_id)
    if not store.has_render(folder):  # a render folder without its files: DamagedFile
        raise InputError(f"state {state_id!r} has no render in {root}")
    views = [load_view(folder / store.view_png_name(v), size, 1.0) for v in input_views]
    K, c2w = camera_tensors(store.read_dataset_cameras(root), input_views, size)
    record = store.read_state(root, state_id)
    full_depth, part_id, cams = store.read_render(folder)
    masks = np.isin(part_id[list(input_views)], record["moving_part_ids"])
    out = MultiView(torch.from_numpy(np.stack([v[0] for v in views])), K, c2w, store.read_rgba(folder, input_views[0]), masks[0])
    if depth:
        out.full_depth = full_depth[list(input_views)]
        out.depth = torch.from_numpy(np.stack([resize_depth(d, size) for d in out.full_depth])[:, None])
        out.masks = masks
        out.static = torch.from_numpy(StaticCache(root, splat_size)(state_id))
        out.full_K = np.stack([cams[v].K for v in input_views])
        out.full_c2w = np.stack([cams[v].c2w for v in input_views])
    return out


def scene_views(scene: Path, size: int, splat_size: int, frames=None, depth_scale: float = 0.001) -> MultiView:
    """An RGB-D scene folder's input views (``partrm.scene_input``); the moving part's masks
    come later, from the region the drags pick (``predict``)."""
    read = read_scene(scene, frames, depth_scale)
    inputs = scene_inputs(read, size, splat_size)
    return MultiView(inputs["rgb"], inputs["K"], inputs["c2w"], read.rgba[0], None, depth=inputs["depth"], full_depth=read.depth,
                     static=inputs["static"], full_K=inputs["full_K"], full_c2w=inputs["full_c2w"])


def lift_drags(drags_px: np.ndarray, views: MultiView) -> list[np.ndarray]:
    """The user's drags [K, 4] (pixels of the first view) carried into every input view of an
    RGB-D input: each start is the surface point under it (its depth); its end is taken at the
    start's depth in the first camera (a motion parallel to that image plane: one view cannot
    tell depth change). A view keeps a drag whose start lands on the moving part there and is
    not hidden (its depth agrees with the view's depth map). Returns [K_v, 4] pixels per view."""
    depth, K, c2w = views.full_depth, views.full_K, views.full_c2w
    h, w = depth.shape[1:]
    starts, ends = drags_px[:, :2], drags_px[:, 2:]
    cols = np.clip(starts[:, 0].astype(int), 0, w - 1)
    rows = np.clip(starts[:, 1].astype(int), 0, h - 1)
    z = depth[0, rows, cols]
    ok = np.isfinite(z)  # a start on the background has no surface point to carry: the drag is dropped
    drags_px, starts, ends, z = drags_px[ok], starts[ok], ends[ok], z[ok]

    def unproject(px: np.ndarray) -> np.ndarray:
        cam = np.stack([(px[:, 0] - K[0, 0, 2]) / K[0, 0, 0] * z, (px[:, 1] - K[0, 1, 2]) / K[0, 1, 1] * z, z], axis=1)
        return cam @ c2w[0, :3, :3].T + c2w[0, :3, 3]

    p0, p1 = unproject(starts), unproject(ends)
    out = [drags_px]
    for v in range(1, len(depth)):
        w2c = np.linalg.inv(c2w[v])
        uv = []
        for p in (p0, p1):
            cam = p @ w2c[:3, :3].T + w2c[:3, 3]
            uv.append(np.stack([K[v, 0, 0] * cam[:, 0] / cam[:, 2] + K[v, 0, 2], K[v, 1, 1] * cam[:, 1] / cam[:, 2] + K[v, 1, 2], cam[:, 2]], 1))
        c = np.clip(uv[0][:, 0].astype(int), 0, w - 1)
        r = np.clip(uv[0][:, 1].astype(int), 0, h - 1)
        inside = (uv[0][:, 0] >= 0) & (uv[0][:, 0] < w) & (uv[0][:, 1] >= 0) & (uv[0][:, 1] < h)
        seen = inside & views.masks[v, r, c] & (np.abs(depth[v, r, c] - uv[0][:, 2]) < 0.02 * uv[0][:, 2])
        out.append(np.concatenate([uv[0][seen, :2], uv[1][seen, :2]], axis=1))
    return out


def on_white(image: Image.Image) -> Image.Image:
    """An image (RGBA, LA, P with transparency, RGB, L) as RGB composited on white, the
    background Zero123++ and LGM expect (``convert("RGB")`` would turn transparent pixels
    black, or whatever colour they hold)."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def zero123pp_views(image: Path, weights: Optional[Path], size: int) -> MultiView:  # pragma: no cover - needs weights
    """Zero123++ multi-view generation from a local diffusers folder (its 6 outputs at
    azimuths 30..330 / elevations 20,-10 alternating; we keep the 3 nearest to 90/180/270)."""
    if weights is None or not Path(weights).is_dir():
        raise FileNotFoundError("a single image needs multi-view inputs: pass --zero123-weights DIR (a local Zero123++ diffusers "
                                "folder, needs the 'diffusers' extra) or use --state with --data")
    try:
        from diffusers import DiffusionPipeline  # lazy: optional (.[diffusers]), only for --image
    except ImportError as exc:
        raise ImportError("Zero123++ needs the diffusers extra: pip install -e '.[diffusers]'") from exc
    pipe = DiffusionPipeline.from_pretrained(str(weights), custom_pipeline=str(weights), torch_dtype=torch.float32, local_files_only=True)
    rgba = Image.open(image).convert("RGBA")
    rgb = on_white(rgba)
    grid = pipe(rgb, num_inference_steps=50).images[0]
    w, h = grid.size[0] // 2, grid.size[1] // 3
    tiles = [grid.crop(((k % 2) * w, (k // 2) * h, (k % 2 + 1) * w, (k // 2 + 1) * h)) for k in range(6)]
    azimuths = [30, 90, 150, 210, 270, 330]
    elevations = [20, -10, 20, -10, 20, -10]
    picks = [azimuths.index(a) for a in (90, 210, 270)]
    imgs = [np.asarray(rgb.resize((size, size)), np.float32) / 255.0] + [np.asarray(on_white(tiles[p]).resize((size, size)), np.float32) / 255.0 for p in picks]
    K = cameras.intrinsics(size, size, 30.0)
    c2ws = [cameras.look_at(_orbit(0.0, 0.0))] + [cameras.look_at(_orbit(azimuths[p], elevations[p])) for p in picks]
    return MultiView(torch.tensor(np.stack(imgs)).permute(0, 3, 1, 2), torch.tensor(np.stack([K] * 4), dtype=torch.float32),
                     torch.tensor(np.stack(c2ws), dtype=torch.float32), np.asarray(rgba))


def _orbit(azimuth: float, elevation: float, radius: float = cameras.CAMERA_DISTANCE) -> np.ndarray:
    a, e = np.radians(azimuth), np.radians(elevation)
    return np.array([-radius * np.cos(e) * np.cos(a), -radius * np.cos(e) * np.sin(a), radius * np.sin(e)])


def predict(model, views: MultiView, drags_px: np.ndarray, num_drags: int = 10, region: str = "mask",
            sam_checkpoint: Optional[Path] = None, rule: str = "translation", seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Propagate the user's drags and run PartRM. Returns (Gaussians [N, 14], drags used [M, 4] px)."""
    h, w = views.first_rgba.shape[:2]
    provider = region_provider(region, views.mask, sam_checkpoint)
    rng = np.random.default_rng(seed)
    per_drag = max(1, num_drags // len(drags_px))
    used = []
    picked = np.zeros((h, w), dtype=bool)
    for d in drags_px:
        region_mask = provider(views.first_rgba, d[:2])
        picked |= np.asarray(region_mask, dtype=bool)
        used.append(propagate(d[:2], d[2:], region_mask, per_drag, rng, rule))
    used = np.concatenate(used)[:num_drags]
    if mode_of(model) == "rgbd" and views.masks is None and views.full_depth is not None:  # a scene: no part ids
        views = replace(views, masks=carry_region(picked, views.full_depth, views.full_K, views.full_c2w))
    v = views.rgb.shape[0]
    drags = torch.zeros(1, v, num_drags, 4)
    valid = torch.zeros(1, v, num_drags, dtype=torch.bool)
    per_view = [used]
    if mode_of(model) == "rgbd" and model.config.drag_views == "all":  # trained with drags in every view: give it them
        per_view = lift_drags(used, views)
    for a, d in enumerate(per_view):
        d = d[:num_drags]
        drags[0, a, : len(d)] = torch.tensor(d / np.array([w, h, w, h]), dtype=torch.float32)
        valid[0, a, : len(d)] = True
    device = next(model.parameters()).device
    with torch.inference_mode():
        if mode_of(model) == "rgbd":
            if views.depth is None:
                raise InputError("an RGB-D model needs depth for every input view (give --state with --data, or --scene)")
            region = drag_region(torch.from_numpy(views.masks), model.config.splat_size, model.config.gate_fraction)
            g = model.reconstruct(views.rgb[None].to(device), (views.K[None].to(device), views.c2w[None].to(device)), drags.to(device),
                                  valid.to(device), depth=views.depth[None].to(device), static=views.static[None].to(device),
                                  region=region[None].to(device))
        else:
            g = model.reconstruct(views.rgb[None].to(device), (views.K[None].to(device), views.c2w[None].to(device)), drags.to(device), valid.to(device))
    return g[0].float().cpu(), used


def write_outputs(out: Path, gaussians: torch.Tensor, views: MultiView, drags_px: np.ndarray, size: int = 256, frames: int = 12,
                  sh_degree: int = 3, up: str = "z") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = gaussians_from_lgm(gaussians)
    write_ply(out / "prediction.ply", *g, sh_degree=sh_degree, up=up)
    ring = cameras.ring_cameras(size, frames)
    K = torch.tensor(np.stack([c.K for c in ring]), dtype=torch.float32)[None]
    c2w = torch.tensor(np.stack([c.c2w for c in ring]), dtype=torch.float32)[None]
    with torch.inference_mode():
        rgb, _ = render_views(gaussians[None], K, c2w, size)
    tiles = [Image.fromarray((rgb[0, k].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)) for k in range(frames)]
    strip = Image.new("RGB", (size * frames, size), (255, 255, 255))
    for k, t in enumerate(tiles):
        strip.paste(t, (k * size, 0))
    strip.save(out / "turntable.png")
    tiles[0].save(out / "turntable.gif", save_all=True, append_images=tiles[1:], duration=150, loop=0)
    # the input with its drags beside the prediction seen from the input view
    first = Image.fromarray(views.first_rgba).convert("RGBA")
    canvas = Image.new("RGB", first.size, (255, 255, 255))
    canvas.paste(first, mask=first.getchannel("A"))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in drags_px:
        draw.line([(x0, y0), (x1, y1)], fill=(255, 60, 0), width=2)
        draw.ellipse([x0 - 3, y0 - 3, x0 + 3, y0 + 3], fill=(0, 200, 0))
    Kin = scale_K(views.K[:1][None], views.rgb.shape[-1], size)
    with torch.inference_mode():
        pred, _ = render_views(gaussians[None], Kin, views.c2w[:1][None], size)
    pred_img = Image.fromarray((pred[0, 0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8))
    side = Image.new("RGB", (2 * size, size), (255, 255, 255))
    side.paste(canvas.resize((size, size), Image.LANCZOS), (0, 0))
    side.paste(pred_img, (size, 0))
    side.save(out / "drags.png")
    return [out / "prediction.ply", out / "turntable.png", out / "turntable.gif", out / "drags.png"]
