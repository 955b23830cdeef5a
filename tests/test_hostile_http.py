"""Hostile peers against gws13.WebSocketHandler on gevent.pywsgi: slowloris
request heads, idle keep-alive connections, resets and hang-ups in the middle
of a request, oversized heads, applications that raise after the upgrade, and
a server stopped under 200 clients that never answer.  One bad peer must never
hurt the server: each is cut off on time, answered with the right status, and
logged at most once, at DEBUG, without a traceback.

Every client here is a raw socket (plain or TLS, certificates from trustme)."""

from __future__ import annotations

import http.client
import io
import logging
import os
import select
import socket
import ssl
import struct
import time

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from gevent import pywsgi

import gws13
from gws13.server import MAX_HEADER_BYTES, MAX_HEADERS, MAX_REQUEST_LINE, WebSocketServer
from conftest import ErrorLog, RawClient, read_response_head

pytest.importorskip("trustme")  # the ca and cert_files fixtures (conftest)

# gevent's keyfile/certfile path builds its context with the deprecated PROTOCOL_TLS
pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
PLAIN_GET = b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        body = b"plain " + environ["PATH_INFO"][:20].encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    for message in ws:
        ws.send(message)
    return []


# -- fixtures -------------------------------------------------------------------

@pytest.fixture(scope="module")
def client_context(ca):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class Quiet:
    """Everything a hostile peer could make the server say: records of the
    ``logging`` module (every logger), the server's error_log, and stderr."""

    def __init__(self, caplog, capfd):
        self.caplog = caplog
        self.capfd = capfd
        self.error_log = ErrorLog()
        caplog.set_level(logging.DEBUG, logger="gws13.server")

    def debug_lines(self, needle=""):
        return [r for r in self.caplog.records if r.name == "gws13.server" and needle in r.getMessage()]

    def check(self):
        out, err = self.capfd.readouterr()
        assert "Traceback" not in err and "Error" not in err, err[-3000:]
        assert self.error_log.lines == [], self.error_log.lines[:5]
        for record in self.caplog.records:
            assert record.levelno <= logging.DEBUG, (record.name, record.getMessage())
            assert record.exc_info is None and record.exc_text is None, record.getMessage()
        return out, err


@pytest.fixture
def quiet(caplog, capfd):
    return Quiet(caplog, capfd)


@pytest.fixture
def start(serve, quiet, cert_files):
    """Start ``app`` on a pywsgi.WSGIServer (plain, or "tls": the stock server
    with keyfile/certfile), or "tls-lazy": gws13.server.WebSocketServer with
    TLS, which does the TLS handshake in the handler.  A pool tells when every
    handler has ended."""

    def run(mode="plain", application=app, handler_class=gws13.WebSocketHandler, spawn=2000):
        kwargs = {}
        if mode != "plain":
            kwargs = dict(zip(("keyfile", "certfile"), cert_files))
            if mode == "tls-lazy":
                kwargs["server_class"] = WebSocketServer
        # the tests open a few hundred connections at once: with gevent's default
        # backlog (128) a slow accept loop lets the kernel drop the next SYN, and
        # the one normal client a test times then waits a second to retry
        server = serve(application, handler_class=handler_class, error_log=quiet.error_log,
                       spawn=spawn, backlog=1024, **kwargs)
        server.mode = mode
        return server

    return run


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def handlers_done(server):
    pool = server.server.pool
    return pool.free_count() == pool.size


