"""The 8 PartDrag-4D categories, PartNet-Mobility ``model_cat`` mapping and split rules.

The data lives in ``manifests/`` (categories.json, partdrag4d_objects.csv); this module
is the only reader of those files.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "manifests"


@dataclass(frozen=True)
class Category:
    name: str
    model_cats: tuple[str, ...]
    seen: bool  # used in training; unseen categories are evaluation-only


@lru_cache(maxsize=None)
def categories() -> tuple[Category, ...]:
    path = MANIFEST_DIR / "categories.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install the project from its source tree (pip install -e .)")
    data = json.loads(path.read_text())
    return tuple(Category(c["name"], tuple(c["model_cat"]), bool(c["seen"])) for c in data["categories"])


def category_names() -> list[str]:
    return [c.name for c in categories()]


def get(name: str) -> Category:
    for c in categories():
        if c.name == name:
            return c
    raise KeyError(f"unknown category {name!r}; expected one of {', '.join(category_names())}")


def from_model_cat(model_cat: str) -> str | None:
    """Our category for a PartNet-Mobility ``model_cat`` (case and separator insensitive), or None."""
    key = model_cat.replace("_", "").replace("-", "").replace(" ", "").lower()
    for c in categories():
        if key in {m.lower() for m in c.model_cats} or key == c.name.replace("-", ""):
            return c.name
    return None


def split_of_category(name: str) -> str:
    """``train`` for seen categories, ``test`` for unseen ones (trashcan)."""
    return "train" if get(name).seen else "test"


@dataclass(frozen=True)
class ObjectEntry:
    category: str
    object_id: str
    official_split: str
    split: str


@lru_cache(maxsize=None)
def real_objects() -> tuple[ObjectEntry, ...]:
    """The real PartDrag-4D object ids with their splits (see manifests/README.md)."""
    with open(MANIFEST_DIR / "partdrag4d_objects.csv", newline="") as f:
        return tuple(ObjectEntry(r["category"], r["partnet_mobility_id"], r["official_split"], r["split"]) for r in csv.DictReader(f))


SYNTH_TEST_BLOCK = 4
"""Synthetic objects of a seen category: one in every block of this many indices is ``test``."""
SPLITS = ("train", "test")


def split_of_synthetic(category: str, seed: int, index: int) -> str:
    """Split of procedural object ``index`` of ``category`` (``partdrag4d synth``).

    Unseen categories (trashcan) are ``test``. Seen categories are split per object,
    deterministically from the seed and the index alone (never from how many objects a
    run makes, so adding objects never moves one between splits): indices come in blocks
    of ``SYNTH_TEST_BLOCK``; in the first block object 1 is ``test`` (so any run with at
    least 2 objects per category holds out one of each seen category, and object 0, the
    single object of ``make dataset``, trains); in block ``b >= 1`` the test object is
    ``4b + default_rng([seed, category index, b, 1]).integers(4)``.
    """
    if not get(category).seen:
        return "test"
    if index < 0:
        raise ValueError(f"object index must be >= 0, got {index}")
    block, offset = divmod(index, SYNTH_TEST_BLOCK)
    if block == 0:
        chosen = 1
    else:
        chosen = int(np.random.default_rng([seed, category_names().index(category), block, 1]).integers(SYNTH_TEST_BLOCK))
    return "test" if offset == chosen else "train"


def split_of_object(object_id: str, category: str, recorded: str | None = None) -> str:
    """The split of an object: the manifest split of a real PartDrag-4D id; else the split
    ``recorded`` in the object's folder (``meta.json`` of a procedural object, see
    ``split_of_synthetic``); else the category rule. An unseen category is always ``test``."""
    for entry in real_objects():
        if entry.object_id == object_id:
            return entry.split
    if not get(category).seen:
        return "test"
    if recorded is not None:
        if recorded not in SPLITS:
            raise ValueError(f"{object_id}: meta.json split {recorded!r} is not one of {', '.join(SPLITS)}")
        return recorded
    return split_of_category(category)
