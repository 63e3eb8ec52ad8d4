"""A model trained on procedural objects, scored on real PartNet-Mobility objects.

    python benchmarks/bench_real.py --checkpoint runs/bench-rgbd/partrm/model.safetensors \
        --objects ../shared/fixtures/partnet-mobility --out runs/bench-real

The objects (every movable joint) are articulated, rendered like the benchmark's procedural
ones (256², draft) and dragged; an RGB-D checkpoint gets the geometric database at its splat
size as its static input and as the static / oracle baselines (an RGB checkpoint needs
``--gsdb``: a teacher database of these objects). Every pair is scored with the evaluation's
own drag stream, in one group, *real PartNet-Mobility objects*, whatever split the real-id
manifest gives them: the model never saw one of them (it trained on procedural objects).
Writes ``report.md`` and ``eval/`` (per sample) under ``--out``; every step resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partdrag4d import store  # noqa: E402
from partdrag4d.pipeline import make_dataset  # noqa: E402
from partrm.evaluate import LEGEND, EvalConfig, evaluate, group_table, methods_of, summarise_groups, write_outputs  # noqa: E402
from partrm.gsdb import GaussianDatabase  # noqa: E402
from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb  # noqa: E402
from partrm.predict import load_model, mode_of  # noqa: E402

REAL = "real PartNet-Mobility objects"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a PartRM checkpoint trained on procedural objects")
    parser.add_argument("--objects", type=Path, required=True, help="a folder of PartNet-Mobility object folders")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-real"))
    parser.add_argument("--gsdb", type=Path, default=None, help="RGB checkpoints: a teacher database of these objects")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--eval-size", type=int, default=256)
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    data = args.out / "data"
    times = {}
    t = time.perf_counter()
    make_dataset(data, source=args.objects, quality="draft", resolution=args.resolution, max_joints=None)
    times["dataset"] = time.perf_counter() - t
    if args.gsdb is not None:
        db_path = args.gsdb
    elif mode_of(model) == "rgbd":
        t = time.perf_counter()
        db_path = args.out / "gsdb-render.h5"
        build_render_gsdb(data, db_path, RenderGsdbConfig(splat_size=model.config.splat_size))
        times["geometric gsdb"] = time.perf_counter() - t
    else:
        sys.exit("an RGB checkpoint needs --gsdb (a teacher database of these objects) for its static and oracle baselines")
    cfg = EvalConfig(data=str(data), out=str(args.out / "eval"), split=None, eval_size=args.eval_size)
    t = time.perf_counter()
    result = evaluate(cfg, model, GaussianDatabase(db_path))
    rows = [replace(r, group=REAL) for r in result.rows]
    methods = methods_of(rows)
    result.rows, result.groups = rows, summarise_groups(rows, methods, cfg.bootstrap_resamples, cfg.seed)
    write_outputs(result, Path(cfg.out), cfg)
    times["eval"] = time.perf_counter() - t
    objects = sorted({r.object_id for r in rows})
    report = "\n".join([
        f"Checkpoint `{args.checkpoint}` (trained on procedural objects only), scored on {len(objects)} real PartNet-Mobility "
        f"objects ({', '.join(objects)}), every movable joint, {len(rows) // max(1, len(methods))} pairs.",
        "",
        group_table(result.groups, methods),
        LEGEND,
        "",
        "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
        "",
    ])
    store.atomic_write_text(args.out / "report.md", report)
    print(report)


if __name__ == "__main__":
    main()
