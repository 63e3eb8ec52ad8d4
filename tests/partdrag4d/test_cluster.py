"""Rendering on a multi-node Ray cluster that loses a node mid-render.

``ray.cluster_utils.Cluster`` starts a head (no CPUs: it only schedules) and two worker
nodes of one CPU each, all on this machine, so each node holds one render actor. Three
procedural objects (18 states, 32 x 32 draft) are rendered locally first; then the same
states are rendered on the cluster and one worker node is removed while both actors are
busy. The run must complete on the remaining node, count states per node with the nodes
told apart, and write the same bytes as the local run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.blender

SIZE = 32
CATEGORIES = ("laptop", "microwave", "oven")


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level=logging.ERROR)
    yield c, workers
    ray.shutdown()
    c.shutdown()
    if saved is None:
        os.environ.pop("RAY_worker_niceness", None)
    else:
        os.environ["RAY_worker_niceness"] = saved


def _same_files(a: Path, b: Path) -> int:
    """Every file under ``a`` equals the one under ``b`` byte for byte, and no file is extra."""
    files = {str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()}
    assert [f for f in sorted(files) if (a / f).read_bytes() != (b / f).read_bytes()] == []
    return len(files)


def _local_reference(root: Path) -> Path:
    from typer.testing import CliRunner

    from partdrag4d.cli import app

    args = ["make-dataset", "--out", str(root / "data"), "--resolution", str(SIZE), "--quality", "draft",
            "--threads", "1", "--seed", "0"]
    for c in CATEGORIES:
        args += ["--category", c]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    (root / "data").rename(root / "local")
    data = root / "data"
    shutil.copytree(root / "local", data)
    for render in data.glob("states/*/render"):
        shutil.rmtree(render)
    return data


def test_lost_node_mid_render_completes_with_the_same_bytes(cluster, tmp_path, capfd):
    import ray

    from partdrag4d.pipeline import render_dataset

    c, (w1, w2) = cluster
    data = _local_reference(tmp_path)
    # every node names itself apart from the others, although all share this host and address
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from partdrag4d.executor import node_label

    name = ray.remote(num_cpus=0)(node_label)
    named = {w.node_id: ray.get(name.options(scheduling_strategy=NodeAffinitySchedulingStrategy(w.node_id, soft=False)).remote())
             for w in (w1, w2)}
    assert all(re.fullmatch(rf".+ \(.+, node {node_id[:8]}\)", label) for node_id, label in named.items()), named
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("summary", render_dataset(
        data, quality="draft", resolution=SIZE, progress=True, executor="ray", threads=1)))
    thread.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and thread.is_alive() and len(list(data.glob("states/*/render"))) < 4:
        time.sleep(0.02)
    done_before = len(list(data.glob("states/*/render")))
    assert 4 <= done_before < 16, f"the run ended before a node could be removed ({done_before} states)"
    c.remove_node(w2)  # its raylet, its render actor and that actor's Blender worker die
    thread.join(timeout=300)
    assert not thread.is_alive(), "the render hung after losing a node"
    summary = box["summary"]
    assert summary["failed"] == 0 and summary["rendered"] == 18, summary
    counts = summary["nodes"]  # states rendered per node: the survivor's, and the lost node's if it finished any
    assert sum(counts.values()) == 18 and set(counts) <= set(named.values()), (counts, named)
    assert counts[named[w1.node_id]] >= 9  # the surviving node finished the lost node's share
    err = capfd.readouterr().err
    for label, n in counts.items():
        assert f"render per node: {label}: {n} state" in err
    assert _same_files(tmp_path / "local" / "states", data / "states") > 18 * 12
    assert not list(data.glob("states/*/.render.*"))  # the lost node's staging folders are gone
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2  # head and the surviving worker
