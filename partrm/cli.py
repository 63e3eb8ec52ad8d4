"""The ``partrm`` command line: teacher, two-stage training, evaluation, inference,
articulation extraction. Thin: each command parses and calls one function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch
import typer

from partdrag4d import store
from partdrag4d.cliutil import WAIT_HELP, Typer, check_seed, writing
from partdrag4d.errors import BadInput
from partrm import evaluate as evaluation, infer as inf, train as training
from partrm.gaussians.ply import SH_DEGREES, UP_AXES
from partrm.data import STAGE1_TARGETS
from partrm.gsdb import GaussianDatabase
from partrm.gsdb_build import build_gsdb
from partrm.gsdb_render import RenderGsdbConfig, build_render_gsdb
from partrm.joints import COLLISION_MODES, extract
from partrm.models.lgm import FRAMES, LGM_PRESETS
from partrm.models.rgbd import MODES
from partrm.predict import input_size, load_model, mode_of
from partrm.propagation import REGIONS, RULES
from partrm.viewer import PartRMViewer, load_checkpoint

# The choices of the options, from their sources of truth (typer checks them: exit code 2).
Model = Literal[LGM_PRESETS]
Frame = Literal[("auto",) + FRAMES]
Stage = Literal[tuple(s for s in training.STAGES if s != "teacher")]  # the teacher is `pretrain-lgm`
Split = Literal["test", "train", "all"]
Device = Literal["auto", "cpu", "cuda"]
Region = Literal[REGIONS]
Rule = Literal[RULES]
UpAxis = Literal[UP_AXES]
Collision = Literal[COLLISION_MODES]
GsdbSource = Literal["teacher", "render"]
Stage1Target = Literal[STAGE1_TARGETS]
Mode = Literal[MODES]

app = Typer(help="PartRM: drag-conditioned Gaussian reconstruction of part-level dynamics.", no_args_is_help=True, add_completion=False)


def _sizes(text: Optional[str]) -> Optional[tuple[int, ...]]:
    return tuple(int(s) for s in text.split(",")) if text else None


def _drag_counts(text: str) -> list[int]:
    """``--num-drags``: one count or a comma list of counts, each >= 1."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise BadInput(f"--num-drags must be a count or a comma list of counts (e.g. 1,5,10), got {text!r}") from None
    if any(n < 1 for n in counts):
        raise BadInput(f"--num-drags counts must be >= 1, got {text!r}")
    return counts


