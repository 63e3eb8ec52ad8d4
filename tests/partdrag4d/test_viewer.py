"""The browser viewers (``partdrag4d view``, ``partrm view``): servers on free loopback
ports inside pytest, the scene graph they build, a server-side render against Blender's,
and a real headless Chromium (``$CHROMIUM_HEADLESS``, set by ``.ci/run``) that draws the
page and sends a mouse drag through the DevTools protocol."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.viewer import DatasetViewer, index_dataset, matrix_from_pose, read_pair_drags, wxyz_from_matrix
from tests.support.headless import HeadlessBrowser, browser_path, wait_until

pytestmark = pytest.mark.blender

LAPTOP = "syn-laptop-0-000_joint_0_c0"
DRAWER = "awning-drawer_joint_0_c0"
SHOT = (640, 480)  # browser window; the viewer's panel is docked right


@pytest.fixture(scope="module")
def browser():
    exe = browser_path()
    if not exe:
        pytest.skip("CHROMIUM_HEADLESS is not set (.ci/run installs chromium-headless-shell and sets it)")
    with HeadlessBrowser(exe, *SHOT, timeout=60) as b:
        yield b


@pytest.fixture
def viewer_of():
    """Start viewers on free loopback ports; always stopped."""
    started = []

    def start(cls, *args, **kwargs):
        v = cls(*args, host="127.0.0.1", port=0, **kwargs)
        started.append(v)
        return v

    yield start
    for v in started:
        v.stop()


def connect(browser: HeadlessBrowser, viewer) -> object:
    """Open the viewer's page; return its client handle once it is connected and drawn."""
    before = set(viewer.server.get_clients())
    browser.open(viewer.url)
    assert wait_until(lambda: set(viewer.server.get_clients()) - before, 60), "the page never connected"
    client = viewer.server.get_clients()[max(set(viewer.server.get_clients()) - before)]
    # the software-WebGL notice covers the top-left corner: close it
    assert wait_until(lambda: browser.evaluate("document.querySelector('canvas') !== null"), 30)
    browser.evaluate("document.querySelectorAll('[class*=\"Notification-closeButton\"]').forEach(b => b.click())")
    return client


def set_camera(client, camera) -> None:
    client.camera.fov = float(2.0 * np.arctan(camera.height / (2.0 * camera.K[1, 1])))
    client.camera.wxyz = wxyz_from_matrix(camera.c2w[:3, :3])
    client.camera.position = camera.c2w[:3, 3]


