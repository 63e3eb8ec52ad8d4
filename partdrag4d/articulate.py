"""Sequences of states: every movable joint swept through 6 stages, normalisation, point
correspondence, and the per-state files (posed mesh, points, moving mask).

For joint ``j`` and configuration ``c`` the other movable joints are held at values
drawn uniformly within their limits from ``default_rng([seed, crc32(object_id), j, c])``,
so a state never depends on which other objects or joints are in the same run.
Stage ``k`` of ``S`` puts ``j`` at ``lower + (upper - lower) * k / (S - 1)``.

Point ``i`` is the same material point in every state of an object: points are sampled
once on the rest-pose surface (all joints at 0) and carried by their link's transform.
"""

from __future__ import annotations

import errno
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from partdrag4d import __version__, cameras, categories, store
from partdrag4d.assets.articulated import ArticulatedObject
from partdrag4d.assets.partnet_mobility import MAX_FACES, AssetError, category_of, find_objects, load_object, read_meta, safe_id, urdf_joint_names
from partdrag4d.errors import DiskFull
from partdrag4d.executor import map_ordered
from partdrag4d.meshio import MeshPart, write_obj

NUM_STAGES = 6
NUM_POINTS = 16384


@dataclass(frozen=True)
class StateSpec:
    """One state: which joint is swept, in which configuration of the others, at which stage."""

    object_id: str
    joint: str
    config: int
    stage: int
    num_stages: int
    qpos: dict[str, float]

    @property
    def sequence_id(self) -> str:
        return f"{self.object_id}_{self.joint}_c{self.config}"

    @property
    def state_id(self) -> str:
        return f"{self.sequence_id}_s{self.stage}"


@dataclass(frozen=True)
class Normalisation:
    """canonical = scale * (world - center): one transform for all states of an object."""

    center: np.ndarray
    scale: float

    @property
    def matrix(self) -> np.ndarray:
        m = np.eye(4) * self.scale
        m[3, 3] = 1.0
        m[:3, 3] = -self.scale * self.center
        return m

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale, "matrix": self.matrix.tolist(), "frame_margin": cameras.FRAME_MARGIN}


@dataclass
class SurfaceSamples:
    """Points on the rest-pose surface in the canonical frame, with their part ids."""

    points: np.ndarray  # [N, 3] float32
    normals: np.ndarray  # [N, 3] float32
    part_id: np.ndarray  # [N] int16 (link index + 1)


@dataclass
class ArticulatedState:
    """A planned state with its link transforms in the canonical frame (relative to rest)."""

    spec: StateSpec
    link_poses: dict[str, np.ndarray]  # posed = pose @ rest, canonical frame
    moving_links: list[str]


@dataclass
class ObjectPlan:
    obj: ArticulatedObject
    states: list[ArticulatedState]
    normalisation: Normalisation
    samples: SurfaceSamples
    seed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (joint, reason)


def _rng(seed: int, object_id: str, joint_index: int, config: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(object_id.encode()), joint_index, config])


def plan_specs(obj: ArticulatedObject, seed: int = 0, num_configs: int = 1, num_stages: int = NUM_STAGES,
               max_joints: int | None = None) -> list[StateSpec]:
    """All states of an object: movable joints x configurations x stages. With
    ``max_joints`` only the first that many movable joints (URDF order) are swept; the
    others still take random values."""
    if num_stages < 2:
        raise ValueError("a sequence needs at least 2 stages")
    specs = []
    swept = [j.name for j in obj.movable_joints][: max_joints if max_joints is not None else None]
    for ji, joint in enumerate(obj.joints):
        if joint.name not in swept:
            continue
        for config in range(num_configs):
            rng = _rng(seed, obj.object_id, ji, config)
            base = {j.name: (float(rng.uniform(j.lower, j.upper)) if j.movable and j.name != joint.name else j.lower) for j in obj.joints if j.kind != "fixed"}
            for stage in range(num_stages):
                qpos = dict(base)
                qpos[joint.name] = joint.lower + (joint.upper - joint.lower) * stage / (num_stages - 1)
                specs.append(StateSpec(obj.object_id, joint.name, config, stage, num_stages, obj.follow(qpos)))
    return specs


