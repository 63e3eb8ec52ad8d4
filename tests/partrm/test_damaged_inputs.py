"""The model commands (``partrm eval``, ``train``, ``infer``, ``gsdb build``) on damaged or
wrong-kind files and on values that cannot be right: one line naming the file (or the value)
and what is wrong, exit code 2, and nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from partdrag4d import store
from partrm.cli import app
from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb
from partrm.models.lgm import LGM, LGMConfig
from partrm.models.partrm import PartRM

pytestmark = pytest.mark.blender  # the rendered_dataset fixture renders with Blender

STATE = "syn-laptop-0-000_joint_0_c0_s1"
DRAG = ["--drag", "64,60:64,40"]


@pytest.fixture(scope="module")
def files(rendered_dataset, tmp_path_factory, one_torch_thread) -> Path:
    """An untrained tiny LGM and PartRM, a geometric Gaussian database, and damaged copies:
    a truncated checkpoint and database."""
    out = tmp_path_factory.mktemp("damaged-models")
    torch.manual_seed(0)
    lgm = LGM(LGMConfig.tiny())
    lgm.save(out / "lgm.safetensors")
    PartRM.from_lgm(lgm).save(out / "partrm.safetensors")
    build_render_gsdb(rendered_dataset, out / "gsdb.h5", RenderGsdbConfig(splat_size=32), progress=False)
    for name in ("partrm.safetensors", "gsdb.h5"):
        data = (out / name).read_bytes()
        (out / f"truncated-{name}").write_bytes(data[: len(data) // 2])
    return out


@pytest.fixture
def data(rendered_dataset, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(rendered_dataset, root)
    return root


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_error(result) -> str:
    """Exit code 2 (an unexpected exception gives 1) and exactly one ``error:`` line, returned."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _eval(data: Path, out: Path, *args: str):
    return CliRunner().invoke(app, ["eval", "--data", str(data), "--out", str(out), "--split", "train", "--eval-size", "32",
                                    "--max-sequences", "1", "--device", "cpu", *args])


def test_wrong_kind_and_truncated_checkpoints_are_one_line(data, files, tmp_path):
    drags_h5 = store.drag_file(data)  # a dataset file passed as a checkpoint
    truncated = files / "truncated-partrm.safetensors"
    for checkpoint, reason in ((drags_h5, "cannot load PartRM checkpoint: it is an HDF5 file"),
                               (truncated, "cannot load PartRM checkpoint (SafetensorError: "),
                               (files / "lgm.safetensors", "cannot load PartRM checkpoint: no partrm_config metadata")):
        runs = {
            "eval": _eval(data, tmp_path / "eval", "--checkpoint", str(checkpoint), "--gsdb", str(files / "gsdb.h5")),
            "infer": CliRunner().invoke(app, ["infer", "--checkpoint", str(checkpoint), "--data", str(data), "--state", STATE,
                                              *DRAG, "--out", str(tmp_path / "infer")]),
        }
        for command, result in runs.items():
            assert _one_error(result).startswith(f"error: {checkpoint}: {reason}"), (command, result.stderr)
    for init, reason in ((drags_h5, "cannot load --init weights: it is an HDF5 file"),
                         (truncated, "cannot load --init weights (SafetensorError: ")):
        result = CliRunner().invoke(app, ["train", "--data", str(data), "--init", str(init), "--out", str(tmp_path / "run"),
                                          "--stage", "1", "--steps", "1", "--gsdb", str(files / "gsdb.h5")])
        assert _one_error(result).startswith(f"error: {init}: {reason}")
    result = CliRunner().invoke(app, ["gsdb", "build", str(data), "--teacher", str(drags_h5), "--out", str(tmp_path / "g.h5")])
    assert _one_error(result).startswith(f"error: {drags_h5}: cannot load LGM weights: it is an HDF5 file")
    assert not (tmp_path / "eval").exists() and not (tmp_path / "infer").exists() and not (tmp_path / "g.h5").exists()


def test_either_mode_of_checkpoint_is_refused_with_one_line_when_damaged(files, tmp_path):
    """``predict.load_model`` (RGB and RGB-D checkpoints) and the loaders behind it."""
    from partrm.models.lgm import CheckpointError
    from partrm.models.rgbd import RGBDConfig, RGBDPartRM
    from partrm.predict import load_model

    rgbd = tmp_path / "rgbd.safetensors"
    RGBDPartRM(RGBDConfig(unet=LGMConfig.tiny(), splat_size=32)).save(rgbd)
    assert load_model(rgbd).mode == "rgbd"
    _truncate(rgbd)
    with pytest.raises(CheckpointError, match=f"^{rgbd}: cannot load PartRM checkpoint \\(SafetensorError: "):
        load_model(rgbd)
    with pytest.raises(CheckpointError, match=f"^{rgbd}: cannot load RGB-D PartRM checkpoint \\(SafetensorError: "):
        RGBDPartRM.load(rgbd)
    with pytest.raises(CheckpointError, match=f"^{files / 'gsdb.h5'}: cannot load PartRM checkpoint: it is an HDF5 file"):
        load_model(files / "gsdb.h5")
    with pytest.raises(CheckpointError, match="no partrm_rgbd_config metadata"):
        RGBDPartRM.load(files / "partrm.safetensors")


