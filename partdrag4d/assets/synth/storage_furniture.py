"""Storage furniture: a wooden cabinet whose grid of cells holds drawers (prismatic),
single doors or double doors (revolute, hinged at the outer edges)."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import WOOD_COLORS, ACCENT_COLORS, Look, bar_handle, box, random_color, shell


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("storage-furniture", "StorageFurniture", rng)
    W, H, D = rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.5), rng.uniform(0.35, 0.6)
    t = 0.02
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    wood = Look(random_color(rng, WOOD_COLORS), "wood", 0.15, 30)
    front_look = Look(random_color(rng, WOOD_COLORS), "wood", 0.15, 30)
    handle_look = Look(random_color(rng, ACCENT_COLORS), None, 0.6, 150)
    inner = Look(tuple(np.clip(np.asarray(wood.color) * 0.8, 0, 1).tolist()), None, 0.1, 20)
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1, z1), t, "front"), wood)

    cols = int(rng.integers(1, 3)) if W > 0.7 else 1
    rows = int(np.clip(round(H / rng.uniform(0.25, 0.4)), 1, 4))
    xs = np.linspace(x0 + t, x1 - t, cols + 1)
    ys = np.linspace(y0 + t, y1 - t, rows + 1)
    for x in xs[1:-1]:
        b.add(b.body, "vertical_divider", box((x - t / 2, y0 + t, z0 + t), (x + t / 2, y1 - t, z1)), wood)
    for y in ys[1:-1]:
        b.add(b.body, "shelf", box((x0 + t, y - t / 2, z0 + t), (x1 - t, y + t / 2, z1)), wood)

    gap, ft = 0.004, 0.02
    for c in range(cols):
        for r in range(rows):
            cx0, cx1 = xs[c] + (t / 2 if c else 0) + gap, xs[c + 1] - (t / 2 if c < cols - 1 else 0) - gap
            cy0, cy1 = ys[r] + (t / 2 if r else 0) + gap, ys[r + 1] - (t / 2 if r < rows - 1 else 0) - gap
            kind = rng.choice(["drawer", "door", "double_door"], p=[0.5, 0.3, 0.2])
            if kind == "double_door" and cx1 - cx0 < 0.4:
                kind = "door"
            if kind == "drawer":
                drawer = b.add_link("drawer", "prismatic", (0.0, 0.0, 0.0), (0, 0, 1), 0.0, (D - 2 * t) * rng.uniform(0.6, 0.85))
                b.add(drawer, "drawer_front", box((cx0, cy0, z1 - ft), (cx1, cy1, z1)), front_look)
                b.add(drawer, "drawer_box", shell((cx0 + 0.01, cy0 + 0.005, z0 + t + 0.01), (cx1 - 0.01, cy1 - 0.02, z1 - ft), 0.01, "top"), inner)
                b.add(drawer, "handle", bar_handle(((cx0 + cx1) / 2, (cy0 + cy1) / 2, z1), min(0.15, (cx1 - cx0) * 0.5), 0.012, 0.025, vertical=False), handle_look)
            else:
                halves = [(cx0, cx1, bool(rng.random() < 0.5))] if kind == "door" else [(cx0, (cx0 + cx1) / 2 - gap, True), ((cx0 + cx1) / 2 + gap, cx1, False)]
                for hx0, hx1, left in halves:
                    pivot = hx0 if left else hx1
                    door = b.add_link("door", "revolute", (pivot, 0.0, z1), (0, -1, 0) if left else (0, 1, 0), 0.0, rng.uniform(math.radians(90), math.radians(120)))
                    b.add(door, "door", box((hx0, cy0, z1), (hx1, cy1, z1 + ft)), front_look)
                    hx = hx1 - 0.035 if left else hx0 + 0.035
                    b.add(door, "handle", bar_handle((hx, (cy0 + cy1) / 2, z1 + ft), min(0.15, (cy1 - cy0) * 0.4), 0.012, 0.025, vertical=True), handle_look)
    return b
