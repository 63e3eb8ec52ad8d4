"""The toolkit's one adapter to Blender: a Blender worker process.

Blender runs only in worker processes (``blender_scripts/render_worker.py``), each a
fresh interpreter started with ``sys.executable -m blender_scripts.render_worker``
that imports bpy itself (forking after ``import bpy`` halves render speed and
``spawn`` inherits bpy's ``sys.path``; a fresh interpreter has neither problem). This
module never imports bpy, nor anything of ``blender_scripts``: it names the worker's
module only to start it.

A worker reads render jobs (``store.RenderJob``, one JSON line each, ``store.render_job_line``)
and answers with events (one JSON line each): ``ready`` once, a ``state`` event per state
(``store.state_event``) and a ``job`` event when a job is done.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from partdrag4d import store

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_MODULE = "blender_scripts.render_worker"
"""The worker's module, run with ``python -m`` from ``REPO_ROOT`` (the only place the
toolkit names ``blender_scripts``)."""


def worker_env() -> dict:
    """The environment of a worker: this checkout's code first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class BlenderWorker:
    """One Blender worker process: send a job, read its events. Starting it waits for its
    ``ready`` event (``ready``: pid, threads, bpy_version, device, device_note (None unless
    a ``--device`` wish was not met)); a worker that does not start raises RuntimeError."""

    def __init__(self, threads: int, log_dir: Path, index: int, verbose: bool = False, device: str = "cpu"):
        self.log_path = log_dir / f"worker-{index}-{time.monotonic_ns()}.log"
        self.scratch = Path(tempfile.mkdtemp(prefix=f"scratch-{index}-", dir=log_dir))
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", WORKER_MODULE, "--threads", str(threads), "--scratch", str(self.scratch),
               "--device", device, "--parent-pid", str(os.getpid())]
        if verbose:
            cmd.append("--verbose")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=worker_env(), cwd=str(REPO_ROOT), text=True, bufsize=1)
        ready = self.read()
        self.ready = ready or {}
        if ready is None or ready.get("event") != "ready":
            reason = self.death_reason()
            self.kill()
            self.close(timeout=5)
            raise RuntimeError(f"render worker failed to start: {reason}")

    @property
    def device_note(self) -> str | None:
        return self.ready.get("device_note")

    def read(self) -> dict | None:
        """The next event, or None when the worker's result channel closed (it died or ended)."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                return None
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue

    def send(self, job: store.RenderJob) -> None:
        self.proc.stdin.write(store.render_job_line(job))
        self.proc.stdin.flush()

    def death_reason(self) -> str:
        """Why the worker stopped (signal or exit code, and the last lines of its log)."""
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        self._log.flush()
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        tail = " | ".join(lines[-3:])[-400:]
        if code is None:
            what = "stopped answering"
        elif code < 0:
            what = f"was killed by {signal.Signals(-code).name}"
        else:
            what = f"exited with code {code}" + (" (abort)" if code == 134 else "")
        return f"render worker {what}" + (f"; last output: {tail}" if tail else "")

    def close(self, timeout: float = 60.0) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError, BrokenPipeError):
            self.kill()
        finally:
            self._log.close()
            shutil.rmtree(self.scratch, ignore_errors=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


__all__ = ["BlenderWorker", "REPO_ROOT", "WORKER_MODULE", "worker_env"]
