"""End-to-end behaviour of upgraded connections with real clients."""

import queue
import select
import threading
import time

import gevent
import greenlet
import pytest
import websocket  # websocket-client
from websockets.sync.client import connect as websockets_connect

import gws13
from gws13.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_close
from gws13.protocol import Close, Message, Ping, Pong
from conftest import RawClient


def ws_app(proc, **params):
    """A WSGI app running ``proc(ws)`` through with_websocket."""
    def app(environ, start_response):
        return gws13.with_websocket(environ, start_response, proc, **params)
    return app


def echo(ws):
    for message in ws:
        ws.send(message)


def test_echo_with_websocket_client(serve):
    srv = serve(ws_app(echo))
    c = websocket.create_connection(srv.url, timeout=5)
    c.send("héllo")
    assert c.recv() == "héllo"
    c.send_binary(b"\x00\x01\x02")
    assert c.recv() == b"\x00\x01\x02"
    big = bytes(range(256)) * 4000
    c.send_binary(big)
    assert c.recv() == big
    c.close()


def test_echo_with_websockets_client(serve):
    srv = serve(ws_app(echo))
    with websockets_connect(srv.url, open_timeout=5, compression=None) as c:
        c.send("text")
        assert c.recv(timeout=5) == "text"
        c.send(b"bin")
        assert c.recv(timeout=5) == b"bin"
        c.send(["frag", "mented"])   # a fragmented message
        assert c.recv(timeout=5) == "fragmented"
        c.ping(b"k").wait(5)


def test_receive_types_and_forced_send_types(serve):
    got = queue.Queue()

    def proc(ws):
        got.put(ws.receive())
        got.put(ws.receive())
        ws.send("as binary", binary=True)
        ws.send(b"as text", binary=False)
        ws.send(bytearray(b"ba"))
        ws.send(memoryview(b"mv"))

    srv = serve(ws_app(proc))
    c = websocket.create_connection(srv.url, timeout=5)
    c.send("t")
    c.send_binary(b"b")
    assert [c.recv_data() for _ in range(4)] == [(2, b"as binary"), (1, b"as text"), (2, b"ba"), (2, b"mv")]
    assert got.get(timeout=5) == "t"
    assert got.get(timeout=5) == b"b"
    c.close()


def test_attributes(serve):
    seen = queue.Queue()

    def proc(ws):
        seen.put((ws.path, ws.origin, ws.environ["QUERY_STRING"], ws.closed, ws.close_code))
        ws.receive()
        seen.put((ws.closed, ws.close_code, ws.close_reason))

    srv = serve(ws_app(proc))
    c = websocket.create_connection(srv.url + "/room/1?x=2", origin="http://o.example", timeout=5)
    assert seen.get(timeout=5) == ("/room/1", "http://o.example", "x=2", False, None)
    c.close(status=4001, reason=b"bye")
    assert seen.get(timeout=5) == (True, 4001, "bye")


def test_ping_round_trip_and_latency(serve):
    out = queue.Queue()

    def proc(ws):
        rtt = ws.ping(b"hello").wait(5)
        out.put((rtt, ws.latency))
        ws.receive()

    srv = serve(ws_app(proc))
    c = websocket.create_connection(srv.url, timeout=5)
    frame = c.recv_frame()   # websocket-client answers pings by itself in recv(); do it by hand here
    assert frame.opcode == OP_PING and frame.data == b"hello"
    c.pong(frame.data)
    rtt, latency = out.get(timeout=5)
    assert 0 < rtt < 5 and latency == rtt
    c.close()


def test_iteration_ends_at_close(serve):
    out = queue.Queue()

    def proc(ws):
        out.put(list(ws))

    srv = serve(ws_app(proc))
    c = websocket.create_connection(srv.url, timeout=5)
    for m in ("a", "b", "c"):
        c.send(m)
    c.close()
    assert out.get(timeout=5) == ["a", "b", "c"]


