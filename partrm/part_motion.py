"""The true part motion applied to Gaussians: the evaluation's oracle and stage 1's carried target.

A state's Gaussians (a database's splatter image, flattened) are moved by the rigid motion
of the links that move between two states of a sequence (``state.json``'s link poses); a
Gaussian belongs to a moving link when its nearest surface sample of the source state lies
on that link's part within ``max_distance`` (object units). Everything else stays put.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from partdrag4d import store
from partrm.models.lgm import transform_gaussians

MAX_DISTANCE = 0.05
"""A Gaussian farther than this from every source surface sample is not assigned to a part."""


def flat_splatter(splatter: np.ndarray) -> np.ndarray:
    """[V, 14, S, S] -> [V*S*S, 14] in (view, row, col) order (``LGM.gaussians``'s order)."""
    v, c, s, _ = splatter.shape
    return splatter.transpose(0, 2, 3, 1).reshape(v * s * s, c)


def unflat_splatter(gaussians: np.ndarray | torch.Tensor, views: int, size: int):
    """The inverse of ``flat_splatter``: [V*S*S, 14] -> [V, 14, S, S]."""
    g = gaussians.reshape(views, size, size, gaussians.shape[-1])
    return g.permute(0, 3, 1, 2) if isinstance(g, torch.Tensor) else g.transpose(0, 3, 1, 2)


def moving_part_of(xyz: np.ndarray, root: Path, source_state: str, max_distance: float = MAX_DISTANCE) -> np.ndarray:
    """For each point [N, 3] of ``source_state``, the moving part it lies on (its nearest
    surface sample's part, when within ``max_distance``), else -1."""
    src = store.read_state(root, source_state)
    obj = store.read_object_points(root, src["object_id"])
    dist, idx = cKDTree(store.read_state_points(root, source_state)).query(xyz, k=1)
    part = np.asarray(obj["part_id"])[idx]
    on_moving = np.isin(part, np.asarray(src["moving_part_ids"])) & (dist <= max_distance)
    return np.where(on_moving, part, -1)


def region_part_of(xyz: np.ndarray, region: np.ndarray, root: Path, source_state: str) -> np.ndarray:
    """The moving part of each Gaussian [N, 3] of a splatter image aligned with the source's
    input views, whose drag region [N] (bool: the rendered moving-part mask, per cell) is
    known: inside it, the moving part of its nearest surface sample (the driven link when
    that sample lies on a static part: a flush door's edge), outside it -1. Exact where
    ``moving_part_of``'s nearest-sample rule misassigns a part flush with the body."""
    src = store.read_state(root, source_state)
    nearest = moving_part_of(xyz, root, source_state, max_distance=np.inf)
    part = np.where(nearest >= 0, nearest, int(src["moving_part_ids"][0]))
    return np.where(np.asarray(region, bool), part, -1)


def oracle_gaussians(source: torch.Tensor, root: Path, source_state: str, target_state: str,
                     max_distance: float = MAX_DISTANCE, part_of: np.ndarray | None = None) -> torch.Tensor:
    """Gaussians [N, 14] of ``source_state`` with the true rigid motion to ``target_state``
    applied to those on the moving links (``part_of``: ``moving_part_of`` of them, if known)."""
    src = store.read_state(root, source_state)
    dst = store.read_state(root, target_state)
    g = source.clone()
    if part_of is None:
        part_of = moving_part_of(g[:, :3].detach().cpu().numpy(), root, source_state, max_distance)
    link_of_part = {link["part_id"]: link["name"] for link in store.read_object(root, src["object_id"])["links"]}
    for part in src["moving_part_ids"]:
        sel = part_of == part
        if not sel.any():
            continue
        link = link_of_part[part]
        motion = np.asarray(dst["link_poses"][link]) @ np.linalg.inv(np.asarray(src["link_poses"][link]))
        sel_t = torch.from_numpy(sel)
        g[sel_t] = transform_gaussians(g[sel_t][None], torch.from_numpy(motion))[0].to(g.dtype)
    return g


def moving_part_splatter_mask(splatter: np.ndarray, root: Path, source_state: str, part_of: np.ndarray | None = None) -> np.ndarray:
    """[V, 1, S, S] float mask of a source splatter image's Gaussians on the moving parts:
    stage 1's motion-weighted set, the same whether the pair moves them or is still."""
    v, _, s, _ = splatter.shape
    if part_of is None:
        part_of = moving_part_of(flat_splatter(splatter)[:, :3], root, source_state)
    return np.ascontiguousarray(unflat_splatter((part_of >= 0)[:, None].astype(np.float32), v, s))


def carried_splatter(splatter: np.ndarray, root: Path, source_state: str, target_state: str,
                     part_of: np.ndarray | None = None) -> np.ndarray:
    """A source splatter image [V, 14, S, S] carried to the target state by the true part
    motion, still aligned pixel for pixel with the source's input views."""
    v, _, s, _ = splatter.shape
    moved = oracle_gaussians(torch.from_numpy(flat_splatter(splatter).astype(np.float32)), root, source_state, target_state,
                             part_of=part_of)
    return np.ascontiguousarray(unflat_splatter(moved.numpy(), v, s)).astype(splatter.dtype)
