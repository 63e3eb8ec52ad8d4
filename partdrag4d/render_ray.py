"""Rendering on a Ray cluster (``render --executor ray``).

Each :class:`RenderActor` owns one long-lived Blender worker process
(``partdrag4d.render``'s adapter), started on the actor's first state and restarted if
it dies. The driver sends one state per call and keeps each actor on one object while
that object has states left (the worker keeps the imported mesh between states of the
same object), takes a fresh object when it runs out, and only then helps with the
object that has the most states left. Ray places actors by ``num_cpus`` (= Cycles
threads per actor, ``--threads``) and, for ``--device gpu`` on a cluster with GPUs,
``num_gpus=1``.

Faults: a state whose attempt fails (its Blender worker died, or Blender reported an
error) is tried again, up to ``MAX_ATTEMPTS`` times in all; then it is recorded as failed
with the reason of its last attempt and the rest carry on. A render actor that is lost
(its process died or its node left the cluster) is retired, its states go back to the
queue without using an attempt, and a replacement is started where the remaining nodes
have room. Ctrl-C kills the actors (their Blender workers die with them) and leaves only
hidden staging folders, which the next run deletes; a rerun skips every complete state.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from partdrag4d.errors import ClusterError
from partdrag4d.executor import node_label, print_nodes, ray_session
from partdrag4d.render import StateResult, _Worker, is_render_complete, prepare_jobs

MAX_ATTEMPTS = 2
"""Attempts per state (render) before it is recorded as failed."""
IN_FLIGHT = 2
"""Calls queued per render actor: the next state is already there when one finishes."""
DEFAULT_THREADS = 4
"""Cycles threads per render actor when ``--threads`` is not given (capped by the largest node)."""
MAX_LOSSES = 3
"""Times a state is sent again because its render actor was lost (its process or node died);
these do not count as the state's attempts, since the state did nothing wrong."""
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
        self.worker = None
        self.start_failures = 0

    def where(self) -> str:
        return self.node

    def render(self, header: dict, state: dict) -> dict:
        """Render one state of the object ``header`` describes; a dict with status, error, node."""
        out = {"node": self.node, "note": None, "died": False, "fatal": False, "seconds": 0.0, "error": None}
        if not os.path.isfile(header["mesh"]):
            return {**out, "status": "failed", "error": (
                f"mesh {header['mesh']} is not visible on node {self.node}: the dataset folder must be on a path "
                "every Ray node shares, under the same absolute name")}
        if self.worker is None:
            try:
                self.worker = _Worker(self.threads, self.log_root, self.index, self.verbose, self.device)
            except Exception as exc:  # noqa: BLE001 - reported per state
                self.start_failures += 1
                return {**out, "status": "failed", "error": str(exc), "fatal": self.start_failures >= 2}
            self.start_failures = 0
            out["note"] = self.worker.ready.get("device_note")
        state_id = str(state["state_id"])
        event = None
        try:
            self.worker.send({**header, "states": [state]})
            while True:
                message = self.worker.read()
                if message is None:
                    raise EOFError
                if message.get("event") == "state" and str(message.get("state_id")) == state_id:
                    event = message
                elif message.get("event") == "job":
                    if event is None:
                        event = {"status": "failed", "error": str(message.get("error") or "the worker reported no result")}
                    break
        except (EOFError, BrokenPipeError, OSError):
            reason = self.worker.death_reason()
            self.worker.close(timeout=5)
            self.worker = None
            return {**out, "status": "failed", "error": reason, "died": True}
        return {**out, "status": str(event.get("status")), "seconds": float(event.get("seconds") or 0.0),
                "error": event.get("error")}

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


