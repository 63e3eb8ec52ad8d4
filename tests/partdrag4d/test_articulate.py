"""Six-stage sequences: kinematics against an independent computation, point
correspondence, limits, normalisation, determinism and resume."""

from __future__ import annotations

import filecmp
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yourdfpy

from partdrag4d import cameras, store
from partdrag4d.articulate import articulate_folder, articulate_object
from partdrag4d.assets.partnet_mobility import load_object
from partdrag4d.assets.synth import GENERATORS, generate


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _records(root: Path) -> list[dict]:
    return [r for r in store.read_jsonl(root / "manifest.jsonl") if r["status"] == "ok"]


def check_sequences_against_urdf(root: Path, source: Path, object_id: str) -> int:
    """Every swept joint moves its points exactly as the URDF says; the rest stay put.
    The joint axis is computed independently with yourdfpy from the source URDF."""
    urdf = yourdfpy.URDF.load(str(source / "mobility.urdf"), load_meshes=False, build_scene_graph=True)
    obj_json = store.read_json(root / "objects" / object_id / "object.json")
    norm = np.asarray(obj_json["normalisation"]["matrix"])
    joints = {j.name: j for j in urdf.robot.joints}
    seqs: dict[str, list[dict]] = {}
    for r in _records(root):
        if r["object_id"] == object_id:
            seqs.setdefault(r["sequence_id"], []).append(r)
    checked = 0
    for recs in seqs.values():
        recs.sort(key=lambda r: r["stage"])
        assert [r["stage"] for r in recs] == list(range(6))
        name = recs[0]["joint"]
        j = joints[name]
        lo, hi = sorted((j.limit.lower, j.limit.upper)) if j.limit is not None and j.type != "continuous" else (0.0, 5 * math.pi / 3)
        assert recs[0]["qpos"][name] == pytest.approx(lo) and recs[-1]["qpos"][name] == pytest.approx(hi)
        np.testing.assert_allclose(np.diff([r["qpos"][name] for r in recs]), (hi - lo) / 5, rtol=1e-9)
        p0 = np.load(root / recs[0]["paths"]["points"]).astype(np.float64)
        moving = np.load(root / recs[0]["paths"]["moving"])
        assert moving.any() and not moving.all()
        urdf.update_cfg({k: float(v) for k, v in recs[0]["qpos"].items()})
        T = norm @ urdf.get_transform(j.parent, "base") @ j.origin  # joint frame in the canonical frame
        direction = T[:3, :3] @ np.asarray(j.axis) / np.linalg.norm(T[:3, :3] @ np.asarray(j.axis))
        pivot = T[:3, 3]
        scale = obj_json["normalisation"]["scale"]
        for r in recs[1:]:
            pk = np.load(root / r["paths"]["points"]).astype(np.float64)
            dq = r["qpos"][name] - recs[0]["qpos"][name]
            np.testing.assert_allclose(pk[~moving], p0[~moving], atol=1e-6)
            if j.type == "prismatic":
                expected = p0[moving] + scale * dq * direction
            else:
                expected = (p0[moving] - pivot) @ _rotation(direction, dq).T + pivot
            np.testing.assert_allclose(pk[moving], expected, atol=2e-5)
            checked += 1
    return checked


def test_fixture_drawer_slides_and_door_turns(fixture_40147, tmp_path):
    obj = load_object(fixture_40147)
    records, info = articulate_object(obj, tmp_path)
    assert info["states"] == 12
    store.write_jsonl(tmp_path / "manifest.jsonl", records)
    assert check_sequences_against_urdf(tmp_path, fixture_40147, "40147") == 10
    # the drawer's points move along its axis by exactly scale * 0.6 at full extension
    recs = {r["state_id"]: r for r in records}
    p0 = np.load(tmp_path / recs["40147_joint_1_c0_s0"]["paths"]["points"])
    p5 = np.load(tmp_path / recs["40147_joint_1_c0_s5"]["paths"]["points"])
    moving = np.load(tmp_path / recs["40147_joint_1_c0_s0"]["paths"]["moving"])
    scale = store.read_json(tmp_path / "objects/40147/object.json")["normalisation"]["scale"]
    d = np.linalg.norm(p5[moving] - p0[moving], axis=1)
    np.testing.assert_allclose(d, scale * 0.6, rtol=1e-5)


@pytest.mark.parametrize("category", sorted(GENERATORS))
def test_synthetic_kinematics_match_urdf(synth_objects, category, tmp_path):
    folder = synth_objects[category]
    obj = load_object(folder)
    records, _ = articulate_object(obj, tmp_path, num_points=4096)
    store.write_jsonl(tmp_path / "manifest.jsonl", records)
    assert check_sequences_against_urdf(tmp_path, folder, obj.object_id) == 5 * len(obj.movable_joints)


def test_point_correspondence_is_rigid_per_link(synth_objects, tmp_path):
    obj = load_object(synth_objects["storage-furniture"])
    records, _ = articulate_object(obj, tmp_path, num_points=4096)
    part_id = np.load(tmp_path / "objects" / obj.object_id / "points.npz")["part_id"]
    states = [np.load(tmp_path / r["paths"]["points"]).astype(np.float64) for r in records if r["status"] == "ok"]
    rng = np.random.default_rng(0)
    for pid in np.unique(part_id):
        idx = np.flatnonzero(part_id == pid)
        a, b = rng.choice(idx, 50), rng.choice(idx, 50)
        d0 = np.linalg.norm(states[0][a] - states[0][b], axis=1)
        for s in states[1:]:
            np.testing.assert_allclose(np.linalg.norm(s[a] - s[b], axis=1), d0, atol=1e-5)


