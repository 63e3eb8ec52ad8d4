"""Wavefront OBJ, the toolkit's one reader and writer: textured meshes that Blender imports
directly (``write_obj``), geometry-only meshes every URDF loader reads (``write_plain_obj``),
and the per-group reader (``read_obj_groups``).

Why our own writer: one ``o <link name>`` group per link (Blender's importer makes
one object per group, which the renderer poses and tags with a part id), materials
that keep their colours and image textures, and texture files shared by every state
of an object instead of copied into each one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from partdrag4d.store import atomic_write_bytes


@dataclass(frozen=True)
class Material:
    """What we keep of a surface material: diffuse colour (RGB, 0..1), optional texture, shininess."""

    name: str
    diffuse: tuple[float, float, float] = (0.8, 0.8, 0.8)
    texture: str | None = None  # file name inside the object's texture folder
    specular: float = 0.1
    roughness: float = 0.6
    metallic: float = 0.0


@dataclass
class MeshPart:
    """One material's faces of one link, in a known frame. ``uv`` is None without a texture."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    material: Material
    uv: np.ndarray | None = None  # [V, 2]
    normals: np.ndarray | None = None  # [V, 3]

    def transformed(self, matrix: np.ndarray) -> "MeshPart":
        vertices = self.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        normals = None
        if self.normals is not None:
            normal_matrix = np.linalg.inv(matrix[:3, :3]).T
            normals = self.normals @ normal_matrix.T
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        return MeshPart(vertices, self.faces, self.material, self.uv, normals)

    def to_trimesh(self) -> "trimesh.Trimesh":
        import trimesh  # lazy: the model side (and the GPU machine) reads and writes OBJ without trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


@dataclass
class TextureStore:
    """Deduplicates texture images by content and names them by hash (stable across runs)."""

    files: dict[str, bytes] = field(default_factory=dict)

    def add_image(self, image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False, compress_level=1)
        return self.add_bytes(buffer.getvalue(), ".png")

    def add_bytes(self, data: bytes, suffix: str) -> str:
        suffix = suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix.lower()) else ".tex"  # the input's suffix reaches a file name
        name = hashlib.sha1(data).hexdigest()[:16] + suffix
        self.files.setdefault(name, data)
        return name

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            target = folder / name
            if not target.exists():
                atomic_write_bytes(target, data)


