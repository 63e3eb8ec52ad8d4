"""Scoring an estimated joint against the truth: type, axis angle, pivot distance, amount error."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from partrm.joints.records import ArticulationEstimate, ArticulationTruth


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
