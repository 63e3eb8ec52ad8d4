"""One call for the CLI (``partrm articulation``): read two states, estimate, score against the
dataset's truth when there is one, write the URDF and a JSON report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from partdrag4d import store
from partrm.joints.estimate import estimate_articulation
from partrm.joints.inputs import from_gaussians, load_gaussians, load_points
from partrm.joints.metrics import compare
from partrm.joints.records import MIN_OPACITY, REL_THRESHOLD, ArticulationEstimate, PathLike
from partrm.joints.truth import _state, dataset_meshes, dataset_truth, dataset_world_frame, from_dataset_states, split_mesh
from partrm.joints.urdf import COLLISION_MODES, write_urdf


@dataclass
class ExtractResult:
    estimate: ArticulationEstimate
    urdf: Path
    report: Path
    metrics: Optional[dict] = None
    seconds: float = 0.0


def extract(out: PathLike, source: Optional[PathLike] = None, target: Optional[PathLike] = None, data: Optional[PathLike] = None,
            state_a: Optional[str] = None, state_b: Optional[str] = None, correspondence: Optional[bool] = None,
            world: bool = False, min_opacity: float = MIN_OPACITY, num_samples: int = 16384, rel_threshold: float = REL_THRESHOLD,
            seed: int = 0, collision: str = "none") -> ExtractResult:
    """Everything ``partrm articulation`` does: estimate, write ``<out>/articulation.urdf``
    (+ meshes) and ``<out>/articulation.json`` (estimate, and errors against the truth
    for dataset states).

    Inputs: two files (``source``, ``target``: Gaussians ``.ply``/``.npy``, points
    ``.npy``/``.ply``, or meshes), or a dataset (``data``) with two states of one
    sequence. ``correspondence=None`` decides: on for dataset states and for two
    Gaussian/point files of equal length, off otherwise (meshes are sampled
    independently). ``world``: URDF in the asset's frame (dataset only) instead of
    the canonical one. ``collision``: the URDF's collision geometry (``COLLISION_MODES``).
    """
    if collision not in COLLISION_MODES:
        raise ValueError(f"collision must be one of {', '.join(COLLISION_MODES)}, got {collision!r}")
    t0 = time.perf_counter()
    out = Path(out)
    kw = {"rel_threshold": rel_threshold, "seed": seed}
    metrics = None
    frame = None
    static_mesh = moving_mesh = None
    est_urdf = None
    if data is not None:
        if not state_a or not state_b:
            raise ValueError("with a dataset give both states")
        corr = True if correspondence is None else correspondence
        est = from_dataset_states(data, state_a, state_b, corr, **kw)
        points = store.read_state_points(data, state_a)
        truth = dataset_truth(data, state_a, state_b)
        metrics = compare(est, truth)
        static_mesh, moving_mesh = dataset_meshes(data, state_a, est)
        if world:
            frame = dataset_world_frame(data, _state(Path(data), state_a)["object_id"])
    else:
        if source is None or target is None:
            raise ValueError("give two input files (source and target) or a dataset with two states")
        if world:
            raise ValueError("--world needs a dataset (its normalisation)")
        ga, gb = load_gaussians(source), load_gaussians(target)
        if ga is not None and gb is not None:
            corr = (len(ga) == len(gb)) if correspondence is None else correspondence
            est = from_gaussians(ga, gb, corr, min_opacity, **kw)
            opaque = ga[:, 3] > min_opacity  # transparent Gaussians (anywhere) stay out of the URDF's links
            points = ga[opaque, :3]
            est_urdf = replace(est, moving_mask=est.moving_mask[opaque])
        else:
            pa, kind_a, mesh_a = load_points(source, num_samples, min_opacity, seed)
            pb, kind_b, _ = load_points(target, num_samples, min_opacity, seed + 1)
            if correspondence is None:
                corr = len(pa) == len(pb) and "mesh" not in (kind_a, kind_b)
            else:
                corr = correspondence
            est = estimate_articulation(pa, pb, corr, **kw)
            points = pa
            if mesh_a is not None:
                static_mesh, moving_mesh = split_mesh(*mesh_a, pa, est.moving_mask)
    est_urdf = est if est_urdf is None else est_urdf
    urdf = write_urdf(est_urdf, out / "articulation.urdf", static_mesh, moving_mesh, points=points, frame=frame, collision=collision)
    shown = est.transformed(frame) if frame is not None else est
    report = {"estimate": shown.to_dict(), "frame": "world" if frame is not None else "input (canonical for datasets)",
              "inputs": {"source": str(source) if source else None, "target": str(target) if target else None,
                         "data": str(data) if data else None, "state_a": state_a, "state_b": state_b},
              "metrics_canonical": metrics, "urdf": urdf.name}
    store.atomic_write_text(out / "articulation.json", json.dumps(report, indent=1) + "\n")
    return ExtractResult(est, urdf, out / "articulation.json", metrics, time.perf_counter() - t0)
