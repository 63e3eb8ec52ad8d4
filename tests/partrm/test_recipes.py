"""Training recipes: the paper's config file, the strict loader, per-stage optimiser schedules,
and the teacher that regresses the geometric Gaussian database before its photometric steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb
from partrm.models.lgm import LGM
from partrm.train import TrainConfig, load_config, lr_lambda, read_log, train

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_paper_config_holds_the_papers_recipe():
    cfg = load_config(ROOT / "configs" / "paper.toml")
    assert (cfg.model, cfg.stage, cfg.batch_size, cfg.lr) == ("big", "1+2", 8, 5e-4)
    assert cfg.stages() == [("1", 0, 100_000), ("2", 100_000, 150_000)]
    assert (cfg.weight_decay, cfg.betas, cfg.grad_clip, cfg.mixed_precision) == (0.05, (0.9, 0.95), 1.0, "bf16")
    assert (cfg.schedule, cfg.warmup_steps, cfg.min_lr_ratio) == ("per-stage", 3000, 0.0)
    assert (cfg.num_drags, cfg.lambda_lpips, cfg.lambda_alpha, cfg.render_size) == (10, 1.0, 1.0, 256)
    # each stage warms up from its own first step
    f1, f2 = lr_lambda(cfg, 100_000), lr_lambda(cfg, 50_000)
    assert f1(0) == f2(0) == pytest.approx(1 / 3000) and f1(2999) == f2(2999) == 1.0
    assert f1(99_999) < 1e-3 and f2(49_999) < 1e-3
    # flags given on the command line win over the file
    assert load_config(ROOT / "configs" / "paper.toml", lr=1e-4, stage1_steps=10).lr == 1e-4


def test_config_loader_is_strict(tmp_path):
    paper = (ROOT / "configs" / "paper.toml").read_text()
    bad = tmp_path / "typo.toml"
    bad.write_text(paper + "\nlearning_rate = 1e-3\n")
    with pytest.raises(ValueError, match="unknown training options: learning_rate"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(paper.replace("stage1_steps = 100000", 'stage1_steps = "100k"'))
    with pytest.raises(ValueError, match=r"'stage1_steps' in .*wrong.toml must be int, got '100k'"):
        load_config(wrong)
    with pytest.raises(ValueError, match="schedule must be one of per-stage, shared"):
        load_config(schedule="cyclic")
    with pytest.raises(ValueError, match="'betas' must be"):
        load_config(betas=(0.9,))
    as_json = tmp_path / "c.json"
    as_json.write_text('{"lr": 2e-4, "stage2_steps": 7}')
    assert (load_config(as_json).lr, load_config(as_json).stage2_steps) == (2e-4, 7)


@pytest.fixture(scope="module")
def geometric_gsdb(rendered_dataset, tmp_path_factory):
    from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb

    out = tmp_path_factory.mktemp("geo") / "gsdb.h5"
    build_render_gsdb(rendered_dataset, out, RenderGsdbConfig(splat_size=32), progress=False)  # tiny LGM: 4 x 32^2
    return out


def test_each_stage_gets_its_own_schedule(rendered_dataset, geometric_gsdb, tmp_path):
    common = dict(data=str(rendered_dataset), gsdb=str(geometric_gsdb), stage="1+2", model="tiny", stage1_steps=4, stage2_steps=3,
                  batch_size=1, warmup_steps=2, lr=1e-3, min_lr_ratio=0.1, progress=False, ckpt_every=100)
    per_stage = train(load_config(out=str(tmp_path / "per"), **common))
    lrs = [float(r["lr"]) for r in read_log(per_stage.run)]
    stages = [r["stage"] for r in read_log(per_stage.run)]
    assert stages == ["1"] * 4 + ["2"] * 3
    assert lrs[0] == lrs[4] == pytest.approx(1e-3)  # warm-up restarts with stage 2 ...
    assert lrs[3] == lrs[6] == pytest.approx(1e-4)  # ... and each stage decays to min_lr at its own end
    shared = train(load_config(out=str(tmp_path / "shared"), schedule="shared", **common))
    lrs_shared = [float(r["lr"]) for r in read_log(shared.run)]
    assert lrs_shared[4] < lrs_shared[3] and lrs_shared[6] == pytest.approx(1e-4)  # one curve over 7 steps
    own = train(load_config(out=str(tmp_path / "own"), stage2_lr=2e-4, **common))
    lrs_own = [float(r["lr"]) for r in read_log(own.run)]
    assert lrs_own[:4] == pytest.approx(lrs[:4])  # stage 1 as before; stage 2 from its own peak
    assert lrs_own[4:] == pytest.approx([x * 0.2 for x in lrs[4:]])
    with pytest.raises(ValueError, match="stage2_lr must be > 0 and needs schedule per-stage"):
        load_config(schedule="shared", stage2_lr=2e-4)


def test_input_size_sizes_a_new_model_and_is_refused_with_init(rendered_dataset, geometric_gsdb, tmp_path):
    """``--input-size 32``: the tiny teacher at 32 px regresses a 16^2-per-view database; with
    --init the weights decide the size, so the option is refused in one line."""
    small_db = tmp_path / "gsdb-16.h5"
    build_render_gsdb(rendered_dataset, small_db, RenderGsdbConfig(splat_size=16), progress=False)
    result = train(load_config(data=str(rendered_dataset), out=str(tmp_path / "t"), gsdb=str(small_db), stage="teacher", model="tiny",
                               input_size=32, teacher_l2_steps=2, steps=0, teacher_steps=0, batch_size=1, progress=False))
    model = LGM.from_pretrained(result.model_path)
    assert (model.config.input_size, model.config.splat_size) == (32, 16)
    with pytest.raises(ValueError, match="input_size 32 sizes a new --model preset"):
        load_config(init=str(result.model_path), input_size=32)


def test_resume_at_a_stage_boundary_starts_the_next_stage_fresh(rendered_dataset, geometric_gsdb, tmp_path):
    common = dict(data=str(rendered_dataset), gsdb=str(geometric_gsdb), stage="1+2", model="tiny", stage1_steps=2, stage2_steps=2,
                  batch_size=1, warmup_steps=1, ckpt_every=2, progress=False, seed=3)
    full = train(load_config(out=str(tmp_path / "full"), **common))
    train(load_config(out=str(tmp_path / "resumed"), **common), stop_after=2)  # checkpoint closes stage 1
    resumed = train(load_config(out=str(tmp_path / "resumed"), **common))
    a = [(r["stage"], float(r["loss"]), float(r["lr"])) for r in read_log(full.run)]
    b = [(r["stage"], float(r["loss"]), float(r["lr"])) for r in read_log(resumed.run)]
    assert [x[0] for x in a] == [x[0] for x in b] == ["1", "1", "2", "2"]
    np.testing.assert_allclose([x[1:] for x in a], [x[1:] for x in b], rtol=1e-6)


def test_teacher_regresses_the_geometric_database_then_trains_photometrically(rendered_dataset, geometric_gsdb, tmp_path):
    import torch

    from partrm.data import StateDataset, collate
    from partrm.gsdb import GaussianDatabase
    from partrm.models.lgm import LGM

    cfg = load_config(data=str(rendered_dataset), out=str(tmp_path / "t"), stage="teacher", model="tiny", gsdb=str(geometric_gsdb),
                      teacher_l2_steps=24, steps=2, batch_size=2, lr=3e-3, warmup_steps=4, progress=False)
    assert cfg.stages() == [("teacher-l2", 0, 24), ("teacher", 24, 26)]
    result = train(cfg)
    rows = read_log(result.run)
    assert [r["stage"] for r in rows] == ["teacher-l2"] * 24 + ["teacher"] * 2
    assert "mse" in rows[-1]["terms"] and "l2" in rows[0]["terms"]
    l2 = [float(r["loss"]) for r in rows[:24]]
    assert np.mean(l2[-5:]) < 0.5 * np.mean(l2[:5]), (l2[:5], l2[-5:])

    # the trained teacher predicts splatter images close to the database's, far closer than at init
    db = GaussianDatabase(geometric_gsdb)
    data = StateDataset(rendered_dataset, input_size=64, target_size=0)
    batch = collate([data[i] for i in range(len(data))])
    target = torch.stack([torch.from_numpy(db.splatter(s)) for s in batch["state_id"]])

    def error(model):
        with torch.no_grad():
            x = model.prepare_inputs(batch["input_rgb"], (batch["input_K"], batch["input_c2w"]))
            return float(torch.nn.functional.mse_loss(model(x), target))

    torch.manual_seed(0)
    from partrm.models.lgm import LGMConfig

    trained, untrained = error(LGM.from_pretrained(result.model_path).eval()), error(LGM(LGMConfig.tiny()).eval())
    assert trained < 0.5 * untrained, (trained, untrained)


def test_stage_one_refuses_a_database_of_another_splat_size(rendered_dataset, tmp_path):
    from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb

    db = tmp_path / "gsdb64.h5"
    build_render_gsdb(rendered_dataset, db, RenderGsdbConfig(splat_size=64), progress=False)
    cfg = load_config(data=str(rendered_dataset), out=str(tmp_path / "r"), stage="1", model="tiny", gsdb=str(db), steps=1, batch_size=1,
                      progress=False)
    with pytest.raises(ValueError, match=r"splatter images \(4, 14, 64, 64\) but the model predicts \(4, 14, 32, 32\)"):
        train(cfg)


def test_defaults_are_unchanged_by_the_stage_table():
    cfg = TrainConfig()
    assert cfg.stages() == [("1", 0, 200), ("2", 200, 300)] and cfg.total_steps() == 300
    assert load_config(stage="teacher").stages() == [("teacher", 0, 300)]
    assert load_config(stage="2", steps=5).stages() == [("2", 0, 5)]


def test_cpu_motion_recipe_loads_and_is_strict(tmp_path):
    from partrm.recipe import load_recipe

    recipe = load_recipe(ROOT / "configs" / "cpu-motion.toml")
    assert recipe.gsdb.splat_size == 32 and recipe.dataset.per_category >= 2  # the tiny LGM's layout; held-out objects exist
    teacher = recipe.teacher_config(tmp_path / "d", tmp_path / "t", tmp_path / "geo.h5")
    assert teacher.stages()[0][0] == "teacher-l2" and teacher.gsdb == str(tmp_path / "geo.h5")
    partrm = recipe.partrm_config(tmp_path / "d", tmp_path / "p", tmp_path / "t.safetensors", tmp_path / "db.h5")
    assert [s[0] for s in partrm.stages()] == ["1", "2"]  # the paper's structure: L2 on splatter images, then photometric
    assert partrm.stage1_target == "carried" and partrm.split == "train"
    text = (ROOT / "configs" / "cpu-motion.toml").read_text()
    for edit, message in [
        (text + "\n[optimizer]\nlr = 1\n", r"unknown section \[optimizer\]"),
        (text.replace("[dataset]", "[dataset]\nobjects = 3"), "unknown key 'objects' in \\[dataset\\]"),
        (text.replace("per_category = 4", 'per_category = "4"'), "'per_category' must be int"),
        (text.replace('stage1_target = "carried"', 'stage1_target = "moved"'), r"\[partrm\] .*stage1_target must be one of target, carried"),
        (text.replace("[partrm]", "[partrm]\nlearning_rate = 1e-3"), r"\[partrm\] .*unknown training options: learning_rate"),
        (text.replace("[partrm]", '[partrm]\ndata = "elsewhere"'), "sets 'data': the benchmark sets it"),
        (text.replace("splat_size = 32", "splat_size = 0"), "splat_size must be >= 1"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(edit)
        with pytest.raises(ValueError, match=message):
            load_recipe(bad)
