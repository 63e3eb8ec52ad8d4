"""One writer per dataset folder (partdrag4d.lock): a second writer gets one line naming
the holder and exit code 2, or waits with --wait; a lock whose holder died is taken over
with a note; shards of one folder run side by side."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from partdrag4d.cli import app
from partrm.cli import app as partrm_app
from partdrag4d.lock import LOCK_NAME, FolderBusy, folder_lock, lock_holder

HOLDER = """
import sys, time
from partdrag4d.lock import folder_lock
shard = tuple(int(x) for x in sys.argv[3].split("/")) if len(sys.argv) > 3 else None
with folder_lock(sys.argv[1], "test-holder", shard=shard):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def _hold(folder: Path, seconds: float, shard: str | None = None) -> subprocess.Popen:
    """A process holding the folder's lock for ``seconds`` (returns once it holds it)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = [sys.executable, "-c", HOLDER, str(folder), str(seconds)] + ([shard] if shard else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    proc = _hold(tmp_path, 60)
    try:
        with pytest.raises(FolderBusy) as err:
            with folder_lock(tmp_path, "second"):
                pass
        message = str(err.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in message and "test-holder" in message
        assert "\n" not in message and "--wait" in message
        assert lock_holder(tmp_path).pid == proc.pid
    finally:
        _stop(proc)


@pytest.mark.parametrize("command", [
    ["make-dataset", "--out", "{d}", "--category", "laptop"],
    ["articulate", "{src}", "--out", "{d}"],
    ["render", "{d}"],
    ["drags", "{d}"],
    ["gsdb", "build", "{d}", "--teacher", "{teacher}"],
    ["drags", "{src}", "--out", "{d}/drags.h5"],  # the lock is the output folder's
    ["gsdb", "build", "{src}", "--teacher", "{teacher}", "--out", "{d}/gsdb.h5"],
])
def test_every_writing_command_refuses_a_held_folder(tmp_path, command):
    data, src, teacher = tmp_path / "data", tmp_path / "src", tmp_path / "teacher.safetensors"
    data.mkdir()
    src.mkdir()
    teacher.write_bytes(b"")
    proc = _hold(data, 60)
    try:
        args = [a.format(d=data, src=src, teacher=teacher) for a in command]
        result = CliRunner().invoke(partrm_app if command[0] == "gsdb" else app, args)  # gsdb build is partrm's
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"error: {data} is being written by pid {proc.pid} on host {socket.gethostname()}")
        assert not (data / "manifest.jsonl").exists() and not (data / "provenance").exists()  # nothing done
    finally:
        _stop(proc)


def test_only_our_staging_leftovers_are_cleaned(tmp_path):
    """Holding a dataset, a command deletes staging leftovers of killed runs, never other
    hidden files; an output folder that is not the dataset is not cleaned at all."""
    data = tmp_path / "data"
    (data / "states" / "s0").mkdir(parents=True)
    ours = [data / ".manifest.jsonl.k2j_3kd9.tmp", data / "states" / ".s1.abcdefgh.tmp", data / "states" / "s0" / ".render.old-123"]
    theirs = [data / ".gitignore", data / ".cache.tmp", data / "states" / "s0" / ".notes"]
    for f in ours + theirs:
        f.write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".drags.h5.abcdefgh.tmp").write_text("someone else's")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["drags", str(tmp_path / "empty"), "--out", str(elsewhere / "drags.h5")])
    assert (elsewhere / ".drags.h5.abcdefgh.tmp").exists()  # not a dataset folder: untouched
    result = CliRunner().invoke(app, ["articulate", str(tmp_path / "empty"), "--out", str(data)])
    assert result.exit_code == 0, result.output
    assert not any(f.exists() for f in ours) and all(f.exists() for f in theirs)


def test_wait_takes_the_lock_when_the_holder_finishes(tmp_path):
    proc = _hold(tmp_path, 1.5)
    notes = []
    try:
        t0 = time.monotonic()
        with folder_lock(tmp_path, "waiter", wait=True, poll=0.1, note=notes.append) as info:
            waited = time.monotonic() - t0
            assert proc.poll() is not None or proc.stdout.readline().strip() == "released"
            assert lock_holder(tmp_path).pid == info.pid == os.getpid()
    finally:
        _stop(proc)
    assert waited > 0.5
    assert len(notes) == 1 and notes[0].startswith("waiting:") and f"pid {proc.pid}" in notes[0]
    assert lock_holder(tmp_path) is None


def test_lock_of_a_killed_holder_is_taken_over_with_a_note(tmp_path):
    proc = _hold(tmp_path, 60)
    proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
    proc.wait(timeout=30)
    assert str(proc.pid) in (tmp_path / LOCK_NAME).read_text()  # its record is still there
    notes = []
    with folder_lock(tmp_path, "next", note=notes.append):
        assert lock_holder(tmp_path).pid == os.getpid()
    assert len(notes) == 1 and f"took over the lock of {tmp_path} from pid {proc.pid}" in notes[0]
    assert "ended without releasing it" in notes[0]
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly: nothing stale for the next run
    with folder_lock(tmp_path, "again", note=notes.append):
        pass
    assert len(notes) == 1


def test_cli_takes_over_a_stale_lock_with_a_note(tmp_path):
    proc = _hold(tmp_path / "data", 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (tmp_path / "src").mkdir()
    result = CliRunner().invoke(app, ["articulate", str(tmp_path / "src"), "--out", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert f"note: took over the lock of {tmp_path / 'data'} from pid {proc.pid}" in result.output
    assert (tmp_path / "data" / "provenance" / "runs.jsonl").read_text().count('"command": "articulate"') == 1


def test_shards_share_a_folder_but_not_a_shard(tmp_path):
    proc = _hold(tmp_path, 60, shard="0/2")
    try:
        with folder_lock(tmp_path, "shard 1", shard=(1, 2)):  # another shard: fine
            pass
        with pytest.raises(FolderBusy) as same:
            with folder_lock(tmp_path, "shard 0 again", shard=(0, 2)):
                pass
        assert f"pid {proc.pid}" in str(same.value)
        with pytest.raises(FolderBusy) as whole:  # a whole-folder writer names the running shards
            with folder_lock(tmp_path, "whole"):
                pass
        assert "shards 0/2: " in str(whole.value) and f"pid {proc.pid}" in str(whole.value)
    finally:
        _stop(proc)
    with folder_lock(tmp_path, "whole"):
        pass


def test_lock_is_reentrant_within_a_process(tmp_path):
    with folder_lock(tmp_path, "outer"):
        with folder_lock(tmp_path, "inner"):
            assert lock_holder(tmp_path).command == "outer"
        assert lock_holder(tmp_path).command == "outer"
    assert lock_holder(tmp_path) is None