def canvas_rect(browser: HeadlessBrowser) -> tuple[float, float, float, float]:
    r = browser.evaluate("(() => { const r = document.querySelector('canvas').getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    return tuple(float(x) for x in r)


def to_canvas(uv: np.ndarray, size: int, rect) -> np.ndarray:
    """Pixel coords of a size x size ring view -> page coords, for a browser camera set to
    that view (vertical field of view over the canvas height, centred)."""
    x, y, w, h = rect
    return np.stack([x + w / 2 + (uv[..., 0] - size / 2) * h / size, y + h / 2 + (uv[..., 1] - size / 2) * h / size], -1)


def settled_render(client, height, width, wxyz, position, fov, tries: int = 20) -> np.ndarray:
    """A server-side render once two in a row agree: the browser decodes GLBs asynchronously,
    so the first frames after a change of object may still miss parts."""
    last = None
    for _ in range(tries):
        img = client.get_render(height, width, wxyz=wxyz, position=position, fov=fov, transport_format="png", timeout=60)
        if last is not None and np.array_equal(img[..., 3] > 127, last[..., 3] > 127):
            return img
        last = img
        time.sleep(0.5)
    return last


def only_mesh(viewer: DatasetViewer) -> None:
    viewer.cameras_cb.value = False
    viewer.samples_cb.value = False
    viewer.drags_cb.value = False
    viewer.parts_cb.value = False


# --------------------------------------------------------------------------- dataset viewer


def test_scene_graph_and_stage_slider_reposes_moving_link(rendered_dataset, viewer_of):
    v = viewer_of(DatasetViewer, rendered_dataset)
    assert not v.index.problems
    assert set(v.index.tree) == {"laptop", "storage-furniture"}
    v.select_sequence("laptop", "syn-laptop-0-000", LAPTOP)
    # mesh: one frame per link with a textured GLB and a part-colour mesh; 12 frustums, hidden until
    # their toggle shows them with their images (they would cover the object when the page opens)
    assert v.wait_for_textures()
    assert set(v.link_frames) == set(v.link_meshes) == set(v.link_parts) and len(v.link_frames) >= 2
    assert all(v.link_meshes[k].visible and not v.link_parts[k].visible for k in v.link_frames)
    assert sorted(v.frustums) == list(range(12)) and not any(f.visible for f in v.frustums.values())
    v.cameras_cb.value = True
    assert wait_until(lambda: all(f.visible and f.image is not None for f in v.frustums.values()), 5)
    v.parts_cb.value = True
    assert wait_until(lambda: all(v.link_parts[k].visible and not v.link_meshes[k].visible for k in v.link_frames), 5)
    # drags of the pair (0 -> 5) as arrows, one per material point, coloured per visibility
    v.drags_cb.value = True
    v.target_dd.value = "5"
    assert wait_until(lambda: v.arrows is not None and v.arrows.visible, 5)
    expected = read_pair_drags(v.index.drag_file, LAPTOP, 0, 5)
    assert v.arrows.points.shape == (len(expected.start), 2, 3) and len(expected.start) > 10
    np.testing.assert_allclose(v.arrows.points[:, 0], expected.start, atol=1e-6)
    assert len(np.unique(v.arrows.colors, axis=0)) > 1  # drags seen by different numbers of views
    v.drag_view_dd.value = "view 0"
    assert wait_until(lambda: (v.arrows.colors == [255, 120, 0]).all(1).sum() == expected.views[:, 0].sum(), 5)

    # the slider re-poses the moving link by the state's joint value
    states = v.index.sequence_states(LAPTOP)
    record = v.index.states[states[0]]
    link = record["moving_links"][0]
    base = [k for k in v.link_frames if k not in record["moving_links"]][0]
    poses, base_poses = [], []
    for stage in range(6):
        v.stage_slider.value = stage  # what the browser's slider sends
        assert wait_until(lambda: v.state_id == states[stage], 5)
        frame = v.link_frames[link]
        T = matrix_from_pose(frame.wxyz, frame.position)
        truth = np.asarray(store.read_json(store.state_dir(rendered_dataset, states[stage]) / "state.json")["link_poses"][link])
        np.testing.assert_allclose(T, truth, atol=1e-5)
        poses.append(T)
        base_poses.append(matrix_from_pose(v.link_frames[base].wxyz, v.link_frames[base].position))
    q = [v.index.states[s]["qpos"][record["joint"]] for s in states]
    for stage in range(1, 6):
        R = poses[stage][:3, :3] @ poses[0][:3, :3].T
        angle = math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1))
        assert angle == pytest.approx(abs(q[stage] - q[0]), abs=1e-4)
    np.testing.assert_allclose(np.stack(base_poses), np.stack([base_poses[0]] * 6), atol=1e-9)  # the base never moves

    # prismatic drawer: the link translates by the joint value along its axis
    v.select_sequence("storage-furniture", "awning-drawer", DRAWER)
    states = v.index.sequence_states(DRAWER)
    link = v.index.states[states[0]]["moving_links"][0]
    t0 = np.array(v.link_frames[link].position)
    v.stage_slider.value = 5
    assert wait_until(lambda: v.state_id == states[5], 5)
    shift = np.linalg.norm(np.array(v.link_frames[link].position) - t0)
    scale = store.read_json(store.object_dir(rendered_dataset, "awning-drawer") / "object.json")["normalisation"]["scale"]
    q = [v.index.states[s]["qpos"]["joint_0"] for s in states]
    assert shift == pytest.approx((q[5] - q[0]) * scale, rel=1e-4)


