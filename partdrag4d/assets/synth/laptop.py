"""Laptop: a base with a keyboard and a lid with a screen, hinged at the back edge."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, Look, box, random_color


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("laptop", "Laptop", rng)
    W, D = rng.uniform(0.3, 0.4), rng.uniform(0.2, 0.27)
    base_t, lid_t = rng.uniform(0.015, 0.025), rng.uniform(0.007, 0.012)
    x0, x1, z0, z1 = -W / 2, W / 2, -D / 2, D / 2
    y0 = -base_t
    shell_look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.4, 90)
    b.add(b.body, "base", box((x0, y0, z0), (x1, 0.0, z1)), shell_look)
    b.add(b.body, "keyboard", box((x0 + 0.01, 0.0, z0 + 0.01), (x1 - 0.01, 0.0015, z1 - 0.01)), Look(shell_look.color, "keyboard", 0.2, 40))
    lid = b.add_link("screen", "revolute", (0.0, 0.0015, z0), (-1, 0, 0), 0.0, rng.uniform(math.radians(100), math.radians(125)))
    b.add(lid, "lid", box((x0, 0.003, z0), (x1, 0.003 + lid_t, z1)), shell_look)
    b.add(lid, "display", box((x0 + 0.01, 0.0015, z0 + 0.008), (x1 - 0.01, 0.003, z1 - 0.008)), Look((0.05, 0.05, 0.06), "screen", 0.7, 200))
    return b
