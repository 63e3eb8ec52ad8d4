"""The dataset contract: the folder layout (every file name, spelled here and nowhere else),
the records that travel between stages, one reader and one writer each, and the atomic
writes every stage uses.

Nothing half-written is ever left where a reader would take it for complete: files
are written under a temporary name in the same folder and renamed; whole state
folders are assembled under a temporary name and renamed into place, so a folder's
existence means it is complete.

Layout of a dataset folder (the constants below; keys of every JSON file in ``SCHEMA.md``)::

    manifest.jsonl                  MANIFEST       one ManifestRow per state (articulate), errors included
    cameras.json                    CAMERAS        the 12 ring cameras (K, OpenCV c2w) at full size
    objects/<object_id>/object.json OBJECT_RECORD  ObjectRecord: links, joints, normalisation, seeds, versions
    objects/<object_id>/rest.obj    REST_MESH      rest-pose mesh in the canonical frame, ``o <link>`` groups
    objects/<object_id>/textures/   TEXTURES       texture images shared by all of the object's meshes
    objects/<object_id>/points.npz  OBJECT_POINTS  surface samples at rest: points, normals, part_id
    states/<state_id>/state.json    STATE_RECORD   StateRecord: the ManifestRow + link poses
    states/<state_id>/mesh.obj      STATE_MESH     the posed mesh (same groups and materials as rest.obj)
    states/<state_id>/points.npy    STATE_POINTS   the rest samples carried to this state [N, 3] float32
    states/<state_id>/moving.npy    STATE_MOVING   [N] bool: the sample lies on the driven part
    states/<state_id>/render/       RENDER         12 views: view_XX.png, views.npz, cameras.json, render.json
    drags.h5                        DRAG_FILE      visible drags of every pair (``partdrag4d.dragfile``)
    gsdb.h5                         GSDB_FILE      the Gaussian database (``partrm.gsdb``)
    provenance/                     PROVENANCE     not data: wall times, hosts, pids, absolute paths (below)

Records between stages (``TypedDict``: JSON-shaped, so the files keep their bytes):
``ObjectRecord`` and ``StateRecord`` / ``ManifestRow`` (articulate -> render, drags, partrm),
``RenderJob`` (render -> the Blender worker), ``StateResult`` (the worker -> render -> callers:
what became of one state) and ``RenderRecord`` (the worker -> readers).

Same inputs and seed give the same bytes in every data file: no dates or times in
images (PNG text/time chunks are stripped), no wall times, host names or absolute
paths in records (paths inside the dataset are relative to its root), HDF5 without
timestamps. What differs between runs lives only under ``provenance/``:
``provenance/runs.jsonl`` (one line per command run: command, arguments, host, pid,
start and end in UTC, seconds per step) and ``provenance/render/<state_id>.json``
(render wall and CPU times, threads, host).
"""

from __future__ import annotations

import errno
import io
import json
import os
import platform
import re
import shutil
import socket
import stat
import sys
import tempfile
import unicodedata
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, NotRequired, TypedDict

import numpy as np
from PIL import Image

from partdrag4d.cameras import NUM_VIEWS, Camera
from partdrag4d.errors import BadInput, DiskFull, DamagedFile
from partdrag4d.presets import Preset

# ---------------------------------------------------------------- layout: the file names

