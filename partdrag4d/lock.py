"""One writer per output folder: an advisory lock that every writing command takes.

``with folder_lock(folder, "render"):`` holds ``folder/.partdrag4d.lock`` with
``flock`` for the duration of the block. A second writer of the same folder gets
:class:`FolderBusy`, whose message is one line naming the holder (pid, host, command,
start time), or waits for it with ``wait=True``. The kernel drops an ``flock`` when its
holder dies, even by ``kill -9``; the holder's record stays in the file, so the next
writer knows the previous one died without finishing and says so in a note before
taking over.

Shards (``render --shard I/N``, ``drags --shard I/N``) write disjoint parts of a folder
and may run side by side: each holds the folder lock *shared* and its own
``.partdrag4d.lock.shard-I-of-N`` exclusively. A whole-folder writer (exclusive) waits
for or refuses running shards, and shards wait for or refuse a whole-folder writer.

The lock is re-entrant within a process (a command that calls another step keeps the
one lock) and is taken by the process that starts the work (the CLI); processes it
starts (Blender workers, Ray workers) do not take it. ``flock`` works on local file
systems and on NFS (Linux maps it to NFS byte-range locks).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from partdrag4d.errors import ToolkitError

LOCK_NAME = ".partdrag4d.lock"


class FolderBusy(ToolkitError, RuntimeError):
    """Another live process writes the folder. ``str(exc)`` is one line naming it."""

    def __init__(self, folder: Path, holder: str):
        super().__init__(f"{folder} is being written by {holder}; wait for it to finish or rerun with --wait")
        self.folder = Path(folder)
        self.holder = holder


@dataclass
class LockInfo:
    """What the holder of a lock writes into the lock file."""

    pid: int
    host: str
    command: str
    started_utc: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} ({self.command}, since {self.started_utc})"

    @staticmethod
    def parse(text: str) -> "LockInfo | None":
        try:
            d = json.loads(text)
            return LockInfo(int(d["pid"]), str(d["host"]), str(d["command"]), str(d["started_utc"]))
        except (ValueError, KeyError, TypeError):
            return None


_held: dict[Path, int] = {}  # folder -> nesting depth, for re-entrant use in one process


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    if text:
        os.write(fd, text.encode("utf-8"))


def _holder_of(path: Path, tries: int = 20) -> LockInfo | None:
    """The record in a busy lock file (retried briefly: a new holder writes it just after locking)."""
    for _ in range(tries):
        try:
            info = LockInfo.parse(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            info = None
        if info is not None:
            return info
        time.sleep(0.025)
    return None


def _describe_busy(folder: Path, path: Path) -> str:
    info = _holder_of(path, tries=4 if path.name == LOCK_NAME else 20)
    if info is not None:
        return info.describe()
    if path.name == LOCK_NAME:  # held shared: name the running shards
        shards = []
        for shard_file in sorted(folder.glob(LOCK_NAME + ".shard-*")):
            shard_info = _holder_of(shard_file, tries=1)
            if shard_info is not None:
                shards.append(f"{shard_file.name.split('.shard-')[1].replace('-of-', '/')}: {shard_info.describe()}")
        if shards:
            return "shards " + "; ".join(shards)
    return "another process"


def _acquire(folder: Path, path: Path, mode: int, wait: bool, poll: float, timeout: float | None,
             note: Callable[[str], None]) -> int:
    """Open ``path`` and ``flock`` it; returns the descriptor."""
    umask = os.umask(0)
    os.umask(umask)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask)
    start = time.monotonic()
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                holder = _describe_busy(folder, path)
                if not wait or (timeout is not None and time.monotonic() - start > timeout):
                    raise FolderBusy(folder, holder) from None
                if not announced:
                    note(f"waiting: {folder} is being written by {holder}")
                    announced = True
                time.sleep(poll)
    except BaseException:
        os.close(fd)
        raise


def _take_over(fd: int, folder: Path, note: Callable[[str], None], own: str | None) -> None:
    """We hold the lock: a record left in the file is of a holder that died without releasing."""
    stale = _read(fd)
    if stale:
        info = LockInfo.parse(stale)
        who = info.describe() if info else "an unknown process"
        note(f"note: took over the lock of {folder} from {who}, which ended without releasing it")
    if own is not None or stale:
        _write(fd, own or "")


@contextmanager
def folder_lock(folder: Path, command: str, wait: bool = False, shard: tuple[int, int] | None = None,
                poll: float = 0.5, timeout: float | None = None,
                note: Callable[[str], None] = _stderr) -> Iterator[LockInfo]:
    """Hold the write lock of ``folder`` (created if missing) for the block.

    ``command`` names what holds it (shown to a second writer). ``shard=(i, n)`` with
    ``n > 1`` takes the shared folder lock plus shard ``i``'s own lock. Raises
    :class:`FolderBusy` when another live process holds it, unless ``wait`` (then polls
    every ``poll`` s, up to ``timeout`` s if given). ``note`` receives the one-line
    notes (waiting, stale lock taken over); default stderr.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    info = LockInfo(os.getpid(), socket.gethostname(), command, _now())
    if _held.get(key):
        _held[key] += 1
        try:
            yield info
        finally:
            _held[key] -= 1
        return
    sharded = shard is not None and int(shard[1]) > 1
    record = json.dumps(info.__dict__) + "\n"
    main = _acquire(folder, folder / LOCK_NAME, fcntl.LOCK_SH if sharded else fcntl.LOCK_EX, wait, poll, timeout, note)
    shard_fd = None
    try:
        if sharded:
            _take_over(main, folder, note, None)  # a dead whole-folder writer's record
            shard_path = folder / f"{LOCK_NAME}.shard-{int(shard[0])}-of-{int(shard[1])}"
            shard_fd = _acquire(folder, shard_path, fcntl.LOCK_EX, wait, poll, timeout, note)
            _take_over(shard_fd, folder, note, record)
        else:
            _take_over(main, folder, note, record)
        _held[key] = 1
        try:
            yield info
        finally:
            _held.pop(key, None)
            if shard_fd is not None:
                _write(shard_fd, "")
            else:
                _write(main, "")
    finally:
        if shard_fd is not None:
            fcntl.flock(shard_fd, fcntl.LOCK_UN)
            os.close(shard_fd)
        fcntl.flock(main, fcntl.LOCK_UN)
        os.close(main)


def lock_holder(folder: Path) -> LockInfo | None:
    """The live holder of ``folder``'s whole-folder lock, or None (free, shared by shards, or stale)."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_of(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
