"""gunicorn, as a real process with several workers and real clients:
gws13.gunicorn.GeventWebSocketWorker (WebSockets, graceful 1001 drain on
SIGTERM/SIGQUIT/SIGINT), gunicorn's stock gevent workers running
gws13.websocket_app, the sync worker's clear refusal, and the example config."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gevent
import pytest

import gws13

gunicorn_config = pytest.importorskip("gunicorn.config")

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5
WORKER = "gws13.gunicorn.GeventWebSocketWorker"

APP = textwrap.dedent('''
    import os

    import gevent

    import gws13


    def proc(ws):
        for message in ws:
            if message == "pid":
                ws.send(str(os.getpid()))
            elif message == "stubborn":
                ws.send("ignoring everything from now on")
                while True:  # a handler that never looks at its WebSocket again
                    gevent.sleep(0.5)
            else:
                ws.send(message)


    def index(environ, start_response):
        body = b"plain http from %d" % os.getpid()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


    ws_app = gws13.websocket_app(proc, fallback=index, subprotocols=["echo.v1"],
                                 accept_connection=lambda origin: origin != "https://evil.example")


    def late_start_response(environ, start_response):
        """A framework that calls start_response after the WebSocket (Bottle does)."""
        from gws13.server import websocket_from_environ

        if websocket_from_environ(environ) is None and "wsgi.websocket" not in environ:
            return index(environ, start_response)
        gws13.with_websocket(environ, start_response, proc)
        start_response("101 Switching Protocols", [])
        return []


    def app(environ, start_response):
        if environ["PATH_INFO"] == "/late":
            return late_start_response(environ, start_response)
        return ws_app(environ, start_response)
''')


class Gunicorn:
    """A gunicorn arbiter on an ephemeral port; its log lines are collected."""

    def __init__(self, spec, *args, cwd, workers=2, graceful=5):
        cmd = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "-w", str(workers),
               "--graceful-timeout", str(graceful), "--log-level", "debug", "--access-logfile", "-"]
        if any(setting.name == "control_socket_disable" for setting in gunicorn_config.KNOWN_SETTINGS):
            cmd.append("--no-control-socket")  # several arbiters at once must not share it
        cmd += list(args) + [spec]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(cwd)]), PYTHONUNBUFFERED="1")
        self.workers = workers
        self.graceful = graceful
        self.lines: list[str] = []
        self.access: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self.access), daemon=True)]
        for reader in self._readers:
            reader.start()
        port = self.wait_for(lambda: self._find(r"Listening at: https?://127\.0\.0\.1:(\d+)"))
        self.port = int(port)
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        self.wait_for(lambda: len(self.booted()) >= workers or None)

    def wait_serving(self, timeout=20):
        """Wait until every worker answered a request: a worker signalled before
        it installed its signal handlers would lose the signal (gunicorn race)."""
        import requests

        deadline = time.monotonic() + timeout
        seen = set()
        while not set(self.live_workers()) <= seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {self.live_workers()} not all serving; log:\n" + self.log())
            text = requests.get(self.http + "/", headers={"Connection": "close"}, timeout=TIMEOUT).text
            seen.add(int(text.rpartition(" ")[2]))
            gevent.sleep(0.01)

    def _read(self, stream, sink):
        for line in stream:
            with self._changed:
                sink.append(line.rstrip("\n"))
                self._changed.notify_all()

    def _find(self, pattern):
        for line in self.lines:
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        return None

    def booted(self):
        return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", "\n".join(self.lines))]

    def wait_for(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers_alive()):
                    raise AssertionError("gunicorn did not get there; its log:\n" + self.log())
                self._changed.wait(min(left, 0.2))

    def _readers_alive(self):
        return any(reader.is_alive() for reader in self._readers)

    def log(self):
        return "\n".join(self.lines)

    def live_workers(self):
        return [pid for pid in self.booted() if not gone(pid)]

    def stop(self, sig=signal.SIGTERM):
        """Signal the arbiter; return (seconds until it exited, exit code).
        ``self.worker_exit`` gets the seconds until the last worker exited."""
        workers = self.live_workers()
        start = time.monotonic()
        self.worker_exit = None
        self.proc.send_signal(sig)
        # wait cooperatively: the clients' WebSockets live in this thread's gevent
        # hub and must keep running to answer the server's close frames
        while self.proc.poll() is None:
            if self.worker_exit is None and all(gone(pid) for pid in workers):
                self.worker_exit = time.monotonic() - start
            if time.monotonic() - start > self.graceful + 10:
                raise AssertionError("gunicorn did not exit; its log:\n" + self.log())
            gevent.sleep(0.01)
        code = self.proc.returncode
        elapsed = time.monotonic() - start
        if self.worker_exit is None:
            self.worker_exit = elapsed
        for reader in self._readers:
            reader.join(TIMEOUT)
        return elapsed, code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


def gone(pid):
    """True once process ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped, possibly while reading
        return True


