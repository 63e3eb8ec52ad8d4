"""benchmarks/gpu_check.py in its CPU mode, run the way the GPU machine runs it: through
gpu_check.sh with carried wheels, and with Blender's packages (and gsplat) unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

# What the GPU machine lacks (bpy and the dataset side) plus gsplat, so that nothing on the CPU
# path may import it either.
BLOCKED = "bpy,mathutils,bmesh,trimesh,yourdfpy,lxml,OpenEXR,Imath,gsplat"
BLOCKER = '''
import importlib.abc, os, sys
_BLOCKED = set(os.environ.get("GPU_CHECK_TEST_BLOCK", "").split(","))
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''


def _wheel(folder: Path, dist: str, version: str, module: str, source: str) -> Path:
    """A minimal pure-Python wheel."""
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {f"{module}/__init__.py": source,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def _run(tmp: Path, *args: str, block: str = BLOCKED) -> tuple[subprocess.CompletedProcess, Path]:
    site = tmp / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    out = tmp / "out"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp / "whl"), "GPU_CHECK_TEST_BLOCK": block,
           "PYTHONPATH": str(site), "TMPDIR": str(tmp)}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--small", "--threads", "1",
                           "--budget-scale", "4", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_cpu_small_run_through_the_wrapper(tmp_path):
    (tmp_path / "whl").mkdir()
    _wheel(tmp_path / "whl", "gpu_check_probe", "0.3", "gpu_check_probe", "VALUE = 3\n")
    # numpy is installed: its carried wheel must not be installed over it (this one would break it)
    _wheel(tmp_path / "whl", "numpy", "0.0.1", "numpy", "raise ImportError('the carried numpy shadowed the real one')\n")
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    markdown = (out / "gpu_check.md").read_text()

    assert report["schema"] == "partrm-gpu-check/1" and report["mode"] == {"cpu": True, "small": True} and report["ok"]
    assert report["platform"]["carried_wheels"] == {"gpu_check_probe-0.3-py3-none-any.whl": "0.3"}
    assert report["blender_side_modules"] == []
    assert not list(tmp_path.glob("gpu-check-site.*")), "the temporary wheel target was not removed"
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["gsplat-build", "scene", "lgm-forward", "gsplat-parity", "gsplat-throughput", "partrm-e2e", "train-step"]
    for name in ("gsplat-build", "gsplat-parity", "gsplat-throughput"):
        assert steps[name]["status"] == "skipped" and "CUDA-only" in steps[name]["reason"]
    for name in ("scene", "lgm-forward", "partrm-e2e", "train-step"):
        assert steps[name]["status"] == "ok", steps[name]
        assert 0 < steps[name]["wall_s"] <= steps[name]["budget_s"] and steps[name]["blender_side_modules"] == []

    scene = steps["scene"]["cases"][0]["metrics"]
    assert scene["gaussians"] == 4 * 32 * 32 and scene["category"] == "microwave" and 0.05 < scene["covered_rest"] < 0.9

    lgm = steps["lgm-forward"]["cases"]
    assert [(c["metrics"]["dtype"], c["metrics"]["batch"]) for c in lgm] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(c["ok"] and c["metrics"]["median_s"] > 0 and c["metrics"]["peak_gib"] > 0 for c in lgm)

    e2e = steps["partrm-e2e"]["cases"]
    assert len(e2e) == 2 and all(c["metrics"]["backend"] == "torch" and c["ok"] is None for c in e2e)
    for c in e2e:
        m = c["metrics"]
        assert m["predict_s"] > 0 and m["render_s"] > 0 and m["paper_s"] == 4.2 and m["goal_s"] == 0.2

    train = {c["metrics"].get("stage", "projection"): c for c in steps["train-step"]["cases"]}
    assert set(train) == {"1", "2", "projection"}
    for stage in ("1", "2"):
        m = train[stage]["metrics"]
        assert m["batch"] == 2 and m["median_s"] > 0 and all(np.isfinite(m["losses"])) and len(m["losses"]) == 2
    proj = train["projection"]["metrics"]
    hours = (100_000 * train["1"]["metrics"]["median_s"] + 50_000 * train["2"]["metrics"]["median_s"]) / 3600
    assert proj["projected_hours_4_gpus"] == pytest.approx(hours) and proj["projected_hours_1_gpu"] == pytest.approx(4 * hours)

    assert "| step (wall / budget) | case | measured | verdict |" in markdown
    for name in steps:
        assert f"| {name}" in markdown
    assert markdown.count("CUDA-only") == 3 and "paper's schedule" in markdown
    assert markdown in proc.stdout  # the table is printed too


def test_step_with_a_missing_package_is_skipped_with_its_reason(tmp_path):
    proc, out = _run(tmp_path, "--only", "train-step", block=BLOCKED + ",accelerate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert [s["name"] for s in report["steps"]] == ["train-step"]  # no scene built for a step that cannot run
    step = report["steps"][0]
    assert step["status"] == "skipped" and "accelerate" in step["reason"]
    assert "accelerate" in (out / "gpu_check.md").read_text()


def test_bad_step_name_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--only", "lgm",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown step 'lgm'" in proc.stderr


def test_parity_measure_on_cpu_tile_backend_vs_dense_reference():
    """The comparison the GPU runs (gsplat vs torch), here between our tile backend and the dense reference."""
    import compare_gsplat as cg
    from partrm.gaussians.reference import render_reference

    config = cg.renderer("torch").config

    def reference(*args, background=1.0):
        return render_reference(*args, background=background, config=config)

    gauss, viewmats, Ks = cg.scene_random(150, 24, 16, seed=0)
    res = cg.differences(gauss, viewmats, Ks, 24, 16, cg.renderer("torch"), reference, device="cpu")
    assert res["ok"] and set(res["grads"]) == set(cg.FIELDS) and set(res["images"]) == {"rgb", "alpha", "depth"}
    assert all(d["max_abs"] < 1e-4 for d in res["images"].values())
    assert all(d["max_rel"] < 1e-4 and d["max_grad"] > 0 for d in res["grads"].values())
    # a real disagreement is reported as one
    shifted = lambda *a, background=1.0: reference(a[0] + 0.01, *a[1:], background=background)  # noqa: E731
    assert not cg.differences(gauss, viewmats, Ks, 24, 16, cg.renderer("torch"), shifted, device="cpu")["ok"]


def test_splatter_scene_is_deterministic_and_pixel_aligned(one_torch_thread):
    from partdrag4d import cameras
    from splatter_scene import INPUT_VIEWS, build_scene

    a, b = build_scene(16, 32, 32), build_scene(16, 32, 32)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    splat = a["splat_rest"]
    assert splat.shape == (4, 14, 16, 16) and a["input_rgb"].shape == (4, 3, 32, 32) and a["target_rgb"].shape == (12, 3, 32, 32)
    ring = cameras.ring_cameras(16)
    for v, view in enumerate(INPUT_VIEWS):
        g = splat[v].reshape(14, -1).T
        covered = np.flatnonzero(g[:, 3] > 0)
        assert len(covered) > 10
        uv, _ = ring[view].project(g[covered, :3])  # each surface Gaussian lies in its own pixel
        np.testing.assert_array_equal(np.floor(uv[:, 1]) * 16 + np.floor(uv[:, 0]), covered)
        np.testing.assert_allclose(np.linalg.norm(g[:, 7:11], axis=1), 1.0, atol=1e-6)
    starts = np.floor(a["drags"][:, :2] * 32).astype(int)
    assert a["mask"][starts[:, 1], starts[:, 0]].all()  # drags start on the moving part
    assert np.abs(a["drags"][:, 2:] - a["drags"][:, :2]).max() > 0.02  # and the part moved


def test_gsplat_step_code_runs_with_the_torch_backend_standing_in(tmp_path, monkeypatch, one_torch_thread):
    """The GPU-only steps' own code (cases, metrics, budgets), on the CPU with gsplat's renderer
    swapped for the torch backend, so it cannot rot between GPU runs."""
    import dataclasses

    import compare_gsplat as cg
    import gpu_check as gc
    from splatter_scene import build_scene, save_scene

    real = cg.renderer
    monkeypatch.setattr(cg, "renderer", lambda backend, alpha_max=0.999: real("torch", alpha_max))
    monkeypatch.setattr(gc, "gsplat_env", lambda: None)
    sizes = dataclasses.replace(gc.SMALL, splat=16, input=32, render=32, raster_counts=(256, 512), raster_sizes=(16, 32))
    save_scene(build_scene(16, 32, 32), tmp_path / "scene.npz")
    ctx = {"device": "cpu", "sizes": dataclasses.asdict(sizes), "scene": str(tmp_path / "scene.npz")}
    import time

    parity = gc.Recorder(tmp_path / "parity.json", "gsplat-parity", time.time() + 120)
    gc.step_gsplat_parity(ctx, parity)
    cases = parity.data["cases"]
    assert [c["case"].split(",")[0] for c in cases] == [
        "random box incl. near-plane Gaussians", "object shell 256 Gaussians", "2 objects x 4 cameras",
        "microwave splatter image", "microwave splatter image"]
    for c in cases[:4]:  # the same renderer twice: no difference, every field reported
        assert c["ok"] and c["verdict"] == "within tolerance"
        assert set(c["metrics"]["grads"]) == set(cg.FIELDS) and c["metrics"]["images"]["rgb"]["max_abs"] == 0
    assert set(cases[4]["metrics"]) == {"gsplat", "torch"}
    assert json.loads((tmp_path / "parity.json").read_text())["cases"] == json.loads(json.dumps(cases, default=gc._json_default))

    throughput = gc.Recorder(tmp_path / "throughput.json", "gsplat-throughput", time.time() + 120)
    gc.step_gsplat_throughput(ctx, throughput)
    assert [c["case"] for c in throughput.data["cases"]] == [
        "256 Gaussians, 1 camera 16^2", "256 Gaussians, 1 camera 32^2", "512 Gaussians, 1 camera 16^2", "512 Gaussians, 1 camera 32^2"]
    assert all(c["metrics"]["forward"]["median_s"] > 0 and c["metrics"]["forward_backward"]["n"] == 1 for c in throughput.data["cases"])

    spent = gc.Recorder(tmp_path / "spent.json", "gsplat-throughput", time.time() + 1)  # no budget left
    gc.step_gsplat_throughput(ctx, spent)
    assert spent.data["cases"] == [] and len(spent.data["notes"]) == 4 and "budget" in spent.data["notes"][0]


def test_budget_is_enforced_by_killing_the_worker_and_what_it_started(tmp_path):
    import time

    import gpu_check as gc

    pidfile = tmp_path / "child.pid"
    proc = subprocess.Popen(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], start_new_session=True)
    run = gc.Running(gc.STEPS[0], proc, tmp_path / "never-written.json", budget=2.0, started=time.time())
    t0 = time.time()
    result = gc.finish(run)
    assert time.time() - t0 < 15
    assert result["status"] == "timeout" and "2 s budget" in result["reason"] and result["budget_s"] == 2.0
    assert proc.returncode is not None
    child = int(pidfile.read_text())
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"  # gone, or a zombie awaiting init


def test_every_partrm_module_imports_without_blender_side_packages(tmp_path):
    """The GPU machine has no bpy (nor trimesh, yourdfpy, lxml, OpenEXR): partrm must not need them to import."""
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    code = (
        "import importlib, pkgutil, sys, partrm\n"
        "names = [m.name for m in pkgutil.walk_packages(partrm.__path__, 'partrm.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "from partrm.cli import app\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('bpy', 'trimesh', 'yourdfpy', 'lxml', 'OpenEXR')"
        " or m in ('partdrag4d.render', 'partdrag4d.pipeline'))\n"
        "print(len(names), bad)\n"
        "assert not bad and len(names) > 15\n"
    )
    env = {**os.environ, "GPU_CHECK_TEST_BLOCK": "bpy,mathutils,bmesh,trimesh,yourdfpy,lxml,OpenEXR,Imath",
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
