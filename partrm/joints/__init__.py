"""Joints from two states (articulation extraction): from two states of an object (Gaussians, point clouds or
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

Modules, in the order the data flows: ``inputs`` (Gaussians, points, meshes -> point sets),
``estimate`` (rigid motion -> joint), ``truth`` (the dataset's joint), ``metrics`` (estimate
vs truth), ``urdf`` (the joint as a URDF), ``extract`` (all of it for the CLI); ``records``
holds the results. The rigid-motion maths is ``partdrag4d.rigid``.
"""

from __future__ import annotations

from partdrag4d.meshio import read_obj_groups
from partdrag4d.rigid import axis_angle, joint_motion, rigid_inverse, rotation_angle_deg, rotation_matrix
from partrm.joints.estimate import decompose_motion, estimate_articulation, kabsch
from partrm.joints.extract import ExtractResult, extract
from partrm.joints.inputs import from_gaussians, load_gaussians, load_points, sample_mesh
from partrm.joints.metrics import compare, line_distance
from partrm.joints.records import MIN_MOVING, MIN_OPACITY, PARSIMONY, REL_THRESHOLD, REVOLUTE_MIN_DEG, ArticulationEstimate, ArticulationTruth, NoMotionError, PathLike
from partrm.joints.truth import dataset_meshes, dataset_truth, dataset_world_frame, from_dataset_states, split_mesh, truth_from_transform
from partrm.joints.urdf import COLLISION_MODES, VHACD_OPTIONS, collision_meshes, write_urdf

__all__ = [
    "ArticulationEstimate",
    "ArticulationTruth",
    "COLLISION_MODES",
    "ExtractResult",
    "MIN_MOVING",
    "MIN_OPACITY",
    "NoMotionError",
    "PARSIMONY",
    "PathLike",
    "REL_THRESHOLD",
    "REVOLUTE_MIN_DEG",
    "VHACD_OPTIONS",
    "axis_angle",
    "collision_meshes",
    "compare",
    "dataset_meshes",
    "dataset_truth",
    "dataset_world_frame",
    "decompose_motion",
    "estimate_articulation",
    "extract",
    "from_dataset_states",
    "from_gaussians",
    "joint_motion",
    "kabsch",
    "line_distance",
    "load_gaussians",
    "load_points",
    "read_obj_groups",
    "rigid_inverse",
    "rotation_angle_deg",
    "rotation_matrix",
    "sample_mesh",
    "split_mesh",
    "truth_from_transform",
    "write_urdf",
]
