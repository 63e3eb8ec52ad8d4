"""Articulation extraction: from two states of an object (Gaussians, point clouds or
meshes in one frame), segment the moving part, estimate its joint (revolute or
prismatic: axis, pivot, motion amount) and write a two-link URDF a simulator can load.

Two input cases:

with correspondence
    point ``i`` of A and of B is the same material point: dataset states
    (``states/<id>/points.npy``), and PartRM's source vs predicted Gaussians (same
    splatter-pixel order). Points displaced by more than ``tau`` are moving
    candidates; RANSAC over 3-point Kabsch fits picks their largest rigid cluster.
without correspondence
    two independent samplings (two meshes, two PLYs). Points of A with no point of B
    within ``tau`` (and vice versa) are the parts that changed; a multi-start,
    symmetric, trimmed ICP (A's changed points onto all of B, B's changed points onto
    all of A) registers them.

``tau`` is relative to the object (a fraction of its bounding-box diagonal) and grows
with the measured noise / sampling spacing, so the same defaults work for exact
dataset points and for noisy Gaussians. The static part is assumed not to move
between A and B (both are in the object's frame).

Joint from the rigid motion (R, t) of the moving part: a rotation angle above
``revolute_min_deg`` (3 deg) means revolute, else prismatic. The axis is oriented so
that the motion from A to B is positive: ``amount >= 0`` always, and the URDF's joint
goes from 0 (state A) to ``amount`` (state B). A rigid motion only fixes the angle
modulo a full turn, so a continuous joint swept by 300 deg reads as 60 deg about the
opposite axis; ``truth_from_transform`` decomposes the ground truth the same way.

Units are those of the input frame (canonical: objects span about [-1, 1]); prismatic
amounts are lengths, revolute amounts radians.
"""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from scipy.spatial import cKDTree

from partdrag4d.rigid import apply as _apply, axis_angle, rigid_inverse, rotation_angle_deg, rotation_matrix

REL_THRESHOLD = 0.005
"""Displacement / inlier threshold as a fraction of the bounding-box diagonal."""
REVOLUTE_MIN_DEG = 3.0
"""Rotation angles above this are revolute joints; below, prismatic."""
MIN_OPACITY = 0.05
"""Gaussians at or below this opacity are transparent and carry no geometry."""
MIN_MOVING = 8
"""Fewer moving candidates than this (or 0.2% of the points) means no detectable motion."""
PARSIMONY = 0.15
"""With correspondence a rotation must lower the residual of a pure translation by more
than this fraction to make the joint revolute. Unordered inputs: registrations scoring
within this fraction of the best count as ties. A pure translation wins a tie; among
rotations the one whose axis passes closest to the part plus moves it least (a hinge
sits on its part's edge): a symmetric drawer also fits "slide + 180 deg flip", a door
slab "swing the other way about a far axis"."""

PathLike = Union[str, Path]


class NoMotionError(ValueError):
    """No part of the object moves (detectably) between the two states."""


# --------------------------------------------------------------------------- records


@dataclass
class ArticulationEstimate:
    """A joint estimated from two states, in the frame of the input points.

    ``transform`` maps the moving part from state A to state B *as the joint model
    does* (rotation about the axis line through ``pivot``, or a translation along
    ``axis``); ``rigid_transform`` is the unconstrained rigid fit it was derived from.
    ``pivot`` is the point of the axis line closest to the moving part's centroid
    (revolute); for prismatic joints it is that centroid (where the URDF puts the joint
    frame). ``moving_mask`` is over the points of A (all of them, also those dropped
    as transparent Gaussians, which are False); ``target_mask`` over those of B.
    ``rms``: residual of the joint model over the moving points (for unordered inputs
    it includes the sampling spacing). ``tau``: the displacement/inlier threshold used.
    """

    joint_type: str  # revolute | prismatic
    axis: np.ndarray  # [3] unit
    pivot: np.ndarray  # [3]
    amount: float  # radians (revolute) or length (prismatic), >= 0
    moving_mask: np.ndarray  # [N] bool over points A
    transform: np.ndarray  # [4, 4] joint-model motion A -> B
    rms: float
    num_moving: int
    rigid_transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    centroid: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axial_translation: float = 0.0  # screw component of a revolute fit (ideally 0)
    correspondence: bool = True
    tau: float = 0.0
    target_mask: Optional[np.ndarray] = None

    @property
    def angle_deg(self) -> float:
        """Rotation angle of the rigid fit in degrees (what decided the joint type)."""
        return rotation_angle_deg(self.rigid_transform[:3, :3])

    def limits(self) -> tuple[float, float]:
        return (min(0.0, self.amount), max(0.0, self.amount))

    def joint_transform(self, q: float) -> np.ndarray:
        """Motion of the moving part from state A for joint value ``q``."""
        return joint_motion(self.joint_type, self.axis, self.pivot, q)

    def transformed(self, M: np.ndarray) -> "ArticulationEstimate":
        """The same estimate in the frame ``x' = M x`` (``M``: a proper similarity,
        e.g. ``dataset_world_frame``); prismatic amounts and residuals scale with it."""
        M = np.asarray(M, dtype=np.float64)
        s, Q = _similarity_parts(M)
        M_inv = np.linalg.inv(M)
        return replace(
            self,
            axis=Q @ self.axis,
            pivot=_apply(M, self.pivot[None])[0],
            amount=self.amount * s if self.joint_type == "prismatic" else self.amount,
            transform=M @ self.transform @ M_inv,
            rigid_transform=M @ self.rigid_transform @ M_inv,
            centroid=_apply(M, self.centroid[None])[0],
            axial_translation=self.axial_translation * s,
            rms=self.rms * s,
            tau=self.tau * s,
        )

    def to_dict(self) -> dict:
        return {
            "joint_type": self.joint_type,
            "axis": self.axis.tolist(),
            "pivot": self.pivot.tolist(),
            "amount": self.amount,
            "amount_deg": math.degrees(self.amount) if self.joint_type == "revolute" else None,
            "limits": list(self.limits()),
            "rotation_angle_deg": self.angle_deg,
            "axial_translation": self.axial_translation,
            "rms": self.rms,
            "num_moving": self.num_moving,
            "num_points": int(self.moving_mask.size),
            "centroid": self.centroid.tolist(),
            "correspondence": self.correspondence,
            "tau": self.tau,
            "transform": self.transform.tolist(),
            "rigid_transform": self.rigid_transform.tolist(),
        }


