"""A tiny PartDrag-4D-like pair built without Blender: a procedural object -> splatter images.

The object is ``partdrag4d synth``'s (same generator and seed, so the same geometry that
``partdrag4d synth --category C --seed S`` writes), posed at rest and with its largest
movable part opened, turned into our object frame (Z up, front -X) and scaled into the
camera ring. Its surface is sampled (area-weighted, the same material points in both
states) and each state becomes an LGM-style splatter image: for each of the 4 input
views (ring views 0/3/6/9) at the splatter resolution, every pixel holds one Gaussian —
the nearest surface sample that projects into it (a z-buffer over the samples), oriented
flat along the surface, about one splatter pixel wide, coloured by its part's colour with
fixed Lambert shading; pixels that see no surface hold a transparent Gaussian on the pixel
ray. That is what a perfect LGM would predict, in the layout of ``partrm.gaussians.layout``.

The rest state's splatter is rendered (our CPU rasterizer) into the 4 input views, the
opened state's into all 12 ring views (the stage-2 targets); drags are moving-part samples
seen in the first input view, projected before and after the motion. numpy + the CPU
rasterizer only: no Blender, deterministic for a seed.

    python benchmarks/splatter_scene.py --out scene.npz [--splat 128 --input 256 --render 256]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from partdrag4d import cameras  # noqa: E402

INPUT_VIEWS = (0, 3, 6, 9)
SUPERVISED_VIEWS = (1, 2, 4, 5, 7, 8, 10, 11)
ROOT_RPY = (math.pi / 2, 0.0, -math.pi / 2)  # PartNet-Mobility (Y up, front +Z) -> Z up, front -X
LIGHT = np.array([-0.6, -0.35, 0.72])
OPACITY = 0.95


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _moves_with(link, driven) -> bool:
    while link is not None:
        if link is driven:
            return True
        link = link.parent
    return False


def build_object(category: str = "microwave", index: int = 0, seed: int = 0, samples: int = 100_000, opening: float = 0.6):
    """Surface samples of a procedural object at rest and with its largest movable part moved.

    Returns dict(rest, moved [n, 3] points, normals_rest, normals_moved [n, 3], color [n, 3],
    moving [n] bool, meta)."""
    from partdrag4d.assets.synth import GENERATORS
    from partdrag4d.categories import category_names

    if category not in GENERATORS:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(GENERATORS)}")
    builder = GENERATORS[category](np.random.default_rng([seed, category_names().index(category), index]))
    links = builder.links + [builder.body]
    tris, colors, owner = [], [], []
    for k, link in enumerate(links):
        for part in link.parts:
            tri = part.prim.vertices[part.prim.faces]
            tris.append(tri)
            colors.append(np.broadcast_to(np.asarray(part.look.color, np.float64), (len(tri), 3)))
            owner.append(np.full(len(tri), k))
    tri, color, owner = np.concatenate(tris), np.concatenate(colors), np.concatenate(owner)
    movable = [k for k, link in enumerate(links) if link.kind in ("revolute", "prismatic")]
    if not movable:
        raise ValueError(f"{category} object {index} has no revolute or prismatic part")
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1) / 2
    driven = max(movable, key=lambda k: area[owner == k].sum())
    link = links[driven]

    rng = np.random.default_rng([seed, 1729])
    face = rng.choice(len(tri), samples, p=area / area.sum())
    r1, r2 = rng.random(samples), rng.random(samples)
    s = np.sqrt(r1)
    t = tri[face]
    rest = t[:, 0] * (1 - s)[:, None] + t[:, 1] * (s * (1 - r2))[:, None] + t[:, 2] * (s * r2)[:, None]
    normals = cross[face] / np.maximum(np.linalg.norm(cross[face], axis=1, keepdims=True), 1e-12)
    moving = np.array([_moves_with(links[k], link) for k in range(len(links))])[owner[face]]

    amount = link.lower + opening * (link.upper - link.lower)
    moved, moved_normals = rest.copy(), normals.copy()
    if link.kind == "revolute":
        R = _axis_angle(link.axis, amount - link.lower)
        moved[moving] = (rest[moving] - link.origin) @ R.T + link.origin
        moved_normals[moving] = normals[moving] @ R.T
    else:
        direction = link.axis / np.linalg.norm(link.axis)
        moved[moving] = rest[moving] + (amount - link.lower) * direction

    root = _rpy_matrix(*ROOT_RPY)
    rest, moved = rest @ root.T, moved @ root.T
    normals, moved_normals = normals @ root.T, moved_normals @ root.T
    both = np.concatenate([rest, moved])
    centre = (both.min(0) + both.max(0)) / 2
    scale = 0.7 / np.abs(both - centre).max()
    rest, moved = (rest - centre) * scale, (moved - centre) * scale
    meta = dict(category=category, index=index, seed=seed, samples=samples, triangles=int(len(tri)), moving_link=link.semantic,
                joint=link.kind, amount=float(amount - link.lower), moving_samples=int(moving.sum()))
    return dict(rest=rest, moved=moved, normals_rest=normals, normals_moved=moved_normals, color=color[face],
                moving=moving, meta=meta)


def _quat_from_z(n: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) turning +Z onto the unit vectors ``n``."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, n)
    w = 1.0 + n[:, 2]
    q = np.concatenate([w[:, None], axis], axis=1)
    flip = w < 1e-8  # n = -Z: a half turn about X
    q[flip] = [0.0, 1.0, 0.0, 0.0]
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def splatter_image(points, normals, color, moving, cams: list[cameras.Camera]):
    """Per view and pixel the nearest sample -> splatter [V, 14, S, S] float32, moving-part
    map [V, S, S] bool, winning sample index [V, S, S] (-1: nothing seen)."""
    V, S = len(cams), cams[0].height
    out = np.zeros((V, S, S, 14))
    part = np.zeros((V, S, S), bool)
    winner = np.full((V, S, S), -1, np.int64)
    for v, cam in enumerate(cams):
        uv, z = cam.project(points)
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        ok = (z > 0.05) & (col >= 0) & (col < S) & (row >= 0) & (row < S)
        idx = np.flatnonzero(ok)
        pix = row[idx] * S + col[idx]
        order = np.lexsort((z[idx], pix))
        pix, idx = pix[order], idx[order]
        first = np.r_[True, pix[1:] != pix[:-1]]
        flat = winner[v].reshape(-1)
        flat[pix[first]] = idx[first]

        # every pixel: a transparent Gaussian on its ray at the ring distance
        rows, cols = np.meshgrid(np.arange(S) + 0.5, np.arange(S) + 0.5, indexing="ij")
        rays = np.stack([(cols - cam.K[0, 2]) / cam.K[0, 0], (rows - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(rows)], -1)
        world = rays.reshape(-1, 3) * cameras.CAMERA_DISTANCE @ cam.c2w[:3, :3].T + cam.c2w[:3, 3]
        g = out[v].reshape(-1, 14)
        g[:, 0:3] = world
        g[:, 3] = 0.0
        g[:, 4:7] = 0.75 * cameras.CAMERA_DISTANCE / cam.K[0, 0]
        g[:, 7] = 1.0
        g[:, 11:14] = 1.0
        hit = np.flatnonzero(flat >= 0)
        w = flat[hit]
        depth = z[w]
        n = normals[w]
        n = np.where(((cam.center - points[w]) * n).sum(1, keepdims=True) < 0, -n, n)
        size = 0.75 * depth / cam.K[0, 0]
        shade = 0.45 + 0.55 * np.abs(n @ (LIGHT / np.linalg.norm(LIGHT)))
        g[hit, 0:3] = points[w]
        g[hit, 3] = OPACITY
        g[hit, 4:7] = np.stack([size, size, 0.15 * size], 1)
        g[hit, 7:11] = _quat_from_z(n)
        g[hit, 11:14] = np.clip(color[w] * shade[:, None], 0.0, 1.0)
        part[v].reshape(-1)[hit] = moving[w]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)).astype(np.float32), part, winner


def _render(splat: np.ndarray, cams: list[cameras.Camera], background):
    """Splatter [V, 14, S, S] -> (rgb [C, 3, H, W], alpha [C, 1, H, W]) with the CPU rasterizer."""
    import torch

    from partrm.gaussians import RasterConfig, gaussians_from_lgm, render_gaussians

    g = gaussians_from_lgm(torch.from_numpy(splat).permute(0, 2, 3, 1).reshape(-1, 14))
    viewmats = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32)
    Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
    with torch.no_grad():
        out = render_gaussians(*g, viewmats, Ks, cams[0].width, cams[0].height, background=background,
                               config=RasterConfig(backend="torch"))
    return out.rgb.permute(0, 3, 1, 2).numpy(), out.alpha.permute(0, 3, 1, 2).numpy()


def _camera_arrays(cams: list[cameras.Camera]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([c.K for c in cams]).astype(np.float32), np.stack([c.c2w for c in cams]).astype(np.float32)


def build_scene(splat_size: int = 128, input_size: int = 256, render_size: int = 256, category: str = "microwave",
                seed: int = 0, num_drags: int = 10, samples: int | None = None) -> dict:
    """Everything a PartRM training item and an inference call need, as numpy arrays."""
    if input_size % splat_size:
        raise ValueError(f"input size {input_size} must be a multiple of the splatter size {splat_size}")
    obj = build_object(category, 0, seed, samples or 8 * splat_size * splat_size)
    ring = cameras.ring_cameras(cameras.IMAGE_SIZE)
    splat_cams = [ring[v].resized(splat_size, splat_size) for v in INPUT_VIEWS]
    rest, part, winner = splatter_image(obj["rest"], obj["normals_rest"], obj["color"], obj["moving"], splat_cams)
    moved, _, _ = splatter_image(obj["moved"], obj["normals_moved"], obj["color"], obj["moving"], splat_cams)

    in_cams = [ring[v].resized(input_size, input_size) for v in INPUT_VIEWS]
    input_rgb, input_alpha = _render(rest, in_cams, 1.0)
    target_cams = [c.resized(render_size, render_size) for c in ring]
    premult, target_alpha = _render(moved, target_cams, None)
    target_rgb = np.where(target_alpha > 1e-6, premult / np.maximum(target_alpha, 1e-6), 0.0).clip(0, 1)

    factor = input_size // splat_size
    mask = np.repeat(np.repeat(part[0], factor, 0), factor, 1)
    seen = winner[0][part[0]]
    if len(seen) < num_drags:
        raise ValueError(f"the moving part covers only {len(seen)} pixels of the first view")
    pick = np.random.default_rng([seed, 7]).choice(seen, num_drags, replace=False)
    a, _ = in_cams[0].project(obj["rest"][pick])
    b, _ = in_cams[0].project(obj["moved"][pick])
    drags = np.concatenate([a, b], 1) / input_size

    first = np.concatenate([input_rgb[0], input_alpha[0]], 0).transpose(1, 2, 0)
    first_rgba = (first.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    in_K, in_c2w = _camera_arrays(in_cams)
    t_K, t_c2w = _camera_arrays(target_cams)
    meta = {**obj["meta"], "splat_size": splat_size, "input_size": input_size, "render_size": render_size,
            "gaussians": int(rest.shape[0] * splat_size**2), "covered_rest": float((rest[:, 3] > 0).mean()),
            "moving_pixels_view0": int(part[0].sum())}
    return dict(splat_rest=rest, splat_moved=moved, input_rgb=input_rgb.astype(np.float32), input_alpha=input_alpha.astype(np.float32),
                input_K=in_K, input_c2w=in_c2w, target_rgb=target_rgb.astype(np.float32), target_alpha=target_alpha.astype(np.float32),
                target_K=t_K, target_c2w=t_c2w, drags=drags.astype(np.float32), mask=mask, first_rgba=first_rgba,
                supervised_views=np.array(SUPERVISED_VIEWS), meta=np.array(json.dumps(meta)))


def save_scene(scene: dict, path: Path) -> Path:
    """One uncompressed .npz, written under a temporary name and renamed."""
    from partdrag4d.store import atomic_save_npz

    atomic_save_npz(Path(path), compressed=False, **scene)
    return Path(path)


def load_scene(path: Path) -> dict:
    with np.load(path) as f:
        scene = {k: f[k] for k in f.files}
    scene["meta"] = json.loads(str(scene["meta"]))
    return scene


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--splat", type=int, default=128, help="splatter image size (LGM big: 128)")
    parser.add_argument("--input", type=int, default=256, help="input view size (LGM big: 256)")
    parser.add_argument("--render", type=int, default=256, help="target view size")
    parser.add_argument("--category", default="microwave")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scene = build_scene(args.splat, args.input, args.render, args.category, args.seed)
    save_scene(scene, args.out)
    print(json.dumps(json.loads(str(scene["meta"])), indent=1))


if __name__ == "__main__":
    main()
