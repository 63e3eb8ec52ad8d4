"""One scheduler for render states, over a pool of workers: Blender processes on this
machine (``partdrag4d.render.LocalPool``) or Ray actors on a cluster
(``partdrag4d.render_ray.RayPool``). It knows neither Blender nor Ray.

What the scheduler does, whatever the pool:

- States whose ``out_dir`` is already complete are ``skipped`` without starting a worker,
  so a rerun resumes.
- Order: the objects with the most states go first (better balance); a worker keeps
  taking states of the object it works on while that object has states left (the worker
  keeps the imported mesh between states of one object), takes a fresh object nobody
  works on when it runs out, and only then helps with the object that has the most states
  left. Each worker holds ``IN_FLIGHT`` states at a time (the next one is already there
  when one finishes).
- A failed attempt is tried again, up to ``max_attempts`` in all; then the state is
  recorded as failed with the reason of its last attempt and the rest carry on. A worker
  lost with its node (the pool says so) is not the state's fault: its states go back to
  the queue without using an attempt (up to ``MAX_LOSSES`` times), and the pool replaces it.
  A worker lost after committing a state but before reporting it leaves the state complete:
  the retry finds it so and the state counts as rendered (by this run), not skipped.
- A state that fails because the disk is full (ENOSPC, EDQUOT) stops the run: no more
  states are handed out, the states in flight finish (so no staging folder is left), and
  ``DiskFull`` is raised once; finished states are kept and a rerun resumes.
- An interrupt (Ctrl-C) or any other exception stops the pool at once (its Blender workers
  die with it) and is raised; the only leftovers are hidden staging folders, which the next
  run deletes.
- One progress bar (with ETA) counts states; device notes of the workers are printed once
  per node; states rendered per node are counted (Ray) and printed at the end.

A pool (:class:`Pool`) runs attempts: ``submit`` a :class:`Task` to one of its ``ready``
members, ``poll`` for the :class:`Attempt` s that ended. Results are ``store.StateResult``.
"""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

from tqdm import tqdm

from partdrag4d.errors import DiskFull
from partdrag4d.executor import print_nodes
from partdrag4d.store import RenderJob, StateResult, is_render_complete

MAX_ATTEMPTS = 2
"""Attempts per state on a Ray cluster before it is recorded as failed (``render_ray``)."""
MAX_LOSSES = 3
"""Times a state is sent again because its worker was lost (its process or node died);
these do not count as the state's attempts, since the state did nothing wrong."""
IN_FLIGHT = 2
"""States a pool member holds at once: the next state is already there when one finishes."""

_DISK_FULL = re.compile(r"ENOSPC|EDQUOT|no space left on device|disk quota exceeded|errno 28\b", re.IGNORECASE)


def is_disk_full(error: str | None) -> bool:
    """Whether a worker's error says the disk (or the quota) is full."""
    return bool(error) and _DISK_FULL.search(error) is not None


@dataclass(frozen=True)
class Task:
    """One attempt at one state: ``jobs[job]["states"][state]``, try number ``attempt``."""

    job: int
    state: int
    attempt: int = 1


@dataclass
class Attempt:
    """How an attempt ended, as the pool reports it: a ``result``, or ``lost`` (the member
    went away with the state: its node left, its process died), then ``result`` is None."""

    task: Task
    result: StateResult | None = None
    lost: str | None = None
    note: str | None = None  # the member's device note (e.g. no GPU: renders on the CPU)
    broken: bool = False  # the member cannot start a Blender worker any more: it takes no more states


