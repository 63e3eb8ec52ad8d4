"""The Gaussian rasterizer: tile backend vs the dense reference, conventions, API checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from partdrag4d import cameras
from partrm.gaussians import (
    Gaussians,
    RasterConfig,
    gaussians_from_lgm,
    gaussians_to_lgm,
    render_gaussians,
    select_backend,
)
from partrm.gaussians import layout
from partrm.gaussians.reference import render_reference

W, H = 48, 32  # non-square, not a multiple of 16, so tiles are cut at the border
TORCH = RasterConfig(backend="torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _camera(
    azimuth: float, width: int = W, height: int = H, distance: float = cameras.CAMERA_DISTANCE
) -> cameras.Camera:
    eye = cameras.ring_position(
        azimuth, distance=distance, height=cameras.CAMERA_HEIGHT * distance / cameras.CAMERA_DISTANCE
    )
    return cameras.Camera(cameras.intrinsics(width, height), cameras.look_at(eye), width, height)


def _cams(cams: list[cameras.Camera], dtype=torch.float64):
    viewmats = torch.tensor(np.stack([c.w2c for c in cams]), dtype=dtype)
    Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=dtype)
    return viewmats, Ks


def _scene(n: int = 300, seed: int = 0, dtype=torch.float64, num_cams: int = 3):
    """Random Gaussians around the origin, plus some at and behind camera 0's near plane."""
    g = torch.Generator().manual_seed(seed)
    cams = [_camera(40.0 + 97.0 * i) for i in range(num_cams)]
    means = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1) * 0.8
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.6 - 3.0)
    # Large Gaussians that cover many tiles.
    scales[:10] *= 8.0
    # Camera 0: Gaussians right in front of it, straddling its near plane, and behind it.
    c2w = torch.tensor(cams[0].c2w)
    ahead = torch.tensor(
        [[0.1, -0.05, 0.3], [0.0, 0.0, 0.02], [0.05, 0.02, 0.005], [-0.03, 0.0, -0.01], [0.0, 0.1, -0.5]],
        dtype=torch.float64,
    )
    means[10:15] = ahead @ c2w[:3, :3].T + c2w[:3, 3]
    scales[10:15] = 0.05
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacities = torch.rand(n, generator=g, dtype=torch.float64) * 0.98
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    viewmats, Ks = _cams(cams)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors, viewmats, Ks)]


def _render_both(scene, config=TORCH, background=None, width=W, height=H):
    tile = render_gaussians(*scene, width, height, background=background, config=config)
    ref = render_reference(*scene, width, height, background=background, config=config)
    return tile, ref


def _grads(fn, scene, weights_seed=1):
    params = [t.clone().requires_grad_() for t in scene]
    out = fn(*params)
    g = torch.Generator().manual_seed(weights_seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out)
    loss.backward()
    return [p.grad for p in params]


# ---------------------------------------------------------------------------------------
# Tile backend == dense reference


