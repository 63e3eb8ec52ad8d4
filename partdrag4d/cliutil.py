"""What both command lines (``partdrag4d``, ``partrm``) share: the one error convention
(``Typer``: a ``ToolkitError`` is one line on stderr and exit code 2) and the write lock +
provenance record around a writing command (``writing``)."""

from __future__ import annotations

import errno
import functools
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from tqdm import tqdm

from partdrag4d import store
from partdrag4d.errors import BadInput, ToolkitError
from partdrag4d.lock import folder_lock

WAIT_HELP = "If another run writes the folder, wait for it (default: one line naming it, exit code 2)."
BAD_INPUT_EXIT = 2
SEED_MAX = 2**32 - 1
"""Seeds are non-negative and fit numpy's legacy seeding (training seeds numpy, torch and random)."""


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
