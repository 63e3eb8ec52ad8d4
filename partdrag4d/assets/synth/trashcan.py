"""Trashcan: a round or square bin with a lid hinged at the back, sometimes a foot pedal."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, ACCENT_COLORS, Look, box, cylinder, random_color, ring, shell


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("trashcan", "TrashCan", rng)
    R, H = rng.uniform(0.14, 0.2), rng.uniform(0.35, 0.55)
    y0, y1 = -H / 2, H / 2
    look = Look(random_color(rng, APPLIANCE_COLORS + [(0.2, 0.45, 0.3), (0.3, 0.35, 0.6)]), "metal", 0.5, 100)
    lid_look = Look(random_color(rng, ACCENT_COLORS), "label", 0.4, 80)
    round_bin = bool(rng.random() < 0.5)
    if round_bin:
        b.add(b.body, "bin", [ring(R, R - 0.01, H, 40).rotated_x(math.pi / 2), cylinder(R, 0.01, 40, axis="y").translated((0, y0 + 0.005, 0))], look)
        depth = 2 * R
    else:
        b.add(b.body, "bin", shell((-R, y0, -R), (R, y1, R), 0.01, "top"), look)
        depth = 2 * R
    lid_t = 0.02
    lid = b.add_link("lid", "revolute", (0.0, y1, -depth / 2), (-1, 0, 0), 0.0, rng.uniform(math.radians(80), math.radians(110)))
    if round_bin:
        b.add(lid, "lid", cylinder(R * 1.02, lid_t, 40, axis="y").translated((0, y1 + lid_t / 2, 0)), lid_look)
    else:
        b.add(lid, "lid", box((-R * 1.02, y1, -R * 1.02), (R * 1.02, y1 + lid_t, R * 1.02)), lid_look)
    if rng.random() < 0.5:
        zf = depth / 2
        pedal = b.add_link("pedal", "revolute", (0.0, y0 + 0.04, zf - 0.03), (1, 0, 0), 0.0, math.radians(rng.uniform(15, 25)))
        b.add(pedal, "pedal", box((-R * 0.35, y0 + 0.03, zf - 0.03), (R * 0.35, y0 + 0.05, zf + 0.08)), Look((0.15, 0.15, 0.15), None, 0.5, 80))
    return b