@dataclass
class ArticulationTruth:
    """Ground-truth joint of a state pair, decomposed exactly like an estimate.

    ``pivot`` is the point of the true axis line closest to the moving part's centroid
    in state A (None for prismatic joints). ``moving_mask`` over A's points, if known.
    """

    joint_type: str
    axis: np.ndarray
    pivot: Optional[np.ndarray]
    amount: float
    transform: np.ndarray
    centroid: np.ndarray
    moving_mask: Optional[np.ndarray] = None
    source_joint_type: str = ""  # as stored (continuous joints are revolute here)

    def to_dict(self) -> dict:
        return {
            "joint_type": self.joint_type,
            "source_joint_type": self.source_joint_type,
            "axis": self.axis.tolist(),
            "pivot": None if self.pivot is None else self.pivot.tolist(),
            "amount": self.amount,
            "transform": self.transform.tolist(),
        }


# --------------------------------------------------------------------------- geometry helpers


def _similarity_parts(M: np.ndarray) -> tuple[float, np.ndarray]:
    A = M[:3, :3]
    det = float(np.linalg.det(A))
    if det <= 0:
        raise ValueError("frame transform must be a proper similarity (positive determinant)")
    s = det ** (1.0 / 3.0)
    Q = A / s
    if not np.allclose(Q @ Q.T, np.eye(3), atol=1e-6):
        raise ValueError("frame transform is not a similarity (uniform scale x rotation + translation)")
    return s, Q


def joint_motion(joint_type: str, axis: np.ndarray, pivot: np.ndarray, q: float) -> np.ndarray:
    """4x4 motion of a joint: rotation by ``q`` about the line (pivot, axis), or a
    translation by ``q`` along ``axis``."""
    T = np.eye(4)
    if joint_type == "revolute":
        R = rotation_matrix(axis, q)
        T[:3, :3] = R
        T[:3, 3] = pivot - R @ pivot
    elif joint_type == "prismatic":
        T[:3, 3] = np.asarray(axis) * q
    else:
        raise ValueError(f"unknown joint type {joint_type!r}")
    return T


def kabsch(P: np.ndarray, Q: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
    """Least-squares rigid transform (4x4, no reflection) with ``R P + t ~ Q``;
    optional per-pair weights. Batched over leading dims of ``P``, ``Q`` [..., K, 3]."""
    P, Q = np.asarray(P, np.float64), np.asarray(Q, np.float64)
    if w is None:
        w = np.ones(P.shape[:-1])
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
    pc = (w[..., None] * P).sum(-2)
    qc = (w[..., None] * Q).sum(-2)
    H = np.einsum("...k,...ki,...kj->...ij", w, P - pc[..., None, :], Q - qc[..., None, :])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, -1, -2) @ np.swapaxes(U, -1, -2)))
    d = np.where(d == 0, 1.0, d)
    D = np.zeros(H.shape)
    D[..., 0, 0] = 1.0
    D[..., 1, 1] = 1.0
    D[..., 2, 2] = d
    R = np.swapaxes(Vt, -1, -2) @ D @ np.swapaxes(U, -1, -2)
    T = np.zeros(P.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = qc - np.einsum("...ij,...j->...i", R, pc)
    T[..., 3, 3] = 1.0
    return T


def _bbox_diagonal(x: np.ndarray) -> float:
    """Diagonal of the 1-99 percentile box: robust to a few floaters."""
    lo, hi = np.percentile(x, [1, 99], axis=0) if len(x) >= 100 else (x.min(0), x.max(0))
    return float(max(np.linalg.norm(hi - lo), 1e-9))


def _subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, size=k, replace=False))


def decompose_motion(T: np.ndarray, centroid: np.ndarray, joint_type: Optional[str] = None,
                     revolute_min_deg: float = REVOLUTE_MIN_DEG) -> dict:
    """Joint parameters of a rigid motion of a part whose centroid (state A) is ``centroid``.

    Revolute: the axis of R, the pivot solving (I - R) p = t in least squares (the part
    of t along the axis, a screw translation, is dropped and reported), moved along the
    axis to the point closest to ``centroid``. Prismatic: the centroid's displacement.
    ``joint_type`` forces the type (ground truth); else the angle decides.
    """
    R, t = T[:3, :3], T[:3, 3]
    axis, angle = axis_angle(R)
    if joint_type is None:
        joint_type = "revolute" if math.degrees(angle) > revolute_min_deg else "prismatic"
    if joint_type == "revolute":
        axial = float(t @ axis)
        p0 = np.linalg.lstsq(np.eye(3) - R, t - axial * axis, rcond=None)[0]
        pivot = p0 + float((centroid - p0) @ axis) * axis
        return {"joint_type": "revolute", "axis": axis, "pivot": pivot, "amount": angle, "axial_translation": axial}
    shift = _apply(T, centroid[None])[0] - centroid
    length = float(np.linalg.norm(shift))
    direction = shift / length if length > 0 else np.array([1.0, 0.0, 0.0])
    return {"joint_type": "prismatic", "axis": direction, "pivot": np.asarray(centroid, np.float64).copy(), "amount": length,
            "axial_translation": 0.0}


# --------------------------------------------------------------------------- estimation


