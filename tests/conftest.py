"""Shared fixtures: real servers on ephemeral loopback ports.

``serve(app)`` runs a gevent.pywsgi server in its own thread with its own hub,
so blocking clients (websocket-client, the websockets sync client, raw
sockets, requests) can drive it from the test's thread."""

from __future__ import annotations

import gc
import os
import re
import socket
import subprocess
import sys
import threading
import time

import gevent
import pytest
from gevent import pywsgi

import gws13


class RunningServer:
    def __init__(self, app, handler_class=gws13.WebSocketHandler, server_class=pywsgi.WSGIServer, **kwargs):
        self.app = app
        self.handler_class = handler_class
        self.server_class = server_class
        self.kwargs = kwargs
        self.port = None
        self.server = None
        self.hub = None
        self.errors = []
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server thread did not start")

    def _run(self):
        self.hub = gevent.get_hub()
        self.server = self.server_class(("127.0.0.1", 0), self.app, handler_class=self.handler_class,
                                        log=None, **self.kwargs)
        self.server.start()
        self.port = self.server.server_port
        self._ready.set()
        # park the thread's main greenlet until stop() is called
        self._stop_event = gevent.event.Event()
        self._stop_event.wait()
        self.server.stop(timeout=5)
        self._stopped.set()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn, *args):
        """Run ``fn`` in the server's hub (thread-safe)."""
        self.hub.loop.run_callback_threadsafe(fn, *args)

    def stop(self, timeout=10):
        if not self._stopped.is_set():
            self.call(self._stop_event.set)
            self._stopped.wait(timeout)
        self.thread.join(timeout)


