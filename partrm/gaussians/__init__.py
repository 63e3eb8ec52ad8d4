"""3D Gaussian rendering: one API (``render_gaussians``) over a CPU and a CUDA backend, plus PLY I/O.

``layout`` describes LGM's 14-channel Gaussians; ``gaussians_from_lgm`` turns them into the
API's fields.
"""

from .ply import read_ply, write_ply
from .rasterize import (
    BACKENDS,
    Gaussians,
    RasterConfig,
    RenderResult,
    gaussians_from_lgm,
    gaussians_to_lgm,
    render_gaussians,
    select_backend,
)

__all__ = [
    "BACKENDS",
    "Gaussians",
    "RasterConfig",
    "RenderResult",
    "gaussians_from_lgm",
    "gaussians_to_lgm",
    "read_ply",
    "render_gaussians",
    "select_backend",
    "write_ply",
]
