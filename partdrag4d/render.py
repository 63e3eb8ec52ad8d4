"""The toolkit's one adapter to Blender: render jobs in worker processes.

Blender runs only in worker processes (``blender_scripts/render_worker.py``), each a
fresh interpreter started with ``sys.executable -m blender_scripts.render_worker``
that imports bpy itself (forking after ``import bpy`` halves render speed and
``spawn`` inherits bpy's ``sys.path``; a fresh interpreter has neither problem). This
module never imports bpy.

A render job is a ``partdrag4d.store.RenderJob`` (one object, its states; one JSON line to a
worker, ``store.render_job_line``).

Each worker imports an object's mesh once, then poses its links per state and moves
one camera per view. Per state the worker writes, into a staging folder renamed onto
``out_dir`` when complete: ``view_00.png`` .. (RGBA, straight alpha, transparent
background), ``views.npz`` (``depth`` float32 [V,H,W] planar camera z, background inf;
``part_id`` uint16 [V,H,W], 0 background), ``cameras.json`` and ``render.json`` (only
what the job reproduces: PNGs carry no date/time chunks, render.json no wall times;
those go to ``provenance_dir``).
States whose ``out_dir`` passes ``store.is_render_complete`` are skipped, so a rerun
resumes; a killed run leaves only hidden ``.render.*.tmp`` folders, which the next run
deletes.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from partdrag4d import store
from partdrag4d.executor import available_cores
from partdrag4d.store import RenderJob, is_render_complete

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_MODULE = "blender_scripts.render_worker"
DEVICES = ("cpu", "gpu")


@dataclass
class StateResult:
    """Outcome of one state: ``status`` is ``rendered``, ``skipped`` (already complete) or ``failed``."""

    object_id: str
    state_id: str
    out_dir: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    node: str | None = None  # the Ray node that rendered it (``partdrag4d.executor``); None when local

    @property
    def ok(self) -> bool:
        return self.status in ("rendered", "skipped")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ workers


def _worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0-based I, as a cluster job array index) -> ``(I, N)``."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N with integers, e.g. 0/4; got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard I/N needs 0 <= I < N; got {text!r}")
    return i, n


def prepare_jobs(jobs: Iterable[dict], device: str, shard: tuple[int, int]) -> list[dict]:
    """Check the device and every job, then keep this shard's jobs: one gate for both executors."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    jobs = [dict(j) for j in jobs]
    for job in jobs:
        _validate(job)
    return select_shard(jobs, shard)


def select_shard(jobs: Sequence[dict], shard: tuple[int, int]) -> list[dict]:
    """Jobs of shard ``i`` of ``n`` (0-based): every n-th object in object-id order."""
    i, n = int(shard[0]), int(shard[1])
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got ({i}, {n})")
    ordered = sorted(jobs, key=lambda j: str(j["object_id"]))
    return ordered[i::n]


