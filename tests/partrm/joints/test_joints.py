"""Articulation extraction (``partrm.joints``) against dataset ground truth.

Tolerances (canonical units: objects span about [-1, 1]):

with correspondence (exact dataset points)
    joint type right, axis within 2 deg, pivot (axis lines at the part) within 0.02,
    amount within 0.01 rad / 0.005
without correspondence (B shuffled, 75% of it kept, Gaussian noise sigma 0.002)
    joint type right, axis within 5 deg, pivot within 0.02, amount within 0.05 rad / 0.02
from meshes (two posed meshes sampled independently)
    joint type right, axis within 5 deg, pivot within 0.06
URDF
    loads with yourdfpy; FK at q = amount maps the moving part's source points onto
    the target points within 1e-4 (correspondence) / the estimate's own motion

The synthetic objects are chosen by their first movable joint (a door: revolute, a
drawer: prismatic) so the tests follow the generators if those change.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yourdfpy

from partdrag4d import store
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.partnet_mobility import load_object
from partdrag4d.assets.synth import generate
from partrm import joints as art

AXIS_DEG_CORR, AXIS_DEG_UNORDERED = 2.0, 5.0
PIVOT_TOL = 0.02
AMOUNT_TOL_CORR = {"revolute": 0.01, "prismatic": 0.005}
AMOUNT_TOL_UNORDERED = {"revolute": 0.05, "prismatic": 0.02}
MESH_PIVOT_TOL = 0.06  # two independent surface samplings: sliding samples bias point-to-point ICP


def _first_joint_kind(folder: Path) -> str:
    return load_object(folder).movable_joints[0].kind


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A storage-furniture door and drawer (first movable joint only), 4096 points per state.
    Returns (dataset root, {"revolute": sequence id, "prismatic": sequence id})."""
    src = tmp_path_factory.mktemp("art_src")
    wanted: dict[str, Path] = {}
    for index in range(12):
        folder = generate("storage-furniture", index, 0, src)
        kind = _first_joint_kind(folder)
        if kind in ("revolute", "prismatic") and kind not in wanted:
            wanted[kind] = folder
        else:
            shutil.rmtree(folder)
        if len(wanted) == 2:
            break
    assert set(wanted) == {"revolute", "prismatic"}, "no door and drawer among the first 12 storage-furniture objects"
    root = tmp_path_factory.mktemp("art_data")
    summary = articulate_folder(src, root, num_points=4096, progress=False, max_joints=1)
    assert summary.objects_ok == 2
    seqs = {}
    for r in store.read_jsonl(root / store.MANIFEST):
        if r["status"] == "ok" and r["stage"] == 0:
            seqs[r["joint_type"]] = r["sequence_id"]
    return root, seqs


