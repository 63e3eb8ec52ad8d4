"""A full disk during ``make-dataset``: one error line, a non-zero exit, nothing half-written,
nothing blamed on the object or a state (a render stops at the first state that finds the disk
full: ``partdrag4d.scheduler``), and a rerun after freeing space writes the same bytes as a run
that never ran out. The disk is a small tmpfs (mounting needs root; skipped elsewhere)."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from partdrag4d import store

pytestmark = [pytest.mark.blender]
MAKE = [sys.executable, "-m", "partdrag4d.cli", "make-dataset", "-c", "laptop", "--resolution", "64", "--quality", "draft"]


def _mount(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0


@pytest.fixture()
def small_disk(tmp_path):
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if os.geteuid() != 0 or not _mount(folder, "64k"):
        pytest.skip("mounting a small tmpfs needs root (and a kernel that allows it here)")
    subprocess.run(["umount", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def _same_tree(a: Path, b: Path) -> list[str]:
    """Files that differ between two datasets (provenance and the lock file aside)."""
    diff = []
    cmp = filecmp.dircmp(a, b, ignore=[store.PROVENANCE, ".partdrag4d.lock"])
    stack = [("", cmp)]
    while stack:
        prefix, c = stack.pop()
        diff += [prefix + n for n in c.left_only + c.right_only + c.diff_files + c.funny_files]
        stack += [(prefix + n + "/", sub) for n, sub in c.subdirs.items()]
    return diff


@pytest.mark.parametrize("size,step", [("1900k", ""), ("2200k", "while rendering state"), ("2600k", "")])
def test_a_full_disk_is_one_line_and_a_rerun_completes_byte_identical(small_disk, tmp_path, size, step):
    """Full while articulating / rendering / writing drags.h5."""
    reference = tmp_path / "reference"
    assert subprocess.run(MAKE + ["--out", str(reference)], capture_output=True).returncode == 0
    assert _mount(small_disk, size)
    out = small_disk / "data"
    run = subprocess.run(MAKE + ["--out", str(out)], capture_output=True, text=True)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"no space left on the device {step}" in errors[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not [p for p in out.rglob(".*") if p.name != ".partdrag4d.lock"]  # no staging leftovers
    if store.has_manifest(out):
        assert all(r["status"] != "error" for r in store.read_manifest(out))  # the disk, not the object
    runs = out / store.PROVENANCE / store.RUNS
    assert not runs.exists() or all(line.endswith("}") for line in runs.read_text().splitlines())
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert subprocess.run(MAKE + ["--out", str(out)], capture_output=True).returncode == 0
    assert _same_tree(out, reference) == []
