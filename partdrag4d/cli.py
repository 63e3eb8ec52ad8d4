"""The ``partdrag4d`` command line. Thin: each command parses and calls one function."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from tqdm import tqdm

from partdrag4d import categories, export as exports, pipeline, store, verify as verification
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.synth import generate
from partdrag4d.cliutil import Typer, check_seed, config_options, writing
from partdrag4d.dragfile import build_drag_file
from partdrag4d.errors import BadInput
from partdrag4d.presets import get_preset
from partdrag4d.preview import write_previews
from partdrag4d.render import parse_shard
from partdrag4d.stepconfig import ArticulateConfig, DragsConfig, MakeDatasetConfig, RenderConfig, SynthConfig
from partdrag4d.viewer import DatasetViewer

# The choices of the options, from their sources of truth (typer checks them: exit code 2).
ExportFormat = Literal[exports.FORMATS]
ImageMode = Literal[exports.IMAGE_MODES]

app = Typer(help="PartDrag-4D: articulated-object datasets (synth -> articulate -> render -> drags).", no_args_is_help=True, add_completion=False)


def _check_executor(executor: str, ray_address: Optional[str]) -> None:
    if ray_address and executor != "ray":
        raise BadInput("--ray-address needs --executor ray")


def _run_step(fn, *args, **kwargs):
    """Call a dataset step; Ctrl-C ends with one line instead of a traceback (exit 130)."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished files are kept; run the same command again to resume", err=True)
        raise typer.Exit(130) from None


def _categories_option(values: list[str]) -> list[str]:
    """A repeatable --category (typer has no choice lists): the names, or every category for 'all'."""
    if not values or values == ["all"]:
        return categories.category_names()
    for v in values:
        try:
            categories.get(v)
        except KeyError as exc:
            raise BadInput(str(exc.args[0])) from None
    return values


@app.command()
@config_options(SynthConfig, "synth", ranges=True)
def synth(options: dict[str, Any]):
    """Write procedural objects in the PartNet-Mobility folder format (the embedded default)."""
    cfg = SynthConfig(**options)
    check_seed(cfg.seed)
    cats = _categories_option(cfg.categories)
    jobs = [(c, i) for c in cats for i in range(cfg.count)]
    for c, i in tqdm(jobs, desc="synth", unit="obj", dynamic_ncols=True):
        generate(c, i, cfg.seed, Path(cfg.out))
    typer.echo(f"wrote {len(jobs)} objects to {cfg.out}")


@app.command()
@config_options(ArticulateConfig, "articulate", ranges=True)
def articulate(
    options: dict[str, Any],
    source: Path = typer.Argument(..., exists=True, file_okay=False, help="An object folder or a folder of them (real or synthetic)."),
):
    """Sweep every movable joint through its stages; write meshes, points and the manifest."""
    cfg = ArticulateConfig(**options)
    check_seed(cfg.seed)
    _check_executor(cfg.executor, cfg.ray_address)
    id_set = _read_ids(Path(cfg.ids)) if cfg.ids else None
    out = Path(cfg.out)
    with writing(out, "articulate", cfg.wait):
        summary = _run_step(articulate_folder, source, out, cfg.category, cfg.limit, cfg.seed, cfg.configs, cfg.stages,
                            cfg.points, id_set, cfg.meshes, max_joints=cfg.max_joints or None, max_faces=cfg.max_faces,
                            executor=cfg.executor, ray_address=cfg.ray_address)
    typer.echo(
        f"articulated {summary.objects_ok} objects ({summary.states} states, {summary.states_written} written) "
        f"in {summary.seconds:.1f} s; {summary.objects_failed} failed"
    )
    if summary.objects_ok == 0 and summary.objects_failed:
        raise typer.Exit(1)


