"""Records for an articulated object: links, joints with limits, per-link meshes, kinematics.

A stage that needs an object takes an ``ArticulatedObject``; how it was read
(PartNet-Mobility folder, real or synthetic) does not matter past this point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partdrag4d.errors import ToolkitError
from partdrag4d.meshio import MeshPart, TextureStore
from partdrag4d.rigid import rotation_matrix

CONTINUOUS_RANGE = (0.0, 5.0 * math.pi / 3.0)
"""Range given to continuous joints: five sixths of a turn, so the 6 stages are 60 deg
apart and cover the whole turn without stage 5 repeating stage 0."""

MOVABLE_KINDS = ("revolute", "prismatic", "continuous")


class AssetError(ToolkitError, ValueError):
    """A malformed object; the message names the object and the reason in one line."""

    def __init__(self, object_id: str, reason: str):
        super().__init__(f"{object_id}: {reason}")
        self.object_id = object_id
        self.reason = reason


@dataclass(frozen=True)
class Joint:
    """One URDF joint. ``origin`` maps the joint frame into the parent link frame;
    ``axis`` is a unit vector in the joint frame; ``lower <= upper`` always (flipped
    URDF limits are swapped and noted)."""

    name: str
    kind: str  # revolute | prismatic | continuous | fixed
    parent: str
    child: str
    origin: np.ndarray  # [4, 4]
    axis: np.ndarray  # [3]
    lower: float = 0.0
    upper: float = 0.0
    note: str = ""
    mimic: tuple[str, float, float] | None = None  # (leader joint, multiplier, offset): value = multiplier * leader + offset

    @property
    def movable(self) -> bool:
        """Swept and drawn on its own: a mimic joint only follows its leader."""
        return self.kind in MOVABLE_KINDS and self.upper > self.lower and self.mimic is None

    @property
    def is_rotation(self) -> bool:
        return self.kind in ("revolute", "continuous")

    def motion(self, q: float) -> np.ndarray:
        """Transform of the child (joint frame) for joint value ``q`` (radians or metres)."""
        m = np.eye(4)
        if self.kind == "prismatic":
            m[:3, 3] = self.axis * q
        elif self.is_rotation:
            m[:3, :3] = rotation_matrix(self.axis, q)
        return m

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.kind,
            "parent": self.parent,
            "child": self.child,
            "origin": self.origin.tolist(),
            "axis": self.axis.tolist(),
            "lower": self.lower,
            "upper": self.upper,
            "note": self.note,
            "mimic": None if self.mimic is None else {"joint": self.mimic[0], "multiplier": self.mimic[1], "offset": self.mimic[2]},
        }


@dataclass
class ArticulatedObject:
    """An object as a kinematic tree with geometry per link (in each link's own frame).

    ``links`` fixes the part ids: link ``links[k]`` has part id ``k + 1``.
    """

    object_id: str
    category: str
    model_cat: str
    source_dir: Path
    links: list[str]
    root: str
    joints: list[Joint]  # parents before children
    geometry: dict[str, list[MeshPart]]
    semantics: dict[str, str] = field(default_factory=dict)
    textures: TextureStore = field(default_factory=TextureStore)
    notes: list[str] = field(default_factory=list)
    missing_visuals: list[tuple[str, str]] = field(default_factory=list)  # (link, file) skipped: the file does not exist
    source_names: dict[str, dict[str, str]] = field(default_factory=dict)  # "links"/"joints": {token: name in the URDF}

    def source_name(self, kind: str, token: str) -> str:
        """The name a link or joint has in the input (``kind``: links | joints)."""
        return self.source_names.get(kind, {}).get(token, token)

    def part_id(self, link: str) -> int:
        return self.links.index(link) + 1

    def joint(self, name: str) -> Joint:
        for j in self.joints:
            if j.name == name:
                return j
        raise KeyError(f"{self.object_id}: no joint {name!r}")

    @property
    def movable_joints(self) -> list[Joint]:
        return [j for j in self.joints if j.movable]

    def zero_qpos(self) -> dict[str, float]:
        return self.follow({j.name: 0.0 for j in self.joints if j.kind != "fixed"})

    def follow(self, qpos: dict[str, float]) -> dict[str, float]:
        """``qpos`` with every mimic joint set from its leader (multiplier x leader + offset)."""
        out = dict(qpos)
        for j in self.joints:
            if j.mimic is not None:
                leader, multiplier, offset = j.mimic
                out[j.name] = multiplier * float(out.get(leader, 0.0)) + offset
        return out

    def forward_kinematics(self, qpos: dict[str, float]) -> dict[str, np.ndarray]:
        """World-from-link transforms (the URDF root frame is the world); mimic joints follow their leaders."""
        qpos = self.follow(qpos)
        poses = {self.root: np.eye(4)}
        for j in self.joints:
            q = float(qpos.get(j.name, 0.0))
            poses[j.child] = poses[j.parent] @ j.origin @ j.motion(q)
        for link in self.links:
            poses.setdefault(link, np.eye(4))
        return poses

    def subtree(self, joint: Joint) -> list[str]:
        """Links moved by ``joint``: its child and every descendant, and those of the joints
        that mimic it."""
        moved = [joint.child] + [j.child for j in self.joints if j.mimic is not None and j.mimic[0] == joint.name]
        for j in self.joints:
            if j.parent in moved and j.child not in moved:
                moved.append(j.child)
        return moved

    def world_meshes(self, qpos: dict[str, float]) -> dict[str, list[MeshPart]]:
        poses = self.forward_kinematics(qpos)
        return {link: [p.transformed(poses[link]) for p in parts] for link, parts in self.geometry.items()}
