"""What both command lines (``partdrag4d``, ``partrm``) share: the one error convention
(``Typer``: a ``ToolkitError`` is one line on stderr and exit code 2), a command's options
made from a config dataclass's fields (``config_options``), and the write lock +
provenance record around a writing command (``writing``)."""

from __future__ import annotations

import dataclasses
import errno
import functools
import inspect
import sys
import time
import typing
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import typer
from tqdm import tqdm

from partdrag4d import store
from partdrag4d.errors import BadInput, ToolkitError
from partdrag4d.lock import folder_lock
from partdrag4d.options import SEED_MAX, WAIT_HELP, default_of  # noqa: F401 (WAIT_HELP: the commands take it from here)
BAD_INPUT_EXIT = 2


def check_seed(seed: int, flag: str = "--seed") -> int:
    """``seed``, or ``BadInput`` (one line, exit code 2) when it is negative or too large."""
    if not 0 <= seed <= SEED_MAX:
        raise BadInput(f"{flag} must be an integer from 0 to {SEED_MAX}, got {seed}")
    return seed


USER_FIXES = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                        errno.ENOSPC, errno.EDQUOT})
"""``OSError`` numbers of conditions the user fixes: a file or folder they may not read or write
(a read-only ``--out``), a path under a plain file, a full disk or quota."""


def is_bad_input(exc: BaseException) -> bool:
    """``exc`` is bad input or a condition the user fixes (one line, exit code 2), not a bug."""
    return isinstance(exc, (ToolkitError, FileNotFoundError)) or (isinstance(exc, OSError) and exc.errno in USER_FIXES)


def one_line_errors(fn: Callable) -> Callable:
    """``fn`` with bad input (a ``ToolkitError``, a missing input file, or an ``OSError`` of
    ``USER_FIXES`` such as a read-only ``--out``) turned into one line, ``error: <reason>`` on
    stderr, and exit code 2; other exceptions keep their traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_bad_input(exc):
                raise
            _close_progress_bars()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from None

    return run


def _close_progress_bars() -> None:
    """Finish the progress bars a step left open when bad input stopped it, so that the
    error is a line of its own (not glued to a bar, nor followed by one)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class Typer(typer.Typer):
    """``typer.Typer`` whose every command runs through ``one_line_errors``."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(fn: Callable) -> Callable:
            register(one_line_errors(fn))
            return fn

        return decorator


def config_options(cls: type, command: str, *, from_file: bool = False, defaults: Optional[dict[str, Any]] = None,
                   choices: Optional[dict[str, tuple]] = None, lists: tuple[str, ...] = (),
                   ranges: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: the command takes an option per field of the dataclass ``cls`` that is
    offered to ``command`` (``partdrag4d.options.option``), after its own parameters; it
    receives their values as ``options``, ``{field: value}`` in the config's types (a path
    as ``str``, a comma list as a tuple, a ``none`` word as ``None``).

    ``from_file``: the config may also come from a file, so an option not given is left out
    of ``options`` (the file or the field's default decides) and ``--help`` shows the
    field's default. ``defaults``: this command's own defaults (always passed, as given on
    the command line). ``choices``: fewer choices for this command. ``lists``: fields that
    take a comma list here, received as a list (one run per value). ``ranges``: typer checks
    the fields' ``min`` / ``max`` itself (``--help`` shows the range; a value outside it is
    typer's usage error) instead of leaving them to the config's ``check``.

    Besides: a field without a default is a required option; a ``list[...]`` field is a
    repeatable option (given once per value); a ``bool`` field is a ``--x/--no-x`` pair
    unless its ``flags`` say otherwise: one flag (``("--wait",)``) is a lone switch, a pair
    spelled with a slash (``("--all-pairs/--adjacent-pairs",)``) is that pair. A command's
    positional arguments are its own parameters (``typer.Argument``), before the options."""
    defaults, choices = defaults or {}, choices or {}

    def decorate(fn: Callable) -> Callable:
        hints = typing.get_type_hints(cls)
        offered = [f for f in dataclasses.fields(cls) if f.metadata and _offered(f, command)]
        specs = [_OptionSpec(f, hints[f.name], from_file, defaults, choices.get(f.name), f.name in lists, ranges)
                 for f in offered]
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "options"]

        @functools.wraps(fn)
        def run(**kwargs: Any) -> Any:
            options = {}
            for spec in specs:
                value = kwargs.pop(spec.name)
                if value is not None or not from_file:
                    options[spec.name] = spec.convert(value)
            return fn(options=options, **kwargs)

        run.__signature__ = inspect.Signature(own + [s.parameter() for s in specs])  # what typer reads
        return run

    return decorate


def _offered(f: dataclasses.Field, command: str) -> bool:
    commands = f.metadata.get("commands")
    return commands is None or command in commands


