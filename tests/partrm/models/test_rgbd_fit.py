"""The RGB-D model's amount fit: the network's rigid motion scaled along its own screw until
the user's drags (each view's first drag) fit."""

from __future__ import annotations

import numpy as np
import torch

from partdrag4d.cameras import ring_cameras
from partrm.gaussians import layout
from partrm.models.rgbd import apply_changes, fit_amount, region_centroid, rigid_from_axis_angle, screw_scaled

S, SIZE, VIEWS = 16, 64, (0, 3, 6, 9)


def _matrix(motion: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """[B, 6] about ``centroid`` -> 4 x 4 matrices (x' = c + R (x - c) + t)."""
    R, _, t = rigid_from_axis_angle(motion)
    M = torch.eye(4, dtype=motion.dtype).repeat(len(motion), 1, 1)
    M[:, :3, :3] = R
    M[:, :3, 3] = t + centroid - torch.einsum("bij,bj->bi", R, centroid)
    return M


def test_screw_scaling_composes_like_repeating_the_motion():
    g = torch.Generator().manual_seed(0)
    motion, centroid = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    once, twice, none = screw_scaled(motion, centroid, torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64).expand(4, 3)).unbind(1)
    torch.testing.assert_close(once, motion, rtol=0, atol=1e-12)
    M = _matrix(motion, centroid)
    torch.testing.assert_close(_matrix(twice, centroid), M @ M, rtol=0, atol=1e-12)
    assert torch.equal(none, torch.zeros_like(none))


def _scene(seed: int = 0):
    """Static splatter images whose Gaussians lie at random points, a region of about a third
    of the cells, and the ring's 4 input cameras (K for SIZE, OpenCV c2w)."""
    rng = np.random.default_rng(seed)
    static = torch.zeros(1, len(VIEWS), 14, S, S, dtype=torch.float64)
    static[:, :, layout.XYZ] = torch.from_numpy(rng.uniform(-0.3, 0.3, (1, len(VIEWS), 3, S, S)))
    static[:, :, layout.ROTATION.start] = 1.0
    region = torch.from_numpy(rng.random((1, len(VIEWS), 1, S, S)) < 0.35)
    cams = [ring_cameras(SIZE)[v] for v in VIEWS]
    K = torch.from_numpy(np.stack([c.K for c in cams]))[None]
    c2w = torch.from_numpy(np.stack([c.c2w for c in cams]))[None]
    return static, region, K, c2w


def _drags(static, region, K, c2w, motion, seed: int = 1) -> torch.Tensor:
    """Per view 3 drags starting on region cells: the first ends where ``motion`` takes its
    Gaussian (the user's drag); the others are propagated copies of its 2D shift."""
    rng = np.random.default_rng(seed)
    centroid = region_centroid(static, region)
    M = _matrix(motion, centroid)[0]
    drags = torch.zeros(1, len(VIEWS), 3, 4, dtype=torch.float64)
    for v in range(len(VIEWS)):
        rows, cols = np.nonzero(region[0, v, 0].numpy())
        pick = rng.choice(len(rows), 3, replace=False)
        r, c = rows[pick[0]], cols[pick[0]]
        p = static[0, v, layout.XYZ, r, c]
        moved = M[:3, :3] @ p + M[:3, 3]
        w2c = torch.linalg.inv(c2w[0, v])
        cam = w2c[:3, :3] @ moved + w2c[:3, 3]
        end = torch.stack([K[0, v, 0, 0] * cam[0] / cam[2] + K[0, v, 0, 2], K[0, v, 1, 1] * cam[1] / cam[2] + K[0, v, 1, 2]]) / SIZE
        starts = torch.from_numpy(np.stack([(cols[pick] + 0.5) / S, (rows[pick] + 0.5) / S], axis=1))
        drags[0, v, :, :2] = starts
        drags[0, v, :, 2:] = starts + (end - starts[0])
    return drags


def test_the_fit_recovers_how_far_the_part_moved():
    static, region, K, c2w = _scene()
    centroid = region_centroid(static, region)
    pivot = torch.tensor([[0.2, 0.1, 0.0]], dtype=torch.float64)
    omega = torch.tensor([[0.0, 0.0, 0.8]], dtype=torch.float64)  # a door: 0.8 rad about a vertical hinge through pivot
    R = rigid_from_axis_angle(torch.cat([omega, torch.zeros_like(omega)], 1))[0]
    true = torch.cat([omega, torch.einsum("bij,bj->bi", R - torch.eye(3, dtype=R.dtype), centroid - pivot)], 1)
    drags = _drags(static, region, K, c2w, true)
    for guess in (0.4, 1.7):  # the network's screw, too short or too far
        network = screw_scaled(true, centroid, torch.tensor([[guess]], dtype=torch.float64))[:, 0]
        fitted = fit_amount(network, static, region, drags, None, K, c2w)
        torch.testing.assert_close(_matrix(fitted, centroid), _matrix(true, centroid), rtol=0, atol=0.01)


def test_still_drags_give_exactly_the_static_reconstruction():
    static, region, K, c2w = _scene()
    network = torch.tensor([[0.1, -0.3, 0.5, 0.05, 0.0, -0.02]], dtype=torch.float64)
    still = _drags(static, region, K, c2w, torch.zeros(1, 6, dtype=torch.float64))
    fitted = fit_amount(network, static, region, still, None, K, c2w)
    dense = torch.zeros(1, len(VIEWS), 7, S, S, dtype=torch.float64)
    assert torch.equal(apply_changes(static, fitted, dense, region, 1), static)


def test_without_a_user_drag_the_network_motion_stays():
    static, region, K, c2w = _scene()
    network = torch.tensor([[0.1, -0.3, 0.5, 0.05, 0.0, -0.02]], dtype=torch.float64)
    drags = _drags(static, region, K, c2w, network)
    valid = torch.zeros(drags.shape[:-1], dtype=torch.bool)
    torch.testing.assert_close(fit_amount(network, static, region, drags, valid, K, c2w), network, rtol=0, atol=1e-12)
