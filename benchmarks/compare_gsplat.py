"""Check the gsplat (CUDA) backend against the torch backend on a GPU machine.

Renders the same scenes with both backends on the GPU (float32) and prints the max and
mean absolute differences of rgb, alpha and depth (depth where alpha > 0.01, since the
alpha-normalised depth amplifies noise where almost nothing is drawn), of the gradients
w.r.t. every Gaussian parameter (relative to the largest gradient), and timings. The
torch backend runs with ``alpha_max=0.999``, the clamp gsplat compiles in; everything
else is the default config. gsplat JIT-compiles its kernels on the first call (minutes).

Exits 0 with a message on a machine without CUDA (there is nothing to compare there),
1 if a difference exceeds its tolerance.

    python benchmarks/compare_gsplat.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from partdrag4d import cameras  # noqa: E402
from partrm.gaussians import RasterConfig, render_gaussians  # noqa: E402

TOLERANCES = {"rgb": (2e-3, 1e-4), "alpha": (2e-3, 1e-4), "depth": (1e-2, 1e-4)}  # (max, mean) abs
GRAD_TOLERANCE = 1e-2  # max abs difference / max abs gradient
FIELDS = ("means", "quats", "scales", "opacities", "colors")


def scene_object(n: int, size: int, num_cams: int, seed: int):
    """Object-like shell of Gaussians (as in bench_raster.py) seen by ring cameras."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=1, keepdim=True) * 0.6 * (1 + 0.02 * torch.randn(n, 1, generator=g))
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(math.log(0.012 * 256 / size) + 0.4 * torch.randn(n, 3, generator=g))
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    cams = cameras.ring_cameras(size, cameras.NUM_VIEWS)[:num_cams]
    viewmats = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32)
    Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
    return [means, quats, scales, opacities, colors], viewmats, Ks


def scene_random(n: int, width: int, height: int, seed: int):
    """Random box of Gaussians incl. large ones and some at / behind camera 0's near plane."""
    g = torch.Generator().manual_seed(seed)
    cams = []
    for i in range(3):
        eye = cameras.ring_position(40.0 + 97.0 * i)
        cams.append(cameras.Camera(cameras.intrinsics(width, height), cameras.look_at(eye), width, height))
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.8
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.6 - 3.0)
    scales[:10] *= 8.0
    c2w = torch.tensor(cams[0].c2w, dtype=torch.float32)
    ahead = torch.tensor(
        [[0.1, -0.05, 0.3], [0.0, 0.0, 0.02], [0.05, 0.02, 0.005], [-0.03, 0.0, -0.01], [0.0, 0.1, -0.5]]
    )
    means[10:15] = ahead @ c2w[:3, :3].T + c2w[:3, 3]
    scales[10:15] = 0.05
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmats = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32)
    Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
    return [means, quats, scales, opacities, colors], viewmats, Ks


def renderer(backend: str, alpha_max: float = 0.999):
    """``render(*gaussians, viewmats, Ks, width, height, background)`` through ``render_gaussians``
    with one backend; ``alpha_max=0.999`` is the clamp gsplat compiles in."""
    config = dataclasses.replace(RasterConfig(alpha_max=alpha_max), backend=backend)

    def render(*args, background=1.0):
        return render_gaussians(*args, background=background, config=config)

    render.config = config
    return render


def _run(render, gauss, viewmats, Ks, width, height, weights):
    params = [t.clone().requires_grad_() for t in gauss]
    out = render(*params, viewmats, Ks, width, height, background=1.0)
    loss = (out.rgb * weights).sum() + out.alpha.sum() + 0.1 * out.depth.sum()
    loss.backward()
    return [t.detach() for t in out], [p.grad for p in params]


