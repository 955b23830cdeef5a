"""Every code block in README.md and docs/ runs as written, or says why not.

The convention (docs/contributing.md):

- a ```python block is run, each in its own Python process, from an empty
  directory.  A server it starts (``serve_forever``, ``bottle.run``) is moved
  to an ephemeral loopback port; a block that only defines a WSGI ``app`` is
  served with ``gws13.WebSocketHandler``.  Once a server listens, a WebSocket
  client connects to it (path ``/``, or the one named by a
  ``<!-- docs-test: ws=/path -->`` comment on the line before the block),
  sends a message and expects it back in the reply; then the process is
  stopped.  A block that starts no server must exit with status 0.
- a block whose info string holds the word ``fragment`` (```python fragment,
  ```sh fragment) is part of something larger on purpose: not run, but a
  Python fragment must still compile.
- a block of another language without ``fragment`` must carry a
  ``<!-- docs-test: NAME -->`` comment naming the test that uses it
  (``readme-commands``: the README's two commands, checked against .ci/run;
  ``nginx``: tests/test_nginx.py runs docs/deployment.md's nginx config).

Bounded: every process is stopped after at most ``RUN_TIMEOUT`` seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import connect

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 30
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`\n]*)$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<spec>.*?)\s*-->")


@dataclass
class Block:
    path: Path
    line: int
    language: str
    words: list
    marker: str | None
    code: str

    @property
    def id(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def fragment(self):
        return "fragment" in self.words


def blocks_of(path: Path) -> list:
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        words = info.split()
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(previous)
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{fence}\s*$", lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: unclosed code block")
        if not info.startswith("{"):  # a MyST directive ({toctree}, {eval-rst}...) is no code block
            out.append(Block(path, i + 1, words[0] if words else "", words[1:], marker and marker["spec"],
                             "\n".join(body) + "\n"))
        i = j + 1
    return out


def documents() -> list:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
    return [ROOT / "README.md", *docs]


ALL_BLOCKS = [block for path in documents() for block in blocks_of(path)]
PYTHON = [b for b in ALL_BLOCKS if b.language == "python"]


def test_there_are_blocks_to_check():
    assert len(ALL_BLOCKS) > 30 and len([b for b in PYTHON if not b.fragment]) > 15


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.language != "python"], ids=lambda b: b.id)
def test_other_blocks_are_fragments_or_tested_elsewhere(block):
    assert block.language, f"{block.id}: a code block needs a language (```python, ```sh fragment...)"
    assert block.fragment or block.marker, (
        f"{block.id}: a ```{block.language} block is never run: mark it ```{block.language} fragment, or "
        "name the test that uses it with <!-- docs-test: NAME --> on the line before")
    if block.marker:
        assert block.marker in ("readme-commands", "nginx"), f"{block.id}: unknown docs-test {block.marker!r}"


@pytest.mark.parametrize("block", [b for b in PYTHON if b.fragment], ids=lambda b: b.id)
def test_python_fragments_compile(block):
    compile(block.code, block.id, "exec")


HARNESS = textwrap.dedent('''
    import os, runpy, sys
    code_path, ready_path = sys.argv[1], sys.argv[2]

    def announce(port):
        with open(ready_path + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(ready_path + ".tmp", ready_path)

    # Servers the block starts listen on an ephemeral loopback port instead.
    from gevent import pywsgi
    _init, _serve_forever = pywsgi.WSGIServer.__init__, pywsgi.WSGIServer.serve_forever

    def __init__(self, listener, *args, **kwargs):
        if isinstance(listener, tuple):
            listener = ("127.0.0.1", 0)
        _init(self, listener, *args, **kwargs)

    def serve_forever(self, *args, **kwargs):
        self.start()
        announce(self.server_port)
        _serve_forever(self, *args, **kwargs)

    pywsgi.WSGIServer.__init__, pywsgi.WSGIServer.serve_forever = __init__, serve_forever

    namespace = runpy.run_path(code_path, run_name="__main__")
    app = namespace.get("app")
    if callable(app):  # a block that defines a WSGI app without serving it
        import gws13
        pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=gws13.WebSocketHandler).serve_forever()
''')


def run_block(block: Block, tmp_path: Path):
    code = tmp_path / "block.py"
    code.write_text(block.code)
    ready = tmp_path / "port"
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", HARNESS, str(code), str(ready)], cwd=str(tmp_path),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if ready.exists():
            return proc, int(ready.read_text()), log
        if proc.poll() is None:
            raise AssertionError(f"{block.id} neither finished nor served within {RUN_TIMEOUT} s; output:\n"
                                 + log.read_text(errors="replace")[-3000:])
        return proc, None, log
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise


@pytest.mark.parametrize("block", [b for b in PYTHON if not b.fragment], ids=lambda b: b.id)
def test_python_blocks_run(block, tmp_path):
    spec = dict(item.split("=", 1) for item in (block.marker or "").split() if "=" in item)
    proc, port, log = run_block(block, tmp_path)
    try:
        if port is None:
            assert proc.returncode == 0, f"{block.id} failed:\n" + log.read_text(errors="replace")[-3000:]
            assert "ws" not in spec, f"{block.id} was expected to start a server"
            return
        message = "hello from the docs test"
        origin = spec.get("origin")
        extra = {"origin": f"http://127.0.0.1:{port}" if origin == "self" else origin} if origin else {}
        with connect(f"ws://127.0.0.1:{port}{spec.get('ws', '/')}", **extra) as ws:
            ws.send(message)
            reply = ws.recv(timeout=10)
        assert message in reply, f"{block.id}: sent {message!r}, got {reply!r}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, f"{block.id} logged a traceback:\n{output[-3000:]}"


def test_readme_commands_are_what_ci_runs():
    (block,) = [b for b in ALL_BLOCKS if b.marker == "readme-commands"]
    assert block.path.name == "README.md"
    commands = [line.split("#")[0].strip() for line in block.code.splitlines() if line.strip()]
    assert commands == ["pip install -e . && python examples/chat.py", "pip install tox && tox"], commands
    assert (ROOT / "examples" / "chat.py").is_file()
    assert 'bash -c "pip install tox && tox"' in (ROOT / ".ci" / "run").read_text()
