"""A minimal DevTools-protocol client for a headless Chromium: open a page, screenshot
it, send mouse drags. Used by the viewer tests (``tests/partdrag4d/test_viewer.py``) and the
screenshot in docs/viewers.md (``benchmarks/bench_viewer.py``); not part of the toolkit (it needs
the ``test`` extra's ``websockets``).

The browser is Debian's ``chromium-headless-shell`` (its path in the environment
variable ``CHROMIUM_HEADLESS``, which ``.ci/run`` sets); WebGL runs on SwiftShader, so
no GPU or display is needed. Only loopback addresses are used, every wait is bounded,
and the browser's whole process group is killed on close.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image
from websockets.sync.client import connect

ENV_VAR = "CHROMIUM_HEADLESS"


def browser_path() -> Optional[str]:
    """The headless browser from ``$CHROMIUM_HEADLESS`` (None when unset)."""
    return os.environ.get(ENV_VAR) or None


class BrowserError(RuntimeError):
    pass


class HeadlessBrowser:
    """One headless Chromium with one page, driven over the DevTools protocol.

    Use as a context manager; ``close`` (also on errors) kills the browser's process
    group and deletes its profile folder."""

    def __init__(self, executable: str, width: int = 512, height: int = 512, timeout: float = 30.0):
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._profile = tempfile.mkdtemp(prefix="partdrag4d-chromium-")
        args = [
            executable, "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}", "--hide-scrollbars", "--mute-audio", "--no-first-run", "about:blank",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._ws = None
        try:
            port = self._wait_for_port()
            page = self._page_target(port)
            self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def _wait_for_port(self) -> int:
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(f"headless browser exited with code {self._proc.returncode} before it listened")
            if active.is_file():
                lines = active.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.05)
        raise BrowserError(f"headless browser did not open its DevTools port within {self.timeout:.0f} s")

    def _page_target(self, port: int) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.05)
        raise BrowserError("headless browser has no page target")

    def call(self, method: str, **params: Any) -> dict:
        """Send one DevTools command and wait (bounded) for its answer."""
        if self._ws is None:
            raise BrowserError("browser is closed")
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {self.timeout:.0f} s")
            reply = json.loads(self._ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # the browser may already be gone
                pass
            self._ws = None
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait on anything
            pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessBrowser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ actions

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def screenshot(self) -> np.ndarray:
        """The page as [H, W, 3] uint8."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def mouse_drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 12, pause: float = 0.03) -> None:
        """Press the left button at ``start`` (CSS pixels), move to ``end`` in ``steps``, release."""
        x0, y0 = start
        x1, y1 = end
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left", buttons=1, clickCount=1)
        for k in range(1, steps + 1):
            t = k / steps
            self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + t * (x1 - x0), y=y0 + t * (y1 - y0), button="left", buttons=1)
            time.sleep(pause)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1, button="left", buttons=0, clickCount=1)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