@pytest.fixture(scope="module")
def fixture_dataset(fixture_40147, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("art_40147")
    summary = articulate_folder(fixture_40147.parent, root, num_points=4096, progress=False, ids={"40147"})
    assert summary.objects_ok == 1
    return root


def _points(root: Path, state: str) -> np.ndarray:
    return np.load(store.state_dir(root, state) / "points.npy").astype(np.float64)


def _unordered(points: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(points))[: int(0.75 * len(points))]
    return points[keep] + rng.normal(0.0, 0.002, (len(keep), 3))


def _check(metrics: dict, kind: str, axis_deg: float, amount_tol: dict) -> None:
    assert metrics["type_correct"], metrics
    assert metrics["axis_angle_deg"] < axis_deg, metrics
    assert metrics["amount_error"] < amount_tol[kind], metrics
    if kind == "revolute":
        assert metrics["pivot_distance"] < PIVOT_TOL, metrics
    else:
        assert metrics["pivot_distance"] is None


PAIRS = [(0, 5), (2, 4)]


@pytest.mark.parametrize("kind", ["revolute", "prismatic"])
@pytest.mark.parametrize("pair", PAIRS)
def test_with_correspondence(dataset, kind, pair):
    root, seqs = dataset
    a, b = (f"{seqs[kind]}_s{s}" for s in pair)
    est = art.from_dataset_states(root, a, b)
    truth = art.dataset_truth(root, a, b)
    m = art.compare(est, truth)
    _check(m, kind, AXIS_DEG_CORR, AMOUNT_TOL_CORR)
    assert m["mask_iou"] > 0.9
    assert est.amount >= 0 and est.num_moving == int(est.moving_mask.sum())
    # the joint model reproduces the motion of the moving points
    A, B = _points(root, a), _points(root, b)
    moved = A[est.moving_mask] @ est.transform[:3, :3].T + est.transform[:3, 3]
    assert np.abs(moved - B[est.moving_mask]).max() < 1e-3


@pytest.mark.parametrize("kind", ["revolute", "prismatic"])
@pytest.mark.parametrize("pair", PAIRS)
def test_without_correspondence(dataset, kind, pair):
    root, seqs = dataset
    a, b = (f"{seqs[kind]}_s{s}" for s in pair)
    A, B = _points(root, a), _unordered(_points(root, b), seed=pair[0])
    est = art.estimate_articulation(A, B, correspondence=False)
    assert not est.correspondence and est.target_mask is not None and est.target_mask.shape == (len(B),)
    _check(art.compare(est, art.dataset_truth(root, a, b)), kind, AXIS_DEG_UNORDERED, AMOUNT_TOL_UNORDERED)


def test_truth_agrees_with_the_urdf_joint(dataset):
    """dataset_truth (from link poses) against the joint itself: the source URDF's axis
    and origin, composed with the parent's pose and the normalisation."""
    root, seqs = dataset
    for kind, seq in seqs.items():
        a, b = f"{seq}_s1", f"{seq}_s4"
        truth = art.dataset_truth(root, a, b)
        sa = store.read_json(store.state_dir(root, a) / "state.json")
        obj_json = store.read_json(store.object_dir(root, sa["object_id"]) / "object.json")
        obj = load_object(Path(obj_json["source"]))
        joint = obj.joint(sa["joint"])
        frame = obj.forward_kinematics(sa["qpos"])[joint.parent] @ joint.origin  # joint frame in the world
        norm = np.asarray(obj_json["normalisation"]["matrix"])
        axis = frame[:3, :3] @ joint.axis
        axis /= np.linalg.norm(axis)
        assert abs(abs(float(axis @ truth.axis)) - 1.0) < 1e-9
        q = sa["qpos"][joint.name], store.read_json(store.state_dir(root, b) / "state.json")["qpos"][joint.name]
        scale = obj_json["normalisation"]["scale"]
        expected = abs(q[1] - q[0]) * (1.0 if kind == "revolute" else scale)
        assert truth.amount == pytest.approx(expected, rel=1e-9, abs=1e-12)
        if kind == "revolute":
            origin = (norm @ np.append(frame[:3, 3], 1.0))[:3]
            v = origin - truth.pivot
            assert np.linalg.norm(v - (v @ truth.axis) * truth.axis) < 1e-9


def _fk_points(urdf_path: Path, q: float, points: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    urdf = yourdfpy.URDF.load(str(urdf_path), build_scene_graph=True, load_meshes=False)
    urdf.update_cfg({"joint_0": q})
    T = urdf.get_transform("moving", "base")
    return (points - pivot) @ T[:3, :3].T + T[:3, 3]


@pytest.mark.parametrize("kind", ["revolute", "prismatic"])
def test_urdf_loads_and_moves_the_part(dataset, kind, tmp_path):
    root, seqs = dataset
    a, b = f"{seqs[kind]}_s0", f"{seqs[kind]}_s5"
    est = art.from_dataset_states(root, a, b)
    A, B = _points(root, a), _points(root, b)
    path = art.write_urdf(est, tmp_path / "points" / "object.urdf", points=A)
    urdf = yourdfpy.URDF.load(str(path), build_scene_graph=True, load_meshes=True)
    joint = urdf.joint_map["joint_0"]
    assert joint.type == kind and joint.parent == "base" and joint.child == "moving"
    assert np.allclose(joint.axis, est.axis, atol=1e-6)
    assert joint.limit.lower == pytest.approx(0.0) and joint.limit.upper == pytest.approx(est.amount, rel=1e-6)
    m = est.moving_mask
    assert np.abs(_fk_points(path, est.amount, A[m], est.pivot) - B[m]).max() < 1e-4
    assert np.abs(_fk_points(path, 0.0, A[m], est.pivot) - A[m]).max() < 1e-6
    # with the dataset's meshes split into base and moving part
    static, moving = art.dataset_meshes(root, a, est)
    assert static is not None and moving is not None
    path = art.write_urdf(est, tmp_path / "meshes" / "object.urdf", static, moving, points=A)
    urdf = yourdfpy.URDF.load(str(path), build_scene_graph=True, load_meshes=True)
    assert set(urdf.scene.geometry) == {"object_base.obj", "object_moving.obj"}
    urdf.update_cfg({"joint_0": est.amount})
    posed = urdf.get_transform("moving", "base")
    vm = moving[0] - est.pivot
    moved_mesh = vm @ posed[:3, :3].T + posed[:3, 3]
    expected = moving[0] @ est.transform[:3, :3].T + est.transform[:3, 3]
    assert np.abs(moved_mesh - expected).max() < 1e-4


def test_urdf_in_the_world_frame(dataset, tmp_path):
    """frame=dataset_world_frame: the URDF lives in the asset's own units."""
    root, seqs = dataset
    a, b = f"{seqs['prismatic']}_s0", f"{seqs['prismatic']}_s5"
    est = art.from_dataset_states(root, a, b)
    oid = store.read_json(store.state_dir(root, a) / "state.json")["object_id"]
    W = art.dataset_world_frame(root, oid)
    A, B = _points(root, a), _points(root, b)
    path = art.write_urdf(est, tmp_path / "world.urdf", points=A, frame=W)
    world = est.transformed(W)
    Aw, Bw = A @ W[:3, :3].T + W[:3, 3], B @ W[:3, :3].T + W[:3, 3]
    m = est.moving_mask
    assert np.abs(_fk_points(path, world.amount, Aw[m], world.pivot) - Bw[m]).max() < 1e-4
    scale = store.read_json(store.object_dir(root, oid) / "object.json")["normalisation"]["scale"]
    assert world.amount == pytest.approx(est.amount / scale)


def test_fixture_40147(fixture_dataset, tmp_path):
    """The real object: a door (joint_0) and a drawer (joint_1), both ways."""
    root = fixture_dataset
    for joint, kind in (("joint_0", "revolute"), ("joint_1", "prismatic")):
        for pair in PAIRS:
            a, b = (f"40147_{joint}_c0_s{s}" for s in pair)
            truth = art.dataset_truth(root, a, b)
            assert truth.joint_type == kind
            _check(art.compare(art.from_dataset_states(root, a, b), truth), kind, AXIS_DEG_CORR, AMOUNT_TOL_CORR)
            est = art.estimate_articulation(_points(root, a), _unordered(_points(root, b), seed=pair[1]), correspondence=False)
            _check(art.compare(est, truth), kind, AXIS_DEG_UNORDERED, AMOUNT_TOL_UNORDERED)
    result = art.extract(tmp_path / "out", data=root, state_a="40147_joint_0_c0_s0", state_b="40147_joint_0_c0_s5")
    yourdfpy.URDF.load(str(result.urdf), load_meshes=True)
    assert result.metrics["type_correct"]


def _gaussians(xyz: np.ndarray, opacity: np.ndarray, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    n = len(xyz)
    q = rng.normal(size=(n, 4))
    g = np.concatenate([xyz, opacity[:, None], rng.uniform(0.005, 0.02, (n, 3)), q / np.linalg.norm(q, axis=1, keepdims=True),
                        rng.uniform(0, 1, (n, 3))], axis=1)
    return torch.tensor(g, dtype=torch.float32)


def test_from_gaussians_drops_transparent_ones(dataset):
    root, seqs = dataset
    a, b = f"{seqs['revolute']}_s0", f"{seqs['revolute']}_s5"
    A, B = _points(root, a), _points(root, b)
    rng = np.random.default_rng(1)
    opacity = rng.uniform(0.2, 1.0, len(A))
    clear = rng.random(len(A)) < 0.2
    opacity[clear] = 0.01
    junk_a, junk_b = A.copy(), B.copy()
    junk_b[clear] = rng.uniform(-1, 1, (int(clear.sum()), 3))  # transparent Gaussians go anywhere
    est = art.from_gaussians(_gaussians(junk_a, opacity, 0)[None], _gaussians(junk_b, opacity, 1)[None])
    assert est.moving_mask.shape == (len(A),) and not est.moving_mask[clear].any()
    _check(art.compare(est, art.dataset_truth(root, a, b)), "revolute", AXIS_DEG_CORR, AMOUNT_TOL_CORR)


def test_extract_from_ply_files(dataset, tmp_path):
    """Two 3DGS PLYs of equal length (PartRM's source and prediction) -> corresponded."""
    from partrm.gaussians import gaussians_from_lgm, write_ply

    root, seqs = dataset
    a, b = f"{seqs['prismatic']}_s1", f"{seqs['prismatic']}_s4"
    A, B = _points(root, a), _points(root, b)
    opacity = np.full(len(A), 0.9)
    for name, xyz, seed in (("a.ply", A, 0), ("b.ply", B, 1)):
        write_ply(tmp_path / name, *gaussians_from_lgm(_gaussians(xyz, opacity, seed)))
    result = art.extract(tmp_path / "out", source=tmp_path / "a.ply", target=tmp_path / "b.ply")
    assert result.estimate.correspondence
    _check(art.compare(result.estimate, art.dataset_truth(root, a, b)), "prismatic", AXIS_DEG_CORR, AMOUNT_TOL_CORR)
    report = json.loads(result.report.read_text())
    assert report["estimate"]["joint_type"] == "prismatic" and report["urdf"] == "articulation.urdf"
    yourdfpy.URDF.load(str(result.urdf))


def test_extract_from_meshes(dataset, tmp_path):
    """Two posed meshes: sampled independently, no correspondence; the URDF gets the
    source mesh split into base and moving part."""
    root, seqs = dataset
    a, b = f"{seqs['revolute']}_s0", f"{seqs['revolute']}_s5"
    result = art.extract(tmp_path / "out", source=store.state_dir(root, a) / "mesh.obj", target=store.state_dir(root, b) / "mesh.obj",
                         num_samples=8192)
    assert not result.estimate.correspondence
    m = art.compare(result.estimate, art.dataset_truth(root, a, b))
    assert m["type_correct"] and m["axis_angle_deg"] < AXIS_DEG_UNORDERED and m["pivot_distance"] < MESH_PIVOT_TOL, m
    urdf = yourdfpy.URDF.load(str(result.urdf), load_meshes=True)
    assert set(urdf.scene.geometry) == {"articulation_base.obj", "articulation_moving.obj"}


def test_no_motion(dataset):
    root, seqs = dataset
    A = _points(root, f"{seqs['revolute']}_s2")
    with pytest.raises(art.NoMotionError):
        art.estimate_articulation(A, A.copy())
    with pytest.raises(art.NoMotionError):
        art.estimate_articulation(A, _unordered(A), correspondence=False)
    with pytest.raises(ValueError, match="same number"):
        art.estimate_articulation(A, A[:-1])
    with pytest.raises(ValueError, match="states of different"):
        art.from_dataset_states(root, f"{seqs['revolute']}_s0", f"{seqs['prismatic']}_s5")


@pytest.mark.parametrize("angle_deg", [10.0, 90.0, 179.0])
def test_decompose_motion(angle_deg):
    """A known rotation about a known line, up to nearly half a turn, comes back exactly."""
    rng = np.random.default_rng(int(angle_deg))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    pivot = rng.normal(size=3)
    T = art.joint_motion("revolute", axis, pivot, math.radians(angle_deg))
    centroid = pivot + rng.normal(size=3)
    j = art.decompose_motion(T, centroid)
    assert j["joint_type"] == "revolute" and j["amount"] == pytest.approx(math.radians(angle_deg))
    assert float(j["axis"] @ axis) == pytest.approx(1.0)
    v = j["pivot"] - pivot
    assert np.linalg.norm(v - (v @ axis) * axis) < 1e-9 and abs(float((j["pivot"] - centroid) @ axis)) < 1e-9
    shift = art.joint_motion("prismatic", axis, pivot, 0.3)
    j = art.decompose_motion(shift, centroid)
    assert j["joint_type"] == "prismatic" and j["amount"] == pytest.approx(0.3) and float(j["axis"] @ axis) == pytest.approx(1.0)


def test_compare_measures_lines_not_points():
    """Moving the pivot along the axis changes nothing; tilting the axis is seen at the part."""
    axis, pivot = np.array([0.0, 0.0, 1.0]), np.array([0.2, 0.1, 0.0])
    T = art.joint_motion("revolute", axis, pivot, 1.0)
    truth = art.truth_from_transform(T, "revolute", np.array([[0.5, 0.1, 0.0], [0.5, 0.3, 0.2]]))
    est = art.ArticulationEstimate("revolute", axis, pivot + 0.7 * axis, 1.0, np.ones(2, bool), T, 0.0, 2)
    m = art.compare(est, truth)
    assert m["axis_angle_deg"] == pytest.approx(0.0, abs=1e-9) and m["pivot_distance"] == pytest.approx(0.0, abs=1e-9)
    tilted = np.array([math.sin(0.1), 0.0, math.cos(0.1)])
    est.axis, est.pivot = tilted, pivot + np.array([0.0, 0.0, 0.5])  # crosses the true axis 0.5 above the part
    m = art.compare(est, truth)
    assert m["axis_angle_deg"] == pytest.approx(math.degrees(0.1))
    assert m["line_distance"] == pytest.approx(0.0, abs=1e-9) and m["pivot_distance"] == pytest.approx(0.4 * math.sin(0.1))
    est.axis, est.amount = -axis, -1.0  # the same motion described about the flipped axis
    est.pivot = pivot
    assert art.compare(est, truth)["amount_error"] == pytest.approx(0.0, abs=1e-9)
