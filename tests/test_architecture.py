"""The package layout's rules, checked from the source with ``ast`` (``benchmarks/arch_counts.py``
prints the same figures): no import circle, the dataset toolkit never imports the model nor
the Blender-side scripts (it only names the worker's module to start it), only the contract
(``partdrag4d/store.py``) spells the dataset's file names, the Blender worker depends only on
the contract and the presets, rotations are written once, no function is longer than 80
lines, and imports sit at the top of files except where a heavy optional package must stay lazy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks import arch_counts as arch

ROOT = Path(__file__).resolve().parents[1]

LAZY = {"bpy", "mathutils", "gsplat", "segment_anything", "diffusers", "ray", "viser", "trimesh"}
"""Packages that may be imported inside a function: heavy and optional, or (trimesh) absent on
the GPU machine's model-only environment; each such import says why in a comment."""

LONG_FUNCTIONS: set[str] = set()
"""The only functions allowed over ``arch.MAX_FUNCTION_LINES`` lines, each named; an entry whose
function got shorter (or went away) fails the check too, so the list only shrinks."""


@pytest.fixture(scope="module")
def infos():
    return arch.scan()


def test_no_import_circle(infos):
    assert arch.circles(infos) == []


def test_the_dataset_toolkit_never_imports_the_model(infos):
    reach = [f"{m} -> {t}" for m, i in infos.items() if m.startswith(("partdrag4d", "blender_scripts"))
             for t in i.imports if t.startswith("partrm")]
    assert reach == []


def test_only_the_contract_spells_dataset_file_names():
    assert arch.figures()["file_names_outside_contract"] == []


def test_the_blender_worker_depends_only_on_the_contract_and_the_presets(infos):
    assert infos["blender_scripts.render_worker"].imports <= {arch.CONTRACT, "partdrag4d.presets"}


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a file that are not docstrings (of a module, class, function or
    attribute: a string standing alone as a statement): (line, text)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_toolkit_never_imports_the_blender_side(infos):
    """partdrag4d imports nothing of blender_scripts; it names the worker's module once, to start it."""
    imports = [f"{m} -> {t}" for m, i in infos.items() if m.startswith("partdrag4d") for t in i.imports
               if t.startswith("blender_scripts")]
    assert imports == []
    named = [(path.relative_to(ROOT).as_posix(), text) for path in sorted((ROOT / "partdrag4d").rglob("*.py"))
             for _, text in _strings(path) if "blender_scripts" in text]
    assert named == [("partdrag4d/blender.py", "blender_scripts.render_worker")]  # WORKER_MODULE, run with python -m


def test_no_function_is_longer_than_80_lines_but_the_listed_ones():
    long = arch.long_functions()
    assert arch.MAX_FUNCTION_LINES == 80
    assert sorted(set(long) - LONG_FUNCTIONS) == [], {name: long[name] for name in set(long) - LONG_FUNCTIONS}
    assert sorted(LONG_FUNCTIONS - set(long)) == []  # shorter now: take it off the list


def test_the_checks_find_what_they_look_for(tmp_path):
    """The scanner on a small package with each fault: a circle hidden in a function, a
    reach-around, a dataset file name spelled outside the contract, and a method of 81 lines."""
    pkg = tmp_path / "partdrag4d"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from partdrag4d import b\n")
    (pkg / "b.py").write_text('def f():\n    from . import a\n    return "states/x/state.json"\n')
    (pkg / "sub" / "c.py").write_text("from ..a import x\nimport partrm.gsdb\n")
    (tmp_path / "partrm").mkdir()
    (tmp_path / "partrm" / "__init__.py").write_text("")
    (tmp_path / "partrm" / "gsdb.py").write_text('"""gsdb.h5 in a docstring is not a spelling"""\n')
    infos = arch.scan(tmp_path, ("partdrag4d", "partrm"))
    assert arch.circles(infos) == [["partdrag4d.a", "partdrag4d.b"]]
    assert infos["partdrag4d.sub.c"].imports == {"partdrag4d.a", "partrm.gsdb"}
    assert infos["partdrag4d.b"].file_names == [(3, "state.json")] and infos["partrm.gsdb"].file_names == []
    assert [line for line, _ in infos["partdrag4d.b"].inner_imports] == [2]
    (pkg / "long.py").write_text("class K:\n    def m(self):\n" + "        x = 1\n" * 80 + "\n\ndef ok():\n" + "    x = 1\n" * 79)
    assert arch.long_functions(tmp_path, ("partdrag4d",)) == {"partdrag4d/long.py:K.m": 81}  # ok() has 80: allowed


def test_each_rotation_and_obj_helper_is_written_once():
    """The rigid-motion maths lives in partdrag4d/rigid.py and OBJ I/O in partdrag4d/meshio.py;
    no other module defines a function of these names (or the old duplicates' names)."""
    home = {"rotation_matrix": "partdrag4d/rigid.py", "quat_to_rotmat": "partdrag4d/rigid.py",
            "quat_multiply": "partdrag4d/rigid.py", "joint_motion": "partdrag4d/rigid.py", "axis_angle": "partdrag4d/rigid.py",
            "rigid_inverse": "partdrag4d/rigid.py", "read_obj_groups": "partdrag4d/meshio.py",
            "write_plain_obj": "partdrag4d/meshio.py", "write_obj": "partdrag4d/meshio.py",
            "quat_to_matrix": None, "_quat_mul": None, "_rotation": None, "write_obj_mesh": None, "_scaled_K": None}
    found: dict[str, list[str]] = {}
    for pkg in arch.PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.name in home:
                    found.setdefault(node.name, []).append(path.relative_to(ROOT).as_posix())
    assert {name: paths for name, paths in found.items() if paths != [home[name]]} == {}


def test_imports_inside_functions_are_only_lazy_optional_packages(infos):
    inner = []
    for m, info in infos.items():
        rel = info.path.relative_to(ROOT).as_posix()
        lines = info.path.read_text(encoding="utf-8").splitlines()
        for line, module in info.inner_imports:
            if module.split(".")[0] not in LAZY:
                inner.append(f"{rel}:{line}: {module}")
            elif "#" not in lines[line - 1] and "#" not in lines[line - 2]:
                inner.append(f"{rel}:{line}: {module} (lazy without a comment saying why)")
    assert inner == []


def test_test_folders_mirror_the_packages():
    """tests/partdrag4d/..., tests/partrm/..., tests/benchmarks/: each test folder is a folder of the code."""
    tests = ROOT / "tests"
    folders = sorted({p.parent.relative_to(tests) for p in tests.rglob("test_*.py")} - {Path(".")})
    assert folders and all((ROOT / f).is_dir() for f in folders), folders
