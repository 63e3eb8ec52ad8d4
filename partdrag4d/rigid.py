"""Rigid motions and quaternions: the one low-level module for rotations, used by the assets
(joint motion), the articulation estimator, LGM's frame transforms, the PLY writer and the
Gaussian rasterizer.

Joints: ``joint_motion`` is the 4x4 motion of a revolute joint (a turn about a line) or a
prismatic one (a shift along an axis).

Conventions: rotation matrices act on column vectors (``x' = R x``); 4x4 transforms are
``[[R, t], [0, 1]]``; quaternions are ``(w, x, y, z)`` in the last axis, Hamilton product.

The quaternion functions take numpy arrays or torch tensors and answer in the same kind
(differentiable for tensors); this module never imports torch itself: a tensor's own
module is used, so the dataset side stays numpy-only.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = [
    "apply",
    "axis_angle",
    "joint_motion",
    "quat_multiply",
    "quat_to_rotmat",
    "rigid_inverse",
    "rotation_angle_deg",
    "rotation_matrix",
    "similarity_parts",
]


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """[3, 3] rotation by ``angle`` (radians) about the unit ``axis`` (Rodrigues' formula)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    C = 1.0 - c
    return np.array(
        [
            [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
        ]
    )


def apply(T: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Points ``x`` [..., 3] moved by the 4x4 transform ``T``."""
    return x @ T[:3, :3].T + T[:3, 3]


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (rotation transposed, no general inverse)."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def rotation_angle_deg(R: np.ndarray) -> float:
    """The angle of a rotation matrix, in degrees [0, 180]."""
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def axis_angle(R: np.ndarray) -> tuple[np.ndarray, float]:
    """(unit axis, angle in [0, pi]) of a rotation; the axis is the null vector of
    R - I (stable for every angle), signed so that the rotation is positive about it."""
    angle = math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
    _, _, vt = np.linalg.svd(R - np.eye(3))
    axis = vt[-1] / np.linalg.norm(vt[-1])
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])  # 2 sin(angle) axis
    if float(w @ axis) < 0:
        axis = -axis
    return axis, angle


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


def similarity_parts(M: np.ndarray) -> tuple[float, np.ndarray]:
    """(scale s, rotation Q) of a 4x4 similarity ``M`` = [[s Q, t], [0, 1]]; ValueError otherwise."""
    A = M[:3, :3]
    det = float(np.linalg.det(A))
    if det <= 0:
        raise ValueError("frame transform must be a proper similarity (positive determinant)")
    s = det ** (1.0 / 3.0)
    Q = A / s
    if not np.allclose(Q @ Q.T, np.eye(3), atol=1e-6):
        raise ValueError("frame transform is not a similarity (uniform scale x rotation + translation)")
    return s, Q


def _torch_of(x: Any):
    """The torch module when ``x`` is a tensor (torch is then imported already), else None."""
    return sys.modules["torch"] if type(x).__module__.split(".")[0] == "torch" else None


def quat_to_rotmat(q: Any) -> Any:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (w, x, y, z), normalised first
    (numpy array or torch tensor in, the same kind out)."""
    torch = _torch_of(q)
    if torch is not None:
        q = q / q.norm(dim=-1, keepdim=True)
        w, x, y, z = q.unbind(-1)
        stack = torch.stack
    else:
        q = np.asarray(q)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        w, x, y, z = np.moveaxis(q, -1, 0)
        stack = np.stack
    m = stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    )  # fmt: skip
    return m.reshape(tuple(m.shape[:-1]) + (3, 3))


def quat_multiply(a: Any, b: Any) -> Any:
    """Hamilton product a * b of (w, x, y, z) quaternions, broadcasting (rotation b first,
    then a); numpy arrays or torch tensors."""
    torch = _torch_of(a)
    if torch is not None:
        (aw, ax, ay, az), (bw, bx, by, bz) = a.unbind(-1), b.unbind(-1)
        stack = torch.stack
    else:
        (aw, ax, ay, az), (bw, bx, by, bz) = np.moveaxis(a, -1, 0), np.moveaxis(b, -1, 0)
        stack = np.stack
    return stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)  # fmt: skip