class Pool(ABC):
    """Members (Blender worker processes, Ray actors) that render states. ``open`` starts them,
    ``close`` ends them in order, ``stop`` kills them at once."""

    member = "render worker"
    """What a member is called in messages."""

    @abstractmethod
    def open(self, jobs: Sequence[RenderJob], objects: int, states: int) -> None:
        """Start members for ``states`` pending states of ``objects`` objects of ``jobs``."""

    @abstractmethod
    def ready(self) -> list[int]:
        """Members that take states now (started, neither lost nor broken)."""

    @abstractmethod
    def free(self, member: int) -> int:
        """States ``member`` takes now."""

    @abstractmethod
    def submit(self, member: int, task: Task) -> None:
        """Hand ``task`` to ``member``; its :class:`Attempt` comes back from ``poll``."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Attempt]:
        """Attempts that ended (waits up to ``timeout`` seconds for one)."""

    @abstractmethod
    def working(self) -> bool:
        """A member is ready, or one may still become ready (a replacement being placed)."""

    @abstractmethod
    def idle_reason(self) -> str:
        """Why no member is left to render the states still queued."""

    @abstractmethod
    def stop(self) -> None:
        """Kill every member now (an interrupt)."""

    @abstractmethod
    def close(self) -> None:
        """End every member in order (the run is done)."""


class Pending:
    """States still to render, per object (job), and the object each member works on."""

    def __init__(self, jobs: Sequence[RenderJob]):
        self.jobs = jobs
        self.queues: dict[int, deque[tuple[int, int]]] = {}  # job -> (state, attempt)
        self.skipped: list[StateResult] = []
        for j, job in enumerate(jobs):
            for s, state in enumerate(job["states"]):
                if is_render_complete(state["out_dir"], len(job["cameras"])):
                    self.skipped.append(StateResult.of(job, state, "skipped"))
                else:
                    self.queues.setdefault(j, deque()).append((s, 1))
        self.order = sorted(self.queues, key=lambda j: (-len(self.queues[j]), j))  # longest objects first
        self.current: dict[int, int] = {}  # member -> the object it works on

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    @property
    def objects(self) -> int:
        return sum(1 for q in self.queues.values() if q)

    def requeue(self, task: Task) -> None:
        self.queues[task.job].appendleft((task.state, task.attempt))

    def take(self, member: int, ready: Sequence[int]) -> Task | None:
        """The next state for ``member``: its object's, a fresh object's, or the biggest remainder's."""
        j = self.current.get(member)
        if j is not None and self.queues.get(j):
            return Task(j, *self.queues[j].popleft())
        held = {self.current[b] for b in ready if b != member and b in self.current}
        for j in self.order:  # a fresh object nobody works on
            if self.queues[j] and j not in held:
                self.current[member] = j
                return Task(j, *self.queues[j].popleft())
        j = max(self.order, key=lambda j: len(self.queues[j]), default=None)  # help with the biggest remainder
        if j is not None and self.queues[j]:
            self.current[member] = j
            return Task(j, *self.queues[j].pop())
        return None

    def drain(self) -> Iterator[Task]:
        for j in self.order:
            while self.queues[j]:
                yield Task(j, *self.queues[j].popleft())

    def failed(self, task: Task, error: str) -> StateResult:
        job = self.jobs[task.job]
        return StateResult.of(job, job["states"][task.state], "failed", error)