@pytest.fixture
def serve():
    servers = []

    def start(app, **kwargs):
        server = RunningServer(app, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def ca():
    """A test certificate authority (trustme)."""
    import trustme
    return trustme.CA()


@pytest.fixture(scope="module")
def cert_files(ca, tmp_path_factory):
    """keyfile and certfile for 127.0.0.1 and localhost, signed by ``ca``."""
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    keyfile, certfile = folder / "key.pem", folder / "cert.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    with open(certfile, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return str(keyfile), str(certfile)


@pytest.fixture(autouse=True)
def _reset_parameters():
    yield
    gws13.parameters.reset()


def wait_until(predicate, timeout=10.0, what="condition"):
    """Poll ``predicate`` until it returns something truthy and return that;
    fail after ``timeout`` seconds.  Sleeps with gevent, so servers running
    in this thread's hub keep running meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(0.02)


class ErrorLog:
    """A server's ``error_log``: what pywsgi's error printer writes."""

    def __init__(self):
        self.lines = []

    def write(self, data):
        self.lines.append(data)

    def writelines(self, lines):
        self.lines.extend(lines)

    def flush(self):
        pass

    @property
    def text(self):
        return "".join(self.lines)


def end_earlier_connections(timeout=10.0):
    """For a test that counts open connections process-wide: start from none.

    A connection an earlier test left open (a client it never closed and the
    garbage collector has not freed yet) is ended in its own hub and named on
    stderr, so that the test it came from can be found."""
    gc.collect()  # a forgotten client socket, once freed, closes its server's side
    deadline = time.monotonic() + 1
    while gws13.metrics()["connections_open"] and time.monotonic() < deadline:
        gevent.sleep(0.01)
    stray = list(gws13._metrics._live)
    for ws in stray:
        sys.stderr.write(f"ending a connection an earlier test left open: {ws!r} {ws.path!r}\n")
        if ws._hub is gevent.get_hub():
            ws._drop()
        else:
            ws._hub.loop.run_callback_threadsafe(ws._drop)
    deadline = time.monotonic() + 2
    while gws13.metrics()["connections_open"] and time.monotonic() < deadline:
        gevent.sleep(0.01)
    for ws in list(gws13._metrics._live):
        # its hub did not run the callback: that thread's loop is gone (a server
        # thread that ended while the connection was closing), nothing else will
        sys.stderr.write(f"its hub is gone: ending {ws!r} here\n")
        ws._drop()
    wait_until(lambda: gws13.metrics()["connections_open"] == 0, timeout, f"{len(stray)} stray connections to end")


def raw_connect(port, path="/", headers=None, key="dGhlIHNhbXBsZSBub25jZQ==", version="13",
                timeout=5.0):
    """Open a TCP connection and send a handshake; return (sock, status, headers, rest)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, hdrs, rest = read_response_head(sock)
    if status != 101:  # an HTTP answer: read its whole body
        length = int(hdrs.get("content-length", 1 << 30))  # without one: until EOF
        while len(rest) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
    return sock, status, hdrs, rest


def read_response_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


class RawClient:
    """A hand-driven client over a raw socket: send any bytes, read frames back
    through gws13's own protocol core (client side)."""

    def __init__(self, port, path="/", headers=None, timeout=5.0, **handshake):
        from gws13.protocol import Protocol
        self.sock, self.status, self.headers, rest = raw_connect(port, path, headers, timeout=timeout,
                                                                 **handshake)
        self.proto = Protocol(client=True, max_frame_size=2 ** 30, max_message_size=2 ** 30)
        self.events = []
        if rest:
            self.events += self.proto.receive_data(rest)

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=True):
        from gws13.frames import apply_mask, encode_header
        key = b"\x01\x02\x03\x04" if mask else None
        head = bytearray(encode_header(opcode, len(payload), fin, False, key))
        head[0] |= rsv << 4
        self.sock.sendall(bytes(head) + (apply_mask(payload, key) if mask else payload))

    def next_event(self, timeout=5.0):
        """The next event from the server, or None at EOF."""
        self.sock.settimeout(timeout)
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.events += self.proto.receive_data(data)
        return self.events.pop(0)

    def read_until_close(self, timeout=5.0):
        """Events until the server's close frame (returned last) or EOF."""
        out = []
        while True:
            event = self.next_event(timeout)
            if event is None:
                return out
            out.append(event)
            if type(event).__name__ == "Close":
                return out

    def at_eof(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_example(script, log_path, *args):
    """Run ``examples/<script> --port 0 [args]`` (output to ``log_path``);
    return (process, port) once it prints the address it listens on."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", script), "--port", "0",
                                 *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    match = None
    while match is None and proc.poll() is None and time.monotonic() < deadline:
        with open(log_path, "rb") as log:
            match = re.search(rb"(?:http|ws)://127\.0\.0\.1:(\d+)/", log.read())
        if match is None:
            time.sleep(0.05)
    if match is None:
        stop_process(proc)
        with open(log_path, "rb") as log:
            raise RuntimeError(f"{script} did not start: {log.read()[-2000:]!r}")
    return proc, int(match.group(1))


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def connect(url, timeout=5, **kwargs):
    """A `websockets` sync client with bounded waits and no proxy lookup."""
    from websockets.sync.client import connect as websockets_connect
    kwargs.setdefault("open_timeout", timeout)
    kwargs.setdefault("close_timeout", timeout)
    return websockets_connect(url, proxy=None, **kwargs)


def close_code_after(conn, send=None, timeout=5):
    """Send ``send`` (if any) on a `websockets` client, then read until the
    server closes; return its close code."""
    import pytest
    from websockets.exceptions import ConnectionClosed
    if send is not None:
        conn.send(send)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            conn.recv(timeout=timeout)
    return info.value.rcvd.code


def check_per_route_parameters(url, timeout=5):
    """For a framework integration's app with three routes: /default echoes
    with the defaults, /small has max_message_size=50, /proto speaks
    subprotocols chat.v2/chat.v1 and sends back the one chosen."""
    with connect(url + "/default") as conn:
        conn.send("x" * 100)
        assert conn.recv(timeout=timeout) == "x" * 100
    with connect(url + "/small") as conn:
        conn.send("y" * 50)
        assert conn.recv(timeout=timeout) == "y" * 50
        assert close_code_after(conn, "y" * 51) == 1009
    with connect(url + "/proto", subprotocols=["chat.v1"]) as conn:
        assert conn.subprotocol == "chat.v1"
        assert conn.recv(timeout=timeout) == "chat.v1"


def echo_from_greenlets(url, clients, messages, timeout=5, **connect_kwargs):
    """``clients`` gws13.connect clients in greenlets of this thread, each
    sending ``messages`` distinct messages and checking every echo."""
    import gevent

    import gws13

    def one(i):
        ws = gws13.connect(url, **connect_kwargs)
        try:
            for j in range(messages):
                ws.send(f"{i}/{j}" * 100)
                assert ws.receive(timeout=timeout) == f"{i}/{j}" * 100
        finally:
            ws.close()
        return i

    jobs = [gevent.spawn(one, i) for i in range(clients)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert sorted(job.value for job in jobs) == list(range(clients))