@pytest.fixture
def gunicorn(tmp_path):
    (tmp_path / "wsapp.py").write_text(APP)
    started = []

    def start(*args, spec="wsapp:app", cwd=tmp_path, **kwargs):
        server = Gunicorn(spec, *args, cwd=cwd, **kwargs)
        started.append(server)
        if spec == "wsapp:app":
            server.wait_serving()
        return server

    yield start
    for server in started:
        server.kill()


def connect_to_every_worker(server, want, per_worker=3, want_pid=None, timeout=20):
    """Open connections until ``want`` distinct workers (and ``want_pid``, if
    given) hold ``per_worker`` each: the kernel decides who accepts, and a
    worker that just booted accepts only once it has started.  Connections
    beyond ``per_worker`` are closed.  Returns {pid: [ws, ...]}."""
    by_pid: dict[int, list] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws = gws13.connect(server.url + "/ws", subprotocols=["echo.v1"])
        ws.send("pid")
        group = by_pid.setdefault(int(ws.receive(timeout=TIMEOUT)), [])
        if len(group) < per_worker:
            group.append(ws)
        else:
            ws.close()
        if (len(by_pid) >= want and all(len(g) >= per_worker for g in by_pid.values())
                and (want_pid is None or want_pid in by_pid)):
            break
        gevent.sleep(0.01)
    return by_pid


def exited_on_their_own(server, pids):
    """gunicorn logs "Worker exiting" only for a worker that exits by itself
    (not for one the arbiter SIGKILLs at the end of graceful_timeout)."""
    return all(f"Worker exiting (pid: {pid})" in server.log() for pid in pids)


def assert_clean(server):
    log = server.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log
    assert "SIGKILL" not in log and "graceful timeout" not in log.lower(), log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT],
                         ids=["SIGTERM", "SIGQUIT", "SIGINT"])
def test_every_websocket_of_every_worker_hears_1001_on_shutdown(gunicorn, sig):
    server = gunicorn("-k", WORKER, workers=2, graceful=5)
    by_pid = connect_to_every_worker(server, 2)
    assert set(by_pid) <= set(server.booted()) and len(by_pid) == 2, by_pid
    clients = [ws for group in by_pid.values() for ws in group]
    for i, ws in enumerate(clients):
        assert ws.subprotocol == "echo.v1"
        ws.send(f"before {i}")
        assert ws.receive(timeout=TIMEOUT) == f"before {i}"

    elapsed, code = server.stop(sig)

    for ws in clients:
        assert ws.receive(timeout=TIMEOUT) is None
        assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        ws.close()
    assert code == 0
    assert exited_on_their_own(server, by_pid), server.log()
    # typically well under a second: the closing handshakes are all it waits for
    assert server.worker_exit < server.graceful, f"workers took {server.worker_exit:.1f}s"
    assert_clean(server)
    # the gunicorn handler's access log saw the upgrades (extra connections included)
    upgrades = [line for line in server.access if '"GET /ws HTTP/1.1"' in line]
    assert len(upgrades) >= len(clients) and all(" 101 " in line for line in upgrades), upgrades


