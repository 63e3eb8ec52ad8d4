"""``partdrag4d export``: rendered states as scenes that NeRF / 3DGS tools fit as they are.

One folder per state, ``OUT/<state_id>/``::

    transforms.json                    nerfstudio format (--format nerfstudio)
    transforms_train.json              NeRF-synthetic (Blender) format (--format nerf-synthetic):
    transforms_val.json                  train = the 4 input views (partrm.data.DEFAULT_INPUT_VIEWS),
    transforms_test.json                 test (and val, a copy, for loaders that want it) = the other 8
    images/view_00.png ...             the rendered RGBA views (copied, or symlinked with --images link)
    depth/view_00.png ...              planar camera z, 16-bit PNG, DEPTH_SCALE (1000) units per object-frame
                                         unit ("millimetres" for an object frame in metres), 0 = background
    masks/view_00.png ...              8-bit foreground mask (255 object, 0 background)
    parts/view_00.png ...              16-bit part ids (0 background, link k -> k + 1, as views.npz)

Cameras: ``transform_matrix`` is the camera-to-world matrix in Blender / OpenGL axes
(x right, y up, looking down -z; ``cameras.OPENCV_TO_BLENDER``), world = this project's
object frame (Z up). nerfstudio also gets ``fl_x, fl_y, cx, cy, w, h`` (pixels, pixel
centres at +0.5 as in ``partdrag4d.cameras``) and ``camera_model`` ``OPENCV`` with zero
distortion; NeRF-synthetic gets ``camera_angle_x`` (horizontal field of view, radians;
square pixels, principal point at the image centre) and ``file_path`` without the
extension, as its loaders expect. Frames also carry ``depth_file_path`` (nerfstudio's
key: read with ``depth_unit_scale_factor`` = 1 / DEPTH_SCALE = 0.001, its default) and
``part_id_path``. ``mask_path`` (nerfstudio: pixels with 0 are left out of the loss) is
written only with ``--mask-path``: the images' alpha already holds the silhouette, and
leaving the background out of the loss lets a NeRF fill it with floaters.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from partdrag4d import cameras, store
from partdrag4d.errors import DamagedFile, ToolkitError

FORMATS = ("nerfstudio", "nerf-synthetic")
IMAGE_MODES = ("copy", "link")
DEPTH_SCALE = 1000.0
"""Depth PNG value = round(planar z * DEPTH_SCALE); 0 is background (and z < 0.5 / DEPTH_SCALE)."""
INPUT_VIEWS = (0, 3, 6, 9)
"""The model's input views (``partrm.data.DEFAULT_INPUT_VIEWS``): NeRF-synthetic's train split."""


class ExportError(ToolkitError, ValueError):
    """Bad input to ``export``: one line naming the state (or dataset) and the reason."""


@dataclass
class ExportSummary:
    states: int = 0
    folders: list[Path] = field(default_factory=list)
    not_rendered: list[str] = field(default_factory=list)  # --all: states without a render folder (skipped)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def depth_png(depth: np.ndarray) -> np.ndarray:
    """Planar depth [H, W] (inf background) -> uint16 in 1 / DEPTH_SCALE units, 0 background."""
    finite = np.isfinite(depth)
    scaled = np.where(finite, np.asarray(depth, np.float64) * DEPTH_SCALE, 0.0)
    if (scaled[finite] < 0).any() or (scaled > 65535).any():
        raise ExportError(f"depth outside [0, {65535 / DEPTH_SCALE:g}] object units cannot be stored as 16-bit PNG")
    return np.rint(scaled).astype(np.uint16)


def read_depth_png(path: Path) -> np.ndarray:
    """Inverse of the export's depth encoding: float64 planar depth, ``inf`` where 0."""
    with Image.open(path) as im:
        raw = np.asarray(im).astype(np.float64)
    return np.where(raw > 0, raw / DEPTH_SCALE, np.inf)


def _frame_files(view: int) -> dict[str, str]:
    name = store.view_png_name(view)
    return {"image": f"images/{name}", "depth": f"depth/{name}", "mask": f"masks/{name}", "parts": f"parts/{name}"}


def nerfstudio_transforms(cams: list[cameras.Camera], mask_path: bool = False) -> dict:
    """nerfstudio's ``transforms.json`` for one state's cameras (shared intrinsics)."""
    K = cams[0].K
    for c in cams:
        if not np.allclose(c.K, K) or (c.width, c.height) != (cams[0].width, cams[0].height):
            raise ExportError("views have different intrinsics; nerfstudio's shared intrinsics would be wrong")
    frames = []
    for v, c in enumerate(cams):
        files = _frame_files(v)
        frame = {"file_path": files["image"], "transform_matrix": c.c2w_blender.tolist(),
                 "depth_file_path": files["depth"], "part_id_path": files["parts"]}
        if mask_path:
            frame["mask_path"] = files["mask"]
        frames.append(frame)
    return {
        "camera_model": "OPENCV",
        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "w": int(cams[0].width), "h": int(cams[0].height),
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": frames,
    }  # fmt: skip


def nerf_synthetic_transforms(cams: list[cameras.Camera], views: list[int], mask_path: bool = False) -> dict:
    """NeRF-synthetic's ``transforms_<split>.json`` with the frames of ``views``."""
    c0 = cams[0]
    K = c0.K
    if not (np.isclose(K[0, 0], K[1, 1]) and np.isclose(K[0, 2], c0.width / 2) and np.isclose(K[1, 2], c0.height / 2)):
        raise ExportError("NeRF-synthetic needs square pixels and the principal point at the image centre")
    frames = []
    for v in views:
        files = _frame_files(v)
        frame = {"file_path": "./" + files["image"][: -len(".png")], "transform_matrix": cams[v].c2w_blender.tolist(),
                 "depth_file_path": files["depth"], "part_id_path": files["parts"]}
        if mask_path:
            frame["mask_path"] = files["mask"]
        frames.append(frame)
    return {"camera_angle_x": 2.0 * math.atan(c0.width / (2.0 * K[0, 0])), "frames": frames}


