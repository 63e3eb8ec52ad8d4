"""Read one PartNet-Mobility object folder (real or synthetic) into an ``ArticulatedObject``.

Folder format as the dataset ships it: ``mobility.urdf``, ``mobility_v2.json``,
``meta.json`` (``model_cat``), ``semantics.txt``, ``textured_objs/*.obj`` + ``.mtl``
with textures in ``../images/``, ``point_sample/``.

The URDF is parsed by yourdfpy after a hardened pre-parse (no DTDs, no entities, no
network) and meshes are loaded with trimesh through a resolver that may read anything
inside the object folder and nothing outside it: trimesh >= 5 would otherwise refuse
the ``../images/`` texture paths and silently drop the textures.

What is refused (``AssetError``, one line: object id + reason) before anything is
written: no/unreadable ``mobility.urdf`` or ``meta.json``, XML with a DTD or entities,
a joint graph that is not one tree (two roots, a cycle, two parents), a mesh or
texture path that leaves the object folder (symlinks included), a missing, empty or
non-finite mesh, face indices out of range, more than ``max_faces`` faces, a texture
that is not an image or is larger than PIL's decompression-bomb limit. Joints whose
limits cannot be swept (see :func:`check_joint_ranges`) are kept at 0 and reported as
skipped joints instead.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import trimesh
import yourdfpy
from lxml import etree
from PIL import Image, UnidentifiedImageError

from partdrag4d import categories, store
from partdrag4d.assets.articulated import CONTINUOUS_RANGE, ArticulatedObject, AssetError, Joint
from partdrag4d.errors import BadInput
from partdrag4d.meshio import Material, MeshPart, TextureStore

MAX_FACES = 2_000_000
"""Default limit on an object's faces (all its mesh files together); ``--max-faces``."""
MAX_REVOLUTE_SPAN = 2.0 * math.pi
"""A revolute joint may sweep at most one full turn ..."""
MAX_REVOLUTE_LIMIT = 4.0 * math.pi
"""... with both limits within two turns of the rest pose."""
PRISMATIC_SIZE_FACTOR = 2.0
"""A prismatic joint's limits (and their span) may be at most this many times the
diagonal of the object's rest-pose bounding box."""


def safe_id(name: str) -> str:
    """An object, link or joint name as the token that reaches files (``store.safe_name``)."""
    return store.safe_name(name)


def read_input(object_id: str, path: Path, limit: int = store.INPUT_LIMIT) -> bytes:
    """A small input file's bytes, only if it is a regular file within ``limit``
    (``store.read_regular_file``): a named pipe or device never blocks or floods the run."""
    try:
        return store.read_regular_file(path, limit)
    except BadInput as exc:
        raise AssetError(object_id, str(exc)) from None


def inside_folder(path: Path, root: Path, name: str | None = None) -> Path:
    """``path`` resolved (symlinks followed); ``ValueError`` if that leaves ``root``."""
    name = str(name if name is not None else path)
    resolved = Path(path).resolve()
    if resolved.is_relative_to(root):
        return resolved
    lexical = Path(os.path.normpath(os.path.abspath(path)))
    if lexical.is_relative_to(root):
        raise ValueError(f"path {name!r} is a symlink pointing outside the object folder (to {resolved})")
    raise ValueError(f"path {name!r} escapes the object folder")


class ObjectFolderResolver(trimesh.resolvers.Resolver):
    """Resolves paths relative to ``base`` but only inside ``root`` (the object folder)."""

    def __init__(self, base: Path, root: Path):
        self.base = Path(base)
        self.root = Path(root).resolve()
        self.served: dict[str, Path] = {}

    def resolve(self, name: str) -> Path:
        return inside_folder(self.base / name.strip(), self.root, name)

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


