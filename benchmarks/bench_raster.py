"""CPU cost of the torch Gaussian rasterizer: forward and forward+backward.

Cases: 65,536 Gaussians (LGM's 4 x 128 x 128) at 256x256, and 16,384 at 128x128.
Scene (``--scene``):
    surface  object-like: Gaussians in a thin shell of radius 0.6 around the origin (the
             object frame of ``partdrag4d.cameras``), log-normal scales around 0.012
             (about 1.4 px sigma at 256x256, LGM's footprint), opacity U(0, 1), random
             rotations and colours; seen by ring camera 1 (azimuth 30 deg).
    volume   the same Gaussians filling a ball of radius 0.7 (less early termination).
Backward is of a loss on all outputs (rgb, alpha, depth) w.r.t. all Gaussian parameters.
Torch threads are pinned (default 2); a shared CPU makes unpinned numbers meaningless,
and the load average is printed before and after. Each case: one warm-up, then the
median (and min) of ``--repeats`` runs; "cpu" is process CPU seconds per run.
Compositors (``--compositor``): compiled (the default on CPU tensors: numba per-pixel loops,
``partrm/gaussians/tile_kernels.py``) and vectorised (torch ops; what other devices use).
Target on the 2-core machine (issue #23), 65,536 at 256x256: forward <= 0.05 s,
forward+backward <= 0.15 s (both compositors match the dense reference: tests/partrm/gaussians).

When other processes keep the cores busy, every OpenMP region can stall for a scheduler
tick while its threads spin at barriers (2-thread runs then take several times longer than
1-thread runs); ``--passive`` sets OMP_WAIT_POLICY=PASSIVE before torch starts, which
removes most of that.

    python benchmarks/bench_raster.py [--threads 2] [--repeats 5] [--scene surface|volume|both] [--passive]
                                      [--compositor compiled|vectorised|both]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "--passive" in sys.argv:  # must precede the OpenMP runtime's start-up, i.e. importing torch
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402

from partdrag4d import cameras  # noqa: E402
from partrm.gaussians import RasterConfig, render_gaussians  # noqa: E402

TARGETS = {(65536, 256): (0.05, 0.15)}


def make_scene(n: int, size: int, kind: str, seed: int = 0):
    """Gaussians [N, ...] and one ring camera [1, ...] for a size x size image."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    if kind == "surface":
        means = d * 0.6 * (1 + 0.02 * torch.randn(n, 1, generator=g))
    elif kind == "volume":
        means = d * 0.7 * torch.rand(n, 1, generator=g) ** (1 / 3)
    else:
        raise ValueError(kind)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(math.log(0.012) + 0.4 * torch.randn(n, 3, generator=g))
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    cam = cameras.ring_cameras(size, cameras.NUM_VIEWS)[1]
    viewmats = torch.tensor(cam.w2c, dtype=torch.float32)[None]
    Ks = torch.tensor(cam.K, dtype=torch.float32)[None]
    return [means, quats, scales, opacities, colors], viewmats, Ks


def _machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, torch {torch.__version__}"
    )


def _timed(fn, repeats: int) -> tuple[float, float, float]:
    fn()  # warm-up (first-touch allocations, lazy init)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def bench(n: int, size: int, kind: str, repeats: int, config: RasterConfig) -> None:
    gauss, viewmats, Ks = make_scene(n, size, kind)
    params = [t.clone().requires_grad_() for t in gauss]
    weights = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1))

    def forward():
        with torch.no_grad():
            return render_gaussians(*gauss, viewmats, Ks, size, size, background=1.0, config=config)

    def forward_backward():
        out = render_gaussians(*params, viewmats, Ks, size, size, background=1.0, config=config)
        loss = (out.rgb * weights).sum() + out.alpha.sum() + 0.1 * out.depth.sum()
        loss.backward()
        for p in params:
            p.grad = None

    out = forward()
    coverage = float((out.alpha > 0.5).float().mean())
    f_med, f_min, f_cpu = _timed(forward, repeats)
    b_med, b_min, b_cpu = _timed(forward_backward, repeats)
    line = (
        f"{'compiled' if config.compiled else 'vectorised':10s} {kind:8s} N={n:6d} {size}x{size}  "
        f"forward {f_med:.3f} s (min {f_min:.3f}, cpu {f_cpu:.2f})  "
        f"forward+backward {b_med:.3f} s (min {b_min:.3f}, cpu {b_cpu:.2f})  coverage {coverage:.0%}"
    )
    target = TARGETS.get((n, size))
    if target:
        ok = f_med <= target[0] and b_med <= target[1]
        line += f"  target {target[0]}/{target[1]} s: {'met' if ok else 'MISSED'}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scene", choices=["surface", "volume", "both"], default="both")
    parser.add_argument("--tile-size", type=int, default=RasterConfig.tile_size)
    parser.add_argument("--depth-slice", type=int, default=RasterConfig.depth_slice)
    parser.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE (for a loaded machine)")
    parser.add_argument("--compositor", choices=["compiled", "vectorised", "both"], default="both")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = RasterConfig(backend="torch", tile_size=args.tile_size, depth_slice=args.depth_slice)
    compositors = ["compiled", "vectorised"] if args.compositor == "both" else [args.compositor]
    print(f"machine: {_machine()}")
    print(
        f"torch threads: {torch.get_num_threads()}  OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}  "
        f"tile_size={config.tile_size} depth_slice={config.depth_slice}"
    )
    print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    kinds = ["surface", "volume"] if args.scene == "both" else [args.scene]
    for compositor in compositors:
        for kind in kinds:
            for n, size in ((65536, 256), (16384, 128)):
                bench(n, size, kind, args.repeats, replace(config, compiled=compositor == "compiled"))
    print("load average after:  %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
