"""The browser viewers: time to open a dataset, and PartRM's answer to a drag (target <= 1 s
for a tiny model on 2 CPU cores); optionally screenshots in a headless browser.

Usage: python benchmarks/bench_viewer.py [DATASET] [--checkpoint CKPT] [--drags 10] [--threads 2]
           [--screenshot docs/viewer.png] [--partrm-screenshot docs/partrm-view.png]

DATASET defaults to data/ (``make dataset``). Without --checkpoint an untrained tiny PartRM
is used with random weights on the drag inputs of its (zero-initialised) merges, so that
drags move its prediction and the joint extractor has motion to fit, as with a trained one. A drag is timed from the
moment the server has it (pixel drag in the input view) until the predicted Gaussians,
the extracted joint and the input-view panel are sent to the page; the ground-truth slot
is filled after that and timed separately. Drags start on the moving part of view 0.
Screenshots need ``$CHROMIUM_HEADLESS`` (Debian's chromium-headless-shell).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def screenshot(viewer, path: Path, camera: tuple, look_at: tuple, size=(960, 540), settle: float = 6.0) -> None:
    from PIL import Image

    from tests.support.headless import HeadlessBrowser, browser_path, wait_until  # needs the test extra (websockets)

    exe = browser_path()
    if not exe:
        sys.exit("--screenshot needs $CHROMIUM_HEADLESS (apt-get install chromium-headless-shell)")
    with HeadlessBrowser(exe, *size, timeout=120) as b:
        b.open(viewer.url)
        if not wait_until(lambda: viewer.server.get_clients(), 60):
            sys.exit("the page never connected")
        client = list(viewer.server.get_clients().values())[-1]
        if camera is not None:  # None: the page as it opens (framed on the object by the viewer)
            client.camera.up_direction = (0.0, 0.0, 1.0)
            client.camera.position = camera
            client.camera.look_at = look_at
            client.camera.fov = 0.75
        wait_until(lambda: b.evaluate("document.querySelector('canvas') !== null"), 30)
        time.sleep(settle)
        b.evaluate("document.querySelectorAll('[class*=\"Notification-closeButton\"]').forEach(b => b.click())")
        time.sleep(1.0)
        b.screenshot()
        img = Image.fromarray(b.screenshot())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"  screenshot {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, nargs="?", default=Path("data"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--drags", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the dataset viewer (pair drags and cameras on).")
    parser.add_argument("--partrm-screenshot", type=Path, default=None, help="PNG of the PartRM viewer after a drag.")
    args = parser.parse_args()

    t0 = time.perf_counter()
    from partdrag4d.viewer import DatasetViewer

    viewer = DatasetViewer(args.dataset, port=0)
    print(f"dataset viewer: {len(viewer.index.states)} states opened in {viewer.open_seconds:.2f} s in a fresh interpreter "
          f"(viser's import included); textures {'ready' if viewer.wait_for_textures(60) else 'not ready'} "
          f"after {time.perf_counter() - t0:.2f} s")
    if viewer.index.problems:
        print("  problems: " + "; ".join(viewer.index.problems))
    if args.screenshot:
        viewer.drags_cb.value = True
        viewer.select_stage(1)
        viewer.target_dd.value = "4"
        screenshot(viewer, args.screenshot, camera=(-4.2, -4.8, 3.4), look_at=(0.0, 0.0, -0.2))
    viewer.stop()

    import torch

    from partdrag4d import store
    from partrm.models.lgm import LGM, LGMConfig
    from partrm.models.partrm import PartRM
    from partrm.predict import input_size, load_model, mode_of
    from partrm.viewer import PartRMViewer

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint), args.checkpoint  # either mode (rgb | rgbd)
    else:
        torch.manual_seed(0)
        model, ckpt = PartRM.from_lgm(LGM(LGMConfig.tiny())).eval(), Path("untrained-tiny")
        with torch.no_grad():
            for name, module in model.named_modules():
                if name.endswith("merge"):
                    k = module.weight.shape[1] - module.weight.shape[0]  # drag-map channels come first
                    module.weight[:, :k] = 0.5 * torch.randn(module.weight[:, :k].shape)
    v = PartRMViewer(ckpt, args.dataset, port=0, out=Path("runs/bench/view"), model=model)
    rng = np.random.default_rng(0)
    _, part_ids, _ = store.read_render(store.render_dir(args.dataset, v.state_id))
    moving = np.isin(part_ids[0], v.index.states[v.state_id]["moving_part_ids"])
    ys, xs = np.nonzero(moving)
    size = moving.shape[0]
    totals, model_s, gt_s = [], [], []
    for k in range(args.drags + 1):
        i = rng.integers(len(xs))
        start = np.array([xs[i] + 0.5, ys[i] + 0.5])
        end = start + rng.normal(0, 0.08 * size, 2)
        r = v.drag(np.concatenate([start, end]))
        if k == 0:
            continue  # the first call pays torch's one-time set-up
        totals.append(r.seconds["total"])
        model_s.append(r.seconds["predict"])
        gt_s.append(r.seconds["ground_truth"])
    kind = "RGB-D" if mode_of(model) == "rgbd" else model.config.lgm.name
    print(f"partrm view, {kind} model ({input_size(model)} px input, {len(r.gaussians)} Gaussians), "
          f"{args.threads} torch threads, {args.drags} drags on {v.state_id}:")
    print(f"  answer per drag: median {1000 * statistics.median(totals):.0f} ms, max {1000 * max(totals):.0f} ms (target <= 1000 ms; RGB-D: <= 300 ms); "
          f"model {1000 * statistics.median(model_s):.0f} ms; then ground-truth slot {1000 * statistics.median(gt_s):.0f} ms")
    print(f"  last joint: {r.joint_note}")
    if args.partrm_screenshot:
        screenshot(v, args.partrm_screenshot, camera=None, look_at=None)
    v.stop()


if __name__ == "__main__":
    main()
