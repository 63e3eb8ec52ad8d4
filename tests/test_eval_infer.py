"""Evaluation tables and inference outputs on real renders (untrained tiny models: these
tests check the protocol and the files, not the quality)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partrm.cli import app
from partrm.evaluate import EvalConfig, choose_pairs, evaluate, oracle_gaussians, write_outputs
from partrm.gaussians import read_ply
from partrm.gsdb import GaussianDatabase, build_gsdb
from partrm.models.lgm import LGM, LGMConfig
from partrm.models.partrm import PartRM

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def models(rendered_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    lgm = LGM(LGMConfig.tiny())
    lgm.save(out / "lgm.safetensors")
    PartRM.from_lgm(lgm).save(out / "partrm.safetensors")
    build_gsdb(rendered_dataset, out / "lgm.safetensors", out / "gsdb.h5", progress=False)
    return out


def test_protocol_picks_one_seeded_source_per_sequence(rendered_dataset):
    from partrm.data import PairConfig, PairDataset

    data = PairDataset(rendered_dataset, config=PairConfig(input_size=64, target_size=32))
    chosen = choose_pairs(data, seed=0)
    by_seq = {}
    for k in chosen:
        by_seq.setdefault(data.pairs[k].sequence_id, set()).add(data.pairs[k].source_stage)
    assert all(len(s) == 1 for s in by_seq.values())
    assert choose_pairs(data, seed=0) == chosen
    assert len(chosen) <= 5 * len(by_seq)


def test_eval_tables_rows_and_baselines(rendered_dataset, models, tmp_path):
    model = PartRM.load(models / "partrm.safetensors").eval()
    db = GaussianDatabase(models / "gsdb.h5")
    cfg = EvalConfig(data=str(rendered_dataset), split="train", eval_size=64, seed=0)
    result = evaluate(cfg, model, db, progress=False)
    methods = {r["method"] for r in result.rows}
    assert methods == {"partrm", "static", "oracle"}
    per_method = {m: [r for r in result.rows if r["method"] == m] for m in methods}
    assert len({len(v) for v in per_method.values()}) == 1
    for r in result.rows:
        assert np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 and r["lpips"] is None
    # an untrained PartRM is its LGM: it predicts the static source state exactly
    np.testing.assert_allclose([r["psnr"] for r in per_method["partrm"]], [r["psnr"] for r in per_method["static"]], atol=0.05)
    assert set(result.tables["partrm"]) == {"storage-furniture", "laptop", "overall"}
    assert result.tables["partrm"]["overall"]["count"] == len(per_method["partrm"])
    assert "LPIPS n/a" in result.markdown and "| partrm | laptop | yes |" in result.markdown
    write_outputs(result, tmp_path, cfg)
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert len(rows) == len(result.rows)
    assert json.loads((tmp_path / "results.json").read_text())["tables"]["static"]["overall"]["count"] == len(per_method["static"])


def test_oracle_moves_exactly_the_moving_part(rendered_dataset, models):
    db = GaussianDatabase(models / "gsdb.h5")
    src, dst = "syn-laptop-0-000_joint_0_c0_s0", "syn-laptop-0-000_joint_0_c0_s5"
    s = db.splatter(src)
    flat = torch.from_numpy(s.transpose(0, 2, 3, 1).reshape(-1, 14))
    moved = oracle_gaussians(flat, rendered_dataset, src, dst)
    changed = (moved[:, :3] - flat[:, :3]).norm(dim=1) > 1e-6
    assert 0 < changed.sum() < len(flat)
    # an untrained LGM's Gaussians sit near the object, so some lie on the lid
    assert torch.equal(moved[~changed], flat[~changed])


def test_infer_writes_ply_turntable_and_drags(rendered_dataset, models, tmp_path):
    out = tmp_path / "infer"
    result = CliRunner().invoke(app, ["infer", "--checkpoint", str(models / "partrm.safetensors"), "--data", str(rendered_dataset),
                                      "--state", "syn-laptop-0-000_joint_0_c0_s1", "--drag", "64,60:64,40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("prediction.ply", "turntable.png", "turntable.gif", "drags.png"):
        assert (out / name).is_file()
    g = read_ply(out / "prediction.ply")
    assert g.means.shape == (4 * 32 * 32, 3)
    from plyfile import PlyData

    assert sum(p.name.startswith("f_rest_") for p in PlyData.read(str(out / "prediction.ply"))["vertex"].properties) == 45
    # --up y --sh-degree 0: the same Gaussians rotated into the -Y-up frame, no f_rest_*
    out_y = tmp_path / "infer_y"
    result = CliRunner().invoke(app, ["infer", "--checkpoint", str(models / "partrm.safetensors"), "--data", str(rendered_dataset),
                                      "--state", "syn-laptop-0-000_joint_0_c0_s1", "--drag", "64,60:64,40", "--out", str(out_y),
                                      "--up", "y", "--sh-degree", "0"])
    assert result.exit_code == 0, result.output
    vertex = PlyData.read(str(out_y / "prediction.ply"))["vertex"]
    assert not any(p.name.startswith("f_rest_") for p in vertex.properties)
    torch.testing.assert_close(torch.from_numpy(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)),
                               torch.stack([g.means[:, 0], -g.means[:, 2], g.means[:, 1]], 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(read_ply(out_y / "prediction.ply").means, g.means, atol=1e-6, rtol=0)
    bad_up = CliRunner().invoke(app, ["infer", "--checkpoint", str(models / "partrm.safetensors"), "--data", str(rendered_dataset),
                                      "--state", "syn-laptop-0-000_joint_0_c0_s1", "--drag", "64,60:64,40", "--up", "x"])
    assert bad_up.exit_code == 2 and "--up" in bad_up.output
    bad = CliRunner().invoke(app, ["infer", "--checkpoint", str(models / "partrm.safetensors"), "--data", str(rendered_dataset),
                                   "--state", "syn-laptop-0-000_joint_0_c0_s1", "--out", str(out)])
    assert bad.exit_code == 2 and "--drag" in bad.output
    no_views = CliRunner().invoke(app, ["infer", "--checkpoint", str(models / "partrm.safetensors"), "--drag", "1,1:2,2",
                                        "--image", str(out / "drags.png"), "--out", str(out)])
    assert no_views.exit_code == 2 and "--zero123-weights" in no_views.output
