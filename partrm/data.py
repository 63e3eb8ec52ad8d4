"""Training and evaluation pairs of a PartDrag-4D dataset as a PyTorch ``Dataset``.

A pair is (source state i, target state j) of one sequence. An item holds

- the source state's 4 input views (default ring views 0/3/6/9, i.e. azimuths
  0/90/180/270, which is also LGM's input order) at ``input_size``, composited on
  white like LGM's inputs, with their cameras (K scaled to the size, OpenCV c2w);
- ``num_drags`` drags in the first input view (the user's image; ``drag_views="all"``:
  in every input view), as (x0, y0, x1, y1) in normalised image
  coordinates (pixel coordinate / image size, so 0..1 across the image, x right,
  y down) with a validity mask. ``drag_mode="propagated"`` (the paper's Eq. 2): one
  visible drag of the view is the user's drag (index 0) and the others start at
  random pixels of the moving part's mask with the same 2D displacement;
  ``drag_mode="visible"``: ``num_drags`` of the view's stored visible drags, each
  with its own true displacement. Optional Gaussian noise on drag ends (in pixels of
  a 512 image) is the paper's training noise;
- the moving part's mask in each input view (the propagation region);
- all 12 views of the target state (rgb, alpha) at ``target_size`` with cameras and
  the indices of the 8 views not used as input (the supervised / evaluated ones);
- optionally the Gaussian-database splatter images of the source and target states
  (``stage1_target="carried"``: the target is the source's splatter image moved by the
  true part motion, so it stays aligned with the source's input pixels).

``zero_drag_prob`` turns that share of items into *still* items: the same drags with zero
displacement, and the source state itself as the target. A model that never sees one can
learn to move the part its drags point at whatever their displacement (the evaluation's
zero-drag control catches that).

An item's randomness (drag choice, propagation, noise) comes from
``default_rng([seed, index])``; a non-zero ``stream`` appends a third word ([seed, index] and
[seed, index, 0] are the same numpy seed, so 0 is not a stream) so that evaluation
draws its drags from a stream training never uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, Sequence, TypedDict

import h5py
import numpy as np
import torch
from PIL import Image

from partdrag4d import store
from partdrag4d.cameras import IMAGE_SIZE, NUM_VIEWS, Camera
from partdrag4d.dragfile import DRAG_FILE
from partdrag4d.options import check as check_options, option
from partrm.gsdb import GaussianDatabase
from partrm.models.rgbd import RGBDConfig, drag_region
from partrm.part_motion import carried_splatter, flat_splatter, moving_part_of, moving_part_splatter_mask, region_part_of

DEFAULT_INPUT_VIEWS = (0, 3, 6, 9)
STAGE1_TARGETS = ("target", "carried")
"""Stage 1's splatter target: the target state's own (the paper's Eq. 5), or the source's
carried by the true part motion (``partrm.part_motion``; aligned with the source's pixels)."""


@dataclass(frozen=True)
class PairConfig:
    input_views: tuple[int, ...] = DEFAULT_INPUT_VIEWS
    input_size: int = 256
    target_size: int = 256  # 0: items carry no target views (stage 1)
    num_drags: int = 10
    drag_mode: str = "propagated"  # propagated | visible
    drag_noise_px: float = 0.0
    drag_views: str = "first"  # first: drags only in the first input view (the user's image) | all
    background: float = 1.0  # LGM composites its inputs on white
    stage1_target: str = option("target", "gs_target: the target state's splatter image (target) | the source's, moved by the "
                                "true part motion (carried).", choices=STAGE1_TARGETS)
    zero_drag_prob: float = option(0.0, "Share of items whose drags have zero displacement and whose target is the source state.",
                                   min=0.0, max=1.0)
    depth: bool = False  # RGB-D mode: items carry the input views' planar depth (input_depth)
    region_size: int = 0  # RGB-D mode: items carry the drag region at this splat size (region; 0: none)
    region_fraction: float = RGBDConfig.gate_fraction  # RGB-D mode: share of a cell's pixels on the part that puts it in the region

    def __post_init__(self) -> None:
        check_options(self)  # stage1_target's choices, zero_drag_prob's range

    @property
    def supervised_views(self) -> tuple[int, ...]:
        return tuple(v for v in range(NUM_VIEWS) if v not in self.input_views)


@dataclass(frozen=True)
class PairRef:
    sequence_id: str
    pair_index: int
    source_stage: int
    target_stage: int
    source_state: str
    target_state: str
    category: str
    object_id: str


def load_view(path: Path, size: int, background: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A rendered RGBA view resized to ``size``: rgb [3,S,S] (composited if background
    is given) and alpha [1,S,S], float32 in [0, 1]. A missing or damaged image raises
    ``DamagedFile`` naming it."""
    with store.reading(path), Image.open(path) as im:
        return image_arrays(im, size, background)


def image_arrays(im: Image.Image, size: int, background: float | None) -> tuple[np.ndarray, np.ndarray]:
    """An image (any mode, as RGBA) resized to ``size``: rgb [3,S,S] (composited if background
    is given) and alpha [1,S,S], float32 in [0, 1] (``load_view`` without the file)."""
    im = im.convert("RGBA")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    a = np.asarray(im, dtype=np.float32) / 255.0
    rgb, alpha = a[..., :3], a[..., 3:]
    if background is not None:
        rgb = rgb * alpha + background * (1.0 - alpha)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), np.ascontiguousarray(alpha.transpose(2, 0, 1))


def camera_tensors(cameras: list[Camera], views, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K [V, 3, 3] for ``size`` x ``size`` images and OpenCV c2w [V, 4, 4] of the chosen views."""
    cams = [cameras[v].resized(size, size) for v in views]
    return (torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32),
            torch.tensor(np.stack([c.c2w for c in cams]), dtype=torch.float32))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask [H, W] -> [size, size]: a cell is in the mask if any pixel of it is."""
    h, w = mask.shape
    if h == size and w == size:
        return mask.copy()
    if h % size == 0 and w % size == 0:
        return mask.reshape(size, h // size, size, w // size).any(axis=(1, 3))
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(img) > 127


def resize_depth(depth: np.ndarray, size: int) -> np.ndarray:
    """Planar depth [H, W] (inf = background) -> [size, size]: each cell keeps its front-most
    (smallest) depth, so an input pixel never lies between two surfaces."""
    h, w = depth.shape
    if (h, w) == (size, size):
        return depth.astype(np.float32)
    if h % size or w % size:
        raise ValueError(f"depth of {w}x{h} cannot be reduced to {size}x{size} (not a multiple)")
    return depth.reshape(size, h // size, size, w // size).min(axis=(1, 3)).astype(np.float32)


class PairItem(TypedDict):
    """One training pair (``PairDataset[i]``): the source state's input views and drags, the
    target state's 12 views. Images are channel-first in [0, 1]; cameras are pixel intrinsics
    at the image's size and OpenCV camera-to-world in the object frame; drags are normalised
    (x0, y0, x1, y1) in [0, 1] (``collate`` stacks the tensors and lists the rest)."""

    input_rgb: torch.Tensor  # [4, 3, Si, Si] composited on the background
    input_alpha: torch.Tensor  # [4, 1, Si, Si]
    input_K: torch.Tensor  # [4, 3, 3]
    input_c2w: torch.Tensor  # [4, 4, 4]
    drags: torch.Tensor  # [4, num_drags, 4]
    drag_valid: torch.Tensor  # [4, num_drags] bool (fewer visible drags than asked: padding)
    mask: torch.Tensor  # [4, Si, Si] bool: the moving part in the source's input views
    target_rgb: NotRequired[torch.Tensor]  # [12, 3, St, St] straight (not composited); absent when target_size is 0
    target_alpha: NotRequired[torch.Tensor]  # [12, 1, St, St]
    target_K: NotRequired[torch.Tensor]  # [12, 3, 3]
    target_c2w: NotRequired[torch.Tensor]  # [12, 4, 4]
    supervised_views: torch.Tensor  # the views rendered for the photometric loss
    index: int
    sequence_id: str
    source_state: str
    target_state: str
    category: str
    object_id: str
    input_depth: NotRequired[torch.Tensor]  # [4, 1, Si, Si] planar depth, inf = background (RGB-D mode)
    region: NotRequired[torch.Tensor]  # [4, 1, S, S] bool: the drag region at the splat size (RGB-D mode)
    gs_source: NotRequired[torch.Tensor]  # [V, 14, S, S] from the Gaussian database (with gsdb)
    gs_target: NotRequired[torch.Tensor]


class PairDataset(torch.utils.data.Dataset):
    """(source, target) pairs of a rendered dataset with drags; see the module docstring."""

    def __init__(self, root: Path, split: str | None = None, categories: list[str] | None = None,
                 config: PairConfig = PairConfig(), drag_file: Path | None = None, gsdb: Path | None = None,
                 seed: int = 0, sequences: list[str] | None = None, stream: int | None = None):
        self.root = Path(root)
        self.config = config
        self.seed = seed
        if stream is not None and stream <= 0:
            raise ValueError(f"stream must be a positive integer (0 is the training stream), got {stream}")
        self.stream = stream  # None: training's item randomness; an int: a separate stream (evaluation)
        self.drag_path = Path(drag_file) if drag_file else self.root / DRAG_FILE
        if not self.drag_path.is_file():
            raise FileNotFoundError(f"{self.drag_path} not found: run `partdrag4d drags {self.root}` first")
        self.gsdb_path = Path(gsdb) if gsdb else None
        self._h5: h5py.File | None = None
        self._gs: h5py.File | None = None
        self._part_of: dict[str, np.ndarray] = {}  # source state -> its database Gaussians' moving part (-1: none)
        self.pairs: list[PairRef] = []
        first = config.input_views[0]
        with store.reading(self.drag_path), h5py.File(self.drag_path, "r") as f:  # damaged: one line naming it
            for sid, g in f["sequences"].items():
                if split and g.attrs["split"] != split:
                    continue
                if categories and g.attrs["category"] not in categories:
                    continue
                if sequences is not None and sid not in sequences:
                    continue
                states = json.loads(g.attrs["state_ids"])
                counts = g["count"][:]
                for k, (i, j) in enumerate(g["pairs"][:]):
                    if counts[k, first] == 0:
                        continue  # the part is not visible in the user's view
                    self.pairs.append(PairRef(sid, k, int(i), int(j), states[i], states[j], str(g.attrs["category"]), str(g.attrs["object_id"])))
        self.cameras = store.read_dataset_cameras(self.root)

    def __len__(self) -> int:
        return len(self.pairs)

    def _file(self) -> h5py.File:
        if self._h5 is None:  # opened lazily so that DataLoader workers each get their own handle
            self._h5 = h5py.File(self.drag_path, "r")
        return self._h5

    def part_masks(self, ref: PairRef, views: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The moving part's masks of a pair in ``views``: ([V, H, W] bool of the source stage,
        the same of the target stage), at the rendered size, as ``drags.h5`` stores them."""
        masks = self._file()["sequences"][ref.sequence_id]["masks"]
        source = np.stack([masks[ref.source_stage, v] for v in views])
        target = np.stack([masks[ref.target_stage, v] for v in views])
        return source, target

    def _drags(self, g: h5py.Group, ref: PairRef, masks: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        n = cfg.num_drags
        drags = np.zeros((len(cfg.input_views), n, 4), np.float32)
        valid = np.zeros((len(cfg.input_views), n), bool)
        count = g["count"][ref.pair_index]
        res = float(g["masks"].shape[-1])  # drags are stored in pixels of the rendered size
        for a, v in enumerate(cfg.input_views):
            c = int(count[v])
            if c == 0 or (cfg.drag_views == "first" and a > 0):
                continue
            start = g["start_2d"][ref.pair_index, v, :c]
            end = g["end_2d"][ref.pair_index, v, :c]
            if cfg.drag_mode == "visible":
                pick = rng.choice(c, size=min(n, c), replace=False)
                s, e = start[pick], end[pick]
            elif cfg.drag_mode == "propagated":
                user = int(rng.integers(c))
                delta = end[user] - start[user]
                rows, cols = np.nonzero(masks[a])
                extra = n - 1
                if len(rows) and extra > 0:
                    pick = rng.integers(len(rows), size=extra)
                    jitter = rng.random((extra, 2))  # a random point inside each chosen mask pixel
                    prop = np.stack([cols[pick] + jitter[:, 0], rows[pick] + jitter[:, 1]], axis=1)
                    s = np.concatenate([start[user : user + 1], prop])
                else:
                    s = start[user : user + 1]
                e = s + delta
            else:
                raise ValueError(f"unknown drag_mode {cfg.drag_mode!r}")
            e = e + rng.normal(0.0, cfg.drag_noise_px * res / IMAGE_SIZE, e.shape) if cfg.drag_noise_px > 0 else e
            k = len(s)
            drags[a, :k, :2] = s / res
            drags[a, :k, 2:] = e / res
            valid[a, :k] = True
        return drags, valid

    def __getitem__(self, index: int) -> PairItem:
        cfg = self.config
        ref = self.pairs[index]
        rng = np.random.default_rng([self.seed, index] if self.stream is None else [self.seed, index, self.stream])
        g = self._file()["sequences"][ref.sequence_id]
        src_dir = store.render_dir(self.root, ref.source_state)
        inputs = [load_view(src_dir / store.view_png_name(v), cfg.input_size, cfg.background) for v in cfg.input_views]
        full_masks = [g["masks"][ref.source_stage, v] for v in cfg.input_views]
        drags, valid = self._drags(g, ref, full_masks, rng)
        target_state = ref.target_state
        if cfg.zero_drag_prob > 0 and rng.random() < cfg.zero_drag_prob:  # drawn after the drags: they stay the pair's
            drags[..., 2:] = drags[..., :2]  # no displacement: the target is the source state itself
            target_state = ref.source_state
        dst_dir = store.render_dir(self.root, target_state)
        in_K, in_c2w = camera_tensors(self.cameras, cfg.input_views, cfg.input_size)
        item: PairItem = {
            "input_rgb": torch.from_numpy(np.stack([x[0] for x in inputs])),
            "input_alpha": torch.from_numpy(np.stack([x[1] for x in inputs])),
            "input_K": in_K,
            "input_c2w": in_c2w,
            "drags": torch.from_numpy(drags),
            "drag_valid": torch.from_numpy(valid),
            "mask": torch.from_numpy(np.stack([resize_mask(m, cfg.input_size) for m in full_masks])),
            "supervised_views": torch.tensor(cfg.supervised_views),
            "index": index,
            "sequence_id": ref.sequence_id,
            "source_state": ref.source_state,
            "target_state": target_state,
            "category": ref.category,
            "object_id": ref.object_id,
        }
        if cfg.depth:
            depth, _, _ = store.read_render(src_dir)
            item["input_depth"] = torch.from_numpy(np.stack([resize_depth(depth[v], cfg.input_size) for v in cfg.input_views])[:, None])
        if cfg.region_size:
            item["region"] = drag_region(torch.from_numpy(np.stack(full_masks)), cfg.region_size, cfg.region_fraction)
        if cfg.target_size:  # 0: no target views (stage 1 compares splatter images only)
            targets = [load_view(dst_dir / store.view_png_name(v), cfg.target_size, None) for v in range(NUM_VIEWS)]
            item["target_rgb"] = torch.from_numpy(np.stack([x[0] for x in targets]))
            item["target_alpha"] = torch.from_numpy(np.stack([x[1] for x in targets]))
            item["target_K"], item["target_c2w"] = camera_tensors(self.cameras, range(NUM_VIEWS), cfg.target_size)
        if self.gsdb_path is not None:
            if self._gs is None:
                self._gs = GaussianDatabase(self.gsdb_path)
            source = self._gs.splatter(ref.source_state)
            part_of = self._part_of.get(ref.source_state)
            if part_of is None and cfg.region_size:  # RGB-D: the database is aligned with the input views, so the drag region says
                part_of = self._part_of[ref.source_state] = region_part_of(  # which Gaussians are on the part, exactly
                    flat_splatter(source)[:, :3], flat_splatter(item["region"].numpy())[:, 0], self.root, ref.source_state)
            if part_of is None:  # a state's database Gaussians never change: assign them to parts once
                part_of = self._part_of[ref.source_state] = moving_part_of(flat_splatter(source)[:, :3], self.root, ref.source_state)
            item["gs_source"] = torch.from_numpy(source)
            item["gs_part"] = torch.from_numpy(moving_part_splatter_mask(source, self.root, ref.source_state, part_of))
            if target_state == ref.source_state:
                item["gs_target"] = item["gs_source"]
            elif cfg.stage1_target == "carried":
                item["gs_target"] = torch.from_numpy(carried_splatter(source, self.root, ref.source_state, target_state, part_of))
            else:
                item["gs_target"] = torch.from_numpy(self._gs.splatter(target_state))
        return item

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_gs"] = None
        return state


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep strings and ints as lists."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


class StateDataset(torch.utils.data.Dataset):
    """Single rendered states: the 4 input views and all 12 views of the *same* state.

    What LGM's own objective (teacher pre-training) and the Gaussian database need. With
    ``gsdb``, items also hold the state's splatter image from that database (``gs_target``).
    """

    def __init__(self, root: Path, split: str | None = None, categories: list[str] | None = None,
                 input_views: tuple[int, ...] = DEFAULT_INPUT_VIEWS, input_size: int = 256, target_size: int = 256,
                 states: list[str] | None = None, gsdb: Path | None = None):
        self.root = Path(root)
        self.gsdb_path = Path(gsdb) if gsdb else None
        self._gs = None
        self.input_views = tuple(input_views)
        self.input_size = input_size
        self.target_size = target_size
        records = store.manifest_states(self.root)
        if split:
            records = [r for r in records if r["split"] == split]
        if categories:
            records = [r for r in records if r["category"] in categories]
        if states is not None:
            wanted = set(states)
            records = [r for r in records if r["state_id"] in wanted]
        # states not rendered are left out (listed in not_rendered); a render folder without its files raises DamagedFile
        rendered = [store.has_render(store.render_dir(self.root, r["state_id"])) for r in records]
        self.records = [r for r, ok in zip(records, rendered) if ok]
        self.not_rendered = [r["state_id"] for r, ok in zip(records, rendered) if not ok]
        self.cameras = store.read_dataset_cameras(self.root)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        r = self.records[index]
        folder = store.render_dir(self.root, r["state_id"])
        inputs = [load_view(folder / store.view_png_name(v), self.input_size, 1.0) for v in self.input_views]
        item = {
            "state_id": r["state_id"],
            "category": r["category"],
            "input_rgb": torch.from_numpy(np.stack([x[0] for x in inputs])),
            "input_alpha": torch.from_numpy(np.stack([x[1] for x in inputs])),
        }
        item["input_K"], item["input_c2w"] = camera_tensors(self.cameras, self.input_views, self.input_size)
        if self.target_size:
            targets = [load_view(folder / store.view_png_name(v), self.target_size, None) for v in range(NUM_VIEWS)]
            item["target_rgb"] = torch.from_numpy(np.stack([x[0] for x in targets]))
            item["target_alpha"] = torch.from_numpy(np.stack([x[1] for x in targets]))
            item["target_K"], item["target_c2w"] = camera_tensors(self.cameras, range(NUM_VIEWS), self.target_size)
            item["supervised_views"] = torch.tensor([v for v in range(NUM_VIEWS) if v not in self.input_views])
        if self.gsdb_path is not None:
            if self._gs is None:  # opened lazily: one handle per DataLoader worker
                self._gs = GaussianDatabase(self.gsdb_path)
            item["gs_target"] = torch.from_numpy(self._gs.splatter(r["state_id"]))
        return item

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_gs"] = None
        return state
