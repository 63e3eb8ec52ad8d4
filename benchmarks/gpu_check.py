"""One prepared GPU check: gsplat parity and speed, LGM / PartRM latency, big-model training steps.

Run it the moment a GPU is there (one H200 is the machine planned for; about 8 minutes):

    bash benchmarks/gpu_check.sh                    # installs carried wheels, then runs this file
    python benchmarks/gpu_check.py [--out DIR]      # the same, when the packages are installed
    python benchmarks/gpu_check.py --cpu --small    # the same code paths on the CPU, tiny sizes (~30 s)

Steps, in order, each in its own worker process with its own time budget (seconds on a GPU;
``--budget-scale`` stretches them). A worker past its budget is killed (with everything it
started) and the step reads "timeout" with the cases it finished; a step whose package is
missing reads "skipped" with the reason, and the rest carry on. No step starts once
``--total-budget`` (470 s) is spent. gsplat's compile runs in the background at the lowest
CPU priority while the scene is built and LGM is timed (their rows say so), and is waited
for before the first step that renders on the GPU.

=================  ======  ===========================================================
step               budget  measures
=================  ======  ===========================================================
gsplat-build       240     gsplat's JIT compile of its CUDA kernels (cached in
                           ``$TORCH_EXTENSIONS_DIR``; ``gpu_check.sh`` keeps it in build/,
                           so a second run on the same machine loads it in seconds)
scene              20      a procedural microwave (``partdrag4d synth``, no Blender) at rest
                           and with its door opened -> LGM-style splatter images
                           (``splatter_scene.py``), its 4 input views, 12 target views, drags
lgm-forward        55      LGM ``big``, fp32 and bf16, batch 1 and 8, 4 x 256^2 inputs:
                           latency and peak memory
gsplat-parity      40      gsplat vs our torch rasterizer on the GPU: images and gradients
                           (means, quats, scales, opacities, colours) on random Gaussians
                           and the microwave's splatter image (8 views), against the
                           tolerances of ``compare_gsplat.py`` / the test suite
gsplat-throughput  30      65,536 and 262,144 Gaussians at 256^2 and 512^2, forward and
                           forward + backward
partrm-e2e         40      PartRM ``big``: drag -> propagation -> Gaussians -> 8 views at
                           256^2 (``partrm.infer.predict`` + rendering), fp32 and bf16
                           autocast; the paper reports 4.2 s, our goal is <= 0.2 s
train-step         95      PartRM ``big`` stage 1 and stage 2 steps (bf16 through HF
                           accelerate, batch 8, AdamW, gradient clipping): s/step, peak
                           memory, and the paper's schedule (100k + 50k iterations at
                           batch 4 x 8 on 4 GPUs) projected
=================  ======  ===========================================================

The models are randomly initialised (no official weights on the machine): latency, memory
and step time do not depend on the weights. LPIPS is off in stage 2 (no VGG weights).

``--cpu --small`` runs the same steps on the CPU with the ``tiny`` preset (64^2 inputs,
4,096 Gaussians, 32^2 renders, batch 2); the gsplat steps are skipped with a line (gsplat's kernels are
CUDA-only). ``--small`` alone is a quick smoke run on a GPU. Output: ``gpu_check.md`` (one
Markdown table) and ``gpu_check.json`` in ``--out`` (default ``$OUT``, else runs/gpu-check).
Exit status 1 if a step failed or timed out or a parity case is over tolerance.

Wheels for the GPU machine (Python 3.12, PyTorch 2.11 + CUDA 13, nvcc, accelerate, h5py,
safetensors, scipy, pillow, typer, tqdm preinstalled; no network; no bpy). Put them in
``.whl/`` (git-ignored; ``bash benchmarks/gpu_check.sh --download`` fetches exactly these
with ``pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
manylinux2014_x86_64``); ``gpu_check.sh`` installs each one only if that distribution is
not installed already, into a temporary ``--target`` directory:

- gsplat 1.5.3 (py3-none-any, 6.5 MB: Python + CUDA sources, compiled on first use)
- jaxtyping 0.3.11, wadler-lindig 0.1.8 (gsplat's annotations)
- ninja 1.13.2 (manylinux2014_x86_64; torch's extension builder runs it)
- rich 15.0.0, markdown-it-py 4.3.0, mdurl 0.1.2, pygments 2.21.0 (gsplat's console; usually
  there already with typer)
- packaging 26.4, typing_extensions 4.16.0 (usually there already with torch / accelerate)
- pytorch-msssim 1.0.0 (``partrm.metrics``; not used by the check, needed by ``partrm eval``)

All 11 resolved with that command on 2026-12-02 (8.6 MB in all). ``partrm`` itself needs
none of Blender's packages (bpy, trimesh, yourdfpy, lxml, OpenEXR); the JSON lists any such
module a step loaded (``blender_side_modules``), which must stay empty.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Before torch loads anywhere (as partrm/__init__ does): spinning OpenMP waits stall shared CPUs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

SCHEMA = "partrm-gpu-check/1"
PAPER = {"latency_s": 4.2, "stage1_iterations": 100_000, "stage2_iterations": 50_000, "gpus": 4, "batch_per_gpu": 8,
         "gpu": "A800"}
GOAL_LATENCY_S = 0.2
PACKAGES = ("torch", "numpy", "gsplat", "accelerate", "jaxtyping", "ninja", "safetensors", "h5py", "scipy", "pillow",
            "typer", "tqdm", "rich", "pytorch-msssim")
BLENDER_SIDE = ("bpy", "mathutils", "bmesh", "blender_scripts", "partdrag4d.blender", "partdrag4d.render",
                "partdrag4d.pipeline", "trimesh", "yourdfpy", "lxml", "OpenEXR", "Imath")


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    budget_s: float  # on a GPU
    budget_cpu_s: float  # --cpu --small
    requires: tuple[str, ...] = ()
    needs_scene: bool = False
    gsplat_only: bool = False  # skipped on the CPU
    renders: bool = False  # renders on the GPU: wants gsplat-build first


STEPS = (
    Step("gsplat-build", "gsplat JIT build", 240, 0, ("torch", "gsplat"), gsplat_only=True),
    Step("scene", "procedural pair -> splatter images", 20, 40, ("numpy", "torch", "PIL")),
    Step("lgm-forward", "LGM forward", 55, 40, ("torch",), needs_scene=True),
    Step("gsplat-parity", "gsplat vs torch rasterizer", 40, 0, ("torch", "gsplat"), needs_scene=True, gsplat_only=True),
    Step("gsplat-throughput", "gsplat throughput", 30, 0, ("torch", "gsplat"), gsplat_only=True),
    Step("partrm-e2e", "PartRM drag -> Gaussians -> 8 views", 40, 40, ("torch", "PIL"), needs_scene=True, renders=True),
    Step("train-step", "PartRM training step", 95, 60, ("torch", "accelerate"), needs_scene=True, renders=True),
)
STEP_NAMES = tuple(s.name for s in STEPS)


@dataclass(frozen=True)
class Sizes:
    preset: str
    splat: int
    input: int
    render: int
    lgm_batches: tuple[int, ...]
    train_batch: int
    raster_counts: tuple[int, ...]
    raster_sizes: tuple[int, ...]
    repeats: int
    train_steps: int


FULL = Sizes("big", 128, 256, 256, (1, 8), 8, (65_536, 262_144), (256, 512), 5, 3)
SMALL = Sizes("tiny", 32, 64, 32, (1, 2), 2, (4_096, 16_384), (64, 128), 1, 1)


class Skipped(Exception):
    pass


# ===================================================================== worker side


class Recorder:
    """A step's results, rewritten (atomically) after every case so a killed worker leaves them."""

    def __init__(self, path: Path, step: str, deadline: float):
        self.path, self.deadline = Path(path), deadline
        self.data: dict[str, Any] = {"name": step, "status": "running", "reason": "", "cases": [], "notes": []}

    def time_left(self) -> float:
        return self.deadline - time.time()

    def case(self, case: str, summary: str, verdict: str = "", ok: bool | None = None, **metrics: Any) -> None:
        self.data["cases"].append({"case": case, "summary": summary, "verdict": verdict, "ok": ok, "metrics": metrics})
        print(f"  {case}: {summary}{'  [' + verdict + ']' if verdict else ''}", flush=True)
        self.flush()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(f"  note: {text}", flush=True)
        self.flush()

    def finish(self, status: str, reason: str = "") -> None:
        self.data["status"], self.data["reason"] = status, reason
        self.data["blender_side_modules"] = sorted(
            m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLENDER_SIDE))
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
        os.replace(tmp, self.path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def timeit(fn: Callable[[], Any], repeats: int, sync: Callable[[], None], rec: Recorder, warmup: int = 1) -> dict:
    """Median / min wall seconds of up to ``repeats`` calls after ``warmup``; fewer when the
    step's budget runs short (``n`` says how many)."""
    for _ in range(warmup):
        fn()
        sync()
    times: list[float] = []
    for _ in range(repeats):
        if times and rec.time_left() < 2 * max(times) + 1:
            break
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times)}


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict:
    """GPU: peak allocated since the last ``reset_peak``. CPU: the process's peak RSS (no reset)."""
    if device == "cuda":
        import torch

        return {"peak_gib": torch.cuda.max_memory_allocated() / 2**30, "peak_kind": "GPU allocated"}
    import resource

    return {"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_kind": "host RSS, process peak"}