def box_part(lo, hi, material: Material, uv_per_unit: float | None = None) -> MeshPart:
    """An axis-aligned box from ``lo`` to ``hi`` with flat normals and outward winding.

    Each face maps the unit UV square, or ``uv_per_unit`` texture repeats per unit of
    length when given (so a texture keeps its scale across boxes of different sizes)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    verts, uvs, normals, faces = [], [], [], []
    for axis in range(3):
        for sign in (-1, 1):
            u, v = (axis + 1) % 3, (axis + 2) % 3
            if sign < 0:
                u, v = v, u  # keeps (u, v, normal) right-handed, so the winding faces out
            base = len(verts)
            for cu, cv in ((0, 0), (1, 0), (1, 1), (0, 1)):
                p = np.empty(3)
                p[axis] = hi[axis] if sign > 0 else lo[axis]
                p[u] = hi[u] if cu else lo[u]
                p[v] = hi[v] if cv else lo[v]
                verts.append(p)
                if uv_per_unit is None:
                    uvs.append((cu, cv))
                else:
                    uvs.append((cu * (hi[u] - lo[u]) * uv_per_unit, cv * (hi[v] - lo[v]) * uv_per_unit))
            n = np.zeros(3)
            n[axis] = sign
            normals += [n] * 4
            faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return MeshPart(np.array(verts), np.array(faces), material, np.array(uvs, float), np.array(normals))


def _fmt(values: np.ndarray, prefix: str) -> str:
    if len(values) == 0:
        return ""
    rows = np.char.mod("%.6f", np.asarray(values, dtype=np.float64))
    return "\n".join(prefix + " " + " ".join(r) for r in rows) + "\n"


def obj_text(groups: list[tuple[str, list[MeshPart]]], mtl_name: str) -> str:
    """OBJ text: one ``o`` group per (name, parts); indices are 1-based and global."""
    out = [f"# PartDrag-4D mesh\nmtllib {mtl_name}\n"]
    v_off = vt_off = vn_off = 1
    for name, parts in groups:
        out.append(f"o {name}\n")
        for part in parts:
            out.append(_fmt(part.vertices, "v"))
            has_uv = part.uv is not None and part.material.texture is not None
            has_n = part.normals is not None
            if has_uv:
                out.append(_fmt(part.uv, "vt"))
            if has_n:
                out.append(_fmt(part.normals, "vn"))
            out.append(f"usemtl {part.material.name}\n")
            f = part.faces
            fv = (f + v_off).astype(str)
            if has_uv and has_n:
                ft, fn = (f + vt_off).astype(str), (f + vn_off).astype(str)
                cols = [np.char.add(np.char.add(np.char.add(np.char.add(fv[:, k], "/"), ft[:, k]), "/"), fn[:, k]) for k in range(3)]
            elif has_uv:
                ft = (f + vt_off).astype(str)
                cols = [np.char.add(np.char.add(fv[:, k], "/"), ft[:, k]) for k in range(3)]
            elif has_n:
                fn = (f + vn_off).astype(str)
                cols = [np.char.add(np.char.add(fv[:, k], "//"), fn[:, k]) for k in range(3)]
            else:
                cols = [fv[:, k] for k in range(3)]
            if len(f):
                lines = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add("f ", cols[0]), " "), cols[1]), " "), cols[2])
                out.append("\n".join(lines.tolist()) + "\n")
            v_off += len(part.vertices)
            if has_uv:
                vt_off += len(part.uv)
            if has_n:
                vn_off += len(part.normals)
    return "".join(out)


def mtl_text(materials: list[Material], texture_prefix: str) -> str:
    """MTL text; ``Pr``/``Pm`` are the PBR extension Blender's importer reads."""
    out = []
    for m in materials:
        r, g, b = m.diffuse
        out.append(f"newmtl {m.name}\nKd {r:.6f} {g:.6f} {b:.6f}\nKs {m.specular:.4f} {m.specular:.4f} {m.specular:.4f}\n")
        out.append(f"Ns {max(1.0, (1.0 - m.roughness) * 250.0):.2f}\nPr {m.roughness:.4f}\nPm {m.metallic:.4f}\nd 1\nillum 2\n")
        if m.texture:
            out.append(f"map_Kd {texture_prefix}{m.texture}\n")
        out.append("\n")
    return "".join(out)


def write_obj(path: Path, groups: list[tuple[str, list[MeshPart]]], texture_dir: Path) -> None:
    """Write ``path`` (.obj) and its .mtl atomically; textures are referenced in ``texture_dir``."""
    path = Path(path)
    materials: dict[str, Material] = {}
    for _, parts in groups:
        for part in parts:
            materials.setdefault(part.material.name, part.material)
    prefix = os.path.relpath(texture_dir, path.parent).replace(os.sep, "/") + "/"
    mtl_name = path.with_suffix(".mtl").name
    atomic_write_bytes(path.with_suffix(".mtl"), mtl_text(list(materials.values()), prefix).encode())
    atomic_write_bytes(path, obj_text(groups, mtl_name).encode())