MANIFEST = "manifest.jsonl"
CAMERAS = "cameras.json"
OBJECTS = "objects"
STATES = "states"
OBJECT_RECORD = "object.json"
REST_MESH = "rest.obj"
TEXTURES = "textures"
OBJECT_POINTS = "points.npz"
STATE_RECORD = "state.json"
STATE_MESH = "mesh.obj"
STATE_MATERIALS = "mesh.mtl"
STATE_POINTS = "points.npy"
STATE_MOVING = "moving.npy"
RENDER = "render"
RENDER_VIEWS = "views.npz"
RENDER_CAMERAS = "cameras.json"
RENDER_RECORD = "render.json"
RENDER_FILES = (RENDER_VIEWS, RENDER_CAMERAS, RENDER_RECORD)
DRAG_FILE = "drags.h5"
GSDB_FILE = "gsdb.h5"
PROVENANCE = "provenance"
"""Folder of the files that are not data and may differ between identical runs."""
RUNS = "runs.jsonl"

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
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=json_default) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npz(path: Path, compressed: bool = True, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npz_fast(path: Path, **arrays: np.ndarray) -> None:
    """npz with zlib level 1: ~40% faster than ``np.savez_compressed``, ~2% larger."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, array in arrays.items():
            with z.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for the arrays, numpy scalars and paths records hold."""
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
    atomic_write_text(path, "".join(json.dumps(r, default=json_default, sort_keys=False) + "\n" for r in records))


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- names from the input

NAME_MAX = 63
"""Longest name token: Blender's limit for object names (bytes), which link names become."""
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
ID_MAX = 200
"""Longest object or state id (a file name component; file systems allow 255 bytes)."""


def safe_name(name: str) -> str:
    """The one rule that turns a name from the input (an object folder, a link, a joint)
    into a token that may reach the file system, an OBJ group, an HDF5 group and Blender.

    Letters are folded to ASCII (NFKD), runs of anything outside ``[A-Za-z0-9_.-]`` become
    one ``_``, leading/trailing ``._-`` go: ``../x`` -> ``x``, ``a b`` -> ``a_b``. A name with
    nothing left (``..``, all non-Latin) becomes ``n`` + 8 hex digits of its CRC-32, and a
    token over ``NAME_MAX`` characters keeps its first 54 and gains ``-`` + that hash, so
    distinct long or non-Latin names stay distinct. Distinct names can still meet (``a b``
    and ``a_b``): callers detect that and refuse the later input (:func:`name_collisions`).
    Records keep the original next to the token."""
    digest = f"{zlib.crc32(name.encode('utf-8', 'surrogatepass')):08x}"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", ascii_name).strip("._-")
    if not cleaned:
        return "n" + digest
    if len(cleaned) > NAME_MAX:
        return cleaned[: NAME_MAX - 9].rstrip("._-") + "-" + digest
    return cleaned


def is_safe_id(token: str) -> bool:
    """``token`` is one path component the toolkit may create: the safe character set, no
    leading dot (so never ``.``/``..``, never hidden), at most ``ID_MAX`` characters."""
    return isinstance(token, str) and len(token) <= ID_MAX and _TOKEN.fullmatch(token) is not None


def check_id(token: str, what: str = "id") -> str:
    """``token`` unchanged, or ``BadInput`` when it could leave its folder or is no safe
    file name. Every dataset path built from an id goes through here."""
    if not is_safe_id(token):
        raise BadInput(f"unsafe {what} {token!r}: ids are 1-{ID_MAX} characters of [A-Za-z0-9_.-], "
                       "not starting with '.', '_' or '-'")
    return token


def name_collisions(names: Iterable[str]) -> dict[str, list[str]]:
    """{token: [original names]} for every token that two or more distinct names map to."""
    by_token: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        by_token.setdefault(safe_name(name), []).append(name)
    return {token: group for token, group in by_token.items() if len(group) > 1}


INPUT_LIMIT = 64 << 20
"""Largest small input file read whole (a URDF, meta.json, semantics.txt, an .mtl)."""


def read_regular_file(path: Path, limit: int = INPUT_LIMIT) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    A named pipe, socket or device (also behind a symlink) is refused before any read
    could block or run without end: opened non-blocking, checked with ``fstat`` on the
    open descriptor (no race with a swap), read with a bound. ``OSError`` for a missing
    file; ``BadInput`` (reason only, the caller names the object) for the rest."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"{Path(path).name} is not a regular file (a {_file_kind(info.st_mode)})")
        if info.st_size > limit:
            raise BadInput(f"{Path(path).name} is {info.st_size:,} bytes, over the limit of {limit:,}")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BadInput(f"{Path(path).name} grew past the limit of {limit:,} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return kind
    return "special file"


# ---------------------------------------------------------------- paths


def object_dir(root: Path, object_id: str) -> Path:
    return Path(root) / OBJECTS / check_id(object_id, "object id")


def state_dir(root: Path, state_id: str) -> Path:
    return Path(root) / STATES / check_id(state_id, "state id")


def render_dir(root: Path, state_id: str) -> Path:
    return state_dir(root, state_id) / RENDER


def view_png_name(view: int) -> str:
    return f"view_{view:02d}.png"


def drag_shard_name(index: int, count: int) -> str:
    """The drag file of shard ``index`` of ``count`` (``drags --shard I/N``)."""
    return f"drags-{index}-of-{count}.h5"


def drag_file(root: Path) -> Path:
    return Path(root) / DRAG_FILE


def gsdb_file(root: Path) -> Path:
    return Path(root) / GSDB_FILE


# ---------------------------------------------------------------- records


class LinkRecord(TypedDict):
    name: str  # the token (``safe_name``) used in files, OBJ groups and Blender
    source_name: str  # the name in the URDF
    part_id: int  # k + 1 for the k-th link; 0 is the background in part-id images
    semantic: str
    has_geometry: bool
    moved_by: list[str]  # movable joints whose subtree holds the link


class ObjectRecord(TypedDict):
    """``objects/<id>/object.json`` (articulate writes it; render jobs, drags, partrm read it)."""

    object_id: str
    category: str
    model_cat: str
    split: str  # train | test
    source: str  # the object folder, relative to the dataset when inside it
    links: list[LinkRecord]
    root: str
    joints: list[dict]  # Joint.to_dict() + source_name: name, type, parent, child, origin 4x4, axis, lower, upper, note
    rest_qpos: dict[str, float]
    normalisation: dict  # center [3], scale, matrix 4x4: canonical = scale * (world - center)
    num_points: int
    num_stages: int
    num_configs: int
    seed: int
    notes: list[str]
    versions: dict[str, str]


class StatePaths(TypedDict):
    object: str  # objects/<object_id>
    state: str  # states/<state_id>
    mesh: str
    points: str
    moving: str


class ManifestRow(TypedDict):
    """A state's line of ``manifest.jsonl`` (``status`` ok; failed objects, skipped joints and
    notes are lines with ``status`` error / skipped / note, see ``SCHEMA.md``)."""

    state_id: str  # <object>_<joint>_c<config>_s<stage>
    sequence_id: str  # the state id without _s<stage>
    object_id: str
    category: str
    split: str
    joint: str
    joint_type: str  # revolute | prismatic | continuous
    config: int
    stage: int  # 0 (lower limit) .. num_stages - 1 (upper limit)
    num_stages: int
    qpos: dict[str, float]  # every non-fixed joint (radians / asset units)
    moving_links: list[str]
    moving_part_ids: list[int]
    seed: int
    paths: StatePaths  # relative to the dataset
    status: str  # ok


class StateRecord(ManifestRow):
    """``states/<id>/state.json``: the state's manifest row and where every link is."""

    link_poses: dict[str, list[list[float]]]  # link -> 4x4, link frame -> canonical object frame


class RenderState(TypedDict):
    state_id: str
    out_dir: str  # absolute: states/<state_id>/render
    link_poses: NotRequired[dict[str, list[list[float]]]]  # missing links: identity


class RenderJob(TypedDict):
    """What ``partdrag4d.render`` sends a Blender worker (one JSON line): one object, its states."""

    object_id: str
    mesh: str  # absolute path of rest.obj: canonical frame, one ``o <link>`` group per link
    links: list[dict]  # {"name": link, "part_id": int}
    cameras: list[dict]  # Camera.to_dict() at the output size
    preset: dict  # the render settings: partdrag4d.presets.Preset.to_dict()
    seed: NotRequired[int]
    root: NotRequired[str]  # the dataset: render.json names the mesh relative to it
    provenance_dir: NotRequired[str]  # per-state timing files go here
    states: list[RenderState]


RENDER_STATUSES = ("rendered", "skipped", "failed")


@dataclass
class StateResult:
    """What became of one state of a render job: the Blender worker reports it (a ``state``
    event line, ``state_event``), the render scheduler passes it on, callers get it.
    ``status``: ``rendered``, ``skipped`` (already complete) or ``failed`` (``error`` says why)."""

    object_id: str
    state_id: str
    out_dir: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    node: str | None = None  # the Ray node that rendered it (``partdrag4d.executor``); None when local

    @property
    def ok(self) -> bool:
        return self.status in ("rendered", "skipped")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, job: RenderJob, state: RenderState, status: str, error: str | None = None) -> "StateResult":
        """A result the scheduler records itself (a state already complete, or never rendered)."""
        return cls(str(job["object_id"]), str(state["state_id"]), str(state["out_dir"]), status, 0.0, error)


def state_event(result: StateResult) -> dict:
    """A state's result as the Blender worker sends it (one JSON line on its result channel)."""
    return {"event": "state", **result.to_dict()}


def read_state_event(event: dict) -> StateResult:
    """The result a worker's ``state`` event carries."""
    return StateResult(str(event.get("object_id")), str(event.get("state_id")), str(event.get("out_dir")),
                       str(event.get("status")), float(event.get("seconds") or 0.0), event.get("error"), event.get("node"))


def state_paths(object_id: str, state_id: str) -> StatePaths:
    """The ``paths`` of a state's manifest row (relative to the dataset)."""
    state = f"{STATES}/{state_id}"
    return {"object": f"{OBJECTS}/{object_id}", "state": state, "mesh": f"{state}/{STATE_MESH}",
            "points": f"{state}/{STATE_POINTS}", "moving": f"{state}/{STATE_MOVING}"}


# ---------------------------------------------------------------- readers and writers


def read_manifest(root: Path) -> list[dict]:
    """Every line of the dataset's manifest (state rows and error / skipped / note lines).
    A line that is not a JSON object raises ``DamagedFile`` naming the file and the line."""
    path = Path(root) / MANIFEST
    rows = []
    with reading(path), open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DamagedFile(f"{path} line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DamagedFile(f"{path} line {number}: a {type(row).__name__}, not a JSON object")
            rows.append(row)
    return rows


def manifest_states(root: Path) -> list[ManifestRow]:
    """The manifest's state rows (``status`` ok), in file order."""
    return [r for r in read_manifest(root) if r.get("status") == "ok"]


def has_manifest(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def write_manifest(root: Path, rows: Iterable[dict]) -> None:
    write_jsonl(Path(root) / MANIFEST, rows)


def read_object(root: Path, object_id: str) -> ObjectRecord:
    path = object_dir(root, object_id) / OBJECT_RECORD
    with reading(path):
        return read_json(path)


def write_object(folder: Path, record: ObjectRecord) -> None:
    """``object.json`` into an object's folder."""
    atomic_write_json(Path(folder) / OBJECT_RECORD, record)


def read_object_points(root: Path, object_id: str) -> dict[str, np.ndarray]:
    """The rest-pose surface samples: points [N, 3], normals [N, 3], part_id [N]."""
    path = object_dir(root, object_id) / OBJECT_POINTS
    with reading(path), np.load(path) as z:
        return {k: z[k] for k in z.files}


def write_object_points(folder: Path, points: np.ndarray, normals: np.ndarray, part_id: np.ndarray) -> None:
    atomic_save_npz(Path(folder) / OBJECT_POINTS, points=points, normals=normals, part_id=part_id)


def read_state(root: Path, state_id: str) -> StateRecord:
    path = state_dir(root, state_id) / STATE_RECORD
    with reading(path):
        return read_json(path)


def write_state(folder: Path, record: StateRecord, points: np.ndarray, moving: np.ndarray) -> None:
    """A state folder's record and arrays (the mesh is written by ``meshio.write_obj``)."""
    folder = Path(folder)
    atomic_save_npy(folder / STATE_POINTS, points)
    atomic_save_npy(folder / STATE_MOVING, moving)
    atomic_write_json(folder / STATE_RECORD, record)


def read_state_points(root: Path, state_id: str) -> np.ndarray:
    """The object's samples carried to this state, [N, 3] float32."""
    path = state_dir(root, state_id) / STATE_POINTS
    with reading(path):
        return np.load(path)


def read_state_moving(root: Path, state_id: str) -> np.ndarray:
    """[N] bool: sample i lies on the state's driven part."""
    path = state_dir(root, state_id) / STATE_MOVING
    with reading(path):
        return np.load(path)


def state_files(meshes: bool = True) -> tuple[str, ...]:
    """The files a complete state folder holds (besides its render)."""
    return (STATE_RECORD, STATE_POINTS, STATE_MOVING) + ((STATE_MESH, STATE_MATERIALS) if meshes else ())


def read_dataset_cameras(root: Path) -> list[Camera]:
    """The dataset's 12 ring cameras (``cameras.json`` at the dataset root, full size)."""
    path = Path(root) / CAMERAS
    with reading(path):
        return [Camera.from_dict(c) for c in read_json(path)["cameras"]]


def write_dataset_cameras(root: Path, record: dict) -> None:
    atomic_write_json(Path(root) / CAMERAS, record)


def render_job_line(job: RenderJob) -> str:
    """A render job as the one JSON line a Blender worker reads."""
    return json.dumps(job, default=json_default) + "\n"


def read_render_job(line: str) -> RenderJob:
    """The job a Blender worker got (one JSON line), checked for the keys it needs."""
    job = json.loads(line)
    if not isinstance(job, dict):
        raise ValueError("a render job is a JSON object")
    check_render_job(job)
    return job


def check_render_job(job: dict) -> None:
    """One-line ValueError when a render job lacks what a worker needs."""
    for key in ("object_id", "mesh", "cameras", "preset", "states"):
        if key not in job:
            raise ValueError(f"render job {job.get('object_id', '?')!r} lacks {key!r}")
    Preset.from_dict(job["preset"])
    for state in job["states"]:
        if "state_id" not in state or "out_dir" not in state:
            raise ValueError(f"a state of render job {job['object_id']!r} lacks state_id or out_dir")


def write_render(folder: Path, depth: np.ndarray, part_id: np.ndarray, cameras: dict, record: dict) -> None:
    """A render's data files (the worker writes the PNGs itself): ``views.npz`` (depth float32
    [V, H, W] planar camera z, background inf; part_id uint16 [V, H, W], 0 background),
    ``cameras.json`` (``views``: K, c2w_opencv, c2w_blender, size, azimuth, elevation) and
    ``render.json`` (settings, versions and relative paths: only what the job reproduces)."""
    folder = Path(folder)
    atomic_save_npz_fast(folder / RENDER_VIEWS, depth=depth, part_id=part_id)
    atomic_write_json(folder / RENDER_CAMERAS, cameras)
    atomic_write_json(folder / RENDER_RECORD, record)


def read_render(render_folder: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """A rendered state's depth [V, H, W] float32, part ids [V, H, W] and cameras."""
    views = Path(render_folder) / RENDER_VIEWS
    with reading(views), np.load(views) as z:
        depth, part_id = z["depth"], z["part_id"]
    with reading(Path(render_folder) / RENDER_CAMERAS):
        cams = [Camera(np.asarray(v["K"]), np.asarray(v["c2w_opencv"]), int(v["width"]), int(v["height"]))
                for v in read_render_cameras(render_folder)]
    return depth, part_id, cams


def read_render_cameras(render_folder: Path) -> list[dict]:
    """The ``views`` of a render's ``cameras.json``."""
    path = Path(render_folder) / RENDER_CAMERAS
    with reading(path):
        return read_json(path)["views"]


def read_render_record(render_folder: Path) -> dict:
    path = Path(render_folder) / RENDER_RECORD
    with reading(path):
        return read_json(path)


def has_render(render_folder: Path, num_views: int = NUM_VIEWS) -> bool:
    """The state was rendered: its render folder exists (cheap: names only, nothing is read;
    ``render_problem`` checks the files). Render folders are renamed into place complete, so
    one that lacks a file is damaged: ``DamagedFile`` names the first missing file."""
    folder = Path(render_folder)
    if not folder.is_dir():
        return False
    for name in (*RENDER_FILES, *(view_png_name(v) for v in range(num_views))):
        if not (folder / name).is_file():
            raise DamagedFile(f"{folder / name}: missing (an incomplete render: `partdrag4d render` redoes it)")
    return True


def read_rgba(render_folder: Path, view: int) -> np.ndarray:
    """One rendered view as [H, W, 4] uint8 (straight alpha), fully decoded (a damaged PNG
    raises ``DamagedFile``)."""
    path = Path(render_folder) / view_png_name(view)
    with reading(path), Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def _npy_header(z: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype


def is_render_complete(out_dir: Path | str, num_views: int = NUM_VIEWS, deep: bool = False) -> bool:
    """Cheap check that ``out_dir`` holds a finished render of ``num_views`` views
    (``render_problem`` finds nothing wrong)."""
    return render_problem(out_dir, num_views, deep) is None


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


def render_provenance_dir(root: Path) -> Path:
    """Per-state render timings (``<state_id>.json``): not data."""
    return provenance_dir(root) / RENDER


def host_facts() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(), "cpus": os.cpu_count()}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_provenance(root: Path, record: dict) -> None:
    """One line in ``provenance/runs.jsonl`` (not data: times, host, pid, arguments)."""
    path = provenance_dir(root) / RUNS
    line = (json.dumps({**record, **host_facts()}, default=json_default) + "\n").encode("utf-8")
    existed = path.exists()
    size = path.stat().st_size if existed else 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write")
        finally:
            os.close(fd)
    except OSError as exc:
        # Provenance is not data: a full disk must not leave a torn line or an empty file, nor
        # hide the run's own error behind this one.
        try:
            if existed:
                os.truncate(path, size)
            elif path.exists():
                path.unlink()
        except OSError:
            pass
        print(f"warning: could not record the run in {path} ({exc.strerror or exc})", file=sys.stderr)


def remove_stale_tree(root: Path) -> int:
    """Delete the staging leftovers of killed runs everywhere in a dataset (its root,
    ``source`` (make-dataset's procedural objects), ``objects/*``, ``objects/*/textures``,
    ``states``, ``states/*``, ``provenance/render``). Only safe while holding the
    dataset's exclusive lock (:mod:`partdrag4d.lock`)."""
    root = Path(root)
    removed = remove_stale_staging(root)
    removed += remove_stale_staging(root / "source")
    removed += remove_stale_staging(render_provenance_dir(root))
    for sub in (OBJECTS, STATES):
        base = root / sub
        if not base.is_dir():
            continue
        removed += remove_stale_staging(base)
        for entry in base.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                removed += remove_stale_staging(entry)
                if sub == OBJECTS:
                    removed += remove_stale_staging(entry / TEXTURES)
    return removed


# ---------------------------------------------------------------- damaged files

_DAMAGE = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error,
           SyntaxError, Image.DecompressionBombError)
"""What reading a damaged file raises: truncated or garbled archives (npz, HDF5), images (PIL
reports some broken PNG chunks as ``SyntaxError``), JSON, and records of the wrong shape."""


def damage_reason(exc: BaseException) -> str:
    """What is wrong with a file whose reading raised ``exc``, in a few words."""
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"cannot read ({exc.strerror})"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    if isinstance(exc, (KeyError, TypeError)):  # a record or archive without what it must hold
        detail = f"{type(exc).__name__}: {detail}"
    return f"damaged ({detail or type(exc).__name__})"


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Around the reading of one dataset file: a missing, unreadable or damaged file becomes
    one ``DamagedFile`` naming ``path`` and what is wrong (the commands print it as one line,
    exit code 2). Wrap only the reading, so that a bug elsewhere keeps its traceback."""
    try:
        yield
    except DamagedFile:
        raise
    except _DAMAGE as exc:
        raise DamagedFile(f"{path}: {damage_reason(exc)}") from None


def render_problem(out_dir: Path | str, num_views: int = NUM_VIEWS, deep: bool = False) -> str | None:
    """What keeps ``out_dir`` from being a finished render of ``num_views`` views, naming the
    file (``None``: nothing). Checks that every file is present; every PNG is RGBA of one size
    (header only); ``cameras.json`` lists ``num_views`` views; ``render.json`` is JSON;
    ``views.npz`` holds ``depth`` float32 and ``part_id`` uint16 of shape [num_views, H, W]
    (npy headers only; ``deep=True`` loads the arrays)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return f"{out_dir}: not rendered"
    size = None
    for v in range(num_views):
        path = out_dir / view_png_name(v)
        try:
            with Image.open(path) as im:
                if im.format != "PNG" or im.mode != "RGBA" or (size is not None and im.size != size):
                    return f"{path}: a {im.format} {im.mode} image of {im.size[0]} x {im.size[1]}, expected an RGBA PNG" + (
                        f" of {size[0]} x {size[1]} like the other views" if size is not None else "")
                size = im.size
        except _DAMAGE as exc:
            return f"{path}: {damage_reason(exc)}"
    if size is None:
        return f"{out_dir}: no views"
    width, height = size
    path = out_dir / RENDER_CAMERAS
    try:
        with open(path, encoding="utf-8") as f:
            count = len(json.load(f)["views"])
        if count != num_views:
            return f"{path}: {count} views, expected {num_views}"
        path = out_dir / RENDER_RECORD
        with open(path, encoding="utf-8") as f:
            json.load(f)
        path = out_dir / RENDER_VIEWS
        expected = {"depth": np.dtype(np.float32), "part_id": np.dtype(np.uint16)}
        with zipfile.ZipFile(path) as z:
            for name, dtype in expected.items():
                shape, dt = _npy_header(z, name + ".npy")
                if tuple(shape) != (num_views, height, width) or dt != dtype:
                    return f"{path}: {name} is {dt} {tuple(shape)}, expected {dtype} {(num_views, height, width)}"
        if deep:
            with np.load(path) as data:
                for name in expected:
                    if data[name].shape != (num_views, height, width):
                        return f"{path}: {name} holds {data[name].shape}, not {(num_views, height, width)}"
    except _DAMAGE as exc:
        return f"{path}: {damage_reason(exc)}"
    return None


METADATA_RESERVE = 1 << 20
"""Room kept for an HDF5 file's closing metadata (``ensure_space``)."""


def _allocate(folder: Path, nbytes: int, what: str) -> str:
    """A hidden staging file holding ``nbytes`` of ``folder``'s disk (``posix_fallocate``), or
    ``DiskFull`` naming ``what``; file systems without fallocate pass unchecked."""
    fd, tmp = tempfile.mkstemp(prefix=".reserve.", suffix=".tmp", dir=folder)
    try:
        os.posix_fallocate(fd, 0, int(nbytes))
    except OSError as exc:
        os.close(fd)
        os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"{folder}: no space left on the device for {what} (about {nbytes / 1e6:.1f} MB more); "
                           "free space and rerun") from None
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return ""
        raise
    os.close(fd)
    return tmp


def ensure_space(folder: Path, nbytes: int, what: str) -> None:
    """``DiskFull`` (one line) unless ``nbytes`` can be allocated in ``folder`` now. HDF5 does
    not survive a full disk (the library crashes closing a file whose write failed), so its
    writers check before each block they add, and hold a ``Ballast`` for the file's closing
    metadata."""
    tmp = _allocate(folder, nbytes, what)
    if tmp:
        os.unlink(tmp)


class Ballast:
    """``METADATA_RESERVE`` bytes of disk held while an HDF5 file is written and given back
    (``release``) right before the file is closed, so closing always has room."""

    def __init__(self, folder: Path, what: str):
        self.path = _allocate(folder, METADATA_RESERVE, what)

    def release(self) -> None:
        if self.path:
            os.unlink(self.path)
            self.path = ""
