"""Malformed objects: one clear line (object id + reason) in the manifest and on stderr;
the other objects carry on. Each bad object is built on the fly from a good one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from partdrag4d import store
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.partnet_mobility import load_object


def _copy(good: Path, root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(good, folder)
    return folder


def _replace(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _first_mesh(folder: Path) -> str:
    import re

    return re.search(r'filename="([^"]+)"', (folder / "mobility.urdf").read_text()).group(1)


def _make_bad_objects(good: Path, root: Path) -> dict[str, str]:
    """Object folder name -> expected fragment of its error message."""
    expected = {}

    f = _copy(good, root, "broken_xml")
    _replace(f / "mobility.urdf", "</robot>", "</robo")
    expected[f.name] = "not well-formed XML"

    f = _copy(good, root, "entity_expansion")
    text = (f / "mobility.urdf").read_text()
    bomb = '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n'
    (f / "mobility.urdf").write_text(text.replace("<robot", bomb + "<robot", 1).replace('name="link_0"', 'name="&c;"', 1))
    expected[f.name] = "entity expansion refused"

    f = _copy(good, root, "escaping_mesh_path")
    (root / "outside.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    _replace(f / "mobility.urdf", _first_mesh(f), "../outside.obj")
    expected[f.name] = "escapes the object folder"

    f = _copy(good, root, "missing_mesh")
    (f / _first_mesh(f)).unlink()
    expected[f.name] = "missing mesh file"

    f = _copy(good, root, "empty_mesh")
    (f / _first_mesh(f)).write_text("# nothing here\n")
    expected[f.name] = "empty"

    f = _copy(good, root, "nan_vertices")
    mesh = f / _first_mesh(f)
    lines = mesh.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("v "))
    lines[k] = "v nan 0.0 0.0"
    mesh.write_text("\n".join(lines) + "\n")
    expected[f.name] = "NaN"

    f = _copy(good, root, "lower_equals_upper")
    import re

    text = (f / "mobility.urdf").read_text()
    text = re.sub(r'<limit lower="[^"]+" upper="([^"]+)"/>', r'<limit lower="\1" upper="\1"/>', text)
    (f / "mobility.urdf").write_text(text)
    expected[f.name] = "lower == upper"

    f = _copy(good, root, "no_movable_joint")
    text = (f / "mobility.urdf").read_text()
    text = re.sub(r'type="(revolute|prismatic|continuous)"', 'type="fixed"', text)
    (f / "mobility.urdf").write_text(text)
    expected[f.name] = "no movable joint"

    f = _copy(good, root, "unknown_category")
    _replace(f / "meta.json", '"Laptop"', '"FoldingChair"')
    expected[f.name] = "unknown category"
    return expected


def test_bad_objects_fail_alone_with_one_clear_line(synth_objects, tmp_path, capsys):
    good = synth_objects["laptop"]
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(good, src / "a_good_object")
    expected = _make_bad_objects(good, src)
    summary = articulate_folder(src, tmp_path / "data", num_points=256, progress=False)
    assert summary.objects_ok == 1
    assert summary.objects_failed == len(expected)
    records = list(store.read_jsonl(tmp_path / "data" / "manifest.jsonl"))
    errors = {r["object_id"]: r["error"] for r in records if r["status"] == "error"}
    assert set(errors) == set(expected)
    stderr = capsys.readouterr().err
    for name, fragment in expected.items():
        assert errors[name].startswith(f"{name}: "), errors[name]
        assert fragment in errors[name], (name, errors[name])
        assert "\n" not in errors[name]
        assert sum(1 for line in stderr.splitlines() if line.startswith(f"error {name}: ")) == 1
    good_states = [r for r in records if r["status"] == "ok"]
    assert len(good_states) == 6 and {r["object_id"] for r in good_states} == {"a_good_object"}
    # nothing of the bad objects was written
    assert sorted(p.name for p in (tmp_path / "data" / "objects").iterdir()) == ["a_good_object"]


def test_one_degenerate_joint_is_skipped_with_a_reason(synth_objects, tmp_path):
    src = tmp_path / "src"
    folder = _copy(synth_objects["dishwasher"], src, "dw")
    import re

    text = (folder / "mobility.urdf").read_text()
    m = re.search(r'(<joint name="(joint_\d+)" type="prismatic">.*?)<limit lower="[^"]+" upper="[^"]+"/>', text, re.S)
    joint = m.group(2)
    text = text[: m.start()] + m.group(1) + '<limit lower="0.2" upper="0.2"/>' + text[m.end():]
    (folder / "mobility.urdf").write_text(text)
    summary = articulate_folder(src, tmp_path / "data", num_points=256, progress=False)
    assert summary.objects_ok == 1
    records = list(store.read_jsonl(tmp_path / "data" / "manifest.jsonl"))
    skipped = [r for r in records if r["status"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["joint"] == joint and "lower == upper" in skipped[0]["error"]
    assert all(r["joint"] != joint for r in records if r["status"] == "ok")
    # the degenerate joint sits at its only value in every other sequence
    assert all(r["qpos"][joint] == pytest.approx(0.2) for r in records if r["status"] == "ok")


def test_odd_and_non_ascii_file_names_load_with_textures(synth_objects, tmp_path):
    folder = _copy(synth_objects["laptop"], tmp_path, "Öbject é 1")
    for obj_path in sorted((folder / "textured_objs").glob("*.obj")):
        new = obj_path.with_name(f"mesh ü {obj_path.stem}.obj")
        obj_path.rename(new)
        _replace(folder / "mobility.urdf", f"textured_objs/{obj_path.name}", f"textured_objs/{new.name}", count=2)
    texture = next((folder / "images").glob("*.png"))
    odd_texture = texture.with_name("téxture #1.png")
    texture.rename(odd_texture)
    for mtl in (folder / "textured_objs").glob("*.mtl"):
        text = mtl.read_text()
        if texture.name in text:
            mtl.write_text(text.replace(texture.name, odd_texture.name))
    obj = load_object(folder)
    assert obj.object_id == "Object_e_1"
    assert len(obj.textures.files) == len(list((folder / "images").glob("*.png")))
    summary = articulate_folder(folder, tmp_path / "data", num_points=256, progress=False)
    assert summary.objects_ok == 1
    assert (tmp_path / "data" / "objects" / "Object_e_1" / "rest.obj").is_file()
