"""Render cost per quality preset at 512x512, the per-state overhead, and a projection.

For each preset a fresh Blender process (like a render worker) imports one articulated
object once (default: a procedural 7,696-face textured cabinet with a drawer and a
door; ``--mesh`` takes another OBJ with ``o`` groups), then alternates 12 *bare*
single-view renders (``bpy.ops.render.render()`` at the same settings and passes,
compositor off, nothing written) with one whole 12-view state rendered by the worker's
own ``render_state`` (render + compositor + PNG/EXR + npz + json, staged and renamed).
Interleaving exposes both to the same background load. Printed per preset:

    s/view        a state's wall time / 12
    bare s/view   the bare render alone (median over views)
    overhead      state wall / (12 x bare)   (target <= 1.10); min-based: fastest of each
    cpu s/view    process CPU seconds per view, and the CPU-time ratio

then an end-to-end run through ``partdrag4d.render.render_states`` (Blender start and
import included; ``--e2e``), and the projected time of the paper's scale (20,548
states x 12 views) on N cores, assuming throughput scales with cores.

Usage: python benchmarks/bench_render.py [--presets draft standard high] [--size 512]
       [--rounds 2] [--e2e draft] [--mesh PATH.obj] [--cores 2 16 64 256]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAPER_STATES = 20_548
VIEWS = 12


# ------------------------------------------------------------------ benchmark object


def _box(lo, hi, material, uv_scale=1.0):
    from partdrag4d.meshio import box_part

    return box_part(lo, hi, material, uv_per_unit=uv_scale)


def _smooth(mesh, material, matrix=None):
    from partdrag4d.meshio import MeshPart

    part = MeshPart(np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64), material,
                    None, np.asarray(mesh.vertex_normals, float))
    return part.transformed(matrix) if matrix is not None else part


def build_bench_object(folder: Path) -> tuple[Path, list[dict], list[dict]]:
    """A cabinet (body, drawer, door; ~5k faces; one wood texture). Returns mesh, links, states."""
    import trimesh
    from PIL import Image

    from partdrag4d.meshio import Material, TextureStore, write_obj

    rng = np.random.default_rng(0)
    h, w = 256, 256
    yy, xx = np.mgrid[:h, :w]
    grain = np.sin(xx / 6.0 + 3.0 * np.sin(yy / 40.0) + rng.normal(0, 0.05, (h, w)).cumsum(1) * 0.1)
    base = np.array([150, 100, 60], float)
    wood = np.clip(base[None, None] * (0.85 + 0.15 * grain[..., None]), 0, 255).astype(np.uint8)
    textures = TextureStore()
    wood_png = textures.add_image(Image.fromarray(wood))
    wood_m = Material("wood", (1.0, 1.0, 1.0), texture=wood_png, specular=0.2, roughness=0.5)
    white = Material("paint", (0.75, 0.75, 0.72), specular=0.3, roughness=0.4)
    metal = Material("metal", (0.6, 0.6, 0.62), specular=0.5, roughness=0.25, metallic=1.0)
    blue = Material("blue", (0.08, 0.2, 0.6), specular=0.3, roughness=0.4)

    def T(t, rot=None):
        m = np.eye(4)
        if rot is not None:
            m[:3, :3] = rot
        m[:3, 3] = t
        return m

    ry = trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0])[:3, :3]
    body = [
        _box((-0.35, -0.5, -0.6), (0.35, -0.47, 0.5), wood_m, 2), _box((-0.35, 0.47, -0.6), (0.35, 0.5, 0.5), wood_m, 2),
        _box((0.32, -0.47, -0.6), (0.35, 0.47, 0.5), wood_m, 2), _box((-0.37, -0.52, 0.5), (0.37, 0.52, 0.55), wood_m, 2),
        _box((-0.35, -0.47, -0.6), (0.32, 0.47, -0.57), wood_m, 2), _box((-0.35, -0.47, 0.05), (0.32, 0.47, 0.08), wood_m, 2),
    ]
    for x in (-0.3, 0.3):
        for y in (-0.45, 0.45):
            leg = trimesh.creation.cylinder(radius=0.03, height=0.12, sections=48)
            body.append(_smooth(leg, metal, T((x, y, -0.66))))
    drawer = [_box((-0.37, -0.46, 0.09), (-0.34, 0.46, 0.49), white), _box((-0.34, -0.44, 0.1), (0.3, -0.42, 0.3), white),
              _box((-0.34, 0.42, 0.1), (0.3, 0.44, 0.3), white), _box((-0.34, -0.44, 0.1), (0.3, 0.44, 0.12), white),
              _box((0.28, -0.44, 0.1), (0.3, 0.44, 0.3), white)]
    handle = trimesh.creation.cylinder(radius=0.015, height=0.4, sections=48)
    drawer.append(_smooth(handle, metal, T((-0.41, 0.0, 0.3), trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0])[:3, :3])))
    for y in (-0.2, 0.2):
        post = trimesh.creation.cylinder(radius=0.01, height=0.05, sections=24)
        drawer.append(_smooth(post, metal, T((-0.385, y, 0.3), ry)))
    door = [_box((-0.37, -0.46, -0.56), (-0.34, 0.46, 0.04), blue)]
    knob = trimesh.creation.icosphere(subdivisions=4, radius=0.035)
    door.append(_smooth(knob, metal, T((-0.41, 0.36, -0.26))))
    knob2 = trimesh.creation.icosphere(subdivisions=3, radius=0.02)
    door.append(_smooth(knob2, metal, T((-0.41, -0.36, -0.26))))
    groups = [("body", body), ("drawer", drawer), ("door", door)]
    folder.mkdir(parents=True, exist_ok=True)
    textures.write(folder / "textures")
    write_obj(folder / "rest.obj", groups, folder / "textures")
    links = [{"name": name, "part_id": k + 1} for k, (name, _) in enumerate(groups)]

    def door_open(angle):  # hinge along z at x=-0.355, y=-0.46
        rz = trimesh.transformations.rotation_matrix(angle, [0, 0, 1], point=[-0.355, -0.46, 0.0])
        return rz

    states = [{"link_poses": {}},
              {"link_poses": {"drawer": T((-0.25, 0, 0)).tolist(), "door": door_open(math.radians(35)).tolist()}},
              {"link_poses": {"drawer": T((-0.12, 0, 0)).tolist(), "door": door_open(math.radians(20)).tolist()}}]
    return folder / "rest.obj", links, states


def count_faces(obj_path: Path) -> int:
    with open(obj_path) as f:
        return sum(1 for line in f if line.startswith("f "))


def links_from_obj(obj_path: Path) -> list[dict]:
    names = []
    with open(obj_path) as f:
        for line in f:
            if line.startswith("o "):
                names.append(line[2:].strip())
    return [{"name": n, "part_id": k + 1} for k, n in enumerate(dict.fromkeys(names))]


# ------------------------------------------------------------------ timing child (a fresh process with bpy)


def _child(spec: dict) -> None:
    """Runs in a fresh interpreter, like a render worker: bare views and whole states, interleaved.

    Interleaving (12 bare views, one state, 12 bare views, one state, ...) exposes both
    measurements to the same background load, so their ratio stays meaningful on a
    shared machine.
    """
    from blender_scripts import render_worker as rw
    from partdrag4d.presets import get_preset

    out = rw._take_stdout(verbose=False)
    import bpy
    import mathutils

    rw.bpy, rw.mathutils = bpy, mathutils

    with tempfile.TemporaryDirectory() as scratch:
        renderer = rw.Renderer(spec["threads"], Path(scratch) / "scratch")
        scene = renderer.scene
        job = {"object_id": "bench", "mesh": spec["mesh"], "links": spec["links"], "cameras": spec["cameras"],
               "preset": get_preset(spec["preset"]).to_dict(), "seed": 0, "states": []}
        ctx = rw.prepare_job(renderer, job)  # preset, intrinsics, mesh import: once
        cams = ctx.cameras
        bare_wall, bare_cpu, states = [], [], []

        def bare_views(link_poses: dict) -> None:
            renderer.pose(link_poses, ctx.known_links)
            scene.render.use_compositing = False
            for cam in cams:
                renderer.camera.matrix_world = mathutils.Matrix(cam.c2w_blender.tolist())
                t, c = time.perf_counter(), time.process_time()
                bpy.ops.render.render()  # same settings and passes; no compositor, nothing written
                bare_wall.append(time.perf_counter() - t)
                bare_cpu.append(time.process_time() - c)
            scene.render.use_compositing = True

        renderer.camera.matrix_world = mathutils.Matrix(cams[0].c2w_blender.tolist())
        bpy.ops.render.render()  # warm-up: kernels, BVH, denoiser
        for r in range(spec["rounds"]):
            poses = spec["poses"][r % len(spec["poses"])]
            bare_views(poses)
            out_dir = Path(scratch) / f"s{r}" / "render"
            _, info = rw.render_state(renderer, ctx, {"state_id": f"s{r}", "out_dir": str(out_dir), "link_poses": poses})
            states.append({"wall": info["state_seconds"], "cpu": info["state_cpu_seconds"]})
    out.write(json.dumps({"bare_wall": bare_wall, "bare_cpu": bare_cpu, "states": states}) + "\n")
    out.flush()


def time_preset(preset: str, mesh: Path, links: list[dict], cameras: list[dict], poses: list[dict], threads: int,
                rounds: int) -> dict:
    spec = {"preset": preset, "mesh": str(mesh), "links": links, "cameras": cameras, "poses": poses,
            "threads": threads, "rounds": rounds}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"timing child failed ({proc.returncode}): {proc.stderr[-800:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["draft", "standard", "high"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="(12 bare views + 1 state) rounds per preset")
    parser.add_argument("--e2e", nargs="*", default=["draft"],
                        help="presets also timed end to end through render_states (Blender start + import + 3 states)")
    parser.add_argument("--mesh", type=Path, default=None, help="an OBJ with one `o` group per link (default: built-in cabinet)")
    parser.add_argument("--cores", type=int, nargs="+", default=[2, 16, 64, 256])
    parser.add_argument("--out", type=Path, default=None, help="keep the object and end-to-end renders here")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(json.loads(args._child))
        return

    from partdrag4d.cameras import ring_cameras
    from partdrag4d.executor import available_cores
    from partdrag4d.presets import get_preset
    from partdrag4d.render import render_states

    work = Path(tempfile.mkdtemp(prefix="bench-render-")) if args.out is None else args.out
    if args.mesh:
        mesh, links = args.mesh.resolve(), links_from_obj(args.mesh)
        poses = [{"link_poses": {}}]
    else:
        mesh, links, poses = build_bench_object(work / "object")
    poses = [p["link_poses"] for p in poses]
    threads = available_cores()
    cameras = [c.to_dict() for c in ring_cameras(args.size)]
    print(f"object: {mesh} ({count_faces(mesh)} faces, {len(links)} links); {args.size}x{args.size}, {VIEWS} views; "
          f"1 worker x {threads} threads; load average {os.getloadavg()[0]:.2f}")
    print(f"{'preset':9s} {'s/view':>7s} {'bare s/view':>11s} {'overhead':>8s} {'min-based':>9s} "
          f"{'cpu s/view':>10s} {'bare cpu':>8s} {'cpu ratio':>9s}")
    rows = {}
    for preset in args.presets:
        t = time_preset(preset, mesh, links, cameras, poses, threads, args.rounds)
        state_wall = statistics.median(s["wall"] for s in t["states"])
        state_cpu = statistics.median(s["cpu"] for s in t["states"])
        bare_wall, bare_cpu = statistics.median(t["bare_wall"]), statistics.median(t["bare_cpu"])
        min_ratio = min(s["wall"] for s in t["states"]) / (VIEWS * min(t["bare_wall"]))
        rows[preset] = state_wall / VIEWS
        print(f"{preset:9s} {state_wall / VIEWS:7.3f} {bare_wall:11.3f} {state_wall / (VIEWS * bare_wall):8.3f} "
              f"{min_ratio:9.3f} {state_cpu / VIEWS:10.3f} {bare_cpu:8.3f} {state_cpu / (VIEWS * bare_cpu):9.3f}", flush=True)
    print("overhead = state wall / (12 x median bare view); min-based uses the fastest state and view; cpu ratio uses "
          f"process CPU time. Load average now {os.getloadavg()[0]:.2f}: other jobs on the machine inflate wall times.")

    for preset in args.e2e or []:
        states = [{"state_id": f"{preset}_{i}", "out_dir": str(work / "e2e" / preset / f"state_{i}" / "render"),
                   "link_poses": poses[i % len(poses)]} for i in range(3)]
        for s in states:
            shutil.rmtree(s["out_dir"], ignore_errors=True)
        job = {"object_id": "bench", "mesh": str(mesh), "links": links, "cameras": cameras,
               "preset": get_preset(preset).to_dict(), "seed": 0, "states": states}
        t0 = time.perf_counter()
        results = render_states([job], workers=1, progress=False)
        wall = time.perf_counter() - t0
        bad = [r for r in results if r.status != "rendered"]
        if bad:
            raise SystemExit(f"{preset}: {bad[0].status} {bad[0].error}")
        print(f"end to end ({preset}, render_states, 1 worker): {wall:.1f} s for 3 states = {wall / 3:.2f} s/state "
              f"incl. Blender start and mesh import")

    print(f"\nprojection: {PAPER_STATES:,} states x {VIEWS} views = {PAPER_STATES * VIEWS:,} views at the s/view above, "
          f"throughput scaled linearly from {threads} cores (workers of {threads} threads)")
    print(f"{'preset':9s} " + " ".join(f"{str(n) + ' cores':>14s}" for n in args.cores))
    for preset, per_view in rows.items():
        core_seconds = PAPER_STATES * VIEWS * per_view * threads
        print(f"{preset:9s} " + " ".join(f"{_human(core_seconds / n):>14s}" for n in args.cores))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


def _human(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


if __name__ == "__main__":
    main()
