"""The ``partdrag4d`` command line. Thin: each command parses and calls one function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from partdrag4d import categories

app = typer.Typer(help="PartDrag-4D: articulated-object datasets (synth -> articulate -> render -> drags).", no_args_is_help=True, add_completion=False)


def _categories_option(values: list[str]) -> list[str]:
    if not values or values == ["all"]:
        return categories.category_names()
    for v in values:
        categories.get(v)
    return values


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write object folders into."),
    category: list[str] = typer.Option(["all"], "--category", "-c", help="Category (repeatable) or 'all'."),
    count: int = typer.Option(1, "--count", "-n", min=1, help="Objects per category."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes identical files."),
):
    """Write procedural objects in the PartNet-Mobility folder format (the embedded default)."""
    from tqdm import tqdm

    from partdrag4d.assets.synth import generate

    try:
        cats = _categories_option(category)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0])) from None
    jobs = [(c, i) for c in cats for i in range(count)]
    for c, i in tqdm(jobs, desc="synth", unit="obj", dynamic_ncols=True):
        generate(c, i, seed, out)
    typer.echo(f"wrote {len(jobs)} objects to {out}")


@app.command()
def articulate(
    source: Path = typer.Argument(..., exists=True, file_okay=False, help="An object folder or a folder of them (real or synthetic)."),
    out: Path = typer.Option(Path("data"), "--out", help="Dataset folder."),
    category: Optional[str] = typer.Option(None, "--category", "-c", help="Only objects of this category."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most this many objects (sorted by id)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the other joints' random positions and the point samples."),
    configs: int = typer.Option(1, "--configs", min=1, help="Random configurations of the other joints per swept joint."),
    stages: int = typer.Option(6, "--stages", min=2, help="States per sequence, evenly spaced from lower to upper limit."),
    points: int = typer.Option(16384, "--points", min=16, help="Surface points per object (same material points in every state)."),
    ids: Optional[Path] = typer.Option(None, "--ids", exists=True, dir_okay=False, help="CSV with a partnet_mobility_id column (e.g. manifests/partdrag4d_objects.csv)."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Write the posed mesh of every state."),
):
    """Sweep every movable joint through its stages; write meshes, points and manifest.jsonl."""
    from partdrag4d.articulate import articulate_folder

    if category is not None and category not in categories.category_names():
        raise typer.BadParameter(f"unknown category {category!r}; expected one of {', '.join(categories.category_names())}")
    id_set = _read_ids(ids) if ids else None
    summary = articulate_folder(source, out, category, limit, seed, configs, stages, points, id_set, meshes)
    typer.echo(
        f"articulated {summary.objects_ok} objects ({summary.states} states, {summary.states_written} written) "
        f"in {summary.seconds:.1f} s; {summary.objects_failed} failed"
    )
    if summary.objects_ok == 0 and summary.objects_failed:
        raise typer.Exit(1)


def _read_ids(path: Path) -> set[str]:
    import csv

    with open(path, newline="") as f:
        return {row["partnet_mobility_id"] for row in csv.DictReader(f)}


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
