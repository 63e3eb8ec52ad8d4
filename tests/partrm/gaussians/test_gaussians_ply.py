"""3DGS PLY export / import."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partrm.gaussians import Gaussians, RasterConfig, gaussians_from_lgm, read_ply, render_gaussians, write_ply
from partrm.gaussians.ply import PROPERTIES, SH_C0, Y_UP_ROTATION, property_names


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gaussians(n: int = 50, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    quats = torch.randn(n, 4, generator=g)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.5,
        quats=quats / quats.norm(dim=1, keepdim=True),
        scales=torch.exp(torch.randn(n, 3, generator=g) - 3.0),
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        colors=torch.rand(n, 3, generator=g),
    )


def _header_and_body(path):
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    return raw[:end].decode("ascii").splitlines(), raw[end:]


def test_round_trip(tmp_path):
    g = _gaussians()
    path = tmp_path / "g.ply"
    write_ply(path, *g)
    back = read_ply(path)
    assert back.opacities.shape == (50,) and back.means.dtype == torch.float32
    for name, a, b in zip(Gaussians._fields, back, g):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5, msg=name)


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_standard_3dgs_layout(tmp_path, sh_degree):
    g = _gaussians(n=7)
    path = tmp_path / "g.ply"
    write_ply(path, *g, sh_degree=sh_degree)
    header, body = _header_and_body(path)
    names = property_names(sh_degree)
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert [h for h in header if h.startswith("comment")] == ["comment up +z (partrm object frame: Z up, front -X)", f"comment sh_degree {sh_degree}"]
    assert [h for h in header if h.startswith("element")] == ["element vertex 7"]
    assert [h for h in header if h.startswith("property")] == [f"property float {p}" for p in names]
    rest = [f"f_rest_{i}" for i in range(45)] if sh_degree == 3 else []
    assert list(names) == (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest + ["opacity"]
        + ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    assert header[-1] == "end_header"
    assert len(body) == 7 * len(names) * 4
    rows = np.frombuffer(body, dtype="<f4").reshape(7, len(names)).astype(np.float64)
    col = {p: rows[:, i] for i, p in enumerate(names)}
    for name in rest:
        np.testing.assert_array_equal(col[name], 0.0)
    np.testing.assert_allclose(np.stack([col["x"], col["y"], col["z"]], 1), g.means.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.stack([col["nx"], col["ny"], col["nz"]], 1), 0.0)
    f_dc = np.stack([col[f"f_dc_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(f_dc, (g.colors.double().numpy() - 0.5) / SH_C0, rtol=1e-6, atol=1e-6)
    o = g.opacities.double().numpy()
    np.testing.assert_allclose(col["opacity"], np.log(o / (1 - o)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.stack([col[f"scale_{i}"] for i in range(3)], 1), np.log(g.scales.double().numpy()), rtol=1e-6
    )
    rot = np.stack([col[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rot, g.quats.numpy(), atol=1e-6)  # w, x, y, z order kept


def test_quaternions_are_normalised_and_extreme_opacities_stay_finite(tmp_path):
    g = _gaussians(n=4)
    g = g._replace(
        quats=g.quats * torch.tensor([[2.0], [0.5], [3.0], [1.0]]), opacities=torch.tensor([0.0, 1.0, 0.5, 0.25])
    )
    path = tmp_path / "g.ply"
    write_ply(path, *g)
    _, body = _header_and_body(path)
    assert np.isfinite(np.frombuffer(body, dtype="<f4")).all()
    back = read_ply(path)
    torch.testing.assert_close(back.quats.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(back.opacities, torch.tensor([0.0, 1.0, 0.5, 0.25]), atol=1e-6, rtol=0)


def test_reads_other_property_orders_extra_properties_and_big_endian(tmp_path):
    g = _gaussians(n=5)
    rng = np.random.default_rng(0)
    o = g.opacities.double().numpy()
    values = {
        "x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
        "f_dc_0": (g.colors[:, 0] - 0.5) / SH_C0, "f_dc_1": (g.colors[:, 1] - 0.5) / SH_C0,
        "f_dc_2": (g.colors[:, 2] - 0.5) / SH_C0, "opacity": np.log(o / (1 - o)),
        "scale_0": g.scales[:, 0].log(), "scale_1": g.scales[:, 1].log(), "scale_2": g.scales[:, 2].log(),
        "rot_0": g.quats[:, 0], "rot_1": g.quats[:, 1], "rot_2": g.quats[:, 2], "rot_3": g.quats[:, 3],
    }  # fmt: skip
    names = list(values)[::-1] + [f"f_rest_{i}" for i in range(9)]
    for name in names[-9:]:
        values[name] = rng.normal(size=5)
    for endian, fmt in (("<", "binary_little_endian"), (">", "binary_big_endian")):
        dt = np.dtype([(n, endian + ("f8" if n == "opacity" else "f4")) for n in names] + [("flag", endian + "u1")])
        data = np.zeros(5, dtype=dt)
        for n in names:
            data[n] = np.asarray(values[n], dtype=np.float64)
        header = f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex 5\n"
        header += "".join(f"property {'double' if n == 'opacity' else 'float'} {n}\n" for n in names)
        header += "property uchar flag\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
        path = tmp_path / f"{fmt}.ply"
        path.write_bytes(header.encode("ascii") + data.tobytes())
        back = read_ply(path)
        for name, a, b in zip(Gaussians._fields, back, g):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5, msg=name)


def test_write_rejects_bad_inputs(tmp_path):
    g = _gaussians(n=3)
    path = tmp_path / "bad.ply"
    with pytest.raises(ValueError, match="positive"):
        write_ply(path, *g._replace(scales=torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="opacities"):
        write_ply(path, *g._replace(opacities=torch.tensor([0.5, 1.5, 0.2])))
    with pytest.raises(ValueError, match="shape"):
        write_ply(path, *g._replace(means=torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="rows"):
        write_ply(path, *g._replace(colors=torch.zeros(4, 3)))
    with pytest.raises(ValueError, match="non-zero"):
        write_ply(path, *g._replace(quats=torch.zeros(3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        write_ply(path, *g._replace(means=torch.full((3, 3), float("nan"))))


def test_read_rejects_bad_files(tmp_path):
    not_ply = tmp_path / "a.ply"
    not_ply.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(not_ply)
    missing = tmp_path / "c.ply"
    missing.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n" + b"\0" * 4
    )
    with pytest.raises(ValueError, match="missing"):
        read_ply(missing)
    g = _gaussians(n=3)
    short = tmp_path / "d.ply"
    write_ply(short, *g)
    short.write_bytes(short.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(short)
    with pytest.raises(ValueError, match="sh_degree"):
        write_ply(tmp_path / "e.ply", *g, sh_degree=2)
    with pytest.raises(ValueError, match="up"):
        write_ply(tmp_path / "e.ply", *g, up="x")


def test_lgm_gaussians_export_and_render_the_same(tmp_path):
    """A batch element of LGM output goes through the file and renders the same image."""
    g = _gaussians(n=200, seed=3)
    lgm = torch.cat([g.means, g.opacities[:, None], g.scales, g.quats, g.colors], dim=1)[None]  # [B, N, 14]
    fields = gaussians_from_lgm(lgm)
    path = tmp_path / "lgm.ply"
    write_ply(path, *(t[0] for t in fields))
    back = read_ply(path)
    viewmat = torch.eye(4)
    viewmat[2, 3] = 2.5
    K = torch.tensor([[40.0, 0.0, 16.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]])
    config = RasterConfig(backend="torch")
    a = render_gaussians(*(t[0] for t in fields), viewmat[None], K[None], 32, 24, background=1.0, config=config)
    b = render_gaussians(*back, viewmat[None], K[None], 32, 24, background=1.0, config=config)
    assert float(a.alpha.max()) > 0.5
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-4, rtol=0)


def _reference_layout_load(path, max_sh_degree=3):
    """What the reference 3DGS loader does with a PLY (its ``load_ply``, re-stated): it
    reads f_dc_0..2, then every ``f_rest_*`` property sorted by index, asserts there are
    3 (d + 1)^2 - 3 of them and reshapes them to [N, 3, (d + 1)^2 - 1]."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"]
    names = [p.name for p in v.properties]
    xyz = np.stack([np.asarray(v[a]) for a in ("x", "y", "z")], axis=1)
    extra = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n.split("_")[-1]))
    assert len(extra) == 3 * (max_sh_degree + 1) ** 2 - 3, f"{len(extra)} f_rest_* properties"
    rest = np.zeros((len(xyz), len(extra)))
    for i, n in enumerate(extra):
        rest[:, i] = np.asarray(v[n])
    rest = rest.reshape(len(xyz), 3, (max_sh_degree + 1) ** 2 - 1)
    scales = np.stack([np.asarray(v[n]) for n in sorted(n for n in names if n.startswith("scale_"))], axis=1)
    rots = np.stack([np.asarray(v[n]) for n in sorted(n for n in names if n.startswith("rot"))], axis=1)
    return {"xyz": xyz, "f_rest": rest, "scales": scales, "rots": rots, "opacity": np.asarray(v["opacity"]), "count": len(extra)}