def test_ring_camera_render_matches_blender_silhouette(rendered_dataset, viewer_of, browser):
    v = viewer_of(DatasetViewer, rendered_dataset)
    only_mesh(v)
    client = connect(browser, v)
    ious = {}
    # laptop -> drawer -> laptop again: a page that is switched between objects (whose links
    # share names) must draw each link at its own state's pose, not at one it had before
    for visit, (seq, obj, cat, stages) in enumerate(((LAPTOP, "syn-laptop-0-000", "laptop", (0, 5)), (DRAWER, "awning-drawer", "storage-furniture", (0, 5)),
                                                     (LAPTOP, "syn-laptop-0-000", "laptop", (0,)))):
        v.select_sequence(cat, obj, seq, stage=5 if stages == (0,) else 0)
        assert v.wait_for_textures()
        for stage in stages:
            v.select_stage(stage)
            folder = store.render_dir(rendered_dataset, v.state_id)
            _, _, cams = store.read_render(folder)
            for view in (0, 7):
                c = cams[view]
                fov = float(2.0 * np.arctan(c.height / (2.0 * c.K[1, 1])))
                ours = settled_render(client, c.height, c.width, wxyz_from_matrix(c.c2w[:3, :3]), c.c2w[:3, 3], fov)[..., 3] > 127
                blender = store.read_rgba(folder, view)[..., 3] > 127
                ious[(visit, v.state_id, view)] = (ours & blender).sum() / (ours | blender).sum()
    assert len(ious) == 10 and min(ious.values()) >= 0.9, ious


def test_browser_screenshot_draws_the_object(rendered_dataset, viewer_of, browser, tmp_path):
    v = viewer_of(DatasetViewer, rendered_dataset)
    only_mesh(v)
    v.select_sequence("laptop", "syn-laptop-0-000", LAPTOP, stage=3)
    assert v.wait_for_textures()
    client = connect(browser, v)
    cam0 = v.index.cameras[0]
    set_camera(client, cam0)
    rect = canvas_rect(browser)
    mask = store.read_rgba(store.render_dir(rendered_dataset, v.state_id), 0)[..., 3] > 127
    size = mask.shape[0]
    # Blender's silhouette of view 0 mapped onto the page: the page is drawn there and blank around it
    x, y, w, h = rect
    deadline = time.monotonic() + 20.0
    while True:  # a loaded machine can take seconds to send and draw the mesh: wait for a settled frame
        time.sleep(1.0)
        shot = browser.screenshot()
        ys, xs = np.mgrid[0:shot.shape[0], 0:shot.shape[1]]
        u = (xs + 0.5 - (x + w / 2)) * size / h + size / 2
        vv = (ys + 0.5 - (y + h / 2)) * size / h + size / 2
        inside = (u >= 0) & (u < size) & (vv >= 0) & (vv < size)
        ours = inside & (np.abs(shot.astype(int) - 255).max(-1) > 12)
        drawn = int(ours.sum())
        if (drawn > 500 and np.array_equal(shot, browser.screenshot())) or time.monotonic() > deadline:
            break
    Image.fromarray(shot).save(tmp_path / "viewer.png")
    blender = np.zeros_like(inside)
    blender[inside] = mask[vv[inside].astype(int), u[inside].astype(int)]
    iou = (ours & blender).sum() / (ours | blender).sum()
    assert blender.sum() > 500 and iou >= 0.85, iou


def test_a_page_opens_framed_on_the_object(rendered_dataset, viewer_of, browser, tmp_path):
    """Without touching the camera, a new page shows the object large, from the input view's
    direction, with no camera frustum in front of it."""
    v = viewer_of(DatasetViewer, rendered_dataset)
    v.select_sequence("laptop", "syn-laptop-0-000", LAPTOP, stage=3)
    assert v.wait_for_textures()
    client = connect(browser, v)
    assert wait_until(lambda: np.linalg.norm(np.asarray(client.camera.position) - v.index.cameras[0].c2w[:3, 3]) < 1e-3, 10)
    x, y, w, h = canvas_rect(browser)
    deadline = time.monotonic() + 60.0  # software WebGL on a loaded 2-core machine took over 20 s once
    while True:
        time.sleep(1.0)
        shot = browser.screenshot()
        canvas = shot[int(y):int(y + h), int(x):int(x + w)]
        drawn = np.abs(canvas.astype(int) - 255).max(-1) > 12
        if (drawn.mean() > 0.05 and np.array_equal(shot, browser.screenshot())) or time.monotonic() > deadline:
            break
    Image.fromarray(shot).save(tmp_path / "opened.png")
    rows, cols = np.nonzero(drawn)
    # the object spans a good part of the canvas height (the grid floor adds faint lines only)
    assert drawn.mean() > 0.05 and (np.percentile(rows, 99) - np.percentile(rows, 1)) > 0.4 * h, drawn.mean()
    assert not any(f.visible for f in v.frustums.values())


