"""Peers that misbehave on purpose: floods, stalls, silence.  What each costs
the server must be bounded, every deadline must hold while a send is blocked,
and no frame is ever cut (issue 11)."""

from __future__ import annotations

import gc
import queue
import socket
import time
import weakref

import pytest
import websocket  # websocket-client

import gws13
from gws13.frames import OP_CLOSE, OP_PING, OP_TEXT, encode_close
from gws13.protocol import Close, Message, Pong, Protocol

from conftest import RawClient


@pytest.fixture(scope="module")
def tls_contexts():
    import ssl

    import trustme
    ca = trustme.CA()
    import gevent.ssl
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    gevent_server = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(gevent_server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client, gevent_server


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def small_receive_buffer(client):
    # a peer that reads nothing: keep the kernel's buffers small so they fill fast
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def _masked(opcode, payload):
    from gws13.frames import apply_mask, encode_header
    key = b"\x01\x02\x03\x04"
    return encode_header(opcode, len(payload), True, False, key) + apply_mask(payload, key)


def _only_websocket(srv):
    assert wait_for(lambda: len(getattr(srv.server, "_gws13_websockets", ())) >= 1)
    return next(iter(srv.server._gws13_websockets))


@pytest.mark.parametrize("tls", [None, "gevent context", "stdlib context"])
def test_a_stalled_reader_gets_whole_frames_and_the_send_raises_at_the_deadline(serve, tls, request):
    # The peer stops reading while the handler pushes and pongs are owed, and
    # never comes back: connection_timeout fails the stalled writer, the close
    # deadline drops the socket, the blocked send raises ConnectionClosed.
    out = queue.Queue()

    def proc(ws):
        start = time.monotonic()
        try:
            ws.send(b"d" * 1000)
            # a small kernel buffer: what is queued there when the connection is
            # dropped still reaches the client, quickly, to be checked below
            ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            while True:
                ws.send(b"d" * 1000)
        except gws13.ConnectionClosed:
            out.put(("closed", time.monotonic() - start))

    kwargs = {}
    if tls:
        ssl_ctx, client_ctx, gevent_ctx = request.getfixturevalue("tls_contexts")
        if tls == "gevent context":
            # the stock server: only gevent's context gives cooperative sockets
            kwargs["ssl_context"] = gevent_ctx
        else:
            # the standard library's context: WebSocketServer still makes them
            kwargs.update(ssl_context=ssl_ctx, server_class=gws13.server.WebSocketServer)
    srv = serve(lambda e, s: gws13.with_websocket(e, s, proc, connection_timeout=1, close_timeout=0.5,
                                                  ping_interval=0), **kwargs)
    if tls:
        sock = client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=5),
                                      server_hostname="localhost")
        _handshake(sock, srv.port)
    else:
        raw = RawClient(srv.port)
        small_receive_buffer(raw)
        sock = raw.sock
        for _ in range(50):
            sock.sendall(_masked(OP_PING, b"q"))
    if tls:
        # the server thread's hub still runs other work while this peer stalls
        alive = queue.Queue()
        srv.call(alive.put, "hub runs")
        assert alive.get(timeout=5) == "hub runs"
    kind, elapsed = out.get(timeout=10)
    assert kind == "closed" and elapsed < 1 + 0.5 + 1.5
    ws = _only_websocket(srv) if srv.server._gws13_websockets else None
    assert ws is None or wait_for(lambda: ws._dropped, 2)
    # Now read what did reach us: whole frames (data, pongs, at most a close),
    # and if the connection ended inside a frame, nothing after that frame
    if tls:
        proto, events = Protocol(client=True, max_frame_size=2 ** 20, max_message_size=2 ** 30), []
    else:  # what came with the handshake's answer is in the raw client's parser
        proto, events = raw.proto, list(raw.events)
    sock.settimeout(5)
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        events += proto.receive_data(data)
        assert proto.failure is None, proto.failure
    assert events and all(isinstance(e, (Message, Pong, Close)) for e in events), events[-3:]
    assert all(e.data == b"d" * 1000 for e in events if isinstance(e, Message))
    assert sum(isinstance(e, Close) for e in events) <= 1
    sock.close()


def _handshake(sock, port):
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    assert data.startswith(b"HTTP/1.1 101")


