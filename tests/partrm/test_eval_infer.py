"""Evaluation tables and inference outputs on real renders (untrained tiny models: these
tests check the protocol and the files, not the quality)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partrm.cli import app
from partdrag4d.errors import BadInput
from partrm.evaluate import (EVAL_STREAM, METHOD_TABLE, METHODS, SEEN_NEW, SUMMARY_KEYS, EvalConfig, Motion3D, SampleRow, choose_pairs,
                             evaluate, motion_errors_3d, oracle_gaussians, runnable_methods, sample_columns, summarise_groups, write_outputs)
from partrm.gaussians import read_ply
from partrm.gsdb import GaussianDatabase
from partrm.gsdb_build import build_gsdb
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


def test_part_masks_are_the_moving_part_of_the_source_and_target_stage(rendered_dataset):
    from partrm.data import PairConfig, PairDataset, resize_mask

    data = PairDataset(rendered_dataset, config=PairConfig(input_size=64, target_size=32))
    ref = data.pairs[0]
    views = list(data.config.input_views)
    source, target = data.part_masks(ref, views)
    assert source.shape == target.shape and source.shape[0] == len(views) and source.dtype == bool
    assert source.any() and (source != target).any()  # the part is seen, and moves
    np.testing.assert_array_equal(np.stack([resize_mask(m, 64) for m in source]), data[0]["mask"].numpy())
    back = next(p for p in data.pairs if p.sequence_id == ref.sequence_id and p.source_stage == ref.target_stage)
    np.testing.assert_array_equal(data.part_masks(back, views)[0], target)  # the target stage's masks as a source's


def test_eval_tables_rows_and_baselines(rendered_dataset, models, tmp_path):
    model = PartRM.load(models / "partrm.safetensors").eval()
    db = GaussianDatabase(models / "gsdb.h5")
    cfg = EvalConfig(data=str(rendered_dataset), split="train", eval_size=32, seed=0)
    result = evaluate(cfg, model, db, progress=False)
    methods = {r.method for r in result.rows}
    assert methods == {"partrm", "zero-drag", "static", "oracle"}
    per_method = {m: [r for r in result.rows if r.method == m] for m in methods}
    assert len({len(v) for v in per_method.values()}) == 1
    for r in result.rows:
        assert np.isfinite(r.psnr) and 0 < r.ssim <= 1 and r.lpips is None
    # an untrained PartRM is its LGM: it predicts the static source state exactly
    np.testing.assert_allclose([r.psnr for r in per_method["partrm"]], [r.psnr for r in per_method["static"]], atol=0.05)
    np.testing.assert_allclose([r.psnr_motion for r in per_method["zero-drag"]], [r.psnr_motion for r in per_method["static"]], atol=0.05)
    for r in result.rows:
        assert 0 < r.motion_fraction < 0.5 and np.isfinite(r.psnr_motion) and np.isfinite(r.psnr_rest)
        assert r.group == "train objects (seen in training)" and r.motion.chamfer is not None and r.motion.chamfer > 0
    assert all(r.motion.joint_found == 0.0 and r.motion.amount_err_rel == 1.0 for r in per_method["static"])  # nothing moves
    group = result.groups["train objects (seen in training)"]
    assert group["static"]["R"] in (0.0, None) and group["oracle"]["R"] in (1.0, None)
    assert group["partrm"]["delta_psnr_motion"] is not None and len(group["partrm"]["delta_psnr_motion_ci"]) == 2
    assert "| train objects (seen in training) | zero-drag |" in result.markdown
    assert set(result.tables["partrm"]) == {"storage-furniture", "laptop", "overall"}
    assert result.tables["partrm"]["overall"]["count"] == len(per_method["partrm"])
    assert "LPIPS n/a" in result.markdown and "| partrm | laptop | yes |" in result.markdown
    write_outputs(result, tmp_path, cfg)
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert len(rows) == len(result.rows)
    assert list(rows[0]) == sample_columns(result.rows) and "chamfer" in rows[0]  # the 3D columns where it was scored
    samples = json.loads((tmp_path / "results.json").read_text())["samples"]
    assert all(list(s) == list(rows[0]) for s in samples)
    assert [SampleRow.from_record(s) for s in samples] == result.rows
    assert json.loads((tmp_path / "results.json").read_text())["tables"]["static"]["overall"]["count"] == len(per_method["static"])


def test_eval_drags_come_from_their_own_stream_and_zero_drag_has_no_displacement(rendered_dataset, models, monkeypatch):
    from partrm.data import PairConfig, PairDataset

    cfg = PairConfig(input_size=64, target_size=32)
    train = PairDataset(rendered_dataset, config=cfg, seed=0)
    evald = PairDataset(rendered_dataset, config=cfg, seed=0, stream=EVAL_STREAM)
    assert train.pairs == evald.pairs
    assert not any(torch.equal(train[k]["drags"], evald[k]["drags"]) for k in range(3))
    with pytest.raises(ValueError, match="stream"):
        PairDataset(rendered_dataset, config=cfg, stream=0)  # [seed, index, 0] is the training seed
    model = PartRM.load(models / "partrm.safetensors").eval()
    seen = []
    real = model.reconstruct
    monkeypatch.setattr(model, "reconstruct", lambda rgb, cams, drags, valid: seen.append((drags.clone(), valid.clone())) or real(rgb, cams, drags, valid))
    result = evaluate(EvalConfig(data=str(rendered_dataset), split="train", eval_size=32, max_sequences=1, motion_3d=False,
                                  methods=("partrm", "zero-drag")), model, None, progress=False)
    assert len(seen) == 10  # 5 targets x (partrm, zero-drag)
    assert all(r.motion is None for r in result.rows) and "chamfer" not in sample_columns(result.rows)  # 3D not scored
    for (d, v), (z, zv) in zip(seen[0::2], seen[1::2]):
        assert torch.equal(v, zv) and v.any()
        assert torch.equal(z[..., :2], d[..., :2]) and torch.equal(z[..., 2:], z[..., :2])
        assert (d[..., 2:] != d[..., :2])[v].any()  # the real drags do move


def test_motion_errors_3d_on_constructed_predictions(rendered_dataset):
    from partrm.gaussians import layout

    def as_gaussians(points: np.ndarray) -> torch.Tensor:
        g = torch.zeros(len(points), layout.NUM_CHANNELS)
        g[:, layout.XYZ] = torch.from_numpy(points).float()
        g[:, layout.OPACITY] = 1.0
        g[:, layout.SCALE] = 0.01
        g[:, 7] = 1.0  # identity rotation (w)
        return g

    seq = "syn-laptop-0-000_joint_0_c0"
    # the truth as prediction; (0, 2) starts from the closed lid, whose motion only the reversed search sees
    for i, j in ((1, 4), (0, 2)):
        src, dst = f"{seq}_s{i}", f"{seq}_s{j}"
        a = np.load(rendered_dataset / "states" / src / "points.npy")
        b = np.load(rendered_dataset / "states" / dst / "points.npy")
        source = as_gaussians(a[np.random.default_rng(0).choice(len(a), 4096, replace=False)])
        exact = motion_errors_3d(as_gaussians(b), source, rendered_dataset, src, dst)
        assert exact.chamfer == 0.0 and exact.joint_found == 1.0 and exact.type_correct == 1.0
        assert exact.axis_err_deg < 3.0 and exact.amount_err_rel < 0.05, (i, j, exact)
    still = motion_errors_3d(source, source, rendered_dataset, src, dst)
    assert still.joint_found == 0.0 and still.amount_err_rel == 1.0 and still.axis_err_deg is None
    assert still.chamfer > 10 * max(exact.chamfer, 1e-3)
    transparent = source.clone()
    transparent[:, layout.OPACITY] = 0.0
    none = motion_errors_3d(transparent, None, rendered_dataset, src, dst)
    assert none.chamfer is None and none.joint_found is None


def sample_row(**values) -> SampleRow:
    """A SampleRow with a placeholder in every field but ``values``."""
    base = dict(method="partrm", category="laptop", seen=True, split="test", group=SEEN_NEW, object_id="o", sequence_id="s",
                source_state="a", target_state="b", psnr=20.0, ssim=0.9, lpips=None, motion_fraction=0.1, psnr_motion=15.0,
                ssim_motion=0.5, lpips_motion=None, psnr_rest=25.0, ssim_rest=0.95)
    return SampleRow(**{**base, **values})


COLUMNS = ["method", "category", "seen", "split", "group", "object_id", "sequence_id", "source_state", "target_state", "psnr", "ssim",
           "lpips", "motion_fraction", "psnr_motion", "ssim_motion", "lpips_motion", "psnr_rest", "ssim_rest"]
COLUMNS_3D = ["chamfer_pred", "chamfer_gt", "chamfer", "joint_found", "type_correct", "axis_err_deg", "amount_err_rel"]
TIMES = ["seconds_forward", "seconds_render", "seconds_3d"]


def test_sample_columns_are_the_row_fields_in_order_with_the_3d_ones_where_scored():
    row = sample_row()
    scored = replace(row, motion=Motion3D(chamfer=0.1, joint_found=0.0))
    assert sample_columns([row]) == list(row.record()) == COLUMNS + TIMES
    assert sample_columns([row, scored]) == list(scored.record()) == COLUMNS + COLUMNS_3D + TIMES
    assert scored.value("chamfer") == 0.1 and scored.value("chamfer_gt") is None and row.value("chamfer") is None
    assert SampleRow.from_record(scored.record()) == scored and SampleRow.from_record(row.record()) == row
    assert set(SUMMARY_KEYS) <= set(COLUMNS + COLUMNS_3D + TIMES)
    assert row.pair == ("s", "a", "b")


def test_methods_table_keeps_the_reports_order_and_says_what_each_needs():
    assert METHODS == tuple(METHOD_TABLE) == ("partrm", "zero-drag", "static", "oracle")
    assert [m for m in METHODS if METHOD_TABLE[m].under_test] == ["partrm", "zero-drag"]
    assert runnable_methods(METHODS, None, object()) == ["static", "oracle"]
    assert runnable_methods(METHODS, object(), None) == ["partrm", "zero-drag"]
    assert runnable_methods(("oracle", "partrm"), object(), object()) == ["oracle", "partrm"]
    with pytest.raises(BadInput, match="unknown methods"):
        EvalConfig(data="d", methods=("partrm", "orcale"))


def test_group_summary_recovery_ratio_and_paired_deltas():
    def rows(method, motion, full):
        return [sample_row(method=method, sequence_id=f"s{k}", target_state=f"t{k}", psnr_motion=m, psnr=f)
                for k, (m, f) in enumerate(zip(motion, full))]

    static = [10.0, 12.0, 11.0, 13.0]
    oracle = [14.0, 15.0, 13.0, 16.0]
    data = rows("static", static, static) + rows("oracle", oracle, oracle) + rows("partrm", oracle, static) + rows("zero-drag", static, static)
    groups = summarise_groups(data, ["partrm", "zero-drag", "static", "oracle"], resamples=500)
    g = groups["seen categories, new objects"]
    assert g["partrm"]["R"] == 1.0 and g["zero-drag"]["R"] == 0.0 and g["static"]["R"] == 0.0 and g["oracle"]["R"] == 1.0
    assert g["partrm"]["delta_psnr_motion"] == pytest.approx(3.0) and g["partrm"]["delta_psnr"] == 0.0
    lo, hi = g["partrm"]["delta_psnr_motion_ci"]
    assert 2.0 <= lo <= 3.0 <= hi <= 4.0
    assert g["zero-drag"]["delta_psnr_motion_ci"] == [0.0, 0.0]
    same = summarise_groups(rows("static", static, static) + rows("oracle", static, static) + rows("partrm", oracle, oracle),
                            ["partrm", "static", "oracle"], resamples=100)
    assert same["seen categories, new objects"]["partrm"]["R"] is None  # oracle == static: R undefined


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


def test_zero123_input_is_composited_on_white():
    from PIL import Image

    from partrm.infer import on_white

    rgba = np.zeros((4, 4, 4), np.uint8)  # transparent black
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 128)  # half-transparent black
    out = np.asarray(on_white(Image.fromarray(rgba, "RGBA")))
    assert out.shape == (4, 4, 3)
    assert (out[1:] == 255).all() and tuple(out[0, 0]) == (255, 0, 0)
    assert abs(int(out[0, 1, 0]) - 127) <= 1
    rgb = Image.new("RGB", (2, 2), (10, 20, 30))
    assert np.array_equal(np.asarray(on_white(rgb)), np.asarray(rgb))
