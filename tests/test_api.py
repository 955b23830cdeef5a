"""The egg-style API and the parameters."""

import queue

import gevent
import pytest
import websocket

import gws13
from gws13.frames import OP_PING, OP_PONG
from conftest import RawClient


def test_defaults():
    p = gws13.parameters
    assert (p.ping_interval, p.close_timeout, p.connection_timeout) == (15, 5, 58)
    assert (p.max_frame_size, p.max_message_size) == (2 ** 20, 2 ** 20)
    assert p.drop_incoming_pings is False and p.propagate_common_errors is False
    assert p.accept_connection("") is True and p.accept_connection("http://any") is True
    start = []
    body = p.access_denied({}, lambda status, headers: start.append((status, dict(headers))))
    assert start[0][0].startswith("403") and start[0][1]["Content-Type"] == "text/html"
    assert b"".join(body) == b"<h1>Access denied</h1>"


@pytest.mark.parametrize("name, value, error", [
    ("ping_interval", -1, ValueError),
    ("ping_interval", "15", TypeError),
    ("close_timeout", float("nan"), ValueError),
    ("connection_timeout", True, TypeError),
    ("max_frame_size", 0, ValueError),
    ("max_message_size", 1.5, TypeError),
    ("max_message_size", 2 ** 63, ValueError),
    ("accept_connection", "yes", TypeError),
    ("access_denied", None, TypeError),
    ("drop_incoming_pings", 1, TypeError),
    ("propagate_common_errors", "no", TypeError),
    ("no_such_parameter", 1, TypeError),
])
def test_bad_values_are_refused_when_set(name, value, error):
    with pytest.raises(error):
        setattr(gws13.parameters, name, value)
    with pytest.raises(error):
        with gws13.parameterize(**{name: value}):
            pass


def test_bad_per_call_value_is_refused_before_upgrading():
    with pytest.raises(ValueError):
        gws13.with_websocket({}, None, lambda ws: None, ping_interval=-5)


def test_parameterize_layers_and_greenlet_inheritance():
    gws13.parameters.ping_interval = 7
    seen = []
    with gws13.parameterize(ping_interval=3, close_timeout=1):
        with gws13.parameterize(ping_interval=2):
            seen.append(gws13.parameters.ping_interval)
            seen.append(gevent.spawn(lambda: gws13.parameters.ping_interval).get())
            seen.append(gevent.spawn(lambda: gevent.spawn(lambda: gws13.parameters.close_timeout).get()).get())
        seen.append(gws13.parameters.ping_interval)
    seen.append(gws13.parameters.ping_interval)
    seen.append(gevent.spawn(lambda: gws13.parameters.ping_interval).get())
    assert seen == [2, 2, 1, 3, 7, 7]


def test_parameterize_is_greenlet_local():
    results = {}

    def worker(name, value):
        with gws13.parameterize(ping_interval=value):
            gevent.sleep(0.01)
            results[name] = gws13.parameters.ping_interval

    gevent.joinall([gevent.spawn(worker, "a", 1), gevent.spawn(worker, "b", 2)])
    assert results == {"a": 1, "b": 2}
    assert gws13.parameters.ping_interval == 15


def test_snapshots_with_the_same_keywords_are_shared_until_a_default_changes():
    from gws13 import params
    a = params.effective(max_queue=1)
    assert a["max_queue"] == 1 and a["ping_interval"] == 15
    assert params.effective(max_queue=1) is a  # one snapshot for every such connection
    assert params.effective(max_queue=2)["max_queue"] == 2
    assert params.effective(ping_interval=5.0)["ping_interval"].__class__ is float
    assert params.effective(ping_interval=5)["ping_interval"].__class__ is int
    gws13.parameters.ping_interval = 7
    b = params.effective(max_queue=1)
    assert b is not a and b["ping_interval"] == 7 and a["ping_interval"] == 15
    with gws13.parameterize(close_timeout=2):
        c = params.effective(max_queue=1)
        assert c is not b and c["close_timeout"] == 2 and c["max_queue"] == 1
    with pytest.raises(TypeError):
        params.effective(max_queue="1")