def tcp(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(server, context=None):
    """A connection with its TLS handshake done where the server speaks TLS."""
    sock = tcp(server)
    if server.mode != "plain":
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def reset(sock):
    """Abort the connection: RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def closed_by_server(sock, timeout):
    """True if the server ends the connection within ``timeout`` (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except (socket.timeout, ssl.SSLWantReadError):
        return False


def http_answer(sock, timeout=5, closing=True):
    """(status, headers, whether the server closed the connection after it
    (None unless ``closing``: then it waits up to ``timeout`` to see))."""
    sock.settimeout(timeout)
    status, headers, rest = read_response_head(sock)
    body_length = int(headers.get("content-length", 0))
    while len(rest) < body_length:
        rest += sock.recv(4096)
    return status, headers, closed_by_server(sock, timeout) if closing else None


def echo_round_trip(server, context):
    """A normal client: upgrade, one echo; returns the seconds it took."""
    began = time.monotonic()
    if server.mode == "plain":
        client = RawClient(server.port, "/ws", timeout=5)
        assert client.status == 101
        client.send_frame(0x1, b"still served")
        assert client.next_event(timeout=5).data == "still served"
        client.close()
    else:
        ws = gws13.connect(f"wss://127.0.0.1:{server.port}/ws", ssl_context=context, timeout=5)
        ws.send("still served")
        assert ws.receive(timeout=5) == "still served"
        ws.close()
    return time.monotonic() - began


class Trickle:
    """Slowloris clients: each sends ``data`` one byte per ``interval``,
    from this thread, without blocking; tracks which the server closed."""

    def __init__(self, connect, count, data, interval=0.2):
        self.socks = {}
        self.started = {}
        for _ in range(count):
            s = connect()
            # after connecting: a SYN the kernel dropped (backlog full) is
            # retried a second later, before the server ever saw it
            self.started[s] = time.monotonic()
            self.socks[s] = 0
            s.setblocking(False)
        self.data = data
        self.interval = interval
        self.closed = {}
        self._next = time.monotonic()

    def lifetimes(self):
        """Seconds from connecting to the server's close, of those it closed."""
        return [self.closed[s] - self.started[s] for s in self.closed]

    @property
    def open(self):
        return len(self.socks) - len(self.closed)

    def run(self, seconds):
        until = time.monotonic() + seconds
        while time.monotonic() < until and self.open:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.interval
                for s, sent in self.socks.items():
                    if s not in self.closed and sent < len(self.data) - 1:  # never the last byte
                        try:
                            self.socks[s] = sent + s.send(self.data[sent:sent + 1])
                        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                            pass
                        except OSError:
                            self.closed[s] = time.monotonic()
            waiting = [s for s in self.socks if s not in self.closed]
            readable, _, _ = select.select(waiting, [], [], max(0.0, min(self._next, until) - now))
            for s in readable:
                try:
                    data = s.recv(4096)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed[s] = time.monotonic()

    def close(self):
        for s in self.socks:
            s.close()


# -- 1. deadlines ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["plain", "tls"])
def test_slowloris_upgrades_are_cut_at_the_deadline_and_others_still_served(start, quiet, mode,
                                                                            client_context):
    gws13.parameters.handshake_timeout = 1.0
    server = start(mode)
    trickle = Trickle(lambda: connect(server, client_context), 200, UPGRADE)
    try:
        trickle.run(0.3)
        # a normal client is not held up by the 200 trickling ones
        assert echo_round_trip(server, client_context) < 0.5
        trickle.run(2.5)
        assert trickle.open == 0, f"{trickle.open} slowloris connections still open"
        # nobody is cut before the deadline; everybody soon after it
        assert 0.95 <= min(trickle.lifetimes()) and max(trickle.lifetimes()) < 2
    finally:
        trickle.close()
    wait_until(lambda: handlers_done(server), 5, "the handlers to end")
    quiet.check()
    assert len(quiet.debug_lines("no request head within 1.0 s")) == 200


def test_tls_handshake_is_under_the_deadline_on_the_gws13_server(start, quiet, client_context):
    """gws13.server.WebSocketServer does the TLS handshake in the handler's
    first read: a peer that never finishes it is cut too, and one that breaks
    it off is quiet."""
    gws13.parameters.handshake_timeout = 0.5
    server = start("tls-lazy")
    # silent ones, and ones that stop in the middle of their ClientHello
    silent = [tcp(server) for _ in range(50)]
    partial = [tcp(server) for _ in range(50)]
    for sock in partial:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    broken = [tcp(server) for _ in range(50)]
    for sock in broken:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")
        reset(sock)
    garbage = [tcp(server) for _ in range(50)]
    for sock in garbage:
        sock.sendall(UPGRADE)  # plain HTTP to the TLS port
    assert echo_round_trip(server, client_context) < 0.5
    began = time.monotonic()
    for sock in silent + partial + garbage:
        assert closed_by_server(sock, 3)
        sock.close()
    assert time.monotonic() - began < 2
    wait_until(lambda: handlers_done(server), 5, "the handlers to end")
    quiet.check()
    # the silent and the partial ones; some reset ones too, where the reset
    # came before the server's first read
    assert len(quiet.debug_lines("no request head within 0.5 s")) >= 100
    assert len(quiet.debug_lines()) <= 200  # one line at most per connection


@pytest.mark.parametrize("mode", ["plain", "tls"])
def test_plain_http_heads_and_idle_keepalive_connections_have_the_deadline(start, quiet, mode,
                                                                           client_context):
    gws13.parameters.handshake_timeout = 0.6
    server = start(mode)
    silent = connect(server, client_context)  # connects, never says a word
    idle = connect(server, client_context)
    idle.sendall(PLAIN_GET)
    status, headers, closed = http_answer(idle, timeout=0.3)
    assert status == 200 and not closed  # keep-alive: the server waits for another request
    trickle = Trickle(lambda: connect(server, client_context), 20, PLAIN_GET, interval=0.1)
    trickle.run(0.1)
    # a keep-alive client that keeps asking in time: each request head has its
    # own deadline, not the connection
    kept = connect(server, client_context)
    began = time.monotonic()
    for _ in range(4):
        kept.sendall(PLAIN_GET)
        assert http_answer(kept, closing=False)[0] == 200
        time.sleep(0.3)
    assert time.monotonic() - began > 1.2
    trickle.run(1.0)
    assert trickle.open == 0 and min(trickle.lifetimes()) >= 0.55
    assert closed_by_server(silent, 0.5) and closed_by_server(idle, 0.5)
    assert closed_by_server(kept, 1.0)  # idle after its last answer
    for sock in (silent, idle, kept):
        sock.close()
    trickle.close()
    wait_until(lambda: handlers_done(server), 5, "the handlers to end")
    quiet.check()


def test_zero_disables_the_deadline(start, quiet):
    gws13.parameters.handshake_timeout = 0
    server = start()
    sock = tcp(server)
    sock.sendall(PLAIN_GET[:10])
    assert not closed_by_server(sock, 0.4)
    sock.sendall(PLAIN_GET[10:])
    assert http_answer(sock, closing=False)[0] == 200
    sock.close()


def test_handshake_timeout_is_a_checked_parameter():
    assert gws13.parameters.handshake_timeout == 10
    with pytest.raises(ValueError):
        gws13.parameters.handshake_timeout = -1
    with pytest.raises(TypeError):
        gws13.parameters.handshake_timeout = "10"


# -- 2. quiet logs --------------------------------------------------------------

def request_pieces():
    """Where a client may give up: in the request line, in the headers, after
    the whole head of an upgrade or of a plain request."""
    return {"request-line": UPGRADE[:9], "headers": UPGRADE[:60], "upgrade": UPGRADE,
            "plain": PLAIN_GET}


@pytest.mark.parametrize("mode", ["plain", "tls"])
@pytest.mark.parametrize("how", ["reset", "close"])
def test_peers_that_leave_mid_request_are_logged_quietly(start, quiet, mode, how, client_context):
    """100 of each: RST (SO_LINGER 0) or an ordinary close right after
    sending part or all of a request."""
    server = start(mode)
    for name, data in request_pieces().items():
        for _ in range(100 if mode == "plain" else 25):  # TLS: 100 in all
            sock = connect(server, client_context)
            sock.sendall(data)
            reset(sock) if how == "reset" else sock.close()
    wait_until(lambda: handlers_done(server), 10, "the handlers to end")
    assert echo_round_trip(server, client_context) < 1
    quiet.check()
    # at most one line per connection
    assert len(quiet.debug_lines()) <= 400


def test_peers_that_reset_the_tls_handshake_on_the_gws13_server_are_quiet(start, quiet):
    server = start("tls-lazy")
    for _ in range(100):
        sock = tcp(server)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        reset(sock)
    wait_until(lambda: handlers_done(server), 10, "the handlers to end")
    quiet.check()
    assert len(quiet.debug_lines()) <= 100


def streaming_app(environ, start_response):
    if environ["PATH_INFO"] == "/backend":
        raise ConnectionRefusedError(111, "the application's database is down")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (b"z" * 65536 for _ in range(200))


@pytest.mark.parametrize("mode", ["plain", "tls"])
def test_peers_that_leave_during_a_long_response_are_quiet(start, quiet, mode, client_context):
    server = start(mode, streaming_app)
    for i in range(20):
        sock = connect(server, client_context)
        sock.sendall(PLAIN_GET)
        sock.recv(4096)
        reset(sock) if i % 2 else sock.close()
    wait_until(lambda: handlers_done(server), 10, "the handlers to end")
    quiet.check()


def test_errors_of_the_applications_own_connections_are_still_logged(start, quiet):
    """Only errors of the connection to the peer are quiet."""
    server = start("plain", streaming_app)
    status, _, _ = ask(server, b"GET /backend HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 500
    wait_until(lambda: handlers_done(server), 5, "the handler to end")
    err = quiet.capfd.readouterr().err
    assert "ConnectionRefusedError: [Errno 111] the application's database is down" in err, err


# -- limits of the request head ------------------------------------------------

def ask(server, head):
    sock = tcp(server)
    try:
        sock.sendall(head)
        return http_answer(sock)
    finally:
        sock.close()


def test_request_line_limit(start, quiet):
    """pywsgi's own limit (414), kept by the handler's read_requestline."""
    server = start()
    path = "/" + "a" * (MAX_REQUEST_LINE - len("GET / HTTP/1.1\r\n"))
    longest = f"GET {path} HTTP/1.1\r\n".encode()
    assert len(longest) == MAX_REQUEST_LINE
    status, _, _ = ask(server, longest + b"Host: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    status, headers, closed = ask(server, longest.replace(b"GET /", b"GET /a") + b"Host: x\r\n\r\n")
    assert status == 414 and headers["connection"] == "close" and closed
    status, _, closed = ask(server, b"GET /" + b"b" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and closed
    quiet.check()


def test_header_section_limits_get_431(start, quiet):
    server = start()
    # every header line with its CRLF, and the empty line: exactly the limit
    filler = MAX_HEADER_BYTES - len(b"Host: x\r\nConnection: close\r\nX-Fill: \r\n\r\n")
    head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fill: %s\r\n\r\n" % (b"f" * filler)
    assert ask(server, head)[0] == 200
    status, headers, closed = ask(server, head.replace(b"X-Fill: ", b"X-Fill: f"))
    assert status == 431 and headers["connection"] == "close" and closed
    # one huge cookie, more than the limit, in one line
    status, _, closed = ask(server, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 200000 + b"\r\n\r\n")
    assert status == 431 and closed
    many = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS - 2))
    assert ask(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + many + b"\r\n")[0] == 200
    status, _, closed = ask(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + many
                            + b"X-One-Too-Many: v\r\n\r\n")
    assert status == 431 and closed
    # an upgrade just under the limits still upgrades
    client = RawClient(server.port, "/ws", headers={"X-Fill": "u" * (MAX_HEADER_BYTES - 1000)})
    assert client.status == 101
    client.close()
    quiet.check()


@pytest.mark.parametrize("head", [b"GET / HTTP/1\r\nHost: x\r\n\r\n", b"GET / HTTP/x.y\r\n\r\n",
                                  b"BREW\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"],
                         ids=["short-version", "bad-version", "one-word", "bad-header"])
def test_malformed_heads_get_a_quiet_400(start, quiet, head):
    server = start()
    status, _, closed = ask(server, head)
    assert status == 400 and closed
    quiet.check()
    assert len(quiet.debug_lines("bad request")) == 1


# -- 4. no internals to the peer -----------------------------------------------

class Boom(AttributeError):
    pass


def raising_app(environ, start_response):
    def proc(ws):
        ws.receive()
        raise Boom("secret internals of the app")

    if environ["PATH_INFO"] == "/egg":
        return gws13.with_websocket(environ, start_response, proc)
    ws = environ["wsgi.websocket"]
    proc(ws)
    return []


@pytest.mark.parametrize("mode", ["plain", "tls"])
@pytest.mark.parametrize("path, handler", [("/environ", gws13.WebSocketHandler), ("/egg", gws13.WebSocketHandler),
                                           ("/egg", pywsgi.WSGIHandler)],
                         ids=["environ", "with_websocket", "with_websocket-stock-handler"])
def test_an_application_error_closes_1011_with_a_fixed_reason(start, capfd, caplog, mode, path, handler,
                                                               client_context):
    server = start(mode, raising_app, handler)
    if mode == "plain":
        client = RawClient(server.port, path)
        client.send_frame(0x1, b"go")
        events = client.read_until_close()
        close = events[-1]
        assert (close.code, close.reason) == (1011, "internal error")
        client.close()
    else:
        ws = gws13.connect(f"wss://127.0.0.1:{server.port}{path}", ssl_context=client_context)
        ws.send("go")
        assert ws.receive(timeout=5) is None
        assert (ws.close_code, ws.close_reason) == (1011, "internal error")
        ws.close()
    wait_until(lambda: handlers_done(server), 5, "the handler to end")
    err = capfd.readouterr().err
    if handler is gws13.WebSocketHandler:
        # the exception and its traceback went to the gws13.server logger, once
        # (issue 13), and pywsgi's error printer did not print it again
        records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is Boom]
        assert len(records) == 1 and records[0].name == "gws13.server", caplog.records
        assert records[0].levelname == "ERROR"
        assert "Traceback" not in err and "Boom" not in err, err
        return
    # the stock handler: the exception and its traceback went to the server's log, once
    assert err.count("Boom: secret internals of the app") == 1 and err.count("failed with Boom") == 1, err
    # and nothing else, over TLS too
    assert err.count("Traceback") == 1, err


# -- 5. stop() under unresponsive clients --------------------------------------

def open_fds():
    return len(os.listdir("/proc/self/fd"))


def flooding_app(environ, start_response):
    """The WebSocket sends until the peer's window and a small send buffer
    are full, and stays blocked in send() (holding the send lock): a peer that
    never reads."""
    ws = environ["wsgi.websocket"]
    if environ["PATH_INFO"] == "/flood":
        ws.send("start")  # the upgrade
        ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        while True:
            ws.send(b"x" * 65536)
    for message in ws:
        ws.send(message)
    return []


@pytest.mark.parametrize("mode", ["plain", "tls"])
@pytest.mark.parametrize("path", ["/silent", "/flood"])
def test_stop_closes_every_websocket_of_clients_that_never_answer(start, quiet, mode, path, client_context):
    """200 clients complete the handshake, then neither read nor answer: the
    server's close frame goes unanswered (/silent), or cannot even be written
    behind what the application is still sending them (/flood)."""
    gws13.parameters.close_timeout = 0.5
    # no pool: stop() then waits for no handler, only for close() (a pool
    # would have it wait for the handlers, up to its timeout)
    server = start(mode, flooding_app, spawn="default")
    clients = []
    for _ in range(200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", server.port))
        if mode != "plain":
            sock = client_context.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(UPGRADE.replace(b"/ws", path.encode()))
        status, _, _ = read_response_head(sock)
        assert status == 101
        clients.append(sock)  # from now on: never reads, never answers
    during = open_fds()  # both ends of the 200 connections, the listener...
    began = time.monotonic()
    server.stop()
    elapsed = time.monotonic() - began
    # the server's 200 ends (and its listener) are closed, ours are left
    left = open_fds() - (during - 200)
    assert elapsed < 0.5 + 1.0, f"stop() took {elapsed:.2f}s"
    assert left <= 0, f"{left} server descriptors still open when stop() returned"
    for sock in clients:
        assert closed_by_server(sock, 0.5)
        sock.close()
    quiet.check()


# -- the header parser's fast path ------------------------------------------------

_NAMES = st.sampled_from(["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "X-A", "x_y", "From", "", "A B",
                          "Na\xefve", "Cookie", "Content-Length"])
_VALUES = st.text(alphabet=st.sampled_from("ab Z:\t,;=\x00\x7f\xe9\r"), max_size=12)
_LINES = st.one_of(
    st.builds(lambda n, v, end: f"{n}:{v}{end}", _NAMES, _VALUES, st.sampled_from(["\r\n", "\n", "\r\r\n"])),
    st.builds(lambda v: f" {v}\r\n", _VALUES),  # a continuation line
    st.builds(lambda v: f"{v}\r\n", _VALUES),  # maybe no colon
    st.sampled_from(["From somebody\r\n", ":\r\n", "\r\n"]),
)


@given(lines=st.lists(_LINES, max_size=8), end=st.sampled_from(["\r\n", "\n", ""]))
@settings(max_examples=400, deadline=None)
def test_the_fast_header_parser_agrees_with_the_email_package(lines, end):
    # the fields, their order and the defects are what pywsgi's own parser makes of the head
    from gws13.server import _parse_headers
    head = "".join(lines).encode("latin-1") + end.encode()
    ours = _parse_headers(io.BytesIO(head))
    theirs = pywsgi.headers_factory(io.BytesIO(head))
    assert ours.items() == theirs.items()
    assert [type(d) for d in ours.defects] == [type(d) for d in theirs.defects]
    assert ours.status == theirs.status


def test_the_fast_header_parser_keeps_http_clients_limits():
    from gws13.server import _parse_headers
    long_line = b"X: " + b"a" * 70000 + b"\r\n\r\n"
    assert _parse_headers(io.BytesIO(long_line)).status == pywsgi.headers_factory(io.BytesIO(long_line)).status != ""
    many = b"X: 1\r\n" * 100 + b"\r\n"
    with pytest.raises(http.client.HTTPException):
        _parse_headers(io.BytesIO(many))
    with pytest.raises(http.client.HTTPException):
        pywsgi.headers_factory(io.BytesIO(many))
