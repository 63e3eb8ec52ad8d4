"""LGM model: activations, shapes, official checkpoint layout, weights I/O, rays, frames, hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from partdrag4d.cameras import CAMERA_DISTANCE, intrinsics, look_at, ring_cameras
from partrm.gaussians import layout
from partrm.models.lgm import (
    LGM,
    CheckpointMismatchError,
    LGMConfig,
    activate_splatter,
    invert_similarity,
    lgm_frame_inverse,
    lgm_frame_transform,
    matrix_to_quat,
    plucker_rays,
    quat_to_rotmat,
    transform_c2w,
    transform_gaussians,
)

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def tiny() -> LGM:
    torch.manual_seed(0)
    return LGM(LGMConfig.tiny()).eval()


def tiny_input(batch: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 9, 64, 64, generator=g)


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def covariance(g: torch.Tensor) -> torch.Tensor:
    R = quat_to_rotmat(g[..., layout.ROTATION].double())
    S = torch.diag_embed(g[..., layout.SCALE].double() ** 2)
    return R @ S @ R.transpose(-1, -2)


# ----------------------------------------------------------------------------- activations and shapes


def test_activation_ranges_on_extreme_raw_values():
    raw = torch.randn(2, 4, 14, 8, 8) * 50
    out = activate_splatter(raw, dim=2)
    assert out[:, :, layout.XYZ].abs().max() <= 1.0
    op, sc, rgb = out[:, :, layout.OPACITY], out[:, :, layout.SCALE], out[:, :, layout.RGB]
    assert op.min() >= 0 and op.max() <= 1 and sc.min() >= 0 and rgb.min() >= 0 and rgb.max() <= 1
    assert torch.allclose(out[:, :, layout.ROTATION].norm(dim=2), torch.ones(2, 4, 8, 8), atol=1e-5)
    assert torch.allclose(sc, 0.1 * torch.nn.functional.softplus(raw[:, :, layout.SCALE]))


def test_tiny_forward_shapes_and_flatten_order(tiny):
    with torch.inference_mode():
        splat = tiny(tiny_input(batch=2))
    S = tiny.config.splat_size
    assert splat.shape == (2, 4, 14, S, S) and S == 32
    assert splat[:, :, layout.XYZ].abs().max() <= 1
    assert 0 <= splat[:, :, layout.OPACITY].min() and splat[:, :, layout.OPACITY].max() <= 1
    assert splat[:, :, layout.SCALE].min() > 0
    assert torch.allclose(splat[:, :, layout.ROTATION].norm(dim=2), torch.ones(2, 4, S, S), atol=1e-5)
    g = LGM.gaussians(splat)
    assert g.shape == (2, 4 * S * S, 14) and tiny.config.num_gaussians == 4 * S * S
    b, v, r, c = 1, 3, 5, 7
    assert torch.equal(g[b, v * S * S + r * S + c], splat[b, v, :, r, c])


def test_big_architecture_matches_official_checkpoint_layout():
    # Key names + shapes written from the official construction; they reproduce the
    # published file size of model_fp16_fixrot.safetensors (830,126,160 bytes) exactly.
    expected = json.loads((DATA / "lgm_big_keys.json").read_text())
    with torch.device("meta"):
        model = LGM(LGMConfig.big())
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(math.prod(s) for s in expected.values()) == 415_042_848
    assert model.down_block_channels == (64, 128, 256, 512, 1024, 1024)
    assert model.down_block_strides == (2, 4, 8, 16, 32, 32)
    assert model.hook_channels == (64, 64, 128, 256, 512, 1024, 1024)
    assert model.hook_strides == (1, 2, 4, 8, 16, 32, 32)
    assert model.config.hook_sizes == (256, 128, 64, 32, 16, 8, 8)
    assert model.config.down_block_sizes == (128, 64, 32, 16, 8, 8)
    assert model.config.num_gaussians == 65_536


def test_small_and_config_validation():
    with torch.device("meta"):
        small = LGM(LGMConfig.small())
    assert small.config.splat_size == 64 and len(small.unet.up_blocks) == 4
    with pytest.raises(ValueError, match="splat_size"):
        LGMConfig.big(splat_size=64)
    with pytest.raises(ValueError, match="preset"):
        LGMConfig.preset("huge")
    assert LGMConfig.from_json(LGMConfig.tiny().to_json()) == LGMConfig.tiny()


def test_a_preset_at_another_input_size_keeps_its_architecture():
    """``--input-size``: the preset's blocks at another resolution, the splatter image scaled with it."""
    half = LGMConfig.preset("tiny", 32)
    assert (half.input_size, half.splat_size, half.num_gaussians) == (32, 16, 4 * 16**2)
    assert half.down_channels == LGMConfig.tiny().down_channels and half.up_channels == LGMConfig.tiny().up_channels
    assert LGMConfig.preset("tiny", 0) == LGMConfig.preset("tiny", 64) == LGMConfig.tiny()
    model = LGM(half)
    x = torch.randn(4, model.unet.conv_in.in_channels, 32, 32)
    assert model.unet(x).shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="multiple of 2"):
        LGMConfig.preset("tiny", 33)
    with pytest.raises(ValueError, match="divisible"):
        LGMConfig.preset("tiny", 36)  # even, but the U-Net halves it three times