def _parse_mtl_textures(object_id: str, obj_path: Path, resolver: ObjectFolderResolver, checked: set[Path]) -> dict[str, Path]:
    """Material name -> texture file of the ``map_Kd`` lines of the OBJ's material libraries.

    A library or texture path that leaves the object folder, or a texture that is not a
    readable image within PIL's decompression-bomb limit, is an ``AssetError``; a missing
    library or texture file is left to trimesh (the material keeps its colour)."""
    textures: dict[str, Path] = {}
    try:
        head = read_input(object_id, obj_path, limit=1 << 62).decode("utf-8", "replace")
    except OSError:
        return textures
    for line in head.splitlines():
        if not line.startswith("mtllib"):
            continue
        for lib in line.split(None, 1)[1:]:
            try:
                mtl_path = resolver.resolve(lib.strip())
            except ValueError as exc:
                raise AssetError(object_id, f"material library of {obj_path.name}: {exc}") from None
            try:
                text = read_input(object_id, mtl_path).decode("utf-8", "replace")
            except OSError:
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
                        tex = inside_folder(mtl_path.parent / parts[-1], resolver.root, parts[-1])
                    except ValueError as exc:
                        raise AssetError(object_id, f"texture of {mtl_path.name}: {exc}") from None
                    if tex.is_file():
                        if tex not in checked:
                            check_texture(object_id, tex, resolver.root)
                            checked.add(tex)
                        textures[current] = tex
    return textures


