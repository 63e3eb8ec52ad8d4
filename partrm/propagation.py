"""Drag propagation (paper Sec. 4.2, Eq. 2; appendix Eq. 7-8).

From one user drag (start, end in an input view), find the moving part's region and
sample N drags in it: drag 0 is the user's, drags 1..N-1 start at random pixels of
the region and carry the same 2D displacement (Eq. 2), or, with the rule-based
rotation variant (Eq. 8), a displacement that shrinks linearly along the drag
direction.

Region providers (``--region``):
- ``mask``: the dataset's part mask (training and the benchmark);
- ``sam``: Segment Anything, prompted with the start point, smallest of its multimask
  outputs (needs the ``sam`` extra and a local checkpoint: ``--sam-checkpoint``);
- ``color``: weight-free fallback for in-the-wild images: the 4-connected region of
  foreground pixels whose colour is close to the start pixel's.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from partdrag4d.errors import ToolkitError

REGIONS = ("mask", "sam", "color")
"""Where a drag is propagated: the dataset's part mask, a SAM segment, or a colour region."""
RULES = ("translation", "rotation")
"""Propagation rules: the paper's Eq. 2 (every point moves like the drag) or its appendix Eq. 8."""


class RegionError(ToolkitError, RuntimeError):
    """The propagation region cannot be built (no mask, no SAM checkpoint...)."""


def propagate(start: np.ndarray, end: np.ndarray, region: np.ndarray, num_drags: int, rng: np.random.Generator,
              rule: str = "translation") -> np.ndarray:
    """User drag (pixel coords, x right y down) + region mask [H, W] -> drags [num_drags, 4]
    (x0, y0, x1, y1) in pixels. Drag 0 is the user's; the others start inside ``region``."""
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    delta = end - start
    rows, cols = np.nonzero(region)
    out = np.zeros((num_drags, 4))
    out[0] = [*start, *end]
    if num_drags == 1:
        return out
    if len(rows) == 0:
        raise RegionError("the propagation region is empty")
    pick = rng.integers(len(rows), size=num_drags - 1)
    starts = np.stack([cols[pick], rows[pick]], axis=1) + rng.random((num_drags - 1, 2))
    if rule == "translation":
        ends = starts + delta
    elif rule == "rotation":
        ends = starts + delta * rotation_factors(starts, start, delta)[:, None]
    else:
        raise ValueError(f"unknown propagation rule {rule!r} (translation | rotation)")
    out[1:, :2], out[1:, 2:] = starts, ends
    return out


def rotation_factors(starts: np.ndarray, user_start: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Eq. 8: 1 - <delta, s_i - s_0> / max_j <delta, s_j - s_0>, for the propagated starts s_i.

    Points further along the drag direction than the user's point move less, down to
    zero at the furthest one (a door's hinge side when the user drags its free edge)."""
    proj = (starts - user_start) @ delta
    top = proj.max()
    if top <= 1e-9:
        return np.ones(len(starts))
    return 1.0 - proj / top


class MaskRegion:
    """The dataset's part mask for the view (what training and the benchmark use)."""

    def __init__(self, mask: np.ndarray):
        self.mask = np.asarray(mask, bool)

    def __call__(self, image: np.ndarray, start: np.ndarray) -> np.ndarray:
        return self.mask


class ColorRegion:
    """Weight-free fallback: flood fill from the start pixel over foreground pixels (alpha
    > 0.5, or not near-white when the image has no alpha) within ``tolerance`` of the
    start colour (RGB distance, 0..1 units)."""

    def __init__(self, tolerance: float = 0.12):
        self.tolerance = tolerance

    def __call__(self, image: np.ndarray, start: np.ndarray) -> np.ndarray:
        img = np.asarray(image, np.float32)
        img = img / 255.0 if img.max() > 1.5 else img
        h, w = img.shape[:2]
        if img.shape[2] == 4:
            foreground = img[..., 3] > 0.5
        else:
            foreground = np.abs(img[..., :3] - 1.0).max(axis=-1) > 0.02
        x, y = int(np.clip(start[0], 0, w - 1)), int(np.clip(start[1], 0, h - 1))
        if not foreground[y, x]:
            raise RegionError(f"the drag starts on the background at pixel ({x}, {y})")
        close = (np.linalg.norm(img[..., :3] - img[y, x, :3], axis=-1) <= self.tolerance) & foreground
        region = np.zeros((h, w), bool)
        queue = deque([(y, x)])
        region[y, x] = True
        while queue:
            r, c = queue.popleft()
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < h and 0 <= cc < w and close[rr, cc] and not region[rr, cc]:
                    region[rr, cc] = True
                    queue.append((rr, cc))
        return region


class SamRegion:
    """Segment Anything prompted with the drag start; the smallest multimask output."""

    def __init__(self, checkpoint: Path, model_type: str = "vit_h", device: str = "cpu"):
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"SAM checkpoint not found: {checkpoint} (pass --sam-checkpoint PATH)")
        try:
            from segment_anything import SamPredictor, sam_model_registry  # lazy: optional (.[sam]), only for --region sam
        except ImportError as exc:
            raise ImportError("the sam region needs the segment-anything package: pip install -e '.[sam]'") from exc
        sam = sam_model_registry[model_type](checkpoint=str(checkpoint)).to(device)
        self.predictor = SamPredictor(sam)

    def __call__(self, image: np.ndarray, start: np.ndarray) -> np.ndarray:
        rgb = np.asarray(image)[..., :3]
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        self.predictor.set_image(rgb)
        masks, _, _ = self.predictor.predict(point_coords=np.asarray([start], np.float32), point_labels=np.array([1]), multimask_output=True)
        areas = masks.reshape(len(masks), -1).sum(axis=1)
        nonempty = np.flatnonzero(areas > 0)
        if len(nonempty) == 0:
            raise RegionError("SAM returned only empty masks")
        return masks[nonempty[np.argmin(areas[nonempty])]]


def region_provider(kind: str, mask: np.ndarray | None = None, sam_checkpoint: Path | None = None, sam_model: str = "vit_h"):
    if kind == "mask":
        if mask is None:
            raise RegionError("--region mask needs a dataset part mask (use a dataset state as input)")
        return MaskRegion(mask)
    if kind == "sam":
        if sam_checkpoint is None:
            raise FileNotFoundError("--region sam needs a local checkpoint: pass --sam-checkpoint PATH")
        return SamRegion(sam_checkpoint, sam_model)
    if kind == "color":
        return ColorRegion()
    raise ValueError(f"unknown region provider {kind!r} (mask | sam | color)")