@app.command()
@config_options(RenderConfig, "render", ranges=True)
def render(
    options: dict[str, Any],
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Dataset folder (after articulate)."),
):
    """Render every articulated state: 12 RGBA views, depth, part ids, cameras (resumable)."""
    cfg = RenderConfig(**options)
    check_seed(cfg.seed)
    _check_executor(cfg.executor, cfg.ray_address)
    shard_ = _shard(cfg.shard)
    with writing(dataset, "render", cfg.wait, shard_):
        summary = _run_step(pipeline.render_dataset, dataset, cfg.category, get_preset(cfg.quality), cfg.workers, shard_,
                            cfg.seed, cfg.resolution, executor=cfg.executor, ray_address=cfg.ray_address,
                            threads=cfg.threads, device=cfg.device)
    typer.echo(json.dumps(summary))
    if summary.get("failed"):
        raise typer.Exit(1)


@app.command()
@config_options(DragsConfig, "drags", ranges=True)
def drags(
    options: dict[str, Any],
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Rendered dataset folder."),
):
    """Sample visible surface drags for every pair of states (depth-tested) into HDF5."""
    cfg = DragsConfig(**options)
    check_seed(cfg.seed)
    _check_executor(cfg.executor, cfg.ray_address)
    index, count = _shard(cfg.shard)
    out = Path(cfg.out) if cfg.out is not None else None
    if out is None and count > 1:
        out = dataset / store.drag_shard_name(index, count)
    lock_dir = out.parent if out is not None else dataset  # the folder the drag file goes to
    with writing(lock_dir, "drags", cfg.wait, (index, count), dataset=lock_dir.resolve() == dataset.resolve()):
        summary = _run_step(build_drag_file, dataset, out, cfg.category, cfg.seed, cfg.max_drags, cfg.all_pairs,
                            (index, count), executor=cfg.executor, ray_address=cfg.ray_address)
    per_pair = 1000 * summary.seconds_sampling / max(1, summary.pairs)
    typer.echo(f"{summary.sequences} sequences, {summary.pairs} pairs, {summary.drags} drags ({per_pair:.1f} ms per pair, 12 views)")
    if summary.skipped:
        typer.echo(f"{len(summary.skipped)} sequences skipped (not rendered)", err=True)


@app.command()
def verify(
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Dataset folder."),
    drag_file: Optional[Path] = typer.Option(None, "--drag-file", help="Default: DATASET/drags.h5."),
    show: int = typer.Option(20, "--show", help="Defects to print."),
):
    """Check every state and pair; print a table; exit non-zero on any defect."""
    report = verification.verify(dataset, drag_file)
    typer.echo(report.table())
    for line in report.defects[:show]:
        typer.echo(f"defect: {line}", err=True)
    if report.defects:
        typer.echo(f"{len(report.defects)} defects", err=True)
        raise typer.Exit(1)
    typer.echo("dataset OK")


@app.command()
def preview(
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Rendered dataset folder."),
    out: Path = typer.Option(Path("previews"), "--out", help="Folder for the pictures."),
    state: Optional[str] = typer.Option(None, "--state", help="State id (default: the first in the manifest)."),
    view: int = typer.Option(0, "--view", min=0, max=11, help="View of the stage strip."),
    target_stage: Optional[int] = typer.Option(None, "--target-stage", min=0, help="Drag overlay target (default: the far end of the sequence)."),
):
    """Contact sheet of a state's 12 views, a strip + GIF of its sequence's stages, and the drags
    drawn on this (source) state's views as arrows to the target stage."""
    try:
        paths = write_previews(dataset, out, state, view, target_stage=target_stage)
    except (KeyError, ValueError) as exc:  # an unknown state or stage
        raise BadInput(exc.args[0] if exc.args else str(exc)) from None
    for path in paths:
        typer.echo(str(path))