def test_stopping_one_worker_leaves_the_others_running(gunicorn):
    server = gunicorn("-k", WORKER, workers=2, graceful=5)
    by_pid = connect_to_every_worker(server, 2)
    assert len(by_pid) == 2, by_pid
    leaving, staying = sorted(by_pid)
    os.kill(leaving, signal.SIGTERM)
    for ws in by_pid[leaving]:
        assert ws.receive(timeout=TIMEOUT) is None and ws.close_code == 1001
        ws.close()
    # the arbiter replaces the worker; the other one's connections never noticed
    server.wait_for(lambda: len(server.booted()) >= 3 or None)
    replacement = server.booted()[-1]
    for ws in by_pid[staying]:
        ws.send("still here")
        assert ws.receive(timeout=TIMEOUT) == "still here"
    server.wait_serving()
    # new connections reach the replacement too
    fresh = connect_to_every_worker(server, 2, per_worker=1, want_pid=replacement)
    assert replacement in fresh and leaving not in fresh
    fresh_clients = [ws for group in fresh.values() for ws in group]
    elapsed, code = server.stop()
    for ws in by_pid[staying] + fresh_clients:
        assert ws.receive(timeout=TIMEOUT) is None and ws.close_code == 1001
    assert code == 0 and exited_on_their_own(server, [leaving, staying, replacement])
    assert "Traceback" not in server.log()


def test_stubborn_handler_is_cut_within_graceful_timeout(gunicorn):
    server = gunicorn("-k", WORKER, workers=1, graceful=3)
    (worker,) = server.booted()
    ws = gws13.connect(server.url + "/ws")
    ws.send("stubborn")
    assert ws.receive(timeout=TIMEOUT) == "ignoring everything from now on"
    calm = gws13.connect(server.url + "/ws")
    elapsed, code = server.stop()
    # the WebSocket itself is closed at once, although its handler never returns
    for client in (ws, calm):
        assert client.receive(timeout=TIMEOUT) is None and client.close_code == 1001
    assert code == 0
    # the worker cuts its stuck handler and exits before the arbiter's SIGKILL
    assert exited_on_their_own(server, [worker]), server.log()
    assert server.worker_exit < server.graceful + 0.5, f"worker took {server.worker_exit:.1f}s"
    assert "killing 1 handler(s)" in server.log()
    assert "SIGKILL" not in server.log()


def test_plain_http_next_to_websockets_on_the_worker(gunicorn):
    import requests

    server = gunicorn("-k", WORKER, workers=2)
    session = requests.Session()
    for _ in range(3):
        response = session.get(server.http + "/", timeout=TIMEOUT)
        assert response.status_code == 200 and response.text.startswith("plain http from ")
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url + "/ws", origin="https://evil.example")
    assert info.value.status == 403
    ws = gws13.connect(server.url + "/ws", origin="https://fine.example")
    ws.send("ok")
    assert ws.receive(timeout=TIMEOUT) == "ok"
    workers = server.live_workers()
    # the session's keep-alive connection is still open, idle: it must not hold
    # the shutdown up until the graceful timeout
    server.stop()
    assert ws.receive(timeout=TIMEOUT) is None and ws.close_code == 1001
    session.close()
    assert_clean(server)
    assert exited_on_their_own(server, workers)
    assert server.worker_exit < server.graceful / 2, f"workers took {server.worker_exit:.1f}s"
    assert "killing" not in server.log()


@pytest.mark.parametrize("worker", ["gevent", "gevent_pywsgi"])
def test_stock_gevent_workers_run_websocket_app(gunicorn, worker):
    """No special worker: websocket_app takes the socket from the environ."""
    import requests

    server = gunicorn("-k", worker, workers=2, graceful=2)
    clients = []
    for i in range(10):
        ws = gws13.connect(server.url + "/ws", subprotocols=["echo.v1"])
        assert ws.subprotocol == "echo.v1"
        clients.append(ws)
    for i, ws in enumerate(clients):
        for message in (f"m{i}", bytes([i]) * 70000):
            ws.send(message)
            assert ws.receive(timeout=TIMEOUT) == message
    for ws in clients:
        ws.close()
        assert ws.close_code == 1000
    with requests.Session() as session:  # keep-alive HTTP on the same app
        for _ in range(3):
            assert session.get(server.http + "/", timeout=TIMEOUT).status_code == 200
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url + "/ws", origin="https://evil.example")
    assert info.value.status == 403
    late = gws13.connect(server.url + "/late")  # start_response after the WebSocket
    late.send("late")
    assert late.receive(timeout=TIMEOUT) == "late"
    late.close()
    assert late.close_code == 1000
    workers = server.live_workers()
    server.stop()
    assert "Traceback" not in server.log() and "[ERROR]" not in server.log(), server.log()
    assert exited_on_their_own(server, workers)


