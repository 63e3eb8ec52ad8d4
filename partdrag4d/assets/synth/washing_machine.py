"""Washing machine: a box with a drum behind a round porthole door (side-hinged), a
control strip, and sometimes a detergent drawer (prismatic) and a program knob."""

import math

import numpy as np

from partdrag4d.assets.synth.builder import ObjectBuilder
from partdrag4d.assets.synth.primitives import APPLIANCE_COLORS, ACCENT_COLORS, Look, box, cylinder, random_color, ring, shell


def build(rng: np.random.Generator) -> ObjectBuilder:
    b = ObjectBuilder("washing-machine", "WashingMachine", rng)
    W, H, D = rng.uniform(0.55, 0.65), rng.uniform(0.8, 0.9), rng.uniform(0.55, 0.65)
    t = 0.02
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    look = Look(random_color(rng, APPLIANCE_COLORS), "metal", 0.4, 90)
    strip = 0.13
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1, z1), t, "front"), look)
    r_door = min(W, H - strip) * rng.uniform(0.32, 0.38)
    cx, cy = 0.0, y0 + (H - strip) / 2
    s = r_door * 0.7
    front = [box((x0 + t, y0 + t, z1 - t), (x1 - t, cy - s, z1)), box((x0 + t, cy + s, z1 - t), (x1 - t, y1 - strip, z1)),
             box((x0 + t, cy - s, z1 - t), (cx - s, cy + s, z1)), box((cx + s, cy - s, z1 - t), (x1 - t, cy + s, z1))]
    b.add(b.body, "front_panel", front, look)
    b.add(b.body, "control_strip", box((x0 + t, y1 - strip, z1 - t), (x1 - t, y1 - t, z1)), Look(random_color(rng, APPLIANCE_COLORS), "panel", 0.3, 60))
    drum_look = Look((0.75, 0.77, 0.8), None, 0.6, 120)
    b.add(b.body, "drum", [ring(s * 1.05, s * 1.0, D * 0.6).translated((cx, cy, z1 - t - D * 0.3)),
                           cylinder(s * 1.05, 0.01, 32, axis="z").translated((cx, cy, z1 - t - D * 0.6))], drum_look)

    hinge_left = bool(rng.random() < 0.75)
    pivot = cx - r_door if hinge_left else cx + r_door
    door = b.add_link("door", "revolute", (pivot, cy, z1), (0, -1, 0) if hinge_left else (0, 1, 0), 0.0, rng.uniform(math.radians(95), math.radians(130)))
    b.add(door, "door_ring", ring(r_door, r_door * 0.75, 0.04).translated((cx, cy, z1 + 0.02)), Look(random_color(rng, ACCENT_COLORS), None, 0.6, 150))
    b.add(door, "glass", cylinder(r_door * 0.76, 0.02, 32, axis="z").translated((cx, cy, z1 + 0.02)), Look((0.3, 0.32, 0.35), "glass", 0.8, 200))

    if rng.random() < 0.6:
        dx1 = x0 + W * 0.35
        drawer = b.add_link("drawer", "prismatic", (0.0, 0.0, 0.0), (0, 0, 1), 0.0, D * 0.35)
        b.add(drawer, "drawer_front", box((x0 + t + 0.01, y1 - strip + 0.02, z1 - 0.01), (dx1, y1 - t - 0.01, z1 + 0.01)), look)
        b.add(drawer, "drawer_box", box((x0 + t + 0.02, y1 - strip + 0.03, z1 - D * 0.4), (dx1 - 0.01, y1 - t - 0.02, z1 - 0.01)), look)
    if rng.random() < 0.5:
        kx, ky = x1 - W * 0.2, y1 - strip / 2
        knob = b.add_link("knob", "continuous", (kx, ky, z1), (0, 0, 1))
        b.add(knob, "knob", [cylinder(0.035, 0.03, 24, axis="z").translated((kx, ky, z1 + 0.015)), box((kx - 0.005, ky, z1 + 0.03), (kx + 0.005, ky + 0.03, z1 + 0.034))], Look(random_color(rng, ACCENT_COLORS), "label", 0.4, 80))
    return b
