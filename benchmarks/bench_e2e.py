"""The end-to-end benchmark on held-out objects (CPU): dataset -> geometric Gaussian
database -> teacher -> teacher database -> PartRM (stage 1, stage 2) -> evaluation.

    python benchmarks/bench_e2e.py [--recipe configs/cpu-motion.toml] [--out runs/bench]

Every choice of the run is in the recipe file (``partrm.recipe``). Objects of the 7 seen
categories are split per object (``categories.split_of_synthetic``: one in every 4 is
held out); trashcan is the unseen category. The teacher and PartRM train on the ``train``
objects only. The evaluation (``partrm.evaluate``: the paper's protocol with its own drag
stream) scores the ``test`` objects in two groups, *seen categories, new objects* and
*unseen category*, with full-image and motion-region metrics, paired deltas to static with
bootstrap intervals, the motion recovery ratio R, the zero-drag control and the 3D motion
errors; static and oracle are the teacher database's source Gaussians without and with the
true part motion. ``<out>/report.md`` gets the table, the geometric database's quality on
the test states, the seconds of each step, and two pictures: ``grid.png`` (held-out
samples: source + drags, PartRM, zero-drag, static, oracle, ground truth) and
``curve.png`` (training loss and test R against the step). Every step resumes, so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partdrag4d import categories, store  # noqa: E402
from partdrag4d.pipeline import make_dataset  # noqa: E402
from partrm import figures  # noqa: E402
from partrm.evaluate import LEGEND, METHODS, EvalConfig, SampleRow, evaluate, group_table, methods_of, summarise_groups, write_outputs  # noqa: E402
from partrm.gsdb import GaussianDatabase  # noqa: E402
from partrm.gsdb_build import build_gsdb  # noqa: E402
from partrm.gsdb_render import build_render_gsdb, reconstruction_psnr  # noqa: E402
from partrm.predict import load_model  # noqa: E402
from partrm.recipe import load_recipe  # noqa: E402
from partrm.train import latest_checkpoint, read_log, train  # noqa: E402

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cpu-motion.toml"


def split_summary(data: Path) -> str:
    """Objects per split and group, from the manifest."""
    objects = {}
    for r in store.read_jsonl(data / store.MANIFEST):
        if r.get("status") == "ok":
            objects[r["object_id"]] = (r["category"], r["split"])
    counts = Counter()
    for category, split in objects.values():
        counts[(split, categories.get(category).seen)] += 1
    return (f"objects: {counts[('train', True)]} train (seen categories), {counts[('test', True)]} test of seen categories, "
            f"{counts[('test', False)]} test of the unseen category")


def geometric_quality(data: Path, gsdb: Path, input_views, size: int) -> str:
    """Full-image PSNR of the geometric database on the 8 non-input views of the test states."""
    db = GaussianDatabase(gsdb)
    states = [r["state_id"] for r in store.manifest_states(data) if r["split"] == "test"]
    views = [v for v in range(12) if v not in input_views]
    values = np.concatenate([reconstruction_psnr(db.splatter(s), data, s, views, size) for s in states])
    return (f"geometric database on the 8 non-input views of the {len(states)} test states at {size}²: "
            f"PSNR {values.mean():.2f} dB (median {np.median(values):.2f}, min {values.min():.2f})")


def held_out_point(cfg: EvalConfig, model, db, baseline_rows: list[SampleRow]) -> dict:
    """A learning-curve point on the test pairs, against the baselines' rows (no 3D errors)."""
    quick = EvalConfig(**{**cfg.__dict__, "methods": ("partrm", "zero-drag"), "motion_3d": False})
    return curve_point(evaluate(quick, model, None, progress=False).rows, baseline_rows, cfg.seed)


def curve_point(rows: list[SampleRow], baseline_rows: list[SampleRow], seed: int) -> dict:
    """Per group: R of PartRM and of its zero-drag control, and PartRM's full-image PSNR gain over
    static, from PartRM's and zero-drag's ``rows`` (the last point: the final evaluation's own)."""
    rows = [r for r in rows if r.method in ("partrm", "zero-drag")]
    groups = summarise_groups(rows + baseline_rows, METHODS, resamples=10, seed=seed)
    return {"R": {g: groups[g]["partrm"].get("R") for g in groups},
            "zero_drag_R": {g: groups[g]["zero-drag"].get("R") for g in groups},
            "delta_psnr": {g: groups[g]["partrm"].get("delta_psnr") for g in groups}}