def write_plain_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Geometry-only OBJ (no materials): what every URDF loader reads."""
    lines = ["# PartRM articulation extraction\n"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in np.asarray(vertices, np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in np.asarray(faces, np.int64)]
    atomic_write_bytes(Path(path), "".join(lines).encode("utf-8"))


def read_obj_groups(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Vertices and triangles of each ``o``/``g`` group of an OBJ file (the dataset's
    posed meshes have one ``o <link>`` group per link; trimesh would split by material)."""
    verts: list[list[float]] = []
    groups: dict[str, list[list[int]]] = {}
    current = "default"
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(v) for v in line.split()[1:4]])
            elif line.startswith(("o ", "g ")):
                current = line.split(maxsplit=1)[1].strip() if len(line.split()) > 1 else "default"
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                faces = groups.setdefault(current, [])
                faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    V = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    out = {}
    for name, fl in groups.items():
        F = np.asarray(fl, dtype=np.int64).reshape(-1, 3)
        used, inverse = np.unique(F, return_inverse=True)
        out[name] = (V[used], inverse.reshape(-1, 3))
    return out


@dataclass
class MeshPiece:
    """One material's triangles of one link, with corners unified (position + uv)."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    uv: Optional[np.ndarray]  # [V, 2] or None
    colour: tuple[float, float, float]
    texture: Optional[Path]


def _read_mtl(path: Path) -> dict[str, tuple[tuple[float, float, float], Optional[Path]]]:
    out: dict[str, tuple[tuple[float, float, float], Optional[Path]]] = {}
    if not path.is_file():
        return out
    name, kd, tex = None, (0.8, 0.8, 0.8), None
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        key, rest = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if key == "newmtl":
            if name is not None:
                out[name] = (kd, tex)
            name, kd, tex = rest, (0.8, 0.8, 0.8), None
        elif key == "Kd":
            kd = tuple(float(x) for x in rest.split()[:3])  # type: ignore[assignment]
        elif key == "map_Kd" and rest:
            tex = (path.parent / rest.split()[-1]).resolve()
    if name is not None:
        out[name] = (kd, tex)
    return out


def read_obj_links(path: Path) -> dict[str, list[MeshPiece]]:
    """The textured pieces of each ``o <link>`` group of a dataset OBJ (its rest or posed mesh),
    with their materials' colours and textures (what the viewer draws)."""
    path = Path(path)
    materials: dict[str, tuple] = {}
    v: list[list[float]] = []
    vt: list[list[float]] = []
    chunks: dict[tuple[str, str], list[list[tuple[int, int]]]] = {}
    group, mtl = "default", ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            tag = line[:2]
            if tag == "v ":
                v.append([float(x) for x in line.split()[1:4]])
            elif tag == "vt":
                vt.append([float(x) for x in line.split()[1:3]])
            elif tag == "f ":
                corners = []
                for tok in line.split()[1:]:
                    ids = tok.split("/")
                    vi = int(ids[0])
                    ti = int(ids[1]) if len(ids) > 1 and ids[1] else 0
                    corners.append((vi - 1 if vi > 0 else len(v) + vi, (ti - 1 if ti > 0 else len(vt) + ti) if ti else -1))
                tris = chunks.setdefault((group, mtl), [])
                tris.extend([corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1))
            elif line.startswith(("o ", "g ")):
                group = line.split(maxsplit=1)[1].strip() if len(line.split()) > 1 else "default"
            elif line.startswith("usemtl"):
                mtl = line.split(maxsplit=1)[1].strip() if len(line.split()) > 1 else ""
            elif line.startswith("mtllib"):
                materials.update(_read_mtl(path.parent / line.split(maxsplit=1)[1].strip()))
    V = np.asarray(v, np.float64).reshape(-1, 3)
    T = np.asarray(vt, np.float64).reshape(-1, 2)
    out: dict[str, list[MeshPiece]] = {}
    for (g, m), tris in chunks.items():
        corners = np.asarray(tris, np.int64).reshape(-1, 2)
        keys, inverse = np.unique(corners, axis=0, return_inverse=True)
        colour, texture = materials.get(m, ((0.8, 0.8, 0.8), None))
        has_uv = texture is not None and (keys[:, 1] >= 0).all() and len(T)
        out.setdefault(g, []).append(MeshPiece(V[keys[:, 0]], inverse.reshape(-1, 3), T[keys[:, 1]] if has_uv else None,
                                               colour, texture if has_uv else None))
    return out
