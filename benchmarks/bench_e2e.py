"""The small end-to-end benchmark on the embedded default (CPU): dataset -> teacher ->
Gaussian database -> stage 1 -> stage 2 -> evaluation on held-out objects, then one table.

    python benchmarks/bench_e2e.py [--out runs/bench] [--per-category 2] [--resolution 256]

Objects of the 7 seen categories are split per object (``categories.split_of_synthetic``:
with 2 per category, object 0 trains and object 1 is held out); trashcan is the unseen
category. The teacher and PartRM train on the ``train`` objects only. The evaluation
(``partrm.evaluate``: the paper's protocol with its own drag stream) scores the ``test``
objects in two groups, *seen categories, new objects* and *unseen category*, with
full-image and motion-region metrics, paired deltas to static with bootstrap intervals,
the motion recovery ratio R, the zero-drag control and the 3D motion errors; the static
and oracle baselines in the same run. ``<out>/report.md`` gets the table and the seconds
of each step. Every step resumes, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def split_summary(data: Path) -> str:
    """Objects per split and group, from the manifest."""
    from partdrag4d import categories, store

    objects = {}
    for r in store.read_jsonl(data / store.MANIFEST):
        if r.get("status") == "ok":
            objects[r["object_id"]] = (r["category"], r["split"])
    counts = Counter()
    for category, split in objects.values():
        counts[(split, categories.get(category).seen)] += 1
    return (f"objects: {counts[('train', True)]} train (seen categories), {counts[('test', True)]} test of seen categories, "
            f"{counts[('test', False)]} test of the unseen category")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--quality", default="draft")
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--stage1-steps", type=int, default=200)
    parser.add_argument("--stage2-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from partdrag4d.pipeline import make_dataset
    from partrm.evaluate import LEGEND, METHODS, EvalConfig, evaluate, group_table, write_outputs
    from partrm.gsdb import GaussianDatabase
    from partrm.gsdb_build import build_gsdb
    from partrm.models.partrm import PartRM
    from partrm.train import load_config, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = args.out
    data = out / "data"
    times = {}
    t = time.perf_counter()
    make_dataset(data, per_category=args.per_category, seed=args.seed, quality=args.quality, resolution=args.resolution, max_joints=1)
    times["dataset"] = time.perf_counter() - t

    t = time.perf_counter()
    teacher = train(load_config(data=str(data), out=str(out / "teacher"), stage="teacher", model="tiny", steps=args.teacher_steps,
                                batch_size=args.batch_size, lr=1e-3, warmup_steps=20, seed=args.seed))
    times["teacher"] = time.perf_counter() - t
    t = time.perf_counter()
    build_gsdb(data, teacher.model_path)
    times["gsdb"] = time.perf_counter() - t
    t = time.perf_counter()
    partrm = train(load_config(data=str(data), out=str(out / "partrm"), stage="1+2", init=str(teacher.model_path),
                               stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps, batch_size=args.batch_size, lr=5e-4,
                               warmup_steps=20, seed=args.seed))
    times["partrm"] = time.perf_counter() - t

    model = PartRM.load(partrm.model_path).eval()
    db = GaussianDatabase(data / "gsdb.h5")
    t = time.perf_counter()
    cfg = EvalConfig(data=str(data), out=str(out / "eval-test"), split="test", eval_size=args.eval_size, seed=args.seed)
    result = evaluate(cfg, model, db)
    write_outputs(result, Path(cfg.out), cfg)
    times["eval"] = time.perf_counter() - t
    report = "\n".join([
        f"Split `test` (held-out objects; training read `train` only). {split_summary(data)}.",
        "",
        group_table(result.groups, [m for m in METHODS if any(r["method"] == m for r in result.rows)]),
        LEGEND,
        "",
        *([result.lpips_note, ""] if result.lpips_note else []),
        f"Per category: `{Path(cfg.out) / 'results.md'}`.",
        "",
        "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + f" (torch threads: {torch.get_num_threads()})",
        "",
    ])
    from partdrag4d.store import atomic_write_text

    atomic_write_text(out / "report.md", report)
    print(report)


if __name__ == "__main__":
    main()
