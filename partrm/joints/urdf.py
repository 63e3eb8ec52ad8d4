"""Writing the found joint as a two-link URDF a simulator loads (meshes as geometry-only OBJ,
optional collision geometry: the mesh, its convex hull or a V-HACD decomposition)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from partdrag4d import store
from partdrag4d.meshio import write_plain_obj
from partdrag4d.rigid import apply as _apply
from partrm.joints.estimate import _bbox_diagonal
from partrm.joints.records import ArticulationEstimate, PathLike


def _as_mesh(mesh: Any) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if mesh is None:
        return None
    if isinstance(mesh, (str, Path)):
        import trimesh  # lazy: see inputs.load_points

        m = trimesh.load(mesh, force="mesh", process=False)
        return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    V, F = mesh
    return np.asarray(V, np.float64), np.asarray(F, np.int64)


def _fmt(v) -> str:
    return " ".join(f"{float(x):.9g}" for x in v)


def _inertial(parent: ET.Element, center: np.ndarray, extent: np.ndarray, mass: float = 1.0) -> None:
    """Solid-box inertia of the link's extent: simulators refuse massless moving links."""
    ext = np.maximum(np.asarray(extent, np.float64), 1e-3)
    ixx = mass * (ext[1] ** 2 + ext[2] ** 2) / 12.0
    iyy = mass * (ext[0] ** 2 + ext[2] ** 2) / 12.0
    izz = mass * (ext[0] ** 2 + ext[1] ** 2) / 12.0
    inertial = ET.SubElement(parent, "inertial")
    ET.SubElement(inertial, "origin", xyz=_fmt(center), rpy="0 0 0")
    ET.SubElement(inertial, "mass", value=f"{mass:g}")
    ET.SubElement(inertial, "inertia", ixx=f"{ixx:.9g}", ixy="0", ixz="0", iyy=f"{iyy:.9g}", iyz="0", izz=f"{izz:.9g}")


COLLISION_MODES = ("none", "mesh", "hull", "vhacd")
"""``write_urdf(collision=...)``: no collision geometry; the visual mesh itself; its convex
hull (trimesh); an approximate convex decomposition (V-HACD through ``vhacdx``)."""

VHACD_OPTIONS = {"maxConvexHulls": 16, "resolution": 50000, "maxNumVerticesPerCH": 32, "asyncACD": False}
"""V-HACD settings of ``collision="vhacd"``: 16 hulls at most, synchronous (same input, same hulls)."""


def collision_meshes(mesh: tuple[np.ndarray, np.ndarray], mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Collision geometry of a link mesh for ``mode`` (see ``COLLISION_MODES``)."""
    if mode == "none":
        return []
    if mode == "mesh":
        return [mesh]
    import trimesh  # lazy: see inputs.load_points

    m = trimesh.Trimesh(mesh[0], mesh[1], process=False)
    if mode == "hull":
        hull = m.convex_hull
        return [(np.asarray(hull.vertices, np.float64), np.asarray(hull.faces, np.int64))]
    if mode == "vhacd":
        parts = trimesh.decomposition.convex_decomposition(m, **VHACD_OPTIONS)
        out = [(np.asarray(p["vertices"], np.float64), np.asarray(p["faces"], np.int64).reshape(-1, 3)) for p in parts]
        out = [p for p in out if len(p[1])]
        if out:
            return out
        hull = m.convex_hull  # V-HACD gives nothing for flat or tiny meshes
        return [(np.asarray(hull.vertices, np.float64), np.asarray(hull.faces, np.int64))]
    raise ValueError(f"collision must be one of {', '.join(COLLISION_MODES)}, got {mode!r}")


def write_urdf(estimate: ArticulationEstimate, path: PathLike, static_mesh: Any = None, moving_mesh: Any = None,
               points: Optional[np.ndarray] = None, name: str = "articulated", frame: Optional[np.ndarray] = None,
               collision: Union[str, bool] = "none", effort: float = 100.0, velocity: float = 1.0) -> Path:
    """A URDF with a ``base`` link (static part) and a ``moving`` link on one joint.

    The base link's frame is the input frame (canonical unless ``frame`` maps the
    estimate and meshes elsewhere, e.g. ``dataset_world_frame``). The joint frame sits
    at ``estimate.pivot`` with identity rotation and ``axis`` = the estimated axis;
    limits are [0, amount] (q = 0 is state A, q = amount state B). The moving link's
    geometry is the state-A geometry shifted by -pivot, so FK at q reproduces
    ``estimate.joint_transform(q)``.

    Meshes (trimesh objects, (vertices, faces) tuples or files, in state A) are written
    as geometry-only OBJs beside the URDF (``<stem>_base.obj``, ``<stem>_moving.obj``)
    and used as visuals. ``collision`` (``COLLISION_MODES``): ``"none"`` (default) adds
    no collision geometry; ``"mesh"`` the visual mesh; ``"hull"`` its convex hull;
    ``"vhacd"`` a convex decomposition (``<stem>_<link>_collision_<k>.obj``, one
    ``<collision>`` each). Simulators convexify collision meshes (MuJoCo always), so a
    concave cabinet given as ``"mesh"`` or ``"hull"`` swallows its own drawer: use
    ``"vhacd"`` for contact. ``True`` means ``"mesh"``. A link without a mesh gets a
    small box visual (and collision unless ``"none"``; 1% of the object size) at the
    centroid of its points (``points``: state A's points with ``estimate.moving_mask``
    over them), so viewers that need geometry have some; every link gets a box inertia
    (mass 1) because simulators reject massless moving links.

    The robot carries MuJoCo's ``<mujoco><compiler discardvisual="false"/></mujoco>``
    extension (other URDF readers ignore it): without it MuJoCo drops visual-only
    geometry and the loaded model has no geoms.
    """
    collision = _collision_mode(collision)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    est, meshes, link_points = _link_geometry(estimate, static_mesh, moving_mesh, points, frame)
    everything = [x for x in [*link_points.values(), *(m[0] for m in meshes.values() if m is not None)] if x is not None and len(x)]
    size = _bbox_diagonal(np.concatenate(everything)) if everything else 1.0
    robot = ET.Element("robot", name=name)
    ET.SubElement(ET.SubElement(robot, "mujoco"), "compiler", discardvisual="false")
    for link_name in ("base", "moving"):
        _link_element(robot, path, link_name, meshes[link_name], link_points[link_name], est, size, collision)
    _joint_element(robot, est, effort, velocity)
    ET.indent(robot)
    store.atomic_write_text(path, '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode") + "\n")
    return path


def _collision_mode(collision: Union[str, bool, None]) -> str:
    """``write_urdf``'s ``collision`` as one of ``COLLISION_MODES`` (True: "mesh"; False/None: "none")."""
    if collision is True:
        collision = "mesh"
    elif collision is False or collision is None:
        collision = "none"
    if collision not in COLLISION_MODES:
        raise ValueError(f"collision must be one of {', '.join(COLLISION_MODES)}, got {collision!r}")
    return collision


