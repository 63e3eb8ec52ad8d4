"""Read one PartNet-Mobility object folder (real or synthetic) into an ``ArticulatedObject``.

Folder format as the dataset ships it: ``mobility.urdf``, ``mobility_v2.json``,
``meta.json`` (``model_cat``), ``semantics.txt``, ``textured_objs/*.obj`` + ``.mtl``
with textures in ``../images/``, ``point_sample/``.

The URDF is parsed by yourdfpy after a hardened pre-parse (no DTDs, no entities, no
network) and meshes are loaded with trimesh through a resolver that may read anything
inside the object folder and nothing outside it: trimesh >= 5 would otherwise refuse
the ``../images/`` texture paths and silently drop the textures.
"""

from __future__ import annotations

import io
import json
import math
import re
import unicodedata
from pathlib import Path

import numpy as np
import trimesh
import yourdfpy
from lxml import etree

from partdrag4d import categories
from partdrag4d.assets.articulated import CONTINUOUS_RANGE, ArticulatedObject, AssetError, Joint
from partdrag4d.meshio import Material, MeshPart, TextureStore

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(name: str) -> str:
    """A file-system and OBJ-safe identifier for a folder or link name (ASCII, no spaces)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = _SAFE.sub("_", ascii_name).strip("._")
    return cleaned or "unnamed"


class ObjectFolderResolver(trimesh.resolvers.Resolver):
    """Resolves paths relative to ``base`` but only inside ``root`` (the object folder)."""

    def __init__(self, base: Path, root: Path):
        self.base = Path(base)
        self.root = Path(root).resolve()
        self.served: dict[str, Path] = {}

    def resolve(self, name: str) -> Path:
        path = (self.base / name.strip()).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"path {name!r} escapes the object folder")
        return path

    def get(self, name: str) -> bytes:
        path = self.resolve(name)
        if not path.is_file():
            raise FileNotFoundError(name)
        self.served[name] = path
        return path.read_bytes()

    def keys(self):
        return iter(())

    def write(self, name, data):
        raise PermissionError("read-only resolver")

    def namespaced(self, namespace):
        return ObjectFolderResolver(self.base / namespace, self.root)


def _parse_mtl_textures(obj_path: Path, resolver: ObjectFolderResolver) -> dict[str, Path]:
    """Material name -> texture file of the ``map_Kd`` lines of the OBJ's material libraries."""
    textures: dict[str, Path] = {}
    try:
        head = obj_path.read_text(errors="replace")
    except OSError:
        return textures
    for line in head.splitlines():
        if not line.startswith("mtllib"):
            continue
        for lib in line.split(None, 1)[1:]:
            try:
                mtl_path = resolver.resolve(lib.strip())
                text = mtl_path.read_text(errors="replace")
            except (OSError, ValueError):
                continue
            current = None
            for mline in text.splitlines():
                parts = mline.strip().split()
                if not parts:
                    continue
                if parts[0] == "newmtl" and len(parts) > 1:
                    current = " ".join(parts[1:])
                elif parts[0] == "map_Kd" and current is not None and len(parts) > 1:
                    try:
                        tex = (mtl_path.parent / parts[-1]).resolve()
                        if tex.is_relative_to(resolver.root) and tex.is_file():
                            textures[current] = tex
                    except OSError:
                        pass
    return textures


class _MaterialTable:
    """Deduplicates materials across all of an object's mesh files and names them uniquely."""

    def __init__(self, textures: TextureStore):
        self.textures = textures
        self.by_key: dict[tuple, Material] = {}
        self.texture_by_file: dict[Path, str] = {}

    def material(self, diffuse, texture_file: Path | None, image, specular: float, roughness: float) -> Material:
        texture = None
        if texture_file is not None:
            if texture_file not in self.texture_by_file:
                self.texture_by_file[texture_file] = self.textures.add_bytes(texture_file.read_bytes(), texture_file.suffix or ".png")
            texture = self.texture_by_file[texture_file]
        elif image is not None:
            texture = self.textures.add_image(image)
        key = (tuple(round(float(c), 4) for c in diffuse), texture, round(specular, 3), round(roughness, 3))
        if key not in self.by_key:
            self.by_key[key] = Material(f"mat_{len(self.by_key):03d}", key[0], texture, specular, roughness)
        return self.by_key[key]


