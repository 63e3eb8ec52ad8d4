"""Benchmark evaluation (paper Sec. 5.1 and appendix 7.2).

For every evaluated sequence a source stage is drawn from a seeded RNG; drags toward
each other stage of the sequence give one sample per target. A method predicts the
target state's Gaussians from the source state's 4 input views (+ drags); its
Gaussians are rendered in the 8 views not used as input at 256 x 256 and compared with
the ground-truth renders (composited on white): PSNR, SSIM (pytorch-msssim, data range
1) and LPIPS (VGG, only with local weights; otherwise n/a).

Methods in one run:
- ``partrm``: the model under test;
- ``static``: the source state's Gaussians (teacher reconstruction), no motion — the
  floor a motion model must beat;
- ``oracle``: the source Gaussians with the true part motion applied to those on the
  moving part (nearest surface sample decides the part) — an upper bound for motion.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from partdrag4d import categories, store
from partrm.data import PairConfig, PairDataset, collate
from partrm.metrics import psnr, ssim, lpips_distance, aggregate

METRICS = ("psnr", "ssim", "lpips")


@dataclass(frozen=True)
class EvalConfig:
    data: str = "data"
    out: str = "runs/eval"
    split: str = "test"
    categories: Optional[tuple[str, ...]] = None
    num_drags: int = 10
    drag_mode: str = "propagated"
    eval_size: int = 256
    seed: int = 0
    max_sequences: Optional[int] = None
    vgg_weights: Optional[str] = None
    lpips_weights: Optional[str] = None
    methods: tuple[str, ...] = ("partrm", "static", "oracle")


def choose_pairs(dataset: PairDataset, seed: int, max_sequences: Optional[int] = None) -> list[int]:
    """Indices of the evaluated pairs: per sequence one seeded source stage, every other target."""
    by_seq: dict[str, list[int]] = {}
    for k, ref in enumerate(dataset.pairs):
        by_seq.setdefault(ref.sequence_id, []).append(k)
    chosen = []
    for n, sid in enumerate(sorted(by_seq)):
        if max_sequences is not None and n >= max_sequences:
            break
        rng = np.random.default_rng([seed, n])
        sources = sorted({dataset.pairs[k].source_stage for k in by_seq[sid]})
        source = sources[int(rng.integers(len(sources)))]
        chosen.extend(k for k in by_seq[sid] if dataset.pairs[k].source_stage == source)
    return chosen


def oracle_gaussians(source: torch.Tensor, root: Path, source_state: str, target_state: str) -> torch.Tensor:
    """Apply the true rigid motion of the moving links (source -> target) to the source Gaussians."""
    from partrm.models.lgm import transform_gaussians

    src = store.read_json(root / "states" / source_state / "state.json")
    dst = store.read_json(root / "states" / target_state / "state.json")
    obj = np.load(root / "objects" / src["object_id"] / "points.npz")
    points = np.load(root / "states" / source_state / "points.npy")
    g = source.clone()
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(points).query(g[:, :3].detach().cpu().numpy(), k=1)
    link_of_part = {link["part_id"]: link["name"] for link in store.read_json(root / "objects" / src["object_id"] / "object.json")["links"]}
    for part in src["moving_part_ids"]:
        sel = (obj["part_id"][idx] == part) & (dist <= 0.05)
        if not sel.any():
            continue
        link = link_of_part[part]
        motion = np.asarray(dst["link_poses"][link]) @ np.linalg.inv(np.asarray(src["link_poses"][link]))
        sel_t = torch.from_numpy(sel)
        g[sel_t] = transform_gaussians(g[sel_t][None], torch.from_numpy(motion))[0].to(g.dtype)
    return g


@dataclass
class EvalResult:
    rows: list[dict] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    markdown: str = ""
    lpips_note: str = ""


def evaluate(cfg: EvalConfig, model=None, teacher_db=None, progress: bool = True) -> EvalResult:
    """Evaluate ``model`` (a PartRM, or None to run only the baselines) and the baselines."""
    from tqdm import tqdm

    from partrm.lpips import load_lpips
    from partrm.train import render_views

    root = Path(cfg.data)
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    input_size = model.lgm.config.input_size if model is not None else 256
    drag_views = model.config.drag_views if model is not None else "first"
    pair_cfg = PairConfig(input_size=input_size, target_size=cfg.eval_size, num_drags=cfg.num_drags, drag_mode=cfg.drag_mode, drag_views=drag_views)
    dataset = PairDataset(root, split=cfg.split, categories=list(cfg.categories) if cfg.categories else None, config=pair_cfg, seed=cfg.seed)
    indices = choose_pairs(dataset, cfg.seed, cfg.max_sequences)
    lpips_model = load_lpips(cfg.vgg_weights, cfg.lpips_weights)
    note = "" if lpips_model is not None else "LPIPS n/a: no local VGG/LPIPS weights (pass --vgg-weights and --lpips-weights)"
    methods = [m for m in cfg.methods if m != "partrm" or model is not None]
    if teacher_db is None:
        methods = [m for m in methods if m == "partrm"]
    result = EvalResult(lpips_note=note)
    for k in tqdm(indices, desc="eval", unit="pair", disable=not progress, dynamic_ncols=True):
        item = collate([dataset[k]])
        views = item["supervised_views"][0]
        gt = item["target_rgb"][:, views] * item["target_alpha"][:, views] + (1 - item["target_alpha"][:, views])
        K, c2w = item["target_K"][:, views].to(device), item["target_c2w"][:, views].to(device)
        for method in methods:
            t0 = time.perf_counter()
            if method == "partrm":
                with torch.inference_mode():
                    g = model.reconstruct(item["input_rgb"].to(device), (item["input_K"].to(device), item["input_c2w"].to(device)),
                                          item["drags"].to(device), item["drag_valid"].to(device))
            elif method == "static":
                g = torch.from_numpy(_flat(teacher_db.splatter(item["source_state"][0])))[None].to(device)
            else:
                src = torch.from_numpy(_flat(teacher_db.splatter(item["source_state"][0])))
                g = oracle_gaussians(src, root, item["source_state"][0], item["target_state"][0])[None].to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_forward = time.perf_counter() - t0
            t1 = time.perf_counter()
            with torch.inference_mode():
                rgb, _ = render_views(g, K, c2w, cfg.eval_size)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_render = time.perf_counter() - t1
            pred, target = rgb[0].float().cpu().clamp(0, 1), gt[0].float()
            row = {
                "method": method, "category": item["category"][0], "seen": categories.get(item["category"][0]).seen,
                "sequence_id": item["sequence_id"][0], "source_state": item["source_state"][0], "target_state": item["target_state"][0],
                "psnr": float(psnr(pred, target).mean()), "ssim": float(ssim(pred, target).mean()),
                "lpips": (float(lpips_distance(lpips_model, pred, target).mean()) if lpips_model is not None else None),
                "seconds_forward": t_forward, "seconds_render": t_render,
            }
            result.rows.append(row)
    result.tables = {m: aggregate([r for r in result.rows if r["method"] == m], by="category") for m in methods}
    result.markdown = markdown_table(result, methods)
    return result


def _flat(splatter: np.ndarray) -> np.ndarray:
    v, c, s, _ = splatter.shape
    return splatter.transpose(0, 2, 3, 1).reshape(v * s * s, c)


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(result: EvalResult, methods: list[str]) -> str:
    cats = [c for c in categories.category_names() if any(r["category"] == c for r in result.rows)]
    lines = ["| method | category | seen | pairs | PSNR ↑ | SSIM ↑ | LPIPS ↓ | forward s | render s |", "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        rows = [r for r in result.rows if r["method"] == m]
        groups = [(c, [r for r in rows if r["category"] == c]) for c in cats]
        groups += [("seen", [r for r in rows if r["seen"]]), ("unseen", [r for r in rows if not r["seen"]]), ("overall", rows)]
        for name, rs in groups:
            if not rs:
                continue
            mean = lambda key: (float(np.mean([r[key] for r in rs if r[key] is not None])) if any(r[key] is not None for r in rs) else None)  # noqa: E731
            seen = "" if name in ("seen", "unseen", "overall") else ("yes" if categories.get(name).seen else "no")
            lines.append(f"| {m} | {name} | {seen} | {len(rs)} | {_fmt(mean('psnr'), 2)} | {_fmt(mean('ssim'), 4)} | {_fmt(mean('lpips'), 4)} | {_fmt(mean('seconds_forward'), 3)} | {_fmt(mean('seconds_render'), 3)} |")
    if result.lpips_note:
        lines.append("")
        lines.append(result.lpips_note)
    return "\n".join(lines) + "\n"


def write_outputs(result: EvalResult, out: Path, cfg: EvalConfig) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store.atomic_write_text(out / "results.md", result.markdown)
    buffer = io.StringIO()
    if result.rows:
        writer = csv.DictWriter(buffer, fieldnames=list(result.rows[0]))
        writer.writeheader()
        writer.writerows(result.rows)
    store.atomic_write_text(out / "samples.csv", buffer.getvalue())
    from dataclasses import asdict

    store.atomic_write_json(out / "results.json", {"config": asdict(cfg), "tables": result.tables, "lpips_note": result.lpips_note, "samples": result.rows})
