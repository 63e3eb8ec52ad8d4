"""Pictures of a benchmark run: a qualitative grid of held-out samples and a learning curve.

Numbers alone hid that an earlier PartRM ignored its drags; these two pictures show it at
a glance. The grid puts, per sample, the source view with the user's drags next to the
same novel view rendered from PartRM's Gaussians, from the static and oracle Gaussians
and the ground truth. The curve plots the training loss and the motion recovery ratio R
on the test objects against the training step.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from partdrag4d.preview import START_DOT, draw_arrow  # noqa: E402
from partdrag4d.store import atomic_write_bytes  # noqa: E402
from partrm.data import PairDataset, collate  # noqa: E402
from partrm.evaluate import EVAL_STREAM, METHOD_TABLE, METHODS, MethodInput, SampleRow, motion_region  # noqa: E402
from partrm.gaussians.views import render_views  # noqa: E402
from partrm.part_motion import flat_splatter  # noqa: E402
from partrm.predict import StaticCache, mode_of, pair_config  # noqa: E402

TITLES = {"partrm": "PartRM"}
"""A method's column title where it is not the method's name."""
COLUMNS = ("source + drags", *(TITLES.get(m, m) for m in METHODS), "ground truth")


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_image(rgb: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> RGB image."""
    return Image.fromarray((rgb.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8))


def _source_with_drags(item: dict, size: int) -> Image.Image:
    """The first input view (the user's image) with its valid drags as arrows."""
    image = _to_image(item["input_rgb"][0, 0]).resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    drags, valid = item["drags"][0, 0].numpy() * size, item["drag_valid"][0, 0].numpy()
    for (x0, y0, x1, y1), ok in zip(drags, valid):
        if ok:
            draw.ellipse([x0 - 2, y0 - 2, x0 + 2, y0 + 2], fill=START_DOT)
            draw_arrow(draw, x0, y0, x1, y1, head=7.0, width=2)
    return image


def qualitative_grid(data: Path, model, teacher_db, samples: Sequence[SampleRow], out: Path, size: int = 192,
                     num_drags: int = 10) -> Path:
    """One row per evaluated sample (its pair and group): the source view with drags, then
    every method (PartRM, zero-drag, static, oracle) and the ground truth in the novel view
    where the moving part covers the most pixels. Drawn with the evaluation's own drag
    stream, so the arrows are the drags the scores came from."""
    pair_cfg = pair_config(model, target_size=size, num_drags=num_drags)
    statics = StaticCache(Path(data), model.config.splat_size) if mode_of(model) == "rgbd" else None
    dataset = PairDataset(Path(data), split=None, config=pair_cfg, seed=0, stream=EVAL_STREAM)
    index = {(p.sequence_id, p.source_state, p.target_state): k for k, p in enumerate(dataset.pairs)}
    label_h, tiles = 18, []
    for sample in samples:
        k = index[sample.pair]
        ref, item = dataset.pairs[k], collate([dataset[k]])
        views = item["supervised_views"][0]
        region = motion_region(dataset, ref, views.tolist(), size, 1)
        view = int(views[int(region.flatten(1).sum(1).argmax())])
        K, c2w = item["target_K"][:, [view]], item["target_c2w"][:, [view]]
        source_g = torch.from_numpy(flat_splatter(teacher_db.splatter(ref.source_state)))
        inputs = MethodInput(ref=ref, item=item, source=source_g, root=Path(data), device=torch.device("cpu"), model=model, statics=statics)
        with torch.inference_mode():
            row = [_source_with_drags(item, size)]
            for method in METHODS:
                rgb, _ = render_views(METHOD_TABLE[method].predict(inputs).gaussians.float(), K, c2w, size)
                row.append(_to_image(rgb[0, 0]))
        gt = item["target_rgb"][0, view] * item["target_alpha"][0, view] + (1 - item["target_alpha"][0, view])
        row.append(_to_image(gt))
        tiles.append((f"{sample.group}: {ref.category} {ref.object_id}, stage {ref.source_stage} -> {ref.target_stage}, view {view}", row))
    width = size * len(COLUMNS)
    sheet = Image.new("RGB", (width, label_h + len(tiles) * (size + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(COLUMNS):
        draw.text((c * size + 4, 3), name, fill=(0, 0, 0))
    for r, (caption, row) in enumerate(tiles):
        y = label_h + r * (size + label_h)
        draw.text((4, y + 3), caption, fill=(60, 60, 60))
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * size, y + label_h))
    out = Path(out)
    atomic_write_bytes(out, _png_bytes(sheet))
    return out


def pick_samples(rows: Sequence[SampleRow], per_group: int = 3) -> list[SampleRow]:
    """The evaluated PartRM samples with the largest moving-part region, ``per_group`` per group,
    one per sequence (where the motion is easiest to see)."""
    chosen = []
    for group in dict.fromkeys(r.group for r in rows):
        seen_sequences: set[str] = set()
        ranked = sorted((r for r in rows if r.group == group and r.method == "partrm"), key=lambda r: -r.motion_fraction)
        for r in ranked:
            if r.sequence_id in seen_sequences:
                continue
            seen_sequences.add(r.sequence_id)
            chosen.append(r)
            if len(seen_sequences) == per_group:
                break
    return chosen


def learning_curve(log: list[dict], curve: list[dict], out: Path, title: Optional[str] = None) -> Path:
    """``log``: train.read_log rows (step, stage, loss); ``curve``: dicts with ``step`` and
    ``R`` (and optionally ``zero_drag_R``, dashed) per group name (None where undefined).
    Left: the loss per stage (log scale); right: R on the test objects."""
    fig, (ax_loss, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    stages = list(dict.fromkeys(r["stage"] for r in log))
    for stage in stages:
        steps = np.array([int(r["step"]) for r in log if r["stage"] == stage])
        loss = np.array([float(r["loss"]) for r in log if r["stage"] == stage])
        window = max(1, len(loss) // 40)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps, loss, alpha=0.2, lw=0.8)
        ax_loss.plot(steps[window - 1:], smooth, label=f"stage {stage}", color=ax_loss.lines[-1].get_color())
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (train objects)")
    ax_loss.legend()
    groups = list(dict.fromkeys(g for point in curve for g in point["R"]))
    for group in groups:
        pts = [(p["step"], p["R"][group]) for p in curve if p["R"].get(group) is not None]
        if pts:
            ax_r.plot(*zip(*pts), marker="o", label=group)
        control = [(p["step"], p["zero_drag_R"][group]) for p in curve if p.get("zero_drag_R", {}).get(group) is not None]
        if control:
            ax_r.plot(*zip(*control), marker="x", ls="--", color=ax_r.lines[-1].get_color() if pts else None,
                      label=f"{group}: zero-drag control")
    ax_r.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax_r.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_r.set_xlabel("step")
    ax_r.set_ylabel("motion recovery ratio R (test objects)")
    ax_r.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out
