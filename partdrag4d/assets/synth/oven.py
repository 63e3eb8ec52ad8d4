"""Oven: a box with a cavity, a bottom-hinged door with a window and a bar handle, and
rotating knobs (revolute or continuous) on the control panel; burners on top."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, ACCENT_COLORS, Look, bar_handle, box, cylinder, random_color, shell


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("oven", "Oven", rng)
    W, H, D = rng.uniform(0.55, 0.75), rng.uniform(0.6, 0.9), rng.uniform(0.55, 0.65)
    t = 0.02
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    panel_h = H * rng.uniform(0.14, 0.2)
    body_look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.4, 90)
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1 - panel_h, z1), t, "front"), body_look)
    b.add(b.body, "panel_box", box((x0, y1 - panel_h, z0), (x1, y1, z1)), body_look)
    b.add(b.body, "control_panel", box((x0 + t, y1 - panel_h + t, z1), (x1 - t, y1 - t, z1 + 0.004)), Look(random_color(rng, APPLIANCE_COLORS), "panel", 0.3, 60))
    burner = Look((0.08, 0.08, 0.08), None, 0.3, 40)
    for sx in (-1, 1):
        for sz in (-1, 1):
            b.add(b.body, "burner", cylinder(min(W, D) * 0.1, 0.01, 24, axis="y").translated((sx * W / 4, y1 + 0.005, sz * D / 4)), burner)

    door_t = 0.03
    door_top = y1 - panel_h
    door = b.add_link("door", "revolute", (0.0, y0, z1), (1, 0, 0), 0.0, math.pi / 2)
    door_look = Look(random_color(rng, APPLIANCE_COLORS), None, 0.4, 90)
    b.add(door, "door_frame", box((x0, y0, z1), (x1, door_top, z1 + door_t)), door_look)
    m = 0.06
    b.add(door, "glass", box((x0 + m, y0 + m, z1 + door_t), (x1 - m, door_top - 2 * m, z1 + door_t + 0.003)), Look((0.25, 0.25, 0.27), "glass", 0.8, 200))
    b.add(door, "handle", bar_handle((0.0, door_top - m * 0.8, z1 + door_t), W * 0.7, 0.02, 0.035, vertical=False), Look(random_color(rng, ACCENT_COLORS), None, 0.6, 150))

    n_knobs = int(rng.integers(2, 5))
    knob_look = Look(random_color(rng, ACCENT_COLORS), "label", 0.4, 80)
    for k in range(n_knobs):
        kx = x0 + W * (k + 1) / (n_knobs + 1)
        ky = y1 - panel_h / 2
        kind = "continuous" if rng.random() < 0.3 else "revolute"
        knob = b.add_link("knob", kind, (kx, ky, z1), (0, 0, 1), 0.0, math.radians(270) if kind == "revolute" else 0.0)
        r = min(panel_h * 0.3, 0.035)
        b.add(knob, "knob", [cylinder(r, 0.025, 20, axis="z").translated((kx, ky, z1 + 0.0165)), box((kx - 0.004, ky, z1 + 0.029), (kx + 0.004, ky + r, z1 + 0.033))], knob_look)
    return b
