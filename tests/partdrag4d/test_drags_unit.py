"""Drag sampling without Blender: the exact per-point visibility test on hand-made depth
and part-id maps, farthest-point sampling, pair lists."""

from __future__ import annotations

import numpy as np

from partdrag4d.cameras import Camera, intrinsics, look_at
from partdrag4d.drags import (ViewRender, adjacent_pairs, all_pairs, farthest_point_sample, farthest_point_sample_batched,
                              pixel_index, sample_pair, visible_mask)


def _camera(size: int = 32) -> Camera:
    return Camera(intrinsics(size, size), look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3), np.array([0.0, 1.0, 0.0])), size, size)


def test_visibility_needs_the_moving_part_id_and_the_rendered_depth():
    cam = _camera()
    size = 32
    # a moving plate (part 2) at depth 2 on the left half, a static occluder (part 1) at depth 1.5 on the right
    depth = np.full((size, size), 2.0, np.float32)
    part = np.full((size, size), 2, np.uint16)
    depth[:, 16:], part[:, 16:] = 1.5, 1
    front_left = np.array([[-0.3, 0.0, 0.0]])  # on the plate, seen
    behind_occluder = np.array([[0.3, 0.0, 0.0]])  # on the plate, hidden behind part 1
    far_side = np.array([[-0.3, 0.0, -0.2]])  # the plate's back: same part id, deeper than rendered
    ok, uv = visible_mask(np.concatenate([front_left, behind_occluder, far_side]), cam, depth, part, np.array([2]))
    assert ok.tolist() == [True, False, False]
    assert 0 <= uv[0, 0] < 16  # the left half of the image is -X (x right in the camera)


def test_one_pixel_rule_for_points_on_a_pixel_boundary():
    """A hinge on the object's centre line seen on the image's centre column: its projection
    lands a hair left of the boundary between pixels 15 and 16, which float32 (what the drag
    file stores) rounds onto 16.0. The sampler must judge the point at pixel 16, the pixel
    ``verify`` reads from the stored value: here that pixel is the static part, so the point
    is no drag start."""
    assert pixel_index(np.array([[15.99999999, 3.0]])) == (np.array([16]), np.array([3]))
    assert pixel_index(np.array([[15.9999, 3.0]]))[0][0] == 15
    cam = _camera()
    size = 32
    depth = np.full((size, size), 2.0, np.float32)
    part = np.full((size, size), 1, np.uint16)
    part[:, :16] = 2  # moving part up to column 15, static from column 16
    # a point on the centre line (x = 0 projects onto u = 16.0), nudged to 15.99999999 in float64
    focal = cam.K[0, 0]
    x = -1e-8 * 2.0 / focal
    point = np.array([[x, 0.0, 0.0]])
    ok, uv = visible_mask(point, cam, depth, part, np.array([2]))
    assert uv[0, 0] < 16.0 and np.float32(uv[0, 0]) == 16.0
    assert not ok[0]  # judged at the stored pixel, 16: the static part
    col, row = pixel_index(uv.astype(np.float32))
    assert part[row[0], col[0]] == 1


def test_batched_farthest_point_sampling_matches_the_greedy_definition():
    def greedy(xy, k, first):
        chosen, d = [first], ((xy - xy[first]) ** 2).sum(1)
        for _ in range(1, k):
            chosen.append(int(np.argmax(d)))
            d = np.minimum(d, ((xy - xy[chosen[-1]]) ** 2).sum(1))
        return np.array(chosen)

    rng = np.random.default_rng(0)
    sets = [rng.random((n, 2)) * 100 for n in (500, 30, 1000, 0)]
    got = farthest_point_sample_batched(sets, 64, np.random.default_rng(5))
    firsts = np.random.default_rng(5)
    f0, f2 = firsts.integers(500), firsts.integers(1000)
    assert np.array_equal(got[0], greedy(sets[0], 64, f0))
    assert np.array_equal(got[1], np.arange(30)) and len(got[3]) == 0
    assert np.array_equal(got[2], greedy(sets[2], 64, f2))
    # spread: the chosen points cover the square far better than the first 64
    picked = sets[2][got[2]]
    gap = lambda pts: np.max(np.min(np.linalg.norm(sets[2][:, None] - pts[None], axis=2), axis=1))  # noqa: E731
    assert gap(picked) < 0.6 * gap(sets[2][:64])
    assert np.array_equal(farthest_point_sample(sets[0], 64, np.random.default_rng(5)), got[0])


def test_sample_pair_keeps_visible_moving_points_with_their_ends():
    cam = _camera()
    depth = np.full((1, 32, 32), 2.0, np.float32)
    part = np.full((1, 32, 32), 2, np.uint16)
    rng = np.random.default_rng(0)
    src = np.concatenate([np.c_[rng.uniform(-0.5, 0.5, (200, 2)), np.zeros(200)], np.c_[rng.uniform(-0.5, 0.5, (50, 2)), np.full(50, -0.3)]])
    dst = src + np.array([0.1, 0.0, 0.0])
    moving = np.ones(len(src), bool)
    moving[:20] = False  # static points never become drags
    d = sample_pair(src, dst, moving, np.array([2]), [cam], ViewRender(depth, part), np.random.default_rng(1), max_drags=16)
    assert d.count.tolist() == [16] and d.num_candidates == 230
    idx = d.point_index[0, :16]
    assert (idx >= 20).all() and (idx < 200).all(), "only moving, visible (front) points"
    np.testing.assert_allclose(d.end_3d[0, :16] - d.start_3d[0, :16], np.tile([0.1, 0.0, 0.0], (16, 1)), atol=1e-6)
    expected_end, _ = cam.project(dst[idx])
    np.testing.assert_allclose(d.end_2d[0, :16], expected_end, atol=1e-4)


def test_pair_lists():
    assert len(all_pairs(6)) == 30 and (2, 2) not in all_pairs(6)
    adj = adjacent_pairs(6)
    assert (0, 1) in adj and (1, 0) in adj and (0, 5) in adj and (2, 4) not in adj