# ----------------------------------------------------------------------------- weights I/O


def test_fp16_safetensors_round_trip_strict(tiny, tmp_path):
    path = tmp_path / "tiny_fp16.safetensors"
    tiny.save(path, half=True)
    loaded = LGM.from_pretrained(path)  # config comes from the file's metadata
    assert loaded.config == tiny.config
    for (k, a), (k2, b) in zip(tiny.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and b.dtype == torch.float32
        assert torch.equal(a.half().float(), b), k
    with torch.inference_mode():
        assert torch.allclose(loaded(tiny_input()), tiny(tiny_input()), atol=0.05)


def test_mismatched_checkpoint_is_a_clear_error(tiny, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    state["unet.extra.weight"] = torch.zeros(1)
    del state["conv.bias"]
    state["conv.weight"] = torch.zeros(14, 14, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointMismatchError) as err:
        LGM.from_pretrained(path, LGMConfig.tiny())
    msg = str(err.value)
    assert "1 missing (e.g. conv.bias)" in msg and "1 unexpected (e.g. unet.extra.weight)" in msg
    assert "conv.weight: file (14, 14, 3, 3) vs model (14, 14, 1, 1)" in msg


def test_missing_weights_names_the_flag(tmp_path):
    missing = tmp_path / "model_fp16_fixrot.safetensors"
    with pytest.raises(FileNotFoundError) as err:
        LGM.from_pretrained(missing)  # fails before building the 415 M-parameter model
    msg = str(err.value)
    assert "--lgm-weights" in msg and str(missing) in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="--lgm-weights"):
        LGM(LGMConfig.tiny()).load_official(missing)


# ----------------------------------------------------------------------------- rays and inputs


def test_plucker_rays_geometry():
    size = 65  # odd: the centre pixel's centre is the principal point
    K = intrinsics(size, size)
    c2w = look_at(np.array([1.0, -2.0, 1.3]))
    rays = plucker_rays(K, c2w, size, size, dtype=torch.float64)
    assert rays.shape == (6, size, size)
    moment, d = rays[:3], rays[3:]
    assert torch.allclose(d.norm(dim=0), torch.ones(size, size, dtype=torch.float64))
    assert torch.allclose(d[:, size // 2, size // 2], torch.from_numpy(c2w[:3, 2]))
    o = torch.from_numpy(c2w[:3, 3])[:, None, None].expand_as(d)
    assert torch.allclose(moment, torch.cross(o, d, dim=0))
    # The moment is a property of the line: any point on the ray gives the same one.
    assert torch.allclose(moment, torch.cross(o + 0.7 * d, d, dim=0))
    assert torch.allclose((moment * d).sum(0), torch.zeros(size, size, dtype=torch.float64), atol=1e-12)
    # Top-left pixel centre (0.5, 0.5) projects back onto its own ray.
    cam = np.linalg.inv(c2w) @ np.append(c2w[:3, 3] + d[:, 0, 0].numpy(), 1.0)
    uv = (K @ cam[:3])[:2] / cam[2]
    assert np.allclose(uv, [0.5, 0.5])


def test_plucker_rays_match_lgm_reference_camera():
    # LGM's ray generator for its reference pose orbit_camera(0, 0, 1.5) (OpenGL, identity
    # rotation at z = 1.5): directions ((x + 0.5 - w/2) / f, -(y + 0.5 - h/2) / f, -1).
    size, fovy = 32, 49.1
    f = 0.5 * size / math.tan(math.radians(fovy) / 2)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    d_ref = torch.nn.functional.normalize(torch.stack([(x + 0.5 - size / 2) / f, -(y + 0.5 - size / 2) / f, -torch.ones_like(x)], 0), dim=0)
    o_ref = torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)[:, None, None].expand_as(d_ref)
    ref = torch.cat([torch.cross(o_ref, d_ref, dim=0), d_ref], 0)
    c2w_cv = np.diag([1.0, -1.0, -1.0, 1.0])
    c2w_cv[2, 3] = 1.5
    ours = plucker_rays(intrinsics(size, size, fovy), c2w_cv, size, size, dtype=torch.float64)
    assert torch.allclose(ours, ref, atol=1e-12)


def test_prepare_inputs_normalises_resizes_and_accepts_cameras(tiny):
    cams = ring_cameras(size=128)[::3]
    rgb = torch.ones(2, 4, 3, 128, 128)
    x = tiny.prepare_inputs(rgb, cams)
    assert x.shape == (2, 4, 9, 64, 64)
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, 0, :3, 10, 10], white)
    small = [c.resized(64, 64) for c in cams]
    expected = plucker_rays(np.stack([c.K for c in small]), np.stack([c.c2w for c in small]), 64, 64)
    assert torch.allclose(x[1, :, 3:], expected, atol=1e-6)
    K = torch.tensor(np.stack([c.K for c in cams]))
    c2w = torch.tensor(np.stack([c.c2w for c in cams]))
    assert torch.equal(tiny.prepare_inputs(rgb, (K, c2w)), x)


