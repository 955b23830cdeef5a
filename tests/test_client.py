"""gws13.connect: the client against gws13's own server, against an independent
server (the ``websockets`` library) and against a scripted raw TCP server that
answers with whatever handshake a test needs."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import gws13
from conftest import echo_from_greenlets  # noqa: E402
from gws13.handshake import accept_key

websockets_server = pytest.importorskip("websockets.sync.server")

TIMEOUT = 5


# -- a scripted server ----------------------------------------------------------

class HangUp(bytes):
    """An answer after which the scripted server closes the connection."""


class ScriptedServer:
    """Accepts connections on 127.0.0.1 in a thread; for each, reads the request
    head, records it and sends ``respond(request)`` (None: say nothing), then
    keeps reading until EOF and records what the client sent after the head."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[dict] = []
        self.after: list[bytes] = []
        self.eof = threading.Event()
        self._stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT)
                try:
                    self._serve(conn)
                except OSError:
                    pass
                self.eof.set()

    def _serve(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        request = {"line": lines[0], "headers": {}}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            request["headers"][name.strip().lower()] = value.strip()
        self.requests.append(request)
        answer = self.respond(request)
        if answer is None:
            self._stop.wait(TIMEOUT)  # hold the connection, say nothing
            return
        conn.sendall(answer)
        if isinstance(answer, HangUp):
            return
        received = bytearray(rest)
        self.after.append(received)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk

    def close(self):
        self._stop.set()
        self.listener.close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def scripted():
    servers = []

    def start(respond):
        server = ScriptedServer(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def handshake(request, *, accept=None, extra=(), upgrade="websocket", connection="Upgrade",
              status="101 Switching Protocols"):
    """A 101 answering ``request`` (fields can be spoiled one at a time)."""
    key = request["headers"]["sec-websocket-key"]
    lines = [f"HTTP/1.1 {status}"]
    if upgrade:
        lines.append(f"Upgrade: {upgrade}")
    if connection:
        lines.append(f"Connection: {connection}")
    lines.append(f"Sec-WebSocket-Accept: {accept if accept is not None else accept_key(key)}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def echo(ws):
    for message in ws:
        ws.send(message)


def echo_app(environ, start_response):
    return gws13.with_websocket(environ, start_response, echo)


# -- against gws13's server -------------------------------------------------------

def test_messages_of_every_kind_round_trip(serve):
    server = serve(echo_app)
    ws = gws13.connect(server.url + "/room/1?user=ann")
    try:
        assert ws.subprotocol is None
        assert ws.path == "/room/1"
        assert ws.environ["QUERY_STRING"] == "user=ann"
        for message in ["hello", "", "żółw 🐢", b"\x00\xffbinary", b"", "x" * 70000, bytes(range(256)) * 1200]:
            ws.send(message)
            assert ws.receive(timeout=TIMEOUT) == message
        assert ws.ping(b"are you there").wait(TIMEOUT) >= 0
    finally:
        ws.close()
    assert ws.closed and ws.close_code == 1000


def test_response_headers_and_compression_are_exposed(serve):
    server = serve(echo_app)
    ws = gws13.connect(server.url)
    try:
        names = {name.lower() for name, _ in ws.environ["gws13.response_headers"]}
        assert {"upgrade", "connection", "sec-websocket-accept"} <= names
        assert ws.extensions is not None and ws.extensions.startswith("permessage-deflate")
        text = "compress me " * 5000
        ws.send(text)
        assert ws.receive(timeout=TIMEOUT) == text
    finally:
        ws.close()


def test_server_close_code_and_reason_reach_the_client(serve):
    def app(environ, start_response):
        def proc(ws):
            ws.send("bye soon")
            ws.close(4001, "done here")
        return gws13.with_websocket(environ, start_response, proc)

    ws = gws13.connect(serve(app).url)
    assert ws.receive(timeout=TIMEOUT) == "bye soon"
    assert ws.receive(timeout=TIMEOUT) is None
    assert (ws.close_code, ws.close_reason) == (4001, "done here")
    ws.close()  # closing a closed connection does nothing


def test_client_close_code_reaches_the_server(serve):
    seen = []
    done = threading.Event()

    def app(environ, start_response):
        def proc(ws):
            for _ in ws:
                pass
            seen.append((ws.close_code, ws.close_reason))
            done.set()
        return gws13.with_websocket(environ, start_response, proc)

    ws = gws13.connect(serve(app).url)
    ws.send("one")
    ws.close(4002, "client leaving")
    assert done.wait(TIMEOUT)
    assert seen == [(4002, "client leaving")]
    assert ws.close_code == 4002


def test_refused_handshake_raises_with_the_status(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/private":
            return gws13.with_websocket(environ, start_response, echo,
                                        accept_connection=lambda origin: origin == "https://ok.example")
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not here\n"]

    server = serve(app)
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url + "/elsewhere")
    assert info.value.status == 404
    assert "404" in str(info.value) and "not here" in str(info.value)
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url + "/private", origin="https://evil.example")
    assert info.value.status == 403
    ws = gws13.connect(server.url + "/private", origin="https://ok.example")
    ws.send("in")
    assert ws.receive(timeout=TIMEOUT) == "in"
    ws.close()


def test_many_clients_in_greenlets(serve):
    echo_from_greenlets(serve(echo_app).url, clients=30, messages=20)


# -- against an independent server --------------------------------------------------

@pytest.fixture
def websockets_echo():
    """The ``websockets`` library's sync server (it requires masked client
    frames and validates everything a client sends)."""
    chosen = []

    def handler(conn):
        chosen.append(conn.subprotocol)
        for message in conn:
            conn.send(message)

    server = websockets_server.serve(handler, "127.0.0.1", 0, subprotocols=["v2.chat", "v1.chat"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    yield f"ws://127.0.0.1:{port}", chosen
    server.shutdown()
    thread.join(TIMEOUT)


def test_interoperates_with_the_websockets_library(websockets_echo):
    url, chosen = websockets_echo
    ws = gws13.connect(url + "/", subprotocols=["v1.chat", "v2.chat"])
    try:
        assert ws.subprotocol in ("v1.chat", "v2.chat")
        assert ws.extensions is not None and "permessage-deflate" in ws.extensions
        for message in ["text", b"\x01\x02", "y" * 200000, bytes(300000)]:
            ws.send(message)
            assert ws.receive(timeout=TIMEOUT) == message
    finally:
        ws.close()
    assert chosen == [ws.subprotocol]
    assert ws.close_code == 1000


def test_interoperates_without_compression(websockets_echo):
    url, _ = websockets_echo
    with pytest.raises(gws13.InvalidHandshake) as info:  # that server requires a subprotocol
        gws13.connect(url, compression=None)
    assert info.value.status == 400
    ws = gws13.connect(url, compression=None, subprotocols=["v1.chat"])
    try:
        assert ws.extensions is None and ws.subprotocol == "v1.chat"
        ws.send("plain")
        assert ws.receive(timeout=TIMEOUT) == "plain"
    finally:
        ws.close()


# -- the request the client sends ------------------------------------------------------

def test_request_carries_offer_headers_origin_and_credentials(scripted):
    server = scripted(lambda request: handshake(request, extra=["Sec-WebSocket-Protocol: b.v1"]))
    url = f"ws://ann:s%40cret@127.0.0.1:{server.port}/feed/x?since=5"
    ws = gws13.connect(url, subprotocols=["a.v1", "b.v1"], origin="https://app.example",
                       headers=[("X-Token", "t0k"), ("Cookie", "sid=1")], compression=None,
                       close_timeout=0.2)
    try:
        assert ws.subprotocol == "b.v1"
    finally:
        ws.close(code=None)
    request = server.requests[0]
    headers = request["headers"]
    assert request["line"] == "GET /feed/x?since=5 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"])) == 16
    assert headers["sec-websocket-protocol"] == "a.v1, b.v1"
    assert headers["origin"] == "https://app.example"
    assert headers["x-token"] == "t0k" and headers["cookie"] == "sid=1"
    assert base64.b64decode(headers["authorization"].split()[1]) == b"ann:s@cret"
    assert "sec-websocket-extensions" not in headers  # compression=None offers nothing


def test_each_connection_uses_a_fresh_key_and_the_default_offer_compresses(scripted):
    server = scripted(lambda request: handshake(request))
    for _ in range(2):
        gws13.connect(server.url, close_timeout=0.2).close(code=None)
    keys = [r["headers"]["sec-websocket-key"] for r in server.requests]
    assert len(set(keys)) == 2
    assert server.requests[0]["headers"]["sec-websocket-extensions"].startswith("permessage-deflate")
    assert server.requests[0]["line"] == "GET / HTTP/1.1"
    assert server.requests[0]["headers"]["host"] == f"127.0.0.1:{server.port}"


def test_frames_from_the_client_are_masked(scripted):
    from gws13.protocol import Close, Message, Protocol

    server = scripted(lambda request: handshake(request))
    ws = gws13.connect(server.url, compression=None, close_timeout=0.2)
    ws.send("masked?")
    ws.send(b"\x00" * 1000)
    ws.close(1000, "")
    assert server.eof.wait(TIMEOUT)
    # a server-side protocol rejects unmasked frames: these parse cleanly
    events = Protocol(client=False).receive_data(bytes(server.after[0]))
    assert [type(e) for e in events] == [Message, Message, Close]
    assert events[0].data == "masked?" and events[1].data == b"\x00" * 1000
    # and the payload is not on the wire in clear
    assert b"masked?" not in server.after[0]


def test_bytes_right_after_the_101_are_delivered(scripted):
    from gws13.frames import OP_TEXT, encode_frame

    server = scripted(lambda request: handshake(request) + encode_frame(OP_TEXT, b"early bird"))
    ws = gws13.connect(server.url, compression=None, close_timeout=0.2)
    try:
        assert ws.receive(timeout=TIMEOUT) == "early bird"
    finally:
        ws.close(code=None)


# -- what the client refuses ----------------------------------------------------------------

BAD_RESPONSES = {
    "wrong accept": (lambda r: handshake(r, accept="dGhpcyBpcyB3cm9uZw=="), "Sec-WebSocket-Accept"),
    "no upgrade": (lambda r: handshake(r, upgrade=None), "Upgrade: websocket"),
    "other upgrade": (lambda r: handshake(r, upgrade="h2c"), "Upgrade: websocket"),
    "no connection": (lambda r: handshake(r, connection=None), "Connection: Upgrade"),
    "unoffered subprotocol": (lambda r: handshake(r, extra=["Sec-WebSocket-Protocol: zzz"]), "not offered"),
    "two subprotocols": (lambda r: handshake(r, extra=["Sec-WebSocket-Protocol: a.v1, b.v1"]), "several"),
    "unoffered extension": (lambda r: handshake(r, extra=["Sec-WebSocket-Extensions: x-custom"]),
                            "not offered"),
    "not http": (lambda r: b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP"),
    "closed early": (lambda r: HangUp(b"HTTP/1.1 101 Switching"), "closed before"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
def test_invalid_handshake_responses_are_refused(scripted, case):
    respond, message = BAD_RESPONSES[case]
    server = scripted(respond)
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url, subprotocols=["a.v1", "b.v1"], compression=None)
    assert message in str(info.value)
    assert server.eof.wait(TIMEOUT)  # the client closed its socket


def test_subprotocol_answer_to_no_offer_is_refused(scripted):
    server = scripted(lambda r: handshake(r, extra=["Sec-WebSocket-Protocol: chat"]))
    with pytest.raises(gws13.InvalidHandshake, match="none was offered"):
        gws13.connect(server.url)


def test_extension_answer_is_checked_by_the_deflate_module(scripted):
    answer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=20"
    server = scripted(lambda r: handshake(r, extra=[answer]))
    with pytest.raises(gws13.InvalidHandshake):
        gws13.connect(server.url)


def test_refusal_body_and_headers_are_kept(scripted):
    body = b"no websockets for you"
    server = scripted(lambda r: b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url)
    assert info.value.status == 401
    assert info.value.body == body
    assert ("WWW-Authenticate", "Basic") in info.value.headers
    assert "401 Unauthorized" in str(info.value) and "no websockets for you" in str(info.value)


@pytest.mark.parametrize("stall", ["silent", "half a head"])
def test_timeout_bounds_the_handshake(scripted, stall):
    if stall == "silent":
        server = scripted(lambda r: None)
    else:
        def respond(request):
            conn_answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            return conn_answer  # never finishes the head; the server then waits for EOF
        server = scripted(respond)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not complete within 0.5 s"):
        gws13.connect(server.url, timeout=0.5)
    assert 0.4 <= time.monotonic() - start < 3


def test_connection_refused_is_an_oserror():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        gws13.connect(f"ws://127.0.0.1:{port}/", timeout=2)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(url="http://127.0.0.1/"), ValueError, "ws:// or wss://"),
    (dict(url="ws://127.0.0.1/#frag"), ValueError, "fragment"),
    (dict(url="ws:///path"), ValueError, "no host"),
    (dict(url="ws://127.0.0.1/", headers={"Sec-WebSocket-Key": "x"}), ValueError, "set by the handshake"),
    (dict(url="ws://127.0.0.1/", headers={"X-Bad": "a\r\nb"}), ValueError, "line break"),
    (dict(url="ws://127.0.0.1/", subprotocols=["has space"]), ValueError, "HTTP token"),
    (dict(url="ws://127.0.0.1/", subprotocols="chat"), TypeError, "list of non-empty strings"),
    (dict(url="ws://127.0.0.1/", timeout=0), ValueError, "timeout"),
    (dict(url="ws://127.0.0.1/", ssl_context=__import__("ssl").create_default_context()), ValueError,
     "wss://"),
    (dict(url="ws://127.0.0.1/", ping_intervall=3), TypeError, "unknown gws13 parameter"),
    (dict(url="ws://127.0.0.1/", max_message_size=0), ValueError, "max_message_size"),
])
def test_bad_arguments_fail_before_connecting(kwargs, error, message):
    with pytest.raises(error, match=message):
        gws13.connect(**kwargs)