@pytest.mark.parametrize("background", [None, (1.0, 0.5, 0.0)])
def test_forward_matches_reference_float64(background):
    scene = _scene()
    tile, ref = _render_both(scene, background=background)
    assert tile.rgb.shape == (3, H, W, 3) and tile.alpha.shape == (3, H, W, 1) and tile.depth.shape == (3, H, W, 1)
    assert ref.alpha.amax() > 0.9 and ref.alpha.amin() < 0.5
    for a, b in zip(tile, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_forward_matches_reference_float32():
    scene = _scene(dtype=torch.float32)
    tile, ref = _render_both(scene, background=1.0)
    assert tile.rgb.dtype == torch.float32
    torch.testing.assert_close(tile.rgb, ref.rgb, atol=2e-5, rtol=0)
    torch.testing.assert_close(tile.alpha, ref.alpha, atol=2e-5, rtol=0)
    torch.testing.assert_close(tile.depth, ref.depth, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("recompute", [False, True])
def test_gradients_match_reference(recompute):
    scene = _scene(n=200, seed=3)
    config = dataclasses.replace(TORCH, recompute_backward=recompute)
    g_tile = _grads(lambda *p: render_gaussians(*p, W, H, background=0.3, config=config), scene)
    g_ref = _grads(lambda *p: render_reference(*p, W, H, background=0.3, config=config), scene)
    names = ["means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"]
    for name, a, b in zip(names, g_tile, g_ref):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, atol=1e-9 * float(b.abs().max()), rtol=1e-7, msg=name)


def test_gradients_match_reference_float32():
    scene = _scene(n=200, seed=4, dtype=torch.float32)
    g_tile = _grads(lambda *p: render_gaussians(*p, W, H, config=TORCH), scene)
    g_ref = _grads(lambda *p: render_reference(*p, W, H, config=TORCH), scene)
    for a, b in zip(g_tile[:5], g_ref[:5]):
        assert float((a - b).abs().max()) <= 2e-5 * float(b.abs().max())


def _stack_scene(dtype=torch.float64):
    """Opaque Gaussians stacked along the view axis: exercises the early stop and the alpha clamp."""
    cam = _camera(0.0)
    g = torch.Generator().manual_seed(7)
    n = 40
    c2w = torch.tensor(cam.c2w)
    local = torch.stack(
        [torch.randn(n, generator=g) * 0.05, torch.randn(n, generator=g) * 0.05, torch.linspace(-0.5, 0.5, n)], 1
    )
    means = local.double() @ c2w[:3, :3].T
    scales = torch.full((n, 3), 0.08, dtype=torch.float64) * torch.exp(
        torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.2
    )
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacities = 0.6 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    opacities[::5] = 1.0  # alpha clamp at alpha_max
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    viewmats, Ks = _cams([cam, _camera(200.0)])
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors, viewmats, Ks)]


