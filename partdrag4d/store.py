"""File layout of a dataset and the atomic writes every stage uses.

Nothing half-written is ever left where a reader would take it for complete: files
are written under a temporary name in the same folder and renamed; whole state
folders are assembled under a temporary name and renamed into place, so a folder's
existence means it is complete.

Layout of a dataset folder::

    manifest.jsonl                  one record per state (articulate), errors included
    cameras.json                    the 12 ring cameras (K, OpenCV c2w) at full size
    objects/<object_id>/object.json links, joints, normalisation, seeds, versions
    objects/<object_id>/rest.obj    rest-pose mesh in the canonical frame, ``o <link>`` groups
    objects/<object_id>/textures/   texture images shared by all of the object's meshes
    objects/<object_id>/points.npz  surface samples at rest: points, normals, part_id
    states/<state_id>/state.json    joint values, link poses, moving links
    states/<state_id>/mesh.obj      the posed mesh (same groups and materials as rest.obj)
    states/<state_id>/points.npy    the rest samples carried to this state [N, 3] float32
    states/<state_id>/moving.npy    [N] bool: the sample lies on the driven part
    states/<state_id>/render/       12 views (issue B)
    provenance/                     not data: wall times, hosts, pids, absolute paths (below)

Same inputs and seed give the same bytes in every data file: no dates or times in
images (PNG text/time chunks are stripped), no wall times, host names or absolute
paths in records (paths inside the dataset are relative to its root), HDF5 without
timestamps. What differs between runs lives only under ``provenance/``:
``provenance/runs.jsonl`` (one line per command run: command, arguments, host, pid,
start and end in UTC, seconds per step) and ``provenance/render/<state_id>.json``
(render wall and CPU times, threads, host).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

MANIFEST = "manifest.jsonl"
PROVENANCE = "provenance"
"""Folder of the files that are not data and may differ between identical runs."""

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` for a writer that needs a file name (HDF5,
    safetensors...); renamed onto ``path`` when the block succeeds, deleted if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make datasets unreadable to others
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npz(path: Path, compressed: bool = True, **arrays: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class StagingDir:
    """Build a folder under a hidden temporary name; rename it into place on success.

    An existing target is replaced only after the new one is complete. On failure the
    staging folder is removed, so a crash never leaves a complete-looking folder.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent))
        os.chmod(self.path, 0o777 & ~_UMASK)
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.path is not None
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
            os.replace(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.path, self.target)


_STAGING = re.compile(r"^\..+\.(?:[A-Za-z0-9_]+\.tmp|old-\d+)$")
"""Names of our staging entries: ``.<name>.<random>.tmp`` (tempfile) and
``.<name>.old-<pid>`` (StagingDir); other programs' hidden files do not match."""


def remove_stale_staging(folder: Path) -> int:
    """Delete staging leftovers of killed runs (hidden ``*.tmp`` / ``*.old-*`` entries)."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for entry in Path(folder).iterdir():
        if _STAGING.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed += 1
    return removed


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=_json_default, sort_keys=False) + "\n" for r in records))


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- dataset paths


def object_dir(root: Path, object_id: str) -> Path:
    return Path(root) / "objects" / object_id


def state_dir(root: Path, state_id: str) -> Path:
    return Path(root) / "states" / state_id


def render_dir(root: Path, state_id: str) -> Path:
    return state_dir(root, state_id) / "render"


def view_png_name(view: int) -> str:
    return f"view_{view:02d}.png"


def read_render(render_folder: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """A rendered state's depth [V, H, W] float32, part ids [V, H, W] and cameras."""
    from partdrag4d.cameras import Camera

    with np.load(Path(render_folder) / "views.npz") as z:
        depth, part_id = z["depth"], z["part_id"]
    views = read_json(Path(render_folder) / "cameras.json")["views"]
    cams = [Camera(np.asarray(v["K"]), np.asarray(v["c2w_opencv"]), int(v["width"]), int(v["height"])) for v in views]
    return depth, part_id, cams


def read_dataset_cameras(root: Path) -> list:
    """The dataset's 12 ring cameras (``cameras.json`` at the dataset root, full size)."""
    from partdrag4d.cameras import Camera

    return [Camera.from_dict(c) for c in read_json(Path(root) / "cameras.json")["cameras"]]


def read_rgba(render_folder: Path, view: int) -> np.ndarray:
    """One rendered view as [H, W, 4] uint8 (straight alpha)."""
    from PIL import Image

    with Image.open(Path(render_folder) / view_png_name(view)) as im:
        return np.asarray(im.convert("RGBA"))


# ---------------------------------------------------------------- reproducibility


def source_path(path: Path, root: Path | None) -> str:
    """How a record names a source path: relative to the dataset ``root`` when inside it
    (a dataset can be moved), else absolute."""
    path = Path(path).resolve()
    if root is not None:
        root = Path(root).resolve()
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return str(path)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_VOLATILE = {b"tEXt", b"zTXt", b"iTXt", b"tIME"}


def png_without_metadata(data: bytes) -> bytes:
    """The PNG ``data`` without its text and time chunks (``tEXt``, ``zTXt``, ``iTXt``,
    ``tIME``): the pixels and colour chunks byte for byte, nothing re-encoded. Blender
    writes the render date and render time there, so identical renders differ in bytes."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    out, pos = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind not in _PNG_VOLATILE:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


def strip_png_metadata(path: Path) -> None:
    """Rewrite the PNG at ``path`` without text and time chunks (atomically)."""
    data = Path(path).read_bytes()
    clean = png_without_metadata(data)
    if clean != data:
        atomic_write_bytes(path, clean)


def provenance_dir(root: Path) -> Path:
    return Path(root) / PROVENANCE


def host_facts() -> dict:
    import platform
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(), "cpus": os.cpu_count()}


def utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_provenance(root: Path, record: dict) -> None:
    """One line in ``provenance/runs.jsonl`` (not data: times, host, pid, arguments)."""
    path = provenance_dir(root) / "runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**record, **host_facts()}, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:  # appends of one short line; a torn last line is skipped by readers
        f.write(line)


def remove_stale_tree(root: Path) -> int:
    """Delete the staging leftovers of killed runs everywhere in a dataset (its root,
    ``source`` (make-dataset's procedural objects), ``objects/*``, ``objects/*/textures``,
    ``states``, ``states/*``, ``provenance/render``). Only safe while holding the
    dataset's exclusive lock (:mod:`partdrag4d.lock`)."""
    root = Path(root)
    removed = remove_stale_staging(root)
    removed += remove_stale_staging(root / "source")
    removed += remove_stale_staging(root / PROVENANCE / "render")
    for sub in ("objects", "states"):
        base = root / sub
        if not base.is_dir():
            continue
        removed += remove_stale_staging(base)
        for entry in base.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                removed += remove_stale_staging(entry)
                if sub == "objects":
                    removed += remove_stale_staging(entry / "textures")
    return removed
