"""Shared building blocks of procedural objects: meshes with UVs, materials, textures.

All geometry is authored in PartNet-Mobility's object frame: Y up, the front faces +Z,
X to the right of a viewer standing in front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Prim:
    """A triangle mesh with per-vertex UVs (faces do not share vertices across sharp edges)."""

    vertices: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    uv: np.ndarray  # [V, 2]

    def translated(self, offset) -> "Prim":
        return Prim(self.vertices + np.asarray(offset, dtype=np.float64), self.faces, self.uv)

    def rotated_x(self, angle: float) -> "Prim":
        c, s = np.cos(angle), np.sin(angle)
        r = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        return Prim(self.vertices @ r.T, self.faces, self.uv)


def merge(prims: list[Prim]) -> Prim:
    verts, faces, uvs, offset = [], [], [], 0
    for p in prims:
        verts.append(p.vertices)
        faces.append(p.faces + offset)
        uvs.append(p.uv)
        offset += len(p.vertices)
    return Prim(np.concatenate(verts), np.concatenate(faces), np.concatenate(uvs))


_BOX_FACES = [
    # (normal axis, sign, u axis, v axis)
    (0, 1, 2, 1), (0, -1, 2, 1), (1, 1, 0, 2), (1, -1, 0, 2), (2, 1, 0, 1), (2, -1, 0, 1),
]


def box(lo, hi) -> Prim:
    """Axis-aligned box from corner ``lo`` to ``hi``; each face maps the whole texture."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    verts, faces, uvs = [], [], []
    for axis, sign, ua, va in _BOX_FACES:
        quad = []
        for u, v in ((0, 0), (1, 0), (1, 1), (0, 1)):
            p = np.empty(3)
            p[axis] = hi[axis] if sign > 0 else lo[axis]
            p[ua] = lo[ua] + u * (hi[ua] - lo[ua])
            p[va] = lo[va] + v * (hi[va] - lo[va])
            quad.append(p)
            uvs.append((u, v))
        base = len(verts)
        verts.extend(quad)
        tri = [(0, 1, 2), (0, 2, 3)]
        # keep outward winding: the cross product of (u, v) must point along +normal
        n = np.cross(quad[1] - quad[0], quad[3] - quad[0])
        if n[axis] * sign < 0:
            tri = [(0, 2, 1), (0, 3, 2)]
        faces.extend([(base + a, base + b, base + c) for a, b, c in tri])
    return Prim(np.array(verts), np.array(faces, dtype=np.int64), np.array(uvs, dtype=np.float64))


def centered_box(center, size) -> Prim:
    center, size = np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64)
    return box(center - size / 2, center + size / 2)