def _optional_of(hint: Any) -> Any:
    """``X`` for ``Optional[X]``, else ``hint``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


class _OptionSpec:
    """One field as a typer option: its flags, command-line type, default and conversion back."""

    def __init__(self, f: dataclasses.Field, hint: Any, from_file: bool, defaults: dict, choices: Optional[tuple], as_list: bool,
                 ranges: bool = False):
        self.name, self.meta, self.from_file, self.ranges = f.name, f.metadata, from_file, ranges
        self.base = _optional_of(hint)
        self.tuple = typing.get_origin(self.base) is tuple
        self.repeat = typing.get_origin(self.base) is list
        self.required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in defaults
        self.item = typing.get_args(self.base)[0] if self.tuple else self.base
        self.as_list = as_list
        self.choices = choices if choices is not None else self.meta.get("choices")
        self.flags = self.meta.get("flags") or ("--" + f.name.replace("_", "-"),)
        self.own_default = f.name in defaults
        self.default = defaults[f.name] if self.own_default else default_of(f)

    def annotation(self) -> Any:
        if self.choices is not None:
            none = self.meta.get("none")
            return Literal[((none,) if none and none not in self.choices else ()) + tuple(map(str, self.choices))]
        if self.repeat:
            return self.base
        if self.tuple or self.as_list:
            return str
        if self.meta.get("path"):
            return Path
        return self.base

    def shown(self) -> Optional[str]:
        """The default as the command line spells it (None: nothing to show)."""
        value = self.default
        if value is None:
            return self.meta.get("none")
        if isinstance(value, (tuple, list)):
            return ",".join(map(str, value))
        if isinstance(value, bool):
            return self.flags[0] if value else f"--no-{self.flags[0][2:]}"
        return str(value)

    def parameter(self) -> inspect.Parameter:
        flags = self.flags
        if self.base is bool and not self.meta.get("flags"):
            flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
        annotation, help_ = self.annotation(), self.meta.get("help") or None
        checks = {k: self.meta[k] for k in ("min", "max") if self.ranges and self.meta.get(k) is not None}
        if self.meta.get("path") == "file":  # typer checks it: a missing file is its usage error
            checks.update(exists=True, dir_okay=False)
        if self.required:
            info = typer.Option(..., *flags, help=help_, **checks)
        elif self.repeat:
            info = typer.Option(list(self.default), *flags, help=help_)
        elif self.from_file and not self.own_default:
            shown = self.shown()
            info = typer.Option(None, *flags, help=help_, show_default=shown if shown is not None else False)
            annotation = Optional[annotation]
        else:
            default = self.shown() if self.default is None or isinstance(self.default, (tuple, list)) else self.default
            if default is not None and annotation is Path:
                default = Path(default)
            info = typer.Option(default, *flags, help=help_, **checks)
            annotation = Optional[annotation] if default is None else annotation
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)

    def convert(self, value: Any) -> Any:
        """A command-line value in the config's type."""
        if value is None or value == self.meta.get("none"):
            return None
        if isinstance(value, Path):
            return str(value)
        if self.repeat:
            return list(value)
        if self.choices is not None:
            return {str(c): c for c in self.choices}[value]  # a choice in its own type (typer gives strings)
        if self.tuple or self.as_list:
            items = self._items(value)
            return items if self.as_list else tuple(items)
        return value

    def _items(self, text: str) -> list:
        kind = self.item if self.item in (int, float) else str
        try:
            return [kind(x) for x in text.split(",")]
        except ValueError:
            raise BadInput(f"{self.flags[0]} must be a comma list of {kind.__name__} values, got {text!r}") from None


@contextmanager
def writing(folder: Path, command: str, wait: bool, shard: tuple[int, int] | None = None,
             dataset: bool = True) -> Iterator[dict]:
    """Hold ``folder``'s write lock (partdrag4d.lock) for a command; a busy folder raises
    ``FolderBusy`` (one line and exit code 2 through ``Typer``). With a whole dataset
    folder held, staging leftovers of killed runs are deleted first (``dataset=False``: the folder is only where an output file
    goes; nothing else in it is touched). The run is logged in ``provenance/runs.jsonl``
    (not data); the yielded dict takes extra facts (e.g. seconds per step)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(folder, command, wait=wait, shard=shard))  # FolderBusy: a ToolkitError
        except OSError as exc:  # a read-only folder, a path under a file...: the user fixes it
            typer.echo(f"error: cannot lock {folder} for writing: {exc.strerror or exc}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from None
        if dataset and (shard is None or shard[1] == 1):
            store.remove_stale_tree(folder)
        run = {"command": command, "argv": sys.argv[1:], "started_utc": store.utc_now()}
        t0 = time.perf_counter()
        status = "failed"
        try:
            yield run
            status = "ok"
        except typer.Exit as exc:
            status = "ok" if not exc.exit_code else f"exit {exc.exit_code}"
            raise
        except Exception as exc:
            if is_bad_input(exc):
                status = f"exit {BAD_INPUT_EXIT}"
            raise
        finally:
            run.update(status=status, finished_utc=store.utc_now(), seconds=round(time.perf_counter() - t0, 3))
            store.append_provenance(folder, run)