# ----------------------------------------------------------------------------- frames


def test_lgm_frame_puts_first_camera_at_reference_pose():
    cams = ring_cameras(size=64)
    c2w = torch.tensor(np.stack([c.c2w for c in cams]))
    M = lgm_frame_transform(c2w[0])
    moved = transform_c2w(M, c2w)
    ref = torch.eye(4, dtype=torch.float64)
    ref[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    ref[2, 3] = 1.5
    assert torch.allclose(moved[0], ref, atol=1e-12)
    assert torch.allclose(moved[:, :3, 3].norm(dim=-1), torch.full((12,), 1.5, dtype=torch.float64))
    assert torch.allclose(M @ torch.tensor([0.0, 0, 0, 1], dtype=torch.float64), torch.tensor([0.0, 0, 0, 1], dtype=torch.float64), atol=1e-12)
    assert math.isclose(torch.linalg.det(M[:3, :3]).item() ** (1 / 3), 1.5 / CAMERA_DISTANCE)
    # Our ring's azimuth 90 lands on LGM's azimuth-90 side (+x), like LGM's default view order.
    assert moved[3, 0, 3] > 1.0
    # Rotations stay orthonormal; the inverse undoes the transform.
    R = moved[:, :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(12, 3, 3), atol=1e-12)
    assert torch.allclose(lgm_frame_inverse(c2w[0]) @ M, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(transform_c2w(invert_similarity(M), moved), c2w, atol=1e-12)


def test_gaussian_similarity_rotates_covariance_and_round_trips():
    gen = torch.Generator().manual_seed(3)
    n = 64
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=torch.float64), dim=-1)
    scales = torch.tensor([0.05, 0.01, 0.002], dtype=torch.float64).expand(n, 3) * (1 + torch.rand(n, 3, generator=gen, dtype=torch.float64))
    g = torch.cat([torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5, torch.rand(n, 1, generator=gen, dtype=torch.float64),
                   scales, q, torch.rand(n, 3, generator=gen, dtype=torch.float64)], dim=-1)
    Q, s = random_rotation(gen), 0.625
    for A in (s * Q, -s * Q):  # a rotation, and a reflection (ellipsoids are symmetric, so it is representable)
        M = torch.eye(4, dtype=torch.float64)
        M[:3, :3] = A
        M[:3, 3] = torch.tensor([0.3, -0.2, 1.5])
        out = transform_gaussians(g, M)
        assert torch.allclose(out[:, layout.XYZ], g[:, layout.XYZ] @ A.T + M[:3, 3])
        assert torch.allclose(out[:, layout.SCALE], s * g[:, layout.SCALE])
        assert torch.allclose(covariance(out), A @ covariance(g) @ A.T, atol=1e-12)
        assert torch.equal(out[:, layout.OPACITY], g[:, layout.OPACITY]) and torch.equal(out[:, layout.RGB], g[:, layout.RGB])
        back = transform_gaussians(out, invert_similarity(M))
        assert torch.allclose(back[:, :7], g[:, :7], atol=1e-12) and torch.allclose(back[:, 11:], g[:, 11:])
        dot = (back[:, layout.ROTATION] * g[:, layout.ROTATION]).sum(-1).abs()  # q and -q are the same rotation
        assert torch.allclose(dot, torch.ones(n, dtype=torch.float64), atol=1e-12)
    # Batched transforms broadcast over the Gaussians' leading dims.
    Ms = torch.stack([M, torch.eye(4, dtype=torch.float64)])
    batched = transform_gaussians(torch.stack([g, g]).float(), Ms)
    assert batched.dtype == torch.float32 and torch.allclose(batched[1], g.float())


