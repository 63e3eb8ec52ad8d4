"""RGB-D input from a scene folder, for an RGB-D PartRM outside a dataset (``partrm infer --scene``).

The folder is in nerfstudio's layout, which RGB-D capture apps and ``partdrag4d export``
write: ``transforms.json`` (or NeRF-synthetic's ``transforms_train.json``) with shared
intrinsics and frames carrying ``file_path``, ``transform_matrix`` (camera-to-world,
OpenGL axes) and ``depth_file_path`` (a 16-bit PNG read with nerfstudio's
``depth_unit_scale_factor``, 0.001 by default, or a float ``.npy`` of planar depth; 0, NaN
or inf is background). The foreground is the image's alpha, else the frame's
``mask_path``, else the pixels with depth.

The model was trained on the dataset's ring of cameras around an object normalised into
the unit cube; a scene whose cameras sit elsewhere is outside what it learnt, though the
static reconstruction (unprojected depth) is right whatever the cameras.

The moving part's mask in each input view (which the model's drag region needs) is
carried from the region the drags pick in the first view: the first view's region is
lifted to surface points by its depth, and a pixel of another view belongs to the part
when its own surface point lies within two pixel footprints of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from scipy.spatial import cKDTree

from partdrag4d import cameras
from partdrag4d.errors import ToolkitError
from partdrag4d.export import cameras_from_transforms
from partrm.data import camera_tensors, image_arrays, resize_depth
from partrm.gsdb_render import RenderGsdbConfig, as_stored, unproject_depth, views_splatter

TRANSFORMS = ("transforms.json", "transforms_train.json")
RING_INPUT_FRAMES = (0, 3, 6, 9)  # the dataset's input views among its 12 ring views (what the export writes)
NUM_INPUT_VIEWS = 4


class SceneError(ToolkitError, ValueError):
    """A scene folder the RGB-D model cannot read (one line naming the file or frame)."""


@dataclass
class Scene:
    """The input frames of a scene: RGBA [H, W, 4] uint8, planar depth [V, H, W] (inf background), cameras."""

    rgba: list[np.ndarray]
    depth: np.ndarray
    cameras: list[cameras.Camera]
    frames: list[int]


def _inside(scene: Path, name: object, what: str) -> Path:
    """A file the transforms name, relative to the scene and never outside it."""
    if not isinstance(name, str) or not name:
        raise SceneError(f"{scene}: {what} is not a file name: {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        raise SceneError(f"{scene}: {what} {name!r} leaves the scene folder (absolute or '..'); give a path inside it")
    return scene.joinpath(*[p for p in path.parts if p != "."])


def _image_path(scene: Path, name: object, what: str) -> Path:
    path = _inside(scene, name, what)
    if not path.suffix:  # NeRF-synthetic names images without their extension
        path = path.with_suffix(".png")
    if not path.is_file():
        raise SceneError(f"{scene}: {what} {path.relative_to(scene)} does not exist")
    return path


def _read_image(path: Path, scene: Path, what: str, mode: Optional[str] = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except (OSError, ValueError) as exc:
        raise SceneError(f"{scene}: {what} {path.relative_to(scene)} is not a readable image ({exc})") from None


def read_depth(path: Path, scene: Path, what: str, depth_scale: float) -> np.ndarray:
    """Planar depth [H, W] float64, inf where there is none (0, NaN, inf or negative)."""
    if path.suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as exc:
            raise SceneError(f"{scene}: {what} {path.relative_to(scene)} is not a readable .npy ({exc})") from None
        scale = 1.0
    else:
        raw, scale = _read_image(path, scene, what).astype(np.float64), depth_scale
    if raw.ndim != 2:
        raise SceneError(f"{scene}: {what} {path.relative_to(scene)} has shape {raw.shape}; depth is one channel [H, W]")
    return np.where(np.isfinite(raw) & (raw > 0), raw * scale, np.inf)


def input_frames(count: int, frames: Optional[Sequence[int]]) -> list[int]:
    """The frames the model reads: ``frames`` if given, else the ring's 0/3/6/9 of a 12-frame
    scene (an exported dataset state) or all of a 4-frame one."""
    if frames is None:
        if count == 12:
            return list(RING_INPUT_FRAMES)
        if count == NUM_INPUT_VIEWS:
            return list(range(count))
        raise SceneError(f"the scene has {count} frames; the model takes {NUM_INPUT_VIEWS} input views: name them with --frames i,j,k,l")
    frames = list(frames)
    if len(frames) != NUM_INPUT_VIEWS or len(set(frames)) != len(frames):
        raise SceneError(f"--frames names {frames}; the model takes {NUM_INPUT_VIEWS} different input views")
    bad = [f for f in frames if not 0 <= f < count]
    if bad:
        raise SceneError(f"--frames {bad} do not exist: the scene has frames 0..{count - 1}")
    return frames


def read_scene(scene: Path, frames: Optional[Sequence[int]] = None, depth_scale: float = 0.001) -> Scene:
    """The input frames of a scene folder (module docstring); any unusable frame is one ``SceneError``."""
    scene = Path(scene)
    if not depth_scale > 0:
        raise SceneError(f"--depth-scale must be above 0, got {depth_scale}")
    transforms = next((scene / t for t in TRANSFORMS if (scene / t).is_file()), None)
    if transforms is None:
        raise SceneError(f"{scene}: no {' or '.join(TRANSFORMS)} (a scene folder in nerfstudio's layout)")
    try:
        content = json.loads(transforms.read_text())
        records = content["frames"]
        if "fl_x" not in content:  # NeRF-synthetic: the size comes from the first image, which must be inside too
            _image_path(scene, records[0].get("file_path"), "frame 0 file_path")
        cams = [c for _, c in cameras_from_transforms(transforms)]
    except SceneError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise SceneError(f"{transforms}: not a transforms file with frames and intrinsics ({type(exc).__name__}: {exc})") from None
    chosen = input_frames(len(records), frames)
    rgba, depth = [], []
    for f in chosen:
        frame = records[f]
        what = f"frame {f}"
        if not frame.get("depth_file_path"):
            raise SceneError(f"{scene}: {what} has no depth_file_path; an RGB-D model needs depth for every input view")
        image = _read_image(_image_path(scene, frame.get("file_path"), f"{what} file_path"), scene, f"{what} file_path")
        d = read_depth(_image_path(scene, frame["depth_file_path"], f"{what} depth_file_path"), scene, f"{what} depth_file_path",
                       depth_scale)
        cam = cams[f]
        if image.shape[:2] != (cam.height, cam.width) or d.shape != (cam.height, cam.width):
            raise SceneError(f"{scene}: {what}: image {image.shape[1]}x{image.shape[0]}, depth {d.shape[1]}x{d.shape[0]} "
                             f"and intrinsics {cam.width}x{cam.height} disagree")
        rgba.append(_with_alpha(scene, frame, what, image, d))
        depth.append(d)
    return Scene(rgba, np.stack(depth), [cams[f] for f in chosen], chosen)


def _with_alpha(scene: Path, frame: dict, what: str, image: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """RGBA uint8: the image's own alpha, else the frame's mask, else where there is depth."""
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image.astype(np.uint8))
    rgb = np.asarray(Image.fromarray(image).convert("RGB"))
    if frame.get("mask_path"):
        mask = _read_image(_image_path(scene, frame["mask_path"], f"{what} mask_path"), scene, f"{what} mask_path", "L") > 127
    else:
        mask = np.isfinite(depth)
    return np.concatenate([rgb, (mask * 255).astype(np.uint8)[..., None]], axis=2)


def scene_inputs(scene: Scene, size: int, splat_size: int) -> dict:
    """What an RGB-D model reads from a scene: rgb, K, c2w and depth at the model's ``size``,
    depth, K and c2w at the scene's, and the geometric static reconstruction at ``splat_size``
    (``gsdb_render.as_stored``, as ``predict.StaticCache`` builds it)."""
    h, w = scene.depth.shape[1:]
    if h != w or h % splat_size or h % size:
        raise SceneError(f"the scene's views are {w}x{h}; this model needs square views whose side is a multiple of "
                         f"{size} (its input) and {splat_size} (its Gaussians per side)")
    static = views_splatter(scene.rgba, scene.depth, scene.cameras, RenderGsdbConfig(splat_size=splat_size))
    K, c2w = camera_tensors(scene.cameras, range(len(scene.cameras)), size)
    return {
        "rgb": torch.from_numpy(np.stack([image_arrays(Image.fromarray(im, "RGBA"), size, 1.0)[0] for im in scene.rgba])),
        "K": K, "c2w": c2w,
        "depth": torch.from_numpy(np.stack([resize_depth(d, size) for d in scene.depth])[:, None]),
        "static": torch.from_numpy(as_stored(static)),
        "full_K": np.stack([c.K for c in scene.cameras]), "full_c2w": np.stack([c.c2w for c in scene.cameras]),
    }  # fmt: skip


def carry_region(region: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """The part's region in the first view [H, W] -> its mask in every view [V, H, W] (module
    docstring): what the first view sees of it; other views add nothing it does not see."""
    points0 = unproject_depth(depth[0], K[0], c2w[0])
    seen = region & np.isfinite(depth[0])
    masks = np.zeros(depth.shape, dtype=bool)
    masks[0] = seen
    if not seen.any():
        return masks
    tree = cKDTree(points0[seen])
    footprint = float(np.median(depth[0][seen])) / float(K[0, 0, 0])
    for v in range(1, len(depth)):
        points = unproject_depth(depth[v], K[v], c2w[v])
        fg = np.isfinite(depth[v])
        distance, _ = tree.query(points[fg], distance_upper_bound=2.0 * footprint)
        masks[v][fg] = np.isfinite(distance)
    return masks


__all__ = ["Scene", "SceneError", "carry_region", "input_frames", "read_depth", "read_scene", "scene_inputs"]
