"""An RGB-D PartRM on a scene folder (nerfstudio layout with depth), not a dataset state:
the static reconstruction from the scene equals the dataset's, the part's masks carried from
the first view's region lie on the part in the other views, an untrained model returns the
static reconstruction, and bad scenes are one line naming the frame or file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.export import export
from partrm.cli import app
from partrm.infer import dataset_views, predict, scene_views
from partrm.models.lgm import LGMConfig
from partrm.models.rgbd import RGBDConfig, RGBDPartRM
from partrm.part_motion import flat_splatter
from partrm.scene_input import SceneError, carry_region, read_scene

SPLAT = 64  # the session dataset renders at 128 px


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RGBDPartRM(RGBDConfig(unet=LGMConfig.tiny(), splat_size=SPLAT)).eval()


@pytest.fixture(scope="module")
def scene(rendered_dataset, tmp_path_factory):
    """The state whose moving part the first view and another input view see most of (the
    laptop's screen), exported as a nerfstudio scene."""
    def seen(state: str) -> int:
        masks = dataset_views(rendered_dataset, state, 64, depth=True, splat_size=SPLAT).masks.reshape(4, -1).sum(1)
        return min(masks[0], masks[1:].max())

    state = max((r["state_id"] for r in store.manifest_states(rendered_dataset)), key=seen)
    out = tmp_path_factory.mktemp("scenes")
    export(rendered_dataset, out, "nerfstudio", states=[state], progress=False)
    return state, out / state


def test_the_scene_gives_the_datasets_static_reconstruction(rendered_dataset, scene, model):
    state, folder = scene
    from_scene = scene_views(folder, model.input_size, SPLAT)
    from_data = dataset_views(rendered_dataset, state, model.input_size, depth=True, splat_size=SPLAT)
    assert torch.equal(from_scene.rgb, from_data.rgb) and torch.equal(from_scene.K, from_data.K)
    assert torch.allclose(from_scene.c2w, from_data.c2w, atol=1e-6)
    finite = from_data.depth.isfinite()
    assert torch.equal(from_scene.depth.isfinite(), finite)
    assert (from_scene.depth[finite] - from_data.depth[finite]).abs().max() <= 0.5e-3 + 1e-6  # 16-bit PNG: 1 mm steps
    opaque = from_data.static[:, 3] > 0  # opacity channel
    assert torch.equal(from_scene.static[:, 3] > 0, opaque)
    # depth in 1 mm steps: positions move by half a step; a cell whose front-most pixel was a
    # near tie at a depth edge may pick its neighbour (measured: 4 of 5,472 Gaussians, 1.8 cm)
    moved = (from_scene.static[:, 0:3] - from_data.static[:, 0:3]).abs().amax(dim=1)[opaque]
    recoloured = (from_scene.static[:, 11:14] - from_data.static[:, 11:14]).abs().amax(dim=1)[opaque]
    assert (moved <= 1e-3).float().mean() > 0.995 and moved.max() < 0.05, moved.max()
    assert (recoloured == 0).float().mean() > 0.995


def test_masks_carried_from_the_first_view_lie_on_the_part(rendered_dataset, scene):
    state, folder = scene
    truth = dataset_views(rendered_dataset, state, 64, depth=True, splat_size=SPLAT)
    read = read_scene(folder)
    K = np.stack([c.K for c in read.cameras])
    c2w = np.stack([c.c2w for c in read.cameras])
    carried = carry_region(truth.masks[0], read.depth, K, c2w)
    assert np.array_equal(carried[0], truth.masks[0] & np.isfinite(read.depth[0]))
    others = [v for v in range(1, 4) if carried[v].sum() > 20]
    assert others, "the part seen in view 0 shows in no other input view"
    for v in others:
        precision = (carried[v] & truth.masks[v]).sum() / carried[v].sum()
        assert precision > 0.9, (v, precision)
    none = carry_region(np.zeros_like(truth.masks[0]), read.depth, K, c2w)
    assert not none.any()


def test_an_untrained_model_on_a_scene_returns_its_static_reconstruction(scene, model, tmp_path):
    _, folder = scene
    views = scene_views(folder, model.input_size, SPLAT)
    rows, cols = np.nonzero(views.first_rgba[..., 3] > 0)
    x, y = float(cols[len(cols) // 2]) + 0.5, float(rows[len(rows) // 2]) + 0.5
    g, used = predict(model, views, np.array([[x, y, x + 5, y]]), region="color")
    assert torch.equal(g, torch.from_numpy(flat_splatter(views.static.numpy())))
    assert len(used) > 0
    ckpt = tmp_path / "rgbd.safetensors"
    model.save(ckpt)
    result = CliRunner().invoke(app, ["infer", "--checkpoint", str(ckpt), "--scene", str(folder), "--region", "color",
                                      "--drag", f"{x},{y}:{x + 5},{y}", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "prediction.ply").is_file()


def test_a_nerf_synthetic_scene_reads_as_the_nerfstudio_one(rendered_dataset, scene, tmp_path):
    state, folder = scene
    export(rendered_dataset, tmp_path, "nerf-synthetic", states=[state], progress=False)
    synthetic = read_scene(tmp_path / state)  # transforms_train.json: the 4 input views
    nerfstudio = read_scene(folder)  # transforms.json: frames 0/3/6/9 of 12
    assert synthetic.frames == [0, 1, 2, 3] and nerfstudio.frames == [0, 3, 6, 9]
    assert np.array_equal(synthetic.depth, nerfstudio.depth)
    assert all(np.array_equal(a, b) for a, b in zip(synthetic.rgba, nerfstudio.rgba))
    assert all(np.allclose(a.c2w, b.c2w) and np.allclose(a.K, b.K) for a, b in zip(synthetic.cameras, nerfstudio.cameras))


def _broken(folder, tmp_path, change):
    copy = tmp_path / "scene"
    shutil.copytree(folder, copy)
    transforms = json.loads((copy / "transforms.json").read_text())
    change(copy, transforms)
    (copy / "transforms.json").write_text(json.dumps(transforms))
    return copy


@pytest.mark.parametrize("change,words", [
    (lambda d, t: t["frames"][3].pop("depth_file_path"), ["frame 3", "no depth_file_path"]),
    (lambda d, t: (d / t["frames"][6]["depth_file_path"]).unlink(), ["frame 6 depth_file_path", "does not exist"]),
    (lambda d, t: t["frames"][0].update(file_path="../../etc/passwd"), ["frame 0 file_path", "leaves the scene folder"]),
    (lambda d, t: t["frames"][0].update(file_path="/etc/passwd"), ["frame 0 file_path", "leaves the scene folder"]),
    (lambda d, t: (d / t["frames"][9]["depth_file_path"]).write_bytes(b"not a png"), ["frame 9 depth_file_path", "not a readable image"]),
    (lambda d, t: t.update(frames=t["frames"][:5]), ["5 frames", "--frames"]),
    (lambda d, t: (t.pop("fl_x"), t["frames"][0].update(file_path="../../x")),  # NeRF-synthetic: the size is read
     ["frame 0 file_path", "leaves the scene folder"]),                          # from the first image, never outside
    (lambda d, t: t["frames"][3].update(transform_matrix=[[1, 0], [0, 1]]), ["transforms.json", "not a transforms file"]),
])
def test_a_bad_scene_is_one_line_naming_the_frame(scene, tmp_path, change, words):
    _, folder = scene
    broken = _broken(folder, tmp_path, change)
    with pytest.raises(SceneError) as err:
        read_scene(broken)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_the_cli_refuses_a_scene_without_depth_in_one_line(scene, model, tmp_path):
    _, folder = scene
    broken = _broken(folder, tmp_path, lambda d, t: t["frames"][9].pop("depth_file_path"))
    ckpt = tmp_path / "rgbd.safetensors"
    model.save(ckpt)
    result = CliRunner().invoke(app, ["infer", "--checkpoint", str(ckpt), "--scene", str(broken), "--region", "color",
                                      "--drag", "10,10:12,10", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "frame 9" in result.output and "depth" in result.output, result.output
    assert not (tmp_path / "out").exists()