def test_quaternion_matrix_round_trip_including_half_turns():
    gen = torch.Generator().manual_seed(4)
    Rs = torch.stack([random_rotation(gen) for _ in range(32)] + [torch.diag(torch.tensor(d, dtype=torch.float64))
                     for d in ([1.0, -1, -1], [-1.0, 1, -1], [-1.0, -1, 1], [1.0, 1, 1])])
    assert torch.allclose(quat_to_rotmat(matrix_to_quat(Rs)), Rs, atol=1e-12)


def test_lgm_frame_reconstruction_is_equivariant_to_scene_rotation():
    # In the LGM frame the inputs only depend on cameras relative to the first one, so
    # rotating the whole scene about the origin must rotate the predicted Gaussians.
    torch.manual_seed(0)
    model = LGM(LGMConfig.tiny(frame="lgm")).eval()
    cams = ring_cameras(size=64)[::3]
    K = torch.tensor(np.stack([c.K for c in cams]))
    c2w = torch.tensor(np.stack([c.c2w for c in cams]))
    G = torch.eye(4, dtype=torch.float64)
    G[:3, :3] = random_rotation(torch.Generator().manual_seed(5))
    rgb = torch.rand(1, 4, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        g = model.reconstruct(rgb, (K, c2w))
        g_rot = model.reconstruct(rgb, (K, G @ c2w))
    assert g.shape == (1, 4096, 14)
    expected = transform_gaussians(g, G)
    assert torch.allclose(g_rot[..., :7], expected[..., :7], atol=1e-4)
    assert torch.allclose(covariance(g_rot), covariance(expected), atol=1e-6)


# ----------------------------------------------------------------------------- down hook


def test_down_hook_shapes_identity_and_unmodified_skips(tiny):
    x = tiny_input()
    calls = []

    def record(level, feats):
        calls.append((level, tuple(feats.shape)))
        return feats

    skips_seen = []
    handle = tiny.unet.up_blocks[0].register_forward_pre_hook(lambda mod, args: skips_seen.append(list(args[1])))
    try:
        with torch.inference_mode():
            base = tiny(x)
            same = tiny(x, down_hook=record)
            zeroed = tiny(x, down_hook=lambda level, f: torch.zeros_like(f) if level == 4 else f)
    finally:
        handle.remove()
    sizes = tiny.config.hook_sizes
    assert calls == [(i, (4, c, s, s)) for i, (c, s) in enumerate(zip(tiny.hook_channels, sizes))]
    assert sizes == tuple(64 // f for f in tiny.hook_strides) == (64, 32, 16, 8, 8)
    assert torch.equal(base, same)
    assert not torch.equal(base, zeroed)
    # The deepest skip is the last down block's output (hook level 4); the hook must not have touched it.
    assert all(torch.equal(a, b) for a, b in zip(skips_seen[0], skips_seen[2]))
    with pytest.raises(ValueError, match="down_hook"):
        tiny(x, down_hook=lambda level, f: f[:, :1])


def test_attention_mixes_the_views_of_one_object_only(tiny):
    x = tiny_input(batch=2)
    y = x.clone()
    y[0, 3] += 1.0  # change view 3 of object 0
    with torch.inference_mode():
        out_x, out_y = tiny(x), tiny(y)
        two_views = tiny(x[:, :2])
    assert (out_x[0, 0] - out_y[0, 0]).abs().max() > 1e-4  # view 0 sees view 3 through attention
    assert torch.allclose(out_x[1], out_y[1], atol=1e-6)  # another object does not
    assert two_views.shape == (2, 2, 14, 32, 32)


# ----------------------------------------------------------------------------- official weights: frame detection


def _write_safetensors_header(path: Path, shapes: dict[str, list[int]], dtype: str = "F16") -> None:
    """A safetensors file with exactly these tensors and no metadata, as the official release
    writes it, with zero data left sparse (the header is what layout detection reads)."""
    size = {"F16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for name in sorted(shapes):
        n = math.prod(shapes[name]) * size
        header[name] = {"dtype": dtype, "shape": shapes[name], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)


def test_official_big_layout_is_detected_from_the_header(tmp_path):
    from partrm.models.lgm import checkpoint_layout, detect_preset

    expected = json.loads((DATA / "lgm_big_keys.json").read_text())
    path = tmp_path / "model_fp16_fixrot.safetensors"
    _write_safetensors_header(path, expected)
    layout_ = checkpoint_layout(path)
    assert layout_ == {k: tuple(v) for k, v in expected.items()}
    assert detect_preset(layout_) == "big"
    renamed = dict(expected)
    renamed["unet.extra.weight"] = renamed.pop("conv.bias")
    assert detect_preset(renamed) is None
    reshaped = dict(expected, **{"conv.weight": [14, 14, 3, 3]})
    assert detect_preset(reshaped) is None


def test_checkpoint_without_metadata_loads_in_lgm_frame_with_outputs_in_object_frame(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = LGM(LGMConfig.tiny()).eval()
    path = tmp_path / "foreign.safetensors"
    save_file({k: v.half().contiguous() for k, v in source.state_dict().items()}, str(path))  # official style: fp16, no metadata
    model = LGM.from_pretrained(path).eval()
    line = capsys.readouterr().err.strip().splitlines()
    assert model.config == LGMConfig.tiny(frame="lgm")
    assert len(line) == 1 and "frame='lgm'" in line[0] and "--lgm-frame" in line[0] and str(path) in line[0]
    cams = ring_cameras(size=64)[::3]
    K = torch.tensor(np.stack([c.K for c in cams]))
    c2w = torch.tensor(np.stack([c.c2w for c in cams]))
    rgb = torch.rand(1, 4, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        g = model.reconstruct(rgb, (K, c2w))
        # by hand: LGM-frame cameras in, LGM-frame Gaussians out, mapped back to the object frame
        M = lgm_frame_transform(c2w[0])
        raw = LGM.gaussians(model(model.prepare_inputs(rgb, (K, c2w), M)))
        by_hand = transform_gaussians(raw, lgm_frame_inverse(c2w[0]))
        # the object frame follows the cameras: turning every camera about the object turns the output
        G = torch.eye(4, dtype=torch.float64)
        G[:3, :3] = random_rotation(torch.Generator().manual_seed(5))
        g_rot = model.reconstruct(rgb, (K, G @ c2w))
    torch.testing.assert_close(g, by_hand, atol=1e-5, rtol=0)
    expected = transform_gaussians(g, G)
    assert torch.allclose(g_rot[..., :3], expected[..., :3], atol=1e-4)
    # LGM's cube [-1, 1]^3 is centred on the object's origin: outputs lie within sqrt(3) / scale of it
    assert (g[..., :3].norm(dim=-1) <= math.sqrt(3) / model.config.lgm_scale + 1e-4).all()
    # a flag forces either frame, silently
    forced = LGM.from_pretrained(path, frame="object")
    assert forced.config.frame == "object" and capsys.readouterr().err == ""
    for a, b in zip(forced.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    # our own checkpoints record their frame
    source.save(tmp_path / "ours.safetensors")
    assert LGM.from_pretrained(tmp_path / "ours.safetensors").config.frame == "object"
    assert LGM.from_pretrained(tmp_path / "ours.safetensors", frame="lgm").config.frame == "lgm"


def test_unknown_layout_without_metadata_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointMismatchError, match="match no LGM preset"):
        LGM.from_pretrained(path)


def test_train_init_from_foreign_weights_keeps_the_lgm_frame(tmp_path):
    from safetensors.torch import save_file

    from partrm.train import build_model, load_config

    torch.manual_seed(0)
    path = tmp_path / "foreign.safetensors"
    save_file(LGM(LGMConfig.tiny()).state_dict(), str(path))
    assert build_model(load_config(stage="1", init=str(path))).config.lgm.frame == "lgm"
    assert build_model(load_config(stage="1", init=str(path), lgm_frame="object")).config.lgm.frame == "object"
    assert build_model(load_config(stage="teacher", init=str(path), lgm_frame="auto")).config.frame == "lgm"
    with pytest.raises(ValueError, match="lgm_frame must be one of object, lgm, auto"):
        load_config(lgm_frame="sideways")
