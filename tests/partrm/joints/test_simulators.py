"""The extracted URDF (``partrm articulation``) in two simulators, MuJoCo and PyBullet.

A synthetic storage-furniture door (revolute) and drawer (prismatic) are articulated
(no rendering), their joints extracted from states 0 and 5, and the URDFs loaded:
the models must keep their meshes (MuJoCo drops visual-only geometry unless the URDF
says ``discardvisual="false"``), and the joint's type, range [0, amount] and axis must
match the dataset's truth; posing the joint at q = amount must move the part as the
dataset does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.partnet_mobility import load_object
from partdrag4d.assets.synth import generate
from partrm import joints as art

mujoco = pytest.importorskip("mujoco")

AXIS_TOL_DEG = 2.0
RANGE_TOL = {"revolute": 0.01, "prismatic": 0.005}


@pytest.fixture(scope="module")
def door_and_drawer(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    src = tmp_path_factory.mktemp("sim_src")
    wanted: dict[str, str] = {}
    for index in range(12):
        folder = generate("storage-furniture", index, 0, src)
        kind = load_object(folder).movable_joints[0].kind
        if kind in ("revolute", "prismatic") and kind not in wanted:
            wanted[kind] = folder.name
        else:
            shutil.rmtree(folder)
        if len(wanted) == 2:
            break
    assert set(wanted) == {"revolute", "prismatic"}
    root = tmp_path_factory.mktemp("sim_data")
    assert articulate_folder(src, root, num_points=4096, progress=False, max_joints=1).objects_ok == 2
    seqs = {r["joint_type"]: r["sequence_id"] for r in store.read_jsonl(root / store.MANIFEST) if r["status"] == "ok"}
    return root, seqs


@pytest.fixture(scope="module")
def extracted(door_and_drawer, tmp_path_factory) -> dict[str, tuple[Path, art.ArticulationTruth]]:
    """kind -> (URDF, truth); the door through the CLI with V-HACD collisions, the drawer
    through ``extract`` with convex-hull collisions."""
    from partrm.cli import app

    root, seqs = door_and_drawer
    out = {}
    for kind, collision in (("revolute", "vhacd"), ("prismatic", "hull")):
        a, b = f"{seqs[kind]}_s0", f"{seqs[kind]}_s5"
        folder = tmp_path_factory.mktemp(f"urdf_{kind}")
        if kind == "revolute":
            result = CliRunner().invoke(app, ["articulation", "--data", str(root), "--state-a", a, "--state-b", b,
                                              "--out", str(folder), "--collision", collision])
            assert result.exit_code == 0, result.output
        else:
            art.extract(folder, data=root, state_a=a, state_b=b, collision=collision)
        out[kind] = (folder / "articulation.urdf", art.dataset_truth(root, a, b), store.state_dir(root, a), store.state_dir(root, b))
    return out


def _angle_deg(u, v) -> float:
    u, v = np.asarray(u, float), np.asarray(v, float)
    return float(np.degrees(np.arccos(np.clip(abs(u @ v) / np.linalg.norm(u) / np.linalg.norm(v), 0.0, 1.0))))


@pytest.mark.parametrize("kind", ["revolute", "prismatic"])
def test_mujoco_keeps_the_meshes_and_the_joint(extracted, kind):
    urdf, truth, dir_a, dir_b = extracted[kind]
    assert '<compiler discardvisual="false"' in urdf.read_text()
    model = mujoco.MjModel.from_xml_path(str(urdf))
    data = mujoco.MjData(model)
    moving = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "moving")
    assert model.ngeom > 0 and model.nmesh >= 2 and model.body_geomnum[moving] > 0
    assert model.njnt == 1
    expected_type = {"revolute": mujoco.mjtJoint.mjJNT_HINGE, "prismatic": mujoco.mjtJoint.mjJNT_SLIDE}[kind]
    assert model.jnt_type[0] == expected_type and model.jnt_limited[0]
    lo, hi = model.jnt_range[0]
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(truth.amount, abs=RANGE_TOL[kind])
    mujoco.mj_forward(model, data)
    assert _angle_deg(data.xaxis[0], truth.axis) < AXIS_TOL_DEG
    # collisions: V-HACD hulls / convex hulls are collision geoms (contype 1), visuals are not
    collide = model.geom_contype > 0
    assert collide.any() and (~collide).sum() == 2
    # pose the joint at the full range: the moving part's samples go where the dataset has them
    A = np.load(dir_a / "points.npy").astype(np.float64)
    B = np.load(dir_b / "points.npy").astype(np.float64)
    m = np.load(dir_a / "moving.npy")
    pose = []
    for q in (0.0, hi):
        data.qpos[0] = q
        mujoco.mj_kinematics(model, data)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = data.xmat[moving].reshape(3, 3), data.xpos[moving]
        pose.append(T)
    rel = pose[1] @ np.linalg.inv(pose[0])
    moved = A[m] @ rel[:3, :3].T + rel[:3, 3]
    assert np.abs(moved - B[m]).max() < 0.01


@pytest.mark.parametrize("kind", ["revolute", "prismatic"])
def test_pybullet_loads_the_urdf(extracted, kind):
    pybullet = pytest.importorskip("pybullet")
    urdf, truth, dir_a, dir_b = extracted[kind]
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(str(urdf), useFixedBase=True, physicsClientId=client)
        assert pybullet.getNumJoints(body, physicsClientId=client) == 1
        info = pybullet.getJointInfo(body, 0, physicsClientId=client)
        assert info[1] == b"joint_0" and info[12] == b"moving"
        assert info[2] == {"revolute": pybullet.JOINT_REVOLUTE, "prismatic": pybullet.JOINT_PRISMATIC}[kind]
        assert info[8] == pytest.approx(0.0, abs=1e-9) and info[9] == pytest.approx(truth.amount, abs=RANGE_TOL[kind])
        assert _angle_deg(info[13], truth.axis) < AXIS_TOL_DEG  # joint frame has the base's orientation
        assert len(pybullet.getVisualShapeData(body, physicsClientId=client)) == 2
        assert len(pybullet.getCollisionShapeData(body, 0, physicsClientId=client)) > 0
        poses = []
        for q in (0.0, info[9]):
            pybullet.resetJointState(body, 0, q, physicsClientId=client)
            state = pybullet.getLinkState(body, 0, computeForwardKinematics=True, physicsClientId=client)
            T = np.eye(4)
            T[:3, :3] = np.asarray(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            T[:3, 3] = state[4]
            poses.append(T)
        rel = poses[1] @ np.linalg.inv(poses[0])
        if kind == "revolute":
            assert _angle_deg(art.axis_angle(rel[:3, :3])[0], truth.axis) < AXIS_TOL_DEG
            assert art.axis_angle(rel[:3, :3])[1] == pytest.approx(truth.amount, abs=RANGE_TOL[kind])
        else:
            np.testing.assert_allclose(rel[:3, :3], np.eye(3), atol=1e-6)
            assert _angle_deg(rel[:3, 3], truth.axis) < AXIS_TOL_DEG
            assert np.linalg.norm(rel[:3, 3]) == pytest.approx(truth.amount, abs=RANGE_TOL[kind])
    finally:
        pybullet.disconnect(client)


def test_collision_modes(door_and_drawer, tmp_path):
    root, seqs = door_and_drawer
    a, b = f"{seqs['prismatic']}_s0", f"{seqs['prismatic']}_s5"
    est = art.from_dataset_states(root, a, b)
    static, moving = art.dataset_meshes(root, a, est)
    counts = {}
    for mode in art.COLLISION_MODES:
        path = art.write_urdf(est, tmp_path / mode / "o.urdf", static, moving, collision=mode)
        text = path.read_text()
        counts[mode] = text.count("<collision>")
        model = mujoco.MjModel.from_xml_path(str(path))
        assert model.ngeom == 2 + counts[mode]
    assert counts["none"] == 0 and counts["mesh"] == 2 and counts["hull"] == 2 and counts["vhacd"] >= 2
    with pytest.raises(ValueError, match="collision must be one of"):
        art.write_urdf(est, tmp_path / "bad.urdf", static, moving, collision="sphere")
    # a hull contains its link's mesh
    import trimesh

    hull = trimesh.load(tmp_path / "hull" / "o_moving_collision_0.obj", force="mesh")
    vis = trimesh.load(tmp_path / "hull" / "o_moving.obj", force="mesh")
    assert hull.is_convex and hull.volume >= vis.convex_hull.volume * (1 - 1e-6)