def test_normalisation_fits_every_state_in_every_view(synth_objects, tmp_path):
    for category in ("refrigerator", "laptop"):
        obj = load_object(synth_objects[category])
        records, _ = articulate_object(obj, tmp_path, num_points=4096)
        views = cameras.ring_cameras()
        for r in records:
            pts = np.load(tmp_path / r["paths"]["points"])
            assert np.abs(pts).max() <= 1.0 + 1e-6
            for cam in views:
                uv, z = cam.project(pts)
                assert (z > 0).all()
                assert uv.min() >= 0 and uv.max() <= cameras.IMAGE_SIZE


def test_other_joints_random_but_seeded(synth_objects, tmp_path):
    obj = load_object(synth_objects["storage-furniture"])
    a, _ = articulate_object(obj, tmp_path / "a", seed=1, num_configs=2, num_points=256)
    b, _ = articulate_object(obj, tmp_path / "b", seed=1, num_configs=2, num_points=256)
    c, _ = articulate_object(obj, tmp_path / "c", seed=2, num_configs=2, num_points=256)
    assert [r["qpos"] for r in a] == [r["qpos"] for r in b]
    assert [r["qpos"] for r in a] != [r["qpos"] for r in c]
    by_seq: dict[str, list[dict]] = {}
    for r in a:
        by_seq.setdefault(r["sequence_id"], []).append(r)
    assert len(by_seq) == 2 * len(obj.movable_joints)
    for recs in by_seq.values():
        swept = recs[0]["joint"]
        others = [{k: v for k, v in r["qpos"].items() if k != swept} for r in recs]
        assert all(o == others[0] for o in others), "other joints stay fixed through a sequence"
        for name, value in others[0].items():
            j = obj.joint(name)
            assert j.lower <= value <= j.upper


def _tree_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_identical_files(tmp_path):
    for run in ("a", "b"):
        for category in ("microwave", "dishwasher"):
            generate(category, 0, 7, tmp_path / f"src_{run}")
    files = _tree_files(tmp_path / "src_a")
    assert files == _tree_files(tmp_path / "src_b")
    for f in files:
        assert filecmp.cmp(tmp_path / "src_a" / f, tmp_path / "src_b" / f, shallow=False), f
    for run in ("a", "b"):
        articulate_folder(tmp_path / "src_a", tmp_path / f"data_{run}", seed=7, num_points=512, progress=False)
    files = _tree_files(tmp_path / "data_a")
    assert files == _tree_files(tmp_path / "data_b")
    for f in files:
        assert filecmp.cmp(tmp_path / "data_a" / f, tmp_path / "data_b" / f, shallow=False), f


def test_state_files_and_manifest(tmp_path, synth_objects):
    summary = articulate_folder(synth_objects["microwave"].parent, tmp_path, category="microwave", num_points=1024, progress=False)
    assert summary.objects_ok == 1 and summary.objects_failed == 0
    records = list(store.read_jsonl(tmp_path / "manifest.jsonl"))
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == summary.states
    for r in ok:
        for key in ("object_id", "category", "joint", "config", "stage", "qpos", "paths", "seed", "status", "split"):
            assert key in r
        folder = tmp_path / r["paths"]["state"]
        state = json.loads((folder / "state.json").read_text())
        assert set(state["link_poses"]) == set(store.read_json(tmp_path / r["paths"]["object"] / "object.json")["links"][i]["name"] for i in range(len(state["link_poses"])))
        mtl = (folder / "mesh.mtl").read_text()
        for line in mtl.splitlines():
            if line.startswith("map_Kd"):
                assert (folder / line.split(None, 1)[1]).is_file(), "posed meshes keep their textures"
        assert "map_Kd" in mtl
        assert (tmp_path / "cameras.json").is_file()


def test_resume_skips_complete_states_and_ignores_staging_leftovers(tmp_path, synth_objects):
    src = synth_objects["laptop"].parent
    first = articulate_folder(src, tmp_path, category="laptop", num_points=256, progress=False)
    assert first.states_written == first.states == 6
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "states").rglob("*") if p.is_file()}
    # a run killed while assembling a state leaves only a hidden staging folder
    leftover = tmp_path / "states" / ".syn-laptop-0-000_joint_0_c0_s3.abc.tmp"
    leftover.mkdir()
    (leftover / "state.json").write_text("{")
    second = articulate_folder(src, tmp_path, category="laptop", num_points=256, progress=False)
    assert second.states_written == 0
    assert not leftover.exists()
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "states").rglob("*") if p.is_file()}
    # a state folder missing a file is rewritten
    (tmp_path / "states" / "syn-laptop-0-000_joint_0_c0_s2" / "points.npy").unlink()
    third = articulate_folder(src, tmp_path, category="laptop", num_points=256, progress=False)
    assert third.states_written == 1
