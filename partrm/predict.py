"""One way to load a PartRM checkpoint of either mode and to run it on a dataset item.

Evaluation, figures, inference and the viewer call these, so a mode is handled in one place:
``rgb`` (the paper's: LGM reconstructs from the 4 views) or ``rgbd`` (``models.rgbd``: the
static reconstruction is the geometric splatter image of the 4 RGB-D views, the network
predicts what the drags change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from partdrag4d.errors import BadInput
from partrm.data import PairConfig
from partrm.gsdb_render import RenderGsdbConfig, as_stored, state_splatter
from partrm.models.lgm import read_checkpoint_metadata
from partrm.models.partrm import PartRM
from partrm.models.rgbd import RGBDPartRM

Model = Union[PartRM, RGBDPartRM]


def mode_of(model) -> str:
    return getattr(getattr(model, "module", model), "mode", "rgb")


def load_model(path: Union[str, Path], map_location: str = "cpu") -> Model:
    """A PartRM checkpoint of either mode (its metadata says which), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"PartRM checkpoint not found: {path} (pass --checkpoint PATH)")
    meta = read_checkpoint_metadata(path, "PartRM checkpoint")  # CheckpointError (one line) when it is not one
    if "partrm_rgbd_config" in meta:
        return RGBDPartRM.load(path, map_location).eval()
    return PartRM.load(path, map_location).eval()


def input_size(model) -> int:
    """The input views' size of a PartRM of either mode, or of a bare LGM (the teacher)."""
    model = getattr(model, "module", model)
    if mode_of(model) == "rgbd":
        return model.input_size
    return (model.lgm if hasattr(model, "lgm") else model).config.input_size


def pair_config(model, **options) -> PairConfig:
    """The ``PairConfig`` whose items this model reads (input size, drag views, RGB-D inputs)."""
    model = getattr(model, "module", model)
    extra = ({"depth": True, "region_size": model.config.splat_size, "region_fraction": model.config.gate_fraction}
             if mode_of(model) == "rgbd" else {})
    return PairConfig(input_size=input_size(model), drag_views=model.config.drag_views, **extra, **options)


class StaticCache:
    """The geometric static reconstruction of source states (``gsdb_render.state_splatter``
    in float16 precision, the RGB-D model's input), computed once per state."""

    def __init__(self, root: Path, splat_size: int):
        self.root, self.config = Path(root), RenderGsdbConfig(splat_size=splat_size)
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, state_id: str) -> np.ndarray:
        if state_id not in self._cache:
            self._cache[state_id] = as_stored(state_splatter(self.root, state_id, self.config))
        return self._cache[state_id]


def predict(model: Model, item: dict, drags: Optional[torch.Tensor] = None, statics: Optional[StaticCache] = None) -> torch.Tensor:
    """Gaussians [B, N, 14] (object frame) the model predicts for a collated item and ``drags``
    (default: the item's). RGB-D models take the static reconstruction from ``item["static"]``
    or, for dataset items, from ``statics``."""
    device = next(model.parameters()).device
    drags = item["drags"] if drags is None else drags
    cams = (item["input_K"].to(device), item["input_c2w"].to(device))
    if mode_of(model) == "rgbd":
        static = item.get("static")
        if static is None:
            if statics is None:
                raise ValueError("an RGB-D model needs the static reconstruction of the source state (statics=StaticCache(...))")
            static = torch.from_numpy(np.stack([statics(s) for s in item["source_state"]]))
        return model.reconstruct(item["input_rgb"].to(device), cams, drags.to(device), item["drag_valid"].to(device),
                                 depth=item["input_depth"].to(device), static=static.to(device), region=item["region"].to(device))
    return model.reconstruct(item["input_rgb"].to(device), cams, drags.to(device), item["drag_valid"].to(device))
