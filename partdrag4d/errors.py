"""The toolkit's one error base. A ``ToolkitError`` is bad input or a condition the user
fixes (a malformed object, a missing file, a busy folder, an unreachable cluster); its
``str`` is the one-line reason. Both command lines print it as ``error: <reason>`` on
stderr and exit with code 2 (``partdrag4d.cliutil.Typer``); anything else is a bug and
keeps its traceback.

Each error also derives from the builtin it replaces (``ValueError``, ``RuntimeError``),
so callers that catch those keep working.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Bad input or a fixable condition; ``str(exc)`` is one line."""


class BadInput(ToolkitError, ValueError):
    """An argument or input file that cannot be used (the message says which and why)."""


class DamagedFile(BadInput):
    """A dataset, database or checkpoint file that is missing, truncated, undecodable or not
    the kind of file expected; the message names the file and what is wrong."""


class ClusterError(ToolkitError, RuntimeError):
    """The Ray cluster cannot be reached, or cannot hold what was asked of it."""


class DiskFull(ToolkitError, OSError):
    """The output's file system is full (or over quota): the run stops with this one line; no
    object is blamed, nothing half-written is left, and a rerun after freeing space resumes."""
