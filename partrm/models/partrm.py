"""PartRM: LGM's U-Net with multi-scale drag embedding (paper Sec. 4).

The drag embedding enters through the U-Net's ``down_hook``; with its merge
convolutions at zero (their initialisation) PartRM is exactly its LGM initialisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from partdrag4d.store import atomic_write_bytes
from partrm.models.drag_embedding import MultiScaleDragEmbedding, levels_for_sizes
from partrm.models.lgm import LGM, CheckpointError, LGMConfig, read_checkpoint_metadata, read_checkpoint_tensors, reading_checkpoint


@dataclass(frozen=True)
class PartRMConfig:
    """``drag_sizes``: feature sizes that get drag maps; None = the input of every down
    block (the official choice: 256, 128, 64, 32, 16, 8 for LGM big). The paper's
    ablation (Table 4) uses single scales 128, 32 or 8 against multi-scale."""

    lgm: LGMConfig = field(default_factory=LGMConfig.tiny)
    drag_sizes: Optional[tuple[int, ...]] = None
    fourier_frequencies: int = 8
    mlp_hidden: int = 128
    merge_kernel: int = 1
    drag_views: str = "first"  # which input views carry drags in training and inference: first | all

    def levels(self) -> tuple[int, ...]:
        sizes = self.lgm.hook_sizes
        if self.drag_sizes is None:
            return tuple(range(len(self.lgm.down_channels)))
        return levels_for_sizes(sizes, tuple(self.drag_sizes))

    def to_json(self) -> str:
        d = asdict(self)
        d["lgm"] = json.loads(self.lgm.to_json())
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "PartRMConfig":
        d = json.loads(text)
        lgm = LGMConfig.from_json(json.dumps(d.pop("lgm")))
        if d.get("drag_sizes") is not None:
            d["drag_sizes"] = tuple(d["drag_sizes"])
        return cls(lgm=lgm, **d)


class PartRM(nn.Module):
    def __init__(self, config: PartRMConfig = PartRMConfig()):
        super().__init__()
        self.config = config
        self.lgm = LGM(config.lgm)
        self.drag = MultiScaleDragEmbedding(
            self.lgm.hook_channels, config.lgm.hook_sizes, config.levels(), config.fourier_frequencies, config.mlp_hidden, config.merge_kernel
        )

    def forward(self, images: Tensor, drags: Optional[Tensor] = None, valid: Optional[Tensor] = None) -> Tensor:
        """images [B, V, 9, H, W], drags [B, V, N, 4] (normalised x0, y0, x1, y1), valid [B, V, N]
        -> activated splatter [B, V, 14, S, S]. Without drags this is plain LGM."""
        return self.lgm(images, down_hook=self._drag_hook(drags, valid, images.dtype))

    def reconstruct(self, rgb: Tensor, cameras: Any, drags: Optional[Tensor] = None, valid: Optional[Tensor] = None) -> Tensor:
        """Images [B, V, 3, H, W] + object-frame cameras + drags -> Gaussians [B, N, 14] in the
        object frame (the LGM frame of official weights is handled by ``LGM.reconstruct``)."""
        return self.lgm.reconstruct(rgb, cameras, down_hook=self._drag_hook(drags, valid, rgb.dtype))

    def _drag_hook(self, drags: Optional[Tensor], valid: Optional[Tensor], dtype: torch.dtype):
        if drags is None:
            return None
        b, v = drags.shape[:2]
        if valid is None:
            valid = torch.ones(drags.shape[:-1], dtype=torch.bool, device=drags.device)
        return self.drag.hook(drags.reshape(b * v, *drags.shape[2:]).to(dtype), valid.reshape(b * v, -1))

    # ------------------------------------------------------------ weights

    @classmethod
    def from_lgm(cls, lgm: LGM, config: Optional[PartRMConfig] = None) -> "PartRM":
        """A PartRM initialised from LGM weights (teacher or official)."""
        config = config or PartRMConfig(lgm=lgm.config)
        if config.lgm != lgm.config:
            raise ValueError("PartRM's LGM config differs from the given LGM's")
        model = cls(config)
        model.lgm.load_state_dict(lgm.state_dict(), strict=True)
        return model

    def save(self, path: Union[str, Path]) -> None:
        """Weights and config in one safetensors file, written atomically."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(Path(path), safetensors_bytes(state, metadata={"format": "pt", "partrm_config": self.config.to_json()}))

    @classmethod
    def load(cls, path: Union[str, Path], map_location: str = "cpu") -> "PartRM":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"PartRM checkpoint not found: {path} (pass --checkpoint PATH)")
        what = "PartRM checkpoint"
        meta = read_checkpoint_metadata(path, what)
        if "partrm_config" not in meta:
            hint = "; these are LGM weights, which training takes as --init" if "lgm_config" in meta else ""
            raise CheckpointError(f"{path}: cannot load {what}: no partrm_config metadata{hint}")
        with reading_checkpoint(path, what):  # a config or tensors that do not fit: damaged
            model = cls(PartRMConfig.from_json(meta["partrm_config"]))
            model.load_state_dict(read_checkpoint_tensors(path, map_location, what), strict=True)
        return model