def _material_of(geom: trimesh.Trimesh, table: _MaterialTable, mtl_textures: dict[str, Path]) -> tuple[Material, np.ndarray | None]:
    visual = geom.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.material is not None:
        mat = visual.material
        if isinstance(mat, trimesh.visual.material.PBRMaterial):
            mat = mat.to_simple()
        diffuse = np.asarray(getattr(mat, "diffuse", [204, 204, 204, 255]), dtype=np.float64)[:3] / 255.0
        image = getattr(mat, "image", None)
        uv = visual.uv if visual.uv is not None and len(visual.uv) == len(geom.vertices) else None
        texture_file = mtl_textures.get(getattr(mat, "name", None)) if image is not None else None
        if uv is None:
            image, texture_file = None, None
        ks = np.asarray(getattr(mat, "specular", [25, 25, 25, 255]), dtype=np.float64)[:3].mean() / 255.0
        shininess = float(getattr(mat, "glossiness", None) or 30.0)
        roughness = float(np.clip(1.0 - shininess / 250.0, 0.05, 1.0))
        material = table.material(diffuse, texture_file, image, float(ks), roughness)
        return material, (np.asarray(uv, dtype=np.float64) if material.texture else None)
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind is not None:
        colors = np.asarray(visual.face_colors, dtype=np.float64)[:, :3] / 255.0
        return table.material(colors.mean(axis=0), None, None, 0.1, 0.6), None
    return table.material((0.8, 0.8, 0.8), None, None, 0.1, 0.6), None


def _load_mesh_file(
    object_id: str, path: Path, root: Path, transform: np.ndarray, table: _MaterialTable
) -> list[MeshPart]:
    resolver = ObjectFolderResolver(path.parent, root)
    try:
        loaded = trimesh.load(path, resolver=resolver, process=False)
    except Exception as exc:  # trimesh raises many kinds on bad files
        raise AssetError(object_id, f"cannot read mesh {path.name}: {exc}") from exc
    if isinstance(loaded, trimesh.Scene):
        geoms = []
        for node in loaded.graph.nodes_geometry:
            node_transform, geom_name = loaded.graph[node]
            g = loaded.geometry[geom_name]
            if isinstance(g, trimesh.Trimesh):
                geoms.append((g, node_transform))
    elif isinstance(loaded, trimesh.Trimesh):
        geoms = [(loaded, np.eye(4))]
    else:
        geoms = []
    mtl_textures = _parse_mtl_textures(path, resolver)
    parts = []
    for geom, node_transform in geoms:
        if len(geom.faces) == 0:
            continue
        vertices = np.asarray(geom.vertices, dtype=np.float64)
        if not np.isfinite(vertices).all():
            raise AssetError(object_id, f"mesh {path.name} has NaN or infinite vertices")
        material, uv = _material_of(geom, table, mtl_textures)
        part = MeshPart(vertices, np.asarray(geom.faces, dtype=np.int64), material, uv)
        parts.append(part.transformed(transform @ node_transform))
    if not parts:
        raise AssetError(object_id, f"mesh {path.name} is empty (no faces)")
    return parts


