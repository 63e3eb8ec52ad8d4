"""One home per option: a config dataclass's field says what a command line needs to know
about it in its ``metadata`` (``option``): the help text, the flag names, the allowed
choices and range. The config checks its own values with those (``check``), so a config
file and the command line meet the same rules; ``cliutil.config_options`` turns the fields
into typer options, so ``--help`` shows the field's own default.

No command-line library is imported here: the configs that use it stay plain dataclasses."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

SEED_MAX = 2**32 - 1
"""Seeds are non-negative and fit numpy's legacy seeding (training seeds numpy, torch and random)."""

WAIT_HELP = "If another run writes the folder, wait for it (default: one line naming it, exit code 2)."
"""The help of every writing command's ``--wait``."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (),
           choices: Optional[tuple] = None, min: Optional[float] = None, max: Optional[float] = None,
           none: Optional[str] = None, path: bool | str = False, commands: Optional[tuple[str, ...]] = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a command-line option.

    ``help``: its help text (the default is added by the command line); ``flags``: its flag
    names (default ``--field-name``; short ones too, e.g. ``("--count", "-n")``);
    ``choices``: the values it takes; ``min`` / ``max``: its range; ``none``: the word that
    means ``None`` on a command line or in a file (e.g. ``"auto"``); ``path``: the value is a
    file or folder (the command line shows PATH; ``"file"``: a file that must exist); ``commands``: the commands that offer it
    (``None``: every command built from the config; ``()``: config files only)."""
    metadata = {"help": help, "flags": tuple(flags), "choices": tuple(choices) if choices is not None else None,
                "min": min, "max": max, "none": none, "path": path,
                "commands": tuple(commands) if commands is not None else None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def like(cls: type, name: str, **changes: Any) -> Any:
    """The field ``name`` of dataclass ``cls`` again (its rules in one place), with ``changes``
    (e.g. another ``default`` or ``help``)."""
    source = next(f for f in dataclasses.fields(cls) if f.name == name)
    kwargs: dict[str, Any] = {**source.metadata}
    if source.default is not dataclasses.MISSING:
        kwargs["default"] = source.default
    if source.default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = source.default_factory
    kwargs.update(changes)
    return option(**kwargs)


def meta(f: dataclasses.Field, key: str) -> Any:
    return f.metadata.get(key)


def default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _number(x: float) -> str:
    return f"{x:g}"


def check(config: Any) -> None:
    """For a config's ``__post_init__``: a field's ``none`` word becomes ``None``; a value
    outside its field's ``choices`` or ``min`` / ``max`` is refused (``ValueError``, one line
    naming the field). ``None`` is always allowed where the field's type allows it."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is not None and value == f.metadata.get("none"):
            object.__setattr__(config, f.name, None)  # frozen dataclasses too
            continue
        if value is None or not f.metadata:
            continue
        choices, lo, hi = f.metadata.get("choices"), f.metadata.get("min"), f.metadata.get("max")
        if choices is not None and value not in choices:
            words = tuple(map(str, choices)) + ((f.metadata["none"],) if f.metadata.get("none") else ())
            raise ValueError(f"{f.name} must be one of {', '.join(words)}, got {value!r}")
        if lo is not None and hi is not None and not lo <= value <= hi:
            if hints.get(f.name) is int:
                raise ValueError(f"{f.name} must be an integer from {lo} to {hi}, got {value}")
            raise ValueError(f"{f.name} must be in [{_number(lo)}, {_number(hi)}], got {value}")
        if lo is not None and value < lo:
            raise ValueError(f"{f.name} must be >= {_number(lo)}, got {value}")
        if hi is not None and value > hi:
            raise ValueError(f"{f.name} must be <= {_number(hi)}, got {value}")
