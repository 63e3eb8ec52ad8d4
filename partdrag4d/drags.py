"""Visible surface drags between two states of a sequence, with depth-based occlusion.

Candidates are the surface samples of the moving part (the swept joint's links) whose
3D position differs between the source and the target state. A candidate is a drag in
view ``v`` when its source position

1. projects inside the image, in front of the camera,
2. lands on a pixel whose rendered part id is one of the moving part's ids, and
3. passes the depth test ``|z_point - z_rendered| <= DEPTH_TOLERANCE`` against the
   source state's rendered planar depth at that pixel (object-frame units; the objects
   span about [-1, 1], so 0.01 is far below any part's thickness yet above the depth
   change across one pixel of a surface seen at up to ~65 deg from its normal).

This is an exact per-point test against the rendered depth, not a window heuristic: a
point hidden behind another part fails (2) or (3), a point on the far side of the
moving part fails (3). Up to ``MAX_DRAGS`` visible drags per pair and view are kept,
spread over the part by farthest-point sampling of their 2D start positions from a
seeded random first point. The drag end is the projection of the same material point
in the target state (it need not be visible there).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from partdrag4d.cameras import Camera

DEPTH_TOLERANCE = 0.01
MAX_DRAGS = 64
MIN_DISPLACEMENT = 1e-5


@dataclass
class ViewRender:
    """What the drag test needs of a rendered state: per-view depth and part ids."""

    depth: np.ndarray  # [V, H, W] float32, planar camera z, inf = background
    part_id: np.ndarray  # [V, H, W] integer, 0 = background


@dataclass
class PairDrags:
    """Drags of one (source, target) pair in every view, padded to ``max_drags``.

    Pixel coordinates follow cameras.py (x right, y down, pixel centres at +0.5) in the
    rendered image size; padding is NaN (coordinates) and -1 (point index).
    """

    count: np.ndarray  # [V] int32
    start_2d: np.ndarray  # [V, K, 2] float32
    end_2d: np.ndarray  # [V, K, 2]
    start_3d: np.ndarray  # [V, K, 3]
    end_3d: np.ndarray  # [V, K, 3]
    point_index: np.ndarray  # [V, K] int32
    num_candidates: int


def pixel_index(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one pixel rule for drag coordinates: (column, row) of the pixel holding each
    point [N, 2], taken from the float32 value the drag file stores (a projection at
    127.99999999 is stored as 128.0 and lies in pixel 128). The sampler tests visibility at
    this pixel and ``verify`` reads the stored value with it, so the two always agree."""
    stored = np.asarray(uv, dtype=np.float32)
    return np.floor(stored[:, 0]).astype(np.int64), np.floor(stored[:, 1]).astype(np.int64)