def test_client_close_is_answered_with_its_code(serve):
    srv = serve(ws_app(echo))
    raw = RawClient(srv.port)
    raw.send_frame(OP_CLOSE, encode_close(4321, "going"))
    events = raw.read_until_close()
    assert isinstance(events[-1], Close) and events[-1].code == 4321
    assert raw.at_eof()      # the server closes TCP first
    raw.close()


def test_empty_client_close_is_answered_empty(serve):
    srv = serve(ws_app(echo))
    raw = RawClient(srv.port)
    raw.send_frame(OP_CLOSE, b"")
    events = raw.read_until_close()
    assert events[-1].payload == b""
    raw.close()


def test_server_close_waits_at_most_close_timeout(serve):
    out = queue.Queue()

    def proc(ws):
        start = time.monotonic()
        ws.close(1000, "bye")
        out.put(time.monotonic() - start)

    srv = serve(ws_app(proc, close_timeout=0.5))
    raw = RawClient(srv.port)
    assert raw.next_event().code == 1000     # the server's close; we never answer it
    assert raw.at_eof(timeout=5)            # TCP dropped after close_timeout
    assert 0.4 < out.get(timeout=5) < 3
    raw.close()


def test_server_close_returns_as_soon_as_the_peer_answers(serve):
    out = queue.Queue()

    def proc(ws):
        start = time.monotonic()
        ws.close(1001)
        out.put((time.monotonic() - start, ws.close_code))

    srv = serve(ws_app(proc, close_timeout=10))
    c = websocket.create_connection(srv.url, timeout=5)
    assert not c.recv()      # websocket-client answers the close and returns nothing
    elapsed, code = out.get(timeout=5)
    assert elapsed < 2 and code == 1001


def test_receive_after_close_and_receive_message_protocol(serve):
    out = queue.Queue()

    def proc(ws):
        out.put(gws13.receive_message())
        out.put(gws13.receive_message())
        out.put(gws13.receive_message())
        out.put(ws.receive())
        try:
            ws.send("late")
        except gws13.ConnectionClosed as exc:
            out.put(("closed", exc.code))

    srv = serve(ws_app(proc))
    raw = RawClient(srv.port)
    raw.send_frame(OP_BINARY, b"\x01")
    raw.send_frame(OP_CLOSE, encode_close(1000, "ok"))
    assert out.get(timeout=5) == (b"\x01", "binary")
    assert out.get(timeout=5) == (encode_close(1000, "ok"), "connection-close")
    assert out.get(timeout=5) == (None, None)
    assert out.get(timeout=5) is None
    assert out.get(timeout=5) == ("closed", 1000)
    raw.close()


def test_receive_timeout(serve):
    out = queue.Queue()

    def proc(ws):
        try:
            ws.receive(timeout=0.2)
        except TimeoutError:
            out.put("timeout")
        out.put(ws.receive(timeout=5))

    srv = serve(ws_app(proc))
    c = websocket.create_connection(srv.url, timeout=5)
    assert out.get(timeout=5) == "timeout"
    c.send("after")
    assert out.get(timeout=5) == "after"
    c.close()


def test_keepalive_pings_are_sent(serve):
    srv = serve(ws_app(lambda ws: ws.receive(), ping_interval=0.1))
    raw = RawClient(srv.port)
    pings = [raw.next_event(timeout=2) for _ in range(3)]
    assert all(isinstance(p, Ping) for p in pings)
    assert len({p.payload for p in pings}) == 3
    raw.close()


