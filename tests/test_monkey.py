"""Sync code under gevent.monkey: a handler that, per message, calls a local
HTTP service with ``requests`` and sleeps with ``time.sleep`` does not stall
the other connections.  The server is a subprocess that monkey-patches before
anything else (this pytest process is never patched); the slow HTTP service
runs here, in real threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gevent
import pytest

import gws13

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10
BACKEND_DELAY = 0.4   # the HTTP service's latency
HANDLER_SLEEP = 0.2   # the handler's own time.sleep per message
CLIENTS = 50

SERVER = textwrap.dedent('''
    import sys

    if sys.argv[2] == "patched":
        from gevent import monkey
        monkey.patch_all()

    import time

    import requests
    from gevent import pywsgi

    import gws13

    backend = sys.argv[1]


    def handler(ws):
        session = requests.Session()  # plain blocking code, as in any sync app
        for message in ws:
            reply = session.get(backend, params={"tag": message}, timeout=10)
            time.sleep(%r)
            ws.send(reply.text)


    server = pywsgi.WSGIServer(("127.0.0.1", 0), gws13.websocket_app(handler),
                               handler_class=gws13.WebSocketHandler, log=None)
    server.start()
    print(server.server_port, flush=True)
    server.serve_forever()
''' % HANDLER_SLEEP)


class SlowService(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(BACKEND_DELAY)
        body = ("answer to " + self.path.partition("tag=")[2]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def backend():
    ThreadingHTTPServer.request_queue_size = 256  # 50 connections at once
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowService)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/slow"
    httpd.shutdown()
    httpd.server_close()
    thread.join(TIMEOUT)


@pytest.fixture
def sync_server(backend, tmp_path):
    """Start the sync-style server in a subprocess ("patched" or "unpatched")."""
    script = tmp_path / "sync_server.py"
    script.write_text(SERVER)
    started = []

    def start(mode):
        proc = subprocess.Popen([sys.executable, str(script), backend, mode], cwd=str(ROOT),
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()  # the port, once listening
        assert line.strip().isdigit(), proc.stderr.read() if proc.poll() is not None else line
        return f"ws://127.0.0.1:{int(line)}"

    yield start
    for proc in started:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


def round_trips(url, n):
    """Connect ``n`` clients, then have all of them send at once; returns
    (seconds from the sends to the last answer, answers by client)."""
    clients = [gevent.spawn(gws13.connect, url, timeout=TIMEOUT) for _ in range(n)]
    gevent.joinall(clients, timeout=30, raise_error=True)
    sockets = [job.value for job in clients]
    go = gevent.event.Event()

    def ask(i, ws):
        go.wait()
        ws.send(f"client-{i}")
        answer = ws.receive(timeout=60)
        return answer

    jobs = [gevent.spawn(ask, i, ws) for i, ws in enumerate(sockets)]
    gevent.sleep(0)  # everyone waits at the start line
    start = time.monotonic()
    go.set()
    gevent.joinall(jobs, timeout=90, raise_error=True)
    elapsed = time.monotonic() - start
    for ws in sockets:
        ws.close()
    return elapsed, [job.value for job in jobs]


def test_fifty_clients_take_about_one_latency_when_patched(sync_server):
    url = sync_server("patched")
    single, answers = round_trips(url, 1)  # one request's latency (includes warm-up)
    assert answers == ["answer to client-0"]
    assert single >= BACKEND_DELAY + HANDLER_SLEEP

    elapsed, answers = round_trips(url, CLIENTS)
    assert answers == [f"answer to client-{i}" for i in range(CLIENTS)]
    serial = CLIENTS * (BACKEND_DELAY + HANDLER_SLEEP)  # 30 s if one blocked the rest
    # close to one latency: concurrent, not 50x; generous for a loaded machine
    assert elapsed < max(3 * single, single + 1.5), f"{elapsed:.2f}s for {CLIENTS} vs {single:.2f}s for 1"
    assert elapsed < serial / 10


def test_the_same_handler_stalls_everyone_without_monkey_patching(sync_server):
    """The control: without patch_all the blocking calls hold the whole
    process, so the measurement above would catch a stall."""
    url = sync_server("unpatched")
    n = 4
    elapsed, answers = round_trips(url, n)
    assert answers == [f"answer to client-{i}" for i in range(n)]
    assert elapsed >= 0.9 * n * (BACKEND_DELAY + HANDLER_SLEEP), f"{elapsed:.2f}s"
