"""3D Gaussian Splatting PLY files (the layout of the INRIA 3DGS code), so results open in splat viewers.

Written with ``plyfile``: one binary little-endian ``vertex`` element of float32
properties in 3DGS's order: x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..(3(d+1)^2-4)
for SH degree d > 0 (zeros: the renderer takes one rgb per Gaussian), opacity,
scale_0..2, rot_0..3. Values are stored *pre-activation* as 3DGS does: colour as the
degree-0 SH coefficient ``f_dc = (rgb - 0.5) / SH_C0``, opacity as a logit, scales as
logs, rotation as a unit quaternion (w, x, y, z).

Options (the CLI's ``--sh-degree`` / ``--up``):

- ``sh_degree`` 3 (default) writes the 45 ``f_rest_*`` properties the reference 3DGS
  loader counts (it asserts ``3 * (sh_degree + 1) ** 2 - 3`` of them, degree 3 by
  default); 0 writes none (a smaller file for viewers that only read f_dc).
- ``up`` ``"z"`` (default) keeps this project's object frame (Z up, front -X; see
  ``partdrag4d.cameras``), the frame of gsplat, nerfstudio and viser. ``"y"`` rotates
  the object +90 degrees about X (z -> -y, y -> z) into the -Y-up convention of
  SuperSplat / PlayCanvas (files in COLMAP/OpenCV axes, y down), positions and
  quaternions rotated together. The file says which in a ``comment up ...`` header line,
  and ``read_ply`` undoes the rotation when it finds it.

``read_ply`` reads any PLY with the 3DGS properties: ASCII or binary of either byte
order, any property order, extra properties and elements.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import plyfile
import torch

from partdrag4d import store
from partdrag4d.rigid import quat_multiply

from .types import Gaussians

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic, 1 / (2 sqrt(pi))."""

SH_DEGREES = (0, 3)
DEFAULT_SH_DEGREE = 3
UP_AXES = ("z", "y")
DEFAULT_UP = "z"

_UP_COMMENT = {
    "z": "up +z (partrm object frame: Z up, front -X)",
    "y": "up -y (partrm object frame rotated +90 deg about X: z -> -y, y -> z)",
}

# +90 degrees about X: the object's +Z (up) goes to -Y, +Y to +Z, X stays.
Y_UP_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_Y_UP_QUAT = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0, 0.0])  # (w, x, y, z) of Y_UP_ROTATION

_OPACITY_EPS = 1e-7  # keeps logits finite for opacities of exactly 0 or 1


def num_rest_coefficients(sh_degree: int) -> int:
    """``f_rest_*`` properties of a 3DGS PLY of this SH degree: 3 (d + 1)^2 - 3."""
    return 3 * (sh_degree + 1) ** 2 - 3


def property_names(sh_degree: int = DEFAULT_SH_DEGREE) -> tuple[str, ...]:
    """The vertex properties ``write_ply`` writes, in order."""
    return (
        ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
        + tuple(f"f_rest_{i}" for i in range(num_rest_coefficients(sh_degree)))
        + ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
    )


PROPERTIES = property_names(0)
"""The degree-0 layout (17 properties); degree 3 inserts f_rest_0..44 after f_dc_2."""


