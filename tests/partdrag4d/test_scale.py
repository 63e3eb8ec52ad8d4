"""Dataset generation on Ray (``--executor ray``): the same files as a local run, faults, GPU fallback.

A local Ray cluster is started in this process (2 CPUs, loopback only, no dashboard) and
the embedded default (one object per category, 48 states) is generated at 32 x 32 draft
with both executors into the same absolute path (render.json records the mesh path, the
drag file the dataset path), so any difference is a difference of the executor.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender

SIZE = 32
MAKE = ["make-dataset", "--resolution", str(SIZE), "--quality", "draft", "--threads", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster of this process only: 2 CPUs, bound to 127.0.0.1, workers at normal priority."""
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_worker_niceness")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback address for every Ray process
    os.environ["RAY_worker_niceness"] = "0"
    import ray
    from ray._private import ray_constants

    loopback = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, logging_level=logging.ERROR)
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    yield ray
    ray.shutdown()
    ray_constants.ENABLE_RAY_CLUSTER = loopback
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from partdrag4d.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory, ray_cluster) -> Path:
    """``work/local``: the embedded default made by the local executor (2 workers x 1 thread)
    at ``work/data``, then moved aside so the Ray runs can use the same path."""
    root = tmp_path_factory.mktemp("scale")
    _cli(MAKE + ["--out", str(root / "data"), "--workers", "2"])
    (root / "data").rename(root / "local")
    return root


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_same_outputs(a: Path, b: Path, subtree: str = "") -> int:
    """Every file under ``a/subtree`` equals ``b``'s byte for byte, except the provenance files
    (``provenance/runs.jsonl``: the command's wall time and host; ``provenance/render/<state>.json``:
    each state's render times, threads and host), which are not data."""
    files, other = _files(a / subtree), _files(b / subtree)
    assert files == other, sorted(files ^ other)[:10]
    differ = {rel for rel in files if (a / subtree / rel).read_bytes() != (b / subtree / rel).read_bytes()}
    allowed = {rel for rel in differ if str(Path(subtree) / rel) == "provenance/runs.jsonl"
               or (str(Path(subtree) / rel).startswith("provenance/render/") and rel.endswith(".json"))}
    assert differ == allowed, sorted(differ - allowed)[:10]
    return len(files)


def test_ray_makes_the_same_dataset_as_local(work):
    result = _cli(MAKE + ["--out", str(work / "data"), "--executor", "ray"])
    summary = json.loads(result.stdout)
    assert summary["states"] == 48 and summary["rendered"]["rendered"] == 48 and summary["rendered"]["failed"] == 0
    assert sum(summary["rendered"]["nodes"].values()) == 48
    (node,) = summary["rendered"]["nodes"]
    assert re.fullmatch(r".+ \(127\.0\.0\.1, node [0-9a-f]{8}\)", node), node
    assert f"render per node: {node}: 48 states" in result.stderr  # the per-node count at the end
    assert f"articulate per node: {node}: 8 objs" in result.stderr and f"drags per node: {node}: 8 seqs" in result.stderr
    count = assert_same_outputs(work / "local", work / "data")
    assert count > 48 * 16  # views, npz, jsons, meshes, points, manifest, drag file, provenance
    timing = json.loads((work / "data" / "provenance" / "render" / f"{summary_state(work)}.json").read_text())
    assert timing["host"] and timing["state_seconds"] > 0  # what may differ: times and host
    (work / "data").rename(work / "ray")


def summary_state(work: Path) -> str:
    return sorted(p.stem for p in (work / "local" / "provenance" / "render").glob("*.json"))[0]


