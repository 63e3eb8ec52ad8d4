"""SCHEMA.md against the files the pipeline writes: every documented key is written and
every written key is documented (tables of SCHEMA.md, first column)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.articulate import articulate_folder

SCHEMA = Path(__file__).resolve().parents[2] / "SCHEMA.md"
STATE = "syn-laptop-0-000_joint_0_c0_s2"


def documented() -> dict[str, list[str]]:
    """``### heading`` -> the backticked names in the first column of its table rows."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in SCHEMA.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = []
        elif current and (m := re.match(r"^\| `([^`]+)` \|", line)):
            sections[current].append(m.group(1))
    return sections


def flatten(obj: dict, doc: list[str]) -> set[str]:
    """Keys of ``obj``; a dict value is expanded (``a.b``) and a list of dicts (``a[].b``)
    when the documentation expands it, so data-keyed dicts (qpos, link_poses) stay whole."""
    keys = set()
    for k, v in obj.items():
        keys.add(k)
        if isinstance(v, dict) and any(d.startswith(f"{k}.") for d in doc):
            keys |= {f"{k}.{sub}" for sub in v}
        if isinstance(v, list) and v and isinstance(v[0], dict) and any(d.startswith(f"{k}[].") for d in doc):
            shapes = {tuple(e) for e in v}
            assert len(shapes) == 1, f"{k}: elements with different keys {shapes}"
            keys |= {f"{k}[].{sub}" for sub in v[0]}
    return keys


def _same(doc: dict[str, list[str]], heading: str, written: set[str]) -> None:
    assert heading in doc, f"SCHEMA.md has no section {heading!r}"
    listed = doc[heading]
    assert len(listed) == len(set(listed)), f"{heading}: a key is listed twice"
    assert set(listed) == written, f"{heading}: documented but not written {sorted(set(listed) - written)}, written but not documented {sorted(written - set(listed))}"


def test_dataset_and_render_files_match_the_schema(rendered_dataset):
    doc = documented()
    root = rendered_dataset
    records = list(store.read_jsonl(root / store.MANIFEST))
    ok = [r for r in records if r["status"] == "ok"]
    heading = "`manifest.jsonl` (state record, `status` = `ok`)"
    for r in ok:
        _same(doc, heading, flatten(r, doc[heading]))
    heading = "`cameras.json` (dataset root)"
    _same(doc, heading, flatten(store.read_json(root / "cameras.json"), doc[heading]))
    record = next(r for r in ok if r["state_id"] == STATE)
    heading = "`objects/<object_id>/object.json`"
    _same(doc, heading, flatten(store.read_json(root / "objects" / record["object_id"] / "object.json"), doc[heading]))
    with np.load(root / "objects" / record["object_id"] / "points.npz") as z:
        _same(doc, "`objects/<object_id>/points.npz`", set(z.files))
    state = store.read_json(store.state_dir(root, STATE) / "state.json")
    state_keys = flatten(state, doc["`manifest.jsonl` (state record, `status` = `ok`)"])
    _same(doc, "`states/<state_id>/state.json`", state_keys - set(doc["`manifest.jsonl` (state record, `status` = `ok`)"]))
    render = store.render_dir(root, STATE)
    with np.load(render / "views.npz") as z:
        _same(doc, "`states/<state_id>/render/views.npz`", set(z.files))
    heading = "`states/<state_id>/render/cameras.json`"
    _same(doc, heading, flatten(store.read_json(render / "cameras.json"), doc[heading]))
    heading = "`states/<state_id>/render/render.json`"
    _same(doc, heading, flatten(store.read_json(render / "render.json"), doc[heading]))
    timing = root / "provenance" / "render" / f"{STATE}.json"
    _same(doc, "`provenance/render/<state_id>.json` (not data)", set(store.read_json(timing)))
    cams = store.read_json(render / "cameras.json")["views"]
    assert [round(c["azimuth"]) % 360 for c in cams] == [30 * v for v in range(12)]