@app.command()
def export(
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Rendered dataset folder."),
    out: Path = typer.Option(..., "--out", help="Folder to write one scene folder per state into."),
    fmt: ExportFormat = typer.Option("nerfstudio", "--format", "-f", help="nerfstudio (transforms.json) | nerf-synthetic (transforms_train/test.json)."),
    state: Optional[list[str]] = typer.Option(None, "--state", help="State id (repeatable)."),
    all_states: bool = typer.Option(False, "--all", help="Every rendered state of the dataset."),
    images: ImageMode = typer.Option("copy", "--images", help="copy | link (symlinks to the dataset's PNGs)."),
    mask_path: bool = typer.Option(False, "--mask-path/--no-mask-path", help="Also name the foreground masks as nerfstudio's mask_path."),
):
    """Per state: cameras as transforms.json (Blender/OpenGL c2w), images, 16-bit depth PNGs (1/1000 units), masks."""
    summary = exports.export(dataset, out, fmt, state or None, all_states, images, mask_path)
    for folder in summary.folders:
        typer.echo(str(folder))
    if summary.not_rendered:
        typer.echo(f"{len(summary.not_rendered)} states not rendered, not exported (first: {summary.not_rendered[0]})", err=True)


@app.command("make-dataset")
@config_options(MakeDatasetConfig, "make-dataset", ranges=True)
def make_dataset(options: dict[str, Any]):
    """The main job: synth -> articulate -> render -> drags (then run `partdrag4d verify`).
    Exits with code 1 when a state failed to render (as `render` does)."""
    cfg = MakeDatasetConfig(**options)
    check_seed(cfg.seed)
    cats = _categories_option(cfg.categories)
    _check_executor(cfg.executor, cfg.ray_address)
    out = Path(cfg.out)
    with writing(out, "make-dataset", cfg.wait) as record:
        summary = _run_step(pipeline.make_dataset, out, source=Path(cfg.source) if cfg.source else None,
                            per_category=cfg.per_category, seed=cfg.seed, quality=get_preset(cfg.quality),
                            workers=cfg.workers, categories_=cats, configs=cfg.configs, max_joints=cfg.max_joints or None,
                            resolution=cfg.resolution, max_faces=cfg.max_faces, executor=cfg.executor,
                            ray_address=cfg.ray_address, threads=cfg.threads, device=cfg.device)
        record["seconds_per_step"] = summary.seconds
    typer.echo(json.dumps(summary.__dict__, indent=1))
    if summary.rendered.get("failed"):
        typer.echo(f"{summary.rendered['failed']} states failed to render (reasons above; rerun to retry them)", err=True)
        raise typer.Exit(1)


@app.command()
def view(
    dataset: Path = typer.Argument(Path("data"), help="Dataset folder (a missing or partial one opens with a message in the page)."),
    port: int = typer.Option(8080, "--port", "-p", min=0, max=65535, help="Port (the next free one if taken; 0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 serves other machines too."),
):
    """Browse a dataset in the web browser: pick category/object/sequence, move the stage slider; cameras, samples, drags."""
    viewer = DatasetViewer(dataset, host, port)
    for line in viewer.index.problems:
        typer.echo(f"warning: {line}", err=True)
    typer.echo(f"PartDrag-4D viewer of {dataset}: {viewer.url}  (opened in {viewer.open_seconds:.2f} s; Ctrl-C stops)")
    viewer.serve_forever()


gsdb_app = Typer(help="The Gaussian database: an alias of `partrm gsdb` (the model side builds it).", no_args_is_help=True)
app.add_typer(gsdb_app, name="gsdb")


@gsdb_app.command("build", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def gsdb_build(ctx: typer.Context):
    """Alias of `partrm gsdb build` (same arguments; run `partrm gsdb build --help`). Runs it as
    a separate process, so the dataset toolkit never imports the model package."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "partrm.cli", "gsdb", "build", *ctx.args]))


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _read_ids(path: Path) -> set[str]:
    with open(path, newline="") as f:
        return {row["partnet_mobility_id"] for row in csv.DictReader(f)}


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
