"""Procedural articulated objects in the PartNet-Mobility folder format (the embedded default).

One module per category. Object ``i`` of a category is built from
``default_rng([seed, category index, i])``, so any object can be regenerated alone and
the same seed always writes identical files. Its split (``meta.json`` ``split``) comes
from ``partdrag4d.categories.split_of_synthetic``: 1 in 4 objects of each seen category is
held out for testing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partdrag4d.assets.synth import dishwasher, laptop, microwave, oven, refrigerator, storage_furniture, trashcan, washing_machine
from partdrag4d.categories import category_names, split_of_synthetic

GENERATORS = {
    "dishwasher": dishwasher.build,
    "laptop": laptop.build,
    "microwave": microwave.build,
    "oven": oven.build,
    "refrigerator": refrigerator.build,
    "storage-furniture": storage_furniture.build,
    "washing-machine": washing_machine.build,
    "trashcan": trashcan.build,
}


def object_id(category: str, seed: int, index: int) -> str:
    return f"syn-{category}-{seed}-{index:03d}"


def generate(category: str, index: int, seed: int, out: Path) -> Path:
    """Write synthetic object ``index`` of ``category`` under ``out``; returns its folder."""
    if category not in GENERATORS:
        raise KeyError(f"unknown category {category!r}; expected one of {', '.join(GENERATORS)}")
    rng = np.random.default_rng([seed, category_names().index(category), index])
    builder = GENERATORS[category](rng)
    oid = object_id(category, seed, index)
    return builder.write(Path(out) / oid, oid, seed, meta={"index": index, "split": split_of_synthetic(category, seed, index)})
