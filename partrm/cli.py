"""The ``partrm`` command line: teacher, two-stage training, evaluation, inference,
articulation extraction. Thin: each command parses and calls one function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import typer

from partdrag4d import store
from partdrag4d.cliutil import WAIT_HELP, Typer, check_seed, config_options, writing
from partdrag4d.errors import BadInput
from partrm import evaluate as evaluation, infer as inf, train as training
from partrm.gaussians.ply import SH_DEGREES, UP_AXES
from partrm.gsdb import GaussianDatabase
from partrm.gsdb_build import build_gsdb
from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb
from partrm.joints import COLLISION_MODES, extract
from partrm.predict import input_size, load_model, mode_of
from partrm.propagation import REGIONS, RULES
from partrm.viewer import PartRMViewer, load_checkpoint

# The choices of the options, from their sources of truth (typer checks them: exit code 2).
Device = Literal["auto", "cpu", "cuda"]
Region = Literal[REGIONS]
Rule = Literal[RULES]
UpAxis = Literal[UP_AXES]
Collision = Literal[COLLISION_MODES]
GsdbSource = Literal["teacher", "render"]

app = Typer(help="PartRM: drag-conditioned Gaussian reconstruction of part-level dynamics.", no_args_is_help=True, add_completion=False)


def _device(device: str) -> str:
    """``auto``: CUDA when there is one, else the CPU; any other value as given."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _check_sh_degree(sh_degree: int) -> None:
    if sh_degree not in SH_DEGREES:
        raise BadInput(f"--sh-degree must be one of {', '.join(map(str, SH_DEGREES))}, got {sh_degree}")


CONFIG = typer.Option(None, "--config", exists=True, help="TOML/JSON with any training option (e.g. configs/paper.toml); "
                                                          "flags given win.")
RESUME = typer.Option(True, "--resume/--restart", help="Continue from the run's last checkpoint.")


def _train_options(config: Optional[Path], options: dict[str, Any], **fixed: Any) -> training.TrainConfig:
    try:
        return training.load_config(config, **options, **fixed)
    except ValueError as exc:  # a bad value in the config file or the flags
        raise BadInput(str(exc)) from None


def _trained(what: str, result: training.TrainResult) -> None:
    last = result.losses[-1] if result.losses else float("nan")
    typer.echo(f"{what}: {result.steps} steps in {result.seconds:.0f} s, last loss {last:.4f} -> {result.model_path}")


# The training and evaluation commands' options are their config's fields (training.TrainConfig,
# evaluation.EvalConfig: help, choices, ranges and defaults there); a config file may set any
# training option, and the flags given win.


@app.command("pretrain-lgm")
@config_options(training.TrainConfig, "pretrain-lgm", from_file=True, defaults={"out": "runs/teacher"})
def pretrain_lgm(options: dict[str, Any], config: Optional[Path] = CONFIG, resume: bool = RESUME):
    """Train the teacher LGM on static states: optionally L2 to a Gaussian database first, then its own objective (MSE + alpha [+ LPIPS])."""
    cfg = _train_options(config, options, stage="teacher")
    _trained("teacher", training.train(cfg, resume=resume))


@app.command()
@config_options(training.TrainConfig, "train", from_file=True, choices={"stage": training.PARTRM_STAGES})
def train(options: dict[str, Any], config: Optional[Path] = CONFIG, resume: bool = RESUME):
    """Two-stage PartRM training (stage 1: L2 to the Gaussian database; stage 2: MSE + LPIPS + alpha)."""
    cfg = _train_options(config, options)
    _trained(f"stage {cfg.stage}", training.train(cfg, resume=resume))


