"""Drag sampling time per pair for all 12 views (target <= 50 ms), on a rendered dataset.

Usage: python benchmarks/bench_drags.py [DATASET]   (default: data/, made by `make dataset`)
Rendered depth/part ids are loaded once per sequence (as `partdrag4d drags` does); the
figure is the sampling itself: projection, depth test, farthest-point sampling.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from partdrag4d import store  # noqa: E402
from partdrag4d.dragfile import sequences  # noqa: E402
from partdrag4d.drags import ViewRender, all_pairs, pair_seed, sample_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, nargs="?", default=Path("data"))
    parser.add_argument("--max-sequences", type=int, default=8)
    args = parser.parse_args()
    seqs = sequences(args.dataset)[: args.max_sequences]
    if not seqs:
        sys.exit(f"no rendered sequences in {args.dataset}: run `make dataset` first")
    per_pair, counts, load = [], [], []
    for seq in seqs:
        t0 = time.perf_counter()
        renders, cams = [], None
        for r in seq.records:
            depth, part_id, cams = store.read_render(args.dataset / r["paths"]["state"] / "render")
            renders.append(ViewRender(depth, part_id))
        points = [np.load(args.dataset / r["paths"]["points"]) for r in seq.records]
        moving = np.load(args.dataset / seq.records[0]["paths"]["moving"])
        ids = np.asarray(seq.records[0]["moving_part_ids"])
        load.append(time.perf_counter() - t0)
        for i, j in all_pairs(len(seq.records)):
            t = time.perf_counter()
            d = sample_pair(points[i], points[j], moving, ids, cams, renders[i], pair_seed(0, seq.sequence_id, i, j))
            per_pair.append(time.perf_counter() - t)
            counts.append(int(d.count.sum()))
    size = renders[0].depth.shape[-1]
    print(f"drag sampling, {len(per_pair)} pairs of {len(seqs)} sequences, 12 views at {size}x{size}, {len(points[0])} surface points")
    print(f"  per pair: median {1000 * statistics.median(per_pair):.1f} ms, max {1000 * max(per_pair):.1f} ms (target <= 50 ms)")
    print(f"  drags kept per pair: median {int(statistics.median(counts))}; loading renders per sequence: {statistics.median(load):.2f} s")


if __name__ == "__main__":
    main()
