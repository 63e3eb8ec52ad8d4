"""``partdrag4d verify``: check every state and pair of a dataset; any defect fails.

Per state: files present; 12 RGBA views with a transparent background and a visible
object; depth/part-id arrays of the right shape, finite exactly where a part is seen;
the saved cameras project the state's surface points onto pixels whose part id is the
point's link (>= 99% of the points the depth test calls visible, not counting pixels
on a part boundary, where which part a pixel shows is a sub-pixel matter) with
rendered depth equal to the points' camera z.
Per pair (drag file): every kept drag starts on a pixel of the moving part, its start
is the source-state point and its end the projection of the target-state point.
A missing or damaged file is a defect naming it (of its state or sequence; the others are
still checked).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter
from tqdm import tqdm

from partdrag4d import cameras, store
from partdrag4d.drags import DEPTH_TOLERANCE, pixel_index
from partdrag4d.errors import DamagedFile

PART_AGREEMENT = 0.99


@dataclass
class Report:
    states: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # category -> [ok, bad]
    pairs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    defects: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.defects

    def table(self) -> str:
        cats = sorted(set(self.states) | set(self.pairs))
        lines = [f"{'category':20s} {'states ok':>9s} {'bad':>5s} {'pairs ok':>9s} {'bad':>5s}"]
        for c in cats:
            s, p = self.states.get(c, [0, 0]), self.pairs.get(c, [0, 0])
            lines.append(f"{c:20s} {s[0]:9d} {s[1]:5d} {p[0]:9d} {p[1]:5d}")
        tot_s = [sum(v[i] for v in self.states.values()) for i in (0, 1)]
        tot_p = [sum(v[i] for v in self.pairs.values()) for i in (0, 1)]
        lines.append(f"{'total':20s} {tot_s[0]:9d} {tot_s[1]:5d} {tot_p[0]:9d} {tot_p[1]:5d}")
        return "\n".join(lines)


def part_boundary(part_id: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood shows more than one part id (or background)."""
    return maximum_filter(part_id, size=3) != minimum_filter(part_id, size=3)


def check_state(root: Path, record: dict, obj_points: dict[str, np.ndarray]) -> list[str]:
    """Defects of one state (empty list when it is sound)."""
    sid = record["state_id"]
    folder = store.state_dir(root, sid)
    problems = []
    for name in store.state_files(meshes=False):
        if not (folder / name).is_file():
            problems.append(f"{sid}: missing {name}")
    render = store.render_dir(root, sid)
    problem = store.render_problem(render, cameras.NUM_VIEWS, deep=True)
    if problem is not None:
        return problems + [f"{sid}: {problem}"]
    try:
        points = store.read_state_points(root, sid) if (folder / store.STATE_POINTS).is_file() else None
        problems += render_defects(sid, render, points, obj_points)
    except DamagedFile as exc:  # a file that is there but cannot be read
        problems.append(f"{sid}: {exc}")
    return problems


def render_defects(sid: str, render: Path, points: np.ndarray | None, obj_points: dict[str, np.ndarray]) -> list[str]:
    """Defects of a state's complete render: the images against the arrays, and (with the
    state's surface ``points``) the cameras and part ids against the points."""
    problems = []
    depth, part_id, cams = store.read_render(render)
    v, h, w = depth.shape
    if part_id.shape != depth.shape or v != cameras.NUM_VIEWS:
        return problems + [f"{sid}: depth {depth.shape} / part_id {part_id.shape} shapes disagree"]
    seen = part_id > 0
    if not np.isfinite(depth[seen]).all() or np.isfinite(depth[~seen]).any():
        problems.append(f"{sid}: depth is not finite exactly where a part is seen")
    for view in range(v):
        path = render / store.view_png_name(view)
        with store.reading(path), Image.open(path) as im:
            if im.mode != "RGBA" or im.size != (w, h):
                problems.append(f"{sid}: view {view} is {im.mode} {im.size}, expected RGBA {(w, h)}")
                continue
            alpha = np.asarray(im)[..., 3]
        if alpha[0, 0] != 0 or alpha[-1, -1] != 0 or alpha[0, -1] != 0 or alpha[-1, 0] != 0:
            problems.append(f"{sid}: view {view} background is not transparent")
        if not (alpha > 127).any() or not seen[view].any():
            problems.append(f"{sid}: view {view} shows no object")
        agree = np.mean((alpha > 127) == seen[view])
        if agree < 0.98:
            problems.append(f"{sid}: view {view} alpha and part-id masks agree on only {agree:.1%} of pixels")
        if seen[view, 0, :].any() or seen[view, -1, :].any() or seen[view, :, 0].any() or seen[view, :, -1].any():
            problems.append(f"{sid}: view {view} object touches the image border")
    if points is None:
        return problems
    points = points.astype(np.float64)
    pid = obj_points["part_id"]
    for view, cam in enumerate(cams):
        uv, z = cam.project(points)
        col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        idx = np.flatnonzero(inside)
        rendered = depth[view, row[idx], col[idx]]
        visible = (np.abs(rendered - z[idx]) <= DEPTH_TOLERANCE) & ~part_boundary(part_id[view])[row[idx], col[idx]]
        if visible.sum() < 20:
            problems.append(f"{sid}: view {view}: only {int(visible.sum())} surface points pass the depth test")
            continue
        match = np.mean(part_id[view, row[idx][visible], col[idx][visible]] == pid[idx][visible])
        if match < PART_AGREEMENT:
            problems.append(f"{sid}: view {view}: part ids agree with the points' links for only {match:.2%} of visible points")
    return problems


