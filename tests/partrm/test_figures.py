"""The benchmark's pictures: the qualitative grid shows the drags on the source view and
one novel view per method, where the part moves; the learning curve is written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from partdrag4d.preview import ARROW
from partrm import figures
from partrm.evaluate import SampleRow
from partrm.models.lgm import LGMConfig
from partrm.models.partrm import PartRM, PartRMConfig

pytestmark = pytest.mark.blender


def sample_row(**values) -> SampleRow:
    """An evaluated sample with a placeholder in every field but ``values``."""
    base = dict(method="partrm", category="storage-furniture", seen=True, split="test", group="test", object_id="o", sequence_id="s",
                source_state="a", target_state="b", psnr=20.0, ssim=0.9, lpips=None, motion_fraction=0.1, psnr_motion=15.0,
                ssim_motion=0.5, lpips_motion=None, psnr_rest=25.0, ssim_rest=0.95)
    return SampleRow(**{**base, **values})


@pytest.fixture(scope="module")
def geometric(rendered_dataset, tmp_path_factory):
    from partrm.gsdb import GaussianDatabase
    from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb

    out = tmp_path_factory.mktemp("geo") / "gsdb.h5"
    build_render_gsdb(rendered_dataset, out, RenderGsdbConfig(splat_size=32), progress=False)
    return GaussianDatabase(out)


def test_grid_shows_drags_and_one_view_per_method(rendered_dataset, geometric, tmp_path):
    torch.manual_seed(0)
    model = PartRM(PartRMConfig(lgm=LGMConfig.tiny())).eval()
    seq = "awning-drawer_joint_0_c0"
    samples = [sample_row(sequence_id=seq, source_state=f"{seq}_s0", target_state=f"{seq}_s5", group="test"),
               sample_row(sequence_id=seq, source_state=f"{seq}_s0", target_state=f"{seq}_s3", group="test")]
    size = 96
    path = figures.qualitative_grid(rendered_dataset, model, geometric, samples, tmp_path / "grid.png", size=size)
    with Image.open(path) as im:
        sheet = np.asarray(im.convert("RGB")).astype(int)
    label = 18
    assert figures.COLUMNS == ("source + drags", "PartRM", "zero-drag", "static", "oracle", "ground truth")
    assert sheet.shape == (label + 2 * (size + label), size * len(figures.COLUMNS), 3)

    def tile(row: int, col: int) -> np.ndarray:
        y = label + row * (size + label) + label
        return sheet[y:y + size, col * size:(col + 1) * size]

    for row in range(2):
        arrows = [(np.abs(tile(row, c) - np.array(ARROW)).sum(-1) < 30).sum() for c in range(len(figures.COLUMNS))]
        assert arrows[0] > 20 and max(arrows[1:]) < 5  # the drags are drawn on the source view only
        static, oracle, truth = tile(row, 3), tile(row, 4), tile(row, 5)
        assert np.abs(static - oracle).max() > 50  # the drawer moved in the chosen view
        # the oracle (true motion) is closer to the ground truth than static where they differ
        assert np.abs(oracle - truth).mean() < np.abs(static - truth).mean()


def test_pick_samples_takes_the_largest_motion_per_group_once_per_sequence():
    rows = [sample_row(group=g, method=m, sequence_id=s, motion_fraction=f)
            for g, m, s, f in [("seen", "partrm", "s1", 0.1), ("seen", "partrm", "s1", 0.3), ("seen", "partrm", "s2", 0.2),
                               ("seen", "static", "s3", 0.9), ("unseen", "partrm", "t1", 0.05)]]
    picked = figures.pick_samples(rows, per_group=2)
    assert [(r.group, r.sequence_id, r.motion_fraction) for r in picked] == [("seen", "s1", 0.3), ("seen", "s2", 0.2), ("unseen", "t1", 0.05)]


def test_learning_curve_is_written(tmp_path):
    log = [{"step": str(i + 1), "stage": "1" if i < 20 else "2", "loss": str(1.0 / (i + 1))} for i in range(30)]
    curve = [{"step": 10, "R": {"seen": 0.1, "unseen": None}}, {"step": 30, "R": {"seen": 0.4, "unseen": 0.2}}]
    path = figures.learning_curve(log, curve, tmp_path / "curve.png", title="t")
    with Image.open(path) as im:
        assert im.size == (1100, 400)
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # something is drawn
        plain = np.asarray(im.convert("RGB"))
    with_control = [{**p, "zero_drag_R": {"seen": 0.05, "unseen": None}} for p in curve]
    with Image.open(figures.learning_curve(log, with_control, tmp_path / "control.png", title="t")) as im:
        assert (np.asarray(im.convert("RGB")) != plain).any(axis=2).sum() > 200  # the control's dashed line is drawn