def _mem(m: dict) -> str:
    return f"peak {m['peak_gib']:.2f} GiB ({m['peak_kind']})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def gsplat_env() -> None:
    """Compile flags every worker must share (a change makes ninja rebuild): all cores, this GPU's arch."""
    import torch

    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"


def _scene(ctx: dict) -> dict:
    from splatter_scene import load_scene

    path = ctx.get("scene")
    if not path or not Path(path).is_file():
        raise Skipped("no scene (the scene step did not finish)")
    return load_scene(Path(path))


def _cams(K, c2w, device: str):
    import torch

    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    return torch.linalg.inv(c2w).to(device), torch.as_tensor(K, dtype=torch.float32).to(device)


def _splat_gaussians(splat):
    """Splatter [V, 14, S, S] (numpy) -> the five Gaussian fields [N, ...] (float32 CPU tensors)."""
    import torch

    from partrm.gaussians import gaussians_from_lgm

    g = gaussians_from_lgm(torch.from_numpy(splat).permute(0, 2, 3, 1).reshape(-1, 14).contiguous())
    return [t.contiguous() for t in g]


# --------------------------------------------------------------------- steps


def step_scene(ctx: dict, rec: Recorder) -> None:
    from splatter_scene import build_scene, save_scene

    s = Sizes(**ctx["sizes"])
    t0 = time.perf_counter()
    scene = build_scene(s.splat, s.input, s.render)
    save_scene(scene, Path(ctx["scene"]))
    meta = json.loads(str(scene["meta"]))
    rec.case(
        f"{meta['category']} (synth seed {meta['seed']}), {meta['joint']} {meta['moving_link']} opened "
        f"{meta['amount']:.2f}",
        f"{meta['gaussians']:,} Gaussians per state ({meta['covered_rest']:.0%} on the surface), 4 x {s.input}^2 inputs, "
        f"12 x {s.render}^2 targets, {len(scene['drags'])} drags; built in {time.perf_counter() - t0:.1f} s (CPU)",
        seconds=time.perf_counter() - t0, **meta)


