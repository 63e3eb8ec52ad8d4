"""Shared fixtures. Tests that need the real PartNet-Mobility object read its folder from
``PARTNET_MOBILITY_FIXTURES`` (``.ci/run`` sets it) and skip only when it is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_40147() -> Path:
    root = os.environ.get("PARTNET_MOBILITY_FIXTURES")
    if not root:
        pytest.skip("PARTNET_MOBILITY_FIXTURES is not set")
    path = Path(root) / "40147"
    assert path.is_dir(), f"PARTNET_MOBILITY_FIXTURES is set but {path} does not exist"
    return path


@pytest.fixture(scope="session")
def synth_objects(tmp_path_factory) -> dict[str, Path]:
    """One synthetic object per category (seed 0), generated once per session."""
    from partdrag4d.assets.synth import GENERATORS, generate

    out = tmp_path_factory.mktemp("synth")
    return {c: generate(c, 0, 0, out) for c in GENERATORS}
