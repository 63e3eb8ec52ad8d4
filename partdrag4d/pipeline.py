"""Dataset-level steps: render jobs from a dataset, and ``make dataset`` end to end
(synth -> articulate -> render -> drags)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from partdrag4d import cameras, categories, store
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.synth import generate
from partdrag4d.dragfile import build_drag_file
from partdrag4d.executor import check_executor, node_counts, ray_session
from partdrag4d.presets import DEFAULT_PRESET, Preset, get_preset
from partdrag4d.render import render_states, summarize


def render_jobs_for_dataset(root: Path, category: str | None = None, quality: str | Preset = DEFAULT_PRESET, seed: int = 0,
                            resolution: int = cameras.IMAGE_SIZE, states: set[str] | None = None) -> list[store.RenderJob]:
    """One render job per object: its rest mesh, links and every ok state of the manifest.
    ``quality``: a preset name or the :class:`Preset` itself (each job carries the record)."""
    preset = get_preset(quality).to_dict()
    root = Path(root).resolve()
    by_object: dict[str, list[dict]] = {}
    for r in store.manifest_states(root):
        if category and r["category"] != category:
            continue
        if states is not None and r["state_id"] not in states:
            continue
        by_object.setdefault(r["object_id"], []).append(r)
    ring = [c.to_dict() for c in cameras.ring_cameras(resolution)]
    jobs = []
    for oid in sorted(by_object):
        obj = store.read_object(root, oid)
        job_states = []
        for r in sorted(by_object[oid], key=lambda r: r["state_id"]):
            state = store.read_state(root, r["state_id"])
            job_states.append({"state_id": r["state_id"], "out_dir": str(store.render_dir(root, r["state_id"])), "link_poses": state["link_poses"]})
        jobs.append({
            "object_id": oid,
            "mesh": str(store.object_dir(root, oid) / store.REST_MESH),
            "links": [{"name": link["name"], "part_id": link["part_id"]} for link in obj["links"]],
            "cameras": ring,
            "preset": preset,
            "seed": seed,
            "root": str(root),
            "provenance_dir": str(store.render_provenance_dir(root)),
            "states": job_states,
        })
    return jobs


def render_dataset(root: Path, category: str | None = None, quality: str | Preset = DEFAULT_PRESET,
                   workers: int | None = None, shard: tuple[int, int] = (0, 1), seed: int = 0,
                   resolution: int = cameras.IMAGE_SIZE, progress: bool = True, executor: str = "local",
                   ray_address: str | None = None, threads: int | None = None, device: str = "cpu",
                   log_dir: Path | None = None) -> dict:
    """Render every ok state of the manifest. ``executor='ray'`` renders on a Ray cluster
    (``partdrag4d.executor``): ``workers`` is then the number of render actors (default: as
    many as fit) and the summary gains ``nodes``, the states rendered per node. A full disk
    raises ``DiskFull``; any other failed state is printed as one ``error`` line."""
    check_executor(executor)
    if category is not None:
        categories.get(category)
    jobs = render_jobs_for_dataset(root, category, quality, seed, resolution)
    results = render_states(jobs, executor=executor, workers=workers, shard=shard, progress=progress, threads=threads,
                            log_dir=log_dir, device=device, address=ray_address)
    summary = summarize(results)
    if executor == "ray":
        summary["nodes"] = node_counts(results)
    for r in results:
        if not r.ok:
            print(f"error {r.object_id} {r.state_id}: {r.error}", file=sys.stderr)
    return summary


@dataclass
class DatasetSummary:
    source: str
    objects: int = 0
    states: int = 0
    failed_objects: int = 0
    rendered: dict = field(default_factory=dict)
    drag_sequences: int = 0
    drags: int = 0
    seconds: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetRequest:
    """What ``make_dataset`` was asked for, its preset looked up: one record for its steps."""

    out: Path
    source: Path | None
    per_category: int
    seed: int
    preset: Preset
    workers: int | None
    categories: list[str]
    configs: int
    max_joints: int | None
    resolution: int
    progress: bool
    max_faces: int | None
    executor: str
    ray_address: str | None
    threads: int | None
    device: str


def make_dataset(out: Path, source: Path | None = None, per_category: int = 1, seed: int = 0,
                 quality: str | Preset = DEFAULT_PRESET, workers: int | None = 1, categories_: list[str] | None = None,
                 configs: int = 1, max_joints: int | None = 1, resolution: int = cameras.IMAGE_SIZE, progress: bool = True,
                 max_faces: int | None = None, executor: str = "local", ray_address: str | None = None,
                 threads: int | None = None, device: str = "cpu") -> DatasetSummary:
    """The main job. Without ``source`` the embedded default: ``per_category`` procedural
    objects of each category (``max_joints`` sequences per object keep the default small).
    ``executor='ray'`` runs articulate, render and drags on one Ray session
    (``partdrag4d.executor``); ``out`` must then be on a path every node shares."""
    check_executor(executor)
    request = DatasetRequest(
        out=Path(out), source=source, per_category=per_category, seed=seed, preset=get_preset(quality), workers=workers,
        categories=list(categories_ or categories.category_names()), configs=configs, max_joints=max_joints,
        resolution=resolution, progress=progress, max_faces=max_faces, executor=executor, ray_address=ray_address,
        threads=threads, device=device)
    if executor == "ray":
        with ray_session(ray_address):  # one Ray session for all steps
            return _make_dataset(request)
    return _make_dataset(request)


def _synthesize(r: DatasetRequest) -> tuple[Path, str]:
    """The embedded default's procedural objects (those not written yet) under ``out/source``."""
    source = r.out / "source"
    for c in r.categories:
        for i in range(r.per_category):
            if not (source / f"syn-{c}-{r.seed}-{i:03d}" / "mobility.urdf").exists():
                generate(c, i, r.seed, source)
    return source, f"embedded default ({r.per_category} synthetic objects x {len(r.categories)} categories, seed {r.seed})"


def _make_dataset(r: DatasetRequest) -> DatasetSummary:
    r.out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    if r.source is None:
        source, label = _synthesize(r)
        times["synth"] = time.perf_counter() - t
    else:
        source, label = r.source, str(r.source)
    t = time.perf_counter()
    art = articulate_folder(source, r.out, category=r.categories, seed=r.seed, num_configs=r.configs,
                            max_joints=r.max_joints, progress=r.progress, max_faces=r.max_faces, executor=r.executor,
                            ray_address=r.ray_address)
    times["articulate"] = time.perf_counter() - t
    t = time.perf_counter()
    rendered = render_dataset(r.out, quality=r.preset, workers=r.workers, seed=r.seed, resolution=r.resolution,
                              progress=r.progress, executor=r.executor, ray_address=r.ray_address, threads=r.threads,
                              device=r.device)
    times["render"] = time.perf_counter() - t
    t = time.perf_counter()
    drags = build_drag_file(r.out, seed=r.seed, progress=r.progress, executor=r.executor, ray_address=r.ray_address)
    times["drags"] = time.perf_counter() - t
    return DatasetSummary(label, art.objects_ok, art.states, art.objects_failed, rendered, drags.sequences, drags.drags, times)