def estimate_articulation(points_a: np.ndarray, points_b: np.ndarray, correspondence: bool = True,
                          rel_threshold: float = REL_THRESHOLD, revolute_min_deg: float = REVOLUTE_MIN_DEG,
                          ransac_iters: int = 256, seed: int = 0) -> ArticulationEstimate:
    """Segment the moving part between two states and estimate its joint.

    ``points_a`` [N, 3] and ``points_b`` ([N, 3] with correspondence, [M, 3] without)
    are in the same frame. Raises ``NoMotionError`` when nothing moves detectably.
    """
    A = np.asarray(points_a, dtype=np.float64)
    B = np.asarray(points_b, dtype=np.float64)
    if A.ndim != 2 or A.shape[1] != 3 or B.ndim != 2 or B.shape[1] != 3:
        raise ValueError(f"expected [N, 3] point sets, got {A.shape} and {B.shape}")
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise ValueError("points contain NaN or inf")
    if correspondence and len(A) != len(B):
        raise ValueError(f"with correspondence both states need the same number of points, got {len(A)} and {len(B)}")
    if len(A) < 2 * MIN_MOVING or len(B) < 2 * MIN_MOVING:
        raise ValueError(f"too few points ({len(A)}, {len(B)})")
    rng = np.random.default_rng(seed)
    if correspondence:
        rigid, moving, target, tau, rms_pairs = _fit_corresponded(A, B, rel_threshold, ransac_iters, rng)
    else:
        rigid, moving, target, tau, rms_pairs = _fit_unordered(A, B, rel_threshold, rng)
    centroid = A[moving].mean(0)
    joint = decompose_motion(rigid, centroid, None, revolute_min_deg)
    if joint["joint_type"] == "revolute" and correspondence:
        # noise on a small part fakes rotations: keep the slide unless the rotation explains clearly more
        rigid_rms = float(np.sqrt(np.mean(np.sum((_apply(rigid, A[moving]) - B[moving]) ** 2, axis=1))))
        shift = B[moving] - A[moving]
        slide_rms = float(np.sqrt(np.mean(np.sum((shift - shift.mean(0)) ** 2, axis=1))))
        if slide_rms <= (1.0 + PARSIMONY) * rigid_rms:
            joint = {"joint_type": "prismatic"}
    if joint["joint_type"] == "prismatic":  # refit a pure translation: a spurious small rotation must not tilt it
        rigid_t = _refit_translation(A, B, moving, rigid, correspondence, tau)
        joint = decompose_motion(rigid_t, centroid, "prismatic")
    model = joint_motion(joint["joint_type"], joint["axis"], joint["pivot"], joint["amount"])
    rms = rms_pairs(model)
    return ArticulationEstimate(
        joint_type=joint["joint_type"], axis=joint["axis"], pivot=joint["pivot"], amount=float(joint["amount"]),
        moving_mask=moving, transform=model, rms=float(rms), num_moving=int(moving.sum()), rigid_transform=rigid,
        centroid=centroid, axial_translation=float(joint["axial_translation"]), correspondence=correspondence,
        tau=float(tau), target_mask=target,
    )


def _min_moving(n: int) -> int:
    return max(MIN_MOVING, int(0.002 * n))


def _fit_corresponded(A, B, rel_threshold, iters, rng):
    """RANSAC of 3-point Kabsch fits on the displaced points, then refits on the consensus.

    tau = max(rel_threshold * diagonal, 3 * q25(displacement)): while at least half of
    the points are static, the 25% quantile of the displacements measures the noise.
    """
    d = np.linalg.norm(B - A, axis=1)
    size = _bbox_diagonal(A)
    tau = max(rel_threshold * size, 3.0 * float(np.quantile(d, 0.25)))
    cand = np.flatnonzero(d > tau)
    if len(cand) < _min_moving(len(A)):
        raise NoMotionError(f"no moving part: {len(cand)} points moved more than {tau:.4g} (max displacement {d.max():.4g})")
    score_idx = cand[_subsample(len(cand), 2000, rng)]
    Ps, Qs = A[score_idx], B[score_idx]
    best_T, best_count = np.eye(4), -1
    for _ in range(max(1, iters // 64)):
        pick = cand[rng.integers(len(cand), size=(64, 3))]
        P, Q = A[pick], B[pick]
        area = np.linalg.norm(np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0]), axis=1)
        ok = area > (0.01 * size) ** 2  # skip (near-)collinear triples
        if not ok.any():
            continue
        T = kabsch(P[ok], Q[ok])
        res = np.linalg.norm(np.einsum("kij,nj->kni", T[:, :3, :3], Ps) + T[:, None, :3, 3] - Qs, axis=2)
        counts = (res < tau).sum(1)
        k = int(counts.argmax())
        if counts[k] > best_count:
            best_T, best_count = T[k], int(counts[k])
    if best_count < 3:
        raise NoMotionError("no rigid motion explains the moving candidates")
    T = best_T
    for _ in range(4):  # refit on the points that T explains clearly better than staying put
        r = np.linalg.norm(_apply(T, A) - B, axis=1)
        fit = (r < tau) & (d - r > 0.5 * tau)
        if fit.sum() < 3:
            raise NoMotionError("rigid consensus too small")
        T = kabsch(A[fit], B[fit])
    r = np.linalg.norm(_apply(T, A) - B, axis=1)
    moving = _resolve_mask(A, r, d, tau)
    if moving.sum() < _min_moving(len(A)):
        raise NoMotionError(f"moving part too small ({int(moving.sum())} points)")
    fit = moving & (d - r > 0.5 * tau)

    def rms_pairs(model: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum((_apply(model, A[fit]) - B[fit]) ** 2, axis=1))))

    return T, moving, moving.copy(), tau, rms_pairs


def _resolve_mask(X: np.ndarray, r: np.ndarray, d: np.ndarray, tau: float, k: int = 8) -> np.ndarray:
    """Moving mask from each point's residual under the motion (``r``) and under staying
    put (``d``). Points explained clearly better (by tau / 2) one way are labelled so;
    points explained about equally (near a hinge axis, on faces that slide along
    themselves) take the majority label of their ``k`` nearest clearly labelled points;
    points explained by neither are outliers, static."""
    moving = (r < tau) & (d - r > 0.5 * tau)
    static = (d < tau) & (r - d > 0.5 * tau)
    unsure = ((r < tau) | (d < tau)) & ~moving & ~static
    sure = moving | static
    if unsure.any() and sure.sum() >= k:
        _, idx = cKDTree(X[sure]).query(X[unsure], k=k)
        moving[unsure] = moving[sure][idx].mean(1) > 0.5
    return moving


def _spacing(tree: cKDTree, x: np.ndarray, rng: np.random.Generator) -> float:
    """Median distance of a point to its nearest other point (sampling density)."""
    idx = _subsample(len(x), 2000, rng)
    dist, _ = tree.query(x[idx], k=2)
    return float(np.median(dist[:, 1]))


def _hypothesis_rotations(Xa: np.ndarray, Xb: np.ndarray) -> np.ndarray:
    """Rotations to start ICP from: identity plus 15-degree steps about the frame axes
    and the principal axes of both changed regions (hinges are usually one of these)."""
    axes = [np.eye(3)[i] for i in range(3)]
    for X in (Xa, Xb):
        if len(X) >= 3:
            _, _, vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
            axes.extend(vt)
    Rs = [np.eye(3)]
    for axis in axes:
        for k in range(1, 24):
            Rs.append(rotation_matrix(axis / np.linalg.norm(axis), math.radians(15.0 * k)))
    return np.stack(Rs)