def check_texture(object_id: str, path: Path, root: Path) -> None:
    """``AssetError`` unless ``path`` is an image PIL can read within its pixel limit
    (``PIL.Image.MAX_IMAGE_PIXELS``); only the header is decoded plus PIL's ``verify``."""
    name = os.path.relpath(path, root)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the size
            with Image.open(path) as im:
                width, height = im.size
                too_large = limit is not None and width * height > limit
                if not too_large:
                    im.verify()
    except Image.DecompressionBombError as exc:
        raise AssetError(object_id, f"texture {name} is a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise AssetError(object_id, f"texture {name} is not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise AssetError(object_id, f"texture {name} is a damaged image ({str(exc).strip() or type(exc).__name__})") from None
    if too_large:
        raise AssetError(object_id, f"texture {name} is {width} x {height} pixels, over the decompression-bomb "
                                    f"limit of {limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS)")


class _MaterialTable:
    """Deduplicates materials across all of an object's mesh files and names them uniquely."""

    def __init__(self, textures: TextureStore):
        self.textures = textures
        self.by_key: dict[tuple, Material] = {}
        self.texture_by_file: dict[Path, str] = {}
        self.checked_textures: set[Path] = set()

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


def _too_many_faces(limit: int, counted: int, name: str) -> str:
    return f"the meshes have at least {counted:,} faces (counted up to {name}), over the limit of {limit:,} faces (--max-faces)"


def count_obj_faces(path: Path, stop_above: int | None = None) -> int:
    """Face (``f``) lines of an OBJ file, read in 8 MB chunks without parsing; stops
    early once the count passes ``stop_above`` (a huge file is refused without reading it all)."""
    count, previous = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            window = previous + chunk
            count += window.count(b"\nf ") + window.count(b"\nf\t")
            previous = chunk[-1:]
            if stop_above is not None and count > stop_above:
                break
    return count


def _load_mesh_file(
    object_id: str, path: Path, root: Path, transform: np.ndarray, table: _MaterialTable
) -> list[MeshPart]:
    resolver = ObjectFolderResolver(path.parent, root)
    mtl_textures = _parse_mtl_textures(object_id, path, resolver, table.checked_textures)  # before trimesh opens any image
    try:
        loaded = trimesh.load(path, resolver=resolver, process=False)
    except IndexError as exc:
        raise AssetError(object_id, f"mesh {path.name} has face indices out of range ({exc})") from None
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
    parts = []
    for geom, node_transform in geoms:
        if len(geom.faces) == 0:
            continue
        vertices = np.asarray(geom.vertices, dtype=np.float64)
        if not np.isfinite(vertices).all():
            raise AssetError(object_id, f"mesh {path.name} has NaN or infinite vertices")
        faces = np.asarray(geom.faces)
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise AssetError(object_id, f"mesh {path.name} has face indices out of range "
                                        f"(index {int(faces.max()) + 1}, {len(vertices)} vertices)")
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


def _check_xml(object_id: str, data: bytes) -> bytes:
    """The URDF re-serialised as UTF-8 after a hardened parse, or ``AssetError``.

    The DTD/entity refusal looks at the parsed document, not the raw bytes, so no declared
    encoding (UTF-16, UTF-32, EBCDIC...) can hide a ``<!DOCTYPE`` or ``<!ENTITY``; entities
    are never resolved, nothing is fetched. yourdfpy then reads the clean UTF-8 bytes."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise AssetError(object_id, f"mobility.urdf is not well-formed XML: {exc}") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None or any(True for _ in root.iter(etree.Entity)):
        raise AssetError(object_id, "mobility.urdf declares a DTD/entities (XML entity expansion refused)")
    return etree.tostring(root, encoding="utf-8", xml_declaration=True)


def urdf_joint_names(folder: Path) -> list[str]:
    """The non-fixed joint names of a folder's URDF as tokens (``safe_name``), read cheaply
    before any mesh: what the object's state ids could be built from. [] when the URDF cannot
    be read (loading the object then reports why)."""
    try:
        root = etree.fromstring(_check_xml("", read_input("", Path(folder) / "mobility.urdf")))
    except (OSError, AssetError):
        return []
    return [safe_id(j.get("name", "")) for j in root.iter("joint") if j.get("type") != "fixed"]


def _safe_names(object_id: str, kind: str, names: list[str]) -> dict[str, str]:
    """{original: token} for an object's link or joint names; ``AssetError`` for a repeated
    name or two names that become one token."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise AssetError(object_id, f"two {kind}s are named {name!r}")
        seen.add(name)
    for token, group in store.name_collisions(names).items():
        raise AssetError(object_id, f"{kind}s {group[0]!r} and {group[1]!r} both become {token!r} once made "
                                    "safe for file names; rename one")
    return {name: safe_id(name) for name in names}


def _check_mimics(object_id: str, joints: list[Joint]) -> None:
    """A mimic joint must follow a movable joint that itself follows nobody."""
    by_name = {j.name: j for j in joints}
    for j in joints:
        if j.mimic is None:
            continue
        leader = by_name.get(j.mimic[0])
        if leader is None:
            raise AssetError(object_id, f"joint {j.name} mimics joint {j.mimic[0]!r}, which does not exist")
        if leader.mimic is not None or leader.kind not in ("revolute", "prismatic", "continuous"):
            raise AssetError(object_id, f"joint {j.name} mimics joint {leader.name}, which is not a movable joint of its own "
                                        "(mimic chains are not followed)")


MAX_SCALE = 1000.0
"""A visual's ``scale`` component outside [1/MAX_SCALE, MAX_SCALE] (in magnitude) is refused."""
MAX_LINK_EXTENT_RATIO = 1000.0
"""A link whose rest-pose extent is this many times the median link's is refused."""


def _held(j, kind: str, origin: np.ndarray, axis: np.ndarray, reason: str) -> Joint:
    """A joint that cannot be swept: kept at 0 (the pose the meshes were modelled in) and
    reported as a skipped joint with ``reason``."""
    return Joint(j.name, kind, j.parent, j.child, origin, axis, 0.0, 0.0, f"{reason}; held at 0")


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
    if j.mimic is not None:  # follows its leader: never swept or drawn on its own
        multiplier = 1.0 if j.mimic.multiplier is None else float(j.mimic.multiplier)
        offset = 0.0 if j.mimic.offset is None else float(j.mimic.offset)
        if not (math.isfinite(multiplier) and math.isfinite(offset)):
            raise AssetError(object_id, f"joint {j.name} mimics {j.mimic.joint} with a non-finite multiplier or offset")
        return Joint(j.name, kind, j.parent, j.child, origin, axis, 0.0, 0.0, f"follows joint {j.mimic.joint} (mimic)",
                     mimic=(j.mimic.joint, multiplier, offset))
    if kind == "continuous":
        return Joint(j.name, kind, j.parent, j.child, origin, axis, *CONTINUOUS_RANGE, note="continuous: range [0, 5/3 pi]")
    if j.limit is None or j.limit.lower is None or j.limit.upper is None:
        return _held(j, kind, origin, axis, f"{kind} joint without lower/upper limits")
    lower, upper = float(j.limit.lower), float(j.limit.upper)
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return _held(j, kind, origin, axis, f"limits are not finite (lower={lower:g}, upper={upper:g})")
    note = ""
    if lower > upper:
        lower, upper = upper, lower
        note = f"limits flipped in the URDF (lower {upper:g} > upper {lower:g}); swapped"
    if lower == upper:
        note = "lower == upper: the joint cannot move"
    return Joint(j.name, kind, j.parent, j.child, origin, axis, lower, upper, note)


def check_joint_ranges(joints: list[Joint], size: float) -> list[Joint]:
    """Joints whose range cannot be swept sensibly are held at 0 with the reason.

    Revolute: a span of at most a full turn (2 pi) and both limits within two turns
    (4 pi) of the rest pose. Prismatic: both limits and the span at most
    ``PRISMATIC_SIZE_FACTOR`` x ``size`` (the diagonal of the object's rest-pose bounding
    box, in the URDF's units). Fixed, continuous and already held joints pass unchanged.
    """
    out = []
    for j in joints:
        span = j.upper - j.lower
        reason = None
        if j.kind == "revolute" and j.movable:
            if span > MAX_REVOLUTE_SPAN * (1 + 1e-9):
                reason = f"revolute range [{j.lower:g}, {j.upper:g}] rad spans more than a full turn (2 pi)"
            elif max(abs(j.lower), abs(j.upper)) > MAX_REVOLUTE_LIMIT:
                reason = f"revolute limits [{j.lower:g}, {j.upper:g}] rad lie beyond two turns (4 pi) of the rest pose"
        elif j.kind == "prismatic" and j.movable:
            bound = PRISMATIC_SIZE_FACTOR * size
            if max(abs(j.lower), abs(j.upper), span) > bound:
                reason = (f"prismatic range [{j.lower:g}, {j.upper:g}] is far beyond the object's size "
                          f"(limit {PRISMATIC_SIZE_FACTOR:g} x its {size:.3g} bounding-box diagonal = {bound:.3g})")
        if reason is None:
            out.append(j)
        else:
            out.append(Joint(j.name, j.kind, j.parent, j.child, j.origin, j.axis, 0.0, 0.0, f"{reason}; held at 0"))
    return out


def _topological(object_id: str, joints: list[Joint], links: list[str]) -> tuple[str, list[Joint]]:
    parents: dict[str, list[str]] = {}
    for j in joints:
        parents.setdefault(j.child, []).append(j.name)
    for child, names in parents.items():
        if len(names) > 1:
            raise AssetError(object_id, f"link {child} has more than one parent joint ({', '.join(names)})")
    roots = [link for link in links if link not in parents]
    if len(roots) > 1:
        shown = ", ".join(roots[:5]) + (", ..." if len(roots) > 5 else "")
        raise AssetError(object_id, f"the joints leave {len(roots)} root links ({shown}); a URDF is one tree with one root")
    parent_of = {j.child: j for j in joints}
    for start in links:  # a cycle has no root: walk up from each link until a link repeats
        seen, link = [], start
        while link in parent_of and link not in seen:
            seen.append(link)
            link = parent_of[link].parent
        if link in seen:
            cycle = seen[seen.index(link):] + [link]
            raise AssetError(object_id, "joint cycle: " + " -> ".join(reversed(cycle)))
    if not roots:
        raise AssetError(object_id, "no root link (every link has a parent joint)")
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
    """``meta.json`` as a dict, or {} when it is missing or unreadable (see :func:`load_meta`)."""
    try:
        return load_meta(folder)
    except ValueError:
        return {}


def load_meta(folder: Path, object_id: str | None = None) -> dict:
    """``meta.json`` as a dict ({} when there is none); ``AssetError`` when it cannot be read."""
    object_id = object_id or safe_id(Path(folder).name)
    path = Path(folder) / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(read_input(object_id, path, limit=1 << 20))
    except OSError as exc:
        raise AssetError(object_id, f"cannot read meta.json ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AssetError(object_id, f"meta.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise AssetError(object_id, f"meta.json holds a {type(meta).__name__}, not an object with model_cat")
    return meta


def category_of(folder: Path) -> str | None:
    """The category named by the folder's ``meta.json``, or None when it cannot be told."""
    return categories.from_model_cat(str(read_meta(folder).get("model_cat", "")))


def _check_extents(object_id: str, joints: list[Joint], root: str, geometry: dict[str, list[MeshPart]]) -> None:
    """Refuse a link far larger than the others (``MAX_LINK_EXTENT_RATIO`` x the median link's
    extent): normalising the object to the views would shrink the rest to a point."""
    if len(geometry) < 2:
        return
    extents = {link: float(np.ptp(np.concatenate([p.vertices for p in parts]), axis=0).max()) for link, parts in geometry.items()}
    median = float(np.median(list(extents.values())))
    link, largest = max(extents.items(), key=lambda kv: kv[1])
    if median > 0 and largest > MAX_LINK_EXTENT_RATIO * median:
        raise AssetError(object_id, f"link {link} spans {largest:.3g} units, {largest / median:.0f} x the median link "
                                    f"({median:.3g}): an absurd size (over {MAX_LINK_EXTENT_RATIO:g} x) that would shrink the "
                                    "rest of the object to a point")


def _rest_diagonal(joints: list[Joint], root: str, geometry: dict[str, list[MeshPart]]) -> float:
    poses = {root: np.eye(4)}
    for j in joints:
        poses[j.child] = poses[j.parent] @ j.origin
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for link, parts in geometry.items():
        T = poses.get(link, np.eye(4))
        for p in parts:
            w = p.vertices @ T[:3, :3].T + T[:3, 3]
            lo, hi = np.minimum(lo, w.min(0)), np.maximum(hi, w.max(0))
    return float(np.linalg.norm(hi - lo))


def _to_tokens(object_id: str, robot) -> dict[str, dict[str, str]]:
    """Rename the parsed URDF's links and joints to their tokens (``store.safe_name``) in
    place, so no name from the file reaches a path, an OBJ group or Blender as written;
    returns {"links": {token: original}, "joints": {token: original}} for the records."""
    link_map = _safe_names(object_id, "link", [link.name for link in robot.links])
    joint_map = _safe_names(object_id, "joint", [j.name for j in robot.joints])
    for link in robot.links:
        link.name = link_map[link.name]
    for j in robot.joints:
        j.name = joint_map[j.name]
        j.parent, j.child = link_map.get(j.parent, safe_id(j.parent)), link_map.get(j.child, safe_id(j.child))
        if j.mimic is not None:
            j.mimic.joint = joint_map.get(j.mimic.joint, safe_id(j.mimic.joint or ""))
    return {"links": {t: n for n, t in link_map.items()}, "joints": {t: n for n, t in joint_map.items()}}


def load_object(folder: Path, category: str | None = None, max_faces: int = MAX_FACES) -> ArticulatedObject:
    """Load one object folder. Raises ``AssetError`` (object id + reason) on bad input."""
    folder = Path(folder)
    object_id = safe_id(folder.name)
    if not folder.is_dir():
        raise AssetError(object_id, "not a folder")
    urdf_path = folder / "mobility.urdf"
    if not urdf_path.is_file():
        raise AssetError(object_id, "no mobility.urdf in the folder")
    category, model_cat = _category(folder, object_id, category)
    robot = _parse_urdf(folder, object_id, urdf_path)
    source_names = _to_tokens(object_id, robot)
    links = [link.name for link in robot.links]
    joints = [_joint_record(object_id, j) for j in robot.joints]
    for j in joints:
        if j.parent not in links or j.child not in links:
            raise AssetError(object_id, f"joint {j.name} names a missing link")
    root, joints = _topological(object_id, joints, links)
    _check_mimics(object_id, joints)

    textures = TextureStore()
    geometry, missing = _link_geometry(folder, object_id, robot, max_faces, _MaterialTable(textures))
    if not geometry:
        reason = "the object has no visual geometry"
        raise AssetError(object_id, reason + (f" (missing mesh files: {', '.join(sorted({f for _, f in missing}))})" if missing else ""))
    _check_extents(object_id, joints, root, geometry)
    joints = check_joint_ranges(joints, _rest_diagonal(joints, root, geometry))
    _check_moving_geometry(object_id, joints, geometry, missing)
    notes = [f"{j.name}: {j.note}" for j in joints if j.note]
    notes += [f"link {link}: visual file {name!r} does not exist; skipped" for link, name in missing]
    if not any(j.movable for j in joints):
        held = [f"{j.name}: {j.note}" for j in joints if j.kind != "fixed"]
        reason = "no movable joint" + (f" ({'; '.join(held)})" if held else "")
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
        semantics={token: label for name, label in read_semantics(folder).items()
                   if (token := source_names["links"].get(name, safe_id(name))) in links},
        textures=textures,
        source_names=source_names,
        notes=notes,
        missing_visuals=missing,
    )


def _category(folder: Path, object_id: str, category: str | None) -> tuple[str, str]:
    """The object's category (the given one, or from meta.json's model_cat) and its model_cat."""
    meta = load_meta(folder, object_id)
    model_cat = str(meta.get("model_cat", ""))
    if category is None:
        if not (folder / "meta.json").exists():
            raise AssetError(object_id, "no meta.json (its model_cat names the category)")
        category = categories.from_model_cat(model_cat) if model_cat else None
        if category is None:
            raise AssetError(object_id, f"unknown category (meta.json model_cat={model_cat!r})")
    return category, model_cat


def _parse_urdf(folder: Path, object_id: str, urdf_path: Path):
    """The parsed URDF's robot (yourdfpy), read safely (``_check_xml``); no meshes loaded."""
    try:
        data = _check_xml(object_id, read_input(object_id, urdf_path))
    except OSError as exc:
        raise AssetError(object_id, f"cannot read mobility.urdf ({exc.strerror or exc})") from None
    try:
        urdf = yourdfpy.URDF.load(
            io.BytesIO(data), build_scene_graph=False, load_meshes=False, load_collision_meshes=False, mesh_dir=str(folder)
        )
    except Exception as exc:
        raise AssetError(object_id, f"cannot parse mobility.urdf: {exc}") from exc
    return urdf.robot


def _link_geometry(folder: Path, object_id: str, robot, max_faces: int,
                   table: "_MaterialTable") -> tuple[dict[str, list], list[tuple[str, str]]]:
    """Each link's visual meshes (link -> parts, duplicate faces dropped), and the (link, file)
    visuals whose file never existed (skipped, as SAPIEN does). At most ``max_faces`` faces."""
    folder_root = folder.resolve()
    geometry: dict[str, list] = {}
    total_faces = 0  # all meshes so far
    missing: list[tuple[str, str]] = []
    for link in robot.links:
        parts = []
        for visual in link.visuals:
            mesh = visual.geometry.mesh if visual.geometry is not None else None
            if mesh is None:
                continue  # primitive visuals do not occur in PartNet-Mobility
            try:
                mesh_path = inside_folder(folder / mesh.filename, folder_root, mesh.filename)
            except ValueError as exc:
                raise AssetError(object_id, f"mesh {exc}") from None
            if not mesh_path.exists():
                if (link.name, mesh.filename) not in missing:
                    missing.append((link.name, mesh.filename))
                continue
            if not mesh_path.is_file():
                raise AssetError(object_id, f"mesh {mesh.filename!r} is not a file")
            loaded, total_faces = _visual_parts(object_id, link.name, visual, mesh, mesh_path, folder_root, table,
                                                total_faces, max_faces)
            parts.extend(loaded)
        if parts:
            geometry[link.name] = drop_duplicate_faces(parts)
    return geometry, missing


def _visual_parts(object_id: str, link: str, visual, mesh, mesh_path: Path, folder_root: Path, table: "_MaterialTable",
                  total_faces: int, max_faces: int) -> tuple[list, int]:
    """One visual's mesh parts in the link frame (origin and scale applied), and the faces of
    all meshes so far, this one included (an OBJ is counted before it is loaded)."""
    if mesh_path.suffix.lower() == ".obj":
        total_faces += count_obj_faces(mesh_path, stop_above=max_faces - total_faces)
        if total_faces > max_faces:
            raise AssetError(object_id, _too_many_faces(max_faces, total_faces, mesh.filename))
    transform = np.asarray(visual.origin if visual.origin is not None else np.eye(4), dtype=np.float64)
    if mesh.scale is not None:
        scale = np.broadcast_to(np.asarray(mesh.scale, float), (3,))
        if not np.isfinite(scale).all() or (np.abs(scale) > MAX_SCALE).any() or (np.abs(scale) < 1.0 / MAX_SCALE).any():
            raise AssetError(object_id, f"link {link}: visual {mesh.filename!r} has an absurd scale "
                                        f"{tuple(float(x) for x in scale)} (each component must lie within "
                                        f"1/{MAX_SCALE:g}..{MAX_SCALE:g} in magnitude)")
        transform = transform @ np.diag(list(scale) + [1.0])
    loaded = _load_mesh_file(object_id, mesh_path, folder_root, transform, table)
    if mesh_path.suffix.lower() != ".obj":
        total_faces += sum(len(p.faces) for p in loaded)
        if total_faces > max_faces:
            raise AssetError(object_id, _too_many_faces(max_faces, total_faces, mesh.filename))
    return loaded, total_faces


def _check_moving_geometry(object_id: str, joints: list[Joint], geometry: dict, missing: list[tuple[str, str]]) -> None:
    """Reject the object when a link moved by a movable joint lost all its visuals to
    missing files (links that never had a visual, like ``slider+`` helpers, are fine)."""
    moved: set[str] = set()
    for j in joints:  # parents before children
        if j.movable or j.parent in moved:
            moved.add(j.child)
    for link in dict.fromkeys(link for link, _ in missing):
        if link in moved and link not in geometry:
            files = [f for lk, f in missing if lk == link]
            raise AssetError(object_id, f"movable link {link} has no geometry: its mesh files are missing ({', '.join(files)})")


def read_semantics(folder: Path) -> dict[str, str]:
    """``semantics.txt``: ``link_name joint_type label`` per line -> {link: label}."""
    path = Path(folder) / "semantics.txt"
    out: dict[str, str] = {}
    if path.exists():
        for line in read_input(safe_id(Path(folder).name), path, limit=1 << 20).decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = parts[2]
    return out


def find_objects(source: Path) -> list[Path]:
    """Object folders under ``source``: the folder itself when it holds a mobility.urdf,
    else every sub-folder (sorted by name) except hidden ones (``.name``). A sub-folder
    that is not a valid object is returned too, so that loading it reports why."""
    source = Path(source)
    if (source / "mobility.urdf").exists():
        return [source]
    return sorted((p for p in source.iterdir() if not p.name.startswith(".") and p.is_dir()), key=lambda p: p.name)
