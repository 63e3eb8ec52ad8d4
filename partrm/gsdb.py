"""The Gaussian database: the teacher's splatter images of every state (stage-1 targets).

``gsdb.h5`` holds ``/states/<state_id>`` = [V, 14, S, S] float16, unpruned, in exactly
the layout the model outputs (view, channel, row, col), so stage 1 compares pixel i of
the prediction with pixel i of the target. Attributes record the teacher, its config,
the input views and versions.

This module only reads it; ``partrm.gsdb_build`` (a teacher's predictions) and
``partrm.gsdb_render`` (geometric, from the renders) write it.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from partdrag4d import store
from partdrag4d.errors import DamagedFile

GSDB_FILE = store.GSDB_FILE
SCHEMA_VERSION = 1


class GaussianDatabase:
    """Read access to a ``gsdb.h5``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Gaussian database not found: {self.path} (build it with `partrm gsdb build`, or pass --gsdb PATH)")
        with store.reading(self.path):  # damaged: one line naming it
            self.file = h5py.File(self.path, "r")
            self.attrs = dict(self.file.attrs)
            if "states" not in self.file:
                raise DamagedFile(f"{self.path}: not a Gaussian database (no 'states' group)")

    def __contains__(self, state_id: str) -> bool:
        return state_id in self.file["states"]

    def states(self) -> list[str]:
        return sorted(self.file["states"].keys())

    def splatter(self, state_id: str) -> np.ndarray:
        """[V, 14, S, S] float32."""
        if state_id not in self.file["states"]:
            raise KeyError(f"state {state_id!r} is not in the Gaussian database {self.path}")
        with store.reading(self.path):
            return self.file["states"][state_id][...].astype(np.float32)

    def close(self) -> None:
        self.file.close()