class Progress:
    """The progress bar (states, ETA; failed / retried / already done / nodes as a postfix),
    device notes once per node, and the states rendered per node."""

    def __init__(self, total: int, skipped: int, enabled: bool):
        self.enabled, self.skipped = enabled, skipped
        self.failed = self.retried = 0
        self.nodes: Counter = Counter()
        self.notes: set[tuple[str | None, str]] = set()
        self.bar = tqdm(total=total, desc="render", unit="state", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
        self._postfix()

    def _postfix(self) -> None:
        parts = [f"{len(self.nodes)} nodes"] if len(self.nodes) > 1 else []
        parts += [f"failed {self.failed}"] if self.failed else []
        parts += [f"retried {self.retried}"] if self.retried else []
        parts += [f"{self.skipped} already done"] if self.skipped else []
        self.bar.set_postfix_str(", ".join(parts), refresh=False)

    def done(self, result: StateResult) -> None:
        if result.status == "failed":
            self.failed += 1
        elif result.node and result.status == "rendered":
            self.nodes[result.node] += 1
        self._postfix()
        self.bar.update(1)

    def retry(self) -> None:
        self.retried += 1
        self._postfix()

    def note(self, node: str | None, note: str) -> None:
        if (node, note) not in self.notes:
            self.notes.add((node, note))
            self.bar.write(f"render device{f' on {node}' if node else ''}: {note}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

    def print_nodes(self) -> None:
        if self.enabled:
            print_nodes(self.nodes, "render", "state")


class Scheduler:
    """Render the pending states of render jobs on a :class:`Pool` (see the module docstring)."""

    def __init__(self, pool: Pool, max_attempts: int = MAX_ATTEMPTS, progress: bool = True,
                 max_losses: int = MAX_LOSSES):
        self.pool, self.max_attempts, self.progress, self.max_losses = pool, max(1, int(max_attempts)), progress, max_losses
        self.losses: Counter = Counter()  # (job, state) -> times its member was lost under it
        self.disk_full: StateResult | None = None  # the first state that failed for a full disk

    def run(self, jobs: Sequence[RenderJob]) -> Iterator[StateResult]:
        """One result per state of ``jobs`` (checked ones: ``render.prepare_jobs``), as they end."""
        pending = Pending(jobs)
        yield from pending.skipped
        if not pending:
            return
        self.losses, self.disk_full = Counter(), None
        self.pool.open(jobs, pending.objects, len(pending))
        bar = Progress(len(pending), len(pending.skipped), self.progress)
        try:
            yield from self._loop(pending, bar)
        except BaseException:
            self.pool.stop()  # its Blender workers die with it
            bar.close()
            raise
        bar.close()
        self.pool.close()
        if self.disk_full is not None:
            raise DiskFull(_disk_full_message(self.disk_full))
        bar.print_nodes()

    def _loop(self, pending: Pending, bar: Progress) -> Iterator[StateResult]:
        inflight: set[Task] = set()
        while inflight or (pending and self.disk_full is None and self.pool.working()):
            if self.disk_full is None:
                self._fill(pending, inflight)
            for attempt in self.pool.poll(1.0):
                if attempt.task not in inflight:
                    continue
                inflight.discard(attempt.task)
                result = self._settle(attempt, pending, bar)
                if result is not None and self.disk_full is None:
                    bar.done(result)
                    yield result
        if self.disk_full is None:
            for task in pending.drain():  # no member left to render these
                result = pending.failed(task, f"not rendered: {self.pool.idle_reason()}")
                bar.done(result)
                yield result

    def _fill(self, pending: Pending, inflight: set[Task]) -> None:
        ready = self.pool.ready()
        for member in ready:
            while self.pool.free(member) > 0:
                task = pending.take(member, ready)
                if task is None:
                    return
                self.pool.submit(member, task)
                inflight.add(task)

    def _settle(self, attempt: Attempt, pending: Pending, bar: Progress) -> StateResult | None:
        """The state's result, or None when it goes back to the queue (lost, or to be retried)."""
        task, key = attempt.task, (attempt.task.job, attempt.task.state)
        result = attempt.result
        if result is None:  # its member was lost: not the state's fault
            self.losses[key] += 1
            if self.losses[key] <= self.max_losses:
                pending.requeue(task)
                return None
            result = pending.failed(task, f"its {self.pool.member} was lost {self.losses[key]} times; last: {attempt.lost}")
        if attempt.note:
            bar.note(result.node, attempt.note)
        if result.status == "skipped":  # pending at the start, so an earlier attempt of this run committed it
            return replace(result, status="rendered")  # (its member was lost after the rename, before it reported)
        if result.status != "failed":
            return result
        if is_disk_full(result.error):
            self.disk_full = self.disk_full or result
            return None
        if task.attempt < self.max_attempts and self.losses[key] <= self.max_losses:
            bar.retry()
            pending.requeue(replace(task, attempt=task.attempt + 1))
            return None
        if task.attempt > 1:
            result = replace(result, error=f"failed {task.attempt} times; last: {result.error}")
        return result


def _disk_full_message(result: StateResult) -> str:
    reason = " ".join(str(result.error).split())[:300]
    return (f"{result.out_dir}: no space left on the device while rendering state {result.state_id} ({reason}); "
            "free space and rerun: finished states are kept")


__all__ = ["Attempt", "IN_FLIGHT", "MAX_ATTEMPTS", "MAX_LOSSES", "Pending", "Pool", "Progress", "Scheduler", "Task",
           "is_disk_full"]
