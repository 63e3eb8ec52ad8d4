"""Where the dataset steps run: in this process (``local``, the default) or on a Ray cluster (``ray``).

With ``--executor ray`` each object is articulated by a Ray task, each state is rendered
by a call to a Ray actor (``partdrag4d.render_ray``, scheduled by ``partdrag4d.scheduler``),
and each sequence's drags are sampled by a Ray task. The driver (the process running the
command) schedules and collects; the files are written by whichever node does the work, so the dataset folder must be on a path
every node sees under the same absolute name (NFS, Lustre, a cluster file system). Every
file is still staged under a temporary name and renamed, so a retried task is harmless,
and the outputs are the same bytes as a local run's.

This module is the generic part (a Ray session, an ordered map over Ray tasks with one
progress bar, per-node counts); it does not load the Blender adapter.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from partdrag4d.errors import ClusterError

EXECUTORS = ("local", "ray")


def available_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ValueError(f"--executor takes {' or '.join(EXECUTORS)}; got {name!r}")
    return name


def node_label() -> str:
    """This node as the per-node counts name it: host name, IP address and the first 8 hex
    digits of Ray's node id (several raylets can share one host and address)."""
    try:
        import ray  # lazy here and below: ray starts nothing on import, but it is 0.5 s and only --executor ray needs it

        where = f"{ray.util.get_node_ip_address()}, node {ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # noqa: BLE001 - outside Ray
        where = "local"
    return f"{socket.gethostname()} ({where})"


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Ray, connected: the session already open in this process, or a new one.

    ``address`` None starts a single-machine Ray on this host's cores; ``auto`` joins the
    cluster this machine belongs to (``ray start``); ``HOST:PORT`` joins the cluster whose
    head listens there. A session opened here is closed on exit.
    """
    try:
        import ray  # lazy: see node_label
    except ImportError:  # pragma: no cover - ray is a dependency
        raise ClusterError("--executor ray needs the ray package (pip install ray; make setup installs it)") from None
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = available_cores()
    try:
        with worker_niceness():
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "on this machine"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (start one with `ray start --head`, or drop --ray-address for a single-machine run)" if address else ""
        raise ClusterError(f"cannot start or reach a Ray cluster {where}: {first}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def worker_niceness() -> Iterator[None]:
    """Ray starts its workers at nice 15; a machine Ray is started on here shares its cores
    with whatever else runs, and renders at nice 15 lose to every other process (measured
    3-7x slower per view on a busy 2-core machine). Start them at the driver's priority
    unless ``RAY_worker_niceness`` says otherwise (cluster nodes: set it for ``ray start``)."""
    key = "RAY_worker_niceness"
    if key in os.environ:
        yield
        return
    os.environ[key] = "0"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def print_nodes(counts: Counter, what: str, unit: str) -> None:
    for node, n in sorted(counts.items()):
        print(f"{what} per node: {node}: {n} {unit}{'s' if n != 1 else ''}", file=sys.stderr)


# ------------------------------------------------------------------ tasks in order


def _run_on_node(fn: Callable, args: tuple) -> tuple[str, Any]:
    return node_label(), fn(*args)


def map_ordered(fn: Callable, arg_tuples: Sequence[tuple], desc: str, unit: str, progress: bool = True,
                address: str | None = None, num_cpus: float = 1, max_in_flight: int | None = None) -> Iterator[Any]:
    """``fn(*args)`` for every tuple as Ray tasks; results yielded in input order.

    One progress bar counts finished tasks across the cluster; a per-node count is
    printed at the end. At most ``max_in_flight`` tasks (default: twice the cluster's
    CPUs) are submitted or waiting to be yielded at once, which bounds the driver's
    memory. A task whose worker process dies is retried by Ray (twice); an exception
    raised by ``fn`` is raised here.
    """
    items = list(arg_tuples)
    if not items:
        return
    with ray_session(address) as ray:
        remote = ray.remote(num_cpus=num_cpus, max_retries=2)(_run_on_node)
        limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
        refs: dict[int, Any] = {}
        done: dict[int, Any] = {}
        counts: Counter = Counter()
        submitted = 0
        try:
            for k in range(len(items)):
                while submitted < len(items) and submitted - k < limit:
                    refs[submitted] = remote.remote(fn, items[submitted])
                    submitted += 1
                while k not in done:
                    waiting = {ref: i for i, ref in refs.items()}
                    ready, _ = ray.wait(list(waiting), num_returns=1, timeout=1.0)
                    for ref in ready:
                        i = waiting[ref]
                        node, result = ray.get(ref)
                        del refs[i]
                        done[i] = result
                        counts[node] += 1
                        bar.update(1)
                yield done.pop(k)
        except BaseException:
            for ref in refs.values():
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        if progress:
            print_nodes(counts, desc, unit)


def node_counts(results: Iterable) -> dict[str, int]:
    """States rendered per node (Ray results carry their node; local ones have none)."""
    counts = Counter(r.node for r in results if getattr(r, "node", None) and r.status == "rendered")
    return dict(sorted(counts.items()))


__all__ = ["EXECUTORS", "available_cores", "check_executor", "map_ordered", "node_counts", "node_label", "ray_session"]