def visible_mask(points: np.ndarray, camera: Camera, depth: np.ndarray, part_id: np.ndarray, moving_ids: np.ndarray,
                 tolerance: float = DEPTH_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Which ``points`` [N, 3] are visible in one view on the moving part; also their pixels [N, 2]."""
    uv, z = camera.project(points)
    h, w = depth.shape
    col, row = pixel_index(uv)
    inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    ok = np.zeros(len(points), dtype=bool)
    idx = np.flatnonzero(inside)
    r, c = row[idx], col[idx]
    on_part = np.isin(part_id[r, c], moving_ids)
    depth_ok = np.abs(z[idx] - depth[r, c]) <= tolerance
    ok[idx] = on_part & depth_ok
    return ok, uv


def farthest_point_sample(xy: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` points of ``xy`` [M, 2] spread out greedily (all of them if M <= k)."""
    return farthest_point_sample_batched([xy], k, rng)[0]


def farthest_point_sample_batched(sets: list[np.ndarray], k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Farthest-point sampling of several 2D point sets at once (one per view): the same
    greedy choice as one set at a time, with the sets padded into one array so the k
    iterations run once for all of them. A random first point per set (from ``rng``)."""
    out: list[np.ndarray] = [np.arange(len(s)) for s in sets]
    todo = [i for i, s in enumerate(sets) if len(s) > k]
    if not todo:
        return out
    m = max(len(sets[i]) for i in todo)
    x = np.zeros((len(todo), m))
    y = np.zeros((len(todo), m))
    dist = np.full((len(todo), m), -np.inf)
    rows = np.arange(len(todo))
    for r, i in enumerate(todo):
        n = len(sets[i])
        x[r, :n], y[r, :n] = sets[i][:, 0], sets[i][:, 1]
        dist[r, :n] = np.inf
    chosen = np.empty((len(todo), k), dtype=np.int64)
    chosen[:, 0] = [rng.integers(len(sets[i])) for i in todo]
    for step in range(k):
        if step:
            chosen[:, step] = np.argmax(dist, axis=1)
        cx, cy = x[rows, chosen[:, step]], y[rows, chosen[:, step]]
        dx, dy = x - cx[:, None], y - cy[:, None]
        np.minimum(dist, dx * dx + dy * dy, out=dist)
    for r, i in enumerate(todo):
        out[i] = chosen[r]
    return out


def pair_seed(seed: int, sequence_id: str, source: int, target: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(sequence_id.encode()), source, target])


def sample_pair(source_points: np.ndarray, target_points: np.ndarray, moving: np.ndarray, moving_ids: np.ndarray,
                cameras: list[Camera], render: ViewRender, rng: np.random.Generator, max_drags: int = MAX_DRAGS,
                tolerance: float = DEPTH_TOLERANCE) -> PairDrags:
    """Visible drags from the source to the target state in every view."""
    num_views = len(cameras)
    displacement = np.linalg.norm(target_points - source_points, axis=1)
    candidates = np.flatnonzero(moving & (displacement > MIN_DISPLACEMENT))
    src, dst = source_points[candidates].astype(np.float64), target_points[candidates].astype(np.float64)
    out = PairDrags(
        count=np.zeros(num_views, np.int32),
        start_2d=np.full((num_views, max_drags, 2), np.nan, np.float32),
        end_2d=np.full((num_views, max_drags, 2), np.nan, np.float32),
        start_3d=np.full((num_views, max_drags, 3), np.nan, np.float32),
        end_3d=np.full((num_views, max_drags, 3), np.nan, np.float32),
        point_index=np.full((num_views, max_drags), -1, np.int32),
        num_candidates=int(len(candidates)),
    )
    if len(candidates) == 0:
        return out
    visible, uvs = [], []
    for v, cam in enumerate(cameras):
        ok, uv = visible_mask(src, cam, render.depth[v], render.part_id[v], moving_ids, tolerance)
        visible.append(np.flatnonzero(ok))
        uvs.append(uv)
    picks = farthest_point_sample_batched([uvs[v][visible[v]] for v in range(num_views)], max_drags, rng)
    for v, cam in enumerate(cameras):
        keep = visible[v][picks[v]]
        n = len(keep)
        if n == 0:
            continue
        end_uv, _ = cam.project(dst[keep])
        out.count[v] = n
        out.start_2d[v, :n] = uvs[v][keep]
        out.end_2d[v, :n] = end_uv
        out.start_3d[v, :n] = src[keep]
        out.end_3d[v, :n] = dst[keep]
        out.point_index[v, :n] = candidates[keep]
    return out


def all_pairs(num_stages: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct stages (30 for 6 stages)."""
    return [(i, j) for i in range(num_stages) for j in range(num_stages) if i != j]


def adjacent_pairs(num_stages: int) -> list[tuple[int, int]]:
    """A documented subset: neighbouring stages both ways plus stage 0 <-> every stage."""
    pairs = {(i, i + 1) for i in range(num_stages - 1)} | {(i + 1, i) for i in range(num_stages - 1)}
    pairs |= {(0, j) for j in range(1, num_stages)} | {(j, 0) for j in range(1, num_stages)}
    return sorted(pairs)