def test_connection_timeout_closes_with_1001_and_one_close_frame(serve):
    out = queue.Queue()

    def proc(ws):
        try:
            gws13.receive_message()
        except gws13.ConnectionTimeout as exc:
            out.put(exc.code)
            raise

    srv = serve(ws_app(proc, ping_interval=0, connection_timeout=0.3, propagate_common_errors=True))
    raw = RawClient(srv.port)
    start = time.monotonic()
    events = raw.read_until_close(timeout=5)
    assert isinstance(events[-1], Close) and events[-1].code == 1001
    assert 0.25 < time.monotonic() - start < 3
    assert out.get(timeout=5) == 1001
    raw.send_frame(OP_CLOSE, encode_close(1001))
    more = []
    while True:
        event = raw.next_event(timeout=5)
        if event is None:
            break
        more.append(event)
    assert not any(isinstance(e, Close) for e in more)   # never a second close (Q4)
    raw.close()


def test_any_frame_refreshes_the_idle_timer(serve):
    srv = serve(ws_app(echo, ping_interval=0, connection_timeout=0.4))
    raw = RawClient(srv.port)
    deadline = time.monotonic() + 1.2           # three times the idle timeout
    i = 0
    while time.monotonic() < deadline:
        raw.send_frame((OP_PONG, OP_PING)[i % 2], b"")   # control frames only
        i += 1
        time.sleep(0.1)
    raw.send_frame(OP_TEXT, b"alive")
    events = []
    while not events or not isinstance(events[-1], Message):
        events.append(raw.next_event(timeout=2))
        assert not isinstance(events[-1], Close)
    assert events[-1].data == "alive"
    assert sum(isinstance(e, Pong) for e in events) == i // 2 + i % 2   # every ping answered
    raw.close()


def test_pings_answered_and_close_noticed_while_handler_only_sends(serve):
    out = queue.Queue()

    def push_only(ws):
        while not ws.closed:
            try:
                ws.send("tick")
            except gws13.ConnectionClosed:
                break
            gevent.sleep(0.02)
        out.put(ws.close_code)

    srv = serve(ws_app(push_only))
    raw = RawClient(srv.port)
    raw.send_frame(OP_PING, b"are you there")
    pong = raw.next_event()
    while isinstance(pong, Message):
        pong = raw.next_event()
    assert isinstance(pong, Pong) and pong.payload == b"are you there"
    start = time.monotonic()
    raw.send_frame(OP_CLOSE, encode_close(1000))
    events = raw.read_until_close()
    assert isinstance(events[-1], Close)
    assert out.get(timeout=5) == 1000
    assert time.monotonic() - start < 1.0
    raw.close()


def test_drop_incoming_pings_restores_the_eggs_behaviour(serve):
    srv = serve(ws_app(echo, drop_incoming_pings=True))
    raw = RawClient(srv.port)
    raw.send_frame(OP_PING, b"p")
    raw.send_frame(OP_TEXT, b"after")
    assert raw.next_event().data == "after"   # no pong came first
    raw.close()


def test_concurrent_senders_never_interleave_frames(serve):
    size = 64 * 1024

    def proc(ws):
        def sender(i):
            for _ in range(5):
                ws.send(bytes([i]) * size)
        gevent.joinall([gevent.spawn(sender, i) for i in range(20)])
        ws.receive()

    srv = serve(ws_app(proc))
    c = websocket.create_connection(srv.url, timeout=10)
    counts = {}
    for _ in range(100):
        data = c.recv()
        assert len(data) == size and data == data[:1] * size
        counts[data[0]] = counts.get(data[0], 0) + 1
    assert counts == {i: 5 for i in range(20)}
    c.close()


def test_concurrent_websocket_delivers_in_order(serve):
    out = queue.Queue()

    def proc(ws):
        gevent.sleep(0.2)  # let messages pile up
        received = []
        for message in ws:
            received.append(message)
        out.put(received)

    srv = serve(lambda e, s: gws13.with_concurrent_websocket(e, s, proc))
    c = websocket.create_connection(srv.url, timeout=5)
    sent = []
    for i in range(300):
        m = (str(i) * (1 + (i * 7919) % 3000)) if i % 2 else str(i).encode() * (1 + i % 50)
        sent.append(m)
        c.send_binary(m) if isinstance(m, bytes) else c.send(m)
    c.close()
    assert out.get(timeout=10) == sent


