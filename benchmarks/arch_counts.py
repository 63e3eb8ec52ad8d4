"""Architecture figures of the packages, from their source alone (``ast``, nothing imported):

    python benchmarks/arch_counts.py [--json]

- import circles: strongly connected components of the module import graph (imports inside
  functions included, since they still tie the modules together);
- ``partdrag4d`` / ``blender_scripts`` -> ``partrm`` imports (the dataset must not depend on
  the model);
- imports inside functions (the file header does not show them);
- the largest file (lines), and the functions longer than ``MAX_FUNCTION_LINES``;
- dataset file names spelled outside the contract module (``partdrag4d/store.py``).

``tests/test_architecture.py`` asserts the same figures.
"""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("partdrag4d", "partrm", "blender_scripts")
CONTRACT = "partdrag4d.store"
"""The one module allowed to spell the dataset's file names."""

DATASET_FILE_NAMES = frozenset({
    "manifest.jsonl", "cameras.json", "object.json", "rest.obj", "points.npz", "state.json",
    "mesh.obj", "mesh.mtl", "points.npy", "moving.npy", "views.npz", "render.json", "drags.h5", "gsdb.h5",
    "runs.jsonl",
})
"""The files of a dataset folder (``SCHEMA.md``), as a reader or writer would spell them."""

MAX_FUNCTION_LINES = 80
"""Longest a function may be (``def`` line to its last line, nested functions included)."""

HOMONYMS = {("partrm.train", "state.json"): "a training checkpoint's step record in runs written before it was named "
                                           "trainer_state.json (read on resume), not a dataset file"}
"""(module, name) pairs that spell a dataset file's name for another file."""


@dataclass
class ModuleInfo:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # project modules imported (anywhere)
    top_imports: set[str] = field(default_factory=set)  # ... at module level
    inner_imports: list[tuple[int, str]] = field(default_factory=list)  # (line, module) inside a def
    file_names: list[tuple[int, str]] = field(default_factory=list)  # (line, dataset file name)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _spelled_names(text: str) -> set[str]:
    return {n for n in DATASET_FILE_NAMES if n == text or text.endswith("/" + n)}


def scan(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, ModuleInfo]:
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    mods = {module_name(p, root): p for p in files}
    infos: dict[str, ModuleInfo] = {}
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        info = ModuleInfo(name, path, text.count("\n") + (0 if text.endswith("\n") else 1))
        is_pkg = path.name == "__init__.py"
        docstrings = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    docstrings.add(id(body[0].value))
            if isinstance(node, ast.Assign | ast.AnnAssign):  # attribute docstrings follow an assignment
                pass

        def visit(node: ast.AST, in_def: bool) -> None:
            for child in ast.iter_child_nodes(node):
                child_in_def = in_def or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = _resolve(child, name, is_pkg)
                    # "from pkg import module" imports the submodule (the package's own names count as the package)
                    subs = [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in mods]
                    targets = ([base] if len(subs) < len(child.names) else []) + subs
                if targets:
                    if in_def:
                        info.inner_imports.append((child.lineno, targets[0] if isinstance(child, ast.Import) else base))
                    for t in targets:
                        target = _project_module(t, mods)
                        if target and target != name:
                            info.imports.add(target)
                            if not in_def:
                                info.top_imports.add(target)
                if isinstance(child, ast.Constant) and isinstance(child.value, str) and id(child) not in docstrings:
                    for spelled in _spelled_names(child.value):
                        info.file_names.append((child.lineno, spelled))
                visit(child, child_in_def)

        visit(tree, False)
        infos[name] = info
    return infos


def long_functions(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES,
                   limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``path:Class.function`` -> lines, for every function longer than ``limit`` lines."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, rel: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef) and child.end_lineno - child.lineno + 1 > limit:
                    found[f"{rel}:{name}"] = child.end_lineno - child.lineno + 1
                visit(child, rel, name + ".")
            else:
                visit(child, rel, prefix)

    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), path.relative_to(root).as_posix(), "")
    return found


def _project_module(target: str, mods: dict[str, Path]) -> str | None:
    """The project module ``target`` names (the longest prefix that is one), or None."""
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def circles(infos: dict[str, ModuleInfo]) -> list[list[str]]:
    """Import circles between modules: strongly connected components with more than one
    module (Tarjan). A package's ``__init__`` importing its own submodules is not a circle
    when the submodule only imports sibling modules, so edges to a parent package that the
    module lives in are left out."""
    graph = {m: {t for t in i.imports if not m.startswith(t + ".")} for m, i in infos.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def figures(root: Path = ROOT) -> dict:
    infos = scan(root)
    largest = max(infos.values(), key=lambda i: i.lines)
    reach = sorted(
        f"{m} -> {t}" for m, i in infos.items() if not m.startswith("partrm") for t in i.imports if t.startswith("partrm")
    )
    spelled = sorted(
        f"{i.path.relative_to(root)}:{line}: {n}" for m, i in infos.items() if m != CONTRACT for line, n in i.file_names
        if (m, n) not in HOMONYMS
    )
    return {
        "modules": len(infos),
        "circles": [" <-> ".join(c) for c in circles(infos)],
        "partdrag4d_to_partrm": reach,
        "imports_inside_functions": sum(len(i.inner_imports) for i in infos.values()),
        "largest_file": f"{largest.path.relative_to(root)} ({largest.lines} lines)",
        "functions_over_limit": [f"{name} ({n} lines)" for name, n in
                                 sorted(long_functions(root).items(), key=lambda item: -item[1])],
        "file_names_outside_contract": spelled,
    }


def main() -> None:
    f = figures()
    if "--json" in sys.argv:
        print(json.dumps(f, indent=1))
        return
    print(f"modules: {f['modules']}")
    print(f"import circles: {len(f['circles'])}")
    for c in f["circles"]:
        print(f"  {c}")
    print(f"partdrag4d/blender_scripts -> partrm imports: {len(f['partdrag4d_to_partrm'])}")
    for r in f["partdrag4d_to_partrm"]:
        print(f"  {r}")
    print(f"imports inside functions: {f['imports_inside_functions']}")
    print(f"largest file: {f['largest_file']}")
    print(f"functions over {MAX_FUNCTION_LINES} lines: {len(f['functions_over_limit'])}")
    for s in f["functions_over_limit"]:
        print(f"  {s}")
    print(f"dataset file names spelled outside {CONTRACT}: {len(f['file_names_outside_contract'])}")
    for s in f["file_names_outside_contract"]:
        print(f"  {s}")


if __name__ == "__main__":
    main()
