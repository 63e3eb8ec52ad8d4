"""Training: LGM's own objective (the teacher) and PartRM's two stages (paper Sec. 4.4).

- ``teacher``: LGM on static states: render the predicted Gaussians into the state's
  views; MSE(rgb) + lambda_alpha MSE(alpha) [+ lambda_lpips LPIPS]. With
  ``teacher_l2_steps`` > 0 it first regresses a Gaussian database of the same states
  (L2 on the splatter images, e.g. the geometric ``gsdb build --source render``), then
  trains photometrically.
- stage ``1`` (motion): L2 between PartRM's splatter image for the target state and the
  Gaussian database's (Eq. 5), pixel by pixel. ``stage1_target = "carried"`` compares with
  the database's *source* splatter image moved by the true part motion instead (aligned
  with the input pixels; ``partrm.part_motion``); ``stage1_motion_weight`` adds the L2 mean
  over the source's Gaussians on the moving part (in still pairs too).
- stage ``2`` (appearance): MSE(rgb) + lambda_lpips LPIPS + lambda_alpha MSE(alpha) on
  the target state's rendered views (Eq. 6; lambdas 1 by default).
- ``1+2``: stage 1 for ``stage1_steps``, then stage 2 for ``stage2_steps``.

AdamW, linear warm-up + cosine decay, gradient clipping, bf16 autocast on GPU, drag
noise, through HF accelerate (one CPU to many GPUs with ``accelerate launch``). With
``schedule = "per-stage"`` (default) every stage (stage 1, stage 2; the teacher's L2 and
photometric phases) gets a fresh optimiser and its own warm-up + cosine over its own
steps, as the official code runs its stages as separate trainings; ``"shared"`` keeps one
optimiser and one schedule across the whole run.
The loss terms of every stage are computed in one place (``Losses.loss_dict``); a run is a
``Trainer`` (``setup``, ``resume``, ``step``, ``save``; ``train`` runs one).
Checkpoints are written atomically (model safetensors + optimizer/scheduler/RNG state + the
step record ``trainer_state.json``; runs written when it was ``state.json`` still resume)
and resume exactly: the data order is a seeded permutation per epoch and every item's
randomness is seeded by (seed, epoch, index), so a resumed run repeats the
uninterrupted run's loss curve. A non-finite loss stops with a clear message.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import sys
import time
import tomllib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm import tqdm

from partdrag4d import store
from partdrag4d.errors import BadInput
from partdrag4d.options import SEED_MAX, check as check_options, like, option
from partrm.data import PairConfig, PairDataset, StateDataset, collate
from partrm.gaussians.views import composite, render_views, scale_K
from partrm.gsdb_render import RenderGsdbConfig
from partrm.lpips import load_lpips
from partrm.models.lgm import FRAMES, LGM, LGM_PRESETS, CheckpointError, LGMConfig, read_checkpoint_metadata, read_checkpoint_tensors, reading_checkpoint
from partrm.models.partrm import PartRM, PartRMConfig
from partrm.models.rgbd import MODES, RGBDConfig, RGBDPartRM, ring
from partrm.predict import input_size as input_size_of, mode_of


STAGES = ("teacher", "1", "2", "1+2")
"""``teacher`` (LGM's own objective), PartRM's stage ``1`` (motion) and ``2`` (appearance), or both."""


PARTRM_STAGES = tuple(s for s in STAGES if s != "teacher")
"""The stages ``partrm train`` runs (the teacher is ``partrm pretrain-lgm``)."""
PARTRM, TEACHER = ("train",), ("pretrain-lgm",)
"""The commands that offer an option (``partdrag4d.options.option``'s ``commands``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every training option, with its help, choices and range (``partdrag4d.options``): the
    command lines (``partrm train``, ``partrm pretrain-lgm``) and config files go through
    these definitions. A new option is a new field here."""

    data: str = option("data", "Rendered dataset (PartRM's stages: with drags.h5).", path=True)
    out: str = option("runs/partrm", "Run folder (checkpoints, log.csv, model.safetensors).", path=True)
    stage: str = option("1+2", "1 (motion, needs --gsdb) | 2 (appearance) | 1+2.", choices=STAGES, commands=PARTRM)
    mode: str = option("rgb", "rgb: the paper's PartRM (LGM reconstructs) | rgbd: the static reconstruction is the geometric one "
                       "from RGB-D views (--gsdb: `gsdb build --source render`), the network learns the motion (models/rgbd.py).",
                       choices=MODES, commands=PARTRM)
    splat_size: int = option(128, "--mode rgbd: Gaussians per view side of the static reconstruction (the --gsdb must be built at it).",
                             min=1, commands=PARTRM)
    model: str = option("tiny", "LGM preset when starting without --init.", choices=LGM_PRESETS)
    input_size: int = option(0, "Input size of the --model preset (without --init); 0: the preset's (tiny 64, small/big 256). "
                             "The splatter image scales with it (tiny at 32: 4 x 16^2 Gaussians).", min=0)
    init: Optional[str] = option(None, "Start from these weights: a teacher/official LGM (e.g. model_fp16_fixrot.safetensors) "
                                 "or a PartRM checkpoint.", flags=("--init", "--lgm-weights"), path=True)
    lgm_frame: Optional[str] = option(None, "Camera frame of the --init LGM weights: auto (a file without this project's metadata "
                                      "whose tensors match an LGM preset, e.g. the official model_fp16_fixrot.safetensors, is in "
                                      "LGM's frame; ours record theirs) | lgm | object.", choices=FRAMES, none="auto")
    gsdb: Optional[str] = option(None, "Gaussian database: stage 1's targets, the teacher's L2 phase (--l2-steps), --mode rgbd's "
                                 "static input (default DATA/gsdb.h5).", path=True)
    drag_sizes: Optional[tuple[int, ...]] = option(None, "Comma list of feature sizes with drag maps (unset: every down block).",
                                                   commands=PARTRM)
    steps: int = option(0, "Steps of a single stage, overriding its own count (pretrain-lgm: the photometric steps); "
                        "0: the stage's own (--stage1-steps, --stage2-steps, --teacher-steps).", min=0)
    stage1_steps: int = option(200, "Stage 1's steps (stage 1+2, or stage 1 without --steps).", min=0, commands=PARTRM)
    stage2_steps: int = option(100, "Stage 2's steps (stage 1+2, or stage 2 without --steps).", min=0, commands=PARTRM)
    teacher_steps: int = option(300, "The teacher's photometric steps (without --steps).", min=0, commands=TEACHER)
    teacher_l2_steps: int = option(0, "Steps of L2 to the Gaussian database's splatter images (--gsdb, e.g. `gsdb build --source "
                                   "render`) before the photometric steps.", flags=("--l2-steps",), min=0, commands=TEACHER)
    batch_size: int = option(4, "Items per step (per process).", min=1)
    lr: float = option(4e-4, "Peak learning rate (AdamW).", min=0.0)
    stage2_lr: Optional[float] = option(None, "Stage 2's own peak learning rate (needs --schedule per-stage; unset: --lr).",
                                        commands=PARTRM)
    weight_decay: float = option(0.05, "AdamW weight decay.", min=0.0)
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas, a comma pair.")
    warmup_steps: int = option(20, "Linear warm-up steps (per stage with --schedule per-stage).", min=0)
    min_lr_ratio: float = option(0.05, "The cosine decay ends at this share of the peak learning rate.", min=0.0, max=1.0)
    schedule: str = option("per-stage", "per-stage: a fresh optimiser and warm-up + cosine per stage (the official code's separate "
                           "trainings) | shared: one across the run.", choices=("per-stage", "shared"))
    grad_clip: float = option(1.0, "Gradient norm clip (0: off).", min=0.0)
    mixed_precision: str = option("auto", "auto (bf16 on GPU, fp32 on CPU) | no | bf16 | fp16.", choices=("auto", "no", "bf16", "fp16"))
    num_drags: int = option(10, "Drags per input view.", min=1, commands=PARTRM)
    drag_mode: str = option("propagated", "propagated (the paper's Eq. 2, from the part mask) | visible (the stored visible drags).",
                            choices=("propagated", "visible"), commands=PARTRM)
    drag_noise_px: float = option(2.0, "Std of the training noise on drag ends (px of a 512 image).", flags=("--drag-noise",),
                                  min=0.0, commands=PARTRM)
    drag_views: str = option("first", "first (the user's image, as at inference) | all input views.", choices=("first", "all"),
                             commands=PARTRM)
    stage1_target: str = like(PairConfig, "stage1_target", default="target", commands=PARTRM,
                              help="Stage 1's splatter target: the target state's own (target, the paper's Eq. 5) or the source's "
                                   "carried by the true part motion (carried: aligned with the input pixels).")
    zero_drag_prob: float = like(PairConfig, "zero_drag_prob", default=0.0, commands=PARTRM,
                                 help="Share of training pairs made still: the same drags with zero displacement and the source "
                                      "state as the target, so the model learns that no drag means no motion.")
    stage1_motion_weight: float = option(0.0, "Stage 1: add this x the L2 mean over the source's Gaussians on the moving part, in "
                                         "still pairs too (0: the paper's plain L2).", min=0.0, commands=PARTRM)
    lambda_lpips: float = option(1.0, "Weight of the LPIPS term (stage 2, teacher).", min=0.0)
    lambda_alpha: float = option(1.0, "Weight of the alpha MSE term (stage 2, teacher).", min=0.0)
    vgg_weights: Optional[str] = option(None, "torchvision vgg16 weights for LPIPS (local file; without: no LPIPS term).", path=True)
    lpips_weights: Optional[str] = option(None, "LPIPS linear-layer weights (local file).", path=True)
    render_size: int = option(0, "Supervision render size (stage 2, teacher); 0: the model's input size.", min=0)
    supervise: str = option("novel", "Supervised views: novel (the 8 not used as input) | all | a comma list of view indices.")
    split: str = option("train", "Always train: held-out (test) objects are never trained on.", commands=())
    categories: Optional[tuple[str, ...]] = option(None, "Comma list of categories to train on (unset: all).")
    sequences: Optional[tuple[str, ...]] = option(None, "Comma list of sequences to train on (unset: all).", commands=PARTRM)
    states: Optional[tuple[str, ...]] = option(None, "Comma list of states to train the teacher on (unset: all).", commands=TEACHER)
    workers: int = option(0, "Data loader processes (0: in the training process).", min=0)
    log_every: int = option(10, "Flush the log and update the progress bar every this many steps.", min=1)
    ckpt_every: int = option(100, "Write a checkpoint every this many steps (and at the end).", min=1)
    keep_checkpoints: int = option(2, "Checkpoints kept (0: all).", min=0)
    seed: int = option(0, "Seed of the initialisation, the data order and every item's randomness.", min=0, max=SEED_MAX)
    progress: bool = option(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        """The options' own rules (choices, ranges) and how they go together."""
        if self.split != "train":
            raise ValueError(f"training reads the train split only (test objects are held out for evaluation), got split={self.split!r}")
        check_options(self)
        if self.total_steps() == 0:
            raise ValueError(f"stage {self.stage!r} has no steps to run")
        if self.stage2_lr is not None and (self.stage2_lr <= 0 or self.schedule != "per-stage"):
            raise ValueError(f"stage2_lr must be > 0 and needs schedule per-stage, got {self.stage2_lr} with schedule {self.schedule!r}")
        if self.input_size and self.init:
            raise ValueError(f"input_size {self.input_size} sizes a new --model preset; the --init weights {self.init} have their own")
        if self.mode == "rgbd" and self.stage == "teacher":
            raise ValueError("mode rgbd has no teacher: its static reconstruction is geometric (train stages 1 / 2 / 1+2)")

    def stages(self) -> list[tuple[str, int, int]]:
        """The run's stages as (name, first step, end step); "teacher-l2" is the teacher's L2 phase."""
        if self.stage == "1+2":
            parts = [("1", self.stage1_steps), ("2", self.stage2_steps)]
        elif self.stage == "teacher":
            parts = [("teacher-l2", self.teacher_l2_steps), ("teacher", self.steps or self.teacher_steps)]
        else:
            parts = [(self.stage, self.steps or {"1": self.stage1_steps, "2": self.stage2_steps}[self.stage])]
        out, start = [], 0
        for name, n in parts:
            if n > 0:
                out.append((name, start, start + n))
                start += n
        return out

    def total_steps(self) -> int:
        stages = self.stages()
        return stages[-1][2] if stages else 0

    def stage_at(self, step: int) -> str:
        return self.stage_span(step)[0]

    def stage_span(self, step: int) -> tuple[str, int, int]:
        stages = self.stages()
        for span in stages:
            if step < span[2]:
                return span
        return stages[-1]


def load_config(path: Optional[Path] = None, **overrides: Any) -> TrainConfig:
    """Defaults < config file (TOML or JSON) < explicit overrides (flags); checked by ``TrainConfig``."""
    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        values.update(tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(_FIELD_TYPES)
    if unknown:
        raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
    for key, value in values.items():
        if isinstance(value, list):
            value = values[key] = tuple(value)
        _check_type(key, value, _FIELD_TYPES[key], path)
    return TrainConfig(**values)


_FIELD_TYPES = typing.get_type_hints(TrainConfig)


def _check_type(key: str, value: Any, hint: Any, source: Optional[Path]) -> None:
    """Refuse a value of the wrong type (``lr = "fast"``, ``steps = 1.5``) with one line naming the option."""
    def ok(v: Any, h: Any) -> bool:
        origin, args = typing.get_origin(h), typing.get_args(h)
        if origin is typing.Union:
            return any(ok(v, a) for a in args)
        if h is type(None):
            return v is None
        if origin is tuple:
            if not isinstance(v, tuple):
                return False
            items = args[:1] * len(v) if len(args) == 2 and args[1] is Ellipsis else args
            return len(items) == len(v) and all(ok(x, a) for x, a in zip(v, items))
        if h is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if h is int:
            return isinstance(v, int) and not isinstance(v, bool)
        return isinstance(v, h)

    if not ok(value, hint):
        where = f" in {source}" if source is not None else ""
        name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise ValueError(f"training option {key!r}{where} must be {name}, got {value!r}")


class TrainingDiverged(RuntimeError):
    pass


# ------------------------------------------------------------------ data order


class EpochSampler(torch.utils.data.Sampler):
    """Seeded permutation per epoch, sharded by rank, startable at any step (exact resume).

    Yields ``epoch * len(dataset) + index`` so items can seed their randomness by epoch."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world
        self.per_epoch = max(1, size // (batch_size * world))

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            epoch, pos = divmod(step, self.per_epoch)
            perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)).tolist()
            if len(perm) < self.batch_size * self.world:  # tiny datasets: repeat to fill a batch
                perm = (perm * math.ceil(self.batch_size * self.world / len(perm)))[: self.batch_size * self.world]
            start = (pos * self.world + self.rank) * self.batch_size
            for i in perm[start : start + self.batch_size]:
                yield epoch * self.size + i
            step += 1

    def __len__(self) -> int:  # pragma: no cover - infinite stream
        return sys.maxsize


class EpochSeeded(torch.utils.data.Dataset):
    """Wraps a dataset whose items take their randomness from ``seed``: index ``e * n + i``
    gives item ``i`` with seed (seed, e)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        epoch, i = divmod(index, len(self.dataset))
        if hasattr(self.dataset, "seed"):
            self.dataset.seed = self.seed * 1_000_003 + epoch
        return self.dataset[i]


# ------------------------------------------------------------------ losses


def _select_views(batch: dict, supervise: str) -> torch.Tensor:
    """Views rendered for the photometric loss: the 8 not used as input, all 12, or a list."""
    if supervise == "novel":
        return batch["supervised_views"][0]
    if supervise == "all":
        return torch.arange(batch["target_rgb"].shape[1])
    return torch.tensor([int(v) for v in supervise.split(",")])


def lgm_of(model):
    """The LGM inside a PartRM (or the model itself for the teacher), unwrapped from DDP."""
    model = getattr(model, "module", model)
    return model.lgm if hasattr(model, "lgm") else model


class Losses:
    """Every stage's loss terms in one place, weighted by the run's own config:
    ``loss_dict(model, batch, stage, render_size)`` gives the named terms of a batch and
    ``"loss"``, the weighted sum that is minimised.

    - ``1`` / ``teacher-l2``: ``l2`` between the predicted splatter image and the database's
      (Eq. 5); stage 1 adds ``stage1_motion_weight`` x ``l2_motion``, the mean over the
      source's Gaussians on the moving part. RGB-D: ``l2_region``, the L2 over the Gaussians
      the model may change (``l2``: over all, logged only).
    - ``2`` / ``teacher``: ``mse`` (rgb) + ``lambda_alpha`` x ``alpha`` [+ ``lambda_lpips`` x
      ``lpips``] on the supervised views (Eq. 6)."""

    def __init__(self, cfg: TrainConfig, lpips_model=None):
        self.cfg = cfg
        self.lpips = lpips_model

    @classmethod
    def load(cls, cfg: TrainConfig, device, say=print) -> "Losses":
        """With the LPIPS module when the run has a photometric stage and its weights are given."""
        lpips_model = load_lpips(cfg.vgg_weights, cfg.lpips_weights) if cfg.stage != "1" else None
        if lpips_model is None and cfg.stage != "1" and cfg.lambda_lpips > 0:
            say("LPIPS term off: no local VGG/LPIPS weights (pass --vgg-weights and --lpips-weights)")
        return cls(cfg, lpips_model.to(device) if lpips_model is not None else None)

    def loss_dict(self, model, batch: dict, stage: str, render_size: int) -> dict[str, torch.Tensor]:
        if mode_of(model) == "rgbd":
            splatter = self._rgbd_splatter(model, batch)
            if stage == "1":
                return self.region_l2(splatter, batch, getattr(model, "module", model).config.appearance_ring)
            return self.photometric(LGM.gaussians(splatter), batch, render_size)
        lgm = lgm_of(model)
        splatter = self._splatter(model, lgm, batch, stage)
        if stage in ("1", "teacher-l2"):
            return self.splatter_l2(splatter, batch, self.cfg.stage1_motion_weight if stage == "1" else 0.0)
        return self.photometric(lgm.gaussians(splatter), batch, render_size)

    @staticmethod
    def _splatter(model, lgm, batch: dict, stage: str) -> torch.Tensor:
        """The predicted splatter image in the object frame (the teacher takes no drags)."""
        x, frame = lgm.object_frame_inputs(batch["input_rgb"], (batch["input_K"], batch["input_c2w"]))
        if stage in ("teacher", "teacher-l2"):
            splatter = model(x)
        else:
            splatter = model(x, batch["drags"], batch["drag_valid"])
        return lgm.splatter_to_object(splatter, frame)

    @staticmethod
    def _rgbd_splatter(model, batch: dict) -> torch.Tensor:
        inner = getattr(model, "module", model)
        x = inner.prepare_inputs(batch["input_rgb"], batch["input_depth"], batch["input_K"], batch["input_c2w"])
        return model(x, batch["gs_source"], batch["region"], batch["drags"], batch["drag_valid"], (batch["input_K"], batch["input_c2w"]))

    def splatter_l2(self, splatter: torch.Tensor, batch: dict, motion_weight: float) -> dict[str, torch.Tensor]:
        if splatter.shape != batch["gs_target"].shape:
            raise ValueError(f"the Gaussian database holds splatter images {tuple(batch['gs_target'].shape[1:])} but the model "
                             f"predicts {tuple(splatter.shape[1:])}: build it with the model's splat size (gsdb build --splat-size)")
        err = (splatter.float() - batch["gs_target"].float()) ** 2
        loss = err.mean()
        terms = {"l2": loss.detach()}
        if motion_weight > 0:
            # the moving part is a few percent of the pixels: its own mean, weighted, so the motion is not
            # drowned by the reconstruction residual of everything that stays put. The part's Gaussians are
            # weighted in still pairs too, where the lesson is that a drag without displacement moves nothing.
            part = batch["gs_part"]
            motion = (err * part).sum() / (part.sum() * err.shape[2]).clamp(min=1.0)
            terms["l2_motion"] = motion.detach()
            loss = loss + motion_weight * motion
        return {"loss": loss, **terms}

    @staticmethod
    def region_l2(splatter: torch.Tensor, batch: dict, appearance_ring: int) -> dict[str, torch.Tensor]:
        """RGB-D stage 1: the L2 to the carried target over the Gaussians the model may change
        (the drag region and its ring; everything else equals the target's static part exactly,
        so it adds nothing but a smaller mean)."""
        if splatter.shape != batch["gs_target"].shape:
            raise ValueError(f"the Gaussian database holds splatter images {tuple(batch['gs_target'].shape[1:])} but the RGB-D model "
                             f"works at {tuple(splatter.shape[1:])}: build it with gsdb build --source render --splat-size {splatter.shape[-1]}")
        weight = ring(batch["region"], appearance_ring).to(splatter.dtype)
        err = (splatter.float() - batch["gs_target"].float()) ** 2
        loss = (err * weight).sum() / (weight.sum() * err.shape[2]).clamp(min=1.0)
        return {"loss": loss, "l2_region": loss.detach(), "l2": err.mean().detach()}

    def photometric(self, gaussians: torch.Tensor, batch: dict, size: int) -> dict[str, torch.Tensor]:
        views = _select_views(batch, self.cfg.supervise)
        target_size = batch["target_rgb"].shape[-1]
        K = scale_K(batch["target_K"][:, views], target_size, size)
        rgb, alpha = render_views(gaussians, K, batch["target_c2w"][:, views], size)
        gt_rgb, gt_alpha = batch["target_rgb"][:, views], batch["target_alpha"][:, views]
        if target_size != size:
            b, c = gt_rgb.shape[:2]
            gt_rgb = F.interpolate(gt_rgb.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False, antialias=True).view(b, c, 3, size, size)
            gt_alpha = F.interpolate(gt_alpha.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False, antialias=True).view(b, c, 1, size, size)
        gt = composite(gt_rgb, gt_alpha)
        terms = {"mse": F.mse_loss(rgb, gt), "alpha": F.mse_loss(alpha, gt_alpha)}
        loss = terms["mse"] + self.cfg.lambda_alpha * terms["alpha"]
        if self.lpips is not None and self.cfg.lambda_lpips > 0:
            terms["lpips"] = self.lpips(rgb.flatten(0, 1), gt.flatten(0, 1)).mean()
            loss = loss + self.cfg.lambda_lpips * terms["lpips"]
        terms["loss"] = loss
        return terms


# ------------------------------------------------------------------ checkpoints


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_RECORD = "trainer_state.json"
"""A checkpoint's step record: step, config, time, the optimiser state's stage."""
OLD_CHECKPOINT_RECORD = "state.json"
"""Its name in runs written before it was renamed (read when resuming one)."""


def checkpoint_record(checkpoint: Path) -> Path:
    """The step record of a checkpoint folder: ``trainer_state.json``, or an old run's ``state.json``."""
    record = checkpoint / CHECKPOINT_RECORD
    return record if record.is_file() or not (checkpoint / OLD_CHECKPOINT_RECORD).is_file() else checkpoint / OLD_CHECKPOINT_RECORD


def save_checkpoint(run: Path, step: int, model, optimizer, scheduler, cfg: TrainConfig, keep: int,
                    optimizer_stage: Optional[str] = None) -> Path:
    """``checkpoints/step_XXXXXXX/`` assembled under a temporary name and renamed; records
    which stage the optimiser state belongs to (a resume at a stage boundary starts fresh)."""
    target = run / "checkpoints" / f"step_{step:07d}"
    with store.StagingDir(target) as tmp:
        model.save(tmp / "model.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()}, tmp / "optimizer.pt")
        store.atomic_write_json(tmp / CHECKPOINT_RECORD, {"step": step, "config": asdict(cfg), "time": time.time(),
                                                          "optimizer_stage": optimizer_stage})
    checkpoints = sorted((run / "checkpoints").glob("step_*"))
    for old in checkpoints[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(run: Path) -> Optional[Path]:
    found = [p for p in sorted((run / "checkpoints").glob("step_*")) if checkpoint_record(p).is_file()]
    return found[-1] if found else None


# ------------------------------------------------------------------ building blocks


def build_model(cfg: TrainConfig):
    """Teacher: an LGM. Stages: a PartRM from ``init`` (PartRM checkpoint or LGM weights)."""
    if cfg.stage == "teacher":
        if cfg.init:
            return LGM.from_pretrained(cfg.init, frame=cfg.lgm_frame)
        return LGM(LGMConfig.preset(cfg.model, cfg.input_size))
    if cfg.mode == "rgbd":
        if cfg.init:
            return RGBDPartRM.load(cfg.init)
        return RGBDPartRM(RGBDConfig(unet=LGMConfig.preset(cfg.model, cfg.input_size), splat_size=cfg.splat_size, drag_sizes=cfg.drag_sizes,
                                     drag_views=cfg.drag_views))
    if cfg.init:
        path = Path(cfg.init)
        if not path.is_file():
            raise FileNotFoundError(f"initial weights not found: {path} (pass --init PATH: a teacher/official LGM or a PartRM checkpoint)")
        meta = read_checkpoint_metadata(path, "--init weights")
        if "partrm_rgbd_config" in meta:
            raise CheckpointError(f"{path}: cannot load --init weights: an RGB-D PartRM checkpoint (train it with --mode rgbd)")
        if "partrm_config" in meta:
            return PartRM.load(path)
        lgm = LGM.from_pretrained(path, frame=cfg.lgm_frame)
        return PartRM.from_lgm(lgm, PartRMConfig(lgm=lgm.config, drag_sizes=cfg.drag_sizes, drag_views=cfg.drag_views))
    print("PartRM starts from a randomly initialised LGM (no --init given)", file=sys.stderr)
    return PartRM(PartRMConfig(lgm=LGMConfig.preset(cfg.model, cfg.input_size), drag_sizes=cfg.drag_sizes, drag_views=cfg.drag_views))


def build_dataset(cfg: TrainConfig, model, stage: str):
    rgbd = mode_of(model) == "rgbd"
    input_size = input_size_of(model)
    render = cfg.render_size or input_size
    cats = list(cfg.categories) if cfg.categories else None
    split = "train"  # always: held-out objects are never trained on (TrainConfig refuses others)
    gsdb = None
    if stage in ("1", "teacher-l2") or rgbd:  # an RGB-D model reads its static input from the geometric database in both stages
        gsdb = Path(cfg.gsdb) if cfg.gsdb else store.gsdb_file(cfg.data)
        if not gsdb.is_file():
            what = "stage 1" if stage == "1" else "the teacher's L2 phase (teacher_l2_steps)"
            raise FileNotFoundError(f"{what} needs a Gaussian database: {gsdb} not found (build it with `partrm gsdb build`, or pass --gsdb PATH)")
    if rgbd:
        check_static_database(gsdb, model.config.splat_size)
    if stage in ("teacher", "teacher-l2"):
        return StateDataset(Path(cfg.data), split=split, categories=cats, input_size=input_size,
                            target_size=0 if stage == "teacher-l2" else render,
                            states=list(cfg.states) if cfg.states else None, gsdb=gsdb)
    pair_cfg = PairConfig(input_size=input_size, target_size=0 if stage == "1" else render, num_drags=cfg.num_drags, drag_mode=cfg.drag_mode,
                          drag_noise_px=cfg.drag_noise_px, drag_views=model.config.drag_views, stage1_target=cfg.stage1_target,
                          zero_drag_prob=cfg.zero_drag_prob, depth=rgbd, region_size=model.config.splat_size if rgbd else 0,
                          region_fraction=model.config.gate_fraction if rgbd else RGBDConfig.gate_fraction)
    pairs = PairDataset(Path(cfg.data), split="train", categories=cats, config=pair_cfg, gsdb=gsdb, seed=cfg.seed,
                        sequences=list(cfg.sequences) if cfg.sequences else None)
    # drags.h5 carries each sequence's split from when it was built; the manifest is the truth
    _refuse_held_out(held_out_objects(Path(cfg.data)), {p.object_id for p in pairs.pairs}, pairs.drag_path.name)
    return pairs


def check_static_database(gsdb: Path, splat_size: int) -> None:
    """An RGB-D model trains on the geometric database as its static input: it must be the
    construction inference runs (``gsdb build --source render``, default input views and
    construction, no refinement) at the model's splat size."""
    with h5py.File(gsdb, "r") as f:
        attrs = dict(f.attrs)
    built = json.loads(attrs.get("render_config", "null") or "null")
    expected = json.loads(RenderGsdbConfig(splat_size=splat_size).to_json())
    if attrs.get("source") != "render" or built is None:
        raise BadInput(f"{gsdb} is not a geometric database: an RGB-D model needs `partrm gsdb build --source render --splat-size {splat_size}`")
    differs = sorted(k for k in expected if k != "seed" and built.get(k) != expected[k])
    if differs:
        raise BadInput(f"{gsdb} was built with other settings than the RGB-D model's static input ({', '.join(differs)}): "
                       f"rebuild it with `partrm gsdb build --source render --splat-size {splat_size}` and no other options")


def held_out_objects(root: Path) -> set[str]:
    """Objects the dataset manifest puts in ``test`` (with any of their records)."""
    if not store.has_manifest(root):
        return set()
    return {r["object_id"] for r in store.manifest_states(root) if r.get("split") != "train"}


def _refuse_held_out(held_out: set[str], used: set[str], source: str) -> None:
    leaked = sorted(held_out & used)
    if leaked:
        raise RuntimeError(f"{source} lists held-out (test) object {leaked[0]} as train ({len(leaked)} such objects): "
                           "it is older than the manifest; rebuild it (`partdrag4d drags DATA`) before training")


def lr_lambda(cfg: TrainConfig, steps: Optional[int] = None):
    """Linear warm-up then cosine decay to ``min_lr_ratio`` over ``steps`` (default: the whole run)."""
    total = max(1, cfg.total_steps() if steps is None else steps)

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


@dataclass
class TrainResult:
    run: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    model_path: Optional[Path] = None


class Trainer:
    """One training run: ``setup`` (seeds, accelerator, run folder, model, losses), ``resume``
    (the last checkpoint's weights, RNG and optimiser state), ``step`` (one optimisation
    step), ``save`` (a checkpoint); ``fit`` runs the steps and logs them."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.run = Path(cfg.out)
        self.loaders: dict[str, Any] = {}
        self.optimizer_stage: Optional[str] = None

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() else "no"
        self.accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        self.run.mkdir(parents=True, exist_ok=True)
        store.atomic_write_json(self.run / "config.json", {**asdict(cfg), "resolved_mixed_precision": mp, "torch": torch.__version__})
        self.model = build_model(cfg)
        self.losses = Losses.load(cfg, self.accelerator.device, self.accelerator.print)

    def resume(self, resume: bool = True) -> int:
        """Continue from the run's last checkpoint (``resume``) or start afresh; prepares the
        model and its optimiser. Returns the first step to run."""
        checkpoint = latest_checkpoint(self.run) if resume else None
        start, state = self._load(checkpoint) if checkpoint is not None else (0, None)
        self._new_optimiser(start)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.render_size = self.cfg.render_size or input_size_of(self.accelerator.unwrap_model(self.model))
        return start

    def _load(self, checkpoint: Path) -> tuple[int, Optional[dict]]:
        """Weights and RNG from ``checkpoint``; its step and optimiser state (None where the
        checkpoint closed a stage: the next one starts with a fresh optimiser)."""
        cfg, what = self.cfg, "the checkpoint to resume from (--restart ignores it)"
        with reading_checkpoint(checkpoint / "model.safetensors", what):
            self.model.load_state_dict(read_checkpoint_tensors(checkpoint / "model.safetensors", what=what), strict=True)
        with reading_checkpoint(checkpoint / "optimizer.pt", what):
            state = torch.load(checkpoint / "optimizer.pt", weights_only=False)
            rng = state["rng"]
        _set_rng_state(rng)
        record = checkpoint_record(checkpoint)
        with reading_checkpoint(record, what):
            info = store.read_json(record)
        start = info["step"]
        if cfg.schedule == "per-stage" and info.get("optimizer_stage", cfg.stage_at(start - 1)) != cfg.stage_at(start):
            state = None
        self.accelerator.print(f"resuming from {checkpoint} (step {start})")
        return start, state

    def _optimiser_stage(self, step: int) -> Optional[str]:
        """The stage an optimiser serves: the stage of ``step`` (per-stage schedule) or the run (None)."""
        return self.cfg.stage_at(step) if self.cfg.schedule == "per-stage" else None

    def _new_optimiser(self, step: int) -> None:
        """A fresh AdamW and its schedule: per stage (the stage holding ``step``) or for the whole run."""
        cfg = self.cfg
        name, first, end = cfg.stage_span(step)
        lr = cfg.stage2_lr if name == "2" and cfg.stage2_lr is not None else cfg.lr
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
        steps = end - first if cfg.schedule == "per-stage" else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, steps))
        self.optimizer_stage = self._optimiser_stage(step)

    def _loader(self, stage: str, step: int) -> Iterator[dict]:
        """The stage's batches from its ``step``-th on (the data order resumes exactly)."""
        cfg, accelerator = self.cfg, self.accelerator
        dataset = EpochSeeded(build_dataset(cfg, accelerator.unwrap_model(self.model), stage), cfg.seed)
        if len(dataset) == 0:
            raise RuntimeError(f"no training items for stage {stage} in {cfg.data} (split {cfg.split!r}): render the dataset and build its drags first")
        sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed, step, accelerator.process_index, accelerator.num_processes)
        return iter(torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                                                num_workers=cfg.workers, persistent_workers=cfg.workers > 0))

    def step(self, step: int) -> tuple[str, dict[str, torch.Tensor]]:
        """One optimisation step (a new stage first gets its data and, per stage, its optimiser);
        returns the stage and its loss terms."""
        stage, first_of_stage, _ = self.cfg.stage_span(step)
        if stage not in self.loaders:
            self.loaders = {stage: self._loader(stage, step - first_of_stage)}
        if self._optimiser_stage(step) != self.optimizer_stage:
            self._new_optimiser(step)
            self.optimizer = self.accelerator.prepare(self.optimizer)
        batch = _to_device(next(self.loaders[stage]), self.accelerator.device)
        with self.accelerator.autocast():
            terms = self.losses.loss_dict(self.model, batch, stage, self.render_size)
        self._check_finite(step, stage, terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(terms["loss"])
        if self.cfg.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return stage, terms

    def _check_finite(self, step: int, stage: str, terms: dict[str, torch.Tensor]) -> None:
        if not torch.isfinite(terms["loss"]):
            raise TrainingDiverged(
                f"non-finite loss at step {step} (stage {stage}): "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                + f"; last checkpoint: {latest_checkpoint(self.run) or 'none'}. Lower --lr or check the data."
            )

    def save(self, step: int) -> Path:
        """A checkpoint after ``step`` steps (``checkpoints/step_XXXXXXX``; the oldest beyond ``keep_checkpoints`` go)."""
        return save_checkpoint(self.run, step, self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler, self.cfg,
                               self.cfg.keep_checkpoints, self.optimizer_stage)

    def fit(self, start: int, stop_after: Optional[int] = None) -> TrainResult:
        """Steps ``start`` to the end (or ``stop_after``), logged, checkpointed; the model when the run is complete."""
        cfg, main = self.cfg, self.accelerator.is_main_process
        total = cfg.total_steps()
        end = min(total, stop_after) if stop_after is not None else total
        result = TrainResult(run=self.run, steps=start)
        with TrainLog(self.run / "log.csv", start) as log:
            bar = tqdm(range(start, end), desc=f"train {cfg.stage}", unit="step", disable=not (cfg.progress and main), dynamic_ncols=True)
            self.model.train()
            for step in bar:
                stage, terms = self.step(step)
                result.losses.append(float(terms["loss"].detach()))
                result.steps = step + 1
                if main:
                    log.write(step + 1, stage, terms, self.scheduler.get_last_lr()[0])
                    if (step + 1) % cfg.log_every == 0:
                        log.flush()
                        bar.set_postfix(loss=f"{result.losses[-1]:.4f}", stage=stage)
                    if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
                        self.save(step + 1)
        result.seconds = log.seconds
        if main and result.steps == total:
            result.model_path = self.run / "model.safetensors"
            self.accelerator.unwrap_model(self.model).save(result.model_path)
        return result


def train(cfg: TrainConfig, resume: bool = True, stop_after: Optional[int] = None) -> TrainResult:
    """Train per ``cfg``; ``stop_after`` ends the run early (after that many total steps) as an
    interruption would, leaving its checkpoint behind."""
    trainer = Trainer(cfg)
    trainer.setup()
    start = trainer.resume(resume)
    return trainer.fit(start, stop_after)


class TrainLog:
    """``log.csv``: one row per step (step, stage, loss, its terms, learning rate, seconds since
    the start). On resume the rows after the checkpoint go; a fresh run starts a new file."""

    HEADER = ["step", "stage", "loss", "terms", "lr", "seconds"]

    def __init__(self, path: Path, start: int):
        self.path, self.start = path, start

    def __enter__(self) -> "TrainLog":
        if self.start == 0 and self.path.exists():
            self.path.unlink()
        self._truncate()
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)
        if self.start == 0:
            self.writer.writerow(self.HEADER)
        self.t0 = time.perf_counter()
        return self

    def write(self, step: int, stage: str, terms: dict[str, torch.Tensor], lr: float) -> None:
        value = float(terms["loss"].detach())
        detail = json.dumps({k: round(float(v.detach()), 6) for k, v in terms.items() if k != "loss"})
        self.writer.writerow([step, stage, f"{value:.6g}", detail, f"{lr:.4g}", f"{self.seconds:.2f}"])

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def flush(self) -> None:
        self.file.flush()

    def __exit__(self, *exc: Any) -> None:
        self.file.close()

    def _truncate(self) -> None:
        """On resume, drop log rows written after the checkpoint we restart from."""
        if self.start == 0 or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        buffer = io.StringIO()
        csv.writer(buffer).writerows([rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= self.start])
        store.atomic_write_text(self.path, buffer.getvalue())


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def read_log(run: Path) -> list[dict]:
    with open(Path(run) / "log.csv", newline="") as f:
        return list(csv.DictReader(f))
