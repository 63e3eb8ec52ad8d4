"""Benchmark evaluation (paper Sec. 5.1 and appendix 7.2), with motion-aware measures.

Protocol. Evaluated objects are the ``test`` split (held-out objects; never trained on),
reported in two groups: *seen categories, new objects* (test objects of the 7 training
categories) and *unseen category* (trashcan). For every evaluated sequence a source stage
is drawn from a seeded RNG; drags toward each other stage of the sequence give one sample
per target. Evaluation draws its source stages and drags from its own random stream
(``EVAL_STREAM``), never the one training items use. A method predicts the target
state's Gaussians from the source state's 4 input views (+ drags); they are rendered in
the 8 views not used as input at 256 x 256 and compared with the ground-truth renders
(composited on white).

Measures per sample:

- full image (the paper's numbers): PSNR, SSIM (pytorch-msssim, data range 1), LPIPS
  (VGG, only with local weights; otherwise n/a), mean over the 8 views;
- motion region: the union of the moving part's masks in the source and the target state
  (from ``drags.h5``), per view, dilated by ``dilation`` pixels at 256 (scaled with the
  eval size); PSNR (capped at ``metrics.PSNR_CAP``), SSIM and LPIPS inside it, pooled
  over the 8 views (views where the part is hidden add nothing). The part covers only a
  few percent of a view, so full-image PSNR barely moves with the motion; this is where
  it shows;
- rest: the same outside the motion region (the static part and background must stay
  intact);
- 3D motion error: the predicted Gaussians with opacity > 0.05 whose nearest target-state
  surface sample lies on the moving part are the predicted moving part; Chamfer distance
  (mean nearest-neighbour distance in object units, objects span about [-1, 1]) from
  them to the target's moving-part samples and back, and their mean. Then the joint:
  ``partrm.joints.from_gaussians`` (no correspondence: a prediction's splatter
  pixels are no material points) on the teacher's source Gaussians vs the prediction,
  (and, when it finds no motion, prediction vs source, reversed), compared with the
  truth of ``state.json`` (``joints.dataset_truth``): axis angle
  error (degrees, sign-free), motion amount error relative to the true amount (1.0 when
  no motion is found: the prediction moved nothing), and whether a joint was found.

Methods in one run (``METHOD_TABLE``: name -> how it predicts, what it needs):

- ``partrm``: the model under test;
- ``zero-drag``: the same model given the same drags with zero displacement (end =
  start): a control; a model that reads its drags must score like ``static`` here;
- ``static``: the teacher's Gaussians of the source state, no motion: the floor;
- ``oracle``: the teacher's source Gaussians with the true rigid motion of the moving
  links applied to the Gaussians on them (the nearest source surface sample within 0.05
  decides the part). It is the ceiling *of a method that moves the teacher's
  reconstruction*: it inherits the teacher's reconstruction error, so a model whose stage
  2 refines appearance can pass it on full-image numbers; on the motion region it is the
  score the motion alone buys.

Per group and method: means; for ``partrm`` and ``zero-drag`` the paired difference to
``static`` per sample (motion-region and full-image PSNR) with a percentile bootstrap
95 % interval; the motion recovery ratio R = (method - static) / (oracle - static) of the
group-mean motion-region PSNR (0: no better than not moving; 1: as good as the true
motion; n/a when the oracle does not differ from static).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

from partdrag4d import categories, store
from partdrag4d.errors import BadInput
from partdrag4d.options import SEED_MAX, check as check_options, option
from partrm import joints
from partrm.data import PairConfig, PairDataset, PairRef, collate, resize_mask
from partrm.gaussians import layout
from partrm.gaussians.views import render_views
from partrm.lpips import load_lpips
from partrm.metrics import aggregate, bootstrap_ci, dilate_mask, lpips_distance, psnr, recovery_ratio, region_lpips, region_psnr, region_ssim, ssim
from partrm.part_motion import flat_splatter, oracle_gaussians
from partrm.predict import StaticCache, mode_of, pair_config, predict

METRICS = ("psnr", "ssim", "lpips")
EVAL_STREAM = 0x4556414C
"""Third seed word of every evaluation draw (source stage, drags): training never uses it."""
MIN_OPACITY = 0.05
SEEN_NEW = "seen categories, new objects"
UNSEEN = "unseen category"
TRAIN_GROUP = "train objects (seen in training)"
GROUP_ORDER = (SEEN_NEW, UNSEEN, TRAIN_GROUP)


MIN_EVAL_SIZE = 16
"""The smallest evaluation render size (SSIM's Gaussian window is 11 pixels wide)."""


@dataclass(frozen=True)
class MethodInput:
    """What a method may read to predict one evaluated pair's target Gaussians."""

    ref: PairRef
    item: dict  # the collated dataset item (a batch of one)
    source: Optional[torch.Tensor]  # the teacher's Gaussians of the source state [N, 14]; None without a teacher database
    root: Path
    device: torch.device  # where a baseline's Gaussians go (a model's stay on the model's device)
    model: Any = None  # the PartRM under test
    statics: Optional[StaticCache] = None  # an RGB-D model's static inputs


@dataclass(frozen=True)
class Prediction:
    """A method's prediction of one pair's target state."""

    gaussians: torch.Tensor  # [1, N, 14] activated, object frame, on the evaluation device
    in_place: bool  # the source Gaussians, moved: Gaussian i is one material point in both (the 3D joint uses exact correspondences)


@dataclass(frozen=True)
class Method:
    """A method of the evaluation: how it predicts, and what it needs."""

    predict: Callable[[MethodInput], Prediction]
    under_test: bool  # True: the model under test (needs a PartRM; its report row shows the paired delta to static);
    # False: a baseline made from the teacher's Gaussians (needs the teacher database)


def _predict_partrm(x: MethodInput) -> Prediction:
    with torch.inference_mode():
        return Prediction(predict(x.model, x.item, x.item["drags"], x.statics), in_place=x.statics is not None)


def _predict_zero_drag(x: MethodInput) -> Prediction:
    with torch.inference_mode():
        return Prediction(predict(x.model, x.item, zero_drags(x.item["drags"]), x.statics), in_place=x.statics is not None)


def _predict_static(x: MethodInput) -> Prediction:
    return Prediction(x.source[None].to(x.device), in_place=False)


def _predict_oracle(x: MethodInput) -> Prediction:
    return Prediction(oracle_gaussians(x.source, x.root, x.ref.source_state, x.ref.target_state)[None].to(x.device), in_place=True)


METHOD_TABLE: dict[str, Method] = {
    "partrm": Method(_predict_partrm, under_test=True),
    "zero-drag": Method(_predict_zero_drag, under_test=True),
    "static": Method(_predict_static, under_test=False),
    "oracle": Method(_predict_oracle, under_test=False),
}
"""The methods of one run (see the module docstring), in the reports' order."""
METHODS = tuple(METHOD_TABLE)


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation's options, with their help, choices and range (``partdrag4d.options``):
    ``partrm eval`` offers each as a flag."""

    data: str = option("data", "Rendered dataset.", path=True)
    out: str = option("runs/eval", "Folder for results.md, samples.csv, results.json.", path=True)
    split: Optional[str] = option("test", "Held-out objects (test), the training objects, or all.", choices=("test", "train"), none="all")
    categories: Optional[tuple[str, ...]] = option(None, "Comma list of categories to evaluate (unset: all).")
    num_drags: int = option(10, "Drags per view; a comma list runs the Table-2 ablation.", min=1)
    drag_mode: str = option("propagated", "propagated (the paper's Eq. 2, from the part mask) | visible (the stored visible drags).",
                            choices=("propagated", "visible"))
    eval_size: int = option(256, f"Evaluation render size in pixels (at least {MIN_EVAL_SIZE}).")
    seed: int = option(0, "Seed of the evaluated pairs' source stages and drags.", min=0, max=SEED_MAX)
    max_sequences: Optional[int] = option(None, "Evaluate at most this many sequences (unset: all).", min=1)
    vgg_weights: Optional[str] = option(None, "torchvision vgg16 weights for LPIPS (local file; without: LPIPS n/a).", path=True)
    lpips_weights: Optional[str] = option(None, "LPIPS linear-layer weights (local file).", path=True)
    methods: tuple[str, ...] = METHODS
    dilation: int = option(3, "Motion-region dilation in pixels at 256 x 256.", min=0)
    motion_3d: bool = option(True, "Also score the 3D motion (joint axis, amount) against the dataset's truth.")
    bootstrap_resamples: int = option(2000, "Bootstrap resamples of the confidence intervals.", min=1)

    def __post_init__(self) -> None:
        if self.eval_size < MIN_EVAL_SIZE:
            raise BadInput(f"eval_size must be >= {MIN_EVAL_SIZE} pixels (SSIM's 11-pixel window), got {self.eval_size}")
        unknown = [m for m in self.methods if m not in METHOD_TABLE]
        if unknown:
            raise BadInput(f"unknown methods {unknown}: choose from {list(METHODS)}")
        try:
            check_options(self)
        except ValueError as exc:
            raise BadInput(str(exc)) from None



def group_of(split: str, seen: bool) -> str:
    """The report group of an object: held-out objects of seen categories, the unseen category, or train."""
    if split != "test":
        return TRAIN_GROUP
    return SEEN_NEW if seen else UNSEEN


def choose_pairs(dataset: PairDataset, seed: int, max_sequences: Optional[int] = None) -> list[int]:
    """Indices of the evaluated pairs: per sequence one seeded source stage, every other target."""
    by_seq: dict[str, list[int]] = {}
    for k, ref in enumerate(dataset.pairs):
        by_seq.setdefault(ref.sequence_id, []).append(k)
    chosen = []
    for n, sid in enumerate(sorted(by_seq)):
        if max_sequences is not None and n >= max_sequences:
            break
        rng = np.random.default_rng([seed, n, EVAL_STREAM])
        sources = sorted({dataset.pairs[k].source_stage for k in by_seq[sid]})
        source = sources[int(rng.integers(len(sources)))]
        chosen.extend(k for k in by_seq[sid] if dataset.pairs[k].source_stage == source)
    return chosen


def zero_drags(drags: torch.Tensor) -> torch.Tensor:
    """The same drags with zero displacement: every end point moved onto its start."""
    out = drags.clone()
    out[..., 2:] = out[..., :2]
    return out


def motion_region(dataset: PairDataset, ref, views, size: int, dilation_px: int) -> torch.Tensor:
    """[V, 1, size, size] bool: source ∪ target moving-part masks of ``views``, dilated."""
    source, target = dataset.part_masks(ref, views)
    masks = [resize_mask(s | t, size) for s, t in zip(source, target)]
    return dilate_mask(torch.from_numpy(np.stack(masks))[:, None], dilation_px)



@dataclass(frozen=True)
class Motion3D:
    """The 3D motion errors of one prediction (see the module docstring); None where n/a."""

    chamfer_pred: Optional[float] = None
    chamfer_gt: Optional[float] = None
    chamfer: Optional[float] = None
    joint_found: Optional[float] = None
    type_correct: Optional[float] = None
    axis_err_deg: Optional[float] = None
    amount_err_rel: Optional[float] = None


MOTION_3D_COLUMNS = tuple(f.name for f in fields(Motion3D))


def _target_samples(root: Path, state_id: str) -> tuple[np.ndarray, np.ndarray]:
    return store.read_state_points(root, state_id).astype(np.float64), store.read_state_moving(root, state_id).astype(bool)


def _chamfer(g: np.ndarray, pts: np.ndarray, moving: np.ndarray) -> Motion3D:
    """The Chamfer columns: the opaque Gaussians whose nearest target sample is on the moving
    part against the target's moving-part samples (n/a when either side is empty)."""
    xyz = g[g[:, layout.OPACITY][:, 0] > MIN_OPACITY, layout.XYZ]
    if not len(xyz):
        return Motion3D()
    _, nearest = cKDTree(pts).query(xyz, k=1)
    pred_moving = xyz[moving[nearest]]
    if not (len(pred_moving) and moving.any()):
        return Motion3D()
    gt = pts[moving]
    d_pred, _ = cKDTree(gt).query(pred_moving, k=1)
    d_gt, _ = cKDTree(pred_moving).query(gt, k=1)
    return Motion3D(chamfer_pred=float(d_pred.mean()), chamfer_gt=float(d_gt.mean()), chamfer=float((d_pred.mean() + d_gt.mean()) / 2))


def _estimate_joint(source: torch.Tensor, gaussians: torch.Tensor, correspondence: bool, seed: int) -> Optional[joints.ArticulationEstimate]:
    """The joint that moves ``source`` to ``gaussians``; None when no motion is found."""
    try:
        return joints.from_gaussians(source, gaussians, correspondence=correspondence, seed=seed)
    except joints.NoMotionError:
        if correspondence:  # Gaussian i of both sets is one point: none moved
            return None
    # Unordered inputs find motion through the points of A that B lost; a part that closes
    # onto another (a laptop lid shut on its base) loses none, so also look from B's side:
    # the reversed motion has the same axis line and amount, the axis pointing the other way.
    try:
        rev = joints.from_gaussians(gaussians, source, correspondence=False, seed=seed)
    except joints.NoMotionError:
        return None
    return replace(rev, axis=-rev.axis)


def motion_errors_3d(gaussians: torch.Tensor, source: Optional[torch.Tensor], root: Path, source_state: str, target_state: str,
                     truth=None, seed: int = 0, correspondence: bool = False) -> Motion3D:
    """Chamfer of the predicted moving part against the target's moving-part samples and the
    joint recovered from ``source`` -> ``gaussians`` against the truth (see module docstring).
    ``gaussians`` / ``source``: activated [N, 14] in the object frame; ``source`` None skips the joint."""
    g = gaussians.detach().double().cpu().numpy()
    pts, moving = _target_samples(root, target_state)
    out = _chamfer(g, pts, moving)
    if source is None:
        return out
    truth = truth if truth is not None else joints.dataset_truth(root, source_state, target_state)
    est = _estimate_joint(source, gaussians, correspondence, seed)
    if est is None:  # the prediction moved nothing
        return replace(out, joint_found=0.0, type_correct=0.0, amount_err_rel=1.0)
    cmp = joints.compare(est, truth)
    amount = float(cmp["amount_error"] / truth.amount) if cmp["amount_error"] is not None and truth.amount > 0 else None
    return replace(out, joint_found=1.0, type_correct=float(cmp["type_correct"]), axis_err_deg=float(cmp["axis_angle_deg"]),
                   amount_err_rel=amount)


@dataclass(frozen=True)
class SampleRow:
    """One evaluated sample: a method's prediction of one pair, and its scores (None: n/a).

    The fields, in order, are the columns of ``samples.csv`` and the keys of results.json's
    samples (``record``), ``motion`` standing for the columns of ``Motion3D``: they are left
    out where the 3D motion was not scored (``motion`` None, ``EvalConfig.motion_3d`` off)."""

    method: str
    category: str
    seen: bool
    split: str
    group: str
    object_id: str
    sequence_id: str
    source_state: str
    target_state: str
    psnr: float
    ssim: float
    lpips: Optional[float]
    motion_fraction: float
    psnr_motion: Optional[float]
    ssim_motion: Optional[float]
    lpips_motion: Optional[float]
    psnr_rest: Optional[float]
    ssim_rest: Optional[float]
    motion: Optional[Motion3D] = None
    seconds_forward: float = 0.0
    seconds_render: float = 0.0
    seconds_3d: float = 0.0

    @property
    def pair(self) -> tuple[str, str, str]:
        """The evaluated pair: (sequence, source state, target state)."""
        return self.sequence_id, self.source_state, self.target_state

    def value(self, column: str) -> Any:
        """One column's value; a 3D column of a row whose 3D motion was not scored is None."""
        if column in MOTION_3D_COLUMNS:
            return None if self.motion is None else getattr(self.motion, column)
        return getattr(self, column)

    def record(self) -> dict[str, Any]:
        """The row as samples.csv and results.json write it: column -> value, in column order."""
        return {c: self.value(c) for c in sample_columns([self])}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SampleRow:
        """A row read back from its record (results.json's samples); a metric column that an
        older file lacks is n/a."""
        motion = Motion3D(**{c: record.get(c) for c in MOTION_3D_COLUMNS}) if any(c in record for c in MOTION_3D_COLUMNS) else None
        values = {f.name: (record[f.name] if f.name in _IDENTITY else record.get(f.name)) for f in fields(cls) if f.name != "motion"}
        return cls(**values, motion=motion)


_IDENTITY = ("method", "category", "seen", "split", "group", "object_id", "sequence_id", "source_state", "target_state")


def sample_columns(rows: Sequence[SampleRow]) -> list[str]:
    """The columns of ``rows``: SampleRow's fields in order, Motion3D's in the place of
    ``motion`` when one of the rows scored the 3D motion."""
    with_3d = any(r.motion is not None for r in rows)
    columns: list[str] = []
    for f in fields(SampleRow):
        if f.name != "motion":
            columns.append(f.name)
        elif with_3d:
            columns.extend(MOTION_3D_COLUMNS)
    return columns


def methods_of(rows: Sequence[SampleRow]) -> list[str]:
    """The methods that have rows, in METHODS' order."""
    return [m for m in METHODS if any(r.method == m for r in rows)]


@dataclass
class EvalResult:
    rows: list[SampleRow] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    markdown: str = ""
    lpips_note: str = ""


@dataclass(frozen=True)
class _Run:
    """What stays fixed through one evaluation."""

    cfg: EvalConfig
    root: Path
    device: torch.device
    model: Any
    statics: Optional[StaticCache]
    teacher_db: Any
    dataset: PairDataset
    lpips_model: Any
    methods: list[str]
    dilation_px: int
    splits: dict[str, str]


@dataclass(frozen=True)
class _Pair:
    """One evaluated pair, as every method is scored on it."""

    inputs: MethodInput
    K: torch.Tensor
    c2w: torch.Tensor
    target: torch.Tensor  # [V, 3, S, S] the ground truth composited on white
    region: torch.Tensor  # [V, 1, S, S] bool: the motion region
    truth: Any  # the joint's truth (None: 3D motion not scored, or no teacher)
    identity: dict[str, Any]  # the row's fields that name the sample (category ... target_state)


def runnable_methods(names: Sequence[str], model, teacher_db) -> list[str]:
    """``names`` less those that cannot run: a method under test without a model, a baseline without the teacher database."""
    return [m for m in names if (model is not None if METHOD_TABLE[m].under_test else teacher_db is not None)]


def _prepare(cfg: EvalConfig, model, teacher_db) -> tuple[_Run, list[int]]:
    root = Path(cfg.data)
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    options = dict(target_size=cfg.eval_size, num_drags=cfg.num_drags, drag_mode=cfg.drag_mode)
    pair_cfg = pair_config(model, **options) if model is not None else PairConfig(input_size=256, drag_views="first", **options)
    statics = StaticCache(root, model.config.splat_size) if model is not None and mode_of(model) == "rgbd" else None
    dataset = PairDataset(root, split=cfg.split, categories=list(cfg.categories) if cfg.categories else None, config=pair_cfg,
                          seed=cfg.seed, stream=EVAL_STREAM)
    indices = choose_pairs(dataset, cfg.seed, cfg.max_sequences)
    lpips_model = load_lpips(cfg.vgg_weights, cfg.lpips_weights)
    run = _Run(cfg=cfg, root=root, device=device, model=model, statics=statics, teacher_db=teacher_db, dataset=dataset,
               lpips_model=lpips_model, methods=runnable_methods(cfg.methods, model, teacher_db),
               dilation_px=max(1, round(cfg.dilation * cfg.eval_size / 256)),
               splits={r["object_id"]: r["split"] for r in store.manifest_states(root)})
    return run, indices


def evaluate(cfg: EvalConfig, model=None, teacher_db=None, progress: bool = True) -> EvalResult:
    """Evaluate ``model`` (a PartRM, or None to run only the baselines) and the baselines."""
    run, indices = _prepare(cfg, model, teacher_db)
    note = "" if run.lpips_model is not None else "LPIPS n/a: no local VGG/LPIPS weights (pass --vgg-weights and --lpips-weights)"
    result = EvalResult(lpips_note=note)
    for k in tqdm(indices, desc="eval", unit="pair", disable=not progress, dynamic_ncols=True):
        pair = _load_pair(run, k)
        result.rows.extend(_score(run, pair, method) for method in run.methods)
    result.tables = {m: aggregate([_numeric(r) for r in result.rows if r.method == m], by="category") for m in run.methods}
    result.groups = summarise_groups(result.rows, run.methods, cfg.bootstrap_resamples, cfg.seed)
    result.markdown = markdown_report(result, run.methods)
    return result


def _load_pair(run: _Run, k: int) -> _Pair:
    cfg, ref = run.cfg, run.dataset.pairs[k]
    item = collate([run.dataset[k]])
    views = item["supervised_views"][0]
    gt = item["target_rgb"][:, views] * item["target_alpha"][:, views] + (1 - item["target_alpha"][:, views])
    K, c2w = item["target_K"][:, views].to(run.device), item["target_c2w"][:, views].to(run.device)
    region = motion_region(run.dataset, ref, views.tolist(), cfg.eval_size, run.dilation_px)
    source_g = torch.from_numpy(flat_splatter(run.teacher_db.splatter(ref.source_state))) if run.teacher_db is not None else None
    truth = joints.dataset_truth(run.root, ref.source_state, ref.target_state) if cfg.motion_3d and source_g is not None else None
    split = run.splits.get(ref.object_id, "train")
    seen = categories.get(ref.category).seen
    identity = dict(category=ref.category, seen=seen, split=split, group=group_of(split, seen), object_id=ref.object_id,
                    sequence_id=ref.sequence_id, source_state=ref.source_state, target_state=ref.target_state)
    inputs = MethodInput(ref=ref, item=item, source=source_g, root=run.root, device=run.device, model=run.model, statics=run.statics)
    return _Pair(inputs=inputs, K=K, c2w=c2w, target=gt[0].float(), region=region, truth=truth, identity=identity)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _score(run: _Run, pair: _Pair, method: str) -> SampleRow:
    """One method on one pair: predict, render the evaluated views, score them (and the 3D motion)."""
    cfg, source = run.cfg, pair.inputs.source
    t0 = time.perf_counter()
    prediction = METHOD_TABLE[method].predict(pair.inputs)
    g = prediction.gaussians
    _synchronize(run.device)
    t_forward = time.perf_counter() - t0
    t1 = time.perf_counter()
    with torch.inference_mode():
        rgb, _ = render_views(g, pair.K, pair.c2w, cfg.eval_size)
    _synchronize(run.device)
    t_render = time.perf_counter() - t1
    scores = _image_scores(rgb[0].float().cpu().clamp(0, 1), pair.target, pair.region, run.lpips_model)
    t2 = time.perf_counter()
    motion = None
    if cfg.motion_3d:
        # the oracle, and an RGB-D prediction, change the source Gaussians in place: Gaussian i is one
        # material point in both, so the joint comes from exact correspondences
        aligned = prediction.in_place and source is not None and g.shape[1] == len(source)
        motion = motion_errors_3d(g[0].float().cpu(), source, run.root, pair.inputs.ref.source_state, pair.inputs.ref.target_state,
                                  pair.truth, seed=cfg.seed, correspondence=aligned)
    return SampleRow(method=method, **pair.identity, **scores, motion=motion, seconds_forward=t_forward, seconds_render=t_render,
                     seconds_3d=time.perf_counter() - t2)


def _image_scores(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, lpips_model) -> dict[str, Optional[float]]:
    """SampleRow's image columns: full image, motion region and rest (see the module docstring)."""
    return {
        "psnr": float(psnr(pred, target).mean()), "ssim": float(ssim(pred, target).mean()),
        "lpips": (float(lpips_distance(lpips_model, pred, target).mean()) if lpips_model is not None else None),
        "motion_fraction": float(region.float().mean()),
        "psnr_motion": _value(region_psnr(pred, target, region, pooled=True)),
        "ssim_motion": _value(region_ssim(pred, target, region, pooled=True)),
        "lpips_motion": _value(region_lpips(lpips_model, pred, target, region, pooled=True)),
        "psnr_rest": _value(region_psnr(pred, target, ~region, pooled=True)),
        "ssim_rest": _value(region_ssim(pred, target, ~region, pooled=True)),
    }


def _value(t) -> Optional[float]:
    if t is None:
        return None
    v = float(t)
    return None if math.isnan(v) else v


def _numeric(row: SampleRow) -> dict:
    return {k: v for k, v in row.record().items() if k not in ("seen",)}


def _mean(rows: Sequence[SampleRow], column: str) -> Optional[float]:
    vals = [v for v in (r.value(column) for r in rows) if v is not None]
    return float(np.mean(vals)) if vals else None


SUMMARY_KEYS = ("psnr", "ssim", "lpips", "psnr_motion", "ssim_motion", "lpips_motion", "psnr_rest", "ssim_rest", "motion_fraction",
                "chamfer_pred", "chamfer_gt", "chamfer", "joint_found", "type_correct", "axis_err_deg", "amount_err_rel",
                "seconds_forward", "seconds_render", "seconds_3d")
"""The columns of SampleRow whose group means the summary holds, in results.json's order."""


def summarise_groups(rows: Sequence[SampleRow], methods: Sequence[str], resamples: int = 2000, seed: int = 0) -> dict:
    """Per report group and method: means, paired deltas to static with bootstrap 95 % CI, R."""
    out: dict = {}
    present = list(dict.fromkeys(r.group for r in rows))
    for group in [g for g in GROUP_ORDER if g in present] + [g for g in present if g not in GROUP_ORDER]:
        in_group = [r for r in rows if r.group == group]
        by_method = {m: {r.pair: r for r in in_group if r.method == m} for m in methods}
        means = {m: {k: _mean(list(by_method[m].values()), k) for k in SUMMARY_KEYS} for m in methods}
        out[group] = {m: _method_summary(m, by_method, means, resamples, seed) for m in methods}
    return out


def _method_summary(m: str, by_method: dict[str, dict[tuple, SampleRow]], means: dict[str, dict], resamples: int, seed: int) -> dict:
    """One method's entry of a group: pairs and means; with static: R, R_full and the paired deltas."""
    e = {"pairs": len(by_method[m]), **means[m]}
    if "static" not in by_method:
        return e
    oracle = "oracle" in by_method
    e["R"] = recovery_ratio(means[m]["psnr_motion"], means["static"]["psnr_motion"], means["oracle"]["psnr_motion"]) if oracle else None
    e["R_full"] = recovery_ratio(means[m]["psnr"], means["static"]["psnr"], means["oracle"]["psnr"]) if oracle else None
    static = by_method["static"]
    for metric in ("psnr_motion", "psnr"):
        deltas = [r.value(metric) - static[k].value(metric) for k, r in by_method[m].items()
                  if k in static and r.value(metric) is not None and static[k].value(metric) is not None]
        lo, hi = bootstrap_ci(deltas, n_resamples=resamples, seed=seed)
        e[f"delta_{metric}"] = float(np.mean(deltas)) if deltas else None
        e[f"delta_{metric}_ci"] = [lo, hi]
    return e


def _fmt(value, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _delta(e: dict, metric: str) -> str:
    d = e.get(f"delta_{metric}")
    if d is None:
        return "n/a"
    lo, hi = e.get(f"delta_{metric}_ci", [None, None])
    ci = f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None else ""
    return f"{d:+.2f}{ci}"


def group_table(groups: dict, methods: list[str]) -> str:
    """The report: one row per group and method, full-image, motion-region and 3D columns."""
    lines = ["| group | method | pairs | PSNR ↑ | SSIM ↑ | LPIPS ↓ | motion PSNR ↑ | motion SSIM ↑ | motion LPIPS ↓ | rest PSNR ↑ "
             "| Δ motion PSNR vs static [95% CI] | Δ PSNR vs static [95% CI] | R | Chamfer ↓ | axis err ° ↓ | amount err ↓ | joint found |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for group, entry in groups.items():
        for m in methods:
            e = entry.get(m)
            if e is None or not e["pairs"]:
                continue
            show_delta = METHOD_TABLE[m].under_test
            lines.append(
                f"| {group} | {m} | {e['pairs']} | {_fmt(e['psnr'], 2)} | {_fmt(e['ssim'], 4)} | {_fmt(e['lpips'], 4)} "
                f"| {_fmt(e['psnr_motion'], 2)} | {_fmt(e['ssim_motion'], 4)} | {_fmt(e['lpips_motion'], 4)} | {_fmt(e['psnr_rest'], 2)} "
                f"| {_delta(e, 'psnr_motion') if show_delta else ''} | {_delta(e, 'psnr') if show_delta else ''} | {_fmt(e.get('R'), 2)} "
                f"| {_fmt(e['chamfer'], 4)} | {_fmt(e['axis_err_deg'], 1)} | {_fmt(e['amount_err_rel'], 2)} "
                f"| {_fmt(None if e['joint_found'] is None else 100 * e['joint_found'], 0)}{'' if e['joint_found'] is None else ' %'} |")
    return "\n".join(lines) + "\n"


def category_table(rows: Sequence[SampleRow], methods: list[str]) -> str:
    cats = [c for c in categories.category_names() if any(r.category == c for r in rows)]
    lines = ["| method | category | seen | pairs | PSNR ↑ | SSIM ↑ | LPIPS ↓ | motion PSNR ↑ | forward s | render s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        mrows = [r for r in rows if r.method == m]
        groups = [(c, [r for r in mrows if r.category == c]) for c in cats]
        groups += [("seen", [r for r in mrows if r.seen]), ("unseen", [r for r in mrows if not r.seen]), ("overall", mrows)]
        for name, rs in groups:
            if not rs:
                continue
            seen = "" if name in ("seen", "unseen", "overall") else ("yes" if categories.get(name).seen else "no")
            lines.append(f"| {m} | {name} | {seen} | {len(rs)} | {_fmt(_mean(rs, 'psnr'), 2)} | {_fmt(_mean(rs, 'ssim'), 4)} | {_fmt(_mean(rs, 'lpips'), 4)} "
                         f"| {_fmt(_mean(rs, 'psnr_motion'), 2)} | {_fmt(_mean(rs, 'seconds_forward'), 3)} | {_fmt(_mean(rs, 'seconds_render'), 3)} |")
    return "\n".join(lines) + "\n"


LEGEND = (
    "motion = inside the dilated union of the moving part's source and target masks per view (pooled over the 8 views; "
    "PSNR capped at 100 dB); rest = outside it. Δ = paired per-sample difference to static (mean, percentile bootstrap 95 % CI). "
    "R = (method − static) / (oracle − static) of the group-mean motion PSNR (n/a when the oracle equals static). "
    "zero-drag = PartRM with the same drags at zero displacement (control: should match static). "
    "oracle = the teacher's source Gaussians with the true part motion applied (ceiling of moving the teacher's reconstruction). "
    "Chamfer = mean of both directions between the predicted moving-part Gaussians and the target's moving-part surface samples "
    "(object units); axis err / amount err (relative; 1.0 = no motion found) from `partrm articulation` on source vs prediction."
)


def markdown_report(result: EvalResult, methods: list[str]) -> str:
    parts = [group_table(result.groups, methods), LEGEND, "", "Per category:", "", category_table(result.rows, methods)]
    if result.lpips_note:
        parts += [result.lpips_note]
    return "\n".join(parts) + "\n"


def write_outputs(result: EvalResult, out: Path, cfg: EvalConfig) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store.atomic_write_text(out / "results.md", result.markdown)
    buffer = io.StringIO()
    if result.rows:
        writer = csv.DictWriter(buffer, fieldnames=sample_columns(result.rows))
        writer.writeheader()
        writer.writerows(r.record() for r in result.rows)
    store.atomic_write_text(out / "samples.csv", buffer.getvalue())
    store.atomic_write_json(out / "results.json", {"config": asdict(cfg), "groups": result.groups, "tables": result.tables,
                                                   "lpips_note": result.lpips_note, "samples": [r.record() for r in result.rows]})