def step_gsplat_build(ctx: dict, rec: Recorder) -> None:
    import torch

    if not torch.cuda.is_available():
        raise Skipped("needs CUDA")
    gsplat_env()
    import gsplat
    from torch.utils.cpp_extension import _get_build_directory

    build_dir = Path(_get_build_directory("gsplat_cuda", verbose=False))
    cached = (build_dir / "gsplat_cuda.so").is_file()
    print(f"  gsplat {gsplat.__version__}: {'loading the cached' if cached else 'JIT-compiling its'} CUDA kernels "
          f"in {build_dir} (MAX_JOBS={os.environ['MAX_JOBS']}, arch {os.environ.get('TORCH_CUDA_ARCH_LIST')})", flush=True)
    t0 = time.perf_counter()
    from gsplat.cuda._backend import _C

    seconds = time.perf_counter() - t0
    if _C is None:
        raise RuntimeError("gsplat's CUDA extension did not build (no CUDA toolkit / nvcc found by torch)")
    import compare_gsplat as cg

    gauss, viewmats, Ks = cg.scene_random(200, 32, 24, seed=0)
    out = cg.renderer("gsplat")(*[t.cuda() for t in gauss], viewmats.cuda(), Ks.cuda(), 32, 24)
    if not all(bool(torch.isfinite(t).all()) for t in out):
        raise RuntimeError("gsplat's first render is not finite")
    try:
        nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        nvcc = "nvcc not on PATH"
    rec.case("CUDA kernels", f"{'loaded from cache' if cached else 'compiled'} in {seconds:.0f} s; first render finite",
             "ok", True, seconds=seconds, cached=cached, build_dir=str(build_dir), max_jobs=os.environ["MAX_JOBS"],
             arch=os.environ.get("TORCH_CUDA_ARCH_LIST"), nvcc=nvcc, gsplat=gsplat.__version__)


def _parity_summary(res: dict) -> str:
    im = res["images"]
    gr = res["grads"]
    images = ", ".join(f"{k} {v['max_abs']:.1e}/{v['mean_abs']:.1e}" for k, v in im.items())
    grads = ", ".join(f"{k} {v['max_rel']:.1e}" for k, v in gr.items())
    return f"max/mean abs: {images}; grad max rel: {grads}"


