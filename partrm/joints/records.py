"""What the joint estimator returns and what it is scored against: ``ArticulationEstimate`` (a joint found
between two states) and ``ArticulationTruth`` (the dataset's), with the thresholds both use."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np

from partdrag4d.errors import ToolkitError
from partdrag4d.rigid import apply as _apply, joint_motion, rotation_angle_deg, similarity_parts

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


class NoMotionError(ToolkitError, ValueError):
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
        s, Q = similarity_parts(M)
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
