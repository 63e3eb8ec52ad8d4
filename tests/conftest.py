"""Shared fixtures. Tests that need the real PartNet-Mobility object read its folder from
``PARTNET_MOBILITY_FIXTURES`` (``.ci/run`` sets it) and skip only when it is unset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

RENDER_SIZE = 128


@pytest.fixture(scope="session")
def fixture_40147() -> Path:
    root = os.environ.get("PARTNET_MOBILITY_FIXTURES")
    if not root:
        pytest.skip("PARTNET_MOBILITY_FIXTURES is not set")
    path = Path(root) / "40147"
    assert path.is_dir(), f"PARTNET_MOBILITY_FIXTURES is set but {path} does not exist"
    return path


@pytest.fixture(scope="session")
def partnet_fixtures() -> Path:
    """The folder of every real PartNet-Mobility fixture object (40147, 7310, 10797)."""
    root = os.environ.get("PARTNET_MOBILITY_FIXTURES")
    if not root:
        pytest.skip("PARTNET_MOBILITY_FIXTURES is not set")
    path = Path(root)
    assert path.is_dir(), f"PARTNET_MOBILITY_FIXTURES is set but {path} does not exist"
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small renders and models: one thread is faster, and 2-thread OpenMP barriers stall
    on a shared, loaded CPU. Restores the thread count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_objects(tmp_path_factory) -> dict[str, Path]:
    """One synthetic object per category (seed 0), generated once per session."""
    from partdrag4d.assets.synth import GENERATORS, generate

    out = tmp_path_factory.mktemp("synth")
    return {c: generate(c, 0, 0, out) for c in GENERATORS}


def build_drawer_under_awning(out: Path) -> Path:
    from partdrag4d.assets.synth.builder import ObjectBuilder
    from partdrag4d.assets.synth.primitives import Look, box, shell

    b = ObjectBuilder("storage-furniture", "StorageFurniture", np.random.default_rng(0))
    W, H, D, t = 0.6, 0.5, 0.5, 0.02
    x0, x1, y0, y1, z0, z1 = -W / 2, W / 2, -H / 2, H / 2, -D / 2, D / 2
    wood = Look((0.7, 0.55, 0.4), "wood", 0.1, 20)
    b.add(b.body, "frame", shell((x0, y0, z0), (x1, y1, z1), t, "front"), wood)
    b.add(b.body, "awning", box((x0, y1, z1 - 0.05), (x1, y1 + 0.02, z1 + 0.3)), Look((0.2, 0.3, 0.6), None, 0.2, 40))
    drawer = b.add_link("drawer", "prismatic", (0, 0, 0), (0, 0, 1), 0.0, 0.3)
    b.add(drawer, "drawer_front", box((x0 + t, y0 + t, z1 - 0.03), (x1 - t, y1 - t, z1)), Look((0.8, 0.2, 0.2), None, 0.2, 40))
    b.add(drawer, "drawer_box", shell((x0 + 0.03, y0 + 0.03, z0 + 0.05), (x1 - 0.03, y1 - 0.05, z1 - 0.03), 0.01, "top"), Look((0.9, 0.85, 0.7), None, 0.1, 20))
    return b.write(out / "awning-drawer", "awning-drawer", 0)


@pytest.fixture(scope="session")
def rendered_dataset(tmp_path_factory) -> Path:
    """Two objects articulated, rendered (Blender, draft, 128 px) and dragged, once per session:
    a cabinet whose drawer slides out under an awning (a fixed plate of the body above it
    that hides part of the drawer from the elevated cameras) and a procedural laptop."""
    from partdrag4d.articulate import articulate_folder
    from partdrag4d.assets.synth import generate
    from partdrag4d.dragfile import build_drag_file
    from partdrag4d.pipeline import render_dataset

    src = tmp_path_factory.mktemp("src")
    build_drawer_under_awning(src)
    generate("laptop", 0, 0, src)
    root = tmp_path_factory.mktemp("data")
    summary = articulate_folder(src, root, num_points=8192, progress=False)
    assert summary.objects_ok == 2
    rendered = render_dataset(root, quality="draft", resolution=RENDER_SIZE, progress=False)
    assert rendered["failed"] == 0 and rendered["rendered"] == 12
    build_drag_file(root, seed=0, progress=False)
    return root