def test_the_peers_close_while_a_send_is_blocked_releases_the_socket(serve):
    out = queue.Queue()

    def proc(ws):
        try:
            while True:
                ws.send(b"d" * 4000)
        except gws13.ConnectionClosed:
            out.put(time.monotonic())

    srv = serve(lambda e, s: gws13.with_websocket(e, s, proc, close_timeout=1, ping_interval=0))
    raw = RawClient(srv.port)
    small_receive_buffer(raw)
    ws = _only_websocket(srv)
    assert wait_for(lambda: ws.buffered_amount > 0)
    sent = time.monotonic()
    raw.send_frame(OP_CLOSE, encode_close(1000))
    assert out.get(timeout=5) - sent < 1 + 1
    assert wait_for(lambda: ws._dropped, 3)
    raw.close()


def test_close_before_first_use_upgrades_and_sends_the_code(serve):
    def app(environ, start_response):
        environ["wsgi.websocket"].close(1008, "go away")
        return []

    srv = serve(app)
    raw = RawClient(srv.port)
    assert raw.status == 101
    events = raw.read_until_close()
    assert isinstance(events[-1], Close) and events[-1].code == 1008 and events[-1].reason == "go away"
    raw.close()


def test_receive_after_the_end_raises_instead_of_spinning(serve):
    out = queue.Queue()

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        results = []
        for _ in range(3):
            try:
                results.append(ws.receive())
            except gws13.ConnectionClosed as exc:
                results.append(("raised", exc.code))
        out.put(results)
        return []

    srv = serve(app)
    raw = RawClient(srv.port)
    raw.send_frame(OP_TEXT, b"a")
    raw.send_frame(OP_CLOSE, encode_close(1000))
    assert out.get(timeout=5) == ["a", None, ("raised", 1000)]
    raw.close()


def test_receive_message_reports_the_end_then_raises(serve):
    out = queue.Queue()

    def proc(ws):
        results = []
        for _ in range(3):
            try:
                results.append(gws13.receive_message())
            except gws13.ConnectionClosed:
                results.append("raised")
        out.put(results)

    srv = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    raw = RawClient(srv.port)
    raw.send_frame(OP_CLOSE, encode_close(1000))
    assert out.get(timeout=5) == [(encode_close(1000), "connection-close"), (None, None), "raised"]
    raw.close()


@pytest.mark.parametrize("compression", [True, False])
def test_closed_connections_are_freed_at_once(serve, compression):
    refs = []

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        refs.append(weakref.ref(ws))
        for message in ws:
            ws.send(message)
        return []

    srv = serve(app)
    options = {} if compression else {"compression": None}
    from websockets.sync.client import connect
    for i in range(200):
        with connect(srv.url, **options) as client:
            client.send("x" * 100)
            assert client.recv(timeout=5) == "x" * 100
    assert len(refs) == 200

    def freed():
        srv.call(gc.collect)
        return all(ref() is None for ref in refs)

    assert wait_for(freed, 5), sum(ref() is not None for ref in refs)


def _greenlets():
    import greenlet
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))


def test_a_ping_flood_that_never_reads_costs_one_pong_and_no_greenlet(serve):
    # The server's send buffer is tiny, so pongs back up at once; the peer
    # floods pings without reading.  Only the answer to the latest ping may
    # wait (RFC 6455 5.5.3): the buffer stays at one pong, no greenlet is
    # spawned, reading goes on, and what finally reaches the peer is whole
    # pongs in order, ending with the answer to its last ping.
    seen, got = queue.Queue(), queue.Queue()

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        ws.send("ready")  # the upgrade
        ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        seen.put(ws)
        for message in ws:
            got.put(message)
        return []

    srv = serve(app)
    # (the client's receive buffer is left as it is: the server's small send
    # buffer fills anyway, and a tiny receive window on loopback stalls the
    # client's own sending)
    client = RawClient(srv.port)
    assert client.next_event().data == "ready"
    ws = seen.get(timeout=5)
    before = _greenlets()
    pings = 100000
    frames = b"".join(_masked(OP_PING, b"%08d" % i + b"p" * 117) for i in range(pings))
    client.sock.sendall(frames)  # the server reads it all: it never stops reading for pongs
    client.send_frame(OP_TEXT, b"after the flood")
    assert got.get(timeout=10) == "after the flood"
    assert ws.buffered_amount <= 125 + 2, ws.buffered_amount  # at most one pong waits
    assert _greenlets() <= before + 1
    payloads = []
    while not payloads or payloads[-1] != b"%08d" % (pings - 1) + b"p" * 117:
        event = client.next_event(10)
        assert isinstance(event, Pong), event
        payloads.append(event.payload)
    assert payloads == sorted(payloads) and len(payloads) < pings  # later answers replaced earlier ones
    client.send_frame(OP_PING, b"still answered")
    assert client.next_event(5).payload == b"still answered"
    client.close()