def test_per_call_keywords_win(serve):
    def app(environ, start_response):
        with gws13.parameterize(ping_interval=0):
            return gws13.with_websocket(environ, start_response, lambda ws: ws.receive(),
                                        ping_interval=0.1)
    srv = serve(app)
    raw = RawClient(srv.port)
    assert raw.next_event(timeout=2).__class__.__name__ == "Ping"
    raw.close()


def test_egg_api_round_trip(serve):
    out = queue.Queue()

    def proc(ws):
        out.put(gws13.current_websocket() is ws)
        out.put(gevent.spawn(gws13.current_websocket).get() is ws)   # inherited by spawned greenlets
        data, kind = gws13.receive_message()
        gws13.send_message(data.upper(), "text")
        data, kind = gws13.receive_message()
        gws13.send_message(data[::-1], "binary")
        gws13.send_message(b"pp", "ping")
        gws13.send_message("po", "pong")
        try:
            gws13.send_message("x", "bogus")
        except gws13.InvalidOptype as exc:
            out.put(type(exc))
        try:
            gws13.send_message("x", "continuation")
        except gws13.InvalidOptype as exc:
            out.put(type(exc))
        out.put(gws13.receive_message())

    srv = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    c = websocket.create_connection(srv.url, timeout=5)
    assert out.get(timeout=5) is True and out.get(timeout=5) is True
    c.send("abc")
    assert c.recv() == "ABC"
    c.send_binary(b"\x01\x02")
    assert c.recv_data() == (2, b"\x02\x01")
    frame = c.recv_frame()
    assert (frame.opcode, frame.data) == (OP_PING, b"pp")
    frame = c.recv_frame()
    assert (frame.opcode, frame.data) == (OP_PONG, b"po")
    assert out.get(timeout=5) is gws13.InvalidOptype
    assert out.get(timeout=5) is gws13.InvalidOptype
    c.close(status=1000)
    data, kind = out.get(timeout=5)
    assert kind == "connection-close" and data[:2] == b"\x03\xe8"


def test_current_websocket_outside_is_none_and_calls_need_a_socket():
    assert gws13.current_websocket() is None
    with pytest.raises(gws13.WebSocketError):
        gws13.receive_message()


def test_exception_hierarchy():
    assert issubclass(gws13.ReservedBitsNotSupported, gws13.ProtocolError)
    assert issubclass(gws13.MissingUpgradeHeader, gws13.HandshakeError)
    for cls in (gws13.ProtocolError, gws13.InvalidData, gws13.MessageTooLarge, gws13.ConnectionTimeout,
                gws13.InvalidOptype, gws13.HandshakeError, gws13.UnexpectedError, gws13.ConnectionClosed):
        assert issubclass(cls, gws13.WebSocketError)
    codes = {gws13.ProtocolError: 1002, gws13.InvalidData: 1007, gws13.ConnectionTimeout: 1001,
             gws13.MessageTooLarge: 1009, gws13.UnexpectedError: 1011}
    assert {cls: cls().code for cls in codes} == codes
    closed = gws13.ConnectionClosed(4000, "why")
    assert (closed.code, closed.reason) == (4000, "why")


def test_core_modules_do_not_import_gevent():
    import subprocess
    import sys
    code = ("import sys; import gws13.protocol, gws13.frames, gws13.handshake, gws13.exceptions; "
            "sys.exit('gevent' in sys.modules)")
    # import the core modules without the package's __init__ pulling the gevent layer in
    code = ("import sys, importlib.util, types; pkg = types.ModuleType('gws13'); "
            "pkg.__path__ = [__import__('os').path.dirname(importlib.util.find_spec('gws13').origin)]; "
            "sys.modules['gws13'] = pkg; " + code.split("; ", 1)[1])
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
