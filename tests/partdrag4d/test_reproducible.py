"""Same seed, same bytes; kill -9 and rerun, same content.

``partdrag4d make-dataset`` (one procedural laptop, 6 states, 32 px, draft) runs as a user
runs it, in its own process. A second run into another folder must write byte-identical
data files: only the files under ``provenance/`` (wall times, host, pid) may differ. A
run killed with SIGKILL at a random moment and then rerun must end with the same bytes
as the uninterrupted run, and leave no staging leftovers.
"""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from partdrag4d import store

pytestmark = pytest.mark.blender

REPO = Path(__file__).resolve().parents[2]
ARGS = ["make-dataset", "--category", "laptop", "--per-category", "1", "--resolution", "32", "--quality", "draft", "--seed", "3"]
PROVENANCE_FILES = {"provenance/runs.jsonl"} | {f"provenance/render/syn-laptop-3-000_joint_0_c0_s{k}.json" for k in range(6)}
"""Exactly the files that may differ between two identical runs (not data)."""


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "partdrag4d.cli", *ARGS, "--out", str(out)], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(out: Path) -> float:
    t0 = time.perf_counter()
    proc = _start(out)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    return time.perf_counter() - t0


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _differing(a: Path, b: Path) -> set[str]:
    files_a, files_b = _files(a), _files(b)
    assert files_a == files_b, (sorted(files_a - files_b)[:10], sorted(files_b - files_a)[:10])
    return {f for f in files_a if not filecmp.cmp(a / f, b / f, shallow=False)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    """One uninterrupted run, shared by the tests of this module (and its wall time)."""
    out = tmp_path_factory.mktemp("reference") / "data"
    seconds = _run(out)
    return out, seconds


def test_rerun_writes_the_same_bytes(reference, tmp_path):
    ref, _ = reference
    _run(tmp_path / "data")
    differing = _differing(ref, tmp_path / "data")
    assert differing <= PROVENANCE_FILES, sorted(differing - PROVENANCE_FILES)
    assert {f for f in _files(ref) if f.startswith("provenance/")} == PROVENANCE_FILES
    # what makes that hold: no date/time chunks in the images, no absolute paths in records
    png = (ref / "states" / "syn-laptop-3-000_joint_0_c0_s0" / "render" / "view_00.png").read_bytes()
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"tIME"):
        assert chunk not in png
    for f in _files(ref) - PROVENANCE_FILES:
        if f.endswith((".json", ".jsonl")):
            assert str(ref) not in (ref / f).read_text(), f
    import h5py

    with h5py.File(ref / "drags.h5", "r") as h5:
        assert h5.attrs["dataset"] == "."
        assert len(h5["sequences"]) == 1


def test_gaussian_database_is_byte_identical(reference, tmp_path, one_torch_thread):
    import torch

    from partrm.gsdb_build import build_gsdb
    from partrm.models.lgm import LGM, LGMConfig

    ref, _ = reference
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    LGM(LGMConfig.tiny()).save(teacher)
    build_gsdb(ref, teacher, tmp_path / "a.h5", progress=False)
    build_gsdb(ref, teacher, tmp_path / "b.h5", progress=False)
    assert filecmp.cmp(tmp_path / "a.h5", tmp_path / "b.h5", shallow=False)


def _count(root: Path) -> int:
    try:
        return sum(1 for p in root.rglob("*") if not p.is_dir())
    except OSError:  # a folder renamed while we walk it
        return -1


@pytest.mark.slow  # ~25 s per case on the shared 2-core machine
@pytest.mark.parametrize("seed", [0, 1, "drags"])
def test_kill_9_at_a_random_moment_then_rerun_gives_the_same_content(reference, tmp_path, seed):
    """The moment is drawn as progress: kill when the run has written k of the reference
    run's N files (staging files count), k uniform in [1, N - 1], so every kill lands
    mid-run whatever the machine's speed; most files are renders, so the case "drags"
    takes k = N - 1 (the drag file's staging file exists: the run is writing drags.h5)."""
    ref, _ = reference
    out = tmp_path / "data"
    total = _count(ref)
    k = total - 1 if seed == "drags" else int(np.random.default_rng(seed).integers(1, total))
    proc = _start(out)
    while proc.poll() is None and _count(out) < k:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the main process only, as `kill -9 PID` does
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run finished before {k} of {total} files"
    _run(out)
    differing = _differing(ref, out)
    assert differing <= PROVENANCE_FILES, (k, sorted(differing - PROVENANCE_FILES))
    leftovers = [f for f in _files(out) | {p.relative_to(out).as_posix() for p in out.rglob(".*")}
                 if any(part.startswith(".") and part != store.PROVENANCE for part in f.split("/"))]
    assert leftovers == [".partdrag4d.lock"], leftovers  # the (released, empty) lock file only
