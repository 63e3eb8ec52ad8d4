"""Microwave: a box with a cavity, a side-hinged door with a window, a control panel,
and sometimes a turntable (a continuous joint)."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, ACCENT_COLORS, Look, bar_handle, box, cylinder, random_color, shell


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("microwave", "Microwave", rng)
    W, H, D = rng.uniform(0.45, 0.6), rng.uniform(0.27, 0.35), rng.uniform(0.33, 0.42)
    t = 0.015
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    split = x0 + W * rng.uniform(0.68, 0.76)
    hinge_left = rng.random() < 0.8
    body_look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.3, 80)
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1, z1), t, "front"), body_look)
    b.add(b.body, "divider", box((split - t / 2, y0 + t, z0 + t), (split + t / 2, y1 - t, z1)), body_look)
    b.add(b.body, "control_panel", box((split, y0 + t, z1 - t), (x1 - t, y1 - t, z1)), Look(random_color(rng, APPLIANCE_COLORS), "panel", 0.3, 60))
    inner = Look((0.85, 0.85, 0.82), None, 0.2, 40)
    b.add(b.body, "cavity_floor", box((x0 + t, y0 + t, z0 + t), (split - t / 2, y0 + 1.5 * t, z1 - t)), inner)

    door_t = 0.02
    dx0, dx1 = x0, split
    pivot_x = dx0 if hinge_left else dx1
    door = b.add_link("door", "revolute", (pivot_x, 0.0, z1), (0, -1, 0) if hinge_left else (0, 1, 0), 0.0, rng.uniform(math.radians(100), math.radians(120)))
    door_look = Look(random_color(rng, APPLIANCE_COLORS), None, 0.3, 80)
    b.add(door, "door_frame", box((dx0, y0, z1), (dx1, y1, z1 + door_t)), door_look)
    margin = 0.035
    b.add(door, "glass", box((dx0 + margin, y0 + margin, z1 + door_t), (dx1 - 2.2 * margin, y1 - margin, z1 + door_t + 0.003)), Look((0.3, 0.3, 0.32), "glass", 0.8, 200))
    handle_x = dx1 - margin if hinge_left else dx0 + margin
    b.add(door, "handle", bar_handle((handle_x, 0.0, z1 + door_t), H * 0.6, 0.014, 0.02, vertical=True), Look(random_color(rng, ACCENT_COLORS), None, 0.5, 120))

    if rng.random() < 0.5:
        cx, cz = (x0 + split) / 2, (z0 + z1) / 2
        radius = 0.38 * min(split - x0, D)
        table = b.add_link("turntable", "continuous", (cx, y0 + 2 * t, cz), (0, 1, 0))
        plate = cylinder(radius, 0.008, 32, axis="y").translated((cx, y0 + 2 * t, cz))
        b.add(table, "glass_plate", plate, Look((0.75, 0.78, 0.8), "label", 0.6, 150))
    return b
