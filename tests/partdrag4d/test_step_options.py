"""The dataset commands' options come from their configs (``partdrag4d.stepconfig``): each
offered field is a flag of the command with the field's default, and ``config_options``
builds what those commands need (a required option, a repeatable option, a lone switch, a
slash pair, typer-checked ranges, a file that must exist)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import pytest
import typer
from typer.testing import CliRunner

from partdrag4d import stepconfig
from partdrag4d.cli import app
from partdrag4d.cliutil import Typer, config_options
from partdrag4d.options import default_of, option

COMMANDS = {"synth": stepconfig.SynthConfig, "articulate": stepconfig.ArticulateConfig, "render": stepconfig.RenderConfig,
            "drags": stepconfig.DragsConfig, "make-dataset": stepconfig.MakeDatasetConfig}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_an_option_with_its_default(command):
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params if isinstance(p, typer.core.TyperOption)}
    for f in dataclasses.fields(COMMANDS[command]):
        p = params.pop(f.name)
        assert p.opts[0] == (f.metadata["flags"] or ("--" + f.name.replace("_", "-"),))[0].split("/")[0]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert p.required
        else:
            assert p.default == default_of(f) or str(p.default) == str(default_of(f))
    assert sorted(set(params) - {"help"}) == []  # no hand-written option left


@dataclass(frozen=True)
class _Demo:
    out: str = option(help="Where.", path=True)
    tags: list[str] = option(default_factory=lambda: ["all"], help="Repeatable.", flags=("--tag", "-t"))
    wait: bool = option(False, "Lone switch.", flags=("--wait",))
    every: bool = option(True, "Slash pair.", flags=("--every/--some",))
    count: int = option(1, "At least one.", min=1)
    ids: Optional[str] = option(None, "A file that exists.", path="file")


def _demo_app(seen: list) -> Typer:
    demo = Typer()

    @demo.command()
    @config_options(_Demo, "demo", ranges=True)
    def run(options: dict[str, Any]):
        seen.append(_Demo(**options))

    @demo.command()
    def other():  # two commands: typer keeps the command names
        pass

    return demo


def test_config_options_builds_the_dataset_kinds_of_option(tmp_path):
    seen: list = []
    demo = _demo_app(seen)
    ok = CliRunner().invoke(demo, ["run", "--out", "x", "-t", "a", "--tag", "b", "--wait", "--some", "--count", "3"])
    assert ok.exit_code == 0, ok.output
    assert seen == [_Demo(out="x", tags=["a", "b"], wait=True, every=False, count=3)]
    CliRunner().invoke(demo, ["run", "--out", "y"])
    assert seen[-1] == _Demo(out="y")
    for bad in (["run"], ["run", "--out", "x", "--count", "0"], ["run", "--out", "x", "--no-wait"],
                ["run", "--out", "x", "--ids", str(tmp_path / "missing.csv")]):
        assert CliRunner().invoke(demo, bad).exit_code == 2, bad  # typer's usage errors
    assert len(seen) == 2
