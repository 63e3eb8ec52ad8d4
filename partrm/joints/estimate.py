"""Estimating a joint from two point sets: the rigid motion of the moving part (RANSAC over 3-point
Kabsch fits with correspondence; a multi-start, symmetric, trimmed ICP without) and its
decomposition into a revolute or prismatic joint."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from partdrag4d.rigid import apply as _apply, axis_angle, joint_motion, rigid_inverse, rotation_matrix
from partrm.joints.records import MIN_MOVING, PARSIMONY, REL_THRESHOLD, REVOLUTE_MIN_DEG, ArticulationEstimate, NoMotionError


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


@dataclass(frozen=True)
class _Pair:
    """Two unordered point sets with their trees, the threshold tau and the distance cap of scores."""

    A: np.ndarray
    B: np.ndarray
    tree_a: cKDTree
    tree_b: cKDTree
    tau: float
    cap: float

    def score(self, T: np.ndarray, Xa: np.ndarray, Xb: np.ndarray) -> float:
        """Mean capped distance of T(Xa) to B plus of T^-1(Xb) to A."""
        total = 0.0
        if len(Xa):
            da, _ = self.tree_b.query(_apply(T, Xa), distance_upper_bound=self.cap)
            total += float(np.minimum(da, self.cap).mean())
        if len(Xb):
            db, _ = self.tree_a.query(_apply(rigid_inverse(T), Xb), distance_upper_bound=self.cap)
            total += float(np.minimum(db, self.cap).mean())
        return total

    def icp(self, T0: np.ndarray, Xa: np.ndarray, Xb: np.ndarray, rotation: bool, **kw) -> np.ndarray:
        return _icp(T0, Xa, Xb, self.A, self.B, self.tree_a, self.tree_b, self.tau, self.cap, rotation, **kw)


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
    pair = _Pair(A, B, tree_a, tree_b, tau, max(3.0 * tau, 0.05 * size))
    Xa_s, Xb_s = A[cand_a[_subsample(len(cand_a), 300, rng)]], B[cand_b[_subsample(len(cand_b), 300, rng)]]
    starts = _icp_starts(pair, cand_a, cand_b, Xa_s, Xb_s, size, rng)
    T = _best_motion(pair, starts, cand_a, cand_b, Xa_s, Xb_s, rng)
    # moving: A points that the motion puts on B (better than staying put) and vice versa
    dT_a, _ = tree_b.query(_apply(T, A))
    moving = _resolve_mask(A, dT_a, d_ab, tau)
    dT_b, _ = tree_a.query(_apply(rigid_inverse(T), B))
    target = _resolve_mask(B, dT_b, d_ba, tau)
    if moving.sum() < need:
        raise NoMotionError(f"moving part too small ({int(moving.sum())} points)")

    def rms_pairs(model: np.ndarray) -> float:
        da, _ = tree_b.query(_apply(model, A[moving]))
        return float(np.sqrt(np.mean(np.minimum(da, pair.cap) ** 2)))

    return T, moving, target, tau, rms_pairs


def _icp_starts(pair: _Pair, cand_a: np.ndarray, cand_b: np.ndarray, Xa_s: np.ndarray, Xb_s: np.ndarray,
                size: float, rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    """Starting motions for ICP, each (T, fit rotation), from the changed points (``cand_*``,
    subsampled ``X*_s``) of both states."""
    A, B, tau = pair.A, pair.B, pair.tau
    # 1. rotations: identity, then the five whose centroid-aligned placement scores best
    #    (on a few hundred points). A side whose moved part hides in the other state's
    #    surfaces (a closed lid lying on its base) may have no candidates; its centroid
    #    then falls back to the other side's.
    ca = A[cand_a].mean(0) if len(cand_a) else B[cand_b].mean(0)
    cb = B[cand_b].mean(0) if len(cand_b) else ca
    rotations = _hypothesis_rotations(A[cand_a], B[cand_b])
    coarse = [pair.score(_rigid(R, cb - R @ ca), Xa_s, Xb_s) for R in rotations]
    chosen = [0] + [i for i in np.argsort(coarse) if i != 0][:5]
    # 2. translations for each: centroid alignment, and Hough votes (centroids mislead when
    #    the changed regions are different pieces of the part)
    budget = 100_000  # vote pairs per side and rotation
    A_s = A[_subsample(len(A), budget // max(1, len(Xb_s)), rng)]
    B_s = B[_subsample(len(B), budget // max(1, len(Xa_s)), rng)]
    Xa_l, Xb_l = Xa_s[_subsample(len(Xa_s), 150, rng)], Xb_s[_subsample(len(Xb_s), 150, rng)]
    starts = []
    for i in chosen:
        R = rotations[i]
        ts = [cb - R @ ca]
        if len(Xa_s) and len(Xb_s):
            ts += _vote_translations(R, Xa_s, Xb_s, A_s, B_s, tau)
        if i == 0:  # slides: also search along likely directions (repeated parts fool the votes)
            ts += _line_search_translations(Xa_l, Xb_l, pair.tree_a, pair.tree_b, cb - ca, tau, 0.6 * size, pair.cap)
        for t in ts:
            starts.append((_rigid(R, t), True))
            if i == 0:
                starts.append((_rigid(R, t), False))
    return starts


def _best_motion(pair: _Pair, starts: list[tuple[np.ndarray, bool]], cand_a: np.ndarray, cand_b: np.ndarray,
                 Xa_s: np.ndarray, Xb_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The motion ICP finds best from ``starts``: coarse ICP on the small sets, fine ICP on more
    changed points from the best distinct few, ties broken by parsimony."""
    # 3. coarse ICP from every start on the small sets, fine ICP from the best distinct few
    coarse_fits = []
    for T0, rotation in starts:
        T = pair.icp(T0, Xa_s, Xb_s, rotation, iters=15)
        coarse_fits.append((pair.score(T, Xa_s, Xb_s), rotation, T))
    coarse_fits.sort(key=lambda r: r[0])
    picked: list = []
    for fit in coarse_fits:
        if fit[1] and sum(p[1] for p in picked) < 4 and not any(_same_motion(fit[2], p[2], pair.tau) for p in picked):
            picked.append(fit)
    picked.append(next(fit for fit in coarse_fits if not fit[1]))
    Xa, Xb = pair.A[cand_a[_subsample(len(cand_a), 1000, rng)]], pair.B[cand_b[_subsample(len(cand_b), 1000, rng)]]
    results = []  # (score, is a rotation, hinge prior, T)
    for _, rotation, T0 in picked:
        T = pair.icp(T0, Xa, Xb, rotation)
        prior = _axis_offset(T, Xa, Xb, pair.tau) + _mean_displacement(T, Xa, Xb) if rotation else 0.0
        results.append((pair.score(T, Xa, Xb), rotation, prior, T))
    # 4. ties broken by parsimony (see PARSIMONY)
    best = min(r[0] for r in results)
    ties = [r for r in results if r[0] <= best * (1.0 + PARSIMONY) + 1e-12]
    return min(ties, key=lambda r: (r[1], r[2]))[3]


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
