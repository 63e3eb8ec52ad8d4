"""The drag file: every sequence's visible drags in one HDF5 file (schema in SCHEMA.md).

Written under a temporary name and renamed, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from partdrag4d import __version__, store
from partdrag4d.drags import DEPTH_TOLERANCE, MAX_DRAGS, ViewRender, adjacent_pairs, all_pairs, pair_seed, sample_pair
from partdrag4d.executor import map_ordered

SCHEMA_VERSION = 1
DRAG_FILE = store.DRAG_FILE


@dataclass
class Sequence:
    """The states of one swept joint in one configuration, ordered by stage."""

    sequence_id: str
    records: list[dict]  # manifest records, stage order

    @property
    def object_id(self) -> str:
        return self.records[0]["object_id"]


def sequences(root: Path, category: str | None = None) -> list[Sequence]:
    """Complete sequences of a dataset (all stages present in the manifest), sorted by id."""
    by_seq: dict[str, list[dict]] = {}
    for r in store.manifest_states(root):
        if category and r["category"] != category:
            continue
        by_seq.setdefault(r["sequence_id"], []).append(r)
    out = []
    for sid in sorted(by_seq):
        recs = sorted(by_seq[sid], key=lambda r: r["stage"])
        if [r["stage"] for r in recs] == list(range(recs[0]["num_stages"])):
            out.append(Sequence(sid, recs))
    return out


@dataclass
class DragSummary:
    sequences: int = 0
    pairs: int = 0
    drags: int = 0
    seconds_sampling: float = 0.0
    skipped: list[str] = field(default_factory=list)


def build_drag_file(root: Path, out: Path | None = None, category: str | None = None, seed: int = 0,
                    max_drags: int = MAX_DRAGS, every_pair: bool = True, shard: tuple[int, int] = (0, 1),
                    progress: bool = True, executor: str = "local", ray_address: str | None = None) -> DragSummary:
    """Sample the drags of every rendered sequence of ``root`` into one HDF5 file.

    ``executor='ray'``: each sequence is sampled by a Ray task (``partdrag4d.executor``;
    ``root`` must be on a path every node shares) and this process writes the file, in the
    same order and with the same bytes as a local run.
    """
    root = Path(root)
    out = Path(out) if out else root / DRAG_FILE
    seqs = sequences(root, category)
    index, count = shard
    seqs = [s for k, s in enumerate(seqs) if k % count == index]
    summary = DragSummary()
    ready = []
    for seq in seqs:
        missing = [r["state_id"] for r in seq.records if not _rendered(root, r)]
        if missing:
            summary.skipped.append(f"{seq.sequence_id}: not rendered ({', '.join(missing)})")
        else:
            ready.append(seq)
    args = [(root, seq, seed, max_drags, every_pair) for seq in ready]
    if executor == "ray":
        sampled = map_ordered(sample_sequence, args, desc="drags", unit="seq", progress=progress, address=ray_address)
    else:
        sampled = (sample_sequence(*a) for a in tqdm(args, desc="drags", unit="seq", disable=not progress, dynamic_ncols=True))
    with store.atomic_path(out) as tmp:
        ballast = store.Ballast(out.parent, out.name)  # a full disk stops the run with one line, before HDF5 could crash on it
        f = h5py.File(tmp, "w")
        try:
            _write_header(f, root, out, seed, max_drags, every_pair)
            group = f.create_group("sequences")
            for drags in sampled:
                _write_sequence(group, drags, summary)
        finally:
            ballast.release()
            f.close()
    for line in summary.skipped:
        print(f"skipped {line}", file=sys.stderr)
    return summary


def _rendered(root: Path, record: dict) -> bool:
    """The state has a render folder (one without its files raises ``DamagedFile``)."""
    return store.has_render(store.render_dir(root, record["state_id"]))


def _write_header(f: h5py.File, root: Path, out: Path, seed: int, max_drags: int, every_pair: bool) -> None:
    f.attrs["schema"] = "partdrag4d-drags"
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["partdrag4d_version"] = __version__
    f.attrs["h5py_version"] = h5py.__version__
    f.attrs["numpy_version"] = np.__version__
    f.attrs["python_version"] = platform.python_version()
    f.attrs["seed"] = seed
    f.attrs["max_drags"] = max_drags
    f.attrs["depth_tolerance"] = DEPTH_TOLERANCE
    f.attrs["pairs"] = "all" if every_pair else "adjacent"
    # the dataset folder relative to the drag file's folder ("." by default): movable, same bytes every run
    f.attrs["dataset"] = os.path.relpath(root.resolve(), out.resolve().parent).replace(os.sep, "/")


@dataclass
class SequenceDrags:
    """One sequence's sampled drags, ready to write (what a Ray task sends back)."""

    sequence: Sequence
    moving_ids: np.ndarray
    pairs: list[tuple[int, int]]
    results: list  # PairDrags per pair
    masks: np.ndarray  # [S, V, H, W] bool: the moving part's pixels
    seconds: float  # sampling time


