"""Training step time (forward + backward + AdamW) of PartRM on synthetic batches.

CPU: the tiny preset (64 px inputs, 4,096 Gaussians, 8 supervised views at 64 px),
stage 1 and stage 2; with CUDA also `big` (256 px, 65,536 Gaussians, bf16, gsplat).
No dataset needed: inputs are random images with a fixed camera ring.

    python benchmarks/bench_train.py [--threads 2] [--batch-size 4] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from partdrag4d import cameras  # noqa: E402
from partrm.models.lgm import LGMConfig  # noqa: E402
from partrm.models.partrm import PartRM, PartRMConfig  # noqa: E402
from partrm.train import Losses, load_config  # noqa: E402


def batch(cfg: LGMConfig, b: int, render: int, device) -> dict:
    ring = cameras.ring_cameras(render)
    inputs = [ring[v].resized(cfg.input_size, cfg.input_size) for v in (0, 3, 6, 9)]
    s = cfg.splat_size
    return {
        "input_rgb": torch.rand(b, 4, 3, cfg.input_size, cfg.input_size, device=device),
        "input_K": torch.tensor(np.stack([c.K for c in inputs]), dtype=torch.float32, device=device).expand(b, 4, 3, 3),
        "input_c2w": torch.tensor(np.stack([c.c2w for c in inputs]), dtype=torch.float32, device=device).expand(b, 4, 4, 4),
        "drags": torch.rand(b, 4, 10, 4, device=device),
        "drag_valid": torch.ones(b, 4, 10, dtype=torch.bool, device=device),
        "target_rgb": torch.rand(b, 12, 3, render, render, device=device),
        "target_alpha": torch.rand(b, 12, 1, render, render, device=device),
        "target_K": torch.tensor(np.stack([c.K for c in ring]), dtype=torch.float32, device=device).expand(b, 12, 3, 3),
        "target_c2w": torch.tensor(np.stack([c.c2w for c in ring]), dtype=torch.float32, device=device).expand(b, 12, 4, 4),
        "supervised_views": torch.tensor([[1, 2, 4, 5, 7, 8, 10, 11]] * b, device=device),
        "gs_target": torch.rand(b, 4, 14, s, s, device=device),
    }


def time_steps(preset: str, stage: str, b: int, steps: int, device, dtype) -> float:
    torch.manual_seed(0)
    lgm = LGMConfig.preset(preset)
    model = PartRM(PartRMConfig(lgm=lgm)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = batch(lgm, b, lgm.input_size, device)
    losses = Losses(load_config(stage=stage))
    times = []
    for k in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = losses.loss_dict(model, data, stage, lgm.input_size)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PartRM train step, batch {args.batch_size}, median of {args.steps} after a warm-up")
    cpu = torch.device("cpu")
    for stage in ("1", "2"):
        t = time_steps("tiny", stage, args.batch_size, args.steps, cpu, torch.float32)
        print(f"  cpu  tiny stage {stage}: {t:.2f} s/step  ({torch.get_num_threads()} threads, fp32)")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print(f"  device: {torch.cuda.get_device_name(0)}")
        for stage in ("1", "2"):
            t = time_steps("big", stage, args.batch_size, args.steps, gpu, torch.bfloat16)
            print(f"  cuda big  stage {stage}: {t:.2f} s/step  (bf16)")
    else:
        print("  (no CUDA: the big preset is measured on a GPU machine)")


if __name__ == "__main__":
    main()