def drop_duplicate_faces(parts: list[MeshPart]) -> list[MeshPart]:
    """Remove faces that repeat another face of the link (same three corners, either
    winding). PartNet-Mobility meshes store most faces twice, once per orientation: in a
    path tracer the coincident twin shadows every light ray, so such parts render black.
    Of twins, a textured face is kept over an untextured one, then the earlier one."""
    keys = []
    order_parts = sorted(range(len(parts)), key=lambda k: (parts[k].material.texture is None, k))
    for k in order_parts:
        part = parts[k]
        tri = np.round(part.vertices[part.faces], 6)  # [F, 3, 3]
        order = np.lexsort((tri[:, :, 2], tri[:, :, 1], tri[:, :, 0]), axis=1)
        keys.append(np.take_along_axis(tri, order[:, :, None], axis=1).reshape(len(tri), 9))
    if not keys:
        return parts
    all_keys = np.ascontiguousarray(np.concatenate(keys))
    _, first = np.unique(all_keys.view(np.dtype((np.void, all_keys.dtype.itemsize * 9))).ravel(), return_index=True)
    keep = np.zeros(len(all_keys), bool)
    keep[first] = True
    kept: dict[int, MeshPart] = {}
    start = 0
    for k, key in zip(order_parts, keys):
        part = parts[k]
        mask = keep[start : start + len(key)]
        start += len(key)
        if mask.all():
            kept[k] = part
        elif mask.any():
            kept[k] = MeshPart(part.vertices, part.faces[mask], part.material, part.uv, part.normals)
    return [kept[k] for k in sorted(kept)]


