"""Articulation extraction against dataset ground truth: joint type accuracy, axis angle
error, pivot (axis line) distance, motion amount error and time per estimate.

Objects: ``--per-category`` synthetic objects of every category (seed ``--seed``) plus
PartNet-Mobility 40147 when ``--fixture`` / ``$PARTNET_MOBILITY_FIXTURES`` is set. Pairs
per sequence: stage 0 -> 5 and one random pair of stages. Modes:

corr       the dataset's corresponding points (``states/<id>/points.npy``)
corr+noise the same with Gaussian noise (sigma 1% of the bounding-box diagonal) on both
           states and 5% of B's points replaced by uniform outliers: a stand-in for
           predicted Gaussians
unordered  B shuffled, 75% kept, noise sigma 0.002
mesh       independent surface samples of the two posed meshes (``mesh.obj``)

Failures (no motion detected) are counted apart; type accuracy covers the rest and the
errors cover those of the right type. "random" pairs include adjacent stages (a fifth
of the range), so small motions near the sampling resolution.
Usage: python benchmarks/bench_articulation.py [--per-category 3] [--points 4096] [--fixture DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy

from partdrag4d import store
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.synth import GENERATORS, generate
from partrm import joints as art

MODES = ("corr", "corr+noise", "unordered", "mesh")


def sequences(root: Path) -> dict[str, list[str]]:
    seqs: dict[str, list[str]] = defaultdict(list)
    for r in store.read_jsonl(root / store.MANIFEST):
        if r.get("status") == "ok":
            seqs[r["sequence_id"]].append(r["state_id"])
    return {k: sorted(v, key=lambda s: int(s.rsplit("_s", 1)[1])) for k, v in sorted(seqs.items())}


def inputs(root: Path, a: str, b: str, mode: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    A = np.load(store.state_dir(root, a) / "points.npy").astype(np.float64)
    B = np.load(store.state_dir(root, b) / "points.npy").astype(np.float64)
    if mode == "corr":
        return A, B, True
    if mode == "corr+noise":
        lo, hi = A.min(0), A.max(0)
        sigma = 0.01 * float(np.linalg.norm(hi - lo))
        A = A + rng.normal(0, sigma, A.shape)
        B = B + rng.normal(0, sigma, B.shape)
        out = rng.random(len(B)) < 0.05
        B[out] = rng.uniform(lo, hi, (int(out.sum()), 3))
        return A, B, True
    if mode == "unordered":
        keep = rng.permutation(len(B))[: int(0.75 * len(B))]
        return A, B[keep] + rng.normal(0, 0.002, (len(keep), 3)), False
    meshes = []
    for k, s in enumerate((a, b)):
        groups = art.read_obj_groups(store.state_dir(root, s) / "mesh.obj")
        V = np.concatenate([v for v, _ in groups.values()])
        offsets = np.cumsum([0] + [len(v) for v, _ in groups.values()])[:-1]
        F = np.concatenate([f + o for (_, f), o in zip(groups.values(), offsets)])
        meshes.append(art.sample_mesh(V, F, n, seed=int(rng.integers(1 << 30)))[0])
    return meshes[0], meshes[1], False


def run(root: Path, modes: tuple[str, ...], seed: int, n: int) -> dict:
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for seq, states in sequences(root).items():
        rng = np.random.default_rng([seed, zlib.crc32(seq.encode())])
        pairs = [(i, j) for i in range(len(states)) for j in range(i + 1, len(states)) if (i, j) != (0, len(states) - 1)]
        i, j = pairs[int(rng.integers(len(pairs)))]
        for kind, a, b in (("0->5", states[0], states[-1]), ("random", states[i], states[j])):
            truth = art.dataset_truth(root, a, b)
            for mode in modes:
                A, B, corr = inputs(root, a, b, mode, rng, n)
                t0 = time.perf_counter()
                try:
                    est = art.estimate_articulation(A, B, corr)
                    m = art.compare(est, truth if mode != "mesh" else replace(truth, moving_mask=None))
                except art.NoMotionError:
                    m = None
                m = {"failed": m is None, **(m or {}), "seconds": time.perf_counter() - t0, "pair": f"{a} -> {b}"}
                rows[(mode, truth.joint_type, kind)].append(m)
    return rows


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.4f}" if values else "-"


def _max(values: list[float]) -> str:
    return f"{max(values):.4f}" if values else "-"


def report(rows: dict) -> None:
    print(f"{'mode':11s} {'joint':9s} {'stages':6s} {'pairs':>5s} {'failed':>6s} {'type acc':>8s} {'axis med':>9s} {'axis max':>9s} "
          f"{'pivot med':>9s} {'pivot max':>9s} {'amount med':>10s} {'amount max':>10s} {'ms/est':>7s}")
    for (mode, joint, kind), ms in sorted(rows.items(), key=lambda kv: (MODES.index(kv[0][0]), kv[0][1], kv[0][2])):
        ok = [m for m in ms if not m["failed"]]
        right = [m for m in ok if m["type_correct"]]
        acc = len(right) / len(ok) if ok else float("nan")
        axis = [m["axis_angle_deg"] for m in right]
        pivot = [m["pivot_distance"] for m in right if m["pivot_distance"] is not None]
        amount = [m["amount_error"] for m in right]
        ms_per = statistics.median([m["seconds"] for m in ms]) * 1000
        print(f"{mode:11s} {joint:9s} {kind:6s} {len(ms):5d} {len(ms) - len(ok):6d} {acc:8.3f} {_med(axis):>9s} {_max(axis):>9s} "
              f"{_med(pivot):>9s} {_max(pivot):>9s} {_med(amount):>10s} {_max(amount):>10s} {ms_per:7.1f}")
    print("axis in degrees; pivot = distance between the axis lines at the part (canonical units, objects span ~[-1, 1]);")
    print("amount in radians (revolute) or canonical units (prismatic); failed = no motion detected (e.g. a small knob")
    print("turning about its own symmetry axis is invisible without correspondence)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("PARTNET_MOBILITY_FIXTURES")
    parser.add_argument("--fixture", type=Path, default=Path(env) / "40147" if env else None)
    parser.add_argument("--per-category", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    args = parser.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m)
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        src, root = Path(tmp) / "src", Path(tmp) / "data"
        src.mkdir()
        for category in GENERATORS:
            for index in range(args.per_category):
                generate(category, index, args.seed, src)
        if args.fixture and args.fixture.is_dir():
            os.symlink(args.fixture.resolve(), src / args.fixture.name)
        else:
            print("(no PartNet-Mobility fixture: pass --fixture DIR or set PARTNET_MOBILITY_FIXTURES)")
        summary = articulate_folder(src, root, num_points=args.points, seed=args.seed, progress=False)
        print(f"{summary.objects_ok} objects, {summary.states} states, {args.points} points per state")
        t0 = time.perf_counter()
        rows = run(root, modes, args.seed, args.points)
        print(f"evaluated in {time.perf_counter() - t0:.1f} s")
    report(rows)


if __name__ == "__main__":
    main()