def _fit_unordered(A, B, rel_threshold, rng):
    """Changed regions by nearest-neighbour distance, then multi-start symmetric trimmed ICP.

    tau = max(rel_threshold * diagonal, 3 * max(spacing of A, spacing of B, median
    A->B distance)): static surfaces sampled twice (with noise) stay within it.
    """
    tree_a, tree_b = cKDTree(A), cKDTree(B)
    size = max(_bbox_diagonal(A), _bbox_diagonal(B))
    d_ab, _ = tree_b.query(A)
    d_ba, _ = tree_a.query(B)
    base = max(_spacing(tree_a, A, rng), _spacing(tree_b, B, rng), float(np.median(d_ab)), float(np.median(d_ba)))
    tau = max(rel_threshold * size, 3.0 * base)
    cand_a, cand_b = np.flatnonzero(d_ab > tau), np.flatnonzero(d_ba > tau)
    need = _min_moving(min(len(A), len(B)))
    if len(cand_a) + len(cand_b) < 2 * need or max(len(cand_a), len(cand_b)) < need:
        raise NoMotionError(f"no moving part: {len(cand_a)} points of A and {len(cand_b)} of B are farther than {tau:.4g} from the other state")
    cap = max(3.0 * tau, 0.05 * size)

    def score(T: np.ndarray, Xa: np.ndarray, Xb: np.ndarray) -> float:
        total = 0.0
        if len(Xa):
            da, _ = tree_b.query(_apply(T, Xa), distance_upper_bound=cap)
            total += float(np.minimum(da, cap).mean())
        if len(Xb):
            db, _ = tree_a.query(_apply(rigid_inverse(T), Xb), distance_upper_bound=cap)
            total += float(np.minimum(db, cap).mean())
        return total

    # 1. rotations: identity, then the five whose centroid-aligned placement scores best
    #    (on a few hundred points). A side whose moved part hides in the other state's
    #    surfaces (a closed lid lying on its base) may have no candidates; its centroid
    #    then falls back to the other side's.
    Xa_s, Xb_s = A[cand_a[_subsample(len(cand_a), 300, rng)]], B[cand_b[_subsample(len(cand_b), 300, rng)]]
    ca = A[cand_a].mean(0) if len(cand_a) else B[cand_b].mean(0)
    cb = B[cand_b].mean(0) if len(cand_b) else ca
    rotations = _hypothesis_rotations(A[cand_a], B[cand_b])
    coarse = [score(_rigid(R, cb - R @ ca), Xa_s, Xb_s) for R in rotations]
    chosen = [0] + [i for i in np.argsort(coarse) if i != 0][:5]
    # 2. translations for each: centroid alignment, and Hough votes (centroids mislead when
    #    the changed regions are different pieces of the part)
    budget = 100_000  # vote pairs per side and rotation
    A_s = A[_subsample(len(A), budget // max(1, len(Xb_s)), rng)]
    B_s = B[_subsample(len(B), budget // max(1, len(Xa_s)), rng)]
    Xa_l, Xb_l = Xa_s[_subsample(len(Xa_s), 150, rng)], Xb_s[_subsample(len(Xb_s), 150, rng)]
    starts = []  # (T, fit rotation)
    for i in chosen:
        R = rotations[i]
        ts = [cb - R @ ca]
        if len(Xa_s) and len(Xb_s):
            ts += _vote_translations(R, Xa_s, Xb_s, A_s, B_s, tau)
        if i == 0:  # slides: also search along likely directions (repeated parts fool the votes)
            ts += _line_search_translations(Xa_l, Xb_l, tree_a, tree_b, cb - ca, tau, 0.6 * size, cap)
        for t in ts:
            starts.append((_rigid(R, t), True))
            if i == 0:
                starts.append((_rigid(R, t), False))
    # 3. coarse ICP from every start on the small sets, fine ICP from the best distinct few
    coarse_fits = []
    for T0, rotation in starts:
        T = _icp(T0, Xa_s, Xb_s, A, B, tree_a, tree_b, tau, cap, rotation, iters=15)
        coarse_fits.append((score(T, Xa_s, Xb_s), rotation, T))
    coarse_fits.sort(key=lambda r: r[0])
    picked: list = []
    for fit in coarse_fits:
        if fit[1] and sum(p[1] for p in picked) < 4 and not any(_same_motion(fit[2], p[2], tau) for p in picked):
            picked.append(fit)
    picked.append(next(fit for fit in coarse_fits if not fit[1]))
    Xa, Xb = A[cand_a[_subsample(len(cand_a), 1000, rng)]], B[cand_b[_subsample(len(cand_b), 1000, rng)]]
    results = []  # (score, is a rotation, hinge prior, T)
    for _, rotation, T0 in picked:
        T = _icp(T0, Xa, Xb, A, B, tree_a, tree_b, tau, cap, rotation)
        prior = _axis_offset(T, Xa, Xb, tau) + _mean_displacement(T, Xa, Xb) if rotation else 0.0
        results.append((score(T, Xa, Xb), rotation, prior, T))
    # 4. ties broken by parsimony (see PARSIMONY)
    best = min(r[0] for r in results)
    ties = [r for r in results if r[0] <= best * (1.0 + PARSIMONY) + 1e-12]
    T = min(ties, key=lambda r: (r[1], r[2]))[3]
    # moving: A points that the motion puts on B (better than staying put) and vice versa
    dT_a, _ = tree_b.query(_apply(T, A))
    moving = _resolve_mask(A, dT_a, d_ab, tau)
    dT_b, _ = tree_a.query(_apply(rigid_inverse(T), B))
    target = _resolve_mask(B, dT_b, d_ba, tau)
    if moving.sum() < need:
        raise NoMotionError(f"moving part too small ({int(moving.sum())} points)")

    def rms_pairs(model: np.ndarray) -> float:
        da, _ = tree_b.query(_apply(model, A[moving]))
        return float(np.sqrt(np.mean(np.minimum(da, cap) ** 2)))

    return T, moving, target, tau, rms_pairs


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _same_motion(T1: np.ndarray, T2: np.ndarray, tau: float) -> bool:
    return bool(np.abs(T1[:3, :3] - T2[:3, :3]).max() < 0.035 and np.linalg.norm(T1[:3, 3] - T2[:3, 3]) < tau)


def _axis_offset(T: np.ndarray, Xa: np.ndarray, Xb: np.ndarray, tau: float) -> float:
    """How far a motion's rotation axis passes from the changed points (their 2% distance
    quantile), less the radius within which a point moves by under ``tau`` and so cannot
    be a changed point. With the mean displacement it tells a hinge from the mirror
    solutions of a symmetric door: those swing about an axis far from the part
    (openings past 90 deg) or flip the part about its middle (small openings), moving
    it much more."""
    axis, angle = axis_angle(T[:3, :3])
    if angle < 1e-6:
        return 0.0
    axial = float(T[:3, 3] @ axis)
    p0 = np.linalg.lstsq(np.eye(3) - T[:3, :3], T[:3, 3] - axial * axis, rcond=None)[0]
    X = np.concatenate([Xa, _apply(rigid_inverse(T), Xb)])
    v = X - p0
    d = np.linalg.norm(v - np.outer(v @ axis, axis), axis=1)
    return max(0.0, float(np.quantile(d, 0.02)) - tau / (2.0 * math.sin(angle / 2.0)))


def _mean_displacement(T: np.ndarray, Xa: np.ndarray, Xb: np.ndarray) -> float:
    """How far the motion carries the changed points (A forward, B backward)."""
    X = np.concatenate([Xa, _apply(rigid_inverse(T), Xb)])
    return float(np.linalg.norm(_apply(T, X) - X, axis=1).mean())


def _vote_translations(R: np.ndarray, Xa: np.ndarray, Xb: np.ndarray, A_s: np.ndarray, B_s: np.ndarray, tau: float,
                       top: int = 3) -> list[np.ndarray]:
    """The most voted translations t = b - R a (bins of size tau; the mean vote of each
    bin): a Hough transform for the part's shift.

    Votes pair A's changed points with all of B and all of A with B's changed points:
    the changed regions of the two states are often different pieces of the part (a
    drawer's vacated rear in A, its pulled-out front in B), so they are not matched to
    each other but each to the whole other state.
    """
    diffs = np.concatenate([(B_s[None, :, :] - (Xa @ R.T)[:, None, :]).reshape(-1, 3),
                            (Xb[None, :, :] - (A_s @ R.T)[:, None, :]).reshape(-1, 3)])
    keys = np.floor(diffs / tau).astype(np.int64)
    keys -= keys.min(0)
    span = keys.max(0) + 1
    flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
    uniq, counts = np.unique(flat, return_counts=True)
    return [diffs[flat == k].mean(0) for k in uniq[np.argsort(-counts)[:top]]]


def _line_search_translations(Xa: np.ndarray, Xb: np.ndarray, tree_a: cKDTree, tree_b: cKDTree, shift: np.ndarray,
                              tau: float, max_len: float, cap: float, top: int = 2) -> list[np.ndarray]:
    """Best-scoring translations along the frame axes, the principal axes of the changed
    regions and the centroid shift, in steps of tau / 2 up to ``max_len`` (both signs).
    Two stacked identical racks make many votes for "onto the other rack"; scoring
    every step along a line does not care."""
    dirs = [np.eye(3)[i] for i in range(3)]
    for X in (Xa, Xb):
        if len(X) >= 3:
            dirs.append(np.linalg.svd(X - X.mean(0), full_matrices=False)[2][0])
    if np.linalg.norm(shift) > 1e-9:
        dirs.append(shift / np.linalg.norm(shift))
    steps = np.arange(1, int(max_len / (0.5 * tau)) + 1) * (0.5 * tau)
    ts = np.concatenate([np.outer(np.concatenate([steps, -steps]), d) for d in dirs])  # [K, 3]
    total = np.zeros(len(ts))
    for X, tree, sign in ((Xa, tree_b, 1.0), (Xb, tree_a, -1.0)):
        if len(X):
            d, _ = tree.query((X[None, :, :] + sign * ts[:, None, :]).reshape(-1, 3), distance_upper_bound=cap)
            total += np.minimum(d, cap).reshape(len(ts), len(X)).mean(1)
    return [ts[k] for k in np.argsort(total)[:top]]


def _icp(T: np.ndarray, Xa: np.ndarray, Xb: np.ndarray, A: np.ndarray, B: np.ndarray, tree_a: cKDTree, tree_b: cKDTree,
         tau: float, cap: float, rotation: bool = True, iters: int = 30) -> np.ndarray:
    """Symmetric trimmed point-to-point ICP: A's changed points onto all of B and B's
    changed points (pulled back) onto all of A, with a trimming radius shrinking from
    2 tau (at most ``cap``) to ``tau``: starts are within about that of the answer, and
    a wider radius lets static surfaces next to the part pull it off. ``rotation=False``
    fits a pure translation."""
    T = T.copy()
    for it in range(iters):
        radius = max(tau, min(cap, 2.0 * tau) * 0.85**it)
        da, ja = tree_b.query(_apply(T, Xa), distance_upper_bound=radius)
        db, jb = tree_a.query(_apply(rigid_inverse(T), Xb), distance_upper_bound=radius)
        ka, kb = np.isfinite(da), np.isfinite(db)
        if ka.sum() + kb.sum() < 3:
            break
        P = np.concatenate([Xa[ka], A[jb[kb]]])
        Q = np.concatenate([B[ja[ka]], Xb[kb]])
        if rotation:
            T_new = kabsch(P, Q)
        else:
            T_new = T.copy()
            T_new[:3, 3] = (Q - P @ T[:3, :3].T).mean(0)
        step = np.abs(T_new - T).max()
        T = T_new
        if step < 1e-7 and radius <= tau:
            break
    return T


def _refit_translation(A, B, moving, rigid, correspondence, tau):
    """Pure translation for a prismatic part: mean displacement (pairs), or
    translation-only ICP of the moving points (unordered)."""
    T = np.eye(4)
    if correspondence:
        T[:3, 3] = (B[moving] - A[moving]).mean(0)
        return T
    T[:3, 3] = _apply(rigid, A[moving]).mean(0) - A[moving].mean(0)
    tree_a, tree_b = cKDTree(A), cKDTree(B)
    rng = np.random.default_rng(0)
    Xa = A[np.flatnonzero(moving)[_subsample(int(moving.sum()), 1500, rng)]]
    d_ba, _ = tree_a.query(B)
    Xb_all = B[d_ba > tau]
    Xb = Xb_all[_subsample(len(Xb_all), 1500, rng)] if len(Xb_all) else B[:0]
    return _icp(T, Xa, Xb, A, B, tree_a, tree_b, tau, 3.0 * tau, rotation=False)


# --------------------------------------------------------------------------- input adapters


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
    from partrm.gaussians import layout

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


def read_obj_groups(path: PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
            from partrm.gaussians import read_ply

            g = read_ply(path)
            op = g.opacities.numpy()
            return g.means.numpy().astype(np.float64)[op > min_opacity], "gaussians", None
        except (ValueError, KeyError):
            pass  # not a 3DGS file: a plain point cloud or mesh
    import trimesh

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
        from partrm.gaussians import gaussians_to_lgm, read_ply

        try:
            return gaussians_to_lgm(read_ply(path)).double().numpy()
        except (ValueError, KeyError):
            return None
    return None


# --------------------------------------------------------------------------- dataset ground truth


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
    from partdrag4d import store

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
    from partdrag4d import store

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
    from partdrag4d import store

    root = Path(root)
    _check_pair(_state(root, state_a), _state(root, state_b))
    a = store.read_state_points(root, state_a)
    b = store.read_state_points(root, state_b)
    return estimate_articulation(a, b, correspondence, **kwargs)


def dataset_world_frame(root: PathLike, object_id: str) -> np.ndarray:
    """Canonical -> the asset's own (URDF world) frame: the inverse normalisation."""
    from partdrag4d import store

    n = store.read_object(root, object_id)["normalisation"]
    return np.linalg.inv(np.asarray(n["matrix"], dtype=np.float64))


def dataset_meshes(root: PathLike, state_a: str, estimate: ArticulationEstimate) -> tuple[Optional[tuple], Optional[tuple]]:
    """(static, moving) meshes of state A (canonical frame) from its ``mesh.obj``: a link
    is moving when most of its surface samples are in ``estimate.moving_mask``.
    (None, None) when the state has no mesh or the mask is not over the state's points."""
    from partdrag4d import store

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


# --------------------------------------------------------------------------- evaluation


def _line_point_distance(p: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> float:
    v = p - origin
    return float(np.linalg.norm(v - (v @ direction) * direction))


def line_distance(p1: np.ndarray, u1: np.ndarray, p2: np.ndarray, u2: np.ndarray) -> float:
    """Closest distance between two infinite lines (0 for any two intersecting lines)."""
    n = np.cross(u1, u2)
    nn = float(np.linalg.norm(n))
    if nn < 1e-9:
        return _line_point_distance(p2, p1, u1)
    return abs(float((p2 - p1) @ n)) / nn


def compare(estimate: ArticulationEstimate, truth: ArticulationTruth) -> dict:
    """Errors of an estimate against the truth.

    axis_angle_deg: angle between the axis lines (sign-free, <= 90). pivot_distance
    (revolute only): how far apart the two axis lines are *at the part*: the larger of
    the distance from each line's pivot (its point closest to the moving part's
    centroid) to the other line. Unlike the infinite-line distance (``line_distance``,
    also reported) it does not vanish for two intersecting but tilted axes.
    amount_error: |signed amount - true amount| after aligning the axes' signs
    (radians, wrapped to [0, pi], or length), only when the type is right. mask_iou
    when both masks exist (meaningless unless A is the truth's own point set).
    """
    type_correct = estimate.joint_type == truth.joint_type
    cosine = float(np.clip(estimate.axis @ truth.axis, -1.0, 1.0))
    angle = math.degrees(math.acos(abs(cosine)))
    out: dict[str, Any] = {
        "type_correct": type_correct,
        "joint_type": estimate.joint_type,
        "true_type": truth.joint_type,
        "axis_angle_deg": angle,
        "pivot_distance": None,
        "line_distance": None,
        "amount_error": None,
        "mask_iou": None,
    }
    if type_correct:
        sign = 1.0 if cosine >= 0 else -1.0
        diff = sign * estimate.amount - truth.amount
        if truth.joint_type == "revolute":  # angles are periodic (at pi the axis sign is arbitrary)
            diff = (diff + math.pi) % (2.0 * math.pi) - math.pi
        out["amount_error"] = abs(diff)
    if type_correct and truth.joint_type == "revolute" and truth.pivot is not None:
        out["pivot_distance"] = max(_line_point_distance(truth.pivot, estimate.pivot, estimate.axis),
                                    _line_point_distance(estimate.pivot, truth.pivot, truth.axis))
        out["line_distance"] = line_distance(estimate.pivot, estimate.axis, truth.pivot, truth.axis)
    if truth.moving_mask is not None and truth.moving_mask.shape == estimate.moving_mask.shape:
        inter = np.logical_and(truth.moving_mask, estimate.moving_mask).sum()
        union = np.logical_or(truth.moving_mask, estimate.moving_mask).sum()
        out["mask_iou"] = float(inter / union) if union else 1.0
    return out


# --------------------------------------------------------------------------- URDF


def write_obj_mesh(path: PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Geometry-only OBJ (no materials): what every URDF loader reads."""
    from partdrag4d import store

    lines = ["# PartRM articulation extraction\n"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in np.asarray(vertices, np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in np.asarray(faces, np.int64)]
    store.atomic_write_text(Path(path), "".join(lines))


def _as_mesh(mesh: Any) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if mesh is None:
        return None
    if isinstance(mesh, (str, Path)):
        import trimesh

        m = trimesh.load(mesh, force="mesh", process=False)
        return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    V, F = mesh
    return np.asarray(V, np.float64), np.asarray(F, np.int64)


def _fmt(v) -> str:
    return " ".join(f"{float(x):.9g}" for x in v)


def _inertial(parent: ET.Element, center: np.ndarray, extent: np.ndarray, mass: float = 1.0) -> None:
    """Solid-box inertia of the link's extent: simulators refuse massless moving links."""
    ext = np.maximum(np.asarray(extent, np.float64), 1e-3)
    ixx = mass * (ext[1] ** 2 + ext[2] ** 2) / 12.0
    iyy = mass * (ext[0] ** 2 + ext[2] ** 2) / 12.0
    izz = mass * (ext[0] ** 2 + ext[1] ** 2) / 12.0
    inertial = ET.SubElement(parent, "inertial")
    ET.SubElement(inertial, "origin", xyz=_fmt(center), rpy="0 0 0")
    ET.SubElement(inertial, "mass", value=f"{mass:g}")
    ET.SubElement(inertial, "inertia", ixx=f"{ixx:.9g}", ixy="0", ixz="0", iyy=f"{iyy:.9g}", iyz="0", izz=f"{izz:.9g}")


COLLISION_MODES = ("none", "mesh", "hull", "vhacd")
"""``write_urdf(collision=...)``: no collision geometry; the visual mesh itself; its convex
hull (trimesh); an approximate convex decomposition (V-HACD through ``vhacdx``)."""

VHACD_OPTIONS = {"maxConvexHulls": 16, "resolution": 50000, "maxNumVerticesPerCH": 32, "asyncACD": False}
"""V-HACD settings of ``collision="vhacd"``: 16 hulls at most, synchronous (same input, same hulls)."""


def collision_meshes(mesh: tuple[np.ndarray, np.ndarray], mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Collision geometry of a link mesh for ``mode`` (see ``COLLISION_MODES``)."""
    if mode == "none":
        return []
    if mode == "mesh":
        return [mesh]
    import trimesh

    m = trimesh.Trimesh(mesh[0], mesh[1], process=False)
    if mode == "hull":
        hull = m.convex_hull
        return [(np.asarray(hull.vertices, np.float64), np.asarray(hull.faces, np.int64))]
    if mode == "vhacd":
        parts = trimesh.decomposition.convex_decomposition(m, **VHACD_OPTIONS)
        out = [(np.asarray(p["vertices"], np.float64), np.asarray(p["faces"], np.int64).reshape(-1, 3)) for p in parts]
        out = [p for p in out if len(p[1])]
        if out:
            return out
        hull = m.convex_hull  # V-HACD gives nothing for flat or tiny meshes
        return [(np.asarray(hull.vertices, np.float64), np.asarray(hull.faces, np.int64))]
    raise ValueError(f"collision must be one of {', '.join(COLLISION_MODES)}, got {mode!r}")


def write_urdf(estimate: ArticulationEstimate, path: PathLike, static_mesh: Any = None, moving_mesh: Any = None,
               points: Optional[np.ndarray] = None, name: str = "articulated", frame: Optional[np.ndarray] = None,
               collision: Union[str, bool] = "none", effort: float = 100.0, velocity: float = 1.0) -> Path:
    """A URDF with a ``base`` link (static part) and a ``moving`` link on one joint.

    The base link's frame is the input frame (canonical unless ``frame`` maps the
    estimate and meshes elsewhere, e.g. ``dataset_world_frame``). The joint frame sits
    at ``estimate.pivot`` with identity rotation and ``axis`` = the estimated axis;
    limits are [0, amount] (q = 0 is state A, q = amount state B). The moving link's
    geometry is the state-A geometry shifted by -pivot, so FK at q reproduces
    ``estimate.joint_transform(q)``.

    Meshes (trimesh objects, (vertices, faces) tuples or files, in state A) are written
    as geometry-only OBJs beside the URDF (``<stem>_base.obj``, ``<stem>_moving.obj``)
    and used as visuals. ``collision`` (``COLLISION_MODES``): ``"none"`` (default) adds
    no collision geometry; ``"mesh"`` the visual mesh; ``"hull"`` its convex hull;
    ``"vhacd"`` a convex decomposition (``<stem>_<link>_collision_<k>.obj``, one
    ``<collision>`` each). Simulators convexify collision meshes (MuJoCo always), so a
    concave cabinet given as ``"mesh"`` or ``"hull"`` swallows its own drawer: use
    ``"vhacd"`` for contact. ``True`` means ``"mesh"``. A link without a mesh gets a
    small box visual (and collision unless ``"none"``; 1% of the object size) at the
    centroid of its points (``points``: state A's points with ``estimate.moving_mask``
    over them), so viewers that need geometry have some; every link gets a box inertia
    (mass 1) because simulators reject massless moving links.

    The robot carries MuJoCo's ``<mujoco><compiler discardvisual="false"/></mujoco>``
    extension (other URDF readers ignore it): without it MuJoCo drops visual-only
    geometry and the loaded model has no geoms.
    """
    if collision is True:
        collision = "mesh"
    elif collision is False or collision is None:
        collision = "none"
    if collision not in COLLISION_MODES:
        raise ValueError(f"collision must be one of {', '.join(COLLISION_MODES)}, got {collision!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    est = estimate
    meshes = {"base": _as_mesh(static_mesh), "moving": _as_mesh(moving_mesh)}
    pts = None if points is None else np.asarray(points, np.float64)
    if pts is not None and len(pts) != len(est.moving_mask):
        raise ValueError(f"points ({len(pts)}) do not match the estimate's mask ({len(est.moving_mask)})")
    if frame is not None:
        M = np.asarray(frame, np.float64)
        est = est.transformed(M)
        meshes = {k: None if m is None else (_apply(M, m[0]), m[1]) for k, m in meshes.items()}
        pts = None if pts is None else _apply(M, pts)
    pivot = est.pivot
    # geometry per link in its own frame: base = input frame, moving = shifted by -pivot
    link_points: dict[str, Optional[np.ndarray]] = {"base": None, "moving": None}
    if pts is not None:
        link_points = {"base": pts[~est.moving_mask], "moving": pts[est.moving_mask] - pivot}
    for k, m in meshes.items():
        if m is not None and k == "moving":
            meshes[k] = (m[0] - pivot, m[1])
    everything = [x for x in [*link_points.values(), *(m[0] for m in meshes.values() if m is not None)] if x is not None and len(x)]
    size = _bbox_diagonal(np.concatenate(everything)) if everything else 1.0
    robot = ET.Element("robot", name=name)
    ET.SubElement(ET.SubElement(robot, "mujoco"), "compiler", discardvisual="false")
    for link_name in ("base", "moving"):
        link = ET.SubElement(robot, "link", name=link_name)
        mesh, p = meshes[link_name], link_points[link_name]
        geom_pts = mesh[0] if mesh is not None else p
        if geom_pts is not None and len(geom_pts):
            lo, hi = geom_pts.min(0), geom_pts.max(0)
            center, extent = (lo + hi) / 2.0, hi - lo
        else:
            center = (est.centroid - pivot) if link_name == "moving" else np.zeros(3)
            extent = np.full(3, 0.01 * size)
        _inertial(link, center, extent)
        for stale in path.parent.glob(f"{path.stem}_{link_name}_collision_*.obj"):  # of an earlier run
            stale.unlink()
        if mesh is not None:
            mesh_name = f"{path.stem}_{link_name}.obj"
            write_obj_mesh(path.parent / mesh_name, *mesh)
            shapes = [("visual", mesh_name)]
            parts = collision_meshes(mesh, collision)
            if collision == "mesh":
                shapes.append(("collision", mesh_name))
            else:
                for k, part in enumerate(parts):
                    part_name = f"{path.stem}_{link_name}_collision_{k}.obj"
                    write_obj_mesh(path.parent / part_name, *part)
                    shapes.append(("collision", part_name))
            for tag, filename in shapes:
                el = ET.SubElement(link, tag)
                ET.SubElement(el, "origin", xyz="0 0 0", rpy="0 0 0")
                ET.SubElement(ET.SubElement(el, "geometry"), "mesh", filename=filename)
        else:
            marker = p.mean(0) if p is not None and len(p) else center
            for tag in ["visual"] + (["collision"] if collision != "none" else []):
                el = ET.SubElement(link, tag)
                ET.SubElement(el, "origin", xyz=_fmt(marker), rpy="0 0 0")
                ET.SubElement(ET.SubElement(el, "geometry"), "box", size=_fmt(np.full(3, 0.01 * size)))
    joint = ET.SubElement(robot, "joint", name="joint_0", type=est.joint_type)
    ET.SubElement(joint, "parent", link="base")
    ET.SubElement(joint, "child", link="moving")
    ET.SubElement(joint, "origin", xyz=_fmt(pivot), rpy="0 0 0")
    ET.SubElement(joint, "axis", xyz=_fmt(est.axis))
    lo, hi = est.limits()
    ET.SubElement(joint, "limit", lower=f"{lo:.9g}", upper=f"{hi:.9g}", effort=f"{effort:g}", velocity=f"{velocity:g}")
    ET.indent(robot)
    from partdrag4d import store

    store.atomic_write_text(path, '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode") + "\n")
    return path


# --------------------------------------------------------------------------- one call for the CLI


@dataclass
class ExtractResult:
    estimate: ArticulationEstimate
    urdf: Path
    report: Path
    metrics: Optional[dict] = None
    seconds: float = 0.0


def extract(out: PathLike, source: Optional[PathLike] = None, target: Optional[PathLike] = None, data: Optional[PathLike] = None,
            state_a: Optional[str] = None, state_b: Optional[str] = None, correspondence: Optional[bool] = None,
            world: bool = False, min_opacity: float = MIN_OPACITY, num_samples: int = 16384, rel_threshold: float = REL_THRESHOLD,
            seed: int = 0, collision: str = "none") -> ExtractResult:
    """Everything ``partrm articulation`` does: estimate, write ``<out>/articulation.urdf``
    (+ meshes) and ``<out>/articulation.json`` (estimate, and errors against the truth
    for dataset states).

    Inputs: two files (``source``, ``target``: Gaussians ``.ply``/``.npy``, points
    ``.npy``/``.ply``, or meshes), or a dataset (``data``) with two states of one
    sequence. ``correspondence=None`` decides: on for dataset states and for two
    Gaussian/point files of equal length, off otherwise (meshes are sampled
    independently). ``world``: URDF in the asset's frame (dataset only) instead of
    the canonical one. ``collision``: the URDF's collision geometry (``COLLISION_MODES``).
    """
    if collision not in COLLISION_MODES:
        raise ValueError(f"collision must be one of {', '.join(COLLISION_MODES)}, got {collision!r}")
    t0 = time.perf_counter()
    out = Path(out)
    kw = {"rel_threshold": rel_threshold, "seed": seed}
    metrics = None
    frame = None
    static_mesh = moving_mesh = None
    est_urdf = None
    if data is not None:
        from partdrag4d import store

        if not state_a or not state_b:
            raise ValueError("with a dataset give both states")
        corr = True if correspondence is None else correspondence
        est = from_dataset_states(data, state_a, state_b, corr, **kw)
        points = store.read_state_points(data, state_a)
        truth = dataset_truth(data, state_a, state_b)
        metrics = compare(est, truth)
        static_mesh, moving_mesh = dataset_meshes(data, state_a, est)
        if world:
            frame = dataset_world_frame(data, _state(Path(data), state_a)["object_id"])
    else:
        if source is None or target is None:
            raise ValueError("give two input files (source and target) or a dataset with two states")
        if world:
            raise ValueError("--world needs a dataset (its normalisation)")
        ga, gb = load_gaussians(source), load_gaussians(target)
        if ga is not None and gb is not None:
            corr = (len(ga) == len(gb)) if correspondence is None else correspondence
            est = from_gaussians(ga, gb, corr, min_opacity, **kw)
            opaque = ga[:, 3] > min_opacity  # transparent Gaussians (anywhere) stay out of the URDF's links
            points = ga[opaque, :3]
            est_urdf = replace(est, moving_mask=est.moving_mask[opaque])
        else:
            pa, kind_a, mesh_a = load_points(source, num_samples, min_opacity, seed)
            pb, kind_b, _ = load_points(target, num_samples, min_opacity, seed + 1)
            if correspondence is None:
                corr = len(pa) == len(pb) and "mesh" not in (kind_a, kind_b)
            else:
                corr = correspondence
            est = estimate_articulation(pa, pb, corr, **kw)
            points = pa
            if mesh_a is not None:
                static_mesh, moving_mesh = split_mesh(*mesh_a, pa, est.moving_mask)
    est_urdf = est if est_urdf is None else est_urdf
    urdf = write_urdf(est_urdf, out / "articulation.urdf", static_mesh, moving_mesh, points=points, frame=frame, collision=collision)
    shown = est.transformed(frame) if frame is not None else est
    report = {"estimate": shown.to_dict(), "frame": "world" if frame is not None else "input (canonical for datasets)",
              "inputs": {"source": str(source) if source else None, "target": str(target) if target else None,
                         "data": str(data) if data else None, "state_a": state_a, "state_b": state_b},
              "metrics_canonical": metrics, "urdf": urdf.name}
    from partdrag4d import store

    store.atomic_write_text(out / "articulation.json", json.dumps(report, indent=1) + "\n")
    return ExtractResult(est, urdf, out / "articulation.json", metrics, time.perf_counter() - t0)