def test_backpressure_stops_reading_without_timing_out(serve):
    out = queue.Queue()
    release = threading.Event()

    def proc(ws):
        while not release.is_set():
            gevent.sleep(0.05)
        out.put(len(ws._queue))
        count = 0
        for message in ws:
            count += 1
            if message == b"end":
                break
        out.put(count)

    srv = serve(lambda e, s: gws13.with_concurrent_websocket(
        e, s, proc, max_queue=4, connection_timeout=0.5, ping_interval=0))
    c = websocket.create_connection(srv.url, timeout=10)
    c.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_SNDBUF, 65536)
    payload = b"x" * 65536
    sent = 0
    c.sock.settimeout(0.5)
    try:
        while sent < 2000:       # 125 MiB would be far beyond any socket buffer
            c.send_binary(payload)
            sent += 1
    except (websocket.WebSocketTimeoutException, TimeoutError, OSError):
        pass
    assert sent < 2000            # the server stopped reading: our send blocked
    gevent.sleep(0)
    time.sleep(0.8)               # longer than connection_timeout while blocked
    release.set()
    queued = out.get(timeout=5)
    assert queued <= 4 + 16       # max_queue plus what one read can carry
    c.sock.settimeout(10)
    c.send_binary(b"end")
    assert out.get(timeout=20) >= sent // 2
    c.close()


def test_user_error_closes_1011_and_is_reraised(serve):
    errors = queue.Queue()

    def proc(ws):
        ws.receive()
        raise KeyError("boom")

    def app(environ, start_response):
        try:
            return gws13.with_websocket(environ, start_response, proc)
        except KeyError as exc:
            errors.put(exc)
            return []

    srv = serve(app)
    raw = RawClient(srv.port)
    raw.send_frame(OP_TEXT, b"go")
    assert raw.read_until_close()[-1].code == 1011
    raw.send_frame(OP_CLOSE, encode_close(1011))
    assert isinstance(errors.get(timeout=5), KeyError)
    raw.close()


@pytest.mark.parametrize("propagate", [False, True])
@pytest.mark.parametrize("frames, code, error", [
    ([(OP_TEXT, b"x", 0, False)], 1002, gws13.ProtocolError),            # unmasked
    ([(OP_TEXT, b"\xff", 0, True)], 1007, gws13.InvalidData),
    ([(OP_BINARY, b"y" * 2000, 0, True)], 1009, gws13.MessageTooLarge),
    ([(OP_TEXT, b"x", 4, True)], 1002, gws13.ReservedBitsNotSupported),
])
def test_errors_map_to_close_codes(serve, propagate, frames, code, error):
    raised = queue.Queue()

    def proc(ws):
        while gws13.receive_message()[1] not in (None, "connection-close"):
            pass

    def app(environ, start_response):
        try:
            result = gws13.with_websocket(environ, start_response, proc, max_message_size=1000,
                                          propagate_common_errors=propagate)
            raised.put(None)
            return result
        except gws13.WebSocketError as exc:
            raised.put(exc)
            return []

    srv = serve(app)
    raw = RawClient(srv.port)
    for opcode, payload, rsv, mask in frames:
        raw.send_frame(opcode, payload, rsv=rsv, mask=mask)
    events = raw.read_until_close()
    assert events[-1].code == code
    raw.close()  # the server lingers until our side is gone
    got = raised.get(timeout=5)
    if propagate:
        assert isinstance(got, error) and got.code == code
    else:
        assert got is None
    raw.close()


def test_proc_returning_closes_with_1000(serve):
    srv = serve(ws_app(lambda ws: ws.send("only")))
    raw = RawClient(srv.port)
    events = raw.read_until_close()
    assert events[0].data == "only" and events[-1].code == 1000
    raw.close()


