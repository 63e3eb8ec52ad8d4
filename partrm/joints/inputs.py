"""What the estimator reads: Gaussians (PartRM predictions, PLY files), point clouds and meshes,
turned into point sets in one frame."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from partrm.gaussians import gaussians_to_lgm, layout, read_ply
from partrm.joints.estimate import estimate_articulation
from partrm.joints.records import MIN_OPACITY, ArticulationEstimate, PathLike


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def from_gaussians(g_a: Any, g_b: Any, correspondence: bool = True, min_opacity: float = MIN_OPACITY, **kwargs) -> ArticulationEstimate:
    """Joint from two sets of activated 14-channel Gaussians (``partrm.gaussians.layout``).

    Only the means are used; Gaussians with opacity <= ``min_opacity`` are dropped
    (with correspondence, a pair is kept only if both are opaque). ``moving_mask``
    stays over all of A's Gaussians. A leading batch dim of 1 is accepted.
    """
    a, b = _to_numpy(g_a), _to_numpy(g_b)
    a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
    b = b[0] if b.ndim == 3 and b.shape[0] == 1 else b
    for name, g in (("g_a", a), ("g_b", b)):
        if g.ndim != 2 or g.shape[1] != layout.NUM_CHANNELS:
            raise ValueError(f"{name}: expected [N, {layout.NUM_CHANNELS}] Gaussians, got {g.shape}")
    op_a, op_b = a[:, layout.OPACITY][:, 0], b[:, layout.OPACITY][:, 0]
    if correspondence:
        if len(a) != len(b):
            raise ValueError(f"with correspondence both Gaussian sets need the same count, got {len(a)} and {len(b)}")
        keep_a = keep_b = (op_a > min_opacity) & (op_b > min_opacity)
    else:
        keep_a, keep_b = op_a > min_opacity, op_b > min_opacity
    est = estimate_articulation(a[keep_a, layout.XYZ], b[keep_b, layout.XYZ], correspondence, **kwargs)
    return _expand_masks(est, keep_a, keep_b)


def _expand_masks(est: ArticulationEstimate, keep_a: np.ndarray, keep_b: np.ndarray) -> ArticulationEstimate:
    full_a = np.zeros(len(keep_a), dtype=bool)
    full_a[keep_a] = est.moving_mask
    full_b = None
    if est.target_mask is not None:
        full_b = np.zeros(len(keep_b), dtype=bool)
        full_b[keep_b] = est.target_mask
    return replace(est, moving_mask=full_a, target_mask=full_b)


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted surface samples [count, 3] and the face of each sample."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2.0
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(tri), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return np.einsum("nk,nkd->nd", bary, tri[face]), face


def load_points(path: PathLike, num_samples: int = 16384, min_opacity: float = MIN_OPACITY,
                seed: int = 0) -> tuple[np.ndarray, str, Optional[tuple[np.ndarray, np.ndarray]]]:
    """Points of one state from a file: ``.npy`` ([N, 3] points or [N, 14] Gaussians),
    ``.ply`` (3DGS PLY, else a point cloud or mesh), or a mesh (``.obj``, ``.glb``,
    ``.stl``, ...; sampled with ``num_samples`` points). Returns (points, kind, mesh)
    with kind in gaussians | points | mesh and mesh = (vertices, faces) for meshes.

    Transparent Gaussians are dropped here, so two Gaussian files keep their pixel
    correspondence only through ``from_gaussians`` (use that for pairs).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = np.load(path)
        x = x[0] if x.ndim == 3 and x.shape[0] == 1 else x
        if x.ndim == 2 and x.shape[1] == 14:
            return x[x[:, 3] > min_opacity, :3].astype(np.float64), "gaussians", None
        if x.ndim == 2 and x.shape[1] == 3:
            return x.astype(np.float64), "points", None
        raise ValueError(f"{path}: expected [N, 3] points or [N, 14] Gaussians, got {x.shape}")
    if suffix == ".ply":
        try:
            g = read_ply(path)
            op = g.opacities.numpy()
            return g.means.numpy().astype(np.float64)[op > min_opacity], "gaussians", None
        except (ValueError, KeyError):
            pass  # not a 3DGS file: a plain point cloud or mesh
    import trimesh  # lazy here and in urdf.py: the model side runs without trimesh (GPU machine: benchmarks/gpu_check.py)

    geom = trimesh.load(path, force="mesh", process=True) if suffix != ".ply" else trimesh.load(path, process=True)
    if isinstance(geom, trimesh.Scene):
        geom = geom.dump(concatenate=True)
    if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
        V, F = np.asarray(geom.vertices, np.float64), np.asarray(geom.faces)
        return sample_mesh(V, F, num_samples, seed)[0], "mesh", (V, F)
    if isinstance(geom, trimesh.PointCloud) or hasattr(geom, "vertices"):
        return np.asarray(geom.vertices, np.float64), "points", None
    raise ValueError(f"{path}: no points or mesh found")


def load_gaussians(path: PathLike) -> Optional[np.ndarray]:
    """[N, 14] activated Gaussians from a ``.npy`` or 3DGS ``.ply``; None if the file holds none."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        x = np.load(path)
        x = x[0] if x.ndim == 3 and x.shape[0] == 1 else x
        return x.astype(np.float64) if x.ndim == 2 and x.shape[1] == 14 else None
    if path.suffix.lower() == ".ply":
        try:
            return gaussians_to_lgm(read_ply(path)).double().numpy()
        except (ValueError, KeyError):
            return None
    return None
