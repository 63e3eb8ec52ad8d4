"""RGB-D PartRM: the static reconstruction is the geometric one, and the network changes only
what lies in the drag region (position, rotation, scale) or around it (opacity, colour)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from partrm.data import PairDataset, collate
from partrm.gaussians import layout
from partrm.gsdb import GaussianDatabase
from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb
from partrm.models.lgm import LGMConfig
from partrm.models.rgbd import CHANGE, RGBDConfig, RGBDPartRM, drag_region, ring
from partrm.part_motion import flat_splatter
from partrm.predict import StaticCache, load_model, pair_config, predict

SPLAT = 64  # the session dataset renders at 128 px: 2 x 2 pixels per Gaussian


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RGBDPartRM(RGBDConfig(unet=LGMConfig.tiny(), splat_size=SPLAT)).eval()


@pytest.fixture(scope="module")
def geometric(rendered_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("rgbd") / "gsdb.h5"
    build_render_gsdb(rendered_dataset, out, RenderGsdbConfig(splat_size=SPLAT), progress=False)
    return out


def _item(root, model, index=0, **options):
    dataset = PairDataset(root, config=pair_config(model, target_size=0, **options))
    moving = [k for k, p in enumerate(dataset.pairs) if p.source_stage != p.target_stage]
    return dataset, collate([dataset[moving[index]]])


def test_an_untrained_model_returns_the_static_reconstruction_exactly(rendered_dataset, model):
    _, item = _item(rendered_dataset, model)
    statics = StaticCache(rendered_dataset, SPLAT)
    with torch.inference_mode():
        g = predict(model, item, statics=statics)
    expected = flat_splatter(statics(item["source_state"][0]))
    assert g.shape == (1, 4 * SPLAT * SPLAT, 14)
    assert torch.equal(g[0], torch.from_numpy(expected))
    assert item["region"].any() and item["input_depth"].isfinite().any() and item["input_depth"].isinf().any()


def test_changes_stay_inside_the_drag_region_and_its_ring(rendered_dataset, model, tmp_path):
    _, item = _item(rendered_dataset, model)
    moved = RGBDPartRM(dataclasses.replace(model.config, fit_amount=False))  # the motion as set, not fitted to the drags
    moved.load_state_dict(model.state_dict())
    with torch.no_grad():
        moved.motion[-1].bias[3:] = torch.tensor([0.1, 0.0, 0.0])  # translation of the part
        moved.change.bias[CHANGE["opacity"]] = 0.5
    statics = StaticCache(rendered_dataset, SPLAT)
    with torch.inference_mode():
        g = predict(moved.eval(), item, statics=statics)[0]
    static = torch.from_numpy(flat_splatter(statics(item["source_state"][0])))
    region = flat_splatter(item["region"][0].numpy())[:, 0]
    around = flat_splatter(ring(item["region"], model.config.appearance_ring)[0].numpy())[:, 0]
    dx = (g[:, 0] - static[:, 0]).numpy()
    assert np.allclose(dx[region], 0.1, atol=1e-6) and np.all(dx[~region] == 0)
    assert torch.equal(g[~torch.from_numpy(around)], static[~torch.from_numpy(around)])
    opacity = g[:, layout.OPACITY][:, 0]
    assert torch.all(opacity[torch.from_numpy(around)] >= 0.5 - 1e-6)
    # the region is sharp at full splat resolution although the change grid is 4 x coarser
    assert model.config.unet.splat_size * 2 == SPLAT and 0 < region.mean() < 0.5
    # saved and loaded by metadata, the mode comes back
    path = tmp_path / "rgbd.safetensors"
    moved.save(path)
    again = load_model(path)
    assert type(again) is RGBDPartRM and again.config == moved.config
    with torch.inference_mode():
        assert torch.equal(predict(again, item, statics=statics)[0], g)


def test_the_geometric_database_is_the_static_input(rendered_dataset, geometric, model):
    """Training reads the static input from the database; evaluation builds it on the fly:
    both are the same bytes."""
    db, statics = GaussianDatabase(geometric), StaticCache(rendered_dataset, SPLAT)
    for state in db.states()[:3]:
        assert np.array_equal(db.splatter(state), statics(state))


def test_a_still_pair_carries_the_source_itself(rendered_dataset, geometric, model):
    dataset = PairDataset(rendered_dataset, gsdb=geometric,
                          config=pair_config(model, target_size=0, zero_drag_prob=1.0, stage1_target="carried"))
    item = dataset[0]
    assert item["target_state"] == item["source_state"]
    assert torch.equal(item["gs_target"], item["gs_source"])
    assert torch.equal(item["drags"][..., 2:], item["drags"][..., :2])


def test_drag_region_uses_the_share_of_each_cell():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :3] = True  # cells of 2 x 2: column pair (2, 3) is half covered
    region = drag_region(masks, 4, 0.5)[0, 0]
    assert region[:2, :2].all() and not region[2:].any() and not region[:, 2:].any()
    assert drag_region(masks, 4, 1.0)[0, 0, :2, 1].logical_not().all()


def test_rgbd_training_moves_the_part_toward_the_carried_target(rendered_dataset, geometric, tmp_path, one_torch_thread):
    """Both stages run on RGB-D items; stage 1 brings a training pair's drag region toward
    its carried target (the network learns the change, the rest stays exact); the checkpoint
    is an RGB-D one wherever a model is loaded. (Generalisation to held-out objects:
    ``tests/partrm/test_motion_recipe.py``.)"""
    from partrm.train import load_config, read_log, train

    probe = RGBDPartRM(RGBDConfig(unet=LGMConfig.preset("tiny", 32), splat_size=SPLAT))
    dataset = PairDataset(rendered_dataset, gsdb=geometric, split="train",
                          config=pair_config(probe, target_size=0, stage1_target="carried", num_drags=10))
    sequence = dataset.pairs[0].sequence_id
    cfg = load_config(data=str(rendered_dataset), out=str(tmp_path / "run"), mode="rgbd", splat_size=SPLAT, gsdb=str(geometric),
                      input_size=32, stage="1+2", stage1_steps=60, stage2_steps=2, render_size=64, batch_size=2, lr=2e-3, warmup_steps=5,
                      stage1_target="carried", drag_views="all", drag_noise_px=0.0, sequences=(sequence,), progress=False)
    result = train(cfg)
    log = read_log(tmp_path / "run")
    stage1 = [float(r["loss"]) for r in log if r["stage"] == "1"]
    assert np.mean(stage1[-10:]) < 0.5 * np.mean(stage1[:5]), (stage1[:5], stage1[-10:])
    assert {r["stage"] for r in log} == {"1", "2"}
    model = load_model(result.model_path)
    assert type(model) is RGBDPartRM
    k = next(k for k, p in enumerate(dataset.pairs) if p.sequence_id == sequence and abs(p.source_stage - p.target_stage) >= 3)
    item = collate([dataset[k]])
    with torch.inference_mode():
        g = predict(model, item, statics=StaticCache(rendered_dataset, SPLAT))[0]
    target = torch.from_numpy(flat_splatter(item["gs_target"][0].numpy()))
    static = torch.from_numpy(flat_splatter(item["gs_source"][0].numpy()))
    region = torch.from_numpy(flat_splatter(item["region"][0].numpy())[:, 0])
    err_model = (g[region, :3] - target[region, :3]).norm(dim=1).mean()
    err_static = (static[region, :3] - target[region, :3]).norm(dim=1).mean()
    assert err_model < 0.6 * err_static, (float(err_model), float(err_static))
    outside = ~torch.from_numpy(flat_splatter(ring(item["region"], model.config.appearance_ring)[0].numpy())[:, 0])
    assert torch.equal(g[outside], static[outside])


def test_infer_with_an_rgbd_checkpoint(rendered_dataset, model, tmp_path):
    """``partrm infer --state`` runs an RGB-D checkpoint on the state's RGB-D views (an
    untrained one returns the static reconstruction); ``--image`` has no depth: one line."""
    from typer.testing import CliRunner

    from partdrag4d import store
    from partrm.cli import app
    from partrm.infer import dataset_views, lift_drags

    ckpt = tmp_path / "rgbd.safetensors"
    model.save(ckpt)
    dataset, item = _item(rendered_dataset, model)
    state = item["source_state"][0]
    views = dataset_views(rendered_dataset, state, model.input_size, depth=True, splat_size=SPLAT)
    rows, cols = np.nonzero(views.masks[0])
    x, y = float(cols[len(cols) // 2]) + 0.5, float(rows[len(rows) // 2]) + 0.5
    # a drag lifted into the other input views starts on the moving part there; no shift stays no shift
    lifted = lift_drags(np.array([[x, y, x, y]]), views)
    assert np.array_equal(lifted[0], [[x, y, x, y]])
    for v, d in enumerate(lifted[1:], start=1):
        for x0, y0, x1, y1 in d:
            assert views.masks[v, int(y0), int(x0)] and abs(x1 - x0) < 1e-6 and abs(y1 - y0) < 1e-6
    result = CliRunner().invoke(app, ["infer", "--checkpoint", str(ckpt), "--state", state, "--data", str(rendered_dataset),
                                      "--drag", f"{x},{y}:{x + 6},{y}", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "prediction.ply").is_file()
    image = tmp_path / "view.png"
    image.write_bytes((store.render_dir(rendered_dataset, state) / store.view_png_name(0)).read_bytes())
    refused = CliRunner().invoke(app, ["infer", "--checkpoint", str(ckpt), "--image", str(image), "--drag", "1,1:2,2"])
    assert refused.exit_code == 2 and "RGB-D model" in refused.output and "--state" in refused.output