def test_huge_frame_header_is_refused_at_once(serve):
    srv = serve(ws_app(echo))
    raw = RawClient(srv.port)
    raw.sock.sendall(bytes([0x82, 0xFF]) + (2 ** 62).to_bytes(8, "big") + b"\x01\x02\x03\x04")
    start = time.monotonic()
    assert raw.read_until_close()[-1].code == 1009
    assert time.monotonic() - start < 2
    raw.close()


def test_server_stop_closes_open_websockets_with_1001(serve):
    srv = serve(ws_app(echo))
    c = websocket.create_connection(srv.url, timeout=5)
    c.send("x")
    assert c.recv() == "x"
    stopper = threading.Thread(target=srv.stop)
    start = time.monotonic()
    stopper.start()
    frame = c.recv_frame()
    assert frame.opcode == OP_CLOSE and int.from_bytes(frame.data[:2], "big") == 1001
    c.send_close(1001)
    stopper.join(10)
    assert not stopper.is_alive() and time.monotonic() - start < 3


def test_server_forgets_websockets_that_ended(serve):
    srv = serve(ws_app(echo))
    for _ in range(3):
        c = websocket.create_connection(srv.url, timeout=5)
        c.send("x")
        assert c.recv() == "x"
        assert len(srv.server._gws13_websockets) == 1
        c.close()
        deadline = time.monotonic() + 5
        while srv.server._gws13_websockets and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not srv.server._gws13_websockets


def test_environ_path_uses_parameters_and_parameterize(serve):
    def app(environ, start_response):
        with gws13.parameterize(ping_interval=0.1):
            ws = environ["wsgi.websocket"]
            ws.receive()
        return []

    srv = serve(app)
    raw = RawClient(srv.port)
    assert isinstance(raw.next_event(timeout=2), Ping)
    raw.close()


def test_one_scheduler_keeps_each_connections_own_interval(serve):
    def app(environ, start_response):
        interval = float(environ["QUERY_STRING"])
        return gws13.with_websocket(environ, start_response, lambda ws: ws.receive(),
                                    ping_interval=interval, connection_timeout=0)

    srv = serve(app)
    fast, slow = RawClient(srv.port, "/?0.05"), RawClient(srv.port, "/?0.3")
    counts = {}
    for name, raw in (("fast", fast), ("slow", slow)):
        raw.sock.settimeout(0.05)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for name, raw in (("fast", fast), ("slow", slow)):
            try:
                data = raw.sock.recv(4096)
            except OSError:
                continue
            counts[name] = counts.get(name, 0) + sum(isinstance(e, Ping) for e in raw.proto.receive_data(data))
    assert 10 <= counts.get("fast", 0) <= 21
    assert 2 <= counts.get("slow", 0) <= 4
    fast.close()
    slow.close()


def test_receive_reads_in_its_own_greenlet_but_still_yields(serve):
    """A message already in the socket is read by the receiving greenlet itself,
    with no trip through the hub, but only a few times in a row: then it waits
    in the hub, where other connections get their turn."""
    srv = serve(ws_app(echo))
    ws = gws13.connect(srv.url, timeout=5)
    hub = gevent.get_hub()
    to_hub = []
    previous = greenlet.settrace(lambda event, args: to_hub.append(args[1] is hub))
    try:
        went = []
        for i in range(2 * (gws13.connection._DIRECT_READS + 1)):
            ws.send("m%d" % i)
            # a blocking select (not gevent's): the echo is in the kernel's buffer
            # and this thread's hub has not run since
            assert select.select([ws._raw], [], [], 5)[0]
            del to_hub[:]
            assert ws.receive() == "m%d" % i
            went.append(any(to_hub))
    finally:
        greenlet.settrace(previous)
    ws.close()
    direct = [False] * gws13.connection._DIRECT_READS
    assert went == (direct + [True]) * 2