def _as_numpy(x, name: str, shape_tail: tuple[int, ...]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape [N{''.join(f', {d}' for d in shape_tail)}], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values")
    return a


def _check_options(sh_degree: int, up: str) -> None:
    if sh_degree not in SH_DEGREES:
        raise ValueError(f"sh_degree must be one of {SH_DEGREES}, got {sh_degree!r}")
    if up not in UP_AXES:
        raise ValueError(f"up must be one of {UP_AXES}, got {up!r}")


def write_ply(path: str | os.PathLike, means, quats, scales, opacities, colors, *,
              sh_degree: int = DEFAULT_SH_DEGREE, up: str = DEFAULT_UP) -> None:
    """Write N Gaussians (activated values, as ``render_gaussians`` takes them) to a 3DGS PLY.

    means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3] > 0, opacities [N] in [0, 1],
    colors [N, 3] rgb; torch tensors or arrays. ``write_ply(path, *gaussians)`` works too.
    ``sh_degree`` / ``up``: see the module docstring. The file is written under a
    temporary name and renamed; the same input gives the same bytes.
    """
    _check_options(sh_degree, up)
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
    quats = quats / norms
    if up == "y":
        means = means @ Y_UP_ROTATION.T
        quats = quat_multiply(_Y_UP_QUAT, quats)

    o = np.clip(opacities, _OPACITY_EPS, 1.0 - _OPACITY_EPS)
    names = property_names(sh_degree)
    columns = {
        "x": means[:, 0], "y": means[:, 1], "z": means[:, 2],
        "opacity": np.log(o / (1.0 - o)),
        **{f"f_dc_{i}": (colors[:, i] - 0.5) / SH_C0 for i in range(3)},
        **{f"scale_{i}": np.log(scales[:, i]) for i in range(3)},
        **{f"rot_{i}": quats[:, i] for i in range(4)},
    }  # fmt: skip
    vertex = np.zeros(n, dtype=[(p, "<f4") for p in names])  # normals and f_rest stay 0
    for p, values in columns.items():
        vertex[p] = values
    data = plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=False, byte_order="<",
                           comments=[_UP_COMMENT[up], f"sh_degree {sh_degree}"])
    with store.atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            data.write(f)


def file_up_axis(ply: plyfile.PlyData) -> str:
    """``"y"`` for a file ``write_ply`` wrote with ``up="y"``, else ``"z"``."""
    return "y" if any(c.startswith("up -y") for c in ply.comments) else "z"


def read_ply(path: str | os.PathLike, dtype: torch.dtype = torch.float32, up: str | None = None) -> Gaussians:
    """Read a 3DGS PLY into activated values in the object frame (inverse of ``write_ply``).

    ASCII and binary files of either byte order are read with ``plyfile``; any property
    order, extra properties and other elements are accepted. SH coefficients beyond
    degree 0 (``f_rest_*``) are ignored because the renderer takes one rgb per Gaussian.
    ``up``: the file's up axis (``"z"`` or ``"y"``, see ``write_ply``); by default the
    file's own ``comment up`` line decides (z when there is none).
    """
    try:
        ply = plyfile.PlyData.read(str(path))
    except plyfile.PlyHeaderParseError as exc:
        raise ValueError(f"{path}: not a PLY file ({exc})") from None
    except plyfile.PlyElementParseError as exc:
        raise ValueError(f"{path}: file is truncated or malformed ({exc})") from None
    except (ValueError, EOFError) as exc:  # numpy's short reads in binary bodies
        raise ValueError(f"{path}: file is truncated or malformed ({exc})") from None
    if "vertex" not in ply:
        raise ValueError(f"{path}: no vertex element")
    v = ply["vertex"].data
    needed = [p for p in PROPERTIES if not p.startswith("n")]
    missing = [p for p in needed if p not in (v.dtype.names or ())]
    if missing:
        raise ValueError(f"{path}: missing 3DGS properties {missing}")
    up = file_up_axis(ply) if up is None else up
    if up not in UP_AXES:
        raise ValueError(f"up must be one of {UP_AXES}, got {up!r}")

    def cols(*names):
        return np.stack([np.asarray(v[n], dtype=np.float64) for n in names], axis=1)

    means = cols("x", "y", "z")
    colors = cols("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5
    opacities = 1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], dtype=np.float64)))
    scales = np.exp(cols("scale_0", "scale_1", "scale_2"))
    quats = cols("rot_0", "rot_1", "rot_2", "rot_3")
    if not (np.isfinite(means).all() and np.isfinite(quats).all()):
        raise ValueError(f"{path}: non-finite positions or rotations")
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{path}: zero rotation quaternion")
    quats = quats / norms
    if up == "y":
        means = means @ Y_UP_ROTATION  # inverse rotation (R is orthonormal)
        quats = quat_multiply(_Y_UP_QUAT * np.array([1.0, -1.0, -1.0, -1.0]), quats)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    return Gaussians(as_t(means), as_t(quats), as_t(scales), as_t(opacities), as_t(colors))