def test_damaged_dataset_files_stop_the_model_commands_with_one_line(data, files, tmp_path):
    gsdb = files / "gsdb.h5"
    # a truncated database and drag file
    line = _one_error(_eval(data, tmp_path / "eval", "--gsdb", str(files / "truncated-gsdb.h5")))
    assert line.startswith(f"error: {files / 'truncated-gsdb.h5'}: damaged (Unable to synchronously open file (truncated file")
    drags_h5 = store.drag_file(data)
    _truncate(drags_h5)
    assert _one_error(_eval(data, tmp_path / "eval", "--gsdb", str(gsdb))).startswith(f"error: {drags_h5}: damaged (")
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--stage", "1", "--steps", "1",
                                      "--gsdb", str(gsdb), "--model", "tiny"])
    assert _one_error(result).startswith(f"error: {drags_h5}: damaged (")
    assert not (tmp_path / "eval").exists()
    # a view that does not decode
    png = store.render_dir(data, STATE) / store.view_png_name(0)
    _truncate(png)
    result = CliRunner().invoke(app, ["infer", "--checkpoint", str(files / "partrm.safetensors"), "--data", str(data),
                                      "--state", STATE, *DRAG, "--out", str(tmp_path / "infer")])
    assert _one_error(result) == f"error: {png}: damaged (image file is truncated)"
    assert not (tmp_path / "infer").exists()
    for source in (["--source", "render", "--splat-size", "32"], ["--teacher", str(files / "lgm.safetensors")]):
        out = tmp_path / "gsdb" / "gsdb.h5"
        result = CliRunner().invoke(app, ["gsdb", "build", str(data), *source, "--out", str(out), "--device", "cpu"])
        assert _one_error(result) == f"error: {png}: damaged (image file is truncated)", source
        assert not out.exists()


def test_gsdb_build_refuses_a_state_without_its_views_file(data, files, tmp_path):
    """It used to skip the state and report success."""
    npz = store.render_dir(data, STATE) / store.RENDER_VIEWS
    npz.unlink()
    for source in (["--source", "render", "--splat-size", "32"], ["--teacher", str(files / "lgm.safetensors")]):
        out = tmp_path / "gsdb.h5"
        result = CliRunner().invoke(app, ["gsdb", "build", str(data), *source, "--out", str(out), "--device", "cpu"])
        assert _one_error(result).startswith(f"error: {npz}: missing"), source
        assert not out.exists()


def test_infer_refuses_drags_that_cannot_be_right(data, files, tmp_path):
    ragged = tmp_path / "ragged.json"
    ragged.write_text(json.dumps([[60, 60, 60, 40], [1, 2]]))
    not_json = tmp_path / "not.json"
    not_json.write_text("[[60, 60, 60, 40]")
    cases = {
        ("--drag", "500,60:64,40"): "error: drag 1 (500,60:64,40) starts outside the 128 x 128 input image",
        ("--drag", "64,60:64,-3"): "error: drag 1 (64,60:64,-3) ends outside the 128 x 128 input image",
        ("--drag", "nan,60:64,40"): "error: drag 1 (nan,60:64,40): coordinates must be finite numbers",
        ("--drag", "64,60:inf,40"): "error: drag 1 (64,60:inf,40): coordinates must be finite numbers",
        ("--drag", "1,2,3:4,5"): "error: bad drag '1,2,3:4,5': expected x0,y0:x1,y1",
        ("--drags", str(ragged)): f"error: {ragged}: drag 2 is [1, 2], expected 4 numbers",
        ("--drags", str(not_json)): f"error: {not_json}: not valid JSON (",
    }
    for args, expected in cases.items():
        result = CliRunner().invoke(app, ["infer", "--checkpoint", str(files / "partrm.safetensors"), "--data", str(data),
                                          "--state", STATE, *args, "--out", str(tmp_path / "infer")])
        assert _one_error(result).startswith(expected), (args, result.stderr)
    assert not (tmp_path / "infer").exists()


def test_eval_and_train_refuse_values_that_cannot_be_right(data, files, tmp_path):
    gsdb = ["--gsdb", str(files / "gsdb.h5")]
    cases = {
        ("--num-drags", "1,x"): "error: --num-drags must be a comma list of int values",
        ("--num-drags", "0"): "error: num_drags must be >= 1",
        ("--eval-size", "0"): "error: eval_size must be >= 16 pixels",
        ("--max-sequences", "0"): "error: max_sequences must be >= 1",
        ("--seed", "-1"): "error: seed must be an integer from 0 to 4294967295",
    }
    for args, expected in cases.items():
        result = CliRunner().invoke(app, ["eval", "--data", str(data), "--out", str(tmp_path / "eval"), "--split", "train",
                                          *gsdb, *args])
        assert _one_error(result).startswith(expected), (args, result.stderr)
    assert not (tmp_path / "eval").exists()
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--seed", "-1", *gsdb])
    assert _one_error(result).startswith("error: seed must be an integer from 0 to 4294967295, got -1")
    assert not (tmp_path / "run").exists()
