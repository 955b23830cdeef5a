"""Helpers for the compatibility tests: the example-mirroring apps under
``tests/compat_apps/`` run as their own processes on free loopback ports;
headless Chromium (Playwright, the system binary) for the apps that are pages."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

import pytest

from conftest import wait_until  # noqa: F401  (the compat tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "compat_apps"
TIMEOUT = 10
CHROMIUM = os.environ.get("GWS13_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """One example app running as ``python <script> <port> [args]``."""

    def __init__(self, script: Path, log_path: Path, *args: str, env: Optional[dict] = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(script.parent)]),
                       PYTHONUNBUFFERED="1")
        environ.update(env or {})
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(script), str(self.port), *args],
                                         cwd=str(script.parent), env=environ, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_until(self._listening, what=f"{script.name} to listen")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the app exited with {self.proc.returncode}: {self.log()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)

    def assert_clean(self) -> None:
        """No traceback in the app's output."""
        log = self.log()
        assert "Traceback" not in log, log[-5000:]


@pytest.fixture
def run_app(tmp_path):
    """``run_app("geventwebsocket/echoserver.py", *args)`` -> a running :class:`App`."""
    started: List[App] = []

    def start(relative: str, *args: str, env: Optional[dict] = None) -> App:
        script = APPS / relative
        app = App(script, tmp_path / (script.stem + f"-{len(started)}.log"), *args, env=env)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def chromium_available() -> bool:
    return os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)


needs_chromium = pytest.mark.skipif(not chromium_available(), reason=f"no Chromium at {CHROMIUM}")


@pytest.fixture
def browser(tmp_path):
    """A Chromium context (system binary, fresh profile) with a short default timeout."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            timeout=TIMEOUT * 1000)
        context.set_default_timeout(TIMEOUT * 1000)
        try:
            yield context
        finally:
            context.close()


class Events:
    """A thread-safe record of what a server-side handler saw (the server runs
    in another thread with its own hub)."""

    def __init__(self) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def get(self, timeout: float = TIMEOUT) -> Any:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no server-side event within {timeout}s")

    def empty(self) -> bool:
        return self._queue.empty()
