"""Pictures for people: a state's 12 views as a contact sheet, a sequence's 6 stages as a
strip (PNG and GIF), and a pair's drags drawn on the source state's views as arrows to
where the dragged points are in the target state."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from partdrag4d import store

CHECKER = (236, 236, 236)


def _on_background(rgba: Image.Image, background=(255, 255, 255)) -> Image.Image:
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _label(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 7 * len(text) + 6, 14], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return img


def contact_sheet(render_folder: Path, tile: int = 192, columns: int = 4, title: str = "") -> Image.Image:
    """The 12 views of a state in a grid, each labelled with its view index."""
    views = sorted(Path(render_folder).glob("view_*.png"))
    rows = (len(views) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * tile + (16 if title else 0)), (255, 255, 255))
    top = 16 if title else 0
    if title:
        ImageDraw.Draw(sheet).text((4, 2), title, fill=(0, 0, 0))
    for k, path in enumerate(views):
        with Image.open(path) as im:
            img = _on_background(im.convert("RGBA").resize((tile, tile), Image.LANCZOS), CHECKER)
        sheet.paste(_label(img, f"view {k}"), ((k % columns) * tile, top + (k // columns) * tile))
    return sheet


def stage_strip(root: Path, sequence_records: list[dict], view: int = 0, tile: int = 192) -> list[Image.Image]:
    """One image per stage of a sequence, seen from ``view``."""
    frames = []
    for r in sorted(sequence_records, key=lambda r: r["stage"]):
        with Image.open(store.render_dir(root, r["state_id"]) / store.view_png_name(view)) as im:
            frames.append(_label(_on_background(im.convert("RGBA").resize((tile, tile), Image.LANCZOS)), f"stage {r['stage']}"))
    return frames


SOURCE_TINT = (60, 120, 255)
TARGET_OUTLINE = (230, 0, 0)
ARROW = (255, 90, 0)
START_DOT = (0, 170, 0)


def draw_arrow(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float, head: float = 6.0, width: int = 1) -> None:
    """A line from (x0, y0) with a filled arrowhead at (x1, y1)."""
    draw.line([(x0, y0), (x1, y1)], fill=ARROW, width=width)
    dx, dy = x1 - x0, y1 - y0
    length = float(np.hypot(dx, dy))
    if length < 1e-6:
        return
    ux, uy = dx / length, dy / length
    h = min(head, 0.6 * length)
    bx, by = x1 - h * ux, y1 - h * uy
    draw.polygon([(x1, y1), (bx - 0.5 * h * uy, by + 0.5 * h * ux), (bx + 0.5 * h * uy, by - 0.5 * h * ux)], fill=ARROW)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    return mask & ~binary_erosion(mask)


def drag_overlay(root: Path, drag_file: Path, sequence_id: str, source: int, target: int, views: list[int] | None = None,
                 tile: int = 256, max_arrows: int = 24) -> Image.Image:
    """The SOURCE state's views with arrows from each drag's start (green dot, on the
    source image) to where the same material point is in the target state (arrowhead);
    the moving part is tinted blue in the source and outlined red where it is in the
    target. Up to ``max_arrows`` drags per view are drawn (evenly picked of the kept ones)."""
    with h5py.File(drag_file, "r") as f:
        g = f["sequences"][sequence_id]
        pairs = [tuple(int(x) for x in p) for p in g["pairs"][:]]
        if (source, target) not in pairs:
            raise KeyError(f"{sequence_id}: the drag file has no pair {source} -> {target}")
        k = pairs.index((source, target))
        states = json.loads(g.attrs["state_ids"])
        count, start, end = g["count"][k], g["start_2d"][k], g["end_2d"][k]
        masks, target_masks = g["masks"][source], g["masks"][target]
    views = views if views is not None else list(range(len(count)))
    top = 16
    sheet = Image.new("RGB", (len(views) * tile, tile + top), (255, 255, 255))
    ImageDraw.Draw(sheet).text((4, 2), f"{sequence_id}: source stage {source} ({states[source]}) -> target stage {target}", fill=(0, 0, 0))
    for n, v in enumerate(views):
        with Image.open(store.render_dir(root, states[source]) / store.view_png_name(v)) as im:
            full = im.convert("RGBA")
        size = full.size[0]
        img = np.asarray(_on_background(full)).astype(np.float32)
        img[masks[v]] = 0.45 * img[masks[v]] + 0.55 * np.array(SOURCE_TINT)
        img[_outline(target_masks[v])] = TARGET_OUTLINE
        img = Image.fromarray(img.astype(np.uint8)).resize((tile, tile), Image.LANCZOS)
        draw = ImageDraw.Draw(img)
        s = tile / size
        kept = int(count[v])
        pick = np.unique(np.linspace(0, kept - 1, min(kept, max_arrows)).round().astype(int)) if kept else np.zeros(0, int)
        for i in pick:
            (x0, y0), (x1, y1) = start[v, i] * s, end[v, i] * s
            draw_arrow(draw, x0, y0, x1, y1)
        for i in pick:
            x0, y0 = start[v, i] * s
            draw.ellipse([x0 - 2, y0 - 2, x0 + 2, y0 + 2], fill=START_DOT)
        sheet.paste(_label(img, f"view {v}: {len(pick)} of {kept} drags"), (n * tile, top))
    return sheet


def write_previews(root: Path, out: Path, state_id: str | None = None, view: int = 0, drag_file: Path | None = None,
                   target_stage: int | None = None) -> list[Path]:
    """Contact sheet of a state (default: the first of the manifest) and its sequence's strip/GIF,
    plus, when a drag file exists, a drag overlay on that state's (the source's) views with
    arrows to ``target_stage`` (default: the far end of the sequence, the last stage or 0)."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = store.manifest_states(root)
    if not records:
        raise ValueError(f"{root}: the manifest has no states")
    chosen = next((r for r in records if r["state_id"] == state_id), None) if state_id else records[0]
    if chosen is None:
        raise KeyError(f"state {state_id!r} is not in {root / store.MANIFEST}")
    written = []
    sheet = contact_sheet(store.render_dir(root, chosen["state_id"]), title=f"{chosen['state_id']} ({chosen['category']})")
    written.append(out / f"{chosen['state_id']}_views.png")
    sheet.save(written[-1])
    seq = [r for r in records if r["sequence_id"] == chosen["sequence_id"]]
    frames = stage_strip(root, seq, view)
    strip = Image.new("RGB", (sum(f.width for f in frames), frames[0].height), (255, 255, 255))
    x = 0
    for f in frames:
        strip.paste(f, (x, 0))
        x += f.width
    written.append(out / f"{chosen['sequence_id']}_stages_view{view:02d}.png")
    strip.save(written[-1])
    written.append(out / f"{chosen['sequence_id']}_stages_view{view:02d}.gif")
    frames[0].save(written[-1], save_all=True, append_images=frames[1:] + frames[-2:0:-1], duration=250, loop=0)
    drag_path = Path(drag_file) if drag_file else store.drag_file(root)
    if drag_path.is_file():
        source = int(chosen["stage"])
        last = max(r["stage"] for r in seq)
        target = (last if source != last else 0) if target_stage is None else int(target_stage)
        if target == source or not 0 <= target <= last:
            raise ValueError(f"target stage {target} must differ from the source stage {source} and lie in 0..{last}")
        written.append(out / f"{chosen['sequence_id']}_drags_{source}to{target}.png")
        drag_overlay(root, drag_path, chosen["sequence_id"], source, target, views=[0, 2, 3, 6, 9]).save(written[-1])
    return written
