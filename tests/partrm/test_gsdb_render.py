"""The geometric Gaussian database (``gsdb build --source render``) on the rendered fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partdrag4d import store
from partrm.gsdb import GaussianDatabase
from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb, reconstruction_psnr, refine_splatter, state_splatter, state_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")
INPUT_VIEWS = (0, 3, 6, 9)
CFG = RenderGsdbConfig(splat_size=128)  # the 128-px fixture: one Gaussian per input pixel


def _states(root):
    return sorted(r["state_id"] for r in store.read_jsonl(root / store.MANIFEST) if r.get("status") == "ok")


@pytest.fixture(scope="module")
def splatters(rendered_dataset):
    ids = _states(rendered_dataset)
    picked = [ids[0], ids[5], ids[8]]  # drawer closed / fully out, laptop half open
    return {sid: state_splatter(rendered_dataset, sid, CFG) for sid in picked}


def test_layout_matches_lgm_activations(splatters):
    for s in splatters.values():
        assert s.shape == (4, 14, 128, 128) and s.dtype == np.float32 and np.isfinite(s).all()
        assert np.abs(s[:, 0:3]).max() <= 1.0  # xyz clamp(-1, 1)
        assert (s[:, 3] >= 0).all() and (s[:, 3] <= 1).all()  # opacity
        assert (s[:, 4:7] > 0).all()  # scales
        np.testing.assert_allclose(np.linalg.norm(s[:, 7:11], axis=1), 1.0, atol=1e-5)  # unit quaternions
        assert (s[:, 11:14] >= 0).all() and (s[:, 11:14] <= 1).all()


def test_rerenders_its_input_views(rendered_dataset, splatters):
    """Each input view's splatter image drawn in that view reproduces it (the unprojection is
    exact up to the splat footprint); the whole database stays close on every input view."""
    for sid, s in splatters.items():
        for k, v in enumerate(INPUT_VIEWS):
            own = s[k : k + 1]
            assert reconstruction_psnr(own, rendered_dataset, sid, [v], size=128)[0] >= 30.0, (sid, v)
        assert reconstruction_psnr(s, rendered_dataset, sid, INPUT_VIEWS, size=128).min() >= 24.0, sid


def test_gaussians_lie_on_the_mesh_surface(rendered_dataset, splatters):
    import trimesh

    for sid, s in splatters.items():
        mesh = trimesh.load(store.state_dir(rendered_dataset, sid) / "mesh.obj", force="mesh", process=False)
        size = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
        g = s.transpose(0, 2, 3, 1).reshape(-1, 14)
        fg = g[g[:, 3] > 0.5][::4]
        _, dist, _ = trimesh.proximity.closest_point(mesh, fg[:, :3].astype(np.float64))
        assert np.median(dist) <= 0.01 * size, (sid, np.median(dist) / size)
        assert np.quantile(dist, 0.9) <= 0.03 * size, (sid, np.quantile(dist, 0.9) / size)


def test_background_pixels_are_transparent(rendered_dataset, splatters):
    for sid, s in splatters.items():
        folder = store.render_dir(rendered_dataset, sid)
        for k, v in enumerate(INPUT_VIEWS):
            alpha = store.read_rgba(folder, v)[..., 3]
            empty, full = alpha == 0, alpha == 255
            assert (s[k, 3][empty] == 0).all() and (s[k, 3][~empty] > 0).all()
            assert (s[k, 3][full] == 1).all()
            assert empty.mean() > 0.3 and full.mean() > 0.05  # the checks are not vacuous


def test_refinement_improves_novel_views_and_keeps_layout(rendered_dataset, splatters):
    sid = next(iter(splatters))
    cfg = RenderGsdbConfig(splat_size=32, refine_steps=8, refine_views_per_step=3, refine_size=64)
    s = state_splatter(rendered_dataset, sid, cfg)
    targets = state_targets(rendered_dataset, sid, 64)
    refined = refine_splatter(s, targets, cfg, seed=1)
    again = refine_splatter(s, targets, cfg, seed=1)
    np.testing.assert_array_equal(refined, again)  # same seed, same bytes
    novel = [v for v in range(12) if v not in INPUT_VIEWS]
    before = reconstruction_psnr(s, rendered_dataset, sid, novel, size=64).mean()
    after = reconstruction_psnr(refined, rendered_dataset, sid, novel, size=64).mean()
    assert after > before + 0.5, (before, after)
    assert refined.shape == s.shape
    assert (refined[:, 3][s[:, 3] == 0] == 0).all()  # background stays transparent
    np.testing.assert_allclose(np.linalg.norm(refined[:, 7:11], axis=1), 1.0, atol=1e-5)


def test_cli_builds_the_database_and_resumes(rendered_dataset, tmp_path, monkeypatch):
    import partrm.gsdb_render as module
    from partrm.cli import app

    out = tmp_path / "gsdb.h5"
    runner = CliRunner()
    real = module.build_state
    calls = {"n": 0}

    def dies_on_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "build_state", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        build_render_gsdb(rendered_dataset, out, CFG, part_size=4, progress=False)
    assert not out.exists() and len(list((tmp_path / "gsdb.h5.parts").glob("part-*.h5"))) == 1
    monkeypatch.setattr(module, "build_state", real)
    result = runner.invoke(app, ["gsdb", "build", str(rendered_dataset), "--source", "render", "--splat-size", "128", "--out", str(out)])
    assert result.exit_code == 0, result.output
    db = GaussianDatabase(out)
    assert db.states() == _states(rendered_dataset)
    assert db.attrs["source"] == "render" and json.loads(db.attrs["render_config"])["splat_size"] == 128
    sid = db.states()[0]
    np.testing.assert_allclose(db.splatter(sid), state_splatter(rendered_dataset, sid, CFG), atol=2e-3, rtol=2e-3)  # float16
    db.close()
    bad = runner.invoke(app, ["gsdb", "build", str(rendered_dataset), "--source", "render", "--splat-size", "48", "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "not a square multiple of the splat size 48" in bad.output
    assert runner.invoke(app, ["gsdb", "build", str(rendered_dataset)]).exit_code != 0  # teacher source needs --teacher


def test_partdrag4d_gsdb_build_is_an_alias_of_partrm_gsdb_build(rendered_dataset, tmp_path):
    """The old command runs ``partrm gsdb build`` in a separate process (the dataset toolkit
    imports no model code): same arguments, same exit code, same file."""
    import subprocess
    import sys

    out = tmp_path / "alias.h5"
    args = ["gsdb", "build", str(rendered_dataset), "--source", "render", "--splat-size", "128", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "partdrag4d.cli", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    db = GaussianDatabase(out)
    assert db.states() == _states(rendered_dataset) and db.attrs["source"] == "render"
    db.close()
    bad = subprocess.run([sys.executable, "-m", "partdrag4d.cli", *args[:-1], str(tmp_path / "x.h5"), "--splat-size", "48"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a square multiple of the splat size 48" in bad.stderr