@app.command("eval")
@config_options(evaluation.EvalConfig, "eval", lists=("num_drags",))
def evaluate(
    options: dict[str, Any],
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="PartRM checkpoint (omit to evaluate only the baselines)."),
    gsdb: Optional[Path] = typer.Option(None, "--gsdb", help="Teacher database for the static/oracle baselines (default DATA/gsdb.h5)."),
    device: Device = typer.Option("auto", "--device", help="auto: CUDA when there is one, else the CPU."),
):
    """Benchmark on held-out objects: full-image and motion-region PSNR/SSIM/LPIPS of the 8 non-input views at 256x256,
    3D motion errors, per group (seen categories / unseen category) and category, with static, oracle and zero-drag rows."""
    counts, out = options.pop("num_drags"), Path(options.pop("out"))
    configs = [evaluation.EvalConfig(**options, num_drags=n, out=str(out if len(counts) == 1 else out / f"drags{n}"))
               for n in counts]  # every value is checked before the model loads
    dev = _device(device)
    model = load_model(checkpoint).to(dev) if checkpoint else None
    db_path = gsdb or store.gsdb_file(options["data"])
    db = GaussianDatabase(db_path) if db_path.is_file() else None
    if db is None:
        typer.echo(f"baselines off: no Gaussian database at {db_path} (pass --gsdb PATH)", err=True)
    if model is None and db is None:
        raise BadInput("nothing to evaluate: give --checkpoint and/or a Gaussian database")
    for cfg in configs:
        result = evaluation.evaluate(cfg, model, db)
        evaluation.write_outputs(result, Path(cfg.out), cfg)
        typer.echo(f"num_drags={cfg.num_drags}")
        typer.echo(result.markdown)


@app.command()
def infer(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="PartRM checkpoint."),
    drag: Optional[list[str]] = typer.Option(None, "--drag", help="x0,y0:x1,y1 in input-image pixels (repeatable)."),
    drags_json: Optional[Path] = typer.Option(None, "--drags", exists=True, help="JSON list of \\[x0, y0, x1, y1] drags."),
    state: Optional[str] = typer.Option(None, "--state", help="Use this dataset state's rendered views as input (with --data)."),
    data: Path = typer.Option(Path("data"), "--data"),
    image: Optional[Path] = typer.Option(None, "--image", exists=True, help="A single RGBA/RGB image (needs --zero123-weights)."),
    scene: Optional[Path] = typer.Option(None, "--scene", exists=True, file_okay=False,
                                         help="RGB-D model: a scene folder in nerfstudio's layout (frames with depth_file_path; "
                                              "what `partdrag4d export` writes). Pair with --region color or sam."),
    frames: Optional[str] = typer.Option(None, "--frames", help="--scene: the 4 input frames, i,j,k,l (default 0,3,6,9 of 12, or all 4)."),
    depth_scale: float = typer.Option(0.001, "--depth-scale",
                                      help="--scene: object units per step of 16-bit PNG depth (nerfstudio's depth_unit_scale_factor)."),
    zero123_weights: Optional[Path] = typer.Option(None, "--zero123-weights", help="Local Zero123++ diffusers folder."),
    region: Region = typer.Option("mask", "--region", help="Propagation region: mask (dataset) | sam | color."),
    sam_checkpoint: Optional[Path] = typer.Option(None, "--sam-checkpoint"),
    rule: Rule = typer.Option("translation", "--rule", help="translation (paper Eq. 2) | rotation (appendix Eq. 8)."),
    num_drags: int = typer.Option(10, "--num-drags", min=1),
    out: Path = typer.Option(Path("runs/infer"), "--out"),
    seed: int = typer.Option(0, "--seed"),
    sh_degree: int = typer.Option(3, "--sh-degree", help="PLY SH degree: 3 (zero f_rest_*, what the reference 3DGS loader expects) | 0."),
    up: UpAxis = typer.Option("z", "--up", help="PLY frame: z (object frame, Z up) | y (-Y up, SuperSplat/PlayCanvas)."),
):
    """Predict the moved state from input views + drags: PLY, turntable strip/GIF, drags image. Inputs: a dataset
    --state, an RGB-D --scene folder, or one --image (RGB models, with Zero123++ weights)."""
    _check_sh_degree(sh_degree)
    check_seed(seed)
    try:
        drags_px = inf.parse_drags(drag, drags_json)
        model = load_model(checkpoint)
        size = input_size(model)
        if state is not None:
            rgbd = mode_of(model) == "rgbd"
            views = inf.dataset_views(data, state, size, depth=rgbd, splat_size=model.config.splat_size if rgbd else 128)
        elif scene is not None and mode_of(model) != "rgbd":
            raise inf.InputError(f"{checkpoint} is an RGB model: --scene is the RGB-D models' input; give --state (with --data) or --image")
        elif scene is not None:
            views = inf.scene_views(scene, size, model.config.splat_size, _frame_list(frames), depth_scale)
        elif image is not None and mode_of(model) == "rgbd":
            raise inf.InputError(f"{checkpoint} is an RGB-D model: it needs depth for every input view; give --state (with --data) "
                                 "instead of --image (generated views have no depth)")
        elif image is not None:
            views = inf.zero123pp_views(image, zero123_weights, size)
        else:
            raise inf.InputError("give --state (with --data), --scene (RGB-D models) or --image")
        inf.check_drags_in_image(drags_px, views.first_rgba.shape[1], views.first_rgba.shape[0])
        gaussians, used = inf.predict(model, views, drags_px, num_drags, region, sam_checkpoint, rule, seed)
    except ImportError as exc:  # an optional package (.[sam], .[diffusers]) that is not installed
        raise BadInput(str(exc)) from None
    for path in inf.write_outputs(out, gaussians, views, used, sh_degree=sh_degree, up=up):
        typer.echo(str(path))


