"""Articulation + export time per state (targets: <= 0.1 s synthetic, <= 0.5 s for 40147).

Usage: python benchmarks/bench_articulate.py [--fixture DIR]   (DIR defaults to
$PARTNET_MOBILITY_FIXTURES/40147 when that variable is set)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from partdrag4d.articulate import articulate_object
from partdrag4d.assets.partnet_mobility import load_object
from partdrag4d.assets.synth import GENERATORS, generate


def per_state(folder: Path, repeats: int = 3) -> tuple[float, float, int]:
    """Median seconds per state (load + plan + write all states) and the load time alone."""
    times, loads = [], []
    states = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            obj = load_object(folder)
            t1 = time.perf_counter()
            _, info = articulate_object(obj, Path(out), resume=False)
            t2 = time.perf_counter()
            states = info["states"]
            times.append((t2 - t0) / states)
            loads.append(t1 - t0)
    return statistics.median(times), statistics.median(loads), states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("PARTNET_MOBILITY_FIXTURES")
    parser.add_argument("--fixture", type=Path, default=Path(env) / "40147" if env else None)
    args = parser.parse_args()
    print("articulation + export (load, plan, posed OBJ, points) per state, median of 3")
    with tempfile.TemporaryDirectory() as src:
        for category in GENERATORS:
            folder = generate(category, 0, 0, Path(src))
            t, load, n = per_state(folder)
            print(f"  synthetic {category:18s} {n:3d} states  {t * 1000:7.1f} ms/state  (load {load * 1000:.0f} ms)  target <= 100 ms")
    if args.fixture and args.fixture.is_dir():
        t, load, n = per_state(args.fixture)
        print(f"  PartNet-Mobility {args.fixture.name:11s} {n:3d} states  {t * 1000:7.1f} ms/state  (load {load * 1000:.0f} ms)  target <= 500 ms")
    else:
        print("  (no fixture: pass --fixture DIR or set PARTNET_MOBILITY_FIXTURES)")


if __name__ == "__main__":
    main()
