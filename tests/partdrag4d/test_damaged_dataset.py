"""Damaged or missing files inside a dataset, and values that cannot be right: every dataset
command turns them into one line naming the file and what is wrong (exit code 2), except
``verify``, which reports each as a defect of its state and checks the other states, and
nothing damaged is exported or silently skipped."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.cli import app

pytestmark = pytest.mark.blender  # the rendered_dataset fixture renders with Blender

STATE = "syn-laptop-0-000_joint_0_c0_s1"
OTHER = "syn-laptop-0-000_joint_0_c0_s4"
MISSING_NPZ = "syn-laptop-0-000_joint_0_c0_s2"


@pytest.fixture
def data(rendered_dataset, tmp_path) -> Path:
    """A copy of the session's rendered dataset (two objects, 12 states, drags.h5) to damage."""
    root = tmp_path / "data"
    shutil.copytree(rendered_dataset, root)
    return root


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_error(result) -> str:
    """The command failed on bad input the project's way: exit code 2, no traceback, and one
    ``error:`` line (the reason), which is returned."""
    assert result.exit_code == 2, result.output  # an exception other than bad input would give 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_verify_reports_each_damaged_file_as_a_defect_and_checks_the_other_states(data):
    png = store.render_dir(data, STATE) / store.view_png_name(3)
    _truncate(png)
    npz = store.render_dir(data, MISSING_NPZ) / store.RENDER_VIEWS
    npz.unlink()
    points = store.state_dir(data, OTHER) / store.STATE_POINTS
    _truncate(points)
    _truncate(store.drag_file(data))
    result = CliRunner().invoke(app, ["verify", str(data)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # defects, not a crash
    defects = [line.removeprefix("defect: ") for line in result.stderr.splitlines() if line.startswith("defect: ")]
    assert len(defects) == 4, defects
    assert f"{STATE}: {png}: damaged (image file is truncated)" in defects
    assert f"{MISSING_NPZ}: {npz}: missing" in defects
    assert any(d.startswith(f"{OTHER}: {points}: damaged (cannot reshape") for d in defects), defects
    assert any(d.startswith(f"{store.drag_file(data)}: damaged (") for d in defects), defects
    # the three damaged states are bad, the nine others were verified and are sound
    total = next(line for line in result.stdout.splitlines() if line.startswith("total")).split()
    assert total[1:3] == ["9", "3"], result.stdout


def test_a_garbage_manifest_line_is_named_by_every_command(data):
    manifest = data / store.MANIFEST
    lines = manifest.read_text().splitlines(keepends=True)
    lines[2] = "garbage{\n"
    manifest.write_text("".join(lines))
    expected = f"{manifest} line 3: not valid JSON"
    verify = CliRunner().invoke(app, ["verify", str(data)])
    assert verify.exit_code == 1 and isinstance(verify.exception, SystemExit), verify.output
    assert f"defect: {expected}" in verify.stderr, verify.output
    for command in (["drags", str(data)], ["render", str(data), "--quality", "draft", "--resolution", "128"],
                    ["export", str(data), "--out", str(data.parent / "exported"), "--all"]):
        assert _one_error(CliRunner().invoke(app, command)).startswith(f"error: {expected}"), command
    assert not (data.parent / "exported").exists()


def test_drags_refuses_damaged_inputs_and_keeps_the_old_drag_file(data, rendered_dataset):
    before = _digest(store.drag_file(data))
    npz = store.render_dir(data, STATE) / store.RENDER_VIEWS
    _truncate(npz)
    assert _one_error(CliRunner().invoke(app, ["drags", str(data)])) == f"error: {npz}: damaged (File is not a zip file)"
    npz.unlink()  # a render folder without its arrays is damaged, not "not rendered" (skipped)
    assert _one_error(CliRunner().invoke(app, ["drags", str(data)])).startswith(f"error: {npz}: missing")
    shutil.copy(store.render_dir(rendered_dataset, STATE) / store.RENDER_VIEWS, npz)
    points = store.state_dir(data, OTHER) / store.STATE_POINTS
    _truncate(points)
    assert _one_error(CliRunner().invoke(app, ["drags", str(data)])).startswith(f"error: {points}: damaged (")
    assert _digest(store.drag_file(data)) == before  # never replaced by a partial file
    assert not [p.name for p in data.iterdir() if p.name.endswith(".tmp")]  # no staging leftovers


def test_export_refuses_a_damaged_view_instead_of_copying_it(data, tmp_path):
    png = store.render_dir(data, STATE) / store.view_png_name(3)
    _truncate(png)
    out = tmp_path / "exported"
    for args in (["--state", STATE], ["--state", STATE, "--images", "link"]):
        line = _one_error(CliRunner().invoke(app, ["export", str(data), "--out", str(out), *args]))
        assert line == f"error: {png}: damaged (image file is truncated)"
        assert not (out / STATE).exists() and not [p for p in out.iterdir()]  # nothing of the state, no staging
    # --all: a render folder without its arrays is refused before anything is written (not skipped)
    shutil.rmtree(out)
    npz = store.render_dir(data, MISSING_NPZ) / store.RENDER_VIEWS
    npz.unlink()
    line = _one_error(CliRunner().invoke(app, ["export", str(data), "--out", str(out), "--all"]))
    assert line == f"error: {MISSING_NPZ}: {npz}: missing"
    assert not out.exists()


def test_render_problem_names_the_file(rendered_dataset, tmp_path):
    src = store.render_dir(rendered_dataset, STATE)
    cases = {
        "view_11.png": (lambda p: p.unlink(), "missing"),
        "view_03.png": (lambda p: p.write_bytes(b"not a png"), "damaged (cannot identify image file"),
        "cameras.json": (lambda p: p.write_text(""), "not valid JSON (Expecting value"),
        "render.json": (lambda p: p.unlink(), "missing"),
        "views.npz": (lambda p: p.write_bytes(p.read_bytes()[:2000]), "damaged ("),
    }
    for name, (damage, reason) in cases.items():
        folder = tmp_path / name
        shutil.copytree(src, folder)
        assert store.render_problem(folder) is None and store.is_render_complete(folder)
        damage(folder / name)
        assert store.render_problem(folder).startswith(f"{folder / name}: {reason}"), name
        assert not store.is_render_complete(folder)
    assert store.render_problem(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'}: not rendered"


def test_values_that_cannot_be_right_are_one_line(tmp_path):
    for command in (["synth", "--out", str(tmp_path / "s"), "--seed", "-1"],
                    ["make-dataset", "--out", str(tmp_path / "m"), "--seed", "-1"],
                    ["drags", str(tmp_path), "--seed", str(2**40)]):
        line = _one_error(CliRunner().invoke(app, command))
        assert line.startswith("error: --seed must be an integer from 0 to 4294967295"), command
    assert not (tmp_path / "s").exists() and not (tmp_path / "m").exists()


def test_an_output_folder_that_cannot_be_written_is_one_line(data, tmp_path):
    plain = tmp_path / "a-file"
    plain.write_text("not a folder\n")
    line = _one_error(CliRunner().invoke(app, ["drags", str(data), "--out", str(plain / "sub" / "drags.h5")]))
    assert line.startswith(f"error: cannot lock {plain / 'sub'} for writing")
    line = _one_error(CliRunner().invoke(app, ["export", str(data), "--out", str(plain / "sub"), "--state", STATE]))
    assert str(plain / "sub") in line
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "read-only"
        ro.mkdir(mode=0o555)
        line = _one_error(CliRunner().invoke(app, ["drags", str(data), "--out", str(ro / "x" / "drags.h5")]))
        assert line.startswith(f"error: cannot lock {ro / 'x'} for writing")


def test_make_dataset_exits_non_zero_when_a_state_fails_to_render(tmp_path):
    """Every render fails (12 views of 100000 x 100000 do not fit in memory): make-dataset must
    not report success, as ``render`` does not."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("memory overcommit is on: the 447 GiB arrays would be allocated, not refused")
    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["make-dataset", "--out", str(out), "--category", "laptop", "--resolution", "100000",
                                      "--quality", "draft"])
    assert result.exit_code == 1, result.output
    assert "6 states failed to render" in result.stderr
    assert sum(line.startswith("error syn-laptop-0-000 ") for line in result.stderr.splitlines()) == 6