def test_parameters_apply_to_client_connections(serve):
    server = serve(echo_app)
    with gws13.parameterize(max_message_size=1000):
        ws = gws13.connect(server.url)
    try:
        ws.send("a" * 1000)
        assert ws.receive(timeout=TIMEOUT) == "a" * 1000
        ws.send("b" * 1001)  # the echo is over the client's limit: it fails the connection
        assert ws.receive(timeout=TIMEOUT) is None
        assert ws.close_code == 1009
    finally:
        ws.close()


# -- sync scripts under gevent.monkey -----------------------------------------------------------

def test_monkey_patched_sync_script_with_threads(serve):
    server = serve(echo_app)
    script = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import json, sys, threading
        import gws13

        url = sys.argv[1]
        results = {}

        def worker(n):
            ws = gws13.connect(url, timeout=5)
            got = []
            for i in range(5):
                ws.send(f"{n}:{i}")
                got.append(ws.receive(timeout=5))
            ws.close()
            results[n] = got

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        print(json.dumps(results))
    """)
    out = subprocess.run([sys.executable, "-c", script, server.url], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert results == {str(n): [f"{n}:{i}" for i in range(5)] for n in range(8)}


def test_send_hands_every_byte_to_the_kernel_before_it_returns(serve):
    # A client's caller is often a plain thread that blocks outside gevent right
    # after sending (here on a queue.Queue): the hub that would write what is
    # left in the buffer does not run then, so send must not leave any.  The
    # server reads slowly, so the kernel's buffers are full while send runs.
    import queue

    import gevent

    got = queue.Queue()

    def app(ws):
        for _ in range(2):
            total = 0
            for i, piece in enumerate(ws.receive_stream(max_size=None)):
                total += len(piece)
                if i % 4 == 0:
                    gevent.sleep(0.001)
            got.put(total)

    server = serve(gws13.websocket_app(app))
    # write_limit is where a server's send stops returning at once; not a client's
    ws = gws13.connect(server.url, compression=None, write_limit=1 << 20)
    try:
        left = []
        # 32 MiB, more than the kernel's buffers hold: streamed, then whole
        for message in ([b"x" * (1 << 16)] * 512, b"y" * (32 << 20)):
            ws.send(message)
            left.append(ws.buffered_amount)
            assert got.get(timeout=30) == 32 << 20  # this thread blocks outside gevent
        assert left == [0, 0]
    finally:
        ws.close()
