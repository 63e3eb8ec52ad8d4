"""The ``partdrag4d`` command line. Thin: each command parses and calls one function."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from tqdm import tqdm

from partdrag4d import categories, export as exports, pipeline, store, verify as verification
from partdrag4d.articulate import articulate_folder
from partdrag4d.assets.synth import generate
from partdrag4d.cliutil import WAIT_HELP, Typer, check_seed, writing
from partdrag4d.dragfile import build_drag_file
from partdrag4d.errors import BadInput
from partdrag4d.executor import EXECUTORS
from partdrag4d.presets import DEFAULT_PRESET, PRESETS, get_preset
from partdrag4d.preview import write_previews
from partdrag4d.render import DEVICES, parse_shard
from partdrag4d.viewer import DatasetViewer

# The choices of the options, from their sources of truth (typer checks them: exit code 2).
Category = Literal[tuple(categories.category_names())]
Quality = Literal[tuple(PRESETS)]
Executor = Literal[EXECUTORS]
Device = Literal[DEVICES]
ExportFormat = Literal[exports.FORMATS]
ImageMode = Literal[exports.IMAGE_MODES]

app = Typer(help="PartDrag-4D: articulated-object datasets (synth -> articulate -> render -> drags).", no_args_is_help=True, add_completion=False)

EXECUTOR_HELP = "local (this machine, default) | ray (a Ray cluster; the dataset folder must be on a path every node shares)."
RAY_ADDRESS_HELP = "With --executor ray: auto (the cluster `ray start` joined), HOST:PORT (its head), or unset (a Ray on this machine only)."
THREADS_HELP = "Cycles threads per Blender worker / Ray render actor (default: local cores // workers; Ray: 4 or the largest node's CPUs)."
DEVICE_HELP = "cpu | gpu: Cycles on an OptiX/CUDA GPU; without one it renders on the CPU and says so in one line."


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
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write object folders into."),
    category: list[str] = typer.Option(["all"], "--category", "-c", help="Category (repeatable) or 'all'."),
    count: int = typer.Option(1, "--count", "-n", min=1, help="Objects per category."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes identical files."),
):
    """Write procedural objects in the PartNet-Mobility folder format (the embedded default)."""
    check_seed(seed)
    cats = _categories_option(category)
    jobs = [(c, i) for c in cats for i in range(count)]
    for c, i in tqdm(jobs, desc="synth", unit="obj", dynamic_ncols=True):
        generate(c, i, seed, out)
    typer.echo(f"wrote {len(jobs)} objects to {out}")


@app.command()
def articulate(
    source: Path = typer.Argument(..., exists=True, file_okay=False, help="An object folder or a folder of them (real or synthetic)."),
    out: Path = typer.Option(Path("data"), "--out", help="Dataset folder."),
    category: Optional[Category] = typer.Option(None, "--category", "-c", help="Only objects of this category."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most this many objects (sorted by id)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the other joints' random positions and the point samples."),
    configs: int = typer.Option(1, "--configs", min=1, help="Random configurations of the other joints per swept joint."),
    stages: int = typer.Option(6, "--stages", min=2, help="States per sequence, evenly spaced from lower to upper limit."),
    points: int = typer.Option(16384, "--points", min=16, help="Surface points per object (same material points in every state)."),
    ids: Optional[Path] = typer.Option(None, "--ids", exists=True, dir_okay=False, help="CSV with a partnet_mobility_id column (e.g. manifests/partdrag4d_objects.csv)."),
    meshes: bool = typer.Option(True, "--meshes/--no-meshes", help="Write the posed mesh of every state."),
    max_joints: int = typer.Option(0, "--max-joints", min=0, help="Sweep only the first N movable joints of each object (0 = all)."),
    max_faces: int = typer.Option(2_000_000, "--max-faces", min=1, help="Refuse objects with more faces than this (all meshes together)."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    executor: Executor = typer.Option("local", "--executor", help=EXECUTOR_HELP + " One Ray task per object."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
):
    """Sweep every movable joint through its stages; write meshes, points and the manifest."""
    check_seed(seed)
    _check_executor(executor, ray_address)
    id_set = _read_ids(ids) if ids else None
    with writing(out, "articulate", wait):
        summary = _run_step(articulate_folder, source, out, category, limit, seed, configs, stages, points, id_set, meshes,
                            max_joints=max_joints or None, max_faces=max_faces, executor=executor, ray_address=ray_address)
    typer.echo(
        f"articulated {summary.objects_ok} objects ({summary.states} states, {summary.states_written} written) "
        f"in {summary.seconds:.1f} s; {summary.objects_failed} failed"
    )
    if summary.objects_ok == 0 and summary.objects_failed:
        raise typer.Exit(1)


@app.command()
def render(
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Dataset folder (after articulate)."),
    category: Optional[Category] = typer.Option(None, "--category", "-c", help="Only states of this category."),
    quality: Quality = typer.Option(DEFAULT_PRESET, "--quality", "-q", help="Render preset (see docs/rendering.md for costs)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="Blender worker processes (cores are split between them; default 1); with --executor ray: render actors (default: as many as the cluster fits)."),
    shard: str = typer.Option("0/1", "--shard", help="I/N: render the I-th of N object shards (cluster job arrays)."),
    resolution: int = typer.Option(512, "--resolution", min=16, help="Image size in pixels."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed of the renderer."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    executor: Executor = typer.Option("local", "--executor", help=EXECUTOR_HELP + " One actor call per state."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
    device: Device = typer.Option("cpu", "--device", help=DEVICE_HELP),
):
    """Render every articulated state: 12 RGBA views, depth, part ids, cameras (resumable)."""
    check_seed(seed)
    _check_executor(executor, ray_address)
    shard_ = _shard(shard)
    with writing(dataset, "render", wait, shard_):
        summary = _run_step(pipeline.render_dataset, dataset, category, get_preset(quality), workers, shard_, seed,
                            resolution, executor=executor, ray_address=ray_address, threads=threads, device=device)
    typer.echo(json.dumps(summary))
    if summary.get("failed"):
        raise typer.Exit(1)


@app.command()
def drags(
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Rendered dataset folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="HDF5 file (default: DATASET/drags.h5)."),
    category: Optional[Category] = typer.Option(None, "--category", "-c", help="Only sequences of this category."),
    max_drags: int = typer.Option(64, "--max-drags", min=1, help="Visible drags kept per pair and view."),
    all_pairs: bool = typer.Option(True, "--all-pairs/--adjacent-pairs", help="All 30 ordered pairs per sequence, or neighbours + stage 0 pairs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the farthest-point sampling."),
    shard: str = typer.Option("0/1", "--shard", help="I/N: sequences I, I+N, ... (writes drags-I-of-N.h5 by default)."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    executor: Executor = typer.Option("local", "--executor", help=EXECUTOR_HELP + " One Ray task per sequence; this process writes the file."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
):
    """Sample visible surface drags for every pair of states (depth-tested) into HDF5."""
    check_seed(seed)
    _check_executor(executor, ray_address)
    index, count = _shard(shard)
    if out is None and count > 1:
        out = dataset / store.drag_shard_name(index, count)
    lock_dir = out.parent if out is not None else dataset  # the folder the drag file goes to
    with writing(lock_dir, "drags", wait, (index, count), dataset=lock_dir.resolve() == dataset.resolve()):
        summary = _run_step(build_drag_file, dataset, out, category, seed, max_drags, all_pairs, (index, count),
                            executor=executor, ray_address=ray_address)
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
def make_dataset(
    out: Path = typer.Option(Path("data"), "--out", help="Dataset folder."),
    source: Optional[Path] = typer.Option(None, "--source", help="PartNet-Mobility folder; default: procedural objects."),
    per_category: int = typer.Option(1, "--per-category", min=1, help="Procedural objects per category (embedded default)."),
    max_joints: int = typer.Option(1, "--max-joints", min=0, help="Joints swept per object (0 = all)."),
    configs: int = typer.Option(1, "--configs", min=1, help="Random configurations of the other joints."),
    quality: Quality = typer.Option(DEFAULT_PRESET, "--quality", "-q", help="Render preset (`make dataset` passes draft)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="Blender worker processes (default 1); with --executor ray: render actors (default: as many as fit)."),
    resolution: int = typer.Option(512, "--resolution", min=16, help="Image size."),
    category: list[str] = typer.Option(["all"], "--category", "-c", help="Categories (repeatable) or 'all'."),
    seed: int = typer.Option(0, "--seed", help="Seed of every step."),
    max_faces: int = typer.Option(2_000_000, "--max-faces", min=1, help="Refuse objects with more faces than this."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    executor: Executor = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
    device: Device = typer.Option("cpu", "--device", help=DEVICE_HELP),
):
    """The main job: synth -> articulate -> render -> drags (then run `partdrag4d verify`).
    Exits with code 1 when a state failed to render (as `render` does)."""
    check_seed(seed)
    cats = _categories_option(category)
    _check_executor(executor, ray_address)
    with writing(out, "make-dataset", wait) as record:
        summary = _run_step(pipeline.make_dataset, out, source=source, per_category=per_category, seed=seed,
                            quality=get_preset(quality), workers=workers, categories_=cats, configs=configs,
                            max_joints=max_joints or None, resolution=resolution, max_faces=max_faces, executor=executor,
                            ray_address=ray_address, threads=threads, device=device)
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
