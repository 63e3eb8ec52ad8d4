"""A benchmark recipe: every choice of one end-to-end run in one TOML file.

``benchmarks/bench_e2e.py --recipe FILE`` runs dataset -> geometric Gaussian database ->
teacher -> teacher database -> PartRM -> evaluation on held-out objects from it. Sections:

- ``[dataset]``: ``partdrag4d make-dataset`` options (objects per category, resolution, ...);
- ``[gsdb]``: the geometric database (``partrm.gsdb_render.RenderGsdbConfig``);
- ``[teacher]`` and ``[partrm]``: training options (``partrm.train.TrainConfig``, the keys of
  ``configs/paper.toml``);
- ``[eval]``: evaluation size and the steps where the learning curve measures R.

Unknown sections and keys are refused with the file and key named, like ``load_config``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from partrm.gsdb_render import RenderGsdbConfig
from partrm.train import TrainConfig, load_config


@dataclass(frozen=True)
class DatasetOptions:
    per_category: int = 2
    resolution: int = 256
    quality: str = "draft"
    max_joints: int = 1
    configs: int = 1
    seed: int = 0


@dataclass(frozen=True)
class EvalOptions:
    eval_size: int = 256
    curve_every: int = 0  # measure test R every this many PartRM steps (0: only at the end)
    grid_per_group: int = 3


@dataclass(frozen=True)
class Recipe:
    path: str
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    gsdb: RenderGsdbConfig = field(default_factory=RenderGsdbConfig)
    teacher: dict[str, Any] = field(default_factory=dict)
    partrm: dict[str, Any] = field(default_factory=dict)
    eval: EvalOptions = field(default_factory=EvalOptions)

    def teacher_config(self, data: Path, out: Path, gsdb: Path) -> TrainConfig:
        """The teacher's options; ``gsdb``: the database its L2 phase regresses (the geometric one)."""
        return load_config(**{**self.teacher, "data": str(data), "out": str(out), "gsdb": str(gsdb), "stage": "teacher"})

    @property
    def mode(self) -> str:
        """``rgb`` (teacher -> PartRM) or ``rgbd`` (no teacher: the geometric database is the static input)."""
        return self.partrm.get("mode", "rgb")

    def partrm_config(self, data: Path, out: Path, init: Path | None, gsdb: Path) -> TrainConfig:
        """PartRM's options, initialised from ``init`` (the teacher; None for RGB-D); ``gsdb``: stage 1's database."""
        return load_config(**{**self.partrm, "data": str(data), "out": str(out), "init": str(init) if init else None, "gsdb": str(gsdb)})


SECTIONS = ("dataset", "gsdb", "teacher", "partrm", "eval")
_RUN_KEYS = ("data", "out", "init", "gsdb")  # set by the benchmark, not the recipe


def _options(cls, values: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where}")
    for f in fields(cls):
        if f.name in values and f.type in ("int", "float", "str", int, float, str):
            expected = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            value = values[f.name]
            if isinstance(value, bool) or not isinstance(value, expected if expected is not float else (int, float)):
                raise ValueError(f"{where}: {f.name!r} must be {expected.__name__}, got {value!r}")
    return cls(**values)


def load_recipe(path: Path) -> Recipe:
    """Parse and check a recipe file (every training option through ``load_config``)."""
    path = Path(path)
    raw = tomllib.loads(path.read_text())
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section [{unknown[0]}] in {path} (sections: {', '.join(SECTIONS)})")
    for section in ("teacher", "partrm"):
        values = raw.get(section, {})
        fixed = sorted(set(values) & set(_RUN_KEYS))
        if fixed:
            raise ValueError(f"[{section}] in {path} sets {fixed[0]!r}: the benchmark sets it")
        if section == "teacher" and values.get("stage", "teacher") != "teacher":
            raise ValueError(f"[teacher] in {path}: stage must be teacher")
        try:
            load_config(**{**values, "stage": "teacher"} if section == "teacher" else values)
        except ValueError as exc:
            raise ValueError(f"[{section}] in {path}: {exc}") from None
    gsdb = raw.get("gsdb", {})
    if "input_views" in gsdb:
        gsdb = {**gsdb, "input_views": tuple(gsdb["input_views"])}
    return Recipe(
        path=str(path),
        dataset=_options(DatasetOptions, raw.get("dataset", {}), f"[dataset] in {path}"),
        gsdb=_options(RenderGsdbConfig, gsdb, f"[gsdb] in {path}"),
        teacher={k: v for k, v in raw.get("teacher", {}).items() if k != "stage"},
        partrm=dict(raw.get("partrm", {})),
        eval=_options(EvalOptions, raw.get("eval", {}), f"[eval] in {path}"),
    )