def check_drags(root: Path, drag_path: Path, records: dict[str, dict], report: Report) -> None:
    """Check every pair of the drag file; a damaged drag file, or a damaged file of one
    sequence's states, is a defect naming the file (the other sequences are still checked)."""
    try:
        with store.reading(drag_path):
            f = h5py.File(drag_path, "r")
            names = list(f["sequences"])
    except DamagedFile as exc:
        report.defects.append(str(exc))
        return
    with f:
        for sid in names:
            cat = "?"
            try:
                with store.reading(drag_path):
                    g = f["sequences"][sid]
                    cat = str(g.attrs["category"])
                check_sequence(root, drag_path, sid, g, cat, report)
            except DamagedFile as exc:  # counted as one bad pair: how many it holds is unknown
                report.pairs[cat][1] += 1
                report.defects.append(f"{sid}: {exc}")


def check_sequence(root: Path, drag_path: Path, sid: str, g: h5py.Group, cat: str, report: Report) -> None:
    """The pairs of one sequence of the drag file (``g``)."""
    with store.reading(drag_path):
        states = json.loads(g.attrs["state_ids"])
        moving_ids = np.asarray(g.attrs["moving_part_ids"])
        pairs, count = g["pairs"][:], g["count"][:]
        start, end, start3, idx = g["start_2d"][:], g["end_2d"][:], g["start_3d"][:], g["point_index"][:]
    pts = [store.read_state_points(root, s).astype(np.float64) for s in states]
    parts, cams = [], None
    for s in states:
        _, part_id, cams = store.read_render(store.render_dir(root, s))
        parts.append(part_id)
    for k, (i, j) in enumerate(pairs):
        bad = []
        for v, cam in enumerate(cams):
            n = int(count[k, v])
            if n == 0:
                continue
            s2, e2, p = start[k, v, :n].astype(np.float64), end[k, v, :n].astype(np.float64), idx[k, v, :n]
            col, row = pixel_index(start[k, v, :n])  # the sampler's own pixel rule, on the stored values
            if not np.isin(parts[i][v, row, col], moving_ids).all():
                bad.append(f"view {v}: a drag starts off the moving part")
            if not np.allclose(start3[k, v, :n], pts[i][p], atol=1e-5):
                bad.append(f"view {v}: drag start is not the source point")
            expected, _ = cam.project(pts[j][p])
            if not np.allclose(e2, expected, atol=1e-2):
                bad.append(f"view {v}: drag end is not the target point's projection")
            if np.isnan(start[k, v, n:]).sum() != start[k, v, n:].size:
                bad.append(f"view {v}: padding is not NaN")
        if bad:
            report.pairs[cat][1] += 1
            report.defects.extend(f"{sid} pair {i}->{j}: {b}" for b in bad)
        else:
            report.pairs[cat][0] += 1


def verify(root: Path, drag_file: Path | None = None, progress: bool = True) -> Report:
    root = Path(root)
    report = Report()
    if not store.has_manifest(root):
        report.defects.append(f"{root}: no {store.MANIFEST}")
        return report
    try:
        records = {r["state_id"]: r for r in store.manifest_states(root)}
    except DamagedFile as exc:  # which states there are is unknown: nothing more to check
        report.defects.append(str(exc))
        return report
    object_points: dict[str, dict] = {}
    for sid, r in tqdm(sorted(records.items()), desc="verify states", unit="state", disable=not progress, dynamic_ncols=True):
        oid = r["object_id"]
        try:
            if oid not in object_points:
                with store.reading(store.object_dir(root, oid) / store.OBJECT_POINTS):
                    object_points[oid] = {"part_id": store.read_object_points(root, oid)["part_id"]}
            problems = check_state(root, r, object_points[oid])
        except DamagedFile as exc:  # the object's samples cannot be read
            problems = [f"{sid}: {exc}"]
        report.states[r["category"]][1 if problems else 0] += 1
        report.defects.extend(problems)
    drag_path = Path(drag_file) if drag_file else store.drag_file(root)
    if drag_path.is_file():
        check_drags(root, drag_path, records, report)
    else:
        report.defects.append(f"{drag_path}: no drag file (run `partdrag4d drags {root}`)")
    return report