def test_thousand_state_dataset_opens_lazily(rendered_dataset, tmp_path, viewer_of, monkeypatch):
    """1,002 states (167 objects x 6 stages, folders linked to the real ones) open no slower
    than the 12-state dataset: only the manifest and the first state (and its object) are
    read. (The absolute time, under 3 s alone, is ``benchmarks/bench_viewer.py``'s.)"""
    import viser  # noqa: F401 - imported once per process; a cold start adds its import

    root = tmp_path / "big"
    (root / "objects").mkdir(parents=True)
    (root / "states").mkdir()
    shutil.copy(rendered_dataset / "cameras.json", root / "cameras.json")
    real = [r for r in store.read_jsonl(rendered_dataset / store.MANIFEST) if r.get("sequence_id") == LAPTOP]
    lines = []
    for k in range(167):
        oid = f"obj-{k:04d}"
        os.symlink(rendered_dataset / "objects" / real[0]["object_id"], root / "objects" / oid)
        for r in real:
            sid = r["state_id"].replace(r["object_id"], oid)
            os.symlink(rendered_dataset / "states" / r["state_id"], root / "states" / sid)
            rec = dict(r, state_id=sid, object_id=oid, sequence_id=r["sequence_id"].replace(r["object_id"], oid))
            rec["paths"] = {key: p.replace(r["object_id"], oid) for key, p in r["paths"].items()}
            lines.append(json.dumps(rec))
    (root / store.MANIFEST).write_text("\n".join(lines) + "\n")
    seconds, read = {}, []
    for reader in ("read_state", "read_state_points", "read_render", "read_object", "read_object_points"):
        original = getattr(store, reader)
        monkeypatch.setattr(store, reader, lambda *a, _f=original, **k: read.append(str(a[-1])) or _f(*a, **k))
    for name, folder in (("small", rendered_dataset), ("big", root)):
        read.clear()
        t0 = time.perf_counter()
        v = viewer_of(DatasetViewer, folder)
        seconds[name] = time.perf_counter() - t0
    assert len(v.index.states) == 1002 and v.state_id == "obj-0000_joint_0_c0_s0" and list(v._objects) == ["obj-0000"]
    assert read and set(read) <= {"obj-0000", "obj-0000_joint_0_c0_s0", str(store.render_dir(root, "obj-0000_joint_0_c0_s0"))}, sorted(set(read))[:5]
    assert seconds["big"] < seconds["small"] + 1.0, seconds


def test_bad_datasets_open_with_a_message_and_show_what_is_there(rendered_dataset, tmp_path, viewer_of, browser):
    # missing folder
    v = viewer_of(DatasetViewer, tmp_path / "nope")
    assert any("does not exist" in p for p in v.index.problems) and v.state_id is None
    connect(browser, v)
    assert wait_until(lambda: "does not exist" in (browser.evaluate("document.body.innerText") or ""), 20)
    # half-rendered, no drags: one state without its render, one view missing, drags.h5 gone
    part = tmp_path / "part"
    shutil.copytree(rendered_dataset, part, symlinks=True)
    (part / "drags.h5").unlink()
    states = index_dataset(part).sequence_states(LAPTOP)
    shutil.rmtree(store.render_dir(part, states[2]))
    (store.render_dir(part, states[1]) / "view_05.png").unlink()
    v = viewer_of(DatasetViewer, part)
    assert any("no drags.h5" in p for p in v.index.problems)
    v.select_sequence("laptop", "syn-laptop-0-000", LAPTOP)
    v.cameras_cb.value = True  # the frustums are one toggle away
    assert wait_until(lambda: v.frustums[0].image is not None, 5)
    assert v.link_frames and v.frustums[0].image is not None  # what is there is shown
    v.drags_cb.value = True
    assert wait_until(lambda: "no drags.h5" in v.drags_md.content, 5)
    v.select_stage(1)
    assert "11/12 views rendered" in v.state_md.content
    assert v.frustums[5].color == (220, 30, 30) and v.frustums[4].color != (220, 30, 30)
    v.select_stage(2)
    assert "not rendered" in v.state_md.content and v.link_frames  # the mesh still shows
    assert all(f.color == (220, 30, 30) for f in v.frustums.values())
    assert v.last_error is None
    connect(browser, v)
    assert wait_until(lambda: "no drags.h5" in (browser.evaluate("document.body.innerText") or ""), 20)


