"""3D Gaussian Splatting PLY files (the layout of the INRIA 3DGS code), so results open in splat viewers.

One binary little-endian ``vertex`` element of float32 properties, in 3DGS's order:
x y z, nx ny nz (zeros), f_dc_0..2, opacity, scale_0..2, rot_0..3. Values are stored
*pre-activation* as 3DGS does: colour as the degree-0 SH coefficient
``f_dc = (rgb - 0.5) / SH_C0``, opacity as a logit, scales as logs, rotation as a unit
quaternion (w, x, y, z). Positions are written in the frame given (this project's object
frame is Z up, see ``partdrag4d.cameras``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .rasterize import Gaussians

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic, 1 / (2 sqrt(pi))."""

PROPERTIES = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip

_OPACITY_EPS = 1e-7  # keeps logits finite for opacities of exactly 0 or 1

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _as_numpy(x, name: str, shape_tail: tuple[int, ...]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape [N{''.join(f', {d}' for d in shape_tail)}], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values")
    return a


def write_ply(path: str | os.PathLike, means, quats, scales, opacities, colors) -> None:
    """Write N Gaussians (activated values, as ``render_gaussians`` takes them) to a 3DGS PLY.

    means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3] > 0, opacities [N] in [0, 1],
    colors [N, 3] rgb; torch tensors or arrays. ``write_ply(path, *gaussians)`` works too.
    """
    means = _as_numpy(means, "means", (3,))
    n = means.shape[0]
    quats = _as_numpy(quats, "quats", (4,))
    scales = _as_numpy(scales, "scales", (3,))
    opacities = _as_numpy(opacities, "opacities", ())
    colors = _as_numpy(colors, "colors", (3,))
    for name, a in (("quats", quats), ("scales", scales), ("opacities", opacities), ("colors", colors)):
        if a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} rows but means has {n}")
    if (scales <= 0).any():
        raise ValueError("scales must be positive (they are stored as logs)")
    if ((opacities < 0) | (opacities > 1)).any():
        raise ValueError("opacities must be in [0, 1] (they are stored as logits)")
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("quats must be non-zero")

    o = np.clip(opacities, _OPACITY_EPS, 1.0 - _OPACITY_EPS)
    columns = [
        means,
        np.zeros((n, 3)),
        (colors - 0.5) / SH_C0,
        np.log(o / (1.0 - o))[:, None],
        np.log(scales),
        quats / norms,
    ]
    data = np.concatenate(columns, axis=1).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"element vertex {n}\n" + "".join(f"property float {p}\n" for p in PROPERTIES) + "end_header\n"
    path = Path(path)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())


def read_ply(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Gaussians:
    """Read a 3DGS PLY into activated values (inverse of ``write_ply``).

    Any property order and extra properties are accepted; SH coefficients beyond degree 0
    (``f_rest_*``) are ignored because the renderer takes one rgb per Gaussian.
    """
    with open(path, "rb") as f:
        raw = f.read()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    body = raw.index(b"\n", end) + 1
    lines = raw[:body].decode("ascii").splitlines()
    fmt = next((ln.split() for ln in lines if ln.startswith("format ")), None)
    if fmt is None or fmt[1] not in ("binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: only binary PLY is supported, got {fmt and fmt[1]!r}")
    endian = "<" if fmt[1] == "binary_little_endian" else ">"

    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for ln in lines:
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise ValueError(f"{path}: property before any element")
            if parts[1] == "list":
                elements[-1][2].append(("list", ""))
            else:
                if parts[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown property type {parts[1]!r}")
                elements[-1][2].append((parts[2], endian + _PLY_TYPES[parts[1]]))

    offset = body
    for name, count, props in elements:
        if any(kind == "list" for kind, _ in props):
            raise ValueError(f"{path}: list properties in element {name!r} are not supported")
        dt = np.dtype([(p, t) for p, t in props])
        if name == "vertex":
            if len(raw) < offset + count * dt.itemsize:
                raise ValueError(f"{path}: file is truncated")
            v = np.frombuffer(raw, dtype=dt, count=count, offset=offset)
            break
        offset += count * dt.itemsize
    else:
        raise ValueError(f"{path}: no vertex element")

    needed = [p for p in PROPERTIES if not p.startswith("n")]
    missing = [p for p in needed if p not in v.dtype.names]
    if missing:
        raise ValueError(f"{path}: missing 3DGS properties {missing}")

    def cols(*names):
        return np.stack([v[n].astype(np.float64) for n in names], axis=1)

    means = cols("x", "y", "z")
    colors = cols("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5
    opacities = 1.0 / (1.0 + np.exp(-v["opacity"].astype(np.float64)))
    scales = np.exp(cols("scale_0", "scale_1", "scale_2"))
    quats = cols("rot_0", "rot_1", "rot_2", "rot_3")
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{path}: zero rotation quaternion")
    quats = quats / norms
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    return Gaussians(as_t(means), as_t(quats), as_t(scales), as_t(opacities), as_t(colors))
