"""`make bench`: every benchmark script in turn (component figures, then the end-to-end run).

    python benchmarks/run_all.py [--quick]    (--quick: skips big-model CPU timings and the
                                              high render preset)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> None:
    print(f"\n=== {script} {' '.join(args)}", flush=True)
    code = subprocess.call([sys.executable, str(HERE / script), *args], cwd=HERE.parent)
    if code:
        print(f"(exit status {code})", flush=True)


def main() -> None:
    quick = "--quick" in sys.argv
    run("bench_articulate.py")
    run("bench_raster.py")
    run("bench_lgm.py", *(["--skip-big"] if quick else []))
    run("bench_train.py")
    run("bench_render.py", "--presets", "draft", "standard", *([] if quick else ["high"]))
    run("bench_scale.py", *(["--size", "128"] if quick else []))
    run("bench_e2e.py")
    run("bench_drags.py", "runs/bench/data")
    if (HERE / "bench_articulation.py").exists():
        run("bench_articulation.py")
    run("bench_viewer.py", "runs/bench/data")
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None or quick is False:
        run("compare_gsplat.py")


if __name__ == "__main__":
    main()
