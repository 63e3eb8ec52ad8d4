"""``verify`` on real PartNet-Mobility objects: every fixture object, every movable joint
swept, rendered at 256 x 256 (draft) — correct data passes (thin door frames seen edge-on,
hinges on the image's centre column), and a real part-id mismatch is still caught."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from partdrag4d import store
from partdrag4d.verify import check_state, verify

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def real_dataset(partnet_fixtures, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from partdrag4d.cli import app

    out = tmp_path_factory.mktemp("real") / "data"
    result = CliRunner().invoke(app, ["make-dataset", "--source", str(partnet_fixtures), "--out", str(out),
                                      "--max-joints", "0", "--quality", "draft", "--resolution", "256"])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def _movable_joints(partnet_fixtures: Path) -> int:
    text = "".join((partnet_fixtures / o / "mobility.urdf").read_text() for o in ("40147", "7310", "10797"))
    return len(re.findall(r'<joint[^>]*type="(?:revolute|prismatic|continuous)"', text))


def test_verify_passes_on_every_real_object_and_joint(real_dataset, partnet_fixtures):
    records = store.read_manifest(real_dataset)
    assert {r["object_id"] for r in records} == {"40147", "7310", "10797"}
    assert len({r["sequence_id"] for r in records}) == _movable_joints(partnet_fixtures) == 4
    report = verify(real_dataset, progress=False)
    assert report.ok, report.defects[:5]
    assert sum(v[0] for v in report.states.values()) == 24 and sum(v[0] for v in report.pairs.values()) == 120


def test_a_part_labelled_as_another_is_still_caught(real_dataset, tmp_path):
    """The agreement bound leaves out only pixels on a part boundary: a door whose pixels
    say "body" in one view, or half of it, is a defect of that view."""
    record = next(r for r in store.read_manifest(real_dataset) if r["object_id"] == "10797" and r["stage"] == 3)
    obj_points = store.read_object_points(real_dataset, record["object_id"])
    assert check_state(real_dataset, record, obj_points) == []
    render = store.render_dir(real_dataset, record["state_id"])
    depth, part_id, _ = store.read_render(render)
    door = int(record["moving_part_ids"][0])
    view = int(np.argmax((part_id == door).sum(axis=(1, 2))))  # the view that sees most of the door
    body = int(np.bincount(part_id[view][(part_id[view] > 0) & (part_id[view] != door)]).argmax())
    for share in (1.0, 0.5):
        wrong = part_id.copy()
        rows = np.flatnonzero((wrong[view] == door).any(axis=1))
        cut = rows[0] + int(share * (rows[-1] - rows[0] + 1))  # the door's top `share` of rows
        wrong[view, :cut][wrong[view, :cut] == door] = body
        shutil.copy(render / "views.npz", tmp_path / "views.npz")
        try:
            np.savez(render / "views.npz", depth=depth, part_id=wrong)
            defects = check_state(real_dataset, record, obj_points)
        finally:
            shutil.copy(tmp_path / "views.npz", render / "views.npz")
        assert any(f"view {view}: part ids agree" in d for d in defects), (share, defects)
    assert check_state(real_dataset, record, obj_points) == []
