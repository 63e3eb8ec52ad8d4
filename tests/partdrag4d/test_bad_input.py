"""Malformed objects: one clear line (object id + reason) in the manifest and on stderr;
the other objects carry on. Each bad object is built on the fly from a good one."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from partdrag4d import store
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.partnet_mobility import count_obj_faces, load_object


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


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels in a few bytes: a decompression
    bomb for a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else "link/dir")
            for p in sorted(root.rglob("*"))}


def _object_faces(folder: Path) -> int:
    return sum(count_obj_faces(p) for p in (folder / "textured_objs").glob("*.obj"))


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

    f = _copy(good, root, "missing_mesh")  # every mesh file of the moving lid (link_0) is gone
    import re

    urdf_text = (f / "mobility.urdf").read_text()
    lid = urdf_text[urdf_text.index('<link name="link_0">') : urdf_text.index("</link>", urdf_text.index('<link name="link_0">'))]
    for name in sorted(set(re.findall(r'filename="([^"]+)"', lid))):
        (f / name).unlink()
    expected[f.name] = "movable link link_0 has no geometry: its mesh files are missing"

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

    # --- every sub-folder becomes an object or is reported
    f = root / "no_urdf"
    f.mkdir()
    shutil.copy(good / "meta.json", f / "meta.json")
    expected[f.name] = "no mobility.urdf"

    f = _copy(good, root, "meta_not_json")
    (f / "meta.json").write_text('{"model_cat": "Laptop",')
    expected[f.name] = "meta.json is not valid JSON"

    f = _copy(good, root, "meta_is_a_list")
    (f / "meta.json").write_text('["Laptop"]')
    expected[f.name] = "meta.json holds a list"

    f = _copy(good, root, "no_meta")
    (f / "meta.json").unlink()
    expected[f.name] = "no meta.json"

    # --- malformed meshes, textures and joint graphs
    f = _copy(good, root, "symlink_mesh_outside")
    (root.parent / "elsewhere.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    mesh = f / _first_mesh(f)
    mesh.unlink()
    mesh.symlink_to(root.parent / "elsewhere.obj")
    expected[f.name] = "is a symlink pointing outside the object folder"

    f = _copy(good, root, "symlink_texture_outside")
    for png in (f / "images").glob("*.png"):
        shutil.copy(png, root.parent / png.name)
        png.unlink()
        png.symlink_to(root.parent / png.name)
    expected[f.name] = "texture of original-1.mtl: path '../images/texture_0.png' is a symlink pointing outside"

    f = _copy(good, root, "texture_bomb")
    for png in (f / "images").glob("*.png"):
        png.write_bytes(_png_header_only(100_000, 100_000))
    expected[f.name] = "decompression bomb"

    f = _copy(good, root, "texture_over_pil_limit")  # PIL only warns below twice its limit
    for png in (f / "images").glob("*.png"):
        png.write_bytes(_png_header_only(10_000, 10_000))
    expected[f.name] = "is 10000 x 10000 pixels, over the decompression-bomb limit"

    f = _copy(good, root, "texture_not_an_image")
    for png in (f / "images").glob("*.png"):
        png.write_text("this is not an image\n")
    expected[f.name] = "is not an image"

    f = _copy(good, root, "obj_index_out_of_range")
    with open(f / _first_mesh(f), "a") as obj:
        obj.write("f 1 2 99999\n")
    expected[f.name] = "face indices out of range"

    f = _copy(good, root, "joint_cycle")  # base -> link_1 becomes link_0 -> link_1 while link_1 -> link_0
    text = (f / "mobility.urdf").read_text()
    text = re.sub(r'(<child link="link_1"/>\s*<parent link=")base("/>)', r"\1link_0\2", text)
    (f / "mobility.urdf").write_text(text)
    expected[f.name] = "joint cycle: "

    f = _copy(good, root, "two_roots")
    _replace(f / "mobility.urdf", '<parent link="link_1"/>', '<parent link="stray"/>')
    _replace(f / "mobility.urdf", '<link name="base"/>', '<link name="base"/>\n\t<link name="stray"/>')
    expected[f.name] = "2 root links (base, stray)"

    f = _copy(good, root, "too_many_faces")  # the limit of the test is the good object's face count
    with open(f / _first_mesh(f), "a") as obj:
        obj.write("f 1 2 3\n" * 5)
    expected[f.name] = f"over the limit of {_object_faces(good):,} faces"

    # hidden entries are skipped silently, plain files are not objects
    shutil.copytree(root / "broken_xml", root / ".hidden_broken")
    (root / "README.txt").write_text("notes next to the objects\n")
    return expected


def test_bad_objects_fail_alone_with_one_clear_line(synth_objects, tmp_path, capsys):
    good = synth_objects["laptop"]
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(good, src / "a_good_object")
    expected = _make_bad_objects(good, src)
    before = _snapshot(tmp_path)
    summary = articulate_folder(src, tmp_path / "data", num_points=256, progress=False, max_faces=_object_faces(good))
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
    # nothing of the bad objects was written, in the output or anywhere else
    assert sorted(p.name for p in (tmp_path / "data" / "objects").iterdir()) == ["a_good_object"]
    assert {p.name.split("_joint_")[0] for p in (tmp_path / "data" / "states").iterdir()} == {"a_good_object"}
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("data")} == before
    assert "hidden" not in stderr and not any("hidden" in r["object_id"] or "README" in r["object_id"] for r in records)
    assert len(expected) == 22  # the malformed cases of this test (13 new with the reliability issue)


def test_malformed_folders_are_reported_under_a_category_filter(synth_objects, tmp_path):
    """A folder whose category cannot be told is reported, not filtered away silently."""
    src = tmp_path / "src"
    shutil.copytree(synth_objects["laptop"], src / "good")
    (src / "no_urdf").mkdir()
    f = _copy(synth_objects["laptop"], src, "meta_not_json")
    (f / "meta.json").write_text("{")
    shutil.copytree(synth_objects["microwave"], src / "other_category")
    summary = articulate_folder(src, tmp_path / "data", category="laptop", num_points=256, progress=False)
    records = list(store.read_jsonl(tmp_path / "data" / "manifest.jsonl"))
    assert summary.objects_ok == 1 and summary.objects_failed == 2
    assert {r["object_id"] for r in records if r["status"] == "error"} == {"no_urdf", "meta_not_json"}
    assert "other_category" not in {r["object_id"] for r in records}


def _set_limit(text: str, joint: str, lower: str, upper: str) -> str:
    pattern = rf'(<joint name="{joint}" type="\w+">.*?)<limit lower="[^"]+" upper="[^"]+"/>'
    m = re.search(pattern, text, re.S)
    assert m, joint
    return text[: m.start()] + m.group(1) + f'<limit lower="{lower}" upper="{upper}"/>' + text[m.end():]


JOINT_CASES = {
    # name: (joint, lower, upper, status, fragment)
    "revolute_1e30": ("joint_0", "0", "1e30", "skipped", "spans more than a full turn"),
    "revolute_inf": ("joint_0", "0", "inf", "skipped", "limits are not finite"),
    "revolute_nan": ("joint_0", "nan", "1", "skipped", "limits are not finite"),
    "revolute_far_offset": ("joint_0", "20", "21", "skipped", "beyond two turns"),
    "prismatic_1000": ("joint_1", "0", "1000", "skipped", "far beyond the object's size"),
    "prismatic_far_offset": ("joint_1", "50", "50.2", "skipped", "far beyond the object's size"),
    "revolute_inverted": ("joint_0", "1.5", "0", "note", "limits flipped in the URDF (lower 1.5 > upper 0); swapped"),
}


def test_joint_limits_are_validated_with_the_reason_in_the_manifest(synth_objects, tmp_path, capsys):
    """Absurd limits never become states: the joint is held at 0 with one line in the
    manifest and on stderr; inverted limits are swapped, and the manifest says so."""
    src = tmp_path / "src"
    for name, (joint, lower, upper, _, _) in JOINT_CASES.items():
        f = _copy(synth_objects["dishwasher"], src, name)
        (f / "mobility.urdf").write_text(_set_limit((f / "mobility.urdf").read_text(), joint, lower, upper))
    summary = articulate_folder(src, tmp_path / "data", num_points=256, progress=False)
    assert summary.objects_ok == len(JOINT_CASES) and summary.objects_failed == 0
    records = list(store.read_jsonl(tmp_path / "data" / "manifest.jsonl"))
    stderr = capsys.readouterr().err
    for name, (joint, lower, upper, status, fragment) in JOINT_CASES.items():
        mine = [r for r in records if r["object_id"] == name]
        flagged = [r for r in mine if r["status"] == status]
        assert len(flagged) == 1 and flagged[0]["joint"] == joint, (name, flagged)
        line = flagged[0]["error" if status == "skipped" else "note"]
        assert line.startswith(f"{name}: joint {joint}: ") and fragment in line and "\n" not in line, line
        assert sum(1 for ln in stderr.splitlines() if ln.endswith(line)) == 1
        states = [r for r in mine if r["status"] == "ok"]
        assert states and all(math.isfinite(q) and abs(q) <= 2 * math.pi for r in states for q in r["qpos"].values())
        if status == "skipped":
            assert all(r["joint"] != joint and r["qpos"][joint] == 0.0 for r in states)
        else:  # swept from the smaller to the larger limit
            assert [r["qpos"][joint] for r in states if r["joint"] == joint] == pytest.approx([0.3 * k for k in range(6)])


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


def _fixture_copy(fixture_40147: Path, root: Path) -> Path:
    folder = root / "40147"
    shutil.copytree(fixture_40147, folder)
    return folder


def test_real_object_with_a_missing_visual_file_is_kept(fixture_40147, tmp_path, capsys):
    """Real PartNet-Mobility URDFs reference OBJ files that were never shipped: such a
    visual is skipped with one manifest line (object id, link, file), as SAPIEN does."""
    import re

    src = tmp_path / "src"
    folder = _fixture_copy(fixture_40147, src)
    text = (folder / "mobility.urdf").read_text()
    ghost = "textured_objs/original-999.obj"
    assert not (folder / ghost).exists()
    visual = f'<visual name="ghost"><origin xyz="0 0 0"/><geometry><mesh filename="{ghost}"/></geometry></visual>'
    # one reference in the door (link_0), twice (visual + visual) so the line must not repeat
    text = text.replace('<link name="link_0">', f'<link name="link_0">{visual}{visual}', 1)
    (folder / "mobility.urdf").write_text(text)
    # and a real file of the drawer (link_1) deleted: its other visuals still give it geometry
    drawer = text[text.index('<link name="link_1">') : text.index("</link>", text.index('<link name="link_1">'))]
    gone = re.findall(r'filename="([^"]+)"', drawer)[0]
    (folder / gone).unlink()

    summary = articulate_folder(src, tmp_path / "data", num_points=512, progress=False, max_joints=1, meshes=False)
    assert summary.objects_ok == 1 and summary.objects_failed == 0
    records = list(store.read_jsonl(tmp_path / "data" / "manifest.jsonl"))
    notes = [r for r in records if r["status"] == "note" and "file" in r]
    assert sorted((r["object_id"], r["link"], r["file"]) for r in notes) == sorted([("40147", "link_0", ghost), ("40147", "link_1", gone)])
    for r in notes:
        assert r["note"] == f"40147: link {r['link']}: visual file {r['file']!r} does not exist; skipped"
    assert len([r for r in records if r["status"] == "ok"]) == 6
    stderr = capsys.readouterr().err
    assert sum(line.startswith("note 40147: link ") for line in stderr.splitlines()) == 2
    obj_json = store.read_json(tmp_path / "data" / "objects" / "40147" / "object.json")
    assert f"link link_0: visual file {ghost!r} does not exist; skipped" in obj_json["notes"]
    assert {link["name"]: link["has_geometry"] for link in obj_json["links"]}["link_1"]


def test_real_object_whose_moving_link_lost_every_mesh_is_rejected(fixture_40147, tmp_path):
    import re

    src = tmp_path / "src"
    folder = _fixture_copy(fixture_40147, src)
    text = (folder / "mobility.urdf").read_text()
    door = text[text.index('<link name="link_0">') : text.index("</link>", text.index('<link name="link_0">'))]
    for name in sorted(set(re.findall(r'filename="([^"]+)"', door))):
        (folder / name).unlink()
    summary = articulate_folder(src, tmp_path / "data", num_points=512, progress=False, meshes=False)
    assert summary.objects_ok == 0 and summary.objects_failed == 1
    (error,) = [r["error"] for r in store.read_jsonl(tmp_path / "data" / "manifest.jsonl") if r["status"] == "error"]
    assert error.startswith("40147: movable link link_0 has no geometry: its mesh files are missing (textured_objs/")
    assert "\n" not in error


# --------------------------------------------------------------------------- motion that is not really motion


def _laptop_with(synth_objects, root: Path, name: str, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    folder = _copy(synth_objects["laptop"], root, name)
    if replace is not None:
        _replace(folder / "mobility.urdf", *replace)
    if extra:
        _replace(folder / "mobility.urdf", "</robot>", extra + "</robot>")
    return folder


def test_a_mimic_joint_follows_its_leader(synth_objects, tmp_path):
    """A second lid on a joint that mimics the first with multiplier -1: never swept on its
    own, set from its leader in every state, and moved with it."""
    mesh = _first_mesh(synth_objects["laptop"])
    extra = (f'<link name="lid2"><visual><geometry><mesh filename="{mesh}"/></geometry></visual></link>'
             '<joint name="joint_2" type="revolute"><origin xyz="0 0.0015 -0.1194998318"/><axis xyz="-1 0 0"/>'
             '<child link="lid2"/><parent link="link_1"/><limit lower="-3" upper="3"/>'
             '<mimic joint="joint_0" multiplier="-1" offset="0.1"/></joint>')
    _laptop_with(synth_objects, tmp_path / "src", "mimic", extra)
    summary = articulate_folder(tmp_path / "src", tmp_path / "out", num_points=512, progress=False)
    assert summary.objects_ok == 1, summary.errors
    rows = [r for r in store.read_manifest(tmp_path / "out") if r["status"] == "ok"]
    assert {r["joint"] for r in rows} == {"joint_0"} and len(rows) == 6
    for r in rows:
        assert math.isclose(r["qpos"]["joint_2"], -r["qpos"]["joint_0"] + 0.1, abs_tol=1e-12)
        assert "lid2" in r["moving_links"]
    notes = [r for r in store.read_manifest(tmp_path / "out") if r["status"] == "note"]
    assert any("joint_2" in r["note"] and "follows joint joint_0" in r["note"] for r in notes)
    joint = next(j for j in store.read_object(tmp_path / "out", "mimic")["joints"] if j["name"] == "joint_2")
    assert joint["mimic"] == {"joint": "joint_0", "multiplier": -1.0, "offset": 0.1}


def test_a_mimic_of_a_missing_joint_is_refused(synth_objects, tmp_path):
    extra = ('<link name="lid2"/><joint name="joint_2" type="revolute"><axis xyz="1 0 0"/><child link="lid2"/>'
             '<parent link="link_1"/><limit lower="0" upper="1"/><mimic joint="nope"/></joint>')
    _laptop_with(synth_objects, tmp_path / "src", "bad_mimic", extra)
    summary = articulate_folder(tmp_path / "src", tmp_path / "out", num_points=512, progress=False)
    assert summary.objects_failed == 1 and "mimics joint 'nope', which does not exist" in summary.errors[0]


def test_joints_that_move_nothing_visibly_are_skipped(synth_objects, tmp_path):
    """A joint whose link has no geometry, and one whose range moves the surface by less than
    2 px at 512², get a skipped record instead of six identical states."""
    ghost = ('<link name="ghost"/><joint name="joint_ghost" type="prismatic"><axis xyz="1 0 0"/><child link="ghost"/>'
             '<parent link="link_1"/><limit lower="0" upper="0.3"/></joint>')
    _laptop_with(synth_objects, tmp_path / "src", "ghostly", ghost)
    _laptop_with(synth_objects, tmp_path / "src", "tiny_range", replace=('upper="2.061985679"', 'upper="0.0001"'))
    summary = articulate_folder(tmp_path / "src", tmp_path / "out", num_points=2048, progress=False)
    rows = store.read_manifest(tmp_path / "out")
    skipped = {(r["object_id"], r["joint"]): r["error"] for r in rows if r["status"] == "skipped"}
    assert "below 2 px" in skipped[("ghostly", "joint_ghost")] and "below 2 px" in skipped[("tiny_range", "joint_0")]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["object_id"], r["joint"]) for r in ok} == {("ghostly", "joint_0")} and summary.objects_failed == 0


def test_an_absurd_visual_scale_is_refused(synth_objects, tmp_path):
    mesh = _first_mesh(synth_objects["laptop"])
    _laptop_with(synth_objects, tmp_path / "src", "huge", replace=(f'<mesh filename="{mesh}"/>', f'<mesh filename="{mesh}" scale="1e6 1e6 1e6"/>'))
    summary = articulate_folder(tmp_path / "src", tmp_path / "out", num_points=512, progress=False)
    assert summary.objects_failed == 1 and "absurd scale" in summary.errors[0]
