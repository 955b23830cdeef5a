"""The chat demo (examples/chat.py) as a process: how it stops, and the
dashboard it mounts under /dashboard/.
What it does in a browser is in tests/test_browser.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import List, Tuple

import pytest

from conftest import ROOT, connect, stop_process

requests = pytest.importorskip("requests")

CHAT = os.path.join(ROOT, "examples", "chat.py")
READY = re.compile(rb"^gws13 chat on http://127\.0\.0\.1:(\d+)/\n")
TIMEOUT = 15  # seconds, for every wait below

def start_chat(tmp_path, *command: str) -> Tuple[subprocess.Popen, int, str]:
    """Run ``command`` (stdout and stderr to one file) until it prints the
    chat's first line; return the process, the port and the log's path."""
    log_path = str(tmp_path / "chat.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(command), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        with open(log_path, "rb") as log:
            match = READY.match(log.read())
        if match:
            return proc, int(match.group(1)), log_path
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            with open(log_path, "rb") as log:
                pytest.fail(f"chat.py did not start: {log.read()[-2000:]!r}")
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, log_path: str) -> List[str]:
    """Ctrl-C: SIGINT; return the lines printed after the first once it exited."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        pytest.fail("chat.py still runs after SIGINT")
    with open(log_path, encoding="utf-8") as log:
        return log.read().splitlines()[1:]


def test_ctrl_c_stops_the_demo_with_one_line(tmp_path):
    proc, port, log_path = start_chat(tmp_path, sys.executable, CHAT, "--port", "0")
    after = interrupt(proc, log_path)
    assert after == ["gws13 chat: stopped"]
    assert proc.returncode == 0


def test_ctrl_c_closes_an_open_chat_with_1001(tmp_path):
    from websockets.exceptions import ConnectionClosed
    proc, port, log_path = start_chat(tmp_path, sys.executable, CHAT, "--port", "0")
    try:
        with connect(f"ws://127.0.0.1:{port}/ws") as conn:
            assert json.loads(conn.recv(timeout=TIMEOUT))["type"] == "welcome"
            after = interrupt(proc, log_path)
            with pytest.raises(ConnectionClosed):
                while True:
                    conn.recv(timeout=TIMEOUT)
            assert conn.close_code == 1001
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    assert not any("Traceback" in line for line in after), after
    # the access-log line of the WebSocket (a 101), then the one line of the stop
    assert after[-1] == "gws13 chat: stopped" and len(after) <= 2, after


def test_the_dashboard_is_mounted_under_dashboard(tmp_path):
    proc, port, log_path = start_chat(tmp_path, sys.executable, CHAT, "--port", "0")
    base = f"http://127.0.0.1:{port}"
    try:
        page = requests.get(base + "/", timeout=TIMEOUT).text
        assert '<a href="/dashboard/">live dashboard</a>' in page
        dashboard = requests.get(base + "/dashboard/", timeout=TIMEOUT)
        assert dashboard.status_code == 200 and "text/html" in dashboard.headers["Content-Type"]
        # without the slash: sent to the mount point, so that relative links work
        bare = requests.get(base + "/dashboard", timeout=TIMEOUT, allow_redirects=False)
        assert bare.status_code in (301, 302, 308) and bare.headers["Location"].endswith("/dashboard/")
        # not a prefix match on the name
        assert requests.get(base + "/dashboardx", timeout=TIMEOUT).status_code == 404
        assert requests.get(base + "/stats", timeout=TIMEOUT).status_code == 200
    finally:
        stop_process(proc)
