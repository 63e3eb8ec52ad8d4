"""Pictures for people: a state's 12 views as a contact sheet, a sequence's 6 stages as a
strip (PNG and GIF), and drags drawn over the views of a pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
        with Image.open(Path(root) / r["paths"]["state"] / "render" / store.view_png_name(view)) as im:
            frames.append(_label(_on_background(im.convert("RGBA").resize((tile, tile), Image.LANCZOS)), f"stage {r['stage']}"))
    return frames


def drag_overlay(root: Path, drag_file: Path, sequence_id: str, source: int, target: int, views: list[int] | None = None, tile: int = 256) -> Image.Image:
    """Source-state views with the pair's drags (green start, red end) and the moving-part mask tinted."""
    import h5py

    with h5py.File(drag_file, "r") as f:
        g = f["sequences"][sequence_id]
        pairs = [tuple(p) for p in g["pairs"][:]]
        k = pairs.index((source, target))
        states = json.loads(g.attrs["state_ids"])
        count, start, end = g["count"][k], g["start_2d"][k], g["end_2d"][k]
        masks = g["masks"][source]
    views = views if views is not None else list(range(len(count)))
    sheet = Image.new("RGB", (len(views) * tile, tile), (255, 255, 255))
    for n, v in enumerate(views):
        with Image.open(Path(root) / "states" / states[source] / "render" / store.view_png_name(v)) as im:
            full = im.convert("RGBA")
        size = full.size[0]
        img = _on_background(full)
        tint = np.asarray(img).astype(np.float32)
        tint[masks[v]] = 0.45 * tint[masks[v]] + 0.55 * np.array([60, 120, 255])
        img = Image.fromarray(tint.astype(np.uint8)).resize((tile, tile), Image.LANCZOS)
        draw = ImageDraw.Draw(img)
        s = tile / size
        for (x0, y0), (x1, y1) in zip(start[v, : count[v]], end[v, : count[v]]):
            draw.line([(x0 * s, y0 * s), (x1 * s, y1 * s)], fill=(255, 60, 0), width=1)
            draw.ellipse([x0 * s - 2, y0 * s - 2, x0 * s + 2, y0 * s + 2], fill=(0, 200, 0))
        sheet.paste(_label(img, f"view {v}: {int(count[v])} drags"), (n * tile, 0))
    return sheet


def write_previews(root: Path, out: Path, state_id: str | None = None, view: int = 0, drag_file: Path | None = None) -> list[Path]:
    """Contact sheet of a state (default: the first of the manifest) and its sequence's strip/GIF,
    plus a drag overlay of stage 0 -> 5 when a drag file exists."""
    from partdrag4d.dragfile import DRAG_FILE

    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in store.read_jsonl(root / store.MANIFEST) if r.get("status") == "ok"]
    if not records:
        raise ValueError(f"{root}: the manifest has no states")
    chosen = next((r for r in records if r["state_id"] == state_id), None) if state_id else records[0]
    if chosen is None:
        raise KeyError(f"state {state_id!r} is not in {root / store.MANIFEST}")
    written = []
    sheet = contact_sheet(root / chosen["paths"]["state"] / "render", title=f"{chosen['state_id']} ({chosen['category']})")
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
    drag_path = Path(drag_file) if drag_file else root / DRAG_FILE
    if drag_path.is_file():
        last = max(r["stage"] for r in seq)
        written.append(out / f"{chosen['sequence_id']}_drags_0to{last}.png")
        drag_overlay(root, drag_path, chosen["sequence_id"], 0, last, views=[0, 2, 3, 6, 9]).save(written[-1])
    return written
