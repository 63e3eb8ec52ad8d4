"""The training and evaluation commands' options come from their configs' fields
(``partdrag4d.options``): every offered field is a flag whose ``--help`` shows the field's
default, a config file and the flags meet the same checks, and the flags given win."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from partrm import cli, evaluate as evaluation, train as training
from partrm.cli import app
from partrm.train import TrainConfig


def _flag(f: dataclasses.Field) -> str:
    return (f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))[0]


def _offered(cls, command: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata and (f.metadata["commands"] is None or command in f.metadata["commands"])]


@pytest.fixture
def captured(monkeypatch):
    """``training.train`` replaced: the config each command would train with."""
    seen = []

    def fake_train(cfg, resume=True, stop_after=None):
        seen.append((cfg, resume))
        return training.TrainResult(run=Path(cfg.out), steps=0)

    monkeypatch.setattr(training, "train", fake_train)
    return seen


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


@pytest.mark.parametrize("command, cls", [("train", TrainConfig), ("pretrain-lgm", TrainConfig), ("eval", evaluation.EvalConfig)])
def test_help_lists_every_offered_field_with_its_default(command, cls):
    result = _invoke(command, "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    flags = {o for p in typer.main.get_command(app).commands[command].params for o in p.opts}
    offered = {_flag(f) for f in _offered(cls, command)}
    assert offered <= flags and all(flag in text for flag in offered)
    assert ("--l2-steps" in flags, "--stage" in flags, "--split" in flags) == {
        "train": (False, True, False), "pretrain-lgm": (True, False, False), "eval": (False, False, True)}[command]
    shown = {"train": "(200)", "pretrain-lgm": "runs/teacher", "eval": "256"}[command]  # stage1_steps, out, eval_size
    assert f"[default: {shown}]" in text


def test_flags_and_config_file_reach_the_training_config(captured, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('lr = 2e-4\nstage1_steps = 7\ndata = "from-file"\nstage1_target = "carried"\n')
    result = _invoke("train", "--config", str(config), "--stage1-steps", "9", "--drag-sizes", "8,16", "--init", "w.safetensors",
                     "--lgm-frame", "auto", "--drag-noise", "0.5", "--betas", "0.8,0.9", "--no-progress", "--restart")
    assert result.exit_code == 0, result.output
    cfg, resume = captured[-1]
    assert (cfg.lr, cfg.stage1_steps, cfg.data, cfg.stage1_target) == (2e-4, 9, "from-file", "carried")  # flags given win
    assert (cfg.drag_sizes, cfg.init, cfg.lgm_frame, cfg.drag_noise_px, cfg.betas) == ((8, 16), "w.safetensors", None, 0.5, (0.8, 0.9))
    assert cfg.progress is False and resume is False and cfg.out == "runs/partrm"

    result = _invoke("pretrain-lgm", "--l2-steps", "5", "--steps", "3", "--lgm-weights", "w.safetensors")
    assert result.exit_code == 0, result.output
    cfg, resume = captured[-1]
    assert (cfg.stage, cfg.teacher_l2_steps, cfg.steps, cfg.init, cfg.out, resume) == ("teacher", 5, 3, "w.safetensors", "runs/teacher", True)


def test_range_and_choice_checks_are_the_configs(captured, tmp_path):
    cases = {
        ("--zero-drag-prob", "1.5"): "error: zero_drag_prob must be in [0, 1], got 1.5",
        ("--batch-size", "0"): "error: batch_size must be >= 1, got 0",
        ("--seed", "-1"): "error: seed must be an integer from 0 to 4294967295, got -1",
        ("--drag-sizes", "8,x"): "error: --drag-sizes must be a comma list of int values, got '8,x'",
    }
    for args, expected in cases.items():
        result = _invoke("train", "--out", str(tmp_path / "run"), *args)
        assert result.exit_code == 2 and result.stderr.strip().startswith(expected), (args, result.output)
    bad = tmp_path / "bad.toml"
    bad.write_text("zero_drag_prob = 1.5\n")
    result = _invoke("train", "--config", str(bad))
    assert result.exit_code == 2 and "zero_drag_prob must be in [0, 1], got 1.5" in result.stderr
    assert _invoke("train", "--stage", "teacher").exit_code == 2  # the teacher is pretrain-lgm
    assert not captured and not (tmp_path / "run").exists()


def test_eval_flags_reach_its_configs(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(cli, "GaussianDatabase", lambda path: object())
    monkeypatch.setattr(evaluation, "evaluate", lambda cfg, model, db: seen.append(cfg) or evaluation.EvalResult(markdown=""))
    monkeypatch.setattr(evaluation, "write_outputs", lambda result, out, cfg: None)
    (tmp_path / "gsdb.h5").write_text("")
    result = _invoke("eval", "--data", str(tmp_path), "--out", str(tmp_path / "e"), "--split", "all", "--num-drags", "1,5",
                     "--no-motion-3d", "--categories", "laptop,door")
    assert result.exit_code == 0, result.output
    assert [(c.num_drags, c.out, c.split, c.motion_3d, c.categories) for c in seen] == [
        (n, str(tmp_path / "e" / f"drags{n}"), None, False, ("laptop", "door")) for n in (1, 5)]
    for args, expected in {("--num-drags", "0"): "error: num_drags must be >= 1, got 0",
                           ("--seed", "-1"): "error: seed must be an integer from 0 to 4294967295, got -1",
                           ("--eval-size", "8"): "error: eval_size must be >= 16 pixels"}.items():
        result = _invoke("eval", "--data", str(tmp_path), *args)
        assert result.exit_code == 2 and result.stderr.strip().startswith(expected), (args, result.output)


def test_old_runs_resume_from_their_state_json(tmp_path):
    """A checkpoint's step record is trainer_state.json; a run written when it was state.json still resumes."""
    old, new = tmp_path / "checkpoints" / "step_0000002", tmp_path / "checkpoints" / "step_0000004"
    old.mkdir(parents=True)
    (old / training.OLD_CHECKPOINT_RECORD).write_text('{"step": 2}')
    assert training.latest_checkpoint(tmp_path) == old and training.checkpoint_record(old).name == "state.json"
    new.mkdir()
    (new / training.CHECKPOINT_RECORD).write_text('{"step": 4}')
    assert training.latest_checkpoint(tmp_path) == new and training.checkpoint_record(new).name == "trainer_state.json"


def _commands(group, path=()):
    for name, command in getattr(group, "commands", {}).items():
        if getattr(command, "commands", None):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def test_help_shows_bracketed_text_rich_would_read_as_markup():
    """``[x0, y0, x1, y1]`` in a help text is rich markup unless escaped: it vanished from ``--help``."""
    import importlib
    import re

    checked = 0
    for module in ("partrm.cli", "partdrag4d.cli"):
        app_ = importlib.import_module(module).app
        for path, command in _commands(typer.main.get_command(app_)):
            result = CliRunner().invoke(app_, [*path, "--help"], env={"COLUMNS": "250"})
            assert result.exit_code == 0, (path, result.output)
            shown = re.sub(r"[\s│]", "", result.output)
            for param in command.params:
                for group in re.findall(r"\[[^\]]*\]", (getattr(param, "help", None) or "").replace("\\[", "[")):
                    checked += 1
                    assert re.sub(r"\s", "", group) in shown, (module, path, param.name, group)
    assert checked >= 2  # infer --drags, gsdb build --splat-size
