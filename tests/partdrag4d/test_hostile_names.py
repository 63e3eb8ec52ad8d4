"""Names from the input are hostile: object folders, links and joints reach ids, file names,
OBJ groups, HDF5 groups and Blender only through ``store.safe_name``; two inputs that would
share an id are refused before anything is written; small input files that are not
regular files never block a run; no declared encoding hides a DTD."""

from __future__ import annotations

import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from partdrag4d import store
from partdrag4d.articulate import articulate_folder
from partdrag4d.errors import BadInput


@contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging the suite (a blocked read is what some tests look for)."""
    def _alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _rename(folder: Path, joints: dict[str, str] | None = None, links: dict[str, str] | None = None) -> None:
    """Rename joints and links of ``folder``'s URDF (and semantics.txt) through lxml, so any
    name (newlines, quotes, separators) is written as a well-formed attribute."""
    path = folder / "mobility.urdf"
    root = etree.fromstring(path.read_bytes())
    joints, links = joints or {}, links or {}
    for j in root.iter("joint"):
        j.set("name", joints.get(j.get("name"), j.get("name")))
        for tag in ("parent", "child"):
            el = j.find(tag)
            el.set("link", links.get(el.get("link"), el.get("link")))
    for link in root.iter("link"):
        link.set("name", links.get(link.get("name"), link.get("name")))
    path.write_bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
    sem = folder / "semantics.txt"
    lines = [line.split(" ") for line in sem.read_text().splitlines() if line]
    sem.write_text("".join(" ".join([links.get(p[0], p[0])] + p[1:]) + "\n" for p in lines))


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _states_on_disk(out: Path) -> set[str]:
    base = out / store.STATES
    return {p.name for p in base.iterdir() if not p.name.startswith(".")} if base.is_dir() else set()


@pytest.fixture()
def laptop(synth_objects, tmp_path) -> Path:
    """A sandbox holding ``src/`` (object folders go here) and a file outside ``out``."""
    (tmp_path / "src").mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    return synth_objects["laptop"]


def _articulate(src: Path, out: Path, **kw):
    with _deadline(120):
        return articulate_folder(src, out, num_points=512, meshes=True, progress=False, **kw)


def test_the_name_rule():
    assert store.safe_name("joint_0") == "joint_0"
    assert store.safe_name("../../victim") == "victim"
    assert store.safe_name("a/b") == "a_b"
    assert store.safe_name("a\nv 1 2 3") == "a_v_1_2_3"
    assert store.safe_name("Türgriff") == "Turgriff"
    assert store.safe_name("门") != store.safe_name("盖") and store.safe_name("门").startswith("n")
    assert store.safe_name("..") != store.safe_name(".") and store.is_safe_id(store.safe_name(".."))
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    assert len(store.safe_name(long_a)) <= store.NAME_MAX and store.safe_name(long_a) != store.safe_name(long_b)
    for bad in ("..", ".", "", "a/b", "../x", ".hidden", "a\nb", "x" * (store.ID_MAX + 1)):
        with pytest.raises(BadInput):
            store.state_dir(Path("/data"), bad)
    assert store.name_collisions(["a b", "a_b", "c"]) == {"a_b": ["a b", "a_b"]}


def test_joint_names_cannot_leave_out_or_nest_folders(laptop, tmp_path):
    """``../`` segments and ``/`` in joint and link names: nothing outside ``--out``, a
    flat state folder per state, the original names kept in object.json."""
    folder = shutil.copytree(laptop, tmp_path / "src" / "lap")
    _rename(folder, joints={"joint_0": "../../victim/x"}, links={"link_0": "lid/..\nv 0 0 0\nf 1 1 1", "link_1": "../body"})
    before = _tree(tmp_path / "victim")
    summary = _articulate(tmp_path / "src", tmp_path / "data" / "out")
    assert summary.objects_ok == 1, summary.errors
    assert _tree(tmp_path / "victim") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src", "victim"]
    states = _states_on_disk(tmp_path / "data" / "out")
    assert len(states) == 6 and all(s.startswith("lap_victim_x_c0_s") for s in states)
    obj = store.read_object(tmp_path / "data" / "out", "lap")
    joint = next(j for j in obj["joints"] if j["type"] == "revolute")
    assert (joint["name"], joint["source_name"]) == ("victim_x", "../../victim/x")
    link = next(lk for lk in obj["links"] if lk["source_name"].startswith("lid"))
    assert link["name"] == "lid_.._v_0_0_0_f_1_1_1"
    body = next(lk for lk in obj["links"] if lk["source_name"] == "../body")
    assert body["name"] == "body" and body["semantic"] == "laptop_body"  # semantics.txt names links as the URDF does
    rest = (tmp_path / "data" / "out" / "objects" / "lap" / store.REST_MESH).read_text()
    assert "\nv 0 0 0\n" not in rest and "\nf 1 1 1\n" not in rest


def test_colliding_ids_refuse_the_later_object_and_keep_the_first(laptop, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(laptop, src / "obj a")
    shutil.copytree(laptop, src / "obj_a")  # same id as "obj a"
    shutil.copytree(laptop, src / "门")  # non-Latin names get distinct hashed ids
    shutil.copytree(laptop, src / "盖")
    shutil.copytree(laptop, src / "lap")  # lap + joint_0 ...
    _rename(shutil.copytree(laptop, src / "lap_joint"), joints={"joint_0": "0"})  # ... = lap_joint + 0
    twin = shutil.copytree(laptop, src / "twin")
    _rename(twin, joints={"joint_1": "joint_0"})  # two joints of one URDF with one name
    spaced = shutil.copytree(laptop, src / "spaced")
    _rename(spaced, joints={"joint_1": "joint 0", "joint_0": "joint_0"})  # two joint names, one token
    out = tmp_path / "out"
    summary = _articulate(src, out)
    rows = store.read_manifest(out)
    errors = {r["source"]: r["error"] for r in rows if r["status"] == "error"}
    assert summary.objects_ok == 4 and summary.objects_failed == 4, summary.errors
    assert "'obj a' and 'obj_a'" in errors[str((src / "obj_a").resolve())]
    assert "lap_joint_0" in errors[str((src / "lap_joint").resolve())] and "'lap'" in errors[str((src / "lap_joint").resolve())]
    assert "two joints are named 'joint_0'" in errors[str(twin.resolve())]
    assert "'joint 0'" in errors[str(spaced.resolve())] and "'joint_0'" in errors[str(spaced.resolve())]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len({r["state_id"] for r in ok}) == len(ok) == 4 * 6
    assert _states_on_disk(out) == {r["state_id"] for r in ok}
    assert {r["object_id"] for r in ok} == {"obj_a", "lap", store.safe_name("门"), store.safe_name("盖")}
    assert store.read_object(out, "obj_a")["source"] == str((src / "obj a").resolve())
    # a second run with only the colliding folder: the object already in the dataset keeps its states
    only = tmp_path / "src2"
    _rename(shutil.copytree(laptop, only / "lap_joint"), joints={"joint_0": "0"})
    again = _articulate(only, out)
    assert again.objects_failed == 1 and "already in" in again.errors[0]
    assert _states_on_disk(out) == {r["state_id"] for r in ok}


@pytest.mark.parametrize("name", ["meta.json", "semantics.txt", "mtl"])
def test_a_named_pipe_never_blocks_the_run(laptop, tmp_path, name):
    src = tmp_path / "src"
    bad = shutil.copytree(laptop, src / "a_bad")
    shutil.copytree(laptop, src / "b_good")
    target = next((bad / "textured_objs").glob("*.mtl")) if name == "mtl" else bad / name
    target.unlink()
    os.mkfifo(target)
    summary = _articulate(src, tmp_path / "out")  # fails after 120 s instead of hanging
    assert summary.objects_ok == 1 and summary.objects_failed == 1
    assert summary.errors[0].startswith("a_bad: ") and "not a regular file (a named pipe)" in summary.errors[0]


def test_a_device_as_meta_json_is_refused(laptop, tmp_path):
    bad = shutil.copytree(laptop, tmp_path / "src" / "dev")
    (bad / "meta.json").unlink()
    os.symlink("/dev/zero", bad / "meta.json")
    summary = _articulate(bad, tmp_path / "out")
    assert summary.objects_failed == 1 and "meta.json is not a regular file (a character device)" in summary.errors[0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8"])
def test_no_encoding_hides_a_dtd(laptop, tmp_path, encoding):
    bad = shutil.copytree(laptop, tmp_path / "src" / "ent")
    text = (bad / "mobility.urdf").read_text()
    body = text.split("?>", 1)[1].replace('name="joint_0"', 'name="&boom;"')
    doc = f'<?xml version="1.0" encoding="{encoding}"?>\n<!DOCTYPE robot [<!ENTITY boom "joint_boom">]>{body}'
    (bad / "mobility.urdf").write_bytes(doc.encode(encoding))
    summary = _articulate(bad, tmp_path / "out")
    assert summary.objects_failed == 1 and "DTD/entities" in summary.errors[0]
    assert not _states_on_disk(tmp_path / "out")


def test_a_utf16_urdf_without_dtd_still_loads(laptop, tmp_path):
    good = shutil.copytree(laptop, tmp_path / "src" / "u16")
    text = (good / "mobility.urdf").read_text().replace('<?xml version="1.0" ?>', '<?xml version="1.0" encoding="utf-16"?>')
    (good / "mobility.urdf").write_bytes(text.encode("utf-16"))
    assert _articulate(good, tmp_path / "out").objects_ok == 1


def test_hostile_names_render_and_verify(laptop, tmp_path):
    """An object whose names Blender could not hold (over 63 characters, control
    characters, separators) articulates, renders and passes ``verify``."""
    from partdrag4d.pipeline import make_dataset
    from partdrag4d.verify import verify

    folder = shutil.copytree(laptop, tmp_path / "src" / ("ü" * 70 + " ..\tx"))
    _rename(folder, joints={"joint_0": "j\t" + "ö" * 80}, links={"link_0": "\x7f" + "L" * 90, "link_1": "base/../" + "b" * 70})
    out = tmp_path / "out"
    with _deadline(500):
        summary = make_dataset(out, source=tmp_path / "src", quality="draft", resolution=64, progress=False, max_joints=1)
    assert (summary.objects, summary.states, summary.failed_objects) == (1, 6, 0)
    assert summary.drags > 0
    report = verify(out, progress=False)
    assert report.ok, report.defects[:5]
    ok = [r for r in store.read_manifest(out) if r["status"] == "ok"]
    assert len(ok) == 6 and all(store.is_safe_id(r["state_id"]) for r in ok)
    assert all(len(lk["name"]) <= store.NAME_MAX for lk in store.read_object(out, ok[0]["object_id"])["links"])


_HOSTILE = st.lists(st.sampled_from(list("ab_.-/ \t\n\\:*?\"'<>|0123456789") + ["..", "../", "é", "门", "\u200b", "\x7f", "\x01"]),
                    min_size=1, max_size=12).map("".join) \
    | st.text(st.sampled_from("xy_"), min_size=60, max_size=120)


def _folder_name(name: str) -> str | None:
    """What may be a folder name on Linux: no '/', no NUL, not '.'/'..'; None otherwise."""
    cleaned = name.replace("/", "").replace("\0", "")
    return cleaned if cleaned not in ("", ".", "..") and len(cleaned.encode()) < 200 else None


def _xml_name(name: str) -> str:
    """XML 1.0 cannot carry most control characters at all."""
    return "".join(ch for ch in name if ch in "\t\n" or ord(ch) >= 0x20) or "j"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(objects=st.lists(st.tuples(_HOSTILE, _HOSTILE, _HOSTILE, _HOSTILE), min_size=1, max_size=3))
@example(objects=[("..a", "j", "l", "b"), ("a", "../j", "l", "b")])  # a hidden folder beside a real one
def test_property_hostile_names_stay_inside_out_and_never_collide(synth_objects, tmp_path_factory, objects):
    """Folder, joint and link names from hostile alphabets: nothing is written outside
    ``--out``; every accepted object's states are present and distinct; every refused
    object has a line naming it and the reason."""
    laptop = synth_objects["laptop"]
    sandbox = tmp_path_factory.mktemp("hostile")
    src, out = sandbox / "src", sandbox / "data" / "out"
    folders = []
    for folder_name, joint, movable_link, base_link in objects:
        name = _folder_name(folder_name)
        if name is None or (src / name).exists():
            continue
        folder = shutil.copytree(laptop, src / name)
        _rename(folder, joints={"joint_0": _xml_name(joint)}, links={"link_0": _xml_name(movable_link), "link_1": _xml_name(base_link)})
        if not name.startswith("."):  # hidden folders (".git", "..a") are skipped silently, by design
            folders.append(folder)
    if not folders:
        return
    (sandbox / "outside").mkdir()
    summary = _articulate(src, out)
    assert sorted(p.name for p in sandbox.iterdir()) == ["data", "outside", "src"]
    assert list((sandbox / "outside").iterdir()) == [] and [p.name for p in (sandbox / "data").iterdir()] == ["out"]
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out.resolve())
    rows = store.read_manifest(out)
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "error"]
    assert summary.objects_ok + summary.objects_failed == len(folders)
    assert len(failed) == summary.objects_failed and all(r["error"].startswith(r["object_id"] + ": ") for r in failed)
    assert all(store.is_safe_id(r["object_id"]) and "\n" not in r["error"] for r in failed)
    assert len({r["state_id"] for r in ok}) == len(ok) == 6 * summary.objects_ok
    assert _states_on_disk(out) == {r["state_id"] for r in ok}
    for r in ok:
        assert store.read_state(out, r["state_id"])["qpos"] == r["qpos"]
    json.dumps(rows)  # the manifest holds only JSON