def _time(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def differences(gauss, viewmats, Ks, width, height, render_a, render_b, device="cuda") -> dict:
    """Render the same scene with ``render_a`` and ``render_b`` (see ``renderer``) on ``device``:
    rgb / alpha / depth max and mean absolute differences (depth where both alphas > 0.01, since
    the alpha-normalised depth amplifies noise where almost nothing is drawn) against
    ``TOLERANCES``, and per Gaussian field the max absolute gradient difference relative to
    the largest gradient of ``render_b`` against ``GRAD_TOLERANCE``. Returns a dict with
    ``images``, ``grads`` and ``ok``."""
    dev = torch.device(device)
    gauss = [t.to(dev) for t in gauss]
    viewmats, Ks = viewmats.to(dev), Ks.to(dev)
    weights = torch.rand(viewmats.shape[:-2] + (height, width, 3), generator=torch.Generator().manual_seed(1)).to(dev)
    out_a, grad_a = _run(render_a, gauss, viewmats, Ks, width, height, weights)
    out_b, grad_b = _run(render_b, gauss, viewmats, Ks, width, height, weights)
    result = {"images": {}, "grads": {}, "ok": True}
    drawn = (out_b[1] > 0.01) & (out_a[1] > 0.01)
    for key, a, b in zip(("rgb", "alpha", "depth"), out_a, out_b):
        diff = (a - b).abs()
        if key == "depth":
            diff = diff[drawn.expand_as(diff)]
        mx, mean = (float(diff.max()), float(diff.mean())) if diff.numel() else (0.0, 0.0)
        good = mx <= TOLERANCES[key][0] and mean <= TOLERANCES[key][1]
        result["images"][key] = {"max_abs": mx, "mean_abs": mean, "tol_max": TOLERANCES[key][0],
                                 "tol_mean": TOLERANCES[key][1], "ok": good}
        result["ok"] &= good
    for key, a, b in zip(FIELDS, grad_a, grad_b):
        scale = float(b.abs().max()) or 1.0
        diff = (a - b).abs()
        rel = float(diff.max()) / scale
        good = rel <= GRAD_TOLERANCE and bool(torch.isfinite(a).all())
        result["grads"][key] = {"max_abs": float(diff.max()), "max_rel": rel, "mean_rel": float(diff.mean()) / scale,
                                "max_grad": scale, "tol_rel": GRAD_TOLERANCE, "ok": good}
        result["ok"] &= good
    return result


def compare(name, gauss, viewmats, Ks, width, height, repeats) -> bool:
    render_g, render_t = renderer("gsplat"), renderer("torch")
    print(f"== {name}: N={gauss[0].shape[-2]}, cameras {tuple(viewmats.shape[:-2])}, {width}x{height}")
    result = differences(gauss, viewmats, Ks, width, height, render_g, render_t)
    for key, d in result["images"].items():
        print(f"  {key:6s} max abs diff {d['max_abs']:.2e}  mean {d['mean_abs']:.2e}  {'ok' if d['ok'] else 'TOO LARGE'}")
    for key, d in result["grads"].items():
        print(f"  d/d{key:9s} max abs diff {d['max_rel']:.2e} x max|grad|  mean {d['mean_rel']:.2e}  "
              f"{'ok' if d['ok'] else 'TOO LARGE'}")

    dev = torch.device("cuda")
    gauss = [t.to(dev) for t in gauss]
    viewmats, Ks = viewmats.to(dev), Ks.to(dev)
    weights = torch.rand(viewmats.shape[:-2] + (height, width, 3), generator=torch.Generator().manual_seed(1)).to(dev)
    for label, render in (("gsplat", render_g), ("torch (on GPU)", render_t)):

        def fwd(render=render):
            with torch.no_grad():
                render(*gauss, viewmats, Ks, width, height)

        f = _time(fwd, repeats)
        fb = _time(lambda render=render: _run(render, gauss, viewmats, Ks, width, height, weights), repeats)
        print(f"  {label:15s} forward {f * 1e3:8.2f} ms   forward+backward {fb * 1e3:8.2f} ms")
    return result["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "compare_gsplat.py: skipped - no CUDA device here. gsplat's kernels are CUDA-only "
            "(they JIT-compile on a GPU machine); run this script where a GPU is available."
        )
        sys.exit(0)
    import gsplat

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  gsplat {gsplat.__version__}")
    print("first gsplat call JIT-compiles its CUDA kernels; this can take minutes", flush=True)
    ok = True
    gauss, viewmats, Ks = scene_random(400, 48, 32, seed=0)
    ok &= compare("random scene incl. near-plane Gaussians", gauss, viewmats, Ks, 48, 32, args.repeats)
    gauss, viewmats, Ks = scene_object(65536, 256, 1, seed=0)
    ok &= compare("object shell, LGM size", gauss, viewmats, Ks, 256, 256, args.repeats)
    gauss, viewmats, Ks = scene_object(16384, 128, 4, seed=1)
    batched = [torch.stack([t, t.flip(0)]) for t in gauss]  # two objects per batch
    ok &= compare(
        "batch of 2 objects x 4 cameras",
        batched,
        torch.stack([viewmats, viewmats.flip(0)]),
        torch.stack([Ks, Ks]),
        128,
        128,
        args.repeats,
    )
    print("all within tolerance" if ok else "SOME DIFFERENCES EXCEED TOLERANCE")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
