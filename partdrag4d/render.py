"""Render jobs: the one entry (:func:`render_states`), the job gate and shards, and the pool of
Blender worker processes on this machine (:class:`LocalPool`).

A render job is a ``partdrag4d.store.RenderJob`` (one object, its states, its preset; one
JSON line to a Blender worker, ``partdrag4d.blender``). :func:`render_states` checks every
job, keeps this shard's, and hands them to the one scheduler (``partdrag4d.scheduler``) on
a pool of local Blender workers or of Ray actors (``partdrag4d.render_ray``).

Per state a worker writes, into a staging folder renamed onto ``out_dir`` when complete:
``view_00.png`` .. (RGBA, straight alpha, transparent background), ``views.npz``
(``depth`` float32 [V,H,W] planar camera z, background inf; ``part_id`` uint16 [V,H,W], 0
background), ``cameras.json`` and ``render.json`` (only what the job reproduces: PNGs carry
no date/time chunks, render.json no wall times; those go to ``provenance_dir``). States
whose ``out_dir`` passes ``store.is_render_complete`` are skipped, so a rerun resumes; a
killed run leaves only hidden ``.render.*.tmp`` folders, which the next run deletes.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Iterable, Sequence

from partdrag4d import store
from partdrag4d.blender import BlenderWorker
from partdrag4d.executor import available_cores, check_executor
from partdrag4d.render_ray import RayPool
from partdrag4d.scheduler import IN_FLIGHT, MAX_ATTEMPTS, Attempt, Pool, Scheduler, Task
from partdrag4d.store import RenderJob, StateResult

DEVICES = ("cpu", "gpu")
LOCAL_ATTEMPTS = 1
"""Attempts per state with local workers: a state whose worker died or failed is recorded as
failed at once, and the run goes on with a fresh worker (Ray retries: ``MAX_ATTEMPTS``)."""


def render_states(jobs: Iterable[RenderJob], executor: str = "local", workers: int | None = None,
                  shard: tuple[int, int] = (0, 1), progress: bool = True, threads: int | None = None,
                  verbose: bool = False, log_dir: Path | None = None, device: str = "cpu", address: str | None = None,
                  max_attempts: int | None = None) -> list[StateResult]:
    """Render every state of ``jobs`` (this shard's share); one result per state, in job order.

    ``executor='local'``: ``workers`` Blender processes (default 1) side by side, each with
    ``threads`` Cycles threads (default: available cores // workers). ``executor='ray'``:
    ``workers`` render actors on the Ray cluster at ``address`` (default: as many as its
    nodes fit) with ``threads`` Cycles threads each (default: 4, or the largest node's CPUs);
    each result names the node that rendered it. ``device``: ``cpu``, or ``gpu`` for Cycles
    on an OptiX/CUDA GPU; without one the states render on the CPU and one line says so.
    ``log_dir`` keeps the workers' stderr logs (default: a temporary folder, deleted).
    A failing state is reported (status ``failed`` with the reason) and the rest continue;
    a full disk raises ``DiskFull``.
    """
    check_executor(executor)
    jobs = prepare_jobs(jobs, device, shard)
    if executor == "ray":
        pool: Pool = RayPool(workers, threads, verbose, log_dir, device, address)
    else:
        pool = LocalPool(workers or 1, threads, verbose, log_dir, device)
    attempts = max_attempts or (MAX_ATTEMPTS if executor == "ray" else LOCAL_ATTEMPTS)
    order = {(str(job["object_id"]), str(state["state_id"])): k
             for k, (job, state) in enumerate((job, state) for job in jobs for state in job["states"])}
    results = Scheduler(pool, attempts, progress).run(jobs)
    return sorted(results, key=lambda r: order[(r.object_id, r.state_id)])


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0-based I, as a cluster job array index) -> ``(I, N)``."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N with integers, e.g. 0/4; got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard I/N needs 0 <= I < N; got {text!r}")
    return i, n


def prepare_jobs(jobs: Iterable[RenderJob], device: str, shard: tuple[int, int]) -> list[RenderJob]:
    """Check the device and every job (its keys and preset), then keep this shard's jobs."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    jobs = [dict(j) for j in jobs]
    for job in jobs:
        store.check_render_job(job)
    return select_shard(jobs, shard)


def select_shard(jobs: Sequence[dict], shard: tuple[int, int]) -> list[dict]:
    """Jobs of shard ``i`` of ``n`` (0-based): every n-th object in object-id order."""
    i, n = int(shard[0]), int(shard[1])
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got ({i}, {n})")
    ordered = sorted(jobs, key=lambda j: str(j["object_id"]))
    return ordered[i::n]


def summarize(results: Sequence[StateResult]) -> dict:
    """Counts by status and the failures (id and reason), for a CLI to print."""
    counts = {status: sum(r.status == status for r in results) for status in store.RENDER_STATUSES}
    return {**counts, "failures": [{"object_id": r.object_id, "state_id": r.state_id, "error": r.error}
                                   for r in results if r.status == "failed"]}


# ------------------------------------------------------------------ local Blender workers


class LocalPool(Pool):
    """``workers`` Blender worker processes on this machine (no more than there are objects),
    each owned by a thread that starts it on its first state and again after it died. A state
    sent to a worker that dies fails with the reason (signal or exit code and its last output)."""

    def __init__(self, workers: int = 1, threads: int | None = None, verbose: bool = False,
                 log_dir: Path | None = None, device: str = "cpu"):
        self.workers, self.threads, self.verbose, self.device = max(1, int(workers)), threads, verbose, device
        self.log_dir = log_dir
        self.members: list[_LocalMember] = []

    def open(self, jobs: Sequence[RenderJob], objects: int, states: int) -> None:
        self.jobs = jobs
        count = max(1, min(self.workers, objects))
        self.threads = max(1, int(self.threads) if self.threads else available_cores() // count)
        self.own_log = self.log_dir is None
        self.log_root = Path(tempfile.mkdtemp(prefix="pd4d-render-")) if self.own_log else Path(self.log_dir)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self.results: "queue.Queue[tuple[int, Attempt]]" = queue.Queue()
        self.load = [0] * count
        self.members = [_LocalMember(self, index) for index in range(count)]

    def ready(self) -> list[int]:
        return [m for m, member in enumerate(self.members) if not member.broken]

    def free(self, member: int) -> int:
        return IN_FLIGHT - self.load[member]

    def submit(self, member: int, task: Task) -> None:
        self.load[member] += 1
        self.members[member].inbox.put(("task", task))

    def poll(self, timeout: float) -> list[Attempt]:
        try:
            ended = [self.results.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self.results.empty():
            ended.append(self.results.get_nowait())
        for member, _ in ended:
            self.load[member] -= 1
        return [attempt for _, attempt in ended]

    def working(self) -> bool:
        return bool(self.ready())

    def idle_reason(self) -> str:
        return "no render worker could be started"

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        self._remove_logs()

    def close(self) -> None:
        for member in self.members:
            member.inbox.put(("stop", None))
        for member in self.members:
            member.thread.join()
        self._remove_logs()

    def _remove_logs(self) -> None:
        if self.members and self.own_log:
            shutil.rmtree(self.log_root, ignore_errors=True)


class _LocalMember:
    """A thread owning one Blender worker process. Its inbox takes states (``task``), the
    worker's events (from a reader thread: ``event``, ``eof``) and ``stop``; states are sent
    to the worker as they come (one-state jobs: the worker keeps the object imported), and
    each one's ``state`` + ``job`` events become its :class:`Attempt`."""

    def __init__(self, pool: LocalPool, index: int):
        self.pool, self.index = pool, index
        self.inbox: "queue.Queue[tuple[str, object]]" = queue.Queue()
        self.worker: BlenderWorker | None = None
        self.sent: deque[Task] = deque()  # sent to the worker, in order; its events come in this order
        self.result: StateResult | None = None  # the first sent state's result, until its job event
        self.note: str | None = None  # the worker's device note, reported with its first state
        self.start_failures = 0
        self.broken = self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"render-worker-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                kind, item = self.inbox.get()
                if kind == "stop" or self.stopping:
                    return
                try:
                    if kind == "task":
                        self._send(item)
                    elif kind == "event":
                        self._event(*item)
                    elif kind == "eof":
                        self._died(item)
                except Exception as exc:  # noqa: BLE001 - a fault here must not leave the scheduler waiting
                    self._give_up(item if kind == "task" else None, f"render worker thread failed: {type(exc).__name__}: {exc}")
        finally:
            if self.worker is not None:
                self.worker.kill() if self.stopping else self.worker.close()

    def _give_up(self, task: Task | None, reason: str) -> None:
        """Fail every state this member holds (and ``task``) with ``reason``; its next state starts a fresh worker."""
        if self.worker is not None:
            self.worker.kill()
            self.worker.close(timeout=5)
            self.worker = None
        held = list(self.sent) + ([task] if task is not None and task not in self.sent else [])
        self.sent.clear()
        self.result = None
        for t in held:
            self._post(t, StateResult.of(*self._job_state(t), "failed", reason))

    def stop(self) -> None:
        self.stopping = True
        if self.worker is not None:
            self.worker.kill()
        self.inbox.put(("stop", None))

    def _job_state(self, task: Task) -> tuple[RenderJob, dict]:
        job = self.pool.jobs[task.job]
        return job, job["states"][task.state]

    def _post(self, task: Task, result: StateResult, note: str | None = None) -> None:
        self.pool.results.put((self.index, Attempt(task, result, note=note, broken=self.broken)))

    def _send(self, task: Task) -> None:
        job, state = self._job_state(task)
        if self.worker is None and not self._start(task):
            return
        self.sent.append(task)
        try:
            self.worker.send({**job, "states": [state]})
        except (BrokenPipeError, OSError):
            pass  # it died: the reader's eof reports the states sent to it

    def _start(self, task: Task) -> bool:
        pool = self.pool
        try:
            worker = BlenderWorker(pool.threads, pool.log_root, self.index, pool.verbose, pool.device)
        except Exception as exc:  # noqa: BLE001 - reported as the state's failure
            self.start_failures += 1
            self.broken = self.start_failures >= 2
            self._post(task, StateResult.of(*self._job_state(task), "failed", str(exc)))
            return False
        if self.stopping:
            worker.kill()
            return False
        self.worker, self.start_failures, self.note = worker, 0, worker.device_note
        threading.Thread(target=self._read, args=(worker,), name=f"render-reader-{self.index}", daemon=True).start()
        return True

    def _read(self, worker: BlenderWorker) -> None:
        while (event := worker.read()) is not None:
            self.inbox.put(("event", (worker, event)))
        self.inbox.put(("eof", worker))

    def _event(self, worker: BlenderWorker, event: dict) -> None:
        if worker is not self.worker or not self.sent:
            return
        task = self.sent[0]
        job, state = self._job_state(task)
        if event.get("event") == "state" and str(event.get("state_id")) == str(state["state_id"]):
            self.result = store.read_state_event(event)
        elif event.get("event") == "job":
            self.sent.popleft()
            result = self.result or StateResult.of(job, state, "failed",
                                                   str(event.get("error") or "the worker reported no result"))
            self.result = None
            self._post(task, result, self.note)
            self.note = None

    def _died(self, worker: BlenderWorker) -> None:
        if worker is not self.worker:
            return
        reason = worker.death_reason()
        worker.close(timeout=5)
        self.worker = None
        if self.result is not None:  # the first state was done; the worker died before saying so
            self._post(self.sent.popleft(), self.result, self.note)
            self.result = None
        while self.sent:
            task = self.sent.popleft()
            self._post(task, StateResult.of(*self._job_state(task), "failed", reason))


__all__ = ["DEVICES", "LocalPool", "parse_shard", "prepare_jobs", "render_states", "select_shard", "summarize"]
