"""Building the Gaussian database (``partrm.gsdb``) from a teacher LGM's predictions, and the
resumable part-by-part build every source shares.

Building is resumable: states are written in parts (``gsdb.h5.parts/part-XXXXX.h5``,
each renamed into place when complete); finished parts are skipped on a rerun, and the
final file is assembled under a temporary name and renamed.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from partdrag4d import __version__, store
from partrm.data import StateDataset
from partrm.gaussians import gaussians_from_lgm, write_ply
from partrm.gsdb import GSDB_FILE, SCHEMA_VERSION
from partrm.models.lgm import LGM


@dataclass
class GsdbSummary:
    states: int = 0
    computed: int = 0
    seconds: float = 0.0
    parts: list[str] = field(default_factory=list)
    not_rendered: list[str] = field(default_factory=list)  # states of the manifest without a render: not in the database


def build_gsdb(root: Path, teacher: Path, out: Path | None = None, batch_size: int = 4, part_size: int = 64,
               device: str = "cpu", ply_dir: Path | None = None, progress: bool = True, split: str | None = None,
               ply_options: dict | None = None) -> GsdbSummary:
    """Run the teacher LGM on every rendered state's input views; write ``gsdb.h5``
    (and one 3DGS PLY per state into ``ply_dir``; ``ply_options``: ``write_ply``'s
    ``sh_degree`` / ``up``).

    (``partrm.gsdb_render.build_render_gsdb`` builds the same file from the renders alone.)"""
    root = Path(root)
    out = Path(out) if out else root / GSDB_FILE
    model = LGM.from_pretrained(teacher).to(device).eval()
    cfg = model.config
    data = StateDataset(root, split=split, input_size=cfg.input_size, target_size=0)
    ids = [r["state_id"] for r in data.records]
    index = {sid: i for i, sid in enumerate(ids)}

    def compute(chunk: list[str]):
        for start in range(0, len(chunk), batch_size):
            items = [data[index[sid]] for sid in chunk[start : start + batch_size]]
            rgb = torch.stack([it["input_rgb"] for it in items]).to(device)
            K = torch.stack([it["input_K"] for it in items]).to(device)
            c2w = torch.stack([it["input_c2w"] for it in items]).to(device)
            with torch.inference_mode():
                splatter = _splatter_object_frame(model, rgb, K, c2w)
            for it, s in zip(items, splatter):
                if ply_dir is not None:
                    gs = gaussians_from_lgm(model.gaussians(s[None].float())[0])
                    write_ply(Path(ply_dir) / f"{it['state_id']}.ply", *gs, **(ply_options or {}))
                yield it["state_id"], s.cpu().numpy()

    attrs = {"source": "teacher", "teacher": str(Path(teacher).resolve()), "lgm_config": cfg.to_json()}
    t0 = time.perf_counter()
    summary = build_parts(out, ids, compute, attrs, part_size=part_size, progress=progress, desc="gsdb")
    summary.seconds = time.perf_counter() - t0
    summary.not_rendered = data.not_rendered
    return summary


def build_parts(out: Path, ids: list[str], compute, attrs: dict, part_size: int = 64, progress: bool = True,
                desc: str = "gsdb") -> GsdbSummary:
    """The resumable build shared by every source: ``compute(chunk)`` yields (state id,
    splatter [V, 14, S, S]) for a chunk of ids; each chunk becomes one part file (renamed
    into place when complete, skipped on a rerun), then the parts are assembled into ``out``
    with ``attrs`` added to the file's attributes."""
    out = Path(out)
    parts_dir = out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    for stale in parts_dir.glob(".*.tmp"):
        stale.unlink()
    summary = GsdbSummary(states=len(ids))
    chunks = [ids[i : i + part_size] for i in range(0, len(ids), part_size)]
    bar = tqdm(total=len(ids), desc=desc, unit="state", disable=not progress, dynamic_ncols=True)
    for k, chunk in enumerate(chunks):
        part = parts_dir / f"part-{k:05d}.h5"
        if part.is_file() and _part_has(part, chunk):
            bar.update(len(chunk))
            continue
        with store.atomic_path(part) as tmp, h5py.File(tmp, "w") as f:
            g = f.create_group("states")
            for sid, splatter in compute(chunk):
                g.create_dataset(sid, data=np.asarray(splatter).astype(np.float16))
                summary.computed += 1
                bar.update(1)
        summary.parts.append(part.name)
    bar.close()
    _assemble(out, sorted(parts_dir.glob("part-*.h5")), ids, attrs)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return summary


def _splatter_object_frame(model, rgb, K, c2w) -> torch.Tensor:
    """The teacher's splatter images [B, V, 14, S, S] in the object frame (an LGM-frame
    teacher's predictions are mapped back, so every entry lives in the dataset's frame)."""
    x, frame = model.object_frame_inputs(rgb, (K, c2w))
    return model.splatter_to_object(model(x), frame)


def _part_has(part: Path, chunk: list[str]) -> bool:
    try:
        with h5py.File(part, "r") as f:
            return set(chunk) <= set(f["states"].keys())
    except OSError:
        return False


def _assemble(out: Path, parts: list[Path], ids: list[str], attrs: dict) -> None:
    with store.atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["schema"] = "partrm-gsdb"
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["partdrag4d_version"] = __version__
        f.attrs["torch_version"] = str(torch.__version__)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["layout"] = "[V, 14, S, S]: xyz(3) opacity(1) scale(3) rotation wxyz(4) rgb(3), activated, object frame"
        g = f.create_group("states")
        wanted = set(ids)
        for part in parts:
            with h5py.File(part, "r") as p:
                for sid, ds in p["states"].items():
                    if sid in wanted and sid not in g:
                        g.create_dataset(sid, data=ds[...], compression="gzip", compression_opts=1)
        f.attrs["num_states"] = len(g)
        f.attrs["states_json"] = json.dumps(sorted(g.keys()))
