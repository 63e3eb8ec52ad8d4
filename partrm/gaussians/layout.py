"""Channel layout of a Gaussian in LGM's 14-channel splatter images.

A splatter image is ``[B, V, 14, S, S]``: one Gaussian per pixel of each of V views.
Flattened, Gaussians are ``[B, N, 14]`` with ``N = V * S * S`` in (view, row, col)
order, which is the index layout the Gaussian database stores (the stage-1 loss is
per pixel, so the order must never change).

All values are *activated* (what the rasterizer consumes): xyz in the object frame,
opacity in [0, 1], positive scales, unit quaternions (w, x, y, z), rgb in [0, 1].
"""

XYZ = slice(0, 3)
OPACITY = slice(3, 4)
SCALE = slice(4, 7)
ROTATION = slice(7, 11)  # quaternion w, x, y, z
RGB = slice(11, 14)
NUM_CHANNELS = 14