def _device(device: str) -> str:
    """``auto``: CUDA when there is one, else the CPU; any other value as given."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _check_sh_degree(sh_degree: int) -> None:
    if sh_degree not in SH_DEGREES:
        raise BadInput(f"--sh-degree must be one of {', '.join(map(str, SH_DEGREES))}, got {sh_degree}")


def _frame(text: str) -> Optional[str]:
    return None if text == "auto" else text


FRAME_HELP = ("Camera frame of the --init LGM weights: auto (a file without this project's metadata whose tensors match an "
              "LGM preset, e.g. the official model_fp16_fixrot.safetensors, is in LGM's frame; ours record theirs) | lgm | object.")


def _train_options(config, **flags):
    try:
        return training.load_config(config, **flags)
    except ValueError as exc:  # a bad value in the config file or the flags
        raise BadInput(str(exc)) from None


@app.command("pretrain-lgm")
def pretrain_lgm(
    data: Path = typer.Option(Path("data"), "--data", help="Rendered dataset."),
    out: Path = typer.Option(Path("runs/teacher"), "--out", help="Run folder (checkpoints, log.csv, model.safetensors)."),
    model: Optional[Model] = typer.Option(None, "--model", help="LGM preset (default tiny; a --config file may set it)."),
    init: Optional[Path] = typer.Option(None, "--init", "--lgm-weights", help="Start from these LGM weights (e.g. official model_fp16_fixrot.safetensors)."),
    lgm_frame: Frame = typer.Option("auto", "--lgm-frame", help=FRAME_HELP),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Photometric steps (default 300; a --config file may set it)."),
    gsdb: Optional[Path] = typer.Option(None, "--gsdb", help="Gaussian database of the same states to regress first (default DATA/gsdb.h5 when --l2-steps > 0)."),
    l2_steps: Optional[int] = typer.Option(None, "--l2-steps", min=0, help="Steps of L2 to the database's splatter images (e.g. `gsdb build --source render`) before the photometric steps (default 0; a --config file may set it)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default 4 (a --config file may set it)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 4e-4 (a --config file may set it)."),
    render_size: Optional[int] = typer.Option(None, "--render-size", help="Supervision render size; 0 (default): the model's input size (a --config file may set it)."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="torchvision vgg16 weights for LPIPS (local file)."),
    lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights", help="LPIPS linear-layer weights (local file)."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, help="TOML/JSON with any training option (e.g. configs/paper.toml); flags given win."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Default 0 (a --config file may set it)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from the run's last checkpoint."),
):
    """Train the teacher LGM on static states: optionally L2 to a Gaussian database first, then its own objective (MSE + alpha [+ LPIPS])."""
    cfg = _train_options(config, data=str(data), out=str(out), stage="teacher", model=model, init=str(init) if init else None, lgm_frame=_frame(lgm_frame),
                         steps=steps, teacher_l2_steps=l2_steps, gsdb=str(gsdb) if gsdb else None,
                         batch_size=batch_size, lr=lr, render_size=render_size, seed=seed,
                         vgg_weights=str(vgg_weights) if vgg_weights else None, lpips_weights=str(lpips_weights) if lpips_weights else None)
    result = training.train(cfg, resume=resume)
    typer.echo(f"teacher: {result.steps} steps in {result.seconds:.0f} s, last loss {result.losses[-1] if result.losses else float('nan'):.4f} -> {result.model_path}")


@app.command()
def train(
    data: Path = typer.Option(Path("data"), "--data", help="Rendered dataset with drags.h5."),
    out: Path = typer.Option(Path("runs/partrm"), "--out", help="Run folder."),
    stage: Optional[Stage] = typer.Option(None, "--stage", help="1 (motion, needs --gsdb) | 2 (appearance) | 1+2 (default 1+2; a --config file may set it)."),
    mode: Optional[Mode] = typer.Option(None, "--mode", help="rgb: the paper's PartRM (LGM reconstructs) | rgbd: the static reconstruction is the geometric one "
                                                        "from RGB-D views (--gsdb: `gsdb build --source render`), the network learns the motion (default rgb; a --config file may set it)."),
    splat_size: Optional[int] = typer.Option(None, "--splat-size", min=1, help="--mode rgbd: Gaussians per view side of the static reconstruction, the --gsdb's (default 128; a --config file may set it)."),
    init: Optional[Path] = typer.Option(None, "--init", "--lgm-weights", help="Teacher/official LGM weights or a PartRM checkpoint."),
    lgm_frame: Frame = typer.Option("auto", "--lgm-frame", help=FRAME_HELP),
    gsdb: Optional[Path] = typer.Option(None, "--gsdb", help="Gaussian database (default DATA/gsdb.h5)."),
    model: Optional[Model] = typer.Option(None, "--model", help="LGM preset when starting without --init (default tiny; a --config file may set it)."),
    drag_sizes: Optional[str] = typer.Option(None, "--drag-sizes", help="Comma list of feature sizes with drag maps (default: all down blocks)."),
    stage1_steps: Optional[int] = typer.Option(None, "--stage1-steps", min=0, help="Default 200 (a --config file may set it)."),
    stage2_steps: Optional[int] = typer.Option(None, "--stage2-steps", min=0, help="Default 100 (a --config file may set it)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Steps of a single stage (overrides its own count) (default 0; a --config file may set it)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default 4 (a --config file may set it)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 4e-4 (a --config file may set it)."),
    stage2_lr: Optional[float] = typer.Option(None, "--stage2-lr", help="Stage 2's own peak learning rate (default: --lr; a --config file may set it)."),
    num_drags: Optional[int] = typer.Option(None, "--num-drags", min=1, help="Default 10 (a --config file may set it)."),
    stage1_target: Optional[Stage1Target] = typer.Option(None, "--stage1-target", help="Stage 1's splatter target: the target state's own (target, the paper's Eq. 5; default) or the source's carried by the true part motion (carried: aligned with the input pixels) (a --config file may set it)."),
    zero_drag_prob: Optional[float] = typer.Option(None, "--zero-drag-prob", min=0.0, max=1.0, help="Share of training pairs made still: the same drags with zero displacement and the source state as the target, so the model learns that no drag means no motion (default 0; a --config file may set it)."),
    stage1_motion_weight: Optional[float] = typer.Option(None, "--stage1-motion-weight", min=0.0, help="Stage 1: add this x the L2 mean over the source's Gaussians on the moving part, in still pairs too (default 0: the paper's plain L2; a --config file may set it)."),
    drag_noise: Optional[float] = typer.Option(None, "--drag-noise", help="Std of the training noise on drag ends (px of a 512 image) (default 2.0; a --config file may set it)."),
    render_size: Optional[int] = typer.Option(None, "--render-size", help="Default 0 (a --config file may set it)."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights"),
    lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights"),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, help="TOML/JSON with any training option (e.g. configs/paper.toml); flags given win."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Default 0 (a --config file may set it)."),
    resume: bool = typer.Option(True, "--resume/--restart"),
):
    """Two-stage PartRM training (stage 1: L2 to the Gaussian database; stage 2: MSE + LPIPS + alpha)."""
    cfg = _train_options(config, data=str(data), out=str(out), stage=stage, mode=mode, splat_size=splat_size, init=str(init) if init else None, lgm_frame=_frame(lgm_frame),
                         gsdb=str(gsdb) if gsdb else None, model=model, drag_sizes=_sizes(drag_sizes), stage1_steps=stage1_steps,
                         stage2_steps=stage2_steps, steps=steps, batch_size=batch_size, lr=lr, stage2_lr=stage2_lr, num_drags=num_drags, drag_noise_px=drag_noise,
                         stage1_target=stage1_target, stage1_motion_weight=stage1_motion_weight,
                         zero_drag_prob=zero_drag_prob,
                         render_size=render_size, seed=seed, vgg_weights=str(vgg_weights) if vgg_weights else None,
                         lpips_weights=str(lpips_weights) if lpips_weights else None)
    result = training.train(cfg, resume=resume)
    typer.echo(f"stage {cfg.stage}: {result.steps} steps in {result.seconds:.0f} s, last loss {result.losses[-1] if result.losses else float('nan'):.4f} -> {result.model_path}")


@app.command("eval")
def evaluate(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="PartRM checkpoint (omit to evaluate only the baselines)."),
    data: Path = typer.Option(Path("data"), "--data"),
    gsdb: Optional[Path] = typer.Option(None, "--gsdb", help="Teacher database for the static/oracle baselines (default DATA/gsdb.h5)."),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Folder for results.md, samples.csv, results.json."),
    split: Split = typer.Option("test", "--split", help="Held-out objects (test), the training objects, or all."),
    num_drags: str = typer.Option("10", "--num-drags", help="Drags per view; a comma list runs the Table-2 ablation."),
    eval_size: int = typer.Option(256, "--eval-size", help=f"Evaluation render size in pixels (at least {evaluation.MIN_EVAL_SIZE})."),
    max_sequences: Optional[int] = typer.Option(None, "--max-sequences", help="Evaluate at most this many sequences (>= 1; default all)."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights"),
    lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights"),
    seed: int = typer.Option(0, "--seed"),
    device: Device = typer.Option("auto", "--device", help="auto: CUDA when there is one, else the CPU."),
):
    """Benchmark on held-out objects: full-image and motion-region PSNR/SSIM/LPIPS of the 8 non-input views at 256x256,
    3D motion errors, per group (seen categories / unseen category) and category, with static, oracle and zero-drag rows."""
    check_seed(seed)
    counts = _drag_counts(num_drags)
    configs = [evaluation.EvalConfig(data=str(data), out=str(out if len(counts) == 1 else out / f"drags{n}"),
                                     split=None if split == "all" else split, num_drags=n, eval_size=eval_size, seed=seed,
                                     max_sequences=max_sequences, vgg_weights=str(vgg_weights) if vgg_weights else None,
                                     lpips_weights=str(lpips_weights) if lpips_weights else None)
               for n in counts]  # every value is checked before the model loads
    dev = _device(device)
    model = load_model(checkpoint).to(dev) if checkpoint else None
    db_path = gsdb or store.gsdb_file(data)
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
    drags_json: Optional[Path] = typer.Option(None, "--drags", exists=True, help="JSON list of [x0, y0, x1, y1]."),
    state: Optional[str] = typer.Option(None, "--state", help="Use this dataset state's rendered views as input (with --data)."),
    data: Path = typer.Option(Path("data"), "--data"),
    image: Optional[Path] = typer.Option(None, "--image", exists=True, help="A single RGBA/RGB image (needs --zero123-weights)."),
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
    """Predict the moved state from one view + drags: PLY, turntable strip/GIF, drags image."""
    _check_sh_degree(sh_degree)
    check_seed(seed)
    try:
        drags_px = inf.parse_drags(drag, drags_json)
        model = load_model(checkpoint)
        size = input_size(model)
        if state is not None:
            rgbd = mode_of(model) == "rgbd"
            views = inf.dataset_views(data, state, size, depth=rgbd, splat_size=model.config.splat_size if rgbd else 128)
        elif image is not None and mode_of(model) == "rgbd":
            raise inf.InputError(f"{checkpoint} is an RGB-D model: it needs depth for every input view; give --state (with --data) "
                                 "instead of --image (generated views have no depth)")
        elif image is not None:
            views = inf.zero123pp_views(image, zero123_weights, size)
        else:
            raise inf.InputError("give --state (with --data) or --image")
        inf.check_drags_in_image(drags_px, views.first_rgba.shape[1], views.first_rgba.shape[0])
        gaussians, used = inf.predict(model, views, drags_px, num_drags, region, sam_checkpoint, rule, seed)
    except ImportError as exc:  # an optional package (.[sam], .[diffusers]) that is not installed
        raise BadInput(str(exc)) from None
    for path in inf.write_outputs(out, gaussians, views, used, sh_degree=sh_degree, up=up):
        typer.echo(str(path))


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
    splat_size: int = typer.Option(128, "--splat-size", min=1, help="--source render: S of the [4, 14, S, S] images (LGM big 128, tiny 32); divides the render size."),
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