def test_view_command_help_and_bad_checkpoint_line(tmp_path):
    from partdrag4d.cli import app as pd_app
    from partrm.cli import app as rm_app

    runner = CliRunner()
    assert "--port" in runner.invoke(pd_app, ["view", "--help"]).output
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    for path, reason in ((bad, "cannot load PartRM checkpoint"), (tmp_path / "missing.safetensors", "no such file")):
        result = runner.invoke(rm_app, ["view", "--checkpoint", str(path), "--data", str(tmp_path)])
        assert result.exit_code == 2
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], result.output


# --------------------------------------------------------------------------- PartRM viewer


def drag_model(seed: int = 0):
    """A tiny PartRM whose drag embedding is switched on: random weights on the drag-map
    inputs of the (zero-initialised) merges, so drags change the prediction near them."""
    from partrm.models.lgm import LGM, LGMConfig
    from partrm.models.partrm import PartRM

    torch.manual_seed(seed)
    model = PartRM.from_lgm(LGM(LGMConfig.tiny()))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("merge"):
                k = module.weight.shape[1] - module.weight.shape[0]  # drag-map channels come first
                module.weight[:, :k] = 0.5 * torch.randn(module.weight[:, :k].shape, generator=g)
    return model.eval()


def test_partrm_view_mouse_drag_moves_the_part(rendered_dataset, viewer_of, browser, tmp_path, one_torch_thread):
    from partrm.gaussians import read_ply
    from partrm.viewer import PartRMViewer

    ckpt = tmp_path / "partrm.safetensors"
    drag_model().save(ckpt)
    v = viewer_of(PartRMViewer, ckpt, rendered_dataset, out=tmp_path / "exports")
    v.select_sequence("laptop", "syn-laptop-0-000", LAPTOP, stage=0)
    v.layout_dd.value = "predicted"
    assert set(v.splats) == {"static", "predicted", "ground truth"}
    static = v._static(v.state_id)
    client = connect(browser, v)
    set_camera(client, v.index.cameras[0])
    rect = canvas_rect(browser)
    _, part_ids, _ = store.read_render(store.render_dir(rendered_dataset, v.state_id))
    moving = v.index.states[v.state_id]["moving_part_ids"]
    lid = np.isin(part_ids[0], moving)
    size = lid.shape[0]
    ys, xs = np.nonzero(lid)
    k = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    start_px = np.array([xs[k] + 0.5, ys[k] + 0.5])
    end_px = start_px + np.array([0.0, -0.15 * size])
    time.sleep(1.0)
    browser.mouse_drag(tuple(to_canvas(start_px, size, rect)), tuple(to_canvas(end_px, size, rect)))
    assert wait_until(lambda: (v.results and "ground_truth" in v.results[-1].seconds) or v.last_error, 60), v.drag_events
    assert v.last_error is None, v.last_error
    phases = [e[0] for e in v.drag_events]
    assert phases[0] == "start" and phases[-1] == "end"
    r = v.results[-1]
    # the server got the drag where the mouse pressed, on the moving part, upwards
    assert np.linalg.norm(r.drag_px[:2] - start_px * 1.0) < 0.03 * size, r.drag_px
    assert r.part_id in moving and r.drag_px[3] < r.drag_px[1]
    # the prediction changed, most in the dragged part's region of the input view's splatter image
    change = (r.gaussians - static).abs().sum(1)
    assert change.max() > 1e-3
    s = int(round(math.sqrt(len(static) // 4)))
    part = np.asarray(Image.fromarray(lid).resize((s, s), Image.NEAREST))
    first = change[: s * s].reshape(s, s).numpy()
    assert first[part].mean() > 2 * first[~part].mean(), (first[part].mean(), first[~part].mean())
    assert v.splats["predicted"].visible and not v.splats["static"].visible
    assert r.target_stage is not None and 1 <= r.target_stage <= 5
    print(f"latency per drag: {r.seconds}")
    # exports
    ply = v.export_ply()
    g = read_ply(ply)
    np.testing.assert_allclose(g.means.numpy(), r.gaussians[:, :3].numpy(), atol=1e-5)
    if r.estimate is not None:
        urdf = v.export_urdf()
        assert "<joint" in urdf.read_text()