def _frame_list(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise BadInput(f"--frames must be a comma list of frame numbers, got {text!r}") from None


@app.command()
def articulation(
    out: Path = typer.Option(Path("runs/articulation"), "--out", help="Folder for articulation.urdf (+ meshes) and articulation.json."),
    source: Optional[Path] = typer.Option(None, "--source", exists=True, help="State A: Gaussians (.ply/.npy), points (.npy/.ply) or a mesh."),
    target: Optional[Path] = typer.Option(None, "--target", exists=True, help="State B, same kinds as --source."),
    data: Optional[Path] = typer.Option(None, "--data", help="A dataset, with --state-a/--state-b instead of files."),
    state_a: Optional[str] = typer.Option(None, "--state-a"),
    state_b: Optional[str] = typer.Option(None, "--state-b"),
    correspondence: Optional[bool] = typer.Option(None, "--correspondence/--no-correspondence", help="Point i is the same in both (default: auto)."),
    world: bool = typer.Option(False, "--world", help="URDF in the asset's own frame (dataset only)."),
    min_opacity: float = typer.Option(0.05, "--min-opacity", help="Drop Gaussians more transparent than this."),
    samples: int = typer.Option(16384, "--samples", help="Points sampled from meshes."),
    threshold: float = typer.Option(0.005, "--threshold", help="Motion threshold relative to the object size."),
    seed: int = typer.Option(0, "--seed"),
    collision: Collision = typer.Option("none", "--collision", help="Collision geometry: none | mesh (the visual mesh) | hull (convex hull) | vhacd (convex decomposition)."),
):
    """Segment the moving part of two states, estimate its joint and write a URDF for simulators
    (MuJoCo keeps its meshes: the file carries MuJoCo's discardvisual="false" hint)."""
    check_seed(seed)
    try:
        result = extract(out, source, target, data, state_a, state_b, correspondence, world, min_opacity, samples, threshold, seed,
                         collision=collision)
    except ValueError as exc:  # inputs the estimator cannot use (no motion, mismatched states...)
        raise BadInput(str(exc)) from None
    est = result.estimate
    unit = "rad" if est.joint_type == "revolute" else "units"
    typer.echo(f"{est.joint_type} joint, axis {[round(float(a), 4) for a in est.axis]}, pivot {[round(float(p), 4) for p in est.pivot]}, "
               f"amount {est.amount:.4f} {unit}, {est.num_moving} moving points, rms {est.rms:.4g}")
    if result.metrics:
        typer.echo("against the dataset's truth: " + json.dumps({k: v for k, v in result.metrics.items() if not isinstance(v, (list, dict))}))
    typer.echo(str(result.urdf))
    typer.echo(str(result.report))


@app.command()
def view(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="PartRM checkpoint (.safetensors)."),
    data: Path = typer.Option(Path("data"), "--data", help="Rendered dataset whose states you drag."),
    port: int = typer.Option(8080, "--port", "-p", min=0, max=65535, help="Port (the next free one if taken; 0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 serves other machines too."),
    out: Path = typer.Option(Path("runs/view"), "--out", help="Folder the export buttons write PLY/URDF files into."),
    num_drags: int = typer.Option(10, "--num-drags", min=1, help="Propagated drags given to the model."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)."),
):
    """Drag a part of a dataset state in the browser; PartRM predicts; joint, PLY and URDF export."""
    if threads:
        torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint)  # CheckpointError: one line, exit code 2
    viewer = PartRMViewer(checkpoint, data, host, port, out, num_drags, model=model)
    for line in viewer.index.problems:
        typer.echo(f"warning: {line}", err=True)
    typer.echo(f"PartRM viewer of {data} with {checkpoint}: {viewer.url}  (Ctrl-C stops)")
    viewer.serve_forever()