def sample_sequence(root: Path, seq: Sequence, seed: int, max_drags: int, every_pair: bool) -> SequenceDrags:
    """Sample every pair of one rendered sequence (reads the dataset, writes nothing)."""
    root = Path(root)
    stages = len(seq.records)
    points = [store.read_state_points(root, r["state_id"]) for r in seq.records]
    moving = store.read_state_moving(root, seq.records[0]["state_id"])
    moving_ids = np.asarray(seq.records[0]["moving_part_ids"], dtype=np.int64)
    renders, cams = [], None
    for r in seq.records:
        depth, part_id, cams = store.read_render(store.render_dir(root, r["state_id"]))
        renders.append(ViewRender(depth, part_id))
    pairs = all_pairs(stages) if every_pair else adjacent_pairs(stages)
    results = []
    t0 = time.perf_counter()
    for i, j in pairs:
        rng = pair_seed(seed, seq.sequence_id, i, j)
        results.append(sample_pair(points[i], points[j], moving, moving_ids, cams, renders[i], rng, max_drags))
    seconds = time.perf_counter() - t0
    masks = np.stack([np.isin(rd.part_id, moving_ids) for rd in renders])  # [S, V, H, W]
    return SequenceDrags(seq, moving_ids, pairs, results, masks, seconds)


def _write_sequence(group: h5py.Group, drags: SequenceDrags, summary: DragSummary) -> None:
    seq, moving_ids, pairs, results, masks = drags.sequence, drags.moving_ids, drags.pairs, drags.results, drags.masks
    # room for this sequence before HDF5 writes it (a bound: arrays as they are, the masks at a quarter of a byte per pixel)
    arrays = sum(getattr(r, n).nbytes for r in results for n in ("count", "start_2d", "end_2d", "start_3d", "end_3d", "point_index"))
    store.ensure_space(Path(group.file.filename).parent, arrays + masks.size // 4 + (64 << 10), f"the drags of {seq.sequence_id}")
    g = group.create_group(seq.sequence_id)
    first = seq.records[0]
    for key in ("object_id", "category", "split", "joint", "joint_type", "config"):
        g.attrs[key] = first[key]
    g.attrs["state_ids"] = json.dumps([r["state_id"] for r in seq.records])
    g.attrs["qpos"] = json.dumps([r["qpos"] for r in seq.records])
    g.attrs["moving_part_ids"] = moving_ids
    h, w = masks.shape[2:]
    summary.seconds_sampling += drags.seconds
    g.create_dataset("pairs", data=np.asarray(pairs, dtype=np.int32))
    g.create_dataset("count", data=np.stack([r.count for r in results]))
    g.create_dataset("num_candidates", data=np.asarray([r.num_candidates for r in results], dtype=np.int32))
    for name in ("start_2d", "end_2d", "start_3d", "end_3d", "point_index"):
        g.create_dataset(name, data=np.stack([getattr(r, name) for r in results]), compression="gzip", compression_opts=4)
    g.create_dataset("masks", data=masks, compression="gzip", compression_opts=4, chunks=(1, 1, h, w))
    summary.sequences += 1
    summary.pairs += len(pairs)
    summary.drags += int(sum(r.count.sum() for r in results))
