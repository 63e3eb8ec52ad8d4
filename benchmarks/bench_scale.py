"""Rendering throughput of the local executor vs Ray on the same cores, and on a real Ray cluster.

A small dataset (procedural objects, one swept joint each, 6 states per object) is
articulated once; then its states are rendered again and again, alternating executors
so that both see the same background load:

    local   partdrag4d.render.render_states: ``--workers`` Blender processes x ``--threads``
    ray     the same with ``executor="ray"``, on a Ray started here with this machine's
            cores: ``--workers`` render actors x ``--threads`` (one Blender worker each)

Each run starts its Blender workers (and, for Ray, its actors) afresh, so both include
start-up; the Ray session itself is started once, before the runs, and its start time is
printed separately. Printed: states/s per run and executor, the best and median, the
overhead ratio local states/s / Ray states/s (best runs, and the median of the rounds'
ratios; goal <= 1.10), each state's wall and CPU seconds inside Blender (from
``provenance/render``: the same work under either executor) and the time a run spends
outside its states (start-up and scheduling), which is what the executor adds.

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


def timed_render(data: Path, args, executor: str, address: str | None = None,
                 workers: int | None = None) -> tuple[float, float, float]:
    """Wall seconds of one render run, and the mean wall and CPU seconds of a state inside
    Blender (from ``provenance/render``: the same work either way, so a difference in the
    first figure that the other two do not show is the executor's or the machine's load)."""
    from partdrag4d import store
    from partdrag4d.pipeline import render_dataset

    clear_renders(data)
    shutil.rmtree(store.provenance_dir(data) / "render", ignore_errors=True)
    t0 = time.perf_counter()
    summary = render_dataset(data, quality=args.quality, resolution=args.size, progress=False, executor=executor,
                             ray_address=address, workers=workers, threads=args.threads)
    seconds = time.perf_counter() - t0
    if summary["failed"]:
        raise SystemExit(f"{executor}: {summary['failed']} states failed: {summary['failures'][:3]}")
    timing = [store.read_json(p) for p in (store.provenance_dir(data) / "render").glob("*.json")]
    return (seconds, statistics.mean(t["state_seconds"] for t in timing),
            statistics.mean(t["state_cpu_seconds"] for t in timing))


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
    from partdrag4d.executor import available_cores

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
        outside: dict[str, list[float]] = {"local": [], "ray": []}
        paired: list[float] = []
        t0 = time.perf_counter()
        with ray_session(None):
            print(f"Ray started on this machine in {time.perf_counter() - t0:.1f} s "
                  f"({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
            for r in range(args.rounds):
                order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
                for executor in order:
                    seconds, state_wall, state_cpu = timed_render(data, args, executor, workers=args.workers)
                    times[executor].append(seconds)
                    outside[executor].append(seconds - states * state_wall / args.workers)
                    print(f"round {r + 1} {executor:5s} {seconds:7.2f} s  {states / seconds:6.3f} states/s   "
                          f"in Blender per state: {state_wall:5.2f} s wall, {state_cpu:5.2f} s CPU; "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                paired.append(times["ray"][-1] / times["local"][-1])
        best = {k: min(v) for k, v in times.items()}
        median = {k: statistics.median(v) for k, v in times.items()}
        for k in ("local", "ray"):
            print(f"{k:5s} best {states / best[k]:.3f} states/s, median {states / median[k]:.3f} states/s")
        print(f"overhead ratio local states/s / Ray states/s: best runs {best['ray'] / best['local']:.3f}, "
              f"median of the {len(paired)} rounds {statistics.median(paired):.3f} "
              f"(rounds: {', '.join(f'{x:.3f}' for x in paired)}; goal <= 1.10)")
        print(f"time outside Blender's states per run (start-up, scheduling; median): local "
              f"{statistics.median(outside['local']):.2f} s, Ray {statistics.median(outside['ray']):.2f} s")
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