def test_degree_3_passes_the_reference_loader_count_check_and_degree_0_fails_it(tmp_path):
    g = _gaussians(n=9)
    write_ply(tmp_path / "d3.ply", *g, sh_degree=3)
    loaded = _reference_layout_load(tmp_path / "d3.ply")
    assert loaded["count"] == 45 and loaded["f_rest"].shape == (9, 3, 15)
    np.testing.assert_allclose(loaded["xyz"], g.means.numpy(), rtol=1e-6)
    assert loaded["scales"].shape == (9, 3) and loaded["rots"].shape == (9, 4)
    write_ply(tmp_path / "d0.ply", *g, sh_degree=0)
    with pytest.raises(AssertionError, match="0 f_rest"):
        _reference_layout_load(tmp_path / "d0.ply")
    _reference_layout_load(tmp_path / "d0.ply", max_sh_degree=0)
    assert (tmp_path / "d3.ply").stat().st_size > (tmp_path / "d0.ply").stat().st_size


def _rotation(q):
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)  # fmt: skip


def test_y_up_rotates_positions_and_orientations_together(tmp_path):
    g = _gaussians(n=20, seed=4)
    # one Gaussian elongated along the object's up axis (+Z) at the top
    means = g.means.clone()
    means[0] = torch.tensor([0.0, 0.0, 0.8])
    scales = g.scales.clone()
    scales[0] = torch.tensor([0.01, 0.01, 0.3])
    quats = g.quats.clone()
    quats[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    g = g._replace(means=means, scales=scales, quats=quats)
    write_ply(tmp_path / "y.ply", *g, up="y")
    header, _ = _header_and_body(tmp_path / "y.ply")
    assert "comment up -y (partrm object frame rotated +90 deg about X: z -> -y, y -> z)" in header
    raw = read_ply(tmp_path / "y.ply", up="z")  # the file's own numbers
    # the object's up is the file's -Y; its long axis points along -Y too
    np.testing.assert_allclose(raw.means[0].numpy(), [0.0, -0.8, 0.0], atol=1e-6)
    long_axis = _rotation(raw.quats[:1].double().numpy())[0] @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(np.abs(long_axis), [0.0, 1.0, 0.0], atol=1e-6)
    # every covariance is rotated by the same rotation as the positions
    np.testing.assert_allclose(raw.means.double().numpy(), g.means.double().numpy() @ Y_UP_ROTATION.T, atol=1e-6)
    R_file = _rotation(raw.quats.double().numpy())
    R_obj = _rotation(g.quats.double().numpy())
    np.testing.assert_allclose(R_file, Y_UP_ROTATION @ R_obj, atol=1e-6)
    torch.testing.assert_close(raw.scales, g.scales, rtol=2e-5, atol=2e-6)
    # read back (the header comment tells the frame) gives the object frame again
    back = read_ply(tmp_path / "y.ply")
    for name, a, b in zip(Gaussians._fields, back, g):
        if name == "quats":  # q and -q are the same rotation
            a = a * torch.sign((a * b).sum(1, keepdim=True))
        torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5, msg=name)


def test_reads_ascii_ply(tmp_path):
    from plyfile import PlyData

    g = _gaussians(n=6)
    write_ply(tmp_path / "bin.ply", *g, sh_degree=3)
    binary = PlyData.read(str(tmp_path / "bin.ply"))
    ascii_path = tmp_path / "ascii.ply"
    PlyData([binary["vertex"]], text=True).write(str(ascii_path))
    assert ascii_path.read_bytes().startswith(b"ply\nformat ascii 1.0\n")
    back = read_ply(ascii_path)
    for name, a, b in zip(Gaussians._fields, back, g):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_same_input_same_bytes(tmp_path):
    g = _gaussians(n=30)
    write_ply(tmp_path / "a.ply", *g, up="y")
    write_ply(tmp_path / "b.ply", *g, up="y")
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
