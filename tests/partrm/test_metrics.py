"""Image metrics (PSNR, SSIM, LPIPS-VGG) and the per-category aggregation of benchmark rows.

LPIPS is checked with seeded random weights (the real VGG16/LPIPS weights cannot be
downloaded here): its structure, key names, file round trip and error messages are what a
user's local torchvision/lpips files rely on.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from partrm import lpips as lpips_mod
from partrm.lpips import LPIPS, load_lpips
from partrm.metrics import aggregate, alpha_composite, lpips_distance, psnr, ssim

# torchvision vgg16().features: conv layers at these indices, each with weight and bias.
EXPECTED_VGG_KEYS = [
    "features.0.weight", "features.0.bias",
    "features.2.weight", "features.2.bias",
    "features.5.weight", "features.5.bias",
    "features.7.weight", "features.7.bias",
    "features.10.weight", "features.10.bias",
    "features.12.weight", "features.12.bias",
    "features.14.weight", "features.14.bias",
    "features.17.weight", "features.17.bias",
    "features.19.weight", "features.19.bias",
    "features.21.weight", "features.21.bias",
    "features.24.weight", "features.24.bias",
    "features.26.weight", "features.26.bias",
    "features.28.weight", "features.28.bias",
]
# lpips package weights/v0.1/vgg.pth (NetLinLayer = Sequential(Dropout, Conv1x1 no bias)).
EXPECTED_LIN_SHAPES = {
    "lin0.model.1.weight": (1, 64, 1, 1),
    "lin1.model.1.weight": (1, 128, 1, 1),
    "lin2.model.1.weight": (1, 256, 1, 1),
    "lin3.model.1.weight": (1, 512, 1, 1),
    "lin4.model.1.weight": (1, 512, 1, 1),
}


def _images(seed: int, b: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g)


# ---------------------------------------------------------------- PSNR


def test_psnr_identical_is_inf():
    x = _images(0)
    out = psnr(x, x.clone())
    assert out.shape == (2,)
    assert torch.isinf(out).all() and (out > 0).all()


@pytest.mark.parametrize("e", [0.25, 0.125, 1 / 64])
def test_psnr_uniform_error_closed_form(e):
    target = torch.full((3, 3, 16, 16), 0.5)
    pred = target + e  # dyadic values: the error is exactly e everywhere
    out = psnr(pred, target)
    expected = -10.0 * math.log10(e * e)
    assert out.dtype == torch.float64
    for v in out.tolist():
        assert v == pytest.approx(expected, rel=1e-14, abs=0)
    # data_range scales as 20 log10(range)
    assert psnr(pred * 255, target * 255, data_range=255.0)[0].item() == pytest.approx(expected, rel=1e-12)


def test_psnr_gaussian_noise_matches_sigma():
    # 3*128*128 = 49152 samples per image: MSE has relative std sqrt(2/n) = 0.64 %, i.e.
    # 0.028 dB of PSNR; 0.15 dB is > 5 standard deviations.
    g = torch.Generator().manual_seed(1)
    target = torch.full((2, 3, 128, 128), 0.5)
    for sigma in (0.01, 0.05, 0.1):
        noisy = target + sigma * torch.randn(target.shape, generator=g)
        out = psnr(noisy, target)
        assert torch.allclose(out, torch.full_like(out, 20 * math.log10(1 / sigma)), atol=0.15), (sigma, out)


def test_psnr_per_image():
    target = torch.zeros(2, 3, 16, 16)
    pred = target.clone()
    pred[0] += 0.1
    pred[1] += 0.01
    out = psnr(pred, target)
    assert out[0].item() == pytest.approx(20.0, abs=1e-5)
    assert out[1].item() == pytest.approx(40.0, abs=1e-4)


# ---------------------------------------------------------------- SSIM


def test_ssim_identity_noise_and_symmetry():
    x = _images(2, b=2, size=48)
    same = ssim(x, x.clone())
    assert same.shape == (2,)
    assert torch.allclose(same, torch.ones(2), atol=1e-5)

    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    weak = ssim((x + 0.02 * noise).clamp(0, 1), x)
    strong = ssim((x + 0.2 * noise).clamp(0, 1), x)
    assert (weak < 1).all() and (strong < weak).all()

    y = (x + 0.1 * noise).clamp(0, 1)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-6)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(2, 3, 16, 16))


# ---------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def random_lpips() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS()


def test_lpips_zero_for_identical_positive_otherwise_symmetric(random_lpips):
    x, y = _images(4), _images(5)
    with torch.no_grad():
        same = random_lpips(x, x.clone())
        d_xy = random_lpips(x, y)
        d_yx = random_lpips(y, x)
    assert same.shape == (2,)
    assert torch.equal(same, torch.zeros(2))
    assert (d_xy > 0).all()
    assert torch.allclose(d_xy, d_yx, rtol=1e-5, atol=1e-7)


def test_lpips_frozen_but_differentiable_wrt_input(random_lpips):
    assert not random_lpips.training
    assert all(not p.requires_grad for p in random_lpips.parameters())
    parent = torch.nn.ModuleDict({"lpips": random_lpips})
    parent.train()  # a training loop switching its model to train mode must not unfreeze/undropout LPIPS
    assert not random_lpips.training

    pred = _images(6).requires_grad_(True)
    target = _images(7)
    loss = random_lpips(pred, target).sum()
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_lpips.parameters())


def test_lpips_gradient_finite_on_flat_images(random_lpips):
    """Uniform black images zero whole ReLU feature vectors; lpips's plain sqrt norm gives NaN there."""
    pred = torch.zeros(1, 3, 32, 32, requires_grad=True)
    loss = random_lpips(pred, torch.ones(1, 3, 32, 32)).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_lpips_key_names(random_lpips):
    assert list(random_lpips.net.state_dict().keys()) == EXPECTED_VGG_KEYS
    lin_sd = {k: v for k, v in random_lpips.state_dict().items() if k.startswith("lin")}
    assert {k: tuple(v.shape) for k, v in lin_sd.items()} == EXPECTED_LIN_SHAPES
    # the full state dict is exactly trunk + linear layers (constants are not persisted)
    assert set(random_lpips.state_dict()) == {f"net.{k}" for k in EXPECTED_VGG_KEYS} | set(EXPECTED_LIN_SHAPES)
    assert torch.allclose(random_lpips.shift.flatten(), torch.tensor([-0.030, -0.088, -0.188]))
    assert torch.allclose(random_lpips.scale.flatten(), torch.tensor([0.458, 0.448, 0.450]))


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_lpips_from_files_round_trip(random_lpips, tmp_path, fmt):
    # A torchvision whole-model checkpoint also holds the classifier, which must be ignored.
    vgg_sd = dict(random_lpips.net.state_dict())
    vgg_sd["classifier.0.weight"] = torch.zeros(4, 8)
    vgg_sd["classifier.0.bias"] = torch.zeros(4)
    # lpips's vgg.pth: only the linear layers.
    lin_sd = {k: v.clone() for k, v in random_lpips.state_dict().items() if k.startswith("lin")}
    vgg_path, lin_path = tmp_path / f"vgg16.{fmt}", tmp_path / f"vgg_lin.{fmt}"
    if fmt == "pth":
        torch.save(vgg_sd, vgg_path)
        torch.save(lin_sd, lin_path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in vgg_sd.items()}, str(vgg_path))
        save_file(lin_sd, str(lin_path))

    loaded = LPIPS.from_files(vgg_path, lin_path)
    assert not loaded.training and all(not p.requires_grad for p in loaded.parameters())
    x, y = _images(8), _images(9)
    with torch.no_grad():
        assert torch.equal(loaded(x, y), random_lpips(x, y))
    via_loader = load_lpips(str(vgg_path), str(lin_path))
    assert isinstance(via_loader, LPIPS)
    with torch.no_grad():
        assert torch.equal(lpips_distance(via_loader, x, y), random_lpips(x, y))