def _blender_pids(marker: str) -> list[int]:
    """Render workers whose command line names ``marker`` (their scratch folder is in our log dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "blender_scripts.render_worker" in cmdline and marker in cmdline:
                pids.append(int(entry.name))
    return pids


def _unrendered_copy(work: Path) -> Path:
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)  # a failed test's leftovers
    shutil.copytree(work / "local", data)
    for render in data.glob("states/*/render"):
        shutil.rmtree(render)
    shutil.rmtree(data / "provenance" / "render")
    (data / "drags.h5").unlink()
    return data


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_killed_blender_worker_is_retried_and_outputs_are_the_same(work, tmp_path):
    from partdrag4d.pipeline import render_dataset

    data = _unrendered_copy(work)
    logs = tmp_path / "logs"
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("summary", render_dataset(
        data, quality="draft", resolution=SIZE, progress=False, executor="ray", threads=1, log_dir=logs)))
    thread.start()
    killed = None
    seen: list = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed is None and thread.is_alive():
        done = len(list(data.glob("states/*/render")))
        pids = _blender_pids(str(logs))
        seen.append((done, len(pids)))
        if 4 <= done < 40 and len(pids) == 2:  # both actors busy, mid-run
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.01)
    thread.join(timeout=300)
    assert killed is not None, ("the run ended before a worker could be killed", box, sorted(set(seen)))
    summary = box["summary"]
    assert summary["failed"] == 0 and summary["rendered"] == 48, summary
    assert not _alive(killed)
    deaths = [p for p in logs.glob("worker-*.log")]
    assert len(deaths) >= 3  # two actors' workers and the replacement of the killed one
    assert_same_outputs(work / "local", data, "states")
    assert not [p for p in data.glob("states/*/.render.*")]  # the killed state's staging folder is gone
    shutil.rmtree(data)


def test_state_failing_twice_is_recorded_and_the_rest_complete(work, tmp_path, capsys):
    from partdrag4d.pipeline import render_jobs_for_dataset
    from partdrag4d.render import render_states

    data = _unrendered_copy(work)
    jobs = render_jobs_for_dataset(data, "laptop", quality="draft", resolution=SIZE)
    (job,) = jobs
    bad = job["states"][2]
    bad["link_poses"] = {**bad["link_poses"], "no_such_link": np.eye(4).tolist()}
    results = render_states(jobs, executor="ray", progress=False, threads=1, device="gpu")  # no GPU: falls back to the CPU
    by_id = {r.state_id: r for r in results}
    assert by_id[bad["state_id"]].status == "failed"
    assert by_id[bad["state_id"]].error.startswith("failed 2 times; last: ") and "no_such_link" in by_id[bad["state_id"]].error
    assert [r.status for r in results].count("rendered") == 5
    assert "no GPU in the Ray cluster; Cycles renders on the CPU" in capsys.readouterr().err
    for r in results:
        if r.ok:
            assert_same_outputs(work / "local", data, str(Path(r.out_dir).relative_to(data)))
    shutil.rmtree(data)


def test_gpu_request_without_a_gpu_falls_back_to_the_cpu_in_one_line(work, tmp_path, capfd):
    """Local executor, --device gpu on a machine without OptiX/CUDA: one line, CPU renders, same pixels."""
    from partdrag4d.pipeline import render_jobs_for_dataset
    from partdrag4d.render import render_states

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA GPU: Cycles would use it")
    data = _unrendered_copy(work)
    jobs = render_jobs_for_dataset(data, "trashcan", quality="draft", resolution=SIZE)
    jobs[0]["states"] = jobs[0]["states"][:2]
    results = render_states(jobs, workers=1, threads=1, progress=False, device="gpu")
    assert [r.status for r in results] == ["rendered", "rendered"]
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "render device" in ln]
    assert lines == ["render device: no OPTIX or CUDA GPU found; Cycles renders on the CPU"], err
    for r in results:
        info = json.loads((Path(r.out_dir) / "render.json").read_text())
        assert info["device"] == "CPU"
        assert_same_outputs(work / "local", data, str(Path(r.out_dir).relative_to(data)))
    shutil.rmtree(data)


def test_interrupted_ray_run_stops_cleanly_and_a_rerun_resumes(work, tmp_path):
    """Ctrl-C (SIGINT) to `partdrag4d render --executor ray` mid-run: exit 130, no Blender left,
    nothing half-written where a reader would see it; the same command again finishes the rest."""
    import subprocess
    import sys

    from partdrag4d.blender import REPO_ROOT

    data = _unrendered_copy(work)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [sys.executable, "-m", "partdrag4d.cli", "render", str(data), "--quality", "draft", "--resolution", str(SIZE),
           "--executor", "ray", "--threads", "1"]
    # Ctrl-C as in a terminal: a suite started in the background (`make test &`, nohup) runs with SIGINT
    # ignored, which a child would inherit and then never see the signal
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    blender: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(data.glob("states/*/render"))) < 4:
        blender |= {p for p in _blender_pids("") if _child_of(p, proc.pid)}
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "interrupted" in err and "Traceback" not in err
    done = len(list(data.glob("states/*/render")))
    assert 4 <= done < 48
    assert blender, "no Blender worker of the run was seen"
    time.sleep(1.0)
    assert not [p for p in blender if _alive(p)]  # the actors' Blender workers died with them
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == done and summary["rendered"] == 48 - done and summary["failed"] == 0
    assert_same_outputs(work / "local", data, "states")
    shutil.rmtree(data)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _child_of(pid: int, ancestor: int) -> bool:
    try:
        while pid > 1:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            if pid == ancestor:
                return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def test_bad_executor_and_address_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from partdrag4d.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["render", str(tmp_path), "--executor", "dask"])  # a choice typer checks
    assert r.exit_code == 2 and "--executor" in r.output and "'dask' is not one of" in r.output
    r = runner.invoke(app, ["render", str(tmp_path), "--ray-address", "auto"])  # a ToolkitError: one line
    assert r.exit_code == 2 and r.output.strip() == "error: --ray-address needs --executor ray"
    r = runner.invoke(app, ["render", str(tmp_path), "--device", "tpu"])
    assert r.exit_code == 2 and "--device" in r.output and "'tpu' is not one of" in r.output