def test_early_stop_and_clamp_match_reference():
    scene = _stack_scene()
    config = dataclasses.replace(TORCH, depth_slice=4)  # the stop falls inside a step
    tile, ref = _render_both(scene, config=config, background=1.0)
    assert float(ref.alpha.max()) > 1 - 2e-4  # some pixels reached the transmittance stop
    for a, b in zip(tile, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    g_tile = _grads(lambda *p: render_gaussians(*p, W, H, background=1.0, config=config), scene)
    g_ref = _grads(lambda *p: render_reference(*p, W, H, background=1.0, config=config), scene)
    for a, b in zip(g_tile, g_ref):
        torch.testing.assert_close(a, b, atol=1e-9 * float(b.abs().max()), rtol=1e-7)


@pytest.mark.parametrize(
    "changes",
    [
        dict(tile_size=16),
        dict(tile_size=5, depth_slice=3),
        dict(chunk_elements=64 * 8, depth_slice=8),  # one tile per group
        dict(sigma_cutoff=3.0),  # the cut-off binds for opaque Gaussians
        dict(antialiased=True),
        dict(eps2d=0.0, near=0.2, alpha_max=0.999, transmittance_min=1e-3, alpha_min=0.02),
    ],
)
def test_config_variants_match_reference(changes):
    scene = _scene(n=150, seed=11)
    config = dataclasses.replace(TORCH, **changes)
    tile, ref = _render_both(scene, config=config)
    for a, b in zip(tile, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    g_tile = _grads(lambda *p: render_gaussians(*p, W, H, config=config), scene)
    g_ref = _grads(lambda *p: render_reference(*p, W, H, config=config), scene)
    for a, b in zip(g_tile[:5], g_ref[:5]):
        torch.testing.assert_close(a, b, atol=1e-9 * float(b.abs().max()), rtol=1e-7)


def test_results_do_not_depend_on_tiling():
    scene = _scene(n=150, seed=12)
    base = render_gaussians(*scene, W, H, config=TORCH)
    for changes in (dict(tile_size=16), dict(tile_size=3, depth_slice=1), dict(depth_slice=1000)):
        other = render_gaussians(*scene, W, H, config=dataclasses.replace(TORCH, **changes))
        for a, b in zip(base, other):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_batched_matches_per_object():
    s0, s1 = _scene(n=120, seed=21, num_cams=2), _scene(n=120, seed=22, num_cams=2)
    batched = [torch.stack([a, b]) for a, b in zip(s0, s1)]
    bg = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[0.5, 0.5, 0.5], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    out = render_gaussians(*batched, W, H, background=bg, config=TORCH)
    assert out.rgb.shape == (2, 2, H, W, 3)
    ref = render_reference(*batched, W, H, background=bg, config=TORCH)
    for i, s in enumerate((s0, s1)):
        single = render_gaussians(*s, W, H, background=bg[i], config=TORCH)
        for a, b, r in zip(out, single, ref):
            torch.testing.assert_close(a[i], b, atol=1e-12, rtol=0)
            torch.testing.assert_close(a[i], r[i], atol=1e-10, rtol=0)


def test_gradcheck_tiny_scene():
    g = torch.Generator().manual_seed(5)
    n = 5
    cams = [_camera(10.0, 12, 10), _camera(70.0, 12, 10)]
    viewmats, Ks = _cams(cams)
    means = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.6
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = 0.08 + 0.1 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    opacities = 0.2 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    config = dataclasses.replace(TORCH, tile_size=4, depth_slice=2)

    def f(means, quats, scales, opacities, colors):
        out = render_gaussians(
            means, quats, scales, opacities, colors, viewmats, Ks, 12, 10, background=0.5, config=config
        )
        return torch.cat([t.reshape(-1) for t in out])

    inputs = tuple(t.requires_grad_() for t in (means, quats, scales, opacities, colors))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("gradcheck", [False, True])
@pytest.mark.parametrize(
    "changes",
    [dict(), dict(recompute_backward=False), dict(depth_slice=4), dict(chunk_elements=64 * 8, depth_slice=8), dict(sigma_cutoff=3.0)],
)
def test_vectorised_compositing_matches_reference(changes, gradcheck):
    """The torch-ops compositing (what non-CPU tensors use; ``compiled=False`` on the CPU) gives
    the reference's images and gradients too, on the random and the stacked opaque scene."""
    config = dataclasses.replace(TORCH, compiled=False, **changes)
    for scene in (_scene(n=150, seed=13), _stack_scene()):
        tile, ref = _render_both(scene, config=config, background=1.0)
        for a, b in zip(tile, ref):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
        if gradcheck:
            g_tile = _grads(lambda *p: render_gaussians(*p, W, H, background=1.0, config=config), scene)
            g_ref = _grads(lambda *p: render_reference(*p, W, H, background=1.0, config=config), scene)
            for a, b in zip(g_tile, g_ref):
                torch.testing.assert_close(a, b, atol=1e-9 * float(b.abs().max()), rtol=1e-7)


def test_compiled_and_vectorised_compositing_agree_on_a_dense_scene():
    """Both CPU compositors on a few thousand float32 Gaussians (many per tile, early stops): same
    images, same gradients (to float32 rounding)."""
    scene = _scene(n=3000, seed=14, dtype=torch.float32)
    grads, images = [], []
    for compiled in (True, False):
        config = dataclasses.replace(TORCH, compiled=compiled)
        images.append(render_gaussians(*scene, W, H, config=config))
        grads.append(_grads(lambda *p: render_gaussians(*p, W, H, config=config), scene))
    assert float(images[0].alpha.amax()) > 0.99
    for a, b in zip(*images):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    for a, b in zip(grads[0][:5], grads[1][:5]):
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


# ---------------------------------------------------------------------------------------
# Conventions


def _single(cam: cameras.Camera, point, scale=0.004, opacity=0.9, dtype=torch.float64):
    viewmats, Ks = _cams([cam], dtype)
    return [
        torch.tensor([point], dtype=dtype),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        torch.full((1, 3), scale, dtype=dtype),
        torch.tensor([opacity], dtype=dtype),
        torch.tensor([[0.2, 0.4, 0.8]], dtype=dtype),
        viewmats,
        Ks,
    ]


def test_single_gaussian_lands_where_cameras_project_puts_it():
    width, height, col, row = 40, 30, 27, 9
    cam = _camera(30.0, width, height)
    # The world point whose projection is the centre of pixel (col, row), at depth 2.
    K = cam.K
    x_cam = np.array([(col + 0.5 - K[0, 2]) / K[0, 0], (row + 0.5 - K[1, 2]) / K[1, 1], 1.0]) * 2.0
    point = cam.c2w[:3, :3] @ x_cam + cam.c2w[:3, 3]
    uv, z = cam.project(point[None])
    np.testing.assert_allclose(uv[0], [col + 0.5, row + 0.5], atol=1e-9)
    out = render_gaussians(*_single(cam, point.tolist()), width, height, config=TORCH)
    alpha = out.alpha[0, ..., 0]
    assert tuple(int(i) for i in np.unravel_index(int(alpha.argmax()), alpha.shape)) == (row, col)
    # Centred on the pixel centre: the four neighbours are equal, so there is no half-pixel shift.
    torch.testing.assert_close(alpha[row, col - 1], alpha[row, col + 1])
    torch.testing.assert_close(alpha[row - 1, col], alpha[row + 1, col])
    assert alpha[row, col] > alpha[row, col + 1] > 0


def test_depth_of_single_gaussian_is_its_camera_z():
    cam = _camera(75.0, 40, 30)
    point = [0.1, -0.2, 0.15]
    out = render_gaussians(*_single(cam, point, scale=0.05, opacity=1.0), 40, 30, config=TORCH)
    _, z = cam.project(np.array([point]))
    covered = out.alpha[0, ..., 0] > 0
    assert covered.sum() > 20
    torch.testing.assert_close(
        out.depth[0, ..., 0][covered], torch.full_like(out.depth[0, ..., 0][covered], float(z[0]))
    )
    assert (out.depth[0, ..., 0][~covered] == 0).all()


def test_white_and_black_backgrounds():
    scene = _scene(n=100, seed=31)
    black = render_gaussians(*scene, W, H, background=0.0, config=TORCH)
    white = render_gaussians(*scene, W, H, background=(1.0, 1.0, 1.0), config=TORCH)
    none = render_gaussians(*scene, W, H, config=TORCH)
    torch.testing.assert_close(black.rgb, none.rgb)
    torch.testing.assert_close(white.rgb - black.rgb, (1 - black.alpha).expand(-1, -1, -1, 3), atol=1e-12, rtol=0)
    assert float(black.alpha.min()) >= 0.0 and float(black.alpha.max()) <= 1.0
    empty = black.alpha[..., 0] == 0
    assert empty.any()
    assert (white.rgb[empty] == 1.0).all() and (black.rgb[empty] == 0.0).all()


def test_alpha_stays_in_unit_interval_for_dense_opaque_scene():
    scene = _scene(n=400, seed=32)
    scene[2] = scene[2] * 4.0
    scene[3] = torch.ones_like(scene[3])
    out = render_gaussians(*scene, W, H, config=TORCH)
    assert float(out.alpha.min()) >= 0.0 and float(out.alpha.max()) <= 1.0
    assert float(out.alpha.max()) > 0.999
    assert torch.isfinite(out.rgb).all() and torch.isfinite(out.depth).all()


def test_gaussians_behind_near_plane_are_culled():
    cam = _camera(0.0, 40, 30)
    c2w = cam.c2w
    behind = (c2w[:3, :3] @ np.array([0.0, 0.0, 0.005]) + c2w[:3, 3]).tolist()  # z = 0.005 < near
    scene = _single(cam, behind, scale=0.01, opacity=1.0)
    scene = [t.requires_grad_() if i < 5 else t for i, t in enumerate(scene)]
    out = render_gaussians(*scene, 40, 30, background=1.0, config=TORCH)
    assert (out.alpha == 0).all() and (out.rgb == 1).all()
    out.rgb.sum().backward()
    assert all(torch.isfinite(t.grad).all() and (t.grad == 0).all() for t in scene[:5])
    visible = render_gaussians(*[t.detach() for t in scene], 40, 30, config=dataclasses.replace(TORCH, near=0.001))
    assert float(visible.alpha.max()) > 0.5


def test_no_grad_and_float32_inputs():
    scene = _scene(n=50, dtype=torch.float32)
    with torch.no_grad():
        out = render_gaussians(*scene, W, H, config=TORCH)
    assert out.rgb.dtype == torch.float32 and not out.rgb.requires_grad


def test_lgm_layout_helpers_round_trip_and_render():
    scene = _scene(n=64, seed=41)
    g = Gaussians(*scene[:5])
    packed = gaussians_to_lgm(g)
    assert packed.shape == (64, layout.NUM_CHANNELS)
    torch.testing.assert_close(packed[:, layout.XYZ], g.means)
    torch.testing.assert_close(packed[:, layout.OPACITY][:, 0], g.opacities)
    back = gaussians_from_lgm(packed[None])  # [B, N, 14]
    assert back.opacities.shape == (1, 64)
    for a, b in zip(back, g):
        torch.testing.assert_close(a[0], b)
    out = render_gaussians(*back, scene[5][None], scene[6][None], W, H, config=TORCH)
    direct = render_gaussians(*scene, W, H, config=TORCH)
    torch.testing.assert_close(out.rgb[0], direct.rgb)
    with pytest.raises(ValueError):
        gaussians_from_lgm(torch.zeros(4, 13))


# ---------------------------------------------------------------------------------------
# Validation and backend selection


def test_invalid_inputs_raise():
    scene = _scene(n=20)
    bad_shapes = {
        0: torch.zeros(20, 2, dtype=torch.float64),
        1: torch.zeros(20, 3, dtype=torch.float64),
        2: torch.zeros(19, 3, dtype=torch.float64),
        3: torch.zeros(20, 1, dtype=torch.float64),
        4: torch.zeros(20, 4, dtype=torch.float64),
        5: torch.zeros(3, 3, 4, dtype=torch.float64),
        6: torch.zeros(2, 3, 3, dtype=torch.float64),
    }
    for i, bad in bad_shapes.items():
        args = list(scene)
        args[i] = bad
        with pytest.raises(ValueError):
            render_gaussians(*args, W, H, config=TORCH)
    with pytest.raises(TypeError):
        render_gaussians(*scene[:4], scene[4].float(), *scene[5:], W, H, config=TORCH)
    with pytest.raises(TypeError):
        render_gaussians(scene[0].numpy(), *scene[1:], W, H, config=TORCH)
    with pytest.raises(TypeError):
        render_gaussians(*scene[:3], (scene[3] > 0.5), *scene[4:], W, H, config=TORCH)
    with pytest.raises(ValueError):
        render_gaussians(*scene, 0, H, config=TORCH)
    with pytest.raises(ValueError):
        render_gaussians(*scene, W, 32.0, config=TORCH)
    with pytest.raises(ValueError):
        render_gaussians(*scene, W, H, background=(1.0, 0.0), config=TORCH)
    with pytest.raises(TypeError):
        render_gaussians(*scene, W, H, config={"near": 0.1})
    for bad in (
        dict(near=0.0),
        dict(near=2.0, far=1.0),
        dict(alpha_min=0.0),
        dict(alpha_max=1.5),
        dict(tile_size=0),
        dict(depth_slice=0),
        dict(backend="cuda"),
        dict(transmittance_min=1.0),
        dict(sigma_cutoff=0.0),
    ):
        with pytest.raises(ValueError):
            RasterConfig(**bad)


def test_backend_selection():
    cpu = torch.zeros(4, 3)
    assert select_backend("auto", cpu) == "torch"
    assert select_backend("torch", cpu) == "torch"
    with pytest.raises(RuntimeError, match="CUDA"):
        select_backend("gsplat", cpu)
    scene = _scene(n=20, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="CUDA"):
        render_gaussians(*scene, W, H, config=RasterConfig(backend="gsplat"))
    out = render_gaussians(*scene, W, H)  # default config: auto -> torch on the CPU
    assert out.rgb.shape == (3, H, W, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (gsplat JIT-compiles its kernels)")
def test_gsplat_matches_torch_backend_on_gpu():
    scene = [t.float().cuda() for t in _scene(n=300, seed=51)]
    config = RasterConfig(alpha_max=0.999)  # gsplat's compiled clamp
    params = [t.clone().requires_grad_() for t in scene[:5]]
    gs = render_gaussians(
        *params, *scene[5:], W, H, background=1.0, config=dataclasses.replace(config, backend="gsplat")
    )
    tb = render_gaussians(*scene, W, H, background=1.0, config=dataclasses.replace(config, backend="torch"))
    for a, b in zip(gs, tb):
        assert float((a - b).abs().max()) < 2e-3
        assert float((a - b).abs().mean()) < 1e-4
    sum(t.sum() for t in gs).backward()
    assert all(torch.isfinite(p.grad).all() for p in params)


# ---------------------------------------------------------------------------------------
# Agreement with gsplat's own code, where it runs without a GPU


def test_projection_matches_gsplat_torch_reference():
    """Our EWA projection against gsplat's PyTorch twin of its CUDA projection (CPU-only check)."""
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    from partrm.gaussians.torch_backend import project, quat_to_rotmat

    means, quats, scales, opacities, _, viewmats, Ks = _scene(n=200, seed=61)
    torch.testing.assert_close(quat_to_rotmat(quats), impl._quat_to_rotmat(quats))
    for antialiased in (False, True):
        config = dataclasses.replace(TORCH, antialiased=antialiased)
        ours = project(means[None], quats[None], scales[None], opacities[None], viewmats[None], Ks[None], W, H, config)
        covars, _ = impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
        radii, means2d, depths, conics, comp = impl._fully_fused_projection(
            means,
            covars,
            viewmats,
            Ks,
            W,
            H,
            eps2d=config.eps2d,
            near_plane=config.near,
            calc_compensations=antialiased,
        )
        both = ours.valid[0] & (radii > 0).all(-1)
        assert both.sum() > 300
        torch.testing.assert_close(ours.means2d[0][both], means2d[both])
        torch.testing.assert_close(ours.depths[0][both], depths[both])
        torch.testing.assert_close(ours.conics[0][both], conics[both])
        expected_opacity = opacities[None].expand_as(depths) * (comp if antialiased else 1.0)
        torch.testing.assert_close(ours.opacities[0][both], expected_opacity[both])
        # Our boxes are opacity-aware (as gsplat's CUDA kernel), so never wider than 3.33 sigma.
        assert (ours.extents[0][both] <= radii[both] + 1e-3).all()


def test_gsplat_backend_maps_arguments_and_outputs(monkeypatch):
    """render_gsplat's call against gsplat.rasterization's real signature, with a stand-in renderer."""
    gsplat = pytest.importorskip("gsplat")
    import inspect

    from partrm.gaussians import gsplat_backend

    real = inspect.signature(gsplat.rasterization)
    torch_config = dataclasses.replace(TORCH, alpha_max=gsplat_backend.GSPLAT_ALPHA_MAX)
    calls = []

    def fake_rasterization(*args, **kwargs):
        bound = real.bind(*args, **kwargs)  # raises on a wrong name or arity
        bound.apply_defaults()
        a = bound.arguments
        calls.append(a)
        assert a["render_mode"] == "RGB+ED" and a["sh_degree"] is None and a["tile_size"] == 16
        assert all(
            a[k].dtype == torch.float32 for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")
        )
        cfg = dataclasses.replace(
            torch_config,
            near=a["near_plane"],
            far=a["far_plane"],
            eps2d=a["eps2d"],
            antialiased=a["rasterize_mode"] == "antialiased",
        )
        out = render_gaussians(
            a["means"],
            a["quats"],
            a["scales"],
            a["opacities"],
            a["colors"],
            a["viewmats"],
            a["Ks"],
            a["width"],
            a["height"],
            background=a["backgrounds"],
            config=cfg,
        )
        return torch.cat([out.rgb, out.depth], -1), out.alpha, {}

    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    scene = [torch.stack([t, t]) for t in _scene(n=60, seed=62, dtype=torch.float32)]  # [B=2, ...]
    bg = torch.rand(2, 3, 3)
    config = RasterConfig(near=0.05, eps2d=0.2, antialiased=True)
    got = gsplat_backend.render_gsplat(*scene, W, H, bg, config)
    want = render_gaussians(
        *scene, W, H, background=bg, config=dataclasses.replace(torch_config, near=0.05, eps2d=0.2, antialiased=True)
    )
    assert len(calls) == 1 and calls[0]["backgrounds"].shape == (2, 3, 3)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)
    for bad in (dict(alpha_min=0.01), dict(transmittance_min=1e-3), dict(sigma_cutoff=3.0)):
        with pytest.raises(ValueError, match="gsplat"):
            gsplat_backend.render_gsplat(*scene, W, H, bg, dataclasses.replace(config, **bad))
