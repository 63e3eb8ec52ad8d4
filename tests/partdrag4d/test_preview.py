"""``partdrag4d preview``: the drag overlay is drawn on the source state's views, with
arrowheads at the target positions."""

from __future__ import annotations

import h5py
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from partdrag4d import store
from partdrag4d.cli import app
from partdrag4d.preview import ARROW, START_DOT, drag_overlay

SEQ = "syn-laptop-0-000_joint_0_c0"


def _tile(sheet: Image.Image, n: int, tile: int = 256) -> np.ndarray:
    return np.asarray(sheet)[16:, n * tile:(n + 1) * tile].astype(np.int16)


def _composited(root, state: str, view: int, tile: int = 256) -> np.ndarray:
    with Image.open(store.render_dir(root, state) / store.view_png_name(view)) as im:
        rgba = im.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return np.asarray(canvas.resize((tile, tile), Image.LANCZOS)).astype(np.int16)


def test_overlay_shows_the_source_state_with_arrows_to_the_target(rendered_dataset):
    drag_file = rendered_dataset / "drags.h5"
    with h5py.File(drag_file, "r") as f:
        g = f["sequences"][SEQ]
        k = [tuple(p) for p in g["pairs"][:]].index((1, 5))
        count, start, end = g["count"][k], g["start_2d"][k], g["end_2d"][k]
        source_mask, target_mask = g["masks"][1], g["masks"][5]
    view = 0
    bare = drag_overlay(rendered_dataset, drag_file, SEQ, 1, 5, views=[view], max_arrows=0)
    tile = _tile(bare, 0)
    # away from the moving part (in both states) the tile is the source render itself
    both = np.asarray(Image.fromarray(source_mask[view] | target_mask[view]).resize((256, 256), Image.NEAREST))
    from scipy.ndimage import binary_dilation

    away = ~binary_dilation(both, iterations=6)
    away[:16, :] = False  # the label
    source_img = _composited(rendered_dataset, f"{SEQ}_s1", view)
    target_img = _composited(rendered_dataset, f"{SEQ}_s5", view)
    assert np.abs(tile - source_img)[away].max() <= 2
    # and on the moving part it is the source state (tinted), not the target
    on_source = np.asarray(Image.fromarray(source_mask[view]).resize((256, 256), Image.NEAREST)) & ~binary_dilation(
        np.asarray(Image.fromarray(target_mask[view]).resize((256, 256), Image.NEAREST)), iterations=3)
    assert on_source.sum() > 50
    assert (tile[on_source, 2] > tile[on_source, 0]).mean() > 0.95  # blue tint of the source's moving part
    assert np.abs(tile - target_img)[on_source].mean() > 20
    # with arrows: the heads sit at the drags' ends, green dots at their starts
    sheet = drag_overlay(rendered_dataset, drag_file, SEQ, 1, 5, views=[view], max_arrows=8)
    drawn = _tile(sheet, 0)
    n = int(count[view])
    assert n > 0
    picks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    s = 256 / source_mask.shape[-1]
    for i in picks:
        (x0, y0), (x1, y1) = start[view, i] * s, end[view, i] * s
        head = drawn[int(y1) - 2:int(y1) + 3, int(x1) - 2:int(x1) + 3].reshape(-1, 3)
        assert (np.abs(head - np.array(ARROW)).sum(1) < 40).any(), ("no arrowhead at", x1, y1)
        dot = drawn[int(y0) - 1:int(y0) + 2, int(x0) - 1:int(x0) + 2].reshape(-1, 3)
        assert (np.abs(dot - np.array(START_DOT)).sum(1) < 40).any(), ("no start dot at", x0, y0)


def test_preview_command_uses_the_chosen_state_as_source(rendered_dataset, tmp_path):
    result = CliRunner().invoke(app, ["preview", str(rendered_dataset), "--state", f"{SEQ}_s3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert f"{SEQ}_drags_3to5.png" in names
    result = CliRunner().invoke(app, ["preview", str(rendered_dataset), "--state", f"{SEQ}_s5", "--out", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / f"{SEQ}_drags_5to0.png").is_file()
    result = CliRunner().invoke(app, ["preview", str(rendered_dataset), "--state", f"{SEQ}_s5", "--out", str(tmp_path), "--target-stage", "5"])
    assert result.exit_code == 2 and "must differ from the source stage" in result.output