def test_lpips_missing_files_name_the_flags(tmp_path):
    missing = tmp_path / "nope.pth"
    present = tmp_path / "present.pth"
    torch.save({}, present)
    with pytest.raises(FileNotFoundError) as err:
        LPIPS.from_files(present, missing)
    msg = str(err.value)
    assert "--lpips-weights" in msg and str(missing) in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError) as err:
        load_lpips(str(missing), str(present))
    msg = str(err.value)
    assert "--vgg-weights" in msg and str(missing) in msg and "\n" not in msg
    with pytest.raises(ValueError, match="--lpips-weights"):
        load_lpips(str(present), None)


def test_lpips_wrong_checkpoint_contents(tmp_path):
    bad_vgg = tmp_path / "bad_vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad_vgg)
    lin = tmp_path / "lin.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, lin)
    with pytest.raises(ValueError, match="not a torchvision VGG16 checkpoint"):
        LPIPS.from_files(bad_vgg, lin)


def test_load_lpips_none_disables_once(caplog):
    lpips_mod._warned_disabled = False
    with caplog.at_level(logging.WARNING, logger="partrm.lpips"):
        assert load_lpips(None, None) is None
        assert load_lpips(None, None) is None
    msgs = [r.getMessage() for r in caplog.records if "LPIPS disabled" in r.getMessage()]
    assert msgs == ["LPIPS disabled: no local VGG/LPIPS weights (pass --vgg-weights and --lpips-weights)"]
    assert lpips_distance(None, _images(0), _images(1)) is None


