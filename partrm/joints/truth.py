"""The dataset's ground truth for a pair of states (their link poses give the true joint motion),
the estimator run on dataset states, and state A's mesh split into its static and moving links."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from partdrag4d import store
from partdrag4d.meshio import read_obj_groups
from partrm.joints.estimate import decompose_motion, estimate_articulation
from partrm.joints.records import ArticulationEstimate, ArticulationTruth, PathLike


def truth_from_transform(T: np.ndarray, joint_type: str, points_a: np.ndarray, moving_mask: Optional[np.ndarray] = None) -> ArticulationTruth:
    """Ground truth from the exact rigid motion of the moving part (state A -> B).
    ``continuous`` joints are revolute; the decomposition is the estimator's own."""
    kind = "revolute" if joint_type in ("revolute", "continuous") else joint_type
    pts = np.asarray(points_a, np.float64)
    centroid = pts[moving_mask].mean(0) if moving_mask is not None and moving_mask.any() else pts.mean(0)
    j = decompose_motion(np.asarray(T, np.float64), centroid, kind)
    return ArticulationTruth(kind, j["axis"], j["pivot"] if kind == "revolute" else None, float(j["amount"]), np.asarray(T, np.float64),
                             centroid, moving_mask, joint_type)


def _state(root: Path, state_id: str) -> dict:
    path = store.state_dir(root, state_id) / store.STATE_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such state")
    return store.read_state(root, state_id)


def _check_pair(sa: dict, sb: dict) -> None:
    if sa["object_id"] != sb["object_id"]:
        raise ValueError(f"states of different objects: {sa['object_id']} and {sb['object_id']}")
    if sa["sequence_id"] != sb["sequence_id"]:
        raise ValueError(f"states of different sequences ({sa['sequence_id']}, {sb['sequence_id']}): more than one joint differs")


def dataset_truth(root: PathLike, state_a: str, state_b: str) -> ArticulationTruth:
    """True joint of two states of one sequence: the relative motion of the moving
    link between the states' ``link_poses`` (canonical frame) is exactly the joint's motion."""
    root = Path(root)
    sa, sb = _state(root, state_a), _state(root, state_b)
    _check_pair(sa, sb)
    link = sa["moving_links"][0]
    T = np.asarray(sb["link_poses"][link]) @ np.linalg.inv(np.asarray(sa["link_poses"][link]))
    points = store.read_state_points(root, state_a)
    moving = store.read_state_moving(root, state_a)
    return truth_from_transform(T, sa["joint_type"], points, moving)


def from_dataset_states(root: PathLike, state_a: str, state_b: str, correspondence: bool = True, **kwargs) -> ArticulationEstimate:
    """Estimate from two dataset states' points (canonical frame). Without
    correspondence B's points are treated as an unordered set."""
    root = Path(root)
    _check_pair(_state(root, state_a), _state(root, state_b))
    a = store.read_state_points(root, state_a)
    b = store.read_state_points(root, state_b)
    return estimate_articulation(a, b, correspondence, **kwargs)


def dataset_world_frame(root: PathLike, object_id: str) -> np.ndarray:
    """Canonical -> the asset's own (URDF world) frame: the inverse normalisation."""
    n = store.read_object(root, object_id)["normalisation"]
    return np.linalg.inv(np.asarray(n["matrix"], dtype=np.float64))


def dataset_meshes(root: PathLike, state_a: str, estimate: ArticulationEstimate) -> tuple[Optional[tuple], Optional[tuple]]:
    """(static, moving) meshes of state A (canonical frame) from its ``mesh.obj``: a link
    is moving when most of its surface samples are in ``estimate.moving_mask``.
    (None, None) when the state has no mesh or the mask is not over the state's points."""
    root = Path(root)
    sa = _state(root, state_a)
    mesh_path = store.state_dir(root, state_a) / store.STATE_MESH
    obj = store.read_object(root, sa["object_id"])
    part_id = store.read_object_points(root, sa["object_id"])["part_id"]
    if not mesh_path.is_file() or len(part_id) != len(estimate.moving_mask):
        return None, None
    groups = read_obj_groups(mesh_path)
    static, moving = [], []
    for link in obj["links"]:
        if link["name"] not in groups:
            continue
        sel = part_id == link["part_id"]
        frac = float(estimate.moving_mask[sel].mean()) if sel.any() else 0.0
        (moving if frac > 0.5 else static).append(groups[link["name"]])
    return _concat(static), _concat(moving)


def _concat(meshes: list[tuple[np.ndarray, np.ndarray]]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if not meshes:
        return None
    V, F, offset = [], [], 0
    for v, f in meshes:
        V.append(v)
        F.append(f + offset)
        offset += len(v)
    return np.concatenate(V), np.concatenate(F)


def split_mesh(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, moving_mask: np.ndarray,
               k: int = 5) -> tuple[Optional[tuple], Optional[tuple]]:
    """(static, moving) parts of a mesh of state A: each triangle takes the majority
    label of the ``k`` sample points nearest its centroid."""
    V, F = np.asarray(vertices, np.float64), np.asarray(faces)
    centers = V[F].mean(1)
    _, idx = cKDTree(np.asarray(points, np.float64)).query(centers, k=min(k, len(points)))
    idx = idx.reshape(len(F), -1)
    moving_face = moving_mask[idx].mean(1) > 0.5
    return _submesh(V, F[~moving_face]), _submesh(V, F[moving_face])


def _submesh(V: np.ndarray, F: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if len(F) == 0:
        return None
    used, inverse = np.unique(F, return_inverse=True)
    return V[used], inverse.reshape(-1, 3)
