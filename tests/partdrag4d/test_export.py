"""``partdrag4d export``: nerfstudio / NeRF-synthetic scenes of rendered states.

The exported cameras must be exact: the state's surface samples, projected with the
exported matrices (read the way the tools read them: Blender/OpenGL c2w, nerfstudio's
fl/cx/cy, NeRF-synthetic's camera_angle_x), land on pixels whose exported part id is
the sample's link, with the exported depth equal to their camera z — the check of
``partdrag4d verify``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.cli import app
from partdrag4d.drags import DEPTH_TOLERANCE
from partdrag4d.export import DEPTH_SCALE, INPUT_VIEWS, read_depth_png
from partdrag4d.verify import PART_AGREEMENT, part_boundary
from partrm.data import DEFAULT_INPUT_VIEWS

STATE = "syn-laptop-0-000_joint_0_c0_s2"
FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # Blender/OpenGL camera axes <-> OpenCV


def _export(root, out, *args):
    result = CliRunner().invoke(app, ["export", str(root), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result


def _agreement(points, part_of_point, K, c2w_opencv, depth, parts):
    """verify's check: share of depth-test-visible samples (off part boundaries) whose pixel
    shows their link; and how many were visible."""
    h, w = depth.shape
    w2c = np.linalg.inv(c2w_opencv)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / z[:, None] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    idx = np.flatnonzero((z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h))
    r, c = row[idx], col[idx]
    visible = (np.abs(depth[r, c] - z[idx]) <= DEPTH_TOLERANCE) & ~part_boundary(parts)[r, c]
    if visible.sum() == 0:
        return 0.0, 0
    return float(np.mean(parts[r[visible], c[visible]] == part_of_point[idx][visible])), int(visible.sum())


def _state_points(root, state):
    record = store.read_json(store.state_dir(root, state) / "state.json")
    with np.load(store.object_dir(root, record["object_id"]) / "points.npz") as z:
        part = z["part_id"]
    return np.load(store.state_dir(root, state) / "points.npy").astype(np.float64), part


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def test_nerfstudio_frames_are_exact(rendered_dataset, tmp_path):
    out = tmp_path / "ns"
    result = _export(rendered_dataset, out, "--format", "nerfstudio", "--state", STATE)
    assert result.stdout.strip().splitlines() == [str(out / STATE)]
    scene = out / STATE
    t = json.loads((scene / "transforms.json").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model", "frames"} <= set(t)
    assert t["camera_model"] == "OPENCV" and t["w"] == t["h"] == 128 and len(t["frames"]) == 12
    depth_npz, part_npz, cams = store.read_render(store.render_dir(rendered_dataset, STATE))
    K = np.array([[t["fl_x"], 0, t["cx"]], [0, t["fl_y"], t["cy"]], [0, 0, 1.0]])
    np.testing.assert_allclose(K, cams[0].K)
    points, part_of_point = _state_points(rendered_dataset, STATE)
    for v, frame in enumerate(t["frames"]):
        assert frame["file_path"] == f"images/view_{v:02d}.png"
        M = np.asarray(frame["transform_matrix"])
        assert M.shape == (4, 4) and np.allclose(M[3], [0, 0, 0, 1])
        # Blender/OpenGL axes: the camera looks down its -z at the object (near the origin)
        assert np.dot(-M[:3, 2], -M[:3, 3]) > 0.99 * np.linalg.norm(M[:3, 3])
        assert M[2, 1] > 0  # camera +y (up in the image) leans toward world +Z
        rgba = _png(scene / frame["file_path"])
        assert rgba.shape == (128, 128, 4)
        np.testing.assert_array_equal(rgba, store.read_rgba(store.render_dir(rendered_dataset, STATE), v))
        raw_depth = _png(scene / frame["depth_file_path"])
        assert raw_depth.dtype == np.uint16
        seen = part_npz[v] > 0
        assert (raw_depth[~seen] == 0).all() and (raw_depth[seen] > 0).all()
        depth = read_depth_png(scene / frame["depth_file_path"])
        assert np.abs(depth[seen] - depth_npz[v][seen]).max() <= 0.5 / DEPTH_SCALE + 1e-6
        parts = _png(scene / frame["part_id_path"])
        np.testing.assert_array_equal(parts, part_npz[v])
        np.testing.assert_array_equal(_png(scene / f"masks/view_{v:02d}.png"), np.where(seen, 255, 0))
        match, visible = _agreement(points, part_of_point, K, M @ FLIP, depth, parts)
        assert visible >= 20 and match >= PART_AGREEMENT, (v, match, visible)
        # the check can fail: the same matrix read as an OpenCV pose misses the object
        wrong, wrong_visible = _agreement(points, part_of_point, K, M, depth, parts)
        assert wrong_visible < 20 or wrong < 0.5
        assert "mask_path" not in frame
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_nerf_synthetic_splits_and_reference_loader_convention(rendered_dataset, tmp_path):
    out = tmp_path / "blender"
    result = _export(rendered_dataset, out, "--format", "nerf-synthetic", "--all", "--images", "link", "--mask-path")
    states = sorted(r["state_id"] for r in store.read_jsonl(rendered_dataset / store.MANIFEST) if r.get("status") == "ok")
    assert result.stdout.strip().splitlines() == [str(out / s) for s in states]
    assert INPUT_VIEWS == DEFAULT_INPUT_VIEWS
    scene = out / STATE
    train = json.loads((scene / "transforms_train.json").read_text())
    test = json.loads((scene / "transforms_test.json").read_text())
    assert json.loads((scene / "transforms_val.json").read_text()) == test
    names = lambda t: [f["file_path"] for f in t["frames"]]  # noqa: E731
    assert names(train) == [f"./images/view_{v:02d}" for v in DEFAULT_INPUT_VIEWS]
    assert names(test) == [f"./images/view_{v:02d}" for v in range(12) if v not in DEFAULT_INPUT_VIEWS]
    assert (scene / "images" / "view_00.png").is_symlink()
    _, part_npz, cams = store.read_render(store.render_dir(rendered_dataset, STATE))
    assert train["camera_angle_x"] == pytest.approx(2 * math.atan(64 / cams[0].K[0, 0]), rel=1e-12)
    points, part_of_point = _state_points(rendered_dataset, STATE)
    for t in (train, test):
        for frame in t["frames"]:
            v = int(frame["file_path"][-2:])
            image = scene / (frame["file_path"] + ".png")  # loaders add the extension
            with Image.open(image) as im:
                width, height = im.size
            assert frame["mask_path"] == f"masks/view_{v:02d}.png"
            # the reference 3DGS loader: flip c2w's y/z columns to COLMAP axes, focal from the FOV
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
            c2w[:3, 1:3] *= -1
            focal = width / (2 * math.tan(t["camera_angle_x"] / 2))
            K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
            depth = read_depth_png(scene / frame["depth_file_path"])
            parts = _png(scene / frame["part_id_path"])
            np.testing.assert_array_equal(parts, part_npz[v])
            match, visible = _agreement(points, part_of_point, K, c2w, depth, parts)
            assert visible >= 20 and match >= PART_AGREEMENT, (v, match, visible)


def test_export_is_reproducible_and_rejects_bad_requests(rendered_dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _export(rendered_dataset, a, "--state", STATE)
    _export(rendered_dataset, b, "--state", STATE)
    files = sorted(p.relative_to(a / STATE) for p in (a / STATE).rglob("*") if p.is_file())
    assert len(files) == 1 + 4 * 12
    for rel in files:
        assert (a / STATE / rel).read_bytes() == (b / STATE / rel).read_bytes(), rel
    runner = CliRunner()
    for args, fragment in (([], "--state ID"), (["--state", "nope"], "'nope' is not in"), (["--all", "--state", STATE], "--state ID")):
        result = runner.invoke(app, ["export", str(rendered_dataset), "--out", str(tmp_path / "bad"), *args])
        assert result.exit_code == 2 and fragment in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1
    for args, fragment in ((["--all", "--format", "colmap"], "'colmap' is not one of"), (["--all", "--images", "move"], "'move' is not one of")):
        result = runner.invoke(app, ["export", str(rendered_dataset), "--out", str(tmp_path / "bad"), *args])  # choices typer checks
        assert result.exit_code == 2 and fragment in result.output, (args, result.output)
        assert not (tmp_path / "bad").exists()