def test_lpips_rejects_too_small_images(random_lpips):
    with pytest.raises(ValueError, match=">= 16"):
        random_lpips(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- aggregation and compositing


def test_aggregate_per_category_overall_and_none():
    rows = [
        {"category": "drawer", "object": "a", "psnr": 20.0, "ssim": 0.8, "lpips": None},
        {"category": "drawer", "object": "b", "psnr": 30.0, "ssim": 0.9, "lpips": 0.2},
        {"category": "door", "object": "c", "psnr": torch.tensor(25.0), "ssim": np.float32(0.5), "lpips": None},
        {"category": "drawer", "object": "d", "psnr": 40.0, "ssim": 1.0, "lpips": 0.4},
    ]
    agg = aggregate(rows, by="category")
    assert list(agg) == ["drawer", "door", "overall"]
    drawer, door, overall = agg["drawer"], agg["door"], agg["overall"]
    assert drawer["count"] == 3 and door["count"] == 1 and overall["count"] == 4
    assert drawer["psnr"] == pytest.approx(30.0) and drawer["ssim"] == pytest.approx(0.9)
    assert drawer["lpips"] == pytest.approx(0.3) and drawer["lpips_count"] == 2
    assert door["lpips"] is None and door["lpips_count"] == 0
    assert door["psnr"] == pytest.approx(25.0) and door["ssim"] == pytest.approx(0.5)
    # overall is the mean over rows, not over group means
    assert overall["psnr"] == pytest.approx(115.0 / 4) and overall["psnr_count"] == 4
    assert overall["lpips"] == pytest.approx(0.3) and overall["lpips_count"] == 2
    assert "object" not in overall  # ids are not metrics


def test_aggregate_all_none_metric_and_errors():
    rows = [{"cat": "x", "psnr": 10.0, "lpips": None}, {"cat": "y", "psnr": 20.0, "lpips": None}]
    agg = aggregate(rows, by="cat")
    assert agg["overall"]["lpips"] is None and agg["overall"]["lpips_count"] == 0
    assert agg["overall"]["psnr"] == pytest.approx(15.0)
    with pytest.raises(KeyError, match="'cat'"):
        aggregate([{"psnr": 1.0}], by="cat")
    with pytest.raises(ValueError, match="reserved"):
        aggregate([{"cat": "overall", "psnr": 1.0}], by="cat")
    with pytest.raises(TypeError, match="psnr"):
        aggregate([{"cat": "x", "psnr": 1.0}, {"cat": "x", "psnr": "n/a"}], by="cat")


def test_alpha_composite_straight_and_premultiplied():
    rgb = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    alpha = torch.tensor([[0.0, 0.5], [1.0, 0.25]]).view(1, 1, 2, 2)
    out = alpha_composite(rgb, alpha, 1.0)
    assert torch.allclose(out, rgb * alpha + (1 - alpha))
    assert torch.allclose(out[0, :, 1, 0], rgb[0, :, 1, 0]) and torch.allclose(out[0, :, 0, 0], torch.ones(3))
    bg = (0.0, 0.5, 1.0)
    pre = alpha_composite(rgb * alpha, alpha, bg, premultiplied=True)
    assert torch.allclose(pre, alpha_composite(rgb, alpha, bg))
    assert torch.allclose(pre[0, :, 0, 0], torch.tensor(bg))
    with pytest.raises(ValueError):
        alpha_composite(rgb, alpha, (1.0, 1.0))


# ----------------------------------------------------------------------------- motion-region metrics


def _pair(seed: int = 0, n: int = 2, size: int = 48):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, size, size, generator=g)
    pred = (target + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    return pred, target


def _box_mask(n: int = 2, size: int = 48, lo: int = 12, hi: int = 30) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size, dtype=torch.bool)
    m[..., lo:hi, lo:hi] = True
    return m


