"""The options of the dataset commands, one home each: ``StepOptions`` holds every option
that several steps share (help, flags, choices, range, default); each command's config
takes its fields from there (``options.like``, with this command's own help or default
where the step gives the option another meaning) and adds its own. ``partdrag4d.cli``
builds the commands' options from these configs (``cliutil.config_options``); the
positional arguments (a source or dataset folder) stay the commands' own parameters.

The field order is the order of ``--help``. No command-line library is imported here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from partdrag4d import categories
from partdrag4d.executor import EXECUTORS
from partdrag4d.options import WAIT_HELP, check, like, option
from partdrag4d.presets import DEFAULT_PRESET, PRESETS
from partdrag4d.render import DEVICES

EXECUTOR_HELP = "local (this machine, default) | ray (a Ray cluster; the dataset folder must be on a path every node shares)."
RAY_ADDRESS_HELP = "With --executor ray: auto (the cluster `ray start` joined), HOST:PORT (its head), or unset (a Ray on this machine only)."
THREADS_HELP = "Cycles threads per Blender worker / Ray render actor (default: local cores // workers; Ray: 4 or the largest node's CPUs)."
DEVICE_HELP = "cpu | gpu: Cycles on an OptiX/CUDA GPU; without one it renders on the CPU and says so in one line."
WORKERS_HELP = ("Blender worker processes (cores are split between them; default 1); with --executor ray: render actors "
                "(default: as many as the cluster fits).")


def _all_categories() -> list[str]:
    return ["all"]


@dataclass(frozen=True)
class StepOptions:
    """The options several dataset steps share (not a command's config itself)."""

    out: str = option("data", "Dataset folder.", path=True)
    category: Optional[str] = option(None, "Only objects of this category.", flags=("--category", "-c"),
                                     choices=tuple(categories.category_names()))
    categories: list[str] = option(default_factory=_all_categories, help="Categories (repeatable) or 'all'.",
                                   flags=("--category", "-c"))
    seed: int = option(0, "Seed of every step.")  # checked by cliutil.check_seed (one line, exit code 2)
    configs: int = option(1, "Random configurations of the other joints per swept joint.", min=1)
    max_joints: int = option(0, "Sweep only the first N movable joints of each object (0 = all).", min=0)
    max_faces: int = option(2_000_000, "Refuse objects with more faces than this (all meshes together).", min=1)
    quality: str = option(DEFAULT_PRESET, "Render preset (see docs/rendering.md for costs).", flags=("--quality", "-q"),
                          choices=tuple(PRESETS))
    workers: Optional[int] = option(None, WORKERS_HELP, flags=("--workers", "-w"), min=1)
    shard: str = option("0/1", "I/N: render the I-th of N object shards (cluster job arrays).")
    resolution: int = option(512, "Image size in pixels.", min=16)
    wait: bool = option(False, WAIT_HELP, flags=("--wait",))
    executor: str = option("local", EXECUTOR_HELP, choices=EXECUTORS)
    ray_address: Optional[str] = option(None, RAY_ADDRESS_HELP)
    threads: Optional[int] = option(None, THREADS_HELP, flags=("--threads", "-t"), min=1)
    device: str = option("cpu", DEVICE_HELP, choices=DEVICES)

    def __post_init__(self) -> None:
        check(self)


def _shared(name: str, **changes):
    return like(StepOptions, name, **changes)


@dataclass(frozen=True)
class SynthConfig:
    """``partdrag4d synth``."""

    out: str = option(help="Folder to write object folders into.", path=True)
    categories: list[str] = _shared("categories", help="Category (repeatable) or 'all'.")
    count: int = option(1, "Objects per category.", flags=("--count", "-n"), min=1)
    seed: int = _shared("seed", help="Seed; the same seed writes identical files.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class ArticulateConfig:
    """``partdrag4d articulate SOURCE``."""

    out: str = _shared("out")
    category: Optional[str] = _shared("category")
    limit: Optional[int] = option(None, "At most this many objects (sorted by id).", min=1)
    seed: int = _shared("seed", help="Seed of the other joints' random positions and the point samples.")
    configs: int = _shared("configs")
    stages: int = option(6, "States per sequence, evenly spaced from lower to upper limit.", min=2)
    points: int = option(16384, "Surface points per object (same material points in every state).", min=16)
    ids: Optional[str] = option(None, "CSV with a partnet_mobility_id column (e.g. manifests/partdrag4d_objects.csv).", path="file")
    meshes: bool = option(True, "Write the posed mesh of every state.")
    max_joints: int = _shared("max_joints")
    max_faces: int = _shared("max_faces")
    wait: bool = _shared("wait")
    executor: str = _shared("executor", help=EXECUTOR_HELP + " One Ray task per object.")
    ray_address: Optional[str] = _shared("ray_address")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class RenderConfig:
    """``partdrag4d render DATASET``."""

    category: Optional[str] = _shared("category", help="Only states of this category.")
    quality: str = _shared("quality")
    workers: Optional[int] = _shared("workers")
    shard: str = _shared("shard")
    resolution: int = _shared("resolution")
    seed: int = _shared("seed", help="Sampling seed of the renderer.")
    wait: bool = _shared("wait")
    executor: str = _shared("executor", help=EXECUTOR_HELP + " One actor call per state.")
    ray_address: Optional[str] = _shared("ray_address")
    threads: Optional[int] = _shared("threads")
    device: str = _shared("device")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class DragsConfig:
    """``partdrag4d drags DATASET``."""

    out: Optional[str] = _shared("out", default=None, help="HDF5 file (default: DATASET/drags.h5).")
    category: Optional[str] = _shared("category", help="Only sequences of this category.")
    max_drags: int = option(64, "Visible drags kept per pair and view.", min=1)
    all_pairs: bool = option(True, "All 30 ordered pairs per sequence, or neighbours + stage 0 pairs.",
                             flags=("--all-pairs/--adjacent-pairs",))
    seed: int = _shared("seed", help="Seed of the farthest-point sampling.")
    shard: str = _shared("shard", help="I/N: sequences I, I+N, ... (writes drags-I-of-N.h5 by default).")
    wait: bool = _shared("wait")
    executor: str = _shared("executor", help=EXECUTOR_HELP + " One Ray task per sequence; this process writes the file.")
    ray_address: Optional[str] = _shared("ray_address")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class MakeDatasetConfig:
    """``partdrag4d make-dataset``: the options of the steps it runs, with its own defaults."""

    out: str = _shared("out")
    source: Optional[str] = option(None, "PartNet-Mobility folder; default: procedural objects.", path=True)
    per_category: int = option(1, "Procedural objects per category (embedded default).", min=1)
    max_joints: int = _shared("max_joints", default=1, help="Joints swept per object (0 = all).")
    configs: int = _shared("configs")
    quality: str = _shared("quality", help="Render preset (`make dataset` passes draft).")
    workers: Optional[int] = _shared("workers")
    resolution: int = _shared("resolution")
    categories: list[str] = _shared("categories")
    seed: int = _shared("seed")
    max_faces: int = _shared("max_faces")
    wait: bool = _shared("wait")
    executor: str = _shared("executor")
    ray_address: Optional[str] = _shared("ray_address")
    threads: Optional[int] = _shared("threads")
    device: str = _shared("device")

    def __post_init__(self) -> None:
        check(self)