def _ok_records(root: Path) -> dict[str, dict]:
    if not store.has_manifest(root):
        raise ExportError(f"{root}: no {store.MANIFEST} (not a dataset folder)")
    return {r["state_id"]: r for r in store.manifest_states(root)}


def _complete_render(root: Path, sid: str) -> Path:
    """The state's render folder; one that is missing or damaged is refused with one line."""
    render = store.render_dir(root, sid)
    if not render.is_dir():
        raise ExportError(f"{sid}: not rendered (run `partdrag4d render {root}`)")
    problem = store.render_problem(render, cameras.NUM_VIEWS)
    if problem is not None:
        raise DamagedFile(f"{sid}: {problem}")
    return render


def export_state(root: Path, record: dict, out: Path, fmt: str, images: str = "copy", mask_path: bool = False,
                 input_views: tuple[int, ...] = INPUT_VIEWS) -> Path:
    """Write one state's folder ``out/<state_id>`` (assembled under a temporary name, renamed)."""
    sid = record["state_id"]
    render = _complete_render(root, sid)
    depth, part_id, cams = store.read_render(render)
    if depth.shape[0] != len(cams) or any((c.width, c.height) != (depth.shape[2], depth.shape[1]) for c in cams):
        raise ExportError(f"{sid}: views.npz and cameras.json disagree on the views")
    bad = [v for v in input_views if not 0 <= v < len(cams)]
    if bad:
        raise ExportError(f"{sid}: input views {bad} do not exist (0..{len(cams) - 1})")
    with store.StagingDir(out / sid) as tmp:
        for sub in ("images", "depth", "masks", "parts"):
            (tmp / sub).mkdir()
        for v in range(len(cams)):
            files = _frame_files(v)
            store.read_rgba(render, v)  # a PNG that does not decode (DamagedFile) is not exported
            src = (render / store.view_png_name(v)).resolve()
            if images == "link":
                os.symlink(src, tmp / files["image"])
            else:
                shutil.copyfile(src, tmp / files["image"])
            (tmp / files["depth"]).write_bytes(_png_bytes(depth_png(depth[v])))
            (tmp / files["mask"]).write_bytes(_png_bytes(np.where(part_id[v] > 0, 255, 0).astype(np.uint8)))
            (tmp / files["parts"]).write_bytes(_png_bytes(part_id[v].astype(np.uint16)))
        if fmt == "nerfstudio":
            store.atomic_write_json(tmp / "transforms.json", nerfstudio_transforms(cams, mask_path))
        else:
            train = list(input_views)
            test = [v for v in range(len(cams)) if v not in input_views]
            store.atomic_write_json(tmp / "transforms_train.json", nerf_synthetic_transforms(cams, train, mask_path))
            store.atomic_write_json(tmp / "transforms_test.json", nerf_synthetic_transforms(cams, test, mask_path))
            store.atomic_write_json(tmp / "transforms_val.json", nerf_synthetic_transforms(cams, test, mask_path))
    return out / sid


def export(root: Path, out: Path, fmt: str = "nerfstudio", states: list[str] | None = None, all_states: bool = False,
           images: str = "copy", mask_path: bool = False, progress: bool = True) -> ExportSummary:
    """Export the chosen states (``states``) or every rendered state (``all_states``)."""
    root, out = Path(root), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if images not in IMAGE_MODES:
        raise ExportError(f"unknown image mode {images!r}; expected one of {', '.join(IMAGE_MODES)}")
    if bool(states) == bool(all_states):
        raise ExportError("give --state ID (repeatable) or --all")
    records = _ok_records(root)
    not_rendered: list[str] = []
    if all_states:
        chosen = []
        for sid, r in sorted(records.items()):
            rendered = store.render_dir(root, r["state_id"]).is_dir()  # an incomplete render is refused, not skipped
            (chosen.append(r) if rendered else not_rendered.append(sid))
        if not chosen:
            raise ExportError(f"{root}: no rendered states (run `partdrag4d render {root}`)")
    else:
        missing = [s for s in states if s not in records]
        if missing:
            raise ExportError(f"state {missing[0]!r} is not in {root / store.MANIFEST}")
        chosen = [records[s] for s in states]
    for r in chosen:  # refuse a damaged render before anything is written (PNG data is checked as it is copied)
        _complete_render(root, r["state_id"])
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(not_rendered=not_rendered)
    for r in tqdm(chosen, desc=f"export {fmt}", unit="state", disable=not progress, dynamic_ncols=True):
        summary.folders.append(export_state(root, r, out, fmt, images, mask_path))
        summary.states += 1
    return summary


def cameras_from_transforms(path: Path) -> list[tuple[str, cameras.Camera]]:
    """(file_path, OpenCV camera) of each frame of an exported transforms file (either format)."""
    t = json.loads(Path(path).read_text())
    frames = t["frames"]
    if "fl_x" in t:
        K = np.array([[t["fl_x"], 0.0, t["cx"]], [0.0, t["fl_y"], t["cy"]], [0.0, 0.0, 1.0]])
        w, h = int(t["w"]), int(t["h"])
    else:
        first = Path(path).parent / (frames[0]["file_path"] + ".png")
        with Image.open(first) as im:
            w, h = im.size
        f = 0.5 * w / math.tan(0.5 * t["camera_angle_x"])
        K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    return [(fr["file_path"], cameras.Camera(K, np.asarray(fr["transform_matrix"]) @ cameras.OPENCV_TO_BLENDER, w, h)) for fr in frames]