def test_region_metrics_ignore_changes_outside_the_mask():
    from partrm.metrics import region_lpips, region_psnr

    pred, target = _pair()
    mask = _box_mask()
    outside = pred.clone()
    outside[~mask.expand_as(pred)] = torch.rand(int((~mask).sum()) * 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(region_psnr(outside, target, mask), region_psnr(pred, target, mask))
    # MSE over the masked pixels only: a known error inside gives the closed form
    shifted = target.clone()
    shifted[mask.expand_as(target)] += 0.1
    shifted[~mask.expand_as(target)] = 0.0
    np.testing.assert_allclose(region_psnr(shifted, target, mask, cap=None).numpy(), [20.0, 20.0], atol=1e-9)
    # a change inside does count
    inside = pred.clone()
    inside[mask.expand_as(pred)] = 0.0
    assert (region_psnr(inside, target, mask) < region_psnr(pred, target, mask) - 1).all()
    lp = LPIPS()
    a, b = region_lpips(lp, pred, target, mask), region_lpips(lp, outside, target, mask)
    assert a.shape == (2,) and (a > 0).all()
    assert torch.allclose(region_lpips(lp, target, target, mask), torch.zeros(2), atol=1e-7)
    assert region_lpips(None, pred, target, mask) is None
    # full mask: the ordinary LPIPS
    torch.testing.assert_close(region_lpips(lp, pred, target, torch.ones_like(mask)), lp(pred, target))
    del b


def test_region_ssim_matches_ssim_on_a_full_mask_and_ignores_far_changes():
    from partrm.metrics import region_ssim

    pred, target = _pair(size=64)
    full = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    torch.testing.assert_close(region_ssim(pred, target, full), ssim(pred, target), atol=1e-5, rtol=0)
    mask = _box_mask(size=64, lo=20, hi=40)
    far = pred.clone()
    far[..., :5, :] = 0.0  # more than a window (5 px) away from the mask
    torch.testing.assert_close(region_ssim(far, target, mask), region_ssim(pred, target, mask))
    assert torch.allclose(region_ssim(target, target, mask), torch.ones(2, dtype=torch.float32), atol=1e-6)


def test_region_metrics_identical_are_capped_and_empty_is_nan():
    from partrm.metrics import PSNR_CAP, region_psnr, region_ssim

    _, target = _pair()
    mask = _box_mask()
    assert torch.isinf(psnr(target, target)).all()  # the full-image metric stays uncapped
    assert torch.equal(region_psnr(target, target, mask), torch.full((2,), PSNR_CAP, dtype=torch.float64))
    empty = torch.zeros_like(mask)
    assert torch.isnan(region_psnr(target, target, empty)).all() and torch.isnan(region_ssim(target, target, empty)).all()
    # pooled: the masked pixels of all images form one region (one image without any counts nothing)
    pred, _ = _pair()
    one = mask.clone()
    one[1] = False
    torch.testing.assert_close(region_psnr(pred, target, one, pooled=True), region_psnr(pred[:1], target[:1], one[:1])[0])
    with pytest.raises(ValueError, match="mask"):
        region_psnr(pred, target, mask[:, :, :10])


def test_dilate_mask_grows_by_chebyshev_radius():
    from partrm.metrics import dilate_mask

    m = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    m[0, 0, 4, 4] = True
    d = dilate_mask(m, 2)
    assert d.sum() == 25 and d[0, 0, 2:7, 2:7].all()
    assert torch.equal(dilate_mask(m, 0), m)


def test_recovery_ratio_constructed_cases():
    from partrm.metrics import recovery_ratio

    assert recovery_ratio(14.0, 12.0, 16.0) == 0.5
    assert recovery_ratio(16.0, 12.0, 16.0) == 1.0  # prediction == oracle
    assert recovery_ratio(12.0, 12.0, 16.0) == 0.0  # prediction == static
    assert recovery_ratio(12.0, 12.0, 12.0) is None  # oracle == static: nothing to recover
    assert recovery_ratio(100.0, 100.0, 100.0) is None  # identical renders everywhere (capped)
    assert recovery_ratio(math.inf, 12.0, 16.0) is None and recovery_ratio(None, 12.0, 16.0) is None
    assert recovery_ratio(10.0, 12.0, 16.0) == -0.5  # worse than not moving


def test_bootstrap_ci_of_the_mean():
    from partrm.metrics import bootstrap_ci

    x = np.random.default_rng(0).normal(1.0, 0.5, 200)
    lo, hi = bootstrap_ci(list(x), seed=0)
    assert lo < x.mean() < hi and 0.05 < hi - lo < 0.3
    assert bootstrap_ci(list(x), seed=0) == (lo, hi)  # seeded
    assert bootstrap_ci([1.0]) == (None, None) and bootstrap_ci([]) == (None, None)
    assert bootstrap_ci([2.0, 2.0, None]) == (2.0, 2.0)