gsdb_app = Typer(help="The Gaussian database (splatter images of every state, from a teacher or from the renders).", no_args_is_help=True)
app.add_typer(gsdb_app, name="gsdb")


@gsdb_app.command("build")
def gsdb_build(
    dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="Rendered dataset folder."),
    source: GsdbSource = typer.Option("teacher", "--source", help="teacher: run LGM weights (--teacher) on the input views | "
                               "render: build the splatter images geometrically from the renders' RGBA + depth."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="LGM weights for --source teacher (partrm pretrain-lgm output or official safetensors)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Default: DATASET/gsdb.h5."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="--source teacher: states per forward pass."),
    splat_size: int = typer.Option(128, "--splat-size", min=1, help="--source render: S of the \\[4, 14, S, S] images (LGM big 128, tiny 32); divides the render size."),
    refine_steps: int = typer.Option(0, "--refine-steps", min=0, help="--source render: photometric refinement steps per state on all 12 views (0: geometry only)."),
    refine_size: int = typer.Option(256, "--refine-size", min=8, help="--source render: refinement render size."),
    device: Device = typer.Option("auto", "--device", help="auto: CUDA when there is one, else the CPU."),
    ply: Optional[Path] = typer.Option(None, "--ply", help="Also write one 3DGS PLY per state into this folder."),
    sh_degree: int = typer.Option(3, "--sh-degree", help="PLY SH degree: 3 (zero f_rest_*, what the reference 3DGS loader expects) | 0."),
    up: UpAxis = typer.Option("z", "--up", help="PLY frame: z (object frame, Z up) | y (-Y up, SuperSplat/PlayCanvas)."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
):
    """Store every state's splatter images (float16, resumable): a teacher's predictions or a geometric build from the renders."""
    _check_sh_degree(sh_degree)
    dev = _device(device)
    if source == "teacher" and (teacher is None or not teacher.is_file()):
        raise BadInput(f"teacher weights not found: {teacher} (pass --teacher PATH, or --source render)")
    if source == "render" and teacher is not None:
        raise BadInput("--teacher is for --source teacher; --source render uses no weights")
    lock_dir = out.parent if out is not None else dataset  # the folder the database goes to
    with writing(lock_dir, "gsdb build", wait, dataset=lock_dir.resolve() == dataset.resolve()):
        ply_options = {"sh_degree": sh_degree, "up": up}
        if source == "teacher":
            summary = build_gsdb(dataset, teacher, out, batch_size, device=dev, ply_dir=ply, ply_options=ply_options)
        else:
            try:
                cfg = RenderGsdbConfig(splat_size=splat_size, refine_steps=refine_steps, refine_size=refine_size)
                summary = build_render_gsdb(dataset, out, cfg, device=dev, ply_dir=ply, ply_options=ply_options)
            except ValueError as exc:  # a splat size the renders do not divide into, ...
                raise BadInput(str(exc)) from None
    typer.echo(f"{summary.states} states ({summary.computed} computed) in {summary.seconds:.1f} s")
    if summary.not_rendered:
        typer.echo(f"{len(summary.not_rendered)} states not rendered, not in the database (first: {summary.not_rendered[0]})", err=True)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover  (`python -m partrm.cli`: the `partdrag4d gsdb build` alias)
    app(prog_name="partrm")