def test_sync_worker_refuses_with_a_clear_500(gunicorn):
    server = gunicorn("-k", "sync", workers=1, graceful=1)
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url + "/ws", timeout=TIMEOUT)
    assert info.value.status == 500
    assert "cannot hand over its socket" in str(info.value)
    server.stop()


def test_example_config_serves_the_echo_example(gunicorn):
    import requests

    server = gunicorn("-c", "examples/gunicorn_conf.py", spec="examples.echo_wsgi:app", cwd=ROOT,
                      workers=1, graceful=3)
    assert "GeventWebSocketWorker" in server.log()
    ws = gws13.connect(server.url + "/echo", subprotocols=["echo"])
    assert ws.subprotocol == "echo"
    ws.send("from the example")
    assert ws.receive(timeout=TIMEOUT) == "from the example"
    assert requests.get(server.http + "/", timeout=TIMEOUT).status_code == 200
    elapsed, code = server.stop()
    assert ws.receive(timeout=TIMEOUT) is None and ws.close_code == 1001
    assert code == 0


HOSTILE = textwrap.dedent('''
    import gws13

    gws13.parameters.handshake_timeout = 2

    from wsapp import app  # noqa: E402
''')

SLOW_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _closed_within(sock, timeout):
    import socket
    import ssl

    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_slowloris_and_idle_keepalive_against_the_worker(gunicorn, tmp_path, tls):
    """The worker's pywsgi handler is gws13's: request heads have
    handshake_timeout (2 s here), the wait for the next request on a keep-alive
    connection gunicorn's --keep-alive (1 s), and with TLS the TLS handshake
    is under the deadline too.  Meanwhile everyone else is served; nothing
    reaches gunicorn's error log."""
    import socket
    import ssl

    (tmp_path / "hostile.py").write_text(HOSTILE)
    args = ["-k", WORKER, "--keep-alive", "1"]
    context = None
    if tls:
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        args += ["--keyfile", str(tmp_path / "key.pem"), "--certfile", str(tmp_path / "cert.pem")]
        context = ssl.create_default_context()
        ca.configure_trust(context)
    server = gunicorn(*args, spec="hostile:app", workers=1)

    def connect(handshake=True):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        if tls and handshake:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        return sock

    def echo():
        url = (f"wss://127.0.0.1:{server.port}/ws" if tls else server.url + "/ws")
        ws = gws13.connect(url, ssl_context=context, timeout=TIMEOUT)
        ws.send("served")
        assert ws.receive(timeout=TIMEOUT) == "served"
        ws.close()

    echo()  # the worker is serving
    began = time.monotonic()
    slow = []
    for _ in range(50):
        sock = connect()
        sock.sendall(SLOW_UPGRADE[:20])  # and never more
        slow.append(sock)
    silent = [connect(handshake=False) for _ in range(20)]  # with TLS: not even a ClientHello
    idle = connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    idle.settimeout(TIMEOUT)
    assert b"200 OK" in idle.recv(4096)
    answered = time.monotonic()
    started = time.monotonic()
    echo()
    assert time.monotonic() - started < 1
    # the idle keep-alive connection goes after --keep-alive, the heads after handshake_timeout
    assert _closed_within(idle, 3)
    assert 0.9 <= time.monotonic() - answered < 1.9
    for sock in slow + silent:
        assert _closed_within(sock, 3)
        sock.close()
    assert 1.9 <= time.monotonic() - began < 4
    idle.close()
    # a bad request line: 400, in the access log, no traceback
    bad = connect()
    bad.sendall(b"BREW /pot HTTP/9.1\r\n\r\n")
    bad.settimeout(TIMEOUT)
    assert bad.recv(4096).startswith(b"HTTP/1.1 400")
    bad.close()
    server.wait_for(lambda: any('"BREW /pot HTTP/9.1"' in line and " 400 " in line for line in server.access))
    elapsed, code = server.stop()
    assert code == 0
    assert_clean(server)