def _link_vertices(obj: ArticulatedObject) -> dict[str, np.ndarray]:
    return {link: np.concatenate([p.vertices for p in parts]) for link, parts in obj.geometry.items()}


def compute_normalisation(obj: ArticulatedObject, qpos_list: list[dict[str, float]]) -> Normalisation:
    """Centre the union of all states' bounding boxes and scale it to fill the views (cameras.fit_scale)."""
    verts = _link_vertices(obj)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for qpos in qpos_list:
        poses = obj.forward_kinematics(qpos)
        for link, v in verts.items():
            w = v @ poses[link][:3, :3].T + poses[link][:3, 3]
            lo, hi = np.minimum(lo, w.min(0)), np.maximum(hi, w.max(0))
    center = (lo + hi) / 2.0
    half = (hi - lo) / 2.0
    if not np.isfinite(half).all() or half.max() <= 0:
        raise ValueError(f"{obj.object_id}: degenerate bounding box")
    return Normalisation(center, cameras.fit_scale(np.maximum(half, 1e-6 * half.max())))


def sample_surface(obj: ArticulatedObject, rest_world: dict[str, np.ndarray], norm: Normalisation, count: int, seed: int) -> SurfaceSamples:
    """Area-weighted samples over every link's rest-pose surface (canonical frame)."""
    rng = np.random.default_rng([seed, zlib.crc32(obj.object_id.encode()), 0xC0FFEE])
    tris, part_ids = [], []
    for link, parts in obj.geometry.items():
        m = norm.matrix @ rest_world[link]
        for p in parts:
            v = p.vertices @ m[:3, :3].T + m[:3, 3]
            tris.append(v[p.faces])
            part_ids.append(np.full(len(p.faces), obj.part_id(link), dtype=np.int16))
    triangles = np.concatenate(tris)
    face_part = np.concatenate(part_ids)
    cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    area = np.linalg.norm(cross, axis=1) / 2.0
    if area.sum() <= 0:
        raise ValueError(f"{obj.object_id}: zero surface area")
    face = rng.choice(len(triangles), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    points = np.einsum("nk,nkd->nd", bary, triangles[face])
    normals = cross[face] / np.maximum(np.linalg.norm(cross[face], axis=1, keepdims=True), 1e-12)
    return SurfaceSamples(points.astype(np.float32), normals.astype(np.float32), face_part[face])


def plan_object(obj: ArticulatedObject, seed: int = 0, num_configs: int = 1, num_stages: int = NUM_STAGES, num_points: int = NUM_POINTS,
                max_joints: int | None = None) -> ObjectPlan:
    """Everything about an object's states that can be computed before writing files."""
    specs = plan_specs(obj, seed, num_configs, num_stages, max_joints)
    rest_qpos = obj.zero_qpos()
    norm = compute_normalisation(obj, [s.qpos for s in specs])
    rest_world = obj.forward_kinematics(rest_qpos)
    n_mat, n_inv = norm.matrix, np.linalg.inv(norm.matrix)
    rest_inv = {link: np.linalg.inv(T) for link, T in rest_world.items()}
    states = []
    for spec in specs:
        world = obj.forward_kinematics(spec.qpos)
        poses = {link: n_mat @ world[link] @ rest_inv[link] @ n_inv for link in obj.links}
        states.append(ArticulatedState(spec, poses, obj.subtree(obj.joint(spec.joint))))
    samples = sample_surface(obj, rest_world, norm, num_points, seed)
    skipped = [(j.name, j.note) for j in obj.joints if j.kind != "fixed" and not j.movable and j.mimic is None]
    still = _invisible_joints(plan_states=states, samples=samples, obj=obj)
    skipped += [(name, reason) for name, reason in still.items()]
    states = [s for s in states if s.spec.joint not in still]
    return ObjectPlan(obj, states, norm, samples, seed, skipped)


VISIBLE_MOTION_PX = 2.0
"""A swept joint must move some surface sample by at least this many pixels of a 512 x 512
ring view between its first and last stage; otherwise its six states would look the same."""


def _pixels_per_unit(size: int = 512) -> float:
    """Pixels per canonical unit at the ring's distance (the object's centre) in a ``size`` view."""
    focal = size / (2.0 * np.tan(np.radians(cameras.FOV_Y_DEG) / 2.0))
    return focal / cameras.CAMERA_DISTANCE


def _invisible_joints(plan_states: list, samples: SurfaceSamples, obj: ArticulatedObject) -> dict[str, str]:
    """Swept joints whose largest surface-sample displacement between stage 0 and the last
    stage (configuration 0) is below ``VISIBLE_MOTION_PX`` at 512²: {joint: reason}."""
    first = {st.spec.joint: st for st in plan_states if st.spec.config == 0 and st.spec.stage == 0}
    last = {st.spec.joint: st for st in plan_states if st.spec.config == 0 and st.spec.stage == st.spec.num_stages - 1}
    out = {}
    for name, a in first.items():
        b = last.get(name)
        if b is None:
            continue
        moved = np.linalg.norm(carry_points(samples, obj, b.link_poses) - carry_points(samples, obj, a.link_poses), axis=1)
        px = float(moved.max(initial=0.0)) * _pixels_per_unit()
        if px < VISIBLE_MOTION_PX:
            out[name] = (f"its range moves the surface by at most {px:.2f} px in a 512 x 512 view (below {VISIBLE_MOTION_PX:g} px: "
                         "six identical states); not swept")
    return out


def carry_points(samples: SurfaceSamples, obj: ArticulatedObject, link_poses: dict[str, np.ndarray]) -> np.ndarray:
    """The rest samples moved to a state by their links' transforms. [N, 3] float32."""
    out = np.empty_like(samples.points)
    for k, link in enumerate(obj.links):
        sel = samples.part_id == k + 1
        if sel.any():
            T = link_poses[link]
            out[sel] = samples.points[sel] @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
    return out


def canonical_groups(obj: ArticulatedObject, link_matrices: dict[str, np.ndarray]) -> list[tuple[str, list[MeshPart]]]:
    """Per-link mesh groups transformed by ``link_matrices`` (link frame -> canonical frame)."""
    return [(link, [p.transformed(link_matrices[link]) for p in obj.geometry[link]]) for link in obj.links if link in obj.geometry]


def versions() -> dict[str, str]:
    return {
        "partdrag4d": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "trimesh": trimesh.__version__,
        "yourdfpy": version("yourdfpy"),
    }


def object_split(obj: ArticulatedObject) -> str:
    """The object's split: the real-id manifest, else the ``split`` a procedural object's
    ``meta.json`` records, else the category rule (``categories.split_of_object``)."""
    meta = read_meta(obj.source_dir) if obj.source_dir else {}
    return categories.split_of_object(obj.object_id, obj.category, meta.get("split"))


def object_record(plan: ObjectPlan, num_configs: int, root: Path | None = None) -> dict:
    obj = plan.obj
    moved_by = {link: [j.name for j in obj.movable_joints if link in obj.subtree(j)] for link in obj.links}
    return {
        "object_id": obj.object_id,
        "category": obj.category,
        "model_cat": obj.model_cat,
        "split": object_split(obj),
        "source": store.source_path(obj.source_dir, root),
        "links": [
            {"name": link, "source_name": obj.source_name("links", link), "part_id": obj.part_id(link), "semantic": obj.semantics.get(link, ""),
             "has_geometry": link in obj.geometry, "moved_by": moved_by[link]}
            for link in obj.links
        ],
        "root": obj.root,
        "joints": [{**j.to_dict(), "source_name": obj.source_name("joints", j.name)} for j in obj.joints],
        "rest_qpos": obj.zero_qpos(),
        "normalisation": plan.normalisation.to_dict(),
        "num_points": int(len(plan.samples.points)),
        "num_stages": plan.states[0].spec.num_stages if plan.states else NUM_STAGES,
        "num_configs": num_configs,
        "seed": plan.seed,
        "notes": obj.notes,
        "versions": versions(),
    }


def state_record(plan: ObjectPlan, state: ArticulatedState) -> dict:
    spec = state.spec
    joint = plan.obj.joint(spec.joint)
    return {
        "state_id": spec.state_id,
        "sequence_id": spec.sequence_id,
        "object_id": spec.object_id,
        "category": plan.obj.category,
        "split": object_split(plan.obj),
        "joint": spec.joint,
        "joint_type": joint.kind,
        "config": spec.config,
        "stage": spec.stage,
        "num_stages": spec.num_stages,
        "qpos": spec.qpos,
        "moving_links": state.moving_links,
        "moving_part_ids": [plan.obj.part_id(link) for link in state.moving_links],
        "seed": plan.seed,
        "paths": store.state_paths(spec.object_id, spec.state_id),
        "status": "ok",
    }


def write_object(plan: ObjectPlan, root: Path, num_configs: int, meshes: bool = True) -> Path:
    """Object-level files: object.json, rest.obj, textures, points.npz (atomic)."""
    obj = plan.obj
    folder = store.object_dir(root, obj.object_id)
    folder.mkdir(parents=True, exist_ok=True)
    obj.textures.write(folder / store.TEXTURES)
    rest_world = obj.forward_kinematics(obj.zero_qpos())
    n_mat = plan.normalisation.matrix
    write_obj(folder / store.REST_MESH, canonical_groups(obj, {link: n_mat @ T for link, T in rest_world.items()}), folder / store.TEXTURES)
    s = plan.samples
    store.write_object_points(folder, s.points, s.normals, s.part_id)
    store.write_object(folder, object_record(plan, num_configs, root))
    return folder


def is_state_complete(root: Path, state_id: str, meshes: bool = True) -> bool:
    folder = store.state_dir(root, state_id)
    return all((folder / n).is_file() for n in store.state_files(meshes))


def write_state(plan: ObjectPlan, state: ArticulatedState, root: Path, meshes: bool = True) -> dict:
    """A state's folder, assembled under a temporary name and renamed into place."""
    obj = plan.obj
    spec = state.spec
    record = state_record(plan, state)
    target = store.state_dir(root, spec.state_id)
    points = carry_points(plan.samples, obj, state.link_poses)
    moving_ids = np.array(record["moving_part_ids"], dtype=np.int16)
    moving = np.isin(plan.samples.part_id, moving_ids)
    previous_render = target / store.RENDER
    with store.StagingDir(target) as tmp:
        if meshes:
            rest_world = obj.forward_kinematics(obj.zero_qpos())
            n_mat = plan.normalisation.matrix
            matrices = {link: state.link_poses[link] @ n_mat @ rest_world[link] for link in obj.links}
            write_obj(tmp / store.STATE_MESH, canonical_groups(obj, matrices), store.object_dir(root, obj.object_id) / store.TEXTURES)
        state_json = dict(record)
        state_json["link_poses"] = {link: T.tolist() for link, T in state.link_poses.items()}
        store.write_state(tmp, state_json, points, moving)
        if previous_render.is_dir():  # keep renders of an unchanged state across re-articulation
            previous_render.rename(tmp / store.RENDER)
    return record


def articulate_object(
    obj: ArticulatedObject, root: Path, seed: int = 0, num_configs: int = 1, num_stages: int = NUM_STAGES,
    num_points: int = NUM_POINTS, meshes: bool = True, resume: bool = True, max_joints: int | None = None,
) -> tuple[list[dict], dict]:
    """Plan and write every state of one object. Returns (state records, timing info)."""
    t0 = time.perf_counter()
    plan = plan_object(obj, seed, num_configs, num_stages, num_points, max_joints)
    write_object(plan, root, num_configs, meshes)
    records = [
        {"object_id": obj.object_id, "category": obj.category, "joint": joint, "status": "skipped", "error": f"{obj.object_id}: joint {joint}: {reason}"}
        for joint, reason in plan.skipped
    ]
    records += [  # adjusted limits (swapped when inverted): the joint is swept, the manifest says how
        {"object_id": obj.object_id, "category": obj.category, "joint": j.name, "status": "note", "note": f"{obj.object_id}: joint {j.name}: {j.note}"}
        for j in obj.joints if (j.movable or j.mimic is not None) and j.note and j.kind != "continuous"
    ]
    records += [  # one line per visual whose mesh file does not exist (skipped, the object is kept)
        {"object_id": obj.object_id, "category": obj.category, "link": link, "file": name, "status": "note",
         "note": f"{obj.object_id}: link {link}: visual file {name!r} does not exist; skipped"}
        for link, name in obj.missing_visuals
    ]
    written = 0
    for state in plan.states:
        if resume and is_state_complete(root, state.spec.state_id, meshes) and _same_state(root, state):
            records.append(state_record(plan, state))
            continue
        records.append(write_state(plan, state, root, meshes))
        written += 1
    elapsed = time.perf_counter() - t0
    return records, {"seconds": elapsed, "states": len(plan.states), "written": written}


def _same_state(root: Path, state: ArticulatedState) -> bool:
    try:
        saved = store.read_state(root, state.spec.state_id)
    except (OSError, ValueError):
        return False
    return saved.get("qpos") == state.spec.qpos


def write_dataset_cameras(root: Path) -> None:
    store.write_dataset_cameras(
        root,
        {
            "convention": "OpenCV camera-to-world (x right, y down, z forward); see partdrag4d/cameras.py",
            "distance": cameras.CAMERA_DISTANCE,
            "height": cameras.CAMERA_HEIGHT,
            "fov_y_deg": cameras.FOV_Y_DEG,
            "azimuths_deg": list(cameras.AZIMUTHS_DEG),
            "cameras": [c.to_dict() for c in cameras.ring_cameras()],
        },
    )


def merge_manifest(root: Path, records: list[dict], replaced_objects: set[str]) -> list[dict]:
    """Replace the records of ``replaced_objects`` in the dataset manifest; keep the others."""
    kept = [r for r in store.read_manifest(root) if r.get("object_id") not in replaced_objects] if store.has_manifest(root) else []
    merged = kept + records
    store.write_manifest(root, merged)
    return merged


@dataclass
class ArticulateSummary:
    objects_ok: int = 0
    objects_failed: int = 0
    states: int = 0
    states_written: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def articulate_one(folder: Path, out: Path, seed: int, num_configs: int, num_stages: int, num_points: int,
                   meshes: bool, max_joints: int | None,
                   max_faces: int | None = None) -> tuple[str, list[dict] | None, dict | None, str | None]:
    """Articulate one object folder into ``out``: ``(object id, records, info, None)``, or
    ``(object id, None, None, reason)`` for a malformed object. Never raises for a bad object
    (a Ray task per object runs exactly this)."""
    oid = safe_id(Path(folder).name)
    try:
        obj = load_object(Path(folder), max_faces=max_faces or MAX_FACES)
        recs, info = articulate_object(obj, Path(out), seed, num_configs, num_stages, num_points, meshes, max_joints=max_joints)
    except AssetError as exc:
        return oid, None, None, str(exc)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk, not the object: stop the run, blame nobody
            raise DiskFull(f"{out}: no space left on the device while writing {oid} ({exc.strerror}); free space and rerun: "
                           "finished objects are kept") from None
        return oid, None, None, f"{oid}: {type(exc).__name__}: {exc}"
    except Exception as exc:  # one bad object never stops the others
        return oid, None, None, f"{oid}: {type(exc).__name__}: {exc}"
    return oid, recs, info, None


def articulate_folder(
    source: Path, out: Path, category: str | list[str] | None = None, limit: int | None = None, seed: int = 0,
    num_configs: int = 1, num_stages: int = NUM_STAGES, num_points: int = NUM_POINTS, ids: set[str] | None = None,
    meshes: bool = True, progress: bool = True, max_joints: int | None = None, max_faces: int | None = None,
    executor: str = "local", ray_address: str | None = None,
) -> ArticulateSummary:
    """Articulate every object under ``source`` into the dataset ``out``.

    Every sub-folder of ``source`` (hidden ones aside) becomes an object or is reported:
    a malformed object gets one line (object id + reason) on stderr and an ``error``
    record in the manifest, and nothing of it is written; the others carry on. A joint
    that cannot be swept gets a ``skipped`` record, adjusted limits a ``note`` record.
    ``executor='ray'``: one Ray task per object (``partdrag4d.executor``; ``out`` must be
    on a path every node shares); the files and the manifest are the same bytes as a
    local run's.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store.remove_stale_staging(out / "states")
    write_dataset_cameras(out)
    folders = find_objects(source)
    if ids is not None:
        folders = [f for f in folders if f.name in ids or safe_id(f.name) in ids]
    if category is not None:
        wanted = {category} if isinstance(category, str) else set(category)
        for name in wanted:
            categories.get(name)  # unknown names fail loudly
        # a folder whose category cannot be told is kept: loading it reports why
        folders = [f for f in folders if category_of(f) in wanted or category_of(f) is None]
    if limit is not None:
        folders = folders[:limit]
    summary = ArticulateSummary()
    records: list[dict] = []
    processed: set[str] = set()
    t0 = time.perf_counter()
    folders, refused = refuse_colliding_ids(folders, out)
    for folder, message in refused:
        _fail(summary, records, safe_id(folder.name), folder, message, tqdm(disable=True), out)
    args = [(folder, out, seed, num_configs, num_stages, num_points, meshes, max_joints, max_faces) for folder in folders]
    if executor == "ray":
        outcomes = map_ordered(articulate_one, args, desc="articulate", unit="obj", progress=progress, address=ray_address)
        bar = tqdm(disable=True)  # the executor's bar counts; this one only writes lines
    else:
        bar = tqdm(folders, desc="articulate", unit="obj", disable=not progress, dynamic_ncols=True)
        outcomes = (articulate_one(*a) for a in args)
    for (oid, recs, info, error), folder in zip(outcomes, folders):  # outcomes first: the generator runs to its end
        processed.add(oid)
        if executor != "ray":
            bar.update(1)
            bar.set_postfix_str(oid)
        if error is not None:
            _fail(summary, records, oid, folder, error, bar, out)
            continue
        for r in recs:
            if r["status"] == "skipped":
                bar.write(f"skipped {r['error']}", file=sys.stderr)
            elif r["status"] == "note":
                bar.write(f"note {r['note']}", file=sys.stderr)
        records.extend(recs)
        summary.objects_ok += 1
        summary.states += info["states"]
        summary.states_written += info["written"]
    bar.close()
    merge_manifest(out, records, processed)
    summary.seconds = time.perf_counter() - t0
    return summary


def refuse_colliding_ids(folders: list[Path], out: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``folders`` into those that may be articulated and ``(folder, reason)`` for the
    rest, before anything is written: a later folder is refused when its object id (its
    name made safe) is an earlier folder's, or when one of its possible sequence ids
    (``<object>_<joint>``, from the URDF's non-fixed joints) is one of an earlier folder's
    or of an object already in ``out`` that this run does not replace. Files on disk are
    keyed by these ids, so a collision would silently overwrite the first object."""
    kept: list[Path] = []
    refused: list[tuple[Path, str]] = []
    by_id: dict[str, Path] = {}
    by_sequence: dict[str, str] = {}  # <object>_<joint> -> who holds it (a folder, or an object of the dataset)
    ids = {safe_id(f.name) for f in folders}
    if store.has_manifest(out):
        for row in store.read_manifest(out):
            if row.get("status") == "ok" and row.get("object_id") not in ids:
                by_sequence.setdefault(f"{row['object_id']}_{row['joint']}", f"object {row['object_id']} already in {out}")
    for folder in folders:
        oid = safe_id(folder.name)
        if oid in by_id:
            refused.append((folder, f"{oid}: folders {by_id[oid].name!r} and {folder.name!r} both become object id {oid!r} "
                                    f"once made safe for file names; {folder.name!r} refused (rename one)"))
            continue
        sequences = [f"{oid}_{joint}" for joint in urdf_joint_names(folder)]
        clash = next((seq for seq in sequences if seq in by_sequence), None)
        if clash is not None:
            refused.append((folder, f"{oid}: its states ({clash}_c*_s*) would have the ids of {by_sequence[clash]}'s; "
                                    f"folder {folder.name!r} refused (rename one)"))
            continue
        by_id[oid] = folder
        by_sequence.update({seq: f"folder {folder.name!r}" for seq in sequences})
        kept.append(folder)
    return kept, refused


def _fail(summary: ArticulateSummary, records: list[dict], oid: str, folder: Path, message: str, bar, out: Path) -> None:
    summary.objects_failed += 1
    summary.errors.append(message)
    records.append({"object_id": oid, "source": store.source_path(folder, out), "status": "error", "error": message})
    bar.write(f"error {message}", file=sys.stderr)