class _Worker:
    """One Blender worker process: send a job, read its events."""

    def __init__(self, threads: int, log_dir: Path, index: int, verbose: bool = False, device: str = "cpu"):
        self.log_path = log_dir / f"worker-{index}-{time.monotonic_ns()}.log"
        self.scratch = Path(tempfile.mkdtemp(prefix=f"scratch-{index}-", dir=log_dir))
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", WORKER_MODULE, "--threads", str(threads), "--scratch", str(self.scratch),
               "--device", device, "--parent-pid", str(os.getpid())]
        if verbose:
            cmd.append("--verbose")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=_worker_env(), cwd=str(REPO_ROOT), text=True, bufsize=1)
        ready = self.read()
        self.ready = ready or {}  # pid, threads, bpy_version, device, device_note (None unless a wish was not met)
        if ready is None or ready.get("event") != "ready":
            reason = self.death_reason()
            self.kill()
            self.close(timeout=5)
            raise RuntimeError(f"render worker failed to start: {reason}")

    def read(self) -> dict | None:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                return None
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue

    def send(self, job: dict) -> None:
        self.proc.stdin.write(store.render_job_line(job))
        self.proc.stdin.flush()

    def death_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        self._log.flush()
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        tail = " | ".join(lines[-3:])[-400:]
        if code is None:
            what = "stopped answering"
        elif code < 0:
            what = f"was killed by {signal.Signals(-code).name}"
        else:
            what = f"exited with code {code}" + (" (abort)" if code == 134 else "")
        return f"render worker {what}" + (f"; last output: {tail}" if tail else "")

    def close(self, timeout: float = 60.0) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError, BrokenPipeError):
            self.kill()
        finally:
            self._log.close()
            shutil.rmtree(self.scratch, ignore_errors=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


def _validate(job: dict) -> None:
    store.check_render_job(job)  # its keys and its preset record


def render_jobs(jobs: Iterable[dict], workers: int = 1, shard: tuple[int, int] = (0, 1), progress: bool = True,
                threads: int | None = None, verbose: bool = False, log_dir: Path | None = None,
                device: str = "cpu") -> list[StateResult]:
    """Render every state of ``jobs`` (this shard's share); one result per state, in job order.

    ``workers`` Blender processes run side by side, each with ``threads`` Cycles threads
    (default: available cores // workers). Objects go to whichever worker is free. A
    failing object or state is reported (status ``failed`` with the reason) and the rest
    continue; a worker that dies is replaced. States already complete are ``skipped``
    without starting Blender. ``log_dir`` keeps the workers' stderr logs (default: a
    temporary folder, deleted afterwards). ``device``: ``cpu``, or ``gpu`` for Cycles on
    an OptiX/CUDA GPU; without one the workers render on the CPU and one line says so.
    """
    jobs = prepare_jobs(jobs, device, shard)

    results: dict[tuple[int, int], StateResult] = {}
    todo: list[tuple[int, RenderJob, list[int]]] = []  # (job index, the job's pending states, their indices in the job)
    for j, job in enumerate(jobs):
        num_views = len(job["cameras"])
        pending = []
        for s, state in enumerate(job["states"]):
            if is_render_complete(state["out_dir"], num_views):
                results[(j, s)] = StateResult(str(job["object_id"]), str(state["state_id"]), str(state["out_dir"]), "skipped")
            else:
                pending.append(s)
        if pending:
            todo.append((j, {**job, "states": [job["states"][s] for s in pending]}, pending))
    if not todo:
        return [results[k] for k in sorted(results)]

    workers = max(1, min(int(workers), len(todo)))
    threads = max(1, int(threads) if threads else available_cores() // workers)
    total = sum(len(job["states"]) for _, job, _ in todo)
    bar = tqdm(total=total, desc="render", unit="state", disable=not progress, dynamic_ncols=True, smoothing=0.1)
    lock = threading.Lock()
    job_queue: "queue.Queue[tuple[int, RenderJob, list[int]]]" = queue.Queue()
    for item in sorted(todo, key=lambda item: -len(item[1]["states"])):  # longest objects first: better balance
        job_queue.put(item)
    skipped = len(results)
    if skipped:
        bar.set_postfix_str(f"{skipped} already done", refresh=False)
    failures = [0]
    stop = threading.Event()
    own_log_dir = log_dir is None
    log_root = Path(tempfile.mkdtemp(prefix="pd4d-render-")) if own_log_dir else Path(log_dir)
    log_root.mkdir(parents=True, exist_ok=True)
    live: list[_Worker] = []
    notes: set[str] = set()

    def record(j: int, s: int, result: StateResult) -> None:
        with lock:
            results[(j, s)] = result
            if not result.ok:
                failures[0] += 1
                bar.set_postfix_str(f"failed {failures[0]}" + (f", {skipped} already done" if skipped else ""), refresh=False)
            bar.update(1)

    def fail_rest(j: int, job: RenderJob, index: list[int], done: set[int], reason: str) -> None:
        for k, state in enumerate(job["states"]):
            if k not in done:
                record(j, index[k],
                       StateResult(str(job["object_id"]), str(state["state_id"]), str(state["out_dir"]), "failed", 0.0, reason))

    def run(index: int) -> None:
        worker: _Worker | None = None
        start_failures = 0
        try:
            while not stop.is_set():
                try:
                    j, job, index = job_queue.get_nowait()
                except queue.Empty:
                    return
                if worker is None:
                    try:
                        worker = _Worker(threads, log_root, index, verbose, device)
                        with lock:
                            live.append(worker)
                            note = worker.ready.get("device_note")
                            if note and note not in notes:
                                notes.add(note)
                                bar.write(f"render device: {note}", file=sys.stderr)
                    except Exception as exc:  # noqa: BLE001 - reported per state
                        start_failures += 1
                        fail_rest(j, job, index, set(), str(exc))
                        if start_failures >= 2:
                            return
                        continue
                done: set[int] = set()
                by_id = {str(state["state_id"]): k for k, state in enumerate(job["states"])}
                try:
                    worker.send(job)
                    while True:
                        event = worker.read()
                        if event is None:
                            raise EOFError
                        if event.get("event") == "state":
                            k = by_id.get(str(event.get("state_id")))
                            if k is None or k in done:
                                continue
                            done.add(k)
                            record(j, index[k], StateResult(
                                str(job["object_id"]), str(event["state_id"]), str(event.get("out_dir")),
                                str(event.get("status")), float(event.get("seconds") or 0.0), event.get("error")))
                        elif event.get("event") == "job":
                            if event.get("status") == "failed":
                                fail_rest(j, job, index, done, str(event.get("error")))
                            break
                except (EOFError, BrokenPipeError, OSError):
                    reason = worker.death_reason()
                    fail_rest(j, job, index, done, reason)
                    worker.close(timeout=5)
                    worker = None
        finally:
            if worker is not None:
                worker.close()

    threads_list = [threading.Thread(target=run, args=(w,), name=f"render-worker-{w}", daemon=True) for w in range(workers)]
    try:
        for t in threads_list:
            t.start()
        while any(t.is_alive() for t in threads_list):
            for t in threads_list:
                t.join(timeout=0.5)
    except BaseException:
        stop.set()
        with lock:
            for w in live:
                w.kill()
        raise
    finally:
        bar.close()
        if own_log_dir:
            shutil.rmtree(log_root, ignore_errors=True)

    # States never reached (e.g. a worker could not start twice) are failures too.
    while not job_queue.empty():
        j, job, index = job_queue.get_nowait()
        fail_rest(j, job, index, set(), "not rendered: no render worker could be started")
    return [results[k] for k in sorted(results)]


def summarize(results: Sequence[StateResult]) -> dict:
    """Counts by status and the failures (id and reason), for a CLI to print."""
    counts = {status: sum(r.status == status for r in results) for status in ("rendered", "skipped", "failed")}
    return {**counts, "failures": [{"object_id": r.object_id, "state_id": r.state_id, "error": r.error}
                                   for r in results if r.status == "failed"]}


__all__ = ["RenderJob", "StateResult", "available_cores", "is_render_complete", "parse_shard", "render_jobs",
           "prepare_jobs", "select_shard", "summarize"]
