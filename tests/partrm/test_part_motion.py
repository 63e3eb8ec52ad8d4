"""Stage 1's carried target: the source's Gaussians moved by the true part motion, aligned
with the source's input pixels. The moving part lands on the target state's surface, the
rest does not move, and training items carry it with the mask of the part's Gaussians that
stage 1 weights, the same in still pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from partdrag4d import store
from partrm.data import PairConfig, PairDataset
from partrm.gsdb import GaussianDatabase
from partrm.part_motion import carried_splatter, flat_splatter, moving_part_splatter_mask, unflat_splatter

pytestmark = pytest.mark.blender
DRAWER = "awning-drawer_joint_0_c0"


@pytest.fixture(scope="module")
def geometric(rendered_dataset, tmp_path_factory):
    from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb

    out = tmp_path_factory.mktemp("geo") / "gsdb.h5"
    build_render_gsdb(rendered_dataset, out, RenderGsdbConfig(splat_size=32), progress=False)
    return out


def test_flat_and_unflat_are_inverse():
    s = np.random.default_rng(0).random((4, 14, 8, 8)).astype(np.float32)
    assert np.array_equal(unflat_splatter(flat_splatter(s), 4, 8), s)
    assert torch.equal(unflat_splatter(torch.from_numpy(flat_splatter(s)), 4, 8), torch.from_numpy(s))


@pytest.mark.parametrize("sequence", [DRAWER, "syn-laptop-0-000_joint_0_c0"])
def test_carried_target_moves_the_part_onto_the_target_surface(rendered_dataset, geometric, sequence):
    db = GaussianDatabase(geometric)
    src, dst = f"{sequence}_s0", f"{sequence}_s5"
    source = db.splatter(src)
    carried = carried_splatter(source, rendered_dataset, src, dst)
    assert carried.shape == source.shape and carried.dtype == source.dtype
    a, b = flat_splatter(source), flat_splatter(carried)
    visible = a[:, 3] > 0.5
    moved = np.linalg.norm(b[:, :3] - a[:, :3], axis=1) > 1e-4
    assert 0 < (moved & visible).sum() < visible.sum()
    assert np.array_equal(a[~moved], b[~moved])  # nothing else changes
    assert np.allclose(a[moved][:, 3:7], b[moved][:, 3:7]) and np.allclose(a[moved][:, 11:], b[moved][:, 11:])  # opacity, scale, colour
    # the moved Gaussians lie on the target state's moving part as they lay on the source's: point i
    # of the surface samples is the same material point in every state, so a rigid motion keeps
    # each Gaussian's distance to its nearest moving-part sample
    src_pts, dst_pts = store.read_state_points(rendered_dataset, src), store.read_state_points(rendered_dataset, dst)
    moving = store.read_state_moving(rendered_dataset, src)
    d_source, _ = cKDTree(src_pts[moving]).query(a[moved & visible][:, :3])
    d_target, _ = cKDTree(dst_pts[moving]).query(b[moved & visible][:, :3])
    assert np.mean(np.abs(d_target - d_source) < 1e-4) >= 0.95
    assert np.median(d_target) <= 0.02 * np.ptp(dst_pts, axis=0).max()
    # and where the part was, the source's Gaussians are now off the target's part
    d_stale, _ = cKDTree(dst_pts[moving]).query(a[moved & visible][:, :3])
    assert np.median(d_stale) > 3 * np.median(d_target)
    if sequence == DRAWER:  # a prismatic joint: every moved Gaussian by the same translation
        shift = b[moved][:, :3] - a[moved][:, :3]
        assert np.allclose(shift, shift[0], atol=1e-5)


def test_pair_items_carry_the_stage1_target(rendered_dataset, geometric):
    carried = PairDataset(rendered_dataset, config=PairConfig(input_size=64, target_size=0, stage1_target="carried"), gsdb=geometric,
                          sequences=[DRAWER])
    paper = PairDataset(rendered_dataset, config=PairConfig(input_size=64, target_size=32), gsdb=geometric, sequences=[DRAWER])
    k = next(i for i, p in enumerate(carried.pairs) if p.source_stage == 0 and p.target_stage == 5)
    item, reference = carried[k], paper[k]
    assert "target_rgb" not in item and "target_rgb" in reference  # stage 1 loads no target views
    ref = carried.pairs[k]
    expected = carried_splatter(GaussianDatabase(geometric).splatter(ref.source_state), rendered_dataset, ref.source_state, ref.target_state)
    assert np.array_equal(item["gs_target"].numpy(), expected)
    assert torch.equal(item["gs_source"], reference["gs_source"])
    assert not torch.equal(item["gs_target"], reference["gs_target"])  # the paper's target: the target state's own pixels
    assert torch.equal(item["drags"], reference["drags"])  # same randomness either way
    with pytest.raises(ValueError, match="stage1_target must be one of target, carried"):
        PairConfig(stage1_target="moved")


def test_still_items_have_zero_drags_and_the_source_as_target(rendered_dataset, geometric):
    def items(prob: float):
        cfg = PairConfig(input_size=64, target_size=32, stage1_target="carried", zero_drag_prob=prob, drag_noise_px=2.0)
        data = PairDataset(rendered_dataset, config=cfg, gsdb=geometric, sequences=[DRAWER], seed=5)
        return [data[k] for k in range(len(data))]

    moving, still, some = items(0.0), items(1.0), items(0.5)
    own = PairDataset(rendered_dataset, config=PairConfig(input_size=64, target_size=32), sequences=[DRAWER])
    for m, s in zip(moving, still):
        assert s["target_state"] == s["source_state"] != m["target_state"]
        assert torch.equal(s["drags"][..., :2], m["drags"][..., :2])  # the pair's drag starts ...
        assert torch.equal(s["drags"][..., 2:], s["drags"][..., :2])  # ... with zero displacement
        assert torch.equal(s["gs_target"], s["gs_source"])
        source_views = own[next(k for k, p in enumerate(own.pairs) if p.target_state == s["source_state"] and p.source_state != s["source_state"])]
        assert torch.equal(s["target_rgb"], source_views["target_rgb"])  # the photometric target is the source state
    n_still = sum(it["target_state"] == it["source_state"] for it in some)
    assert 0.25 * len(some) < n_still < 0.75 * len(some)
    with pytest.raises(ValueError, match="zero_drag_prob must be in"):
        PairConfig(zero_drag_prob=1.5)


def test_the_part_mask_covers_what_moves_and_stays_in_still_pairs(rendered_dataset, geometric):
    db = GaussianDatabase(geometric)
    src, dst = f"{DRAWER}_s0", f"{DRAWER}_s5"
    source = db.splatter(src)
    mask = moving_part_splatter_mask(source, rendered_dataset, src)
    assert mask.shape == (source.shape[0], 1, *source.shape[2:]) and set(np.unique(mask)) <= {0.0, 1.0}
    moved = np.linalg.norm(flat_splatter(carried_splatter(source, rendered_dataset, src, dst))[:, :3] - flat_splatter(source)[:, :3], axis=1) > 0
    on_part = flat_splatter(mask)[:, 0] > 0
    assert moved.sum() > 0 and np.array_equal(on_part, moved)  # a drawer's translation moves every Gaussian of its part
    cfg = dict(input_size=64, target_size=0, stage1_target="carried", drag_noise_px=2.0)
    moving = PairDataset(rendered_dataset, config=PairConfig(**cfg), gsdb=geometric, sequences=[DRAWER], seed=5)
    still = PairDataset(rendered_dataset, config=PairConfig(**cfg, zero_drag_prob=1.0), gsdb=geometric, sequences=[DRAWER], seed=5)
    for k in range(len(moving)):
        m, s = moving[k], still[k]
        assert torch.equal(s["gs_target"], s["gs_source"])  # nothing moves ...
        assert torch.equal(s["gs_part"], m["gs_part"]) and s["gs_part"].sum() > 0  # ... but the part is still weighted
