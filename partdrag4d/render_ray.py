"""Rendering on a Ray cluster (``render --executor ray``): the pool of render actors
(:class:`RayPool`) the one scheduler (``partdrag4d.scheduler``) hands states to.

Each :class:`RenderActor` owns one long-lived Blender worker process
(``partdrag4d.blender``), started on the actor's first state and restarted if it dies;
the scheduler sends it one state per call and keeps it on one object while that object
has states left. Ray places actors by ``num_cpus`` (= Cycles threads per actor,
``--threads``) and, for ``--device gpu`` on a cluster with GPUs, ``num_gpus=1``.

Faults: a state whose attempt fails (its Blender worker died, or Blender reported an
error) is tried again by the scheduler, up to ``MAX_ATTEMPTS`` times in all. A render
actor that is lost (its process died or its node left the cluster) is retired, its
states go back to the queue without using an attempt, and a replacement is started where
the remaining nodes have room (waiting up to ``REPLACEMENT_WAIT`` s for it to be placed
when every actor was lost). Ctrl-C kills the actors (their Blender workers die with
them) and leaves only hidden staging folders, which the next run deletes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from partdrag4d.blender import BlenderWorker
from partdrag4d.errors import ClusterError
from partdrag4d.executor import node_label, ray_session
from partdrag4d.scheduler import IN_FLIGHT, Attempt, Pool, Task
from partdrag4d.store import RenderJob, StateResult, read_state_event

DEFAULT_THREADS = 4
"""Cycles threads per render actor when ``--threads`` is not given (capped by the largest node)."""
REPLACEMENT_WAIT = 300.0
"""Seconds to wait for a replacement actor to be placed when every render actor was lost."""


class RenderActor:
    """A Ray actor owning one Blender worker process (started lazily, restarted when it dies)."""

    def __init__(self, threads: int, device: str, verbose: bool, log_dir: str | None, index: int):
        self.threads, self.device, self.verbose, self.index = int(threads), device, verbose, index
        self.node = node_label()
        self.own_log = log_dir is None
        self.log_root = Path(tempfile.mkdtemp(prefix="pd4d-render-actor-")) if log_dir is None else Path(log_dir)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self.worker: BlenderWorker | None = None
        self.start_failures = 0

    def where(self) -> str:
        return self.node

    def render(self, task: Task, header: dict, state: dict) -> Attempt:
        """Render one state of the object ``header`` describes."""
        def failed(error: str, broken: bool = False) -> Attempt:
            result = StateResult.of(header, state, "failed", error)
            result.node = self.node
            return Attempt(task, result, broken=broken)

        if not os.path.isfile(header["mesh"]):
            return failed(f"mesh {header['mesh']} is not visible on node {self.node}: the dataset folder must be on a "
                          "path every Ray node shares, under the same absolute name")
        note = None
        if self.worker is None:
            try:
                self.worker = BlenderWorker(self.threads, self.log_root, self.index, self.verbose, self.device)
            except Exception as exc:  # noqa: BLE001 - reported as the state's failure
                self.start_failures += 1
                return failed(str(exc), broken=self.start_failures >= 2)
            self.start_failures, note = 0, self.worker.device_note
        try:
            result = self._one_state(header, state)
        except (EOFError, BrokenPipeError, OSError):
            reason = self.worker.death_reason()
            self.worker.close(timeout=5)
            self.worker = None
            return failed(reason)
        result.node = self.node
        return Attempt(task, result, note=note)

    def _one_state(self, header: dict, state: dict) -> StateResult:
        state_id = str(state["state_id"])
        result = None
        self.worker.send({**header, "states": [state]})
        while True:
            message = self.worker.read()
            if message is None:
                raise EOFError
            if message.get("event") == "state" and str(message.get("state_id")) == state_id:
                result = read_state_event(message)
            elif message.get("event") == "job":
                return result or StateResult.of(header, state, "failed",
                                                str(message.get("error") or "the worker reported no result"))

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self.own_log:
            shutil.rmtree(self.log_root, ignore_errors=True)


def _default_threads(ray) -> int:
    largest = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, min(DEFAULT_THREADS, largest))


def _actor_slots(ray, threads: int, gpu: bool) -> int:
    """How many render actors fit the cluster's alive nodes (CPUs per actor = threads; one GPU each)."""
    slots = 0
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        fit = int(n["Resources"].get("CPU", 0) // threads)
        if gpu:
            fit = min(fit, int(n["Resources"].get("GPU", 0)))
        slots += fit
    return slots


class RayPool(Pool):
    """Render actors on a Ray cluster: ``workers`` of them (default: as many as the cluster's
    nodes fit with ``threads`` CPUs each), each with ``threads`` Cycles threads (default: 4,
    or the largest node's CPU count if smaller). ``device='gpu'`` gives each actor one GPU
    where the cluster has GPUs; where it has none, one line says so and they render on the CPU."""

    member = "render actor"

    def __init__(self, workers: int | None = None, threads: int | None = None, verbose: bool = False,
                 log_dir: Path | None = None, device: str = "cpu", address: str | None = None):
        self.workers, self.threads, self.verbose, self.device, self.address = workers, threads, verbose, device, address
        self.log = str(log_dir) if log_dir is not None else None
        self.session = ExitStack()
        self.actors: list = []
        self.alive: list[bool] = []  # ready for work (answered where()) and not lost
        self.starting: dict[Any, int] = {}  # where() ref -> actor still being placed or started
        self.inflight: dict[Any, tuple[int, Task]] = {}  # render() ref -> (actor, task)
        self.load: list[int] = []
        self.headers: dict[int, Any] = {}  # job -> its header in Ray's object store
        self.all_lost_at: float | None = None
        self.lost_any = False

    def open(self, jobs: Sequence[RenderJob], objects: int, states: int) -> None:
        self.jobs = jobs
        self.ray = self.session.enter_context(ray_session(self.address))
        try:
            count = self._plan(states)
        except BaseException:
            self.session.close()
            raise
        for _ in range(count):
            self._start_actor()

    def _plan(self, states: int) -> int:
        """Check what the cluster holds; say what differs from the wish; how many actors to start."""
        ray = self.ray
        self.gpu = self.device == "gpu" and ray.cluster_resources().get("GPU", 0) >= 1
        if self.device == "gpu" and not self.gpu:
            print("render device: no GPU in the Ray cluster; Cycles renders on the CPU", file=sys.stderr)
        self.threads = max(1, int(self.threads)) if self.threads else _default_threads(ray)
        slots = _actor_slots(ray, self.threads, self.gpu)
        if slots < 1:
            need = f"{self.threads} CPUs" + (" and a GPU" if self.gpu else "")
            raise ClusterError(f"no node of the Ray cluster has {need} free for a render actor (--threads {self.threads})")
        if self.workers and int(self.workers) > slots:
            print(f"render: {self.workers} actors requested, the cluster fits {slots} with --threads {self.threads}; "
                  f"using {slots}", file=sys.stderr)
        self.actor_class = ray.remote(RenderActor).options(num_cpus=self.threads, num_gpus=1 if self.gpu else 0,
                                                           max_restarts=0, max_task_retries=0)
        return max(1, min(int(self.workers) if self.workers else slots, slots, states))

    def _start_actor(self) -> None:
        a = len(self.actors)
        self.actors.append(self.actor_class.remote(self.threads, "gpu" if self.gpu else "cpu", self.verbose, self.log, a))
        self.alive.append(False)
        self.load.append(0)
        self.starting[self.actors[a].where.remote()] = a

    def _lose(self, a: int) -> None:
        """An actor whose process or node is gone: retire it, and start a replacement where
        the cluster's remaining nodes still have room for one."""
        if not self.alive[a]:
            return
        self.alive[a], self.lost_any = False, True
        self.ray.kill(self.actors[a], no_restart=True)
        if _actor_slots(self.ray, self.threads, self.gpu) > sum(self.alive) + len(self.starting):
            self._start_actor()
        if not any(self.alive):
            self.all_lost_at = time.monotonic()

    def ready(self) -> list[int]:
        return [a for a, alive in enumerate(self.alive) if alive]

    def free(self, member: int) -> int:
        return IN_FLIGHT - self.load[member]

    def submit(self, member: int, task: Task) -> None:
        if task.job not in self.headers:
            self.headers[task.job] = self.ray.put({k: v for k, v in self.jobs[task.job].items() if k != "states"})
        state = self.jobs[task.job]["states"][task.state]
        self.inflight[self.actors[member].render.remote(task, self.headers[task.job], state)] = (member, task)
        self.load[member] += 1

    def poll(self, timeout: float) -> list[Attempt]:
        refs = list(self.inflight) + list(self.starting)
        if not refs:
            return []
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        ended = []
        for ref in ready:
            if ref in self.starting:
                self._started(ref)
            else:
                ended.append(self._ended(ref))
        return ended

    def _started(self, ref) -> None:
        a = self.starting.pop(ref)
        try:
            self.ray.get(ref)
            self.alive[a], self.all_lost_at = True, None
        except self.ray.exceptions.RayActorError:  # lost before it started
            self.alive[a] = True
            self._lose(a)

    def _ended(self, ref) -> Attempt:
        a, task = self.inflight.pop(ref)
        self.load[a] -= 1
        try:
            attempt = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:  # the actor's process or node is gone: not the state's fault
            self._lose(a)
            return Attempt(task, lost=(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300])
        if attempt.broken:
            self.alive[a] = False
        return attempt

    def working(self) -> bool:
        if any(self.alive):
            return True
        return bool(self.starting) and (self.all_lost_at is None or time.monotonic() - self.all_lost_at < REPLACEMENT_WAIT)

    def idle_reason(self) -> str:
        return ("every render actor was lost with its node and no node has room for another" if self.lost_any
                else "no render actor could start a Blender worker")

    def stop(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)  # its Blender worker dies with it
        self.session.close()

    def close(self) -> None:
        closing = [self.actors[a].close.remote() for a in range(len(self.actors)) if self.alive[a]]
        try:
            self.ray.get(closing, timeout=120)
        except Exception:  # noqa: BLE001 - the results are in; a slow close only leaks a tmp folder
            pass
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.session.close()


__all__ = ["DEFAULT_THREADS", "REPLACEMENT_WAIT", "RayPool", "RenderActor"]