def shell(lo, hi, thickness: float, open_face: str = "front") -> list[Prim]:
    """A hollow box of five walls, open on one face ('front' = +Z, 'top' = +Y)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    t = thickness
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    walls = {
        "left": box((x0, y0, z0), (x0 + t, y1, z1)),
        "right": box((x1 - t, y0, z0), (x1, y1, z1)),
        "bottom": box((x0 + t, y0, z0), (x1 - t, y0 + t, z1)),
        "top": box((x0 + t, y1 - t, z0), (x1 - t, y1, z1)),
        "back": box((x0 + t, y0 + t, z0), (x1 - t, y1 - t, z0 + t)),
        "front": box((x0 + t, y0 + t, z1 - t), (x1 - t, y1 - t, z1)),
    }
    if open_face == "top":
        walls["top"] = None
        walls["front"] = box((x0 + t, y0 + t, z1 - t), (x1 - t, y1, z1))
        walls["back"] = box((x0 + t, y0 + t, z0), (x1 - t, y1, z0 + t))
    else:
        walls[open_face] = None
    return [w for w in walls.values() if w is not None]


def cylinder(radius: float, height: float, segments: int = 32, axis: str = "z", caps: bool = True) -> Prim:
    """Cylinder centred at the origin along ``axis``; cylindrical UVs on the side, planar on caps."""
    angles = np.linspace(0, 2 * np.pi, segments + 1)
    verts, faces, uvs = [], [], []
    for k in range(segments):
        a0, a1 = angles[k], angles[k + 1]
        base = len(verts)
        for a, h, u in ((a0, -0.5, k / segments), (a1, -0.5, (k + 1) / segments), (a1, 0.5, (k + 1) / segments), (a0, 0.5, k / segments)):
            verts.append((radius * np.cos(a), radius * np.sin(a), h * height))
            uvs.append((u, h + 0.5))
        faces.extend([(base, base + 1, base + 2), (base, base + 2, base + 3)])
    if caps:
        for h, flip in ((0.5, False), (-0.5, True)):
            center = len(verts)
            verts.append((0.0, 0.0, h * height))
            uvs.append((0.5, 0.5))
            ring = []
            for a in angles[:-1]:
                ring.append(len(verts))
                verts.append((radius * np.cos(a), radius * np.sin(a), h * height))
                uvs.append((0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)))
            for k in range(segments):
                a, b = ring[k], ring[(k + 1) % segments]
                faces.append((center, b, a) if flip else (center, a, b))
    v = np.array(verts, dtype=np.float64)
    if axis == "y":
        v = v[:, [0, 2, 1]] * np.array([1, 1, -1])
    elif axis == "x":
        v = v[:, [2, 1, 0]] * np.array([1, 1, -1])
    return Prim(v, np.array(faces, dtype=np.int64), np.array(uvs, dtype=np.float64))


def ring(outer: float, inner: float, height: float, segments: int = 32) -> Prim:
    """An annulus extruded along Z (a porthole frame), centred at the origin."""
    angles = np.linspace(0, 2 * np.pi, segments + 1)
    verts, faces, uvs = [], [], []

    def quad(p0, p1, p2, p3, u0, u1):
        base = len(verts)
        verts.extend([p0, p1, p2, p3])
        uvs.extend([(u0, 0), (u1, 0), (u1, 1), (u0, 1)])
        faces.extend([(base, base + 1, base + 2), (base, base + 2, base + 3)])

    hz = height / 2
    for k in range(segments):
        a0, a1 = angles[k], angles[k + 1]
        c0, s0, c1, s1 = np.cos(a0), np.sin(a0), np.cos(a1), np.sin(a1)
        u0, u1 = k / segments, (k + 1) / segments
        quad((outer * c0, outer * s0, -hz), (outer * c1, outer * s1, -hz), (outer * c1, outer * s1, hz), (outer * c0, outer * s0, hz), u0, u1)
        quad((inner * c1, inner * s1, -hz), (inner * c0, inner * s0, -hz), (inner * c0, inner * s0, hz), (inner * c1, inner * s1, hz), u0, u1)
        quad((inner * c0, inner * s0, hz), (outer * c0, outer * s0, hz), (outer * c1, outer * s1, hz), (inner * c1, inner * s1, hz), u0, u1)
        quad((outer * c0, outer * s0, -hz), (inner * c0, inner * s0, -hz), (inner * c1, inner * s1, -hz), (outer * c1, outer * s1, -hz), u0, u1)
    return Prim(np.array(verts), np.array(faces, dtype=np.int64), np.array(uvs))


def bar_handle(center, length: float, thickness: float, standoff: float, vertical: bool) -> list[Prim]:
    """A pull handle on a front face (+Z) at ``center``: a grip bar on two posts."""
    c = np.asarray(center, dtype=np.float64)
    along = np.array([0.0, 1.0, 0.0]) if vertical else np.array([1.0, 0.0, 0.0])
    across = np.array([1.0, 0.0, 0.0]) if vertical else np.array([0.0, 1.0, 0.0])
    t = thickness
    grip_half = along * length / 2 + across * t / 2 + np.array([0, 0, t / 2])
    grip_center = c + np.array([0, 0, standoff + t / 2])
    prims = [box(grip_center - grip_half, grip_center + grip_half)]
    for end in (-1, 1):
        post_center = c + along * end * (length / 2 - t / 2) + np.array([0, 0, standoff / 2])
        half = (along + across) * t / 2 + np.array([0, 0, standoff / 2])
        prims.append(box(post_center - half, post_center + half))
    return prims


# ---------------------------------------------------------------- materials and textures


@dataclass(frozen=True)
class Look:
    """A material of a procedural object: colour, optional texture image key, shininess."""

    color: tuple[float, float, float]
    texture: str | None = None
    specular: float = 0.2
    shininess: float = 60.0


def random_color(rng: np.random.Generator, palette: list[tuple[float, float, float]], jitter: float = 0.05) -> tuple[float, float, float]:
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float64)
    return tuple(np.clip(base + rng.normal(0, jitter, 3), 0.02, 0.98).round(4).tolist())


APPLIANCE_COLORS = [(0.92, 0.92, 0.9), (0.75, 0.76, 0.78), (0.2, 0.2, 0.22), (0.85, 0.82, 0.75), (0.55, 0.6, 0.65)]
WOOD_COLORS = [(0.62, 0.45, 0.3), (0.78, 0.64, 0.45), (0.4, 0.27, 0.17), (0.9, 0.88, 0.84), (0.3, 0.32, 0.35)]
ACCENT_COLORS = [(0.1, 0.1, 0.1), (0.7, 0.7, 0.72), (0.8, 0.3, 0.2), (0.2, 0.4, 0.7), (0.25, 0.55, 0.3)]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.random((cells + 1, cells + 1))
    x = np.linspace(0, cells, size, endpoint=False)
    i = x.astype(int)
    f = x - i
    f = f * f * (3 - 2 * f)
    a = grid[i][:, i] * (1 - f)[None, :] + grid[i][:, i + 1] * f[None, :]
    b = grid[i + 1][:, i] * (1 - f)[None, :] + grid[i + 1][:, i + 1] * f[None, :]
    return a * (1 - f)[:, None] + b * f[:, None]


def texture_image(kind: str, rng: np.random.Generator, color, size: int = 128) -> Image.Image:
    """Procedural RGB textures: wood grain, brushed metal, keyboard, screen, control panel, glass."""
    c = np.asarray(color, dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "wood":
        n = _smooth_noise(rng, size, 3)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (yy * rng.uniform(3, 6) + 1.2 * n))
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * yy * 40 + 2.0 * _smooth_noise(rng, size, 8))
        shade = 0.84 + 0.1 * rings + 0.06 * grain
        img = c[None, None] * shade[..., None]
    elif kind == "metal":
        streak = rng.normal(0, 1, size)[None, :].repeat(size, 0)
        img = c[None, None] * (0.94 + 0.015 * streak[..., None] + 0.04 * _smooth_noise(rng, size, 4)[..., None])
    elif kind == "keyboard":
        img = np.broadcast_to(c * 0.9, (size, size, 3)).copy()
        keys = ((xx * 14) % 1 > 0.15) & ((yy * 6) % 1 > 0.2) & (yy > 0.1) & (yy < 0.7) & (xx > 0.05) & (xx < 0.95)
        img[keys] = 0.12
        pad = (xx > 0.35) & (xx < 0.65) & (yy > 0.75) & (yy < 0.95)
        img[pad] = c * 0.7
    elif kind == "screen":
        img = np.zeros((size, size, 3))
        inner = (xx > 0.05) & (xx < 0.95) & (yy > 0.06) & (yy < 0.94)
        glow = np.stack([0.15 + 0.3 * xx, 0.25 + 0.3 * yy, 0.55 + 0.2 * (1 - yy)], -1)
        img[inner] = glow[inner]
        img[~inner] = c * 0.3
    elif kind == "panel":
        img = np.broadcast_to(c * 0.35, (size, size, 3)).copy()
        display = (xx > 0.15) & (xx < 0.85) & (yy > 0.06) & (yy < 0.18)
        img[display] = (0.1, 0.4, 0.3)
        buttons = ((xx * 3) % 1 > 0.2) & ((xx * 3) % 1 < 0.8) & ((yy * 8) % 1 > 0.25) & ((yy * 8) % 1 < 0.75) & (yy > 0.3) & (yy < 0.9)
        img[buttons] = 0.85
    elif kind == "glass":
        img = np.zeros((size, size, 3)) + 0.06
        img += (0.25 * np.clip(1 - 4 * np.abs(xx - yy - 0.2), 0, 1))[..., None]
        img[(xx < 0.04) | (xx > 0.96) | (yy < 0.04) | (yy > 0.96)] = c * 0.5
    elif kind == "label":
        img = np.broadcast_to(c, (size, size, 3)).copy()
        band = (yy > 0.4) & (yy < 0.6)
        img[band] = np.asarray(ACCENT_COLORS[rng.integers(len(ACCENT_COLORS))])
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