def test_drag_file_matches_the_schema(rendered_dataset):
    doc = documented()
    with h5py.File(rendered_dataset / "drags.h5", "r") as f:
        _same(doc, "`drags.h5` root attributes", set(f.attrs))
        for g in f["sequences"].values():
            _same(doc, "`drags.h5` `/sequences/<sequence_id>/` attributes", set(g.attrs))
            _same(doc, "`drags.h5` `/sequences/<sequence_id>/` datasets", set(g.keys()))


def test_exports_and_articulation_match_the_schema(rendered_dataset, tmp_path):
    from partdrag4d.cli import app as data_app
    from partrm.joints import extract

    doc = documented()
    for fmt, name, heading in (("nerfstudio", "transforms.json", "`partdrag4d export` `transforms.json` (nerfstudio)"),
                               ("nerf-synthetic", "transforms_train.json", "`partdrag4d export` `transforms_train.json` (NeRF-synthetic)")):
        for extra in ([], ["--mask-path"]):
            out = tmp_path / f"{fmt}{len(extra)}"
            result = CliRunner().invoke(data_app, ["export", str(rendered_dataset), "--out", str(out), "--format", fmt, "--state", STATE, *extra])
            assert result.exit_code == 0, result.output
            written = flatten(json.loads((out / STATE / name).read_text()), doc[heading])
            listed = set(doc[heading]) - (set() if extra else {"frames[].mask_path"})
            assert written == listed, (fmt, extra, written ^ listed)
    a, b = STATE, STATE.replace("_s2", "_s5")
    result = extract(tmp_path / "art", data=rendered_dataset, state_a=a, state_b=b)
    heading = "`articulation.json` (`partrm articulation`)"
    _same(doc, heading, flatten(json.loads(result.report.read_text()), doc[heading]))


def test_other_manifest_records_match_the_schema(synth_objects, tmp_path):
    """error, skipped and note records (a broken object, a joint that cannot move, a
    visual whose file is missing) use only the documented keys, and all of them."""
    src = tmp_path / "src"
    src.mkdir()
    laptop = src / "laptop_missing_visual"
    shutil.copytree(synth_objects["laptop"], laptop)
    text = (laptop / "mobility.urdf").read_text()
    ghost = '<visual name="ghost"><geometry><mesh filename="textured_objs/ghost.obj"/></geometry></visual>'
    (laptop / "mobility.urdf").write_text(text.replace('<link name="link_1">', '<link name="link_1">' + ghost, 1))
    broken = src / "broken"
    shutil.copytree(synth_objects["laptop"], broken)
    (broken / "mobility.urdf").write_text(text.replace("</robot>", "</robo"))
    washer = src / "dishwasher_stuck"
    shutil.copytree(synth_objects["dishwasher"], washer)
    wtext = (washer / "mobility.urdf").read_text()
    m = re.search(r'(<joint name="joint_\d+" type="prismatic">.*?)<limit lower="[^"]+" upper="[^"]+"/>', wtext, re.S)
    (washer / "mobility.urdf").write_text(wtext[: m.start()] + m.group(1) + '<limit lower="0.1" upper="0.1"/>' + wtext[m.end():])
    articulate_folder(src, tmp_path / "data", num_points=256, progress=False, meshes=False, max_joints=1)
    records = [r for r in store.read_jsonl(tmp_path / "data" / store.MANIFEST) if r["status"] != "ok"]
    assert {r["status"] for r in records} >= {"error", "skipped", "note"}
    heading = "`manifest.jsonl` (other records)"
    doc = documented()[heading]
    written = set().union(*(set(r) for r in records))
    assert written == set(doc), written ^ set(doc)
    by_status = {s: [r for r in records if r["status"] == s] for s in ("error", "skipped", "note")}
    assert set(by_status["error"][0]) == {"object_id", "status", "error", "source"}
    assert set(by_status["skipped"][0]) == {"object_id", "status", "error", "category", "joint"}
    assert {"object_id", "status", "note", "category", "link", "file"} in [set(r) for r in by_status["note"]]