def render_jobs_ray(jobs: Iterable[dict], workers: int | None = None, shard: tuple[int, int] = (0, 1),
                    progress: bool = True, threads: int | None = None, verbose: bool = False,
                    log_dir: Path | None = None, device: str = "cpu", address: str | None = None,
                    max_attempts: int = MAX_ATTEMPTS) -> list:
    """:func:`partdrag4d.render.render_jobs` on a Ray cluster: one result per state, in job order.

    ``workers`` render actors (default: as many as the cluster's nodes fit with
    ``threads`` CPUs each) with ``threads`` Cycles threads each (default: 4, or the
    largest node's CPU count if smaller). ``device='gpu'`` gives each actor one GPU
    where the cluster has GPUs; where it has none, one line says so and the actors
    render on the CPU. Each result names the node that rendered it.
    """
    jobs = prepare_jobs(jobs, device, shard)
    results: dict[tuple[int, int], StateResult] = {}
    queues: dict[int, deque] = {}
    for j, job in enumerate(jobs):
        num_views = len(job["cameras"])
        for s, state in enumerate(job["states"]):
            if is_render_complete(state["out_dir"], num_views):
                results[(j, s)] = StateResult(str(job["object_id"]), str(state["state_id"]), str(state["out_dir"]), "skipped")
            else:
                queues.setdefault(j, deque()).append((s, 1))
    total = sum(len(q) for q in queues.values())
    if not total:
        return [results[k] for k in sorted(results)]
    order = sorted(queues, key=lambda j: (-len(queues[j]), j))  # longest objects first: better balance

    with ray_session(address) as ray:
        gpu = device == "gpu" and ray.cluster_resources().get("GPU", 0) >= 1
        if device == "gpu" and not gpu:
            print("render device: no GPU in the Ray cluster; Cycles renders on the CPU", file=sys.stderr)
        threads = max(1, int(threads)) if threads else _default_threads(ray)
        slots = _actor_slots(ray, threads, gpu)
        if slots < 1:
            need = f"{threads} CPUs" + (" and a GPU" if gpu else "")
            raise ClusterError(f"no node of the Ray cluster has {need} free for a render actor (--threads {threads})")
        count = max(1, min(int(workers) if workers else slots, slots, total))
        if workers and int(workers) > slots:
            print(f"render: {workers} actors requested, the cluster fits {slots} with --threads {threads}; using {slots}",
                  file=sys.stderr)
        actor_class = ray.remote(RenderActor).options(num_cpus=threads, num_gpus=1 if gpu else 0,
                                                      max_restarts=0, max_task_retries=0)
        log = str(log_dir) if log_dir is not None else None
        headers = {j: ray.put({k: v for k, v in jobs[j].items() if k != "states"}) for j in queues}

        actors: list = []
        alive: list[bool] = []  # ready for work (answered where()) and not lost
        starting: dict[Any, int] = {}  # where() ref -> actor still being placed or started
        current: dict[int, int] = {}  # actor -> the object it works on
        inflight: dict[Any, tuple[int, int, int, int]] = {}  # ref -> (actor, job, state, attempt)
        load: list[int] = []
        losses: Counter = Counter()  # (job, state) -> times its actor was lost under it
        notes: set[tuple[str, str]] = set()
        nodes: Counter = Counter()
        failed = retried = 0
        skipped = len(results)
        all_lost_at: float | None = None
        bar = tqdm(total=total, desc="render", unit="state", disable=not progress, dynamic_ncols=True, smoothing=0.1)

        def start_actor() -> None:
            a = len(actors)
            actors.append(actor_class.remote(threads, "gpu" if gpu else "cpu", verbose, log, a))
            alive.append(False)
            load.append(0)
            starting[actors[a].where.remote()] = a

        def lose_actor(a: int) -> None:
            """An actor whose process or node is gone: retire it, and start a replacement
            where the cluster's remaining nodes still have room for one."""
            nonlocal all_lost_at
            if not alive[a]:
                return
            alive[a] = False
            ray.kill(actors[a], no_restart=True)
            if _actor_slots(ray, threads, gpu) > sum(alive) + len(starting):
                start_actor()
            if not any(alive):
                all_lost_at = time.monotonic()

        def postfix() -> None:
            parts = [f"{len({n for n in nodes})} nodes"] if len(nodes) > 1 else []
            parts += [f"failed {failed}"] if failed else []
            parts += [f"retried {retried}"] if retried else []
            parts += [f"{skipped} already done"] if skipped else []
            bar.set_postfix_str(", ".join(parts), refresh=False)

        def next_state(a: int) -> tuple[int, int, int] | None:
            j = current.get(a)
            if j is not None and queues.get(j):
                s, attempt = queues[j].popleft()
                return j, s, attempt
            held = {current[b] for b in current if b != a and alive[b]}
            for j in order:  # a fresh object nobody works on
                if queues.get(j) and j not in held:
                    current[a] = j
                    s, attempt = queues[j].popleft()
                    return j, s, attempt
            j = max(order, key=lambda j: len(queues.get(j, ())))  # help with the biggest remainder
            if queues.get(j):
                current[a] = j
                s, attempt = queues[j].pop()
                return j, s, attempt
            return None

        def fill(a: int) -> None:
            while alive[a] and load[a] < IN_FLIGHT:
                item = next_state(a)
                if item is None:
                    return
                j, s, attempt = item
                ref = actors[a].render.remote(headers[j], jobs[j]["states"][s])
                inflight[ref] = (a, j, s, attempt)
                load[a] += 1

        def finish(j: int, s: int, status: str, seconds: float, error: str | None, node: str | None) -> None:
            nonlocal failed
            state = jobs[j]["states"][s]
            results[(j, s)] = StateResult(str(jobs[j]["object_id"]), str(state["state_id"]), str(state["out_dir"]),
                                          status, seconds, error, node)
            if status == "failed":
                failed += 1
            elif node:
                nodes[node] += 1
            postfix()
            bar.update(1)

        def outcome(a: int, j: int, s: int, attempt: int, ref) -> None:
            nonlocal retried
            try:
                out = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the actor's process or node is gone: not the state's fault
                lose_actor(a)
                losses[(j, s)] += 1
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                if losses[(j, s)] <= MAX_LOSSES:
                    queues[j].appendleft((s, attempt))
                    return
                out = {"status": "failed", "error": f"its render actor was lost {losses[(j, s)]} times; last: {first}"}
            note = out.get("note")
            if note and (out.get("node"), note) not in notes:
                notes.add((out.get("node"), note))
                bar.write(f"render device on {out.get('node')}: {note}", file=sys.stderr)
            if out.get("fatal"):
                alive[a] = False
            if out["status"] == "failed" and attempt < max_attempts and losses[(j, s)] <= MAX_LOSSES:
                retried += 1
                queues[j].appendleft((s, attempt + 1))
                postfix()
                return
            error = out.get("error")
            if out["status"] == "failed" and attempt > 1:
                error = f"failed {attempt} times; last: {error}"
            finish(j, s, out["status"], float(out.get("seconds") or 0.0), error, out.get("node"))

        def pending() -> bool:
            """Work left that an actor can still do: states in flight, or queued states and an
            actor ready or starting (a replacement gets ``REPLACEMENT_WAIT`` s to be placed)."""
            if inflight:
                return True
            if not any(queues.values()):
                return False
            if any(alive):
                return True
            return bool(starting) and (all_lost_at is None or time.monotonic() - all_lost_at < REPLACEMENT_WAIT)

        try:
            for _ in range(count):
                start_actor()
            while pending():
                ready, _ = ray.wait(list(inflight) + list(starting), num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in starting:
                        a = starting.pop(ref)
                        try:
                            ray.get(ref)
                            alive[a] = True
                            all_lost_at = None
                        except ray.exceptions.RayActorError:  # lost before it started
                            alive[a] = True
                            lose_actor(a)
                    else:
                        a, j, s, attempt = inflight.pop(ref)
                        load[a] -= 1
                        outcome(a, j, s, attempt, ref)
                    for b in range(len(actors)):
                        fill(b)
        except BaseException:
            for actor in actors:
                ray.kill(actor, no_restart=True)  # its Blender worker dies with it
            bar.close()
            raise
        bar.close()
        for j, queue in queues.items():  # no actor left to render these
            while queue:
                s, _ = queue.popleft()
                why = ("every render actor was lost with its node and no node has room for another" if losses
                       else "no render actor could start a Blender worker")
                finish(j, s, "failed", 0.0, f"not rendered: {why}", None)
        closing = [actors[a].close.remote() for a in range(len(actors)) if alive[a]]
        try:
            ray.get(closing, timeout=120)
        except Exception:  # noqa: BLE001 - the results are in; a slow close only leaks a tmp folder
            pass
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if progress:
            print_nodes(nodes, "render", "state")
    return [results[k] for k in sorted(results)]


__all__ = ["MAX_ATTEMPTS", "RenderActor", "render_jobs_ray"]
