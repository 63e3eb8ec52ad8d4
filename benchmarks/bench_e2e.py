"""The small end-to-end benchmark on the embedded default (CPU): dataset -> teacher ->
Gaussian database -> stage 1 -> stage 2 -> evaluation, then the table.

    python benchmarks/bench_e2e.py [--out runs/bench] [--per-category 2] [--resolution 256]

The evaluation follows the paper's protocol (a seeded source stage per sequence, drags
toward every other stage, the 8 views not used as input at 256 x 256) on the training
split (objects seen in training: does the model learn part motion?) and on the test
split (the unseen category, trashcan), each with the static and oracle baselines.
Every step resumes, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from partdrag4d.pipeline import make_dataset
    from partrm.evaluate import EvalConfig, evaluate, write_outputs
    from partrm.gsdb import GaussianDatabase, build_gsdb
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
    tables = []
    for split in ("train", "test"):
        cfg = EvalConfig(data=str(data), out=str(out / f"eval-{split}"), split=split, seed=args.seed)
        result = evaluate(cfg, model, db)
        write_outputs(result, Path(cfg.out), cfg)
        tables.append(f"### split: {split}\n\n{result.markdown}")
    times["eval"] = time.perf_counter() - t
    report = "\n".join(tables) + "\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + "\n"
    (out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