def _link_geometry(estimate: ArticulationEstimate, static_mesh: Any, moving_mesh: Any, points: Optional[np.ndarray],
                   frame: Optional[np.ndarray]) -> tuple[ArticulationEstimate, dict, dict]:
    """The estimate in the output frame, and each link's mesh and points in its own frame
    (base = the output frame, moving = shifted by -pivot)."""
    est = estimate
    meshes = {"base": _as_mesh(static_mesh), "moving": _as_mesh(moving_mesh)}
    pts = None if points is None else np.asarray(points, np.float64)
    if pts is not None and len(pts) != len(est.moving_mask):
        raise ValueError(f"points ({len(pts)}) do not match the estimate's mask ({len(est.moving_mask)})")
    if frame is not None:
        M = np.asarray(frame, np.float64)
        est = est.transformed(M)
        meshes = {k: None if m is None else (_apply(M, m[0]), m[1]) for k, m in meshes.items()}
        pts = None if pts is None else _apply(M, pts)
    pivot = est.pivot
    link_points: dict[str, Optional[np.ndarray]] = {"base": None, "moving": None}
    if pts is not None:
        link_points = {"base": pts[~est.moving_mask], "moving": pts[est.moving_mask] - pivot}
    if meshes["moving"] is not None:
        meshes["moving"] = (meshes["moving"][0] - pivot, meshes["moving"][1])
    return est, meshes, link_points


def _link_element(robot: ET.Element, path: Path, link_name: str, mesh: Optional[tuple[np.ndarray, np.ndarray]],
                  p: Optional[np.ndarray], est: ArticulationEstimate, size: float, collision: str) -> None:
    """One ``<link>``: box inertia, and the mesh's visual and collision geometry (files beside
    ``path``) or, without a mesh, a small marker box at the centroid of its points."""
    link = ET.SubElement(robot, "link", name=link_name)
    geom_pts = mesh[0] if mesh is not None else p
    if geom_pts is not None and len(geom_pts):
        lo, hi = geom_pts.min(0), geom_pts.max(0)
        center, extent = (lo + hi) / 2.0, hi - lo
    else:
        center = (est.centroid - est.pivot) if link_name == "moving" else np.zeros(3)
        extent = np.full(3, 0.01 * size)
    _inertial(link, center, extent)
    for stale in path.parent.glob(f"{path.stem}_{link_name}_collision_*.obj"):  # of an earlier run
        stale.unlink()
    if mesh is None:
        marker = p.mean(0) if p is not None and len(p) else center
        for tag in ["visual"] + (["collision"] if collision != "none" else []):
            el = ET.SubElement(link, tag)
            ET.SubElement(el, "origin", xyz=_fmt(marker), rpy="0 0 0")
            ET.SubElement(ET.SubElement(el, "geometry"), "box", size=_fmt(np.full(3, 0.01 * size)))
        return
    mesh_name = f"{path.stem}_{link_name}.obj"
    write_plain_obj(path.parent / mesh_name, *mesh)
    shapes = [("visual", mesh_name)]
    parts = collision_meshes(mesh, collision)
    if collision == "mesh":
        shapes.append(("collision", mesh_name))
    else:
        for k, part in enumerate(parts):
            part_name = f"{path.stem}_{link_name}_collision_{k}.obj"
            write_plain_obj(path.parent / part_name, *part)
            shapes.append(("collision", part_name))
    for tag, filename in shapes:
        el = ET.SubElement(link, tag)
        ET.SubElement(el, "origin", xyz="0 0 0", rpy="0 0 0")
        ET.SubElement(ET.SubElement(el, "geometry"), "mesh", filename=filename)


def _joint_element(robot: ET.Element, est: ArticulationEstimate, effort: float, velocity: float) -> None:
    """The one ``<joint>``: base to moving, frame at the pivot, limits [0, amount]."""
    joint = ET.SubElement(robot, "joint", name="joint_0", type=est.joint_type)
    ET.SubElement(joint, "parent", link="base")
    ET.SubElement(joint, "child", link="moving")
    ET.SubElement(joint, "origin", xyz=_fmt(est.pivot), rpy="0 0 0")
    ET.SubElement(joint, "axis", xyz=_fmt(est.axis))
    lo, hi = est.limits()
    ET.SubElement(joint, "limit", lower=f"{lo:.9g}", upper=f"{hi:.9g}", effort=f"{effort:g}", velocity=f"{velocity:g}")
