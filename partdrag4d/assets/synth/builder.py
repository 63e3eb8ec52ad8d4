"""Assemble a procedural object and write it in the PartNet-Mobility folder format.

Like the real dataset: meshes are authored in object coordinates (Y up, front +Z);
each link's frame sits on its joint axis and its visuals carry the opposite offset;
the body is fixed to ``base`` by a joint whose rpy turns the world Z up with the front
at -X; each part is its own ``textured_objs/original-K.obj`` whose MTL reads its
texture from ``../images/``. So the loader cannot tell a synthetic object from a real one.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partdrag4d import __version__
from partdrag4d.assets.synth.primitives import Look, Prim, merge, texture_image
from partdrag4d.store import StagingDir, atomic_write_bytes, atomic_write_json, atomic_write_text

ROOT_RPY = (math.pi / 2, 0.0, -math.pi / 2)
JOINT_WORDS = {"revolute": "hinge", "continuous": "hinge", "prismatic": "slider", "fixed": "heavy"}


@dataclass
class SynthPart:
    name: str
    prim: Prim
    look: Look


@dataclass(eq=False)
class SynthLink:
    semantic: str
    kind: str  # fixed (body) | revolute | continuous | prismatic
    parent: "SynthLink | None" = None
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # axis point, object coords
    axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    lower: float = 0.0
    upper: float = 0.0
    parts: list[SynthPart] = field(default_factory=list)
    name: str = ""


class ObjectBuilder:
    """Collects links, joints and textured parts of one procedural object."""

    def __init__(self, category: str, model_cat: str, rng: np.random.Generator):
        self.category = category
        self.model_cat = model_cat
        self.rng = rng
        self.body = SynthLink("furniture_body" if category == "storage-furniture" else f"{category}_body", "fixed")
        self.links: list[SynthLink] = []

    def add_link(self, semantic: str, kind: str, origin, axis, lower: float = 0.0, upper: float = 0.0, parent: SynthLink | None = None) -> SynthLink:
        link = SynthLink(semantic, kind, parent or self.body, np.asarray(origin, dtype=np.float64), np.asarray(axis, dtype=np.float64), float(lower), float(upper))
        self.links.append(link)
        return link

    def add(self, link: SynthLink, name: str, prims: Prim | list[Prim], look: Look) -> None:
        prim = merge(prims) if isinstance(prims, list) else prims
        link.parts.append(SynthPart(name, prim, look))

    # ------------------------------------------------------------- writing

    def _ordered(self) -> list[SynthLink]:
        ordered = self.links + [self.body]
        for k, link in enumerate(ordered):
            link.name = f"link_{k}"
        return ordered

    def write(self, folder: Path, object_id: str, seed: int, meta: dict | None = None) -> Path:
        """Write the object folder atomically (a killed run leaves no complete-looking folder).
        ``meta``: extra ``meta.json`` fields (``generate`` records the index and split)."""
        links = self._ordered()
        with StagingDir(Path(folder)) as tmp:
            (tmp / "textured_objs").mkdir()
            (tmp / "images").mkdir()
            textures = self._write_textures(tmp)
            visuals = self._write_meshes(tmp, links, textures)
            atomic_write_text(tmp / "mobility.urdf", self._urdf(object_id, links, visuals))
            atomic_write_json(tmp / "mobility_v2.json", self._mobility_v2(links))
            atomic_write_text(tmp / "semantics.txt", "".join(f"{l.name} {JOINT_WORDS[l.kind]} {l.semantic}\n" for l in links))
            atomic_write_json(
                tmp / "meta.json",
                {"model_cat": self.model_cat, "anno_id": object_id, "source": "partdrag4d synth", "seed": seed, **(meta or {}),
                 "version": __version__},
            )
            self._write_point_sample(tmp, links)
        return Path(folder)

    def _write_textures(self, tmp: Path) -> dict[tuple, str]:
        names: dict[tuple, str] = {}
        for link in self.links + [self.body]:
            for part in link.parts:
                look = part.look
                if look.texture is None:
                    continue
                key = (look.texture, look.color)
                if key not in names:
                    img = texture_image(look.texture, self.rng, look.color)
                    buffer = io.BytesIO()
                    img.save(buffer, format="PNG")
                    names[key] = f"texture_{len(names)}.png"
                    atomic_write_bytes(tmp / "images" / names[key], buffer.getvalue())
        return names

    def _write_meshes(self, tmp: Path, links: list[SynthLink], textures: dict[tuple, str]) -> dict[str, list[tuple[str, str]]]:
        visuals: dict[str, list[tuple[str, str]]] = {}
        counter = 1
        for link in links:
            for part in link.parts:
                name = f"original-{counter}"
                look = part.look
                texture = textures.get((look.texture, look.color)) if look.texture else None
                kd = (1.0, 1.0, 1.0) if texture else look.color
                mtl = f"newmtl material_0\nKd {kd[0]:.4f} {kd[1]:.4f} {kd[2]:.4f}\nKs {look.specular:.3f} {look.specular:.3f} {look.specular:.3f}\nNs {look.shininess:.1f}\nd 1\nillum 2\n"
                if texture:
                    mtl += f"map_Kd ../images/{texture}\n"
                p = part.prim
                lines = [f"# partdrag4d synth {part.name}\nmtllib {name}.mtl\no {part.name}\n"]
                lines.append("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in p.vertices))
                lines.append("".join(f"vt {u:.5f} {v:.5f}\n" for u, v in p.uv))
                lines.append("usemtl material_0\n")
                lines.append("".join(f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}\n" for a, b, c in p.faces))
                atomic_write_text(tmp / "textured_objs" / f"{name}.mtl", mtl)
                atomic_write_text(tmp / "textured_objs" / f"{name}.obj", "".join(lines))
                visuals.setdefault(link.name, []).append((f"{part.name}-{counter}", f"textured_objs/{name}.obj"))
                counter += 1
        return visuals

    @staticmethod
    def _xyz(v) -> str:
        return " ".join(f"{float(x):.10g}" for x in v)

    def _urdf(self, object_id: str, links: list[SynthLink], visuals: dict[str, list[tuple[str, str]]]) -> str:
        out = ['<?xml version="1.0" ?>\n', f'<robot name="partnet_{object_id}">\n', '\t<link name="base"/>\n']
        for link in links:
            out.append(f'\t<link name="{link.name}">\n')
            offset = self._xyz(-link.origin)
            for vname, path in visuals.get(link.name, []):
                for tag in ("visual", "collision"):
                    label = f' name="{vname}"' if tag == "visual" else ""
                    out.append(f'\t\t<{tag}{label}>\n\t\t\t<origin xyz="{offset}"/>\n\t\t\t<geometry>\n\t\t\t\t<mesh filename="{path}"/>\n\t\t\t</geometry>\n\t\t</{tag}>\n')
            out.append("\t</link>\n")
            if link.kind == "fixed":
                rpy = self._xyz(ROOT_RPY)
                out.append(f'\t<joint name="joint_{links.index(link)}" type="fixed">\n\t\t<origin rpy="{rpy}" xyz="0 0 0"/>\n\t\t<child link="{link.name}"/>\n\t\t<parent link="base"/>\n\t</joint>\n')
                continue
            rel = link.origin - link.parent.origin
            out.append(f'\t<joint name="joint_{links.index(link)}" type="{link.kind}">\n\t\t<origin xyz="{self._xyz(rel)}"/>\n\t\t<axis xyz="{self._xyz(link.axis)}"/>\n')
            out.append(f'\t\t<child link="{link.name}"/>\n\t\t<parent link="{link.parent.name}"/>\n')
            if link.kind != "continuous":
                out.append(f'\t\t<limit lower="{link.lower:.10g}" upper="{link.upper:.10g}"/>\n')
            out.append("\t</joint>\n")
        out.append("</robot>\n")
        return "".join(out)

    def _mobility_v2(self, links: list[SynthLink]) -> list[dict]:
        entries, part_id = [], 0
        for k, link in enumerate(links):
            parts = []
            for part in link.parts:
                parts.append({"id": part_id, "name": part.name, "children": []})
                part_id += 1
            entry = {"id": k, "parent": links.index(link.parent) if link.parent is not None else -1, "joint": JOINT_WORDS[link.kind] if link.kind != "fixed" else "heavy", "name": link.semantic, "parts": parts}
            if link.kind == "fixed":
                entry["jointData"] = {}
            else:
                scale = 180.0 / math.pi if link.kind in ("revolute", "continuous") else 1.0
                entry["jointData"] = {
                    "axis": {"origin": link.origin.tolist(), "direction": link.axis.tolist()},
                    "limit": {"a": link.lower * scale, "b": link.upper * scale, "noLimit": link.kind == "continuous"},
                }
            entries.append(entry)
        return entries

    def _write_point_sample(self, tmp: Path, links: list[SynthLink]) -> None:
        tris, labels = [], []
        for k, link in enumerate(links):
            for part in link.parts:
                tris.append(part.prim.vertices[part.prim.faces])
                labels.append(np.full(len(part.prim.faces), k))
        tri = np.concatenate(tris)
        lab = np.concatenate(labels)
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
        face = self.rng.choice(len(tri), 10000, p=area / area.sum())
        r1, r2 = self.rng.random(10000), self.rng.random(10000)
        s = np.sqrt(r1)
        pts = tri[face, 0] * (1 - s)[:, None] + tri[face, 1] * (s * (1 - r2))[:, None] + tri[face, 2] * (s * r2)[:, None]
        (tmp / "point_sample").mkdir()
        atomic_write_text(tmp / "point_sample" / "pts-10000.txt", "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in pts))
        atomic_write_text(tmp / "point_sample" / "label-10000.txt", "".join(f"{int(v)}\n" for v in lab[face]))
