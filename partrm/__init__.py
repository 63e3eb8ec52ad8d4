"""PartRM: a drag-conditioned large Gaussian reconstruction model for part-level dynamics."""

import os

# OpenMP threads that spin while waiting stall for whole scheduler ticks when another
# process shares the cores (measured: 2-thread rasterizer steps 5-50x slower on a loaded
# 2-core machine). Passive waiting costs little when idle. Must precede torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
