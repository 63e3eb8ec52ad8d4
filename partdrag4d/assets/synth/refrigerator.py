"""Refrigerator: a tall box with shelves and one or two side-hinged doors (single, top
freezer + fridge, or side-by-side), sometimes a freezer drawer at the bottom."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, ACCENT_COLORS, Look, bar_handle, box, random_color, shell


def _door(b, rng, x_lo, x_hi, y_lo, y_hi, z1, hinge_left, look, handle_look, door_t=0.05):
    pivot = x_lo if hinge_left else x_hi
    door = b.add_link("door", "revolute", (pivot, 0.0, z1), (0, -1, 0) if hinge_left else (0, 1, 0), 0.0, rng.uniform(math.radians(95), math.radians(125)))
    b.add(door, "door", box((x_lo, y_lo, z1), (x_hi, y_hi, z1 + door_t)), look)
    hx = x_hi - 0.04 if hinge_left else x_lo + 0.04
    length = min(0.5, (y_hi - y_lo) * 0.6)
    b.add(door, "handle", bar_handle((hx, (y_lo + y_hi) / 2, z1 + door_t), length, 0.02, 0.035, vertical=True), handle_look)
    return door


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("refrigerator", "Refrigerator", rng)
    W, H, D = rng.uniform(0.6, 0.9), rng.uniform(1.5, 1.9), rng.uniform(0.6, 0.75)
    t = 0.03
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.4, 90)
    handle_look = Look(random_color(rng, ACCENT_COLORS), None, 0.6, 150)
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1, z1), t, "front"), look)
    inner = Look((0.9, 0.92, 0.95), None, 0.3, 60)
    for k in range(1, 5):
        y = y0 + H * k / 5
        b.add(b.body, "shelf", box((x0 + t, y - 0.006, z0 + t), (x1 - t, y + 0.006, z1 - 0.06)), inner)
    layout = rng.choice(["single", "top_freezer", "side_by_side", "drawer"])
    hinge_left = bool(rng.random() < 0.5)
    if layout == "single":
        _door(b, rng, x0, x1, y0, y1, z1, hinge_left, look, handle_look)
    elif layout == "top_freezer":
        split = y0 + H * rng.uniform(0.62, 0.72)
        _door(b, rng, x0, x1, y0, split - 0.005, z1, hinge_left, look, handle_look)
        _door(b, rng, x0, x1, split + 0.005, y1, z1, hinge_left, look, handle_look)
    elif layout == "side_by_side":
        mid = x0 + W * rng.uniform(0.42, 0.58)
        _door(b, rng, x0, mid - 0.004, y0, y1, z1, True, look, handle_look)
        _door(b, rng, mid + 0.004, x1, y0, y1, z1, False, look, handle_look)
    else:
        split = y0 + H * rng.uniform(0.25, 0.33)
        _door(b, rng, x0, x1, split + 0.005, y1, z1, hinge_left, look, handle_look)
        drawer = b.add_link("drawer", "prismatic", (0.0, y0, z1), (0, 0, 1), 0.0, D * rng.uniform(0.5, 0.65))
        b.add(drawer, "drawer_front", box((x0, y0, z1 - 0.02), (x1, split - 0.005, z1 + 0.03)), look)
        b.add(drawer, "drawer_box", shell((x0 + t + 0.005, y0 + t, z0 + t + 0.01), (x1 - t - 0.005, split - 0.05, z1 - 0.02), 0.01, "top"), inner)
        b.add(drawer, "handle", bar_handle((0.0, split - 0.06, z1 + 0.03), W * 0.5, 0.02, 0.03, vertical=False), handle_look)
    return b