def step_gsplat_parity(ctx: dict, rec: Recorder) -> None:
    import torch

    import compare_gsplat as cg

    gsplat_env()
    s, device = Sizes(**ctx["sizes"]), ctx["device"]
    scene = _scene(ctx)
    render_g, render_t = cg.renderer("gsplat"), cg.renderer("torch")
    n0, size0 = s.raster_counts[0], s.raster_sizes[0]
    cases = [("random box incl. near-plane Gaussians, 3 cameras 48x32", lambda: (cg.scene_random(400, 48, 32, seed=0), 48, 32))]
    cases.append((f"object shell {n0:,} Gaussians, 1 camera {size0}^2", lambda: (cg.scene_object(n0, size0, 1, seed=0), size0, size0)))

    def batched():
        gauss, viewmats, Ks = cg.scene_object(n0 // 4, size0 // 2, 4, seed=1)
        return ([torch.stack([t, t.flip(0)]) for t in gauss], torch.stack([viewmats, viewmats.flip(0)]), torch.stack([Ks, Ks])), size0 // 2, size0 // 2

    cases.append((f"2 objects x 4 cameras, {n0 // 4:,} Gaussians, {size0 // 2}^2", batched))
    views = list(scene["supervised_views"])
    viewmats, Ks = _cams(scene["target_K"][views], scene["target_c2w"][views], "cpu")
    real = (_splat_gaussians(scene["splat_rest"]), viewmats, Ks)
    label = f"microwave splatter image, {real[0][0].shape[0]:,} Gaussians, 8 views {s.render}^2"
    cases.append((label, lambda: (real, s.render, s.render)))
    for name, make in cases:
        if rec.time_left() < 5:
            rec.note(f"{name}: not run, the step's budget is spent")
            continue
        (gauss, vm, K), w, h = make()
        res = cg.differences(gauss, vm, K, w, h, render_g, render_t, device=device)
        rec.case(name, _parity_summary(res), "within tolerance" if res["ok"] else "OVER TOLERANCE", res["ok"],
                 images=res["images"], grads=res["grads"])
    # speed of both backends on the real scene (forward + backward, 8 views)
    dev_g = [t.to(device) for t in real[0]]
    vm, K = real[1].to(device), real[2].to(device)
    sync = _sync(device)
    figures = {}
    for backend, render in (("gsplat", render_g), ("torch", render_t)):
        if rec.time_left() < 8:
            rec.note(f"{backend} timing on the splatter image: not run, the step's budget is spent")
            continue

        def fwd_bwd(render=render):
            params = [t.clone().requires_grad_() for t in dev_g]
            out = render(*params, vm, K, s.render, s.render)
            (out.rgb.sum() + out.alpha.sum()).backward()

        figures[backend] = timeit(fwd_bwd, 3, sync, rec)
    if figures:
        rec.case(f"{label}: forward + backward time",
                 ", ".join(f"{b} {_ms(f['median_s'])}" for b, f in figures.items()), **figures)


def step_gsplat_throughput(ctx: dict, rec: Recorder) -> None:
    import torch

    import numpy as np

    import compare_gsplat as cg
    from partdrag4d import cameras

    gsplat_env()
    s, device = Sizes(**ctx["sizes"]), ctx["device"]
    render = cg.renderer("gsplat")
    sync = _sync(device)
    for n in s.raster_counts:
        gauss = [t.to(device) for t in cg.scene_object(n, s.raster_sizes[0], 1, seed=0)[0]]  # one object, fixed world size
        for size in s.raster_sizes:
            if rec.time_left() < 4:
                rec.note(f"{n:,} Gaussians at {size}^2: not run, the step's budget is spent")
                continue
            cam = cameras.ring_cameras(size)[0]
            vm = torch.tensor(np.stack([cam.w2c]), dtype=torch.float32).to(device)
            K = torch.tensor(np.stack([cam.K]), dtype=torch.float32).to(device)

            def fwd():
                with torch.no_grad():
                    render(*gauss, vm, K, size, size)

            def fwd_bwd():
                params = [t.clone().requires_grad_() for t in gauss]
                out = render(*params, vm, K, size, size)
                (out.rgb.sum() + out.alpha.sum()).backward()

            reset_peak(device)
            f = timeit(fwd, s.repeats, sync, rec)
            fb = timeit(fwd_bwd, s.repeats, sync, rec)
            mem = peak_memory(device)
            rec.case(f"{n:,} Gaussians, 1 camera {size}^2",
                     f"forward {_ms(f['median_s'])}, forward + backward {_ms(fb['median_s'])}; {_mem(mem)}",
                     forward=f, forward_backward=fb, **mem)


def step_lgm_forward(ctx: dict, rec: Recorder) -> None:
    import torch

    from partrm.models.lgm import LGM, LGMConfig

    s, device = Sizes(**ctx["sizes"]), ctx["device"]
    scene = _scene(ctx)
    cfg = LGMConfig.preset(s.preset)
    t0 = time.perf_counter()
    with torch.device(device):
        model = LGM(cfg).eval()
    build = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    rgb = torch.from_numpy(scene["input_rgb"])[None].to(device)
    K, c2w = torch.from_numpy(scene["input_K"])[None], torch.from_numpy(scene["input_c2w"])[None]
    x1, _ = model.object_frame_inputs(rgb, (K, c2w))
    sync = _sync(device)
    rec.note(f"LGM {s.preset}: {params / 1e6:.1f} M parameters, built on {device} in {build:.1f} s; "
             f"inputs {cfg.num_views} x 9 x {cfg.input_size}^2 -> {cfg.num_gaussians:,} Gaussians"
             + (f"; fp32 with PyTorch's defaults (TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
                f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}); bf16 = weights and inputs cast" if device == "cuda" else ""))
    for dtype in (torch.float32, torch.bfloat16):
        model = model.to(dtype)
        for b in s.lgm_batches:
            if rec.time_left() < 5:
                rec.note(f"{dtype} batch {b}: not run, the step's budget is spent")
                continue
            x = x1.expand(b, *x1.shape[1:]).contiguous().to(dtype)

            def run():
                with torch.inference_mode():
                    return model(x)

            reset_peak(device)
            t = timeit(run, s.repeats, sync, rec)
            mem = peak_memory(device)
            finite = bool(torch.isfinite(run().float()).all())
            name = str(dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat16", "bf16")
            rec.case(f"LGM {s.preset} {name}, batch {b}",
                     f"{_ms(t['median_s'])} per batch ({b / t['median_s']:.1f} objects/s), {_mem(mem)}"
                     + ("" if finite else "; OUTPUT NOT FINITE"),
                     "" if finite else "not finite", finite, dtype=name, batch=b, params=params, **t, **mem)


def step_partrm_e2e(ctx: dict, rec: Recorder) -> None:
    import torch

    from partrm.gaussians import RasterConfig, gaussians_from_lgm, render_gaussians
    from partrm.infer import MultiView, predict
    from partrm.models.lgm import LGMConfig
    from partrm.models.partrm import PartRM, PartRMConfig

    s, device = Sizes(**ctx["sizes"]), ctx["device"]
    scene = _scene(ctx)
    backend = _render_backend(ctx, rec)
    with torch.device(device):
        model = PartRM(PartRMConfig(lgm=LGMConfig.preset(s.preset))).eval()
    views = MultiView(torch.from_numpy(scene["input_rgb"]), torch.from_numpy(scene["input_K"]),
                      torch.from_numpy(scene["input_c2w"]), scene["first_rgba"], scene["mask"])
    user_drag = scene["drags"][:1] * s.input  # the user's drag in input-image pixels; propagated to 10
    sel = list(scene["supervised_views"])
    viewmats, Ks = _cams(scene["target_K"][sel], scene["target_c2w"][sel], device)
    config = RasterConfig(backend=backend)
    sync = _sync(device)
    for mode in ("fp32", "bf16 autocast"):
        if rec.time_left() < 5:
            rec.note(f"{mode}: not run, the step's budget is spent")
            continue
        parts: dict[str, list[float]] = {"predict_s": [], "render_s": []}
        images = {}

        def once(mode=mode):
            sync()
            t0 = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=mode != "fp32"):
                g, _ = predict(model, views, user_drag, num_drags=10, region="mask")
            t1 = time.perf_counter()
            with torch.no_grad():
                out = render_gaussians(*gaussians_from_lgm(g.to(device)), viewmats, Ks, s.render, s.render,
                                       background=1.0, config=config)
                images["rgb"] = out.rgb.cpu()
            t2 = time.perf_counter()
            parts["predict_s"].append(t1 - t0)
            parts["render_s"].append(t2 - t1)

        reset_peak(device)
        t = timeit(once, s.repeats, sync, rec)
        mem = peak_memory(device)
        pred, rend = statistics.median(parts["predict_s"][1:]), statistics.median(parts["render_s"][1:])
        finite = bool(torch.isfinite(images["rgb"]).all())
        goal = t["median_s"] <= GOAL_LATENCY_S
        verdict = ("goal met" if goal else "goal not met") if device == "cuda" and s.preset == "big" else ""
        rec.case(f"PartRM {s.preset} {mode}: drag -> Gaussians -> 8 views {s.render}^2",
                 f"{_ms(t['median_s'])} end to end (predict {_ms(pred)}, render {_ms(rend)} with {backend}); "
                 f"paper {PAPER['latency_s']} s, goal <= {GOAL_LATENCY_S} s; {_mem(mem)}",
                 verdict if finite else "OUTPUT NOT FINITE", None if finite else False,
                 **t, predict_s=pred, render_s=rend, backend=backend, goal_s=GOAL_LATENCY_S, goal_met=goal,
                 paper_s=PAPER["latency_s"], **mem)


def _render_backend(ctx: dict, rec: Recorder) -> str:
    if ctx["device"] != "cuda":
        return "torch"
    g = ctx.get("gsplat") or {}
    if g.get("ok"):
        gsplat_env()
        return "gsplat"
    rec.note(f"rendering with the torch backend on the GPU: gsplat is not usable ({g.get('reason', 'not checked')})")
    return "torch"


def scene_batch(scene: dict, batch: int, device: str) -> dict:
    """A training batch (``partrm.data.collate``'s keys) of the scene's pair, repeated ``batch`` times."""
    import torch

    def rep(a, dtype=None):
        t = torch.as_tensor(a) if dtype is None else torch.as_tensor(a, dtype=dtype)
        return t[None].expand(batch, *t.shape).contiguous().to(device)

    views, n = scene["input_rgb"].shape[0], len(scene["drags"])
    drags = torch.zeros(views, n, 4)
    valid = torch.zeros(views, n, dtype=torch.bool)
    drags[0], valid[0] = torch.from_numpy(scene["drags"]), True  # the user's view, as PartRMConfig.drag_views="first"
    return {
        "input_rgb": rep(scene["input_rgb"]), "input_K": rep(scene["input_K"]), "input_c2w": rep(scene["input_c2w"]),
        "drags": rep(drags), "drag_valid": rep(valid),
        "target_rgb": rep(scene["target_rgb"]), "target_alpha": rep(scene["target_alpha"]),
        "target_K": rep(scene["target_K"]), "target_c2w": rep(scene["target_c2w"]),
        "supervised_views": rep(scene["supervised_views"], torch.long), "gs_target": rep(scene["splat_moved"]),
    }


def step_train(ctx: dict, rec: Recorder) -> None:
    import torch
    from accelerate import Accelerator

    from partrm.models.lgm import LGMConfig
    from partrm.models.partrm import PartRM, PartRMConfig
    from partrm.train import Losses, load_config

    s, device = Sizes(**ctx["sizes"]), ctx["device"]
    scene = _scene(ctx)
    backend = _render_backend(ctx, rec)
    mp = "bf16" if device == "cuda" else "no"  # what `partrm train` picks (mixed_precision=auto)
    accelerator = Accelerator(mixed_precision=mp, cpu=device != "cuda")
    cfg = load_config(model=s.preset, batch_size=s.train_batch)
    with torch.device(accelerator.device):
        model = PartRM(PartRMConfig(lgm=LGMConfig.preset(s.preset)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    batch = scene_batch(scene, s.train_batch, str(accelerator.device))
    sync = _sync(device)
    per_step: dict[str, float] = {}
    for stage in ("1", "2"):
        if stage == "2" and backend != "gsplat" and device == "cuda":
            rec.case(f"PartRM {s.preset} stage 2", "not run: stage 2 renders with gsplat on a GPU, which is not usable here",
                     "skipped")
            continue
        if rec.time_left() < 10:
            rec.note(f"stage {stage}: not run, the step's budget is spent")
            continue
        losses_of_stage = Losses(load_config(stage=stage))
        losses: list[float] = []

        def train_step(stage=stage, losses_of_stage=losses_of_stage):
            with accelerator.autocast():
                terms = losses_of_stage.loss_dict(model, batch, stage, s.render)
            loss = terms["loss"]
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))

        reset_peak(device)
        t = timeit(train_step, s.train_steps, sync, rec)
        mem = peak_memory(device)
        finite = all(math.isfinite(v) for v in losses)
        per_step[stage] = t["median_s"]
        what = "L2 to the target splatter image" if stage == "1" else f"MSE + alpha on 8 views {s.render}^2 ({backend})"
        rec.case(f"PartRM {s.preset} stage {stage}, batch {s.train_batch}, {mp if mp != 'no' else 'fp32'}",
                 f"{t['median_s']:.3f} s/step ({what}); loss {losses[0]:.4g} -> {losses[-1]:.4g}; {_mem(mem)}",
                 "" if finite else "LOSS NOT FINITE", None if finite else False, stage=stage, losses=losses,
                 mixed_precision=mp, batch=s.train_batch, **t, **mem)
    if "1" in per_step and "2" in per_step:
        per_gpu = PAPER["stage1_iterations"] * per_step["1"] + PAPER["stage2_iterations"] * per_step["2"]
        rec.case(f"paper's schedule: {PAPER['stage1_iterations'] // 1000}k + {PAPER['stage2_iterations'] // 1000}k "
                 f"iterations, batch {PAPER['gpus']} x {PAPER['batch_per_gpu']}",
                 f"{per_gpu / 3600:.1f} h on {PAPER['gpus']} GPUs like this one (data parallel, communication not "
                 f"counted), {PAPER['gpus'] * per_gpu / 3600:.1f} h on one"
                 + ("" if s.preset == "big" else f" (the {s.preset} preset: checks the arithmetic only)"),
                 projected_hours_4_gpus=per_gpu / 3600, projected_hours_1_gpu=PAPER["gpus"] * per_gpu / 3600,
                 batch_measured=s.train_batch, **{f"stage{k}_s_per_step": v for k, v in per_step.items()})


STEP_FUNCS: dict[str, Callable[[dict, Recorder], None]] = {
    "scene": step_scene, "gsplat-build": step_gsplat_build, "gsplat-parity": step_gsplat_parity,
    "gsplat-throughput": step_gsplat_throughput, "lgm-forward": step_lgm_forward, "partrm-e2e": step_partrm_e2e,
    "train-step": step_train,
}


def worker(name: str, context: Path, result: Path) -> int:
    ctx = json.loads(Path(context).read_text())
    rec = Recorder(result, name, ctx["deadline"])
    step = next(s for s in STEPS if s.name == name)
    try:
        for pkg in step.requires:
            try:
                importlib.import_module(pkg)
            except ImportError as exc:
                raise Skipped(f"needs {pkg}, which does not import here ({exc})") from None
        import torch

        torch.manual_seed(0)  # the same random initialisations on every run
        if ctx["device"] == "cpu":
            torch.set_num_threads(ctx["threads"])
        rec.data["device"] = torch.cuda.get_device_name(0) if ctx["device"] == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
        if ctx.get("concurrent"):
            rec.note(ctx["concurrent"])
        STEP_FUNCS[name](ctx, rec)
        rec.finish("ok")
    except Skipped as exc:
        rec.finish("skipped", str(exc))
        print(f"  skipped: {exc}", flush=True)
    except Exception as exc:  # a failing step is reported, the others still run
        traceback.print_exc()
        rec.finish("failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
    return 0


# ===================================================================== orchestrator


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _carried() -> dict:
    """The wheels gpu_check.sh installed (``GPU_CHECK_INSTALLED``) and the version now importable of each."""
    from importlib import metadata

    out = {}
    for wheel in os.environ.get("GPU_CHECK_INSTALLED", "").split():
        try:
            out[wheel] = metadata.version(wheel.split("-")[0])
        except metadata.PackageNotFoundError:
            out[wheel] = None
    return out


def _missing(packages: tuple[str, ...]) -> str | None:
    for pkg in packages:
        try:
            if importlib.util.find_spec(pkg) is None:
                return pkg
        except (ImportError, ValueError):
            return pkg
    return None


@dataclass
class Running:
    step: Step
    proc: subprocess.Popen
    result_path: Path
    budget: float
    started: float


def launch(step: Step, ctx: dict, work: Path, budget: float, background: bool = False) -> Running:
    """Start a step's worker (its own session, so it can be killed with everything it started).
    ``background`` workers run at the lowest CPU priority, so that a compile beside a timed
    step does not take its cores."""
    ctx_path, res_path = work / f"{step.name}.context.json", work / f"{step.name}.result.json"
    ctx = {**ctx, "deadline": time.time() + max(1.0, budget - 3.0)}  # soft deadline inside, hard kill outside
    ctx_path.write_text(json.dumps(ctx))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", step.name, "--context", str(ctx_path), "--result", str(res_path)]
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=(lambda: os.nice(19)) if background else None)
    return Running(step, proc, res_path, budget, time.time())


def _reap(proc: subprocess.Popen, timeout: float | None) -> float | None:
    """Wait for the worker; its CPU seconds (with what it waited for), or None at the timeout."""
    end = None if timeout is None else time.time() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if end is None else os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.time() >= end:
            return None
        time.sleep(0.1)


def finish(run: Running) -> dict:
    """Wait for a worker until its budget is spent (then kill it) and read its result."""
    timed_out = False
    try:
        cpu = _reap(run.proc, max(0.0, run.started + run.budget - time.time()))
        if cpu is None:
            timed_out = True
            cpu = _kill(run.proc)
    except BaseException:
        if run.proc.returncode is None:
            _kill(run.proc)
        raise
    wall = time.time() - run.started
    try:
        result = json.loads(run.result_path.read_text())
    except (OSError, ValueError):
        result = {"name": run.step.name, "status": "failed", "reason": "", "cases": [], "notes": []}
    if timed_out:
        result["status"] = "timeout"
        result["reason"] = f"over its {run.budget:.0f} s budget; killed after {len(result['cases'])} case(s)"
    elif result.get("status") in (None, "running"):
        result["status"] = "failed"
        result["reason"] = result.get("reason") or f"worker exited with status {run.proc.returncode} before finishing"
    result.update(title=run.step.title, budget_s=round(run.budget, 1), wall_s=round(wall, 1), cpu_s=round(cpu or 0.0, 1))
    return result


def _kill(proc: subprocess.Popen) -> float:
    """SIGTERM the worker's process group (SIGKILL after 5 s), reap it, then SIGKILL whatever of
    the group is left (compiler jobs); the worker's CPU seconds."""
    cpu = None
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        cpu = _reap(proc, grace)
        if cpu is not None:
            break
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return cpu or 0.0


def skip_reason(step: Step, cuda: bool) -> str | None:
    """Why a step cannot run here (decided before any worker starts), or None."""
    if step.gsplat_only and not cuda:
        return "--cpu: gsplat's kernels are CUDA-only"
    missing = _missing(step.requires)
    return f"needs {missing}, which is not installed" if missing else None


def plan(only: list[str] | None, skip: list[str], cuda: bool) -> list[str]:
    """Selected steps in run order, plus what the runnable ones depend on (scene, gsplat-build)."""
    chosen = set(only or STEP_NAMES) - set(skip)
    steps = {s.name: s for s in STEPS}
    runnable = [steps[n] for n in chosen if skip_reason(steps[n], cuda) is None]
    if any(s.needs_scene for s in runnable):
        chosen.add("scene")
    if any(s.gsplat_only or s.renders for s in runnable) and "gsplat-build" not in skip:
        chosen.add("gsplat-build")
    return [n for n in STEP_NAMES if n in chosen]


def render_markdown(report: dict) -> str:
    p = report["platform"]
    v = p["packages"]
    mode = ("CPU" if report["mode"]["cpu"] else "GPU") + (", small sizes" if report["mode"]["small"] else "")
    lines = [
        f"# PartRM GPU check ({mode})",
        "",
        f"{p['device']}; Python {p['python']}, torch {v.get('torch')} (CUDA {p.get('torch_cuda')}), gsplat {v.get('gsplat')}, "
        f"accelerate {v.get('accelerate')}; {report['started']}; {report['wall_s']:.0f} s of the {report['total_budget_s']:.0f} s budget.",
        "",
        "| step (wall / budget) | case | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    esc = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for st in report["steps"]:
        head = f"{st['name']} ({st['wall_s']:.0f} / {st['budget_s']:.0f} s)" if st.get("budget_s") else st["name"]
        rows = [(c["case"], c["summary"], c["verdict"] or "") for c in st["cases"]]
        rows += [("note", n, "") for n in st.get("notes", [])]
        if st["status"] != "ok":
            rows.append(("—", st["reason"], st["status"]))
        for k, (case, summary, verdict) in enumerate(rows):
            lines.append(f"| {esc(head) if k == 0 else ''} | {esc(case)} | {esc(summary)} | {esc(verdict)} |")
    if report["blender_side_modules"]:
        lines += ["", f"Blender-side modules loaded (must be none): {', '.join(report['blender_side_modules'])}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Steps: " + ", ".join(STEP_NAMES))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else runs/gpu-check)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (gsplat steps are skipped)")
    parser.add_argument("--small", action="store_true", help="tiny sizes (the tiny preset, 4,096 Gaussians, batch 2)")
    parser.add_argument("--only", default=None, help="comma list of steps to run (their dependencies are added)")
    parser.add_argument("--skip", default="", help="comma list of steps to leave out")
    parser.add_argument("--total-budget", type=float, default=None, help="seconds for the whole run (GPU 470, CPU small 240)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every step's budget")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in --cpu mode (default: min(4, cores))")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.context, args.result)

    def names(text: str | None) -> list[str] | None:
        if text is None:
            return None
        out = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in out if n not in STEP_NAMES]
        if bad:
            parser.error(f"unknown step {bad[0]!r}; steps are {', '.join(STEP_NAMES)}")
        return out

    only, skip = names(args.only), names(args.skip) or []
    if args.budget_scale <= 0 or (args.total_budget is not None and args.total_budget <= 0):
        parser.error("budgets must be positive")
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device here; run with --cpu --small for the CPU mode", file=sys.stderr)
        return 2
    out = args.out or Path(os.environ.get("OUT") or ROOT / "runs" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    sizes = SMALL if args.small else FULL
    total_budget = args.total_budget or (470.0 if cuda else 240.0)
    threads = args.threads or min(4, os.cpu_count() or 1)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t_start = time.time()
    deadline = t_start + total_budget
    report: dict[str, Any] = {
        "schema": SCHEMA, "started": started, "mode": {"cpu": not cuda, "small": args.small},
        "sizes": dataclasses.asdict(sizes), "total_budget_s": total_budget, "paper": PAPER, "goal_latency_s": GOAL_LATENCY_S,
        "platform": {"python": platform.python_version(), "machine": platform.machine(), "torch_cuda": torch.version.cuda,
                     "device": "CPU", "packages": _versions(),
                     "carried_wheels": _carried()},
        "steps": [], "blender_side_modules": [],
    }
    print(f"PartRM GPU check: {'GPU' if cuda else 'CPU'} mode, {'small' if args.small else 'full'} sizes, "
          f"total budget {total_budget:.0f} s -> {out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        ctx = {"device": "cuda" if cuda else "cpu", "sizes": dataclasses.asdict(sizes), "scene": str(work / "scene.npz"),
               "threads": threads, "gsplat": None, "concurrent": None}
        order = plan(only, skip, cuda)
        results: dict[str, dict] = {}
        build: Running | None = None

        def budget_of(step: Step) -> float:
            budget = (step.budget_s if cuda or not args.small else step.budget_cpu_s or step.budget_s) * args.budget_scale
            return min(budget, deadline - time.time())

        def not_runnable(step: Step, budget: float) -> str | None:
            reason = skip_reason(step, cuda)
            if reason:
                return reason
            if budget < 5:
                return "the run's total budget is spent"
            if step.needs_scene and not Path(ctx["scene"]).is_file():
                return "no scene (the scene step did not finish)"
            return None

        def record(step: Step, result: dict, announced: bool = False) -> None:
            if result["status"] != "ok" and not announced:
                print(f"  -> {step.name} {result['status']}: {result['reason']}", flush=True)
            if step.name == "gsplat-build":
                ctx["gsplat"] = {"ok": result["status"] == "ok", "reason": f"{result['status']}: {result['reason']}"}
            if result.get("device") and report["platform"]["device"] == "CPU":
                report["platform"]["device"] = result["device"]
            report["blender_side_modules"] = sorted(set(report["blender_side_modules"]) | set(result.get("blender_side_modules", [])))
            results[step.name] = result

        def join_build() -> None:
            nonlocal build
            if build is not None:
                print("== gsplat-build: waiting for the background compile", flush=True)
                record(build.step, finish(build))
                build, ctx["concurrent"] = None, None

        for name in order:
            step = next(s for s in STEPS if s.name == name)
            if step.gsplat_only or step.renders:
                join_build()
            budget = budget_of(step)
            reason = not_runnable(step, budget)
            if reason:
                print(f"== {name}: {step.title}: skipped ({reason})", flush=True)
                record(step, {"name": name, "title": step.title, "status": "skipped", "reason": reason, "cases": [], "notes": []},
                       announced=True)
            elif name == "gsplat-build":  # compile beside the steps that do not need it, at low CPU priority
                print(f"== {name}: {step.title}, in the background at the lowest CPU priority (budget {budget:.0f} s)", flush=True)
                build = launch(step, ctx, work, budget, background=True)
                ctx["concurrent"] = "gsplat's JIT compile ran beside this step at the lowest CPU priority (nice 19)"
            else:
                print(f"== {name}: {step.title} (budget {budget:.0f} s)", flush=True)
                record(step, finish(launch(step, ctx, work, budget)))
        join_build()
        report["steps"] = [results[n] for n in order]
    report["wall_s"] = round(time.time() - t_start, 1)
    failed = [s["name"] for s in report["steps"] if s["status"] in ("failed", "timeout")]
    over = [f"{s['name']}: {c['case']}" for s in report["steps"] for c in s["cases"] if c.get("ok") is False]
    report["ok"] = not failed and not over and not report["blender_side_modules"]
    from partdrag4d.store import atomic_write_json, atomic_write_text

    markdown = render_markdown(report)
    atomic_write_json(out / "gpu_check.json", report)
    atomic_write_text(out / "gpu_check.md", markdown)
    print("\n" + markdown, flush=True)
    if failed or over:
        print(f"gpu_check.py: {len(failed)} step(s) failed or timed out ({', '.join(failed) or '-'}); "
              f"{len(over)} case(s) not ok ({'; '.join(over) or '-'})", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
