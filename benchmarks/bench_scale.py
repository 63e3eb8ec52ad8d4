"""Rendering throughput of the local executor vs Ray on the same cores, and on a real Ray cluster.

A small dataset (procedural objects, one swept joint each, 6 states per object) is
articulated once; then its states are rendered again and again, alternating executors
so that both see the same background load:

    local   partdrag4d.render.render_jobs: ``--workers`` Blender processes x ``--threads``
    ray     partdrag4d.executor.render_jobs_ray on a Ray started here with this machine's
            cores: ``--workers`` render actors x ``--threads`` (one Blender worker each)

Each run starts its Blender workers (and, for Ray, its actors) afresh, so both include
start-up; the Ray session itself is started once, before the runs, and its start time is
printed separately. Printed: states/s per run and executor, the best and median, and the
overhead ratio local states/s / Ray states/s from the best runs (goal <= 1.10).

With ``--ray-address auto|HOST:PORT`` the same dataset (``--out`` must then be a folder
every node shares) is also rendered on that cluster with as many actors as it fits,
and its states/s and speed-up over the local executor are printed.

Usage: python benchmarks/bench_scale.py [--size 256] [--quality draft] [--categories microwave laptop]
       [--rounds 2] [--workers 1] [--threads 2] [--out DIR] [--ray-address auto]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))


def build(out: Path, categories: list[str], seed: int) -> int:
    from partdrag4d.articulate import articulate_folder
    from partdrag4d.assets.synth import generate

    for c in categories:
        generate(c, 0, seed, out / "source")
    summary = articulate_folder(out / "source", out / "data", seed=seed, num_points=4096, max_joints=1, progress=False)
    return summary.states


def clear_renders(data: Path) -> None:
    for render in data.glob("states/*/render"):
        shutil.rmtree(render)


def timed_render(data: Path, args, executor: str, address: str | None = None, workers: int | None = None) -> float:
    from partdrag4d.pipeline import render_dataset

    clear_renders(data)
    t0 = time.perf_counter()
    summary = render_dataset(data, quality=args.quality, resolution=args.size, progress=False, executor=executor,
                             ray_address=address, workers=workers, threads=args.threads)
    seconds = time.perf_counter() - t0
    if summary["failed"]:
        raise SystemExit(f"{executor}: {summary['failed']} states failed: {summary['failures'][:3]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--quality", default="draft")
    parser.add_argument("--categories", nargs="+", default=["microwave", "laptop"], help="one object per category")
    parser.add_argument("--rounds", type=int, default=2, help="runs per executor (alternating)")
    parser.add_argument("--workers", type=int, default=1, help="Blender workers (local) = render actors (Ray)")
    parser.add_argument("--threads", type=int, default=None, help="Cycles threads each (default: cores // workers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one); shared for --ray-address")
    parser.add_argument("--ray-address", default=None, help="also render on this Ray cluster (auto or HOST:PORT)")
    args = parser.parse_args()

    import ray

    from partdrag4d.executor import ray_session
    from partdrag4d.render import available_cores

    cores = available_cores()
    args.threads = args.threads or max(1, cores // args.workers)
    own = args.out is None
    work = Path(tempfile.mkdtemp(prefix="pd4d-bench-scale-")) if own else args.out.resolve()
    try:
        states = build(work, args.categories, args.seed)
        data = work / "data"
        print(f"{states} states ({len(args.categories)} objects x 6), {args.size}x{args.size} {args.quality}, "
              f"{args.workers} worker(s)/actor(s) x {args.threads} thread(s), {cores} cores; "
              f"load average {os.getloadavg()[0]:.1f}")
        times: dict[str, list[float]] = {"local": [], "ray": []}
        t0 = time.perf_counter()
        with ray_session(None):
            print(f"Ray started on this machine in {time.perf_counter() - t0:.1f} s "
                  f"({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
            for r in range(args.rounds):
                order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
                for executor in order:
                    seconds = timed_render(data, args, executor, workers=args.workers)
                    times[executor].append(seconds)
                    print(f"round {r + 1} {executor:5s} {seconds:7.2f} s  {states / seconds:6.3f} states/s", flush=True)
        best = {k: min(v) for k, v in times.items()}
        median = {k: statistics.median(v) for k, v in times.items()}
        for k in ("local", "ray"):
            print(f"{k:5s} best {states / best[k]:.3f} states/s, median {states / median[k]:.3f} states/s")
        ratio = best["ray"] / best["local"]
        print(f"overhead ratio (local states/s / Ray states/s, best runs): {ratio:.3f}  (goal <= 1.10; "
              f"median runs: {median['ray'] / median['local']:.3f}); load average {os.getloadavg()[0]:.1f}")
        if args.ray_address:
            with ray_session(args.ray_address):
                nodes = [n for n in ray.nodes() if n.get("Alive")]
                cpus = int(ray.cluster_resources().get("CPU", 0))
                seconds = timed_render(data, args, "ray", address=args.ray_address)
            print(f"cluster {args.ray_address}: {len(nodes)} nodes, {cpus} CPUs: {seconds:.2f} s, "
                  f"{states / seconds:.3f} states/s = {best['local'] / seconds:.2f}x the local executor here")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