def _num(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


class Timer(dict):
    """Seconds per step, kept in ``times.json`` beside the report: a step that a resumed run
    finds done (and so takes ~0 s) keeps the seconds of the run that did it (the larger)."""

    def __init__(self, before: dict, path: Path):
        super().__init__(before)
        self.path = path

    def __setitem__(self, step: str, seconds: float) -> None:
        super().__setitem__(step, max(seconds, self.get(step, 0.0)))
        store.atomic_write_json(self.path, dict(self))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="TOML recipe (partrm/recipe.py)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--data", type=Path, default=None, help="an existing dataset made with the recipe's [dataset] (default OUT/data)")
    parser.add_argument("--seed", type=int, default=None, help="training seed of the teacher and PartRM (default: the recipe's); "
                                                                "a rerun with another seed on the same --data measures the spread")
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    if args.seed is not None:
        recipe = replace(recipe, teacher={**recipe.teacher, "seed": args.seed}, partrm={**recipe.partrm, "seed": args.seed})
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = args.data or out / "data"
    d = recipe.dataset
    times_path = out / "times.json"
    times = Timer(store.read_json(times_path) if times_path.is_file() else {}, times_path)
    t = time.perf_counter()
    if args.data is None:
        make_dataset(data, per_category=d.per_category, seed=d.seed, quality=d.quality, resolution=d.resolution,
                     max_joints=d.max_joints, configs=d.configs)
    times["dataset"] = time.perf_counter() - t

    t = time.perf_counter()
    geometric = out / "gsdb-render.h5"
    build_render_gsdb(data, geometric, recipe.gsdb)
    times["geometric gsdb"] = time.perf_counter() - t
    quality = geometric_quality(data, geometric, recipe.gsdb.input_views, recipe.eval.eval_size)
    print(quality)

    if recipe.mode == "rgbd":  # no teacher: the geometric database is the static input, static and oracle
        teacher_model, teacher_db_path = None, geometric
    else:
        t = time.perf_counter()
        teacher = train(recipe.teacher_config(data, out / "teacher", geometric))
        times["teacher"] = time.perf_counter() - t
        t = time.perf_counter()
        teacher_model, teacher_db_path = teacher.model_path, out / "gsdb-teacher.h5"
        build_gsdb(data, teacher_model, teacher_db_path)
        times["teacher gsdb"] = time.perf_counter() - t
    db = GaussianDatabase(teacher_db_path)

    eval_cfg = EvalConfig(data=str(data), out=str(out / "eval-test"), split="test", eval_size=recipe.eval.eval_size, seed=d.seed)
    t = time.perf_counter()
    baseline_rows = evaluate(EvalConfig(**{**eval_cfg.__dict__, "methods": ("static", "oracle"), "motion_3d": False}), None, db,
                             progress=False).rows
    times["baselines"] = time.perf_counter() - t

    partrm_cfg = recipe.partrm_config(data, out / "partrm", teacher_model, teacher_db_path)
    total = partrm_cfg.total_steps()
    every = recipe.eval.curve_every or total
    curve_path = out / "curve.json"
    curve = store.read_json(curve_path) if curve_path.is_file() else []
    t = time.perf_counter()
    t_curve = 0.0
    for stop in list(range(every, total, every)) + [total]:
        result = train(partrm_cfg, stop_after=stop)
        if stop == total or any(p["step"] == stop for p in curve):
            continue  # the last point comes from the final evaluation below
        t1 = time.perf_counter()
        model = load_model(latest_checkpoint(out / "partrm") / "model.safetensors")
        curve.append({"step": stop, "stage": partrm_cfg.stage_at(stop - 1), **held_out_point(eval_cfg, model, db, baseline_rows)})
        store.atomic_write_json(curve_path, curve)
        t_curve += time.perf_counter() - t1
        print(f"step {stop}: test R {curve[-1]['R']}")
    times["partrm"] = time.perf_counter() - t - t_curve
    times["learning-curve evals"] = t_curve

    model = load_model(result.model_path)
    t = time.perf_counter()
    result = evaluate(eval_cfg, model, db)
    write_outputs(result, Path(eval_cfg.out), eval_cfg)
    times["eval"] = time.perf_counter() - t
    if not any(p["step"] == total for p in curve):
        curve.append({"step": total, "stage": partrm_cfg.stage_at(total - 1), **curve_point(result.rows, baseline_rows, eval_cfg.seed)})
        store.atomic_write_json(curve_path, curve)
    t = time.perf_counter()
    figures.qualitative_grid(data, model, db, figures.pick_samples(result.rows, recipe.eval.grid_per_group), out / "grid.png")
    figures.learning_curve(read_log(out / "partrm"), curve, out / "curve.png",
                           title=f"{Path(recipe.path).name}: PartRM on train objects, R on held-out test objects")
    times["figures"] = time.perf_counter() - t
    report = "\n".join([
        f"Recipe `{recipe.path}`, training seed {recipe.partrm.get('seed', 0)}. Split `test` (held-out objects; training read `train` only). {split_summary(data)}.",
        "",
        group_table(result.groups, methods_of(result.rows)),
        LEGEND,
        "",
        *([result.lpips_note, ""] if result.lpips_note else []),
        quality + ".",
        "",
        "test split during training (R, zero-drag R, Δ full-image PSNR vs static): " + "; ".join(
            f"step {p['step']}: " + ", ".join(f"{g} {_num(r)}, {_num(p.get('zero_drag_R', {}).get(g))}, {_num(p.get('delta_psnr', {}).get(g), '+.2f')}"
                                              for g, r in p["R"].items()) for p in curve),
        "",
        f"Per category: `{Path(eval_cfg.out) / 'results.md'}`. Pictures: `{out / 'grid.png'}`, `{out / 'curve.png'}`.",
        "",
        "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + f"; total {sum(times.values()):.0f}"
        + f" (torch threads: {torch.get_num_threads()})",
        "",
    ])
    store.atomic_write_text(out / "report.md", report)
    print(report)


if __name__ == "__main__":
    main()
