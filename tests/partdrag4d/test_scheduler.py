"""The one render scheduler on a scripted pool (no Blender, no Ray): order, retries, members
lost with their node, and a full disk stopping the run with one ``DiskFull``; and the local
pool on stand-in worker processes (a dead worker replaced, a fault failing what it held)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from partdrag4d.errors import DiskFull
from partdrag4d.scheduler import IN_FLIGHT, MAX_LOSSES, Attempt, Pool, Scheduler, Task
from partdrag4d.store import StateResult

ENOSPC = "OSError: [Errno 28] No space left on device: '/data/states/b_1/.render.x1.tmp/view_03.png' (at store.py:120)"


class ScriptedPool(Pool):
    """``members`` members; ``script(task, member)`` says how each attempt ends: ``"rendered"``,
    ``"lost"`` or an error text (failed). Attempts end one per poll, first submitted first."""

    member = "test worker"

    def __init__(self, script, members: int = 2):
        self.script, self.count = script, members
        self.submitted: list[tuple[int, str, int]] = []  # (member, state id, attempt)
        self.closed = self.stopped = False

    def open(self, jobs, objects, states):
        self.jobs = jobs
        self.load = [0] * self.count
        self.queue: deque[tuple[int, Task]] = deque()

    def ready(self):
        return list(range(self.count))

    def free(self, member):
        return IN_FLIGHT - self.load[member]

    def submit(self, member, task):
        self.load[member] += 1
        self.queue.append((member, task))
        self.submitted.append((member, self.state_id(task), task.attempt))

    def state_id(self, task: Task) -> str:
        return self.jobs[task.job]["states"][task.state]["state_id"]

    def poll(self, timeout):
        member, task = self.queue.popleft()
        self.load[member] -= 1
        how = self.script(task, member)
        if how == "lost":
            return [Attempt(task, lost="the node died")]
        job = self.jobs[task.job]
        state = job["states"][task.state]
        if how in ("rendered", "skipped"):
            return [Attempt(task, StateResult.of(job, state, how))]
        return [Attempt(task, StateResult.of(job, state, "failed", how))]

    def working(self):
        return True

    def idle_reason(self):
        return "no test worker"

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


def _jobs(tmp_path: Path, sizes: dict[str, int]) -> list[dict]:
    return [{"object_id": oid, "mesh": "x.obj", "links": [], "cameras": [{}], "preset": {},
             "states": [{"state_id": f"{oid}_{k}", "out_dir": str(tmp_path / f"{oid}_{k}" / "render")} for k in range(n)]}
            for oid, n in sizes.items()]


def _run(pool: Pool, jobs: list[dict], attempts: int = 2) -> dict[str, StateResult]:
    return {r.state_id: r for r in Scheduler(pool, attempts, progress=False).run(jobs)}


def test_members_keep_to_one_object_longest_first_then_help(tmp_path):
    pool = ScriptedPool(lambda task, member: "rendered")
    results = _run(pool, _jobs(tmp_path, {"a": 1, "b": 4, "c": 2}))
    assert all(r.status == "rendered" for r in results.values()) and len(results) == 7
    first = pool.submitted[:4]  # member 0: the longest object (b); member 1: the next fresh one (c)
    assert first == [(0, "b_0", 1), (0, "b_1", 1), (1, "c_0", 1), (1, "c_1", 1)], pool.submitted
    by_member = {m: [s for n, s, _ in pool.submitted if n == m] for m in (0, 1)}
    assert by_member[0][:4] == ["b_0", "b_1", "b_2", "b_3"]  # kept on b while it had states
    assert "a_0" in by_member[1]  # c done: a fresh object before helping with b


def test_complete_states_are_skipped_without_opening_the_pool(tmp_path, monkeypatch):
    import partdrag4d.scheduler as scheduler

    jobs = _jobs(tmp_path, {"a": 2, "b": 1})
    monkeypatch.setattr(scheduler, "is_render_complete", lambda out_dir, views: "/a_" in str(out_dir))
    pool = ScriptedPool(lambda task, member: "rendered")
    assert {s: r.status for s, r in _run(pool, jobs).items()} == {"a_0": "skipped", "a_1": "skipped", "b_0": "rendered"}
    assert [s for _, s, _ in pool.submitted] == ["b_0"]
    monkeypatch.setattr(scheduler, "is_render_complete", lambda out_dir, views: True)
    idle = ScriptedPool(lambda task, member: pytest.fail("nothing to render"))
    assert {r.status for r in _run(idle, jobs).values()} == {"skipped"} and not hasattr(idle, "jobs")


def test_failing_state_is_tried_max_attempts_and_the_rest_complete(tmp_path):
    pool = ScriptedPool(lambda task, member: "Blender says no" if pool.state_id(task) == "a_1" else "rendered")
    results = _run(pool, _jobs(tmp_path, {"a": 3, "b": 1}))
    assert results["a_1"].status == "failed" and results["a_1"].error == "failed 2 times; last: Blender says no"
    assert [a for _, s, a in pool.submitted if s == "a_1"] == [1, 2]
    assert sorted(s for s, r in results.items() if r.status == "rendered") == ["a_0", "a_2", "b_0"]
    once = _run(ScriptedPool(lambda task, member: "Blender says no"), _jobs(tmp_path, {"a": 1}), attempts=1)
    assert once["a_0"].error == "Blender says no"  # one attempt: the reason as it is


def test_lost_member_requeues_without_using_an_attempt(tmp_path):
    lost = {"b_0": 2, "a_0": MAX_LOSSES + 1}

    def script(task, member):
        sid = pool.state_id(task)
        if lost.get(sid, 0) > 0:
            lost[sid] -= 1
            return "lost"
        return "rendered"

    pool = ScriptedPool(script)
    results = _run(pool, _jobs(tmp_path, {"a": 1, "b": 2}), attempts=1)
    assert results["b_0"].status == "rendered" and [a for _, s, a in pool.submitted if s == "b_0"] == [1, 1, 1]
    assert results["a_0"].status == "failed"
    assert results["a_0"].error == f"its test worker was lost {MAX_LOSSES + 1} times; last: the node died"
    assert pool.closed and not pool.stopped


def test_state_committed_by_a_lost_member_counts_as_rendered(tmp_path):
    """A member lost after its state's rename but before it reported: the retry finds the
    state complete (the worker says skipped), yet this run rendered it."""
    tries: dict[str, int] = {}

    def script(task, member):
        sid = pool.state_id(task)
        tries[sid] = tries.get(sid, 0) + 1
        if sid == "a_1":
            return "lost" if tries[sid] == 1 else "skipped"
        return "rendered"

    pool = ScriptedPool(script)
    results = _run(pool, _jobs(tmp_path, {"a": 3}))
    assert {s: r.status for s, r in results.items()} == {"a_0": "rendered", "a_1": "rendered", "a_2": "rendered"}
    assert tries["a_1"] == 2


def test_a_full_disk_stops_the_run_with_one_disk_full(tmp_path):
    pool = ScriptedPool(lambda task, member: ENOSPC if pool.state_id(task) == "b_1" else "rendered", members=1)
    jobs = _jobs(tmp_path, {"a": 3, "b": 4})
    with pytest.raises(DiskFull) as err:
        _run(pool, jobs)
    message = str(err.value)
    assert "\n" not in message and "no space left on the device" in message and "b_1" in message
    assert "free space and rerun" in message
    submitted = [s for _, s, _ in pool.submitted]
    assert submitted.count("b_1") == 1  # not retried
    assert len(submitted) <= submitted.index("b_1") + IN_FLIGHT + 1  # nothing handed out after it but what was in flight
    assert pool.closed and not pool.stopped  # in-flight states finished (no staging left), then an orderly close


@pytest.mark.parametrize("error,full", [
    (ENOSPC, True), ("write failed: No space left on device", True), ("ENOSPC while writing views.npz", True),
    ("OSError: [Errno 122] Disk quota exceeded", True), ("EDQUOT", True), ("mesh not found", False), (None, False),
    ("errno 280 something", False),
])
def test_disk_full_is_told_from_the_error_text(error, full):
    from partdrag4d.scheduler import is_disk_full

    assert is_disk_full(error) is full


def test_interrupt_stops_the_pool(tmp_path):
    def script(task, member):
        raise KeyboardInterrupt

    pool = ScriptedPool(script)
    with pytest.raises(KeyboardInterrupt):
        _run(pool, _jobs(tmp_path, {"a": 2}))
    assert pool.stopped and not pool.closed


class FakeWorker:
    """Stands in for a Blender worker process: answers each one-state job line at once with a
    ``state`` and a ``job`` event; state ``die*`` kills it, state ``bug*`` makes send() raise."""

    started: list["FakeWorker"] = []

    def __init__(self, threads, log_dir, index, verbose=False, device="cpu"):
        import queue

        self.events: queue.Queue = queue.Queue()
        self.device_note = "no GPU here" if device == "gpu" else None
        self.jobs: list[str] = []
        FakeWorker.started.append(self)

    def send(self, job):
        state = job["states"][0]
        self.jobs.append(state["state_id"])
        if state["state_id"].startswith("bug"):
            raise ValueError("a bug in the pool")
        if state["state_id"].startswith("die"):
            self.events.put(None)
            return
        self.events.put({"event": "state", "object_id": job["object_id"], "state_id": state["state_id"],
                         "out_dir": state["out_dir"], "status": "rendered", "seconds": 0.5, "error": None})
        self.events.put({"event": "job", "status": "done"})

    def read(self):
        return self.events.get()

    def death_reason(self):
        return "render worker was killed by SIGKILL"

    def close(self, timeout=60.0):
        pass

    def kill(self):
        pass


def _local_jobs(tmp_path: Path, sizes: dict[str, int], renamed: dict[str, str]) -> list[dict]:
    from partdrag4d.presets import get_preset

    jobs = _jobs(tmp_path, sizes)
    for job in jobs:
        job["preset"] = get_preset("draft").to_dict()
        for state in job["states"]:
            state["state_id"] = renamed.get(state["state_id"], state["state_id"])
    return jobs


def test_local_pool_sends_one_state_jobs_and_replaces_a_dead_worker(tmp_path, monkeypatch, capsys):
    import partdrag4d.render as render

    monkeypatch.setattr(render, "BlenderWorker", FakeWorker)
    FakeWorker.started = []
    jobs = _local_jobs(tmp_path, {"a": 3, "b": 1}, {"a_1": "die_a1"})
    results = render.render_states(jobs, workers=1, progress=False, log_dir=tmp_path / "logs", device="gpu")
    assert [r.state_id for r in results] == ["a_0", "die_a1", "a_2", "b_0"]  # job order
    by_id = {r.state_id: r for r in results}
    assert by_id["a_0"].status == by_id["b_0"].status == "rendered" and by_id["a_0"].seconds == 0.5
    assert by_id["die_a1"].status == "failed" and by_id["die_a1"].error == "render worker was killed by SIGKILL"
    # a_2 was sent to the dying worker, or to its replacement (one attempt per state locally)
    assert by_id["a_2"].status == "rendered" or by_id["a_2"].error == "render worker was killed by SIGKILL"
    assert len(FakeWorker.started) == 2  # the dead worker was replaced
    assert FakeWorker.started[0].jobs[:2] == ["a_0", "die_a1"]  # longest object first, one state per job line
    assert capsys.readouterr().err.count("render device: no GPU here") == 1  # once, however many workers said it


def test_local_pool_fails_what_a_broken_member_holds_instead_of_waiting(tmp_path, monkeypatch):
    import partdrag4d.render as render

    monkeypatch.setattr(render, "BlenderWorker", FakeWorker)
    results = render.render_states(_local_jobs(tmp_path, {"a": 1, "b": 1}, {"a_0": "bug_a0"}), workers=2, progress=False)
    by_id = {r.state_id: r for r in results}
    assert by_id["bug_a0"].error == "render worker thread failed: ValueError: a bug in the pool"
    assert by_id["b_0"].status == "rendered"
