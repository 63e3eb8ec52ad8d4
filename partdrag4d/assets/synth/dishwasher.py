"""Dishwasher: a box with a bottom-hinged door, a control strip, and one or two racks
that slide out (prismatic)."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, ACCENT_COLORS, Look, bar_handle, box, random_color, shell


def _rack(x0, x1, y, z0, z1, bar):
    prims = [box((x0, y, z0), (x1, y + bar, z0 + bar)), box((x0, y, z1 - bar), (x1, y + bar, z1)),
             box((x0, y, z0), (x0 + bar, y + bar * 6, z1)), box((x1 - bar, y, z0), (x1, y + bar * 6, z1))]
    for k in range(1, 8):
        x = x0 + (x1 - x0) * k / 8
        prims.append(box((x - bar / 2, y, z0), (x + bar / 2, y + bar, z1)))
    return prims


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("dishwasher", "Dishwasher", rng)
    W, H, D = rng.uniform(0.55, 0.62), rng.uniform(0.8, 0.88), rng.uniform(0.55, 0.62)
    t = 0.02
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    body_look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.4, 90)
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1, z1), t, "front"), body_look)
    b.add(b.body, "tub", box((x0 + t, y0 + t, z0 + t), (x1 - t, y0 + 2 * t, z1 - t)), Look((0.7, 0.72, 0.74), None, 0.5, 100))

    door_t = 0.04
    door = b.add_link("door", "revolute", (0.0, y0, z1), (1, 0, 0), 0.0, math.pi / 2)
    door_look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.4, 90)
    b.add(door, "door_frame", box((x0, y0, z1), (x1, y1 - 0.1, z1 + door_t)), door_look)
    b.add(door, "control_strip", box((x0, y1 - 0.1, z1), (x1, y1, z1 + door_t)), Look(random_color(rng, APPLIANCE_COLORS), "panel", 0.3, 60))
    b.add(door, "handle", bar_handle((0.0, y1 - 0.15, z1 + door_t), W * 0.5, 0.018, 0.03, vertical=False), Look(random_color(rng, ACCENT_COLORS), None, 0.6, 150))

    rack_look = Look((0.78, 0.8, 0.82), None, 0.6, 120)
    heights = [0.25, 0.62] if rng.random() < 0.6 else [float(rng.uniform(0.3, 0.55))]
    for h in heights:
        y = y0 + H * h
        rack = b.add_link("rack", "prismatic", (0.0, y, 0.0), (0, 0, 1), 0.0, D * rng.uniform(0.55, 0.7))
        b.add(rack, "rack", _rack(x0 + 1.5 * t, x1 - 1.5 * t, y, z0 + 2 * t, z1 - 0.03, 0.01), rack_look)
    return b
