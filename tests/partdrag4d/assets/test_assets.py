"""Reading PartNet-Mobility folders: the real fixture, synthetic objects, joint handling."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yourdfpy

from partdrag4d import categories
from partdrag4d.assets.articulated import CONTINUOUS_RANGE
from partdrag4d.assets.partnet_mobility import load_object
from partdrag4d.assets.synth import GENERATORS


def test_fixture_40147_loads_with_textures(fixture_40147):
    obj = load_object(fixture_40147)
    assert obj.object_id == "40147"
    assert obj.category == "storage-furniture"
    assert obj.root == "base"
    kinds = {j.name: j.kind for j in obj.movable_joints}
    assert kinds == {"joint_0": "revolute", "joint_1": "prismatic"}
    # geometry is mapped to links through the URDF link structure
    assert set(obj.geometry) == {"link_0", "link_1", "link_2"}
    # every texture image of the folder that a material uses survives loading
    textured = {p.material.texture for parts in obj.geometry.values() for p in parts if p.material.texture}
    # 6 image files, two of them byte-identical: 5 distinct textures, stored once each
    assert len(textured) == 5
    assert textured == set(obj.textures.files)
    for parts in obj.geometry.values():
        for p in parts:
            if p.material.texture:
                assert p.uv is not None and p.uv.shape == (len(p.vertices), 2)


def test_fixture_forward_kinematics_matches_yourdfpy(fixture_40147):
    obj = load_object(fixture_40147)
    urdf = yourdfpy.URDF.load(str(fixture_40147 / "mobility.urdf"), load_meshes=False, build_scene_graph=True)
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = {"joint_0": float(rng.uniform(0, math.pi / 2)), "joint_1": float(rng.uniform(0, 0.6))}
        urdf.update_cfg(q)
        ours = obj.forward_kinematics(q)
        for link in ("link_0", "link_1", "link_2"):
            np.testing.assert_allclose(ours[link], urdf.get_transform(link, "base"), atol=1e-12)


def test_fixture_world_frame_is_z_up_front_minus_x(fixture_40147):
    obj = load_object(fixture_40147)
    body = obj.forward_kinematics(obj.zero_qpos())["link_2"]
    # object meshes are Y-up with the front at +Z; the root joint turns them Z-up, front -X
    np.testing.assert_allclose(body[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(body[:3, :3] @ [0, 0, 1], [-1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("category", sorted(GENERATORS))
def test_synthetic_object_loads_like_a_real_one(synth_objects, category):
    folder = synth_objects[category]
    for name in ("mobility.urdf", "mobility_v2.json", "meta.json", "semantics.txt", "point_sample/pts-10000.txt"):
        assert (folder / name).is_file(), name
    assert list((folder / "images").glob("*.png")), "at least one image texture per object"
    obj = load_object(folder)
    assert obj.category == category
    assert obj.movable_joints
    assert obj.textures.files, "textures referenced as ../images/ must survive loading"
    # the loaded FK agrees with yourdfpy's
    urdf = yourdfpy.URDF.load(str(folder / "mobility.urdf"), load_meshes=False, build_scene_graph=True)
    q = {j.name: (j.lower + j.upper) / 2 for j in obj.movable_joints}
    urdf.update_cfg({name: float(v) for name, v in q.items()})
    ours = obj.forward_kinematics(q)
    for link in obj.links:
        np.testing.assert_allclose(ours[link], urdf.get_transform(link, "base"), atol=1e-12)


def test_categories_and_split_rule():
    assert categories.category_names() == ["dishwasher", "laptop", "microwave", "oven", "refrigerator", "storage-furniture", "washing-machine", "trashcan"]
    assert categories.from_model_cat("StorageFurniture") == "storage-furniture"
    assert categories.from_model_cat("TrashCan") == "trashcan"
    assert categories.from_model_cat("FoldingChair") is None
    assert categories.split_of_category("trashcan") == "test"
    assert all(categories.split_of_category(c) == "train" for c in categories.category_names() if c != "trashcan")
    rows = categories.real_objects()
    assert len(rows) == 727
    assert {r.split for r in rows if r.category == "trashcan"} == {"test"}
    assert categories.split_of_object("41510", "storage-furniture") == "test"  # the release's train+test leak


def _edit_urdf(folder: Path, old: str, new: str) -> None:
    path = folder / "mobility.urdf"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_flipped_limits_are_swapped_and_continuous_gets_a_documented_range(synth_objects, tmp_path):
    folder = tmp_path / "flipped"
    shutil.copytree(synth_objects["laptop"], folder)
    text = (folder / "mobility.urdf").read_text()
    import re

    lower, upper = re.search(r'<limit lower="([^"]+)" upper="([^"]+)"/>', text).groups()
    _edit_urdf(folder, f'<limit lower="{lower}" upper="{upper}"/>', f'<limit lower="{upper}" upper="{lower}"/>')
    obj = load_object(folder)
    j = obj.movable_joints[0]
    assert (j.lower, j.upper) == (float(lower), float(upper))
    assert "flipped" in j.note

    folder2 = tmp_path / "continuous"
    shutil.copytree(synth_objects["laptop"], folder2)
    _edit_urdf(folder2, 'type="revolute"', 'type="continuous"')
    j = load_object(folder2).movable_joints[0]
    assert (j.kind, j.lower, j.upper) == ("continuous", *CONTINUOUS_RANGE)


def test_slider_plus_helper_link(synth_objects, tmp_path):
    """PartNet-Mobility's ``slider+``: a geometry-less helper link carries the prismatic
    joint, the part hangs below it on a revolute joint; both move the part."""
    folder = tmp_path / "sliderplus"
    shutil.copytree(synth_objects["laptop"], folder)
    text = (folder / "mobility.urdf").read_text()
    head, tail = text.split('\t<joint name="joint_0" type="revolute">', 1)
    joint_body, rest = tail.split("</joint>\n", 1)
    helper = (
        '\t<link name="link_0_helper"/>\n'
        '\t<joint name="joint_0_helper" type="prismatic">\n\t\t<origin xyz="0 0 0"/>\n\t\t<axis xyz="1 0 0"/>\n'
        '\t\t<child link="link_0_helper"/>\n\t\t<parent link="link_1"/>\n\t\t<limit lower="0" upper="0.1"/>\n\t</joint>\n'
    )
    joint_body = joint_body.replace('<parent link="link_1"/>', '<parent link="link_0_helper"/>')
    (folder / "mobility.urdf").write_text(head + helper + '\t<joint name="joint_0" type="revolute">' + joint_body + "</joint>\n" + rest)
    obj = load_object(folder)
    names = sorted(j.name for j in obj.movable_joints)
    assert names == ["joint_0", "joint_0_helper"]
    assert set(obj.subtree(obj.joint("joint_0_helper"))) == {"link_0_helper", "link_0"}
    assert "link_0_helper" not in obj.geometry
    q = {"joint_0_helper": 0.05, "joint_0": 0.0}
    moved = obj.forward_kinematics(q)["link_0"] - obj.forward_kinematics({})["link_0"]
    assert np.abs(moved[:3, 3]).max() == pytest.approx(0.05)
