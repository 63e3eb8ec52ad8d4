"""Forward time of the LGM U-Net (tiny and big presets), batch 1, 4 views.

CPU in fp32 with a pinned thread count (a shared CPU makes unpinned numbers
meaningless), and, when CUDA is available, GPU in bf16. Prints one line per case.

    python benchmarks/bench_lgm.py [--threads 2] [--repeats 3] [--skip-big]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from partrm.models.lgm import LGM, LGMConfig  # noqa: E402


def _time(fn, repeats: int, sync=lambda: None) -> tuple[float, float]:
    """Median and min seconds of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def bench(preset: str, device: str, dtype: torch.dtype, repeats: int) -> None:
    torch.manual_seed(0)
    cfg = LGMConfig.preset(preset)
    t0 = time.perf_counter()
    model = LGM(cfg).to(device=device, dtype=dtype).eval()
    build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, cfg.num_views, 9, cfg.input_size, cfg.input_size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    med, best = _time(run, repeats, sync)
    extra = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
    print(f"{preset:5s} {device:4s} {str(dtype).removeprefix('torch.'):8s} params {n_params / 1e6:7.2f} M  "
          f"in {cfg.num_views}x9x{cfg.input_size}^2 -> {cfg.num_gaussians} Gaussians  "
          f"forward median {med * 1e3:9.1f} ms  min {best * 1e3:9.1f} ms  (build {build:.1f} s{extra})", flush=True)
    del model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (pinned)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true", help="only the tiny preset")
    parser.add_argument("--skip-cpu", action="store_true", help="only GPU cases")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()} (pinned; the CPU may be shared), "
          f"CUDA {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    presets = ["tiny"] if args.skip_big else ["tiny", "big"]
    if not args.skip_cpu:
        for preset in presets:
            bench(preset, "cpu", torch.float32, args.repeats)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        for preset in presets:
            bench(preset, "cuda", torch.bfloat16, max(args.repeats, 10))


if __name__ == "__main__":
    main()