def _check_xml(object_id: str, urdf_path: Path) -> bytes:
    data = urdf_path.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise AssetError(object_id, "mobility.urdf declares a DTD/entities (XML entity expansion refused)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise AssetError(object_id, f"mobility.urdf is not well-formed XML: {exc}") from exc
    return data


def _joint_record(object_id: str, j) -> Joint:
    kind = j.type
    if kind not in ("revolute", "prismatic", "continuous", "fixed"):
        raise AssetError(object_id, f"joint {j.name} has unsupported type {kind!r}")
    origin = np.asarray(j.origin if j.origin is not None else np.eye(4), dtype=np.float64)
    axis = np.asarray(j.axis if j.axis is not None else (1.0, 0.0, 0.0), dtype=np.float64)
    if not (np.isfinite(origin).all() and np.isfinite(axis).all()):
        raise AssetError(object_id, f"joint {j.name} has a non-finite origin or axis")
    norm = float(np.linalg.norm(axis))
    if kind != "fixed" and norm < 1e-9:
        raise AssetError(object_id, f"joint {j.name} has a zero axis")
    axis = axis / norm if norm > 0 else axis
    if kind == "fixed":
        return Joint(j.name, kind, j.parent, j.child, origin, axis)
    if kind == "continuous":
        return Joint(j.name, kind, j.parent, j.child, origin, axis, *CONTINUOUS_RANGE, note="continuous: range [0, 5/3 pi]")
    if j.limit is None or j.limit.lower is None or j.limit.upper is None:
        raise AssetError(object_id, f"{kind} joint {j.name} has no limits")
    lower, upper = float(j.limit.lower), float(j.limit.upper)
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise AssetError(object_id, f"joint {j.name} has non-finite limits")
    note = ""
    if lower > upper:
        lower, upper = upper, lower
        note = "limits flipped in the URDF (lower > upper); swapped"
    if lower == upper:
        note = "lower == upper: the joint cannot move"
    return Joint(j.name, kind, j.parent, j.child, origin, axis, lower, upper, note)


def _topological(object_id: str, joints: list[Joint], links: list[str]) -> tuple[str, list[Joint]]:
    children = [j.child for j in joints]
    if len(set(children)) != len(children):
        raise AssetError(object_id, "a link has more than one parent joint")
    roots = [link for link in links if link not in children]
    if len(roots) != 1:
        raise AssetError(object_id, f"expected one root link, found {len(roots)}")
    ordered, placed = [], {roots[0]}
    pending = list(joints)
    while pending:
        ready = [j for j in pending if j.parent in placed]
        if not ready:
            raise AssetError(object_id, "joints do not form a tree rooted at " + roots[0])
        for j in ready:
            ordered.append(j)
            placed.add(j.child)
            pending.remove(j)
    return roots[0], ordered


def read_meta(folder: Path) -> dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def load_object(folder: Path, category: str | None = None) -> ArticulatedObject:
    """Load one object folder. Raises ``AssetError`` (object id + reason) on bad input."""
    folder = Path(folder)
    object_id = safe_id(folder.name)
    urdf_path = folder / "mobility.urdf"
    if not urdf_path.is_file():
        raise AssetError(object_id, "no mobility.urdf in the folder")
    meta = read_meta(folder)
    model_cat = str(meta.get("model_cat", ""))
    if category is None:
        category = categories.from_model_cat(model_cat) if model_cat else None
        if category is None:
            raise AssetError(object_id, f"unknown category (meta.json model_cat={model_cat!r})")
    data = _check_xml(object_id, urdf_path)
    try:
        urdf = yourdfpy.URDF.load(
            io.BytesIO(data), build_scene_graph=False, load_meshes=False, load_collision_meshes=False, mesh_dir=str(folder)
        )
    except Exception as exc:
        raise AssetError(object_id, f"cannot parse mobility.urdf: {exc}") from exc
    robot = urdf.robot
    links = [link.name for link in robot.links]
    if len(set(links)) != len(links):
        raise AssetError(object_id, "duplicate link names")
    joints = [_joint_record(object_id, j) for j in robot.joints]
    for j in joints:
        if j.parent not in links or j.child not in links:
            raise AssetError(object_id, f"joint {j.name} names a missing link")
    root, joints = _topological(object_id, joints, links)

    textures = TextureStore()
    table = _MaterialTable(textures)
    folder_root = folder.resolve()
    geometry: dict[str, list] = {}
    for link in robot.links:
        parts = []
        for visual in link.visuals:
            mesh = visual.geometry.mesh if visual.geometry is not None else None
            if mesh is None:
                continue  # primitive visuals do not occur in PartNet-Mobility
            mesh_path = (folder / mesh.filename).resolve()
            if not mesh_path.is_relative_to(folder_root):
                raise AssetError(object_id, f"mesh path {mesh.filename!r} escapes the object folder")
            if not mesh_path.is_file():
                raise AssetError(object_id, f"missing mesh file {mesh.filename!r}")
            transform = np.asarray(visual.origin if visual.origin is not None else np.eye(4), dtype=np.float64)
            if mesh.scale is not None:
                transform = transform @ np.diag(list(np.broadcast_to(np.asarray(mesh.scale, float), (3,))) + [1.0])
            parts.extend(_load_mesh_file(object_id, mesh_path, folder_root, transform, table))
        if parts:
            geometry[link.name] = drop_duplicate_faces(parts)

    if not geometry:
        raise AssetError(object_id, "the object has no visual geometry")
    notes = [f"{j.name}: {j.note}" for j in joints if j.note]
    if not any(j.movable for j in joints):
        degenerate = [j.name for j in joints if j.kind != "fixed"]
        reason = "no movable joint" + (f" (joints with lower == upper: {', '.join(degenerate)})" if degenerate else "")
        raise AssetError(object_id, reason)
    return ArticulatedObject(
        object_id=object_id,
        category=category,
        model_cat=model_cat,
        source_dir=folder,
        links=links,
        root=root,
        joints=joints,
        geometry=geometry,
        semantics=read_semantics(folder),
        textures=textures,
        notes=notes,
    )


def read_semantics(folder: Path) -> dict[str, str]:
    """``semantics.txt``: ``link_name joint_type label`` per line -> {link: label}."""
    path = Path(folder) / "semantics.txt"
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = parts[2]
    return out


def find_objects(source: Path) -> list[Path]:
    """Object folders under ``source``: the folder itself, or its sub-folders with a mobility.urdf."""
    source = Path(source)
    if (source / "mobility.urdf").exists():
        return [source]
    return sorted((p for p in source.iterdir() if p.is_dir() and (p / "mobility.urdf").exists()), key=lambda p: p.name)
