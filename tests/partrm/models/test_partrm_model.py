"""PartRM's drag embedding and propagation: zero-init equivalence with LGM, drag maps at
the right cells, propagation inside the region, scale selection, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partrm.models.drag_embedding import FourierFeatures, ScaleEmbedding, drag_cells, levels_for_sizes
from partrm.models.lgm import LGM, LGMConfig
from partrm.models.partrm import PartRM, PartRMConfig
from partrm.propagation import ColorRegion, MaskRegion, RegionError, propagate, rotation_factors


@pytest.fixture(scope="module")
def lgm():
    torch.manual_seed(0)
    return LGM(LGMConfig.tiny()).eval()


def test_untrained_partrm_equals_its_lgm_initialisation(lgm):
    model = PartRM.from_lgm(lgm).eval()
    x = torch.randn(2, 4, 9, 64, 64)
    drags = torch.rand(2, 4, 10, 4)
    valid = torch.rand(2, 4, 10) > 0.3
    with torch.no_grad():
        assert torch.equal(lgm(x), model(x, drags, valid))
    # once the merge convolutions learn, drags change the output
    with torch.no_grad():
        for scale in model.drag.scales.values():
            scale.merge.weight.normal_(0, 0.05)
        assert not torch.equal(lgm(x), model(x, drags, valid))
        # ... but invalid (padding) drags contribute nothing
        assert torch.equal(model(x, drags, torch.zeros_like(valid)), model(x, drags * 0 + 0.5, torch.zeros_like(valid)))


def test_drag_maps_land_at_the_right_cells_for_each_scale():
    emb = ScaleEmbedding(feature_channels=8, map_channels=6, fourier=FourierFeatures(4))
    # x = 0.8 (column), y = 0.1 (row): a transposed map would put it at row 0.8 * size
    drags = torch.tensor([[[0.8, 0.1, 0.5, 0.5], [0.05, 0.95, 0.0, 0.0]]])
    valid = torch.tensor([[True, False]])
    for size in (64, 32, 16, 8):
        m = emb.drag_map(drags, valid, size)
        assert m.shape == (1, 6, size, size)
        nonzero = m.abs().sum(1)[0].nonzero().tolist()
        assert nonzero == [[int(0.1 * size), int(0.8 * size)]]
    row, col = drag_cells(torch.tensor([[0.0, 0.0], [0.999, 0.999], [1.0, 1.0]]), 8)
    assert row.tolist() == [0, 7, 7] and col.tolist() == [0, 7, 7]


def test_drag_maps_sum_drags_in_one_cell():
    emb = ScaleEmbedding(8, 6, FourierFeatures(4))
    one = torch.tensor([[[0.5, 0.5, 0.7, 0.7]]])
    two = torch.tensor([[[0.5, 0.5, 0.7, 0.7], [0.51, 0.51, 0.7, 0.7]]])
    m1 = emb.drag_map(one, torch.ones(1, 1, dtype=torch.bool), 4)
    m2 = emb.drag_map(two, torch.ones(1, 2, dtype=torch.bool), 4)
    torch.testing.assert_close(m2[0, :, 2, 2], m1[0, :, 2, 2] + emb.drag_map(two[:, 1:], torch.ones(1, 1, dtype=torch.bool), 4)[0, :, 2, 2])


def test_scale_selection_for_the_ablation():
    cfg = LGMConfig.big()
    assert cfg.hook_sizes == (256, 128, 64, 32, 16, 8, 8)
    assert levels_for_sizes(cfg.hook_sizes, (128, 32, 8)) == (1, 3, 5)
    assert PartRMConfig(lgm=cfg).levels() == (0, 1, 2, 3, 4, 5)
    assert PartRMConfig(lgm=cfg, drag_sizes=(32,)).levels() == (3,)
    with pytest.raises(ValueError, match="no U-Net level of size 100"):
        levels_for_sizes(cfg.hook_sizes, (100,))
    single = PartRM(PartRMConfig(lgm=LGMConfig.tiny(), drag_sizes=(16,)))
    assert list(single.drag.scales) == ["2"]


def test_checkpoint_round_trip(lgm, tmp_path):
    model = PartRM.from_lgm(lgm, PartRMConfig(lgm=lgm.config, drag_sizes=(32, 8)))
    with torch.no_grad():
        for p in model.drag.parameters():
            p.normal_()
    model.save(tmp_path / "m.safetensors")
    loaded = PartRM.load(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        PartRM.load(tmp_path / "missing.safetensors")


def test_propagation_stays_inside_the_mask_with_the_same_displacement():
    mask = np.zeros((64, 64), bool)
    mask[10:30, 40:60] = True
    rng = np.random.default_rng(0)
    drags = propagate(np.array([45.0, 15.0]), np.array([50.0, 12.0]), mask, 10, rng)
    assert drags.shape == (10, 4)
    assert drags[0].tolist() == [45.0, 15.0, 50.0, 12.0]
    cols, rows = np.floor(drags[1:, 0]).astype(int), np.floor(drags[1:, 1]).astype(int)
    assert mask[rows, cols].all()
    np.testing.assert_allclose(drags[:, 2:] - drags[:, :2], np.tile([5.0, -3.0], (10, 1)))
    assert len(propagate(np.array([1.0, 1.0]), np.array([2.0, 2.0]), mask, 1, rng)) == 1
    with pytest.raises(RegionError):
        propagate(np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.zeros((8, 8), bool), 5, rng)


def test_rule_based_rotation_shrinks_along_the_drag():
    starts = np.array([[10.0, 0.0], [20.0, 0.0], [0.0, 5.0]])
    f = rotation_factors(starts, np.array([0.0, 0.0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(f, [0.5, 0.0, 1.0])
    mask = np.ones((32, 32), bool)
    drags = propagate(np.array([2.0, 16.0]), np.array([6.0, 16.0]), mask, 20, np.random.default_rng(1), rule="rotation")
    length = np.linalg.norm(drags[:, 2:] - drags[:, :2], axis=1)
    assert (length <= 4.0 + 1e-9).all() and length.min() < 1.0


def test_region_providers():
    mask = np.zeros((16, 16), bool)
    mask[2:5, 2:5] = True
    assert MaskRegion(mask)(None, np.array([3, 3])) is not None
    img = np.zeros((16, 16, 4), np.float32)
    img[..., 3] = 1.0
    img[:, :8, :3] = [1.0, 0.0, 0.0]
    img[:, 8:, :3] = [0.0, 0.0, 1.0]
    img[:, 12:, 3] = 0.0  # background
    region = ColorRegion()(img, np.array([2.0, 3.0]))
    assert region[:, :8].all() and not region[:, 8:].any()
    with pytest.raises(RegionError, match="background"):
        ColorRegion()(img, np.array([14.0, 3.0]))
