"""Held-out objects: the per-object split of the embedded default and training that never sees them.

The embedded default with PER_CATEGORY=4 is generated and articulated (no rendering: the
split is decided before it); the pair-level filter is checked on a drag file that carries
the same per-sequence attributes ``partdrag4d drags`` writes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from partdrag4d import categories, store
from partdrag4d.assets.synth import generate
from partdrag4d.dragfile import DRAG_FILE, sequences

PER_CATEGORY = 4


def test_split_rule_is_per_object_and_does_not_depend_on_the_count():
    for seed in (0, 1, 7):
        for c in categories.category_names():
            splits = [categories.split_of_synthetic(c, seed, i) for i in range(40)]
            if not categories.get(c).seen:
                assert set(splits) == {"test"}
                continue
            assert splits[0] == "train" and splits[1] == "test"  # 2 objects already hold one out
            for block in range(10):  # exactly one of every 4 consecutive objects is test
                assert splits[4 * block : 4 * block + 4].count("test") == 1
    # seeded: another seed moves the held-out object within later blocks
    a = [categories.split_of_synthetic("oven", 0, i) for i in range(4, 40)]
    b = [categories.split_of_synthetic("oven", 1, i) for i in range(4, 40)]
    assert a != b
    with pytest.raises(ValueError, match="split"):
        categories.split_of_object("syn-oven-0-000", "oven", "validation")
    assert categories.split_of_object("syn-trashcan-0-000", "trashcan", "train") == "test"  # unseen stays test
    assert categories.split_of_object("41510", "storage-furniture", "train") == "test"  # real ids keep the manifest


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> Path:
    """The embedded default with PER_CATEGORY=4, articulated (no renders)."""
    from partdrag4d.articulate import articulate_folder

    tmp = tmp_path_factory.mktemp("default4")
    for c in categories.category_names():
        for i in range(PER_CATEGORY):
            generate(c, i, 0, tmp / "source")
    summary = articulate_folder(tmp / "source", tmp / "data", num_points=512, meshes=False, max_joints=1, progress=False)
    assert summary.objects_ok == PER_CATEGORY * len(categories.category_names())
    return tmp / "data"


def test_default_dataset_holds_out_objects_of_every_seen_category(default_dataset):
    records = [r for r in store.read_jsonl(default_dataset / store.MANIFEST) if r.get("status") == "ok"]
    split_of: dict[str, str] = {}
    for r in records:
        assert split_of.setdefault(r["object_id"], r["split"]) == r["split"]  # one split per object
    by_cat = defaultdict(lambda: defaultdict(set))
    for oid, split in split_of.items():
        obj = store.read_json(store.object_dir(default_dataset, oid) / "object.json")
        assert obj["split"] == split  # object.json records it too
        meta = json.loads((default_dataset.parent / "source" / oid / "meta.json").read_text())
        assert meta["split"] == split and meta["index"] == int(oid.rsplit("-", 1)[1])
        by_cat[obj["category"]][split].add(oid)
    for c in categories.category_names():
        if categories.get(c).seen:
            assert len(by_cat[c]["test"]) == 1 and len(by_cat[c]["train"]) == PER_CATEGORY - 1, c
        else:
            assert set(by_cat[c]) == {"test"} and len(by_cat[c]["test"]) == PER_CATEGORY


def _fake_drag_file(root: Path, override: dict[str, str] | None = None) -> None:
    """A drags.h5 with the per-sequence attributes ``partdrag4d drags`` writes (pairs, counts,
    split from the manifest records) and no drags: enough for the pair index."""
    override = override or {}
    with h5py.File(root / DRAG_FILE, "w") as f:
        group = f.create_group("sequences")
        for seq in sequences(root):
            g = group.create_group(seq.sequence_id)
            first = seq.records[0]
            for key in ("object_id", "category", "split", "joint", "joint_type", "config"):
                g.attrs[key] = first[key]
            g.attrs["split"] = override.get(seq.object_id, first["split"])
            g.attrs["state_ids"] = json.dumps([r["state_id"] for r in seq.records])
            n = len(seq.records)
            pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
            g.create_dataset("pairs", data=np.asarray(pairs, dtype=np.int32))
            g.create_dataset("count", data=np.ones((len(pairs), 12), dtype=np.int32))


def _tiny_partrm():
    from partrm.models.partrm import PartRM

    return PartRM()


def test_training_pairs_and_states_never_include_a_test_object(default_dataset):
    from partrm.train import build_dataset, load_config

    _fake_drag_file(default_dataset)
    test_objects = {r["object_id"] for r in store.read_jsonl(default_dataset / store.MANIFEST) if r.get("split") == "test"}
    train_objects = {r["object_id"] for r in store.read_jsonl(default_dataset / store.MANIFEST) if r.get("split") == "train"}
    cfg = load_config(data=str(default_dataset), stage="2")
    pairs = build_dataset(cfg, _tiny_partrm(), "2")
    used = {p.object_id for p in pairs.pairs}
    assert used == train_objects and not used & test_objects
    assert len(pairs) == 30 * len(train_objects)
    # the teacher's states: mark every state rendered, then only train states are read
    for r in store.read_jsonl(default_dataset / store.MANIFEST):
        if r.get("status") == "ok":
            folder = default_dataset / r["paths"]["state"] / "render"
            folder.mkdir(parents=True, exist_ok=True)
            for name in (*store.RENDER_FILES, *(store.view_png_name(v) for v in range(12))):  # names only: nothing is read
                (folder / name).write_text("{}")
    states = build_dataset(load_config(data=str(default_dataset), stage="teacher"), _tiny_partrm().lgm, "teacher")
    assert {r["object_id"] for r in states.records} == train_objects


def test_training_refuses_test_splits_and_stale_drag_files(default_dataset):
    from partrm.train import TrainConfig, build_dataset, load_config

    for split in ("test", "all"):
        with pytest.raises(ValueError, match="train split only"):
            load_config(data=str(default_dataset), split=split)
        with pytest.raises(ValueError, match="train split only"):
            TrainConfig(split=split)
    # a drag file written before the split changed lists a now-held-out object as train
    held_out = sorted(r["object_id"] for r in store.read_jsonl(default_dataset / store.MANIFEST) if r.get("split") == "test")[0]
    _fake_drag_file(default_dataset, override={held_out: "train"})
    with pytest.raises(RuntimeError, match=f"held-out \\(test\\) object {held_out}"):
        build_dataset(load_config(data=str(default_dataset), stage="2"), _tiny_partrm(), "2")
