"""gws13.bottle end to end: Bottle apps on gevent.pywsgi with gws13.WebSocketHandler,
driven by real clients over loopback.

The in-process tests (``serve`` fixture: a server thread without monkey
patching) open one connection at a time, because Bottle keeps its request in a
``threading.local``; the concurrency test runs ``examples/bottle_app.py``,
which monkey-patches as Bottle requires under gevent."""

from __future__ import annotations

import json
import threading

import pytest

bottle = pytest.importorskip("bottle")
requests = pytest.importorskip("requests")
ws_client = pytest.importorskip("websockets.sync.client")
ws_exceptions = pytest.importorskip("websockets.exceptions")

from gws13.bottle import websocket  # noqa: E402
from gws13.testing import Client  # noqa: E402

from conftest import (RawClient, check_per_route_parameters, close_code_after,  # noqa: E402
                      connect, start_example, stop_process)

TIMEOUT = 5


def echo(ws):
    for message in ws:
        ws.send(message)


def test_apply_websocket_with_url_arguments():
    # a round trip through the real handler: the in-process client is enough
    app = bottle.Bottle()

    @app.route("/rooms/<room>/<n:int>", apply=[websocket])
    def room(ws, room, n):
        ws.send(json.dumps({"room": room, "n": n, "path": ws.path,
                            "query": bottle.request.query.get("q")}))
        for message in ws:
            ws.send(f"{room}#{n}: {message}")

    with Client(app).connect("/rooms/lobby/3?q=yes") as conn:
        assert json.loads(conn.receive(timeout=TIMEOUT)) == {
            "room": "lobby", "n": 3, "path": "/rooms/lobby/3", "query": "yes"}
        conn.send("hi")
        assert conn.receive(timeout=TIMEOUT) == "lobby#3: hi"
        conn.send(b"\x00\x01")
        assert conn.receive(timeout=TIMEOUT) == "lobby#3: b'\\x00\\x01'"


def test_stacked_decorator_form(serve):
    app = bottle.Bottle()

    @app.get("/stacked")
    @websocket(max_message_size=10)
    def stacked(ws):
        echo(ws)

    server = serve(app)
    with connect(server.url + "/stacked") as conn:
        conn.send("0123456789")
        assert conn.recv(timeout=TIMEOUT) == "0123456789"
        assert close_code_after(conn, "0123456789A") == 1009


def test_plain_routes_of_the_app_stay_http(serve):
    """``websocket`` is a per-route plugin: the app's other routes stay HTTP."""
    app = bottle.Bottle()

    @app.get("/page")
    def page():
        return "plain page"

    @app.route("/ws", apply=[websocket])
    def ws_route(ws):
        ws.send("socket")

    server = serve(app)
    response = requests.get(server.http + "/page", timeout=TIMEOUT)
    assert response.status_code == 200 and response.text == "plain page"
    with connect(server.url + "/ws") as conn:
        assert conn.recv(timeout=TIMEOUT) == "socket"
        assert close_code_after(conn) == 1000


def test_per_route_parameters_and_subprotocols(serve):
    app = bottle.Bottle()

    @app.route("/small", apply=[websocket(max_message_size=50)])
    def small(ws):
        echo(ws)

    @app.route("/default", apply=[websocket])
    def default(ws):
        echo(ws)

    @app.route("/proto", apply=[websocket(subprotocols=["chat.v2", "chat.v1"])])
    def proto(ws):
        ws.send(ws.subprotocol or "")

    check_per_route_parameters(serve(app).url)


def test_app_config_defaults_and_route_override(serve):
    app = bottle.Bottle()
    app.config.load_dict({"gws13": {"max_message_size": 20}})
    assert app.config["gws13.max_message_size"] == 20

    @app.route("/configured", apply=[websocket])
    def configured(ws):
        echo(ws)

    @app.route("/override", apply=[websocket(max_message_size=1000)])
    def override(ws):
        echo(ws)

    server = serve(app)
    with connect(server.url + "/configured") as conn:
        conn.send("z" * 20)
        assert conn.recv(timeout=TIMEOUT) == "z" * 20
        assert close_code_after(conn, "z" * 21) == 1009
    with connect(server.url + "/override") as conn:
        conn.send("z" * 500)
        assert conn.recv(timeout=TIMEOUT) == "z" * 500


def test_bad_parameters_fail_at_decoration():
    with pytest.raises(TypeError):
        websocket(ping_interval="soon")
    with pytest.raises(TypeError, match="receive_bytes"):
        websocket(receive_bytes=4096)
    with pytest.raises(ValueError):
        websocket(max_message_size=0)


def test_plain_get_is_400_with_guidance(serve):
    app = bottle.Bottle()
    ran = []

    @app.route("/ws", apply=[websocket])
    def ws_route(ws):
        ran.append(ws)

    server = serve(app)
    response = requests.get(server.http + "/ws", timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert ran == []


def test_nothing_is_written_after_the_websocket_ends(serve):
    app = bottle.Bottle()
    hooks = []
    hooked = threading.Event()

    @app.hook("after_request")
    def after():
        hooks.append(bottle.response.status_code)
        hooked.set()

    @app.route("/bye", apply=[websocket])
    def bye(ws):
        ws.send("bye")
        return "a body Bottle must not send"

    server = serve(app)
    raw = RawClient(server.port, "/bye")
    try:
        assert raw.status == 101
        events = raw.read_until_close()
        assert [type(e).__name__ for e in events] == ["Message", "Close"]
        assert events[0].data == "bye" and events[-1].code == 1000
        raw.send_frame(0x8, b"\x03\xe8")
        assert raw.at_eof()
    finally:
        raw.close()
    assert hooked.wait(TIMEOUT)  # hooks run once the callback returned, after the close
    assert hooks == [101]


def test_refused_origin_gets_only_the_access_denied_answer(serve):
    app = bottle.Bottle()

    @app.route("/guarded", apply=[websocket(accept_connection=lambda o: o == "http://good.example")])
    def guarded(ws):
        ws.send("welcome")

    server = serve(app)
    raw = RawClient(server.port, "/guarded", headers={"Origin": "http://evil.example"})
    try:
        assert raw.status == 403
        assert raw.at_eof()
    finally:
        raw.close()
    with connect(server.url + "/guarded", origin="http://good.example") as conn:
        assert conn.recv(timeout=TIMEOUT) == "welcome"


def test_callback_exception_closes_1011_and_server_keeps_serving(serve):
    app = bottle.Bottle()
    app.catchall = True

    @app.route("/boom", apply=[websocket])
    def boom(ws):
        ws.receive()
        raise RuntimeError("boom")

    @app.route("/echo", apply=[websocket])
    def echo_route(ws):
        echo(ws)

    server = serve(app)
    with connect(server.url + "/boom") as conn:
        assert close_code_after(conn, "go") == 1011
    with connect(server.url + "/echo") as conn:
        conn.send("still here")
        assert conn.recv(timeout=TIMEOUT) == "still here"


def test_under_the_stock_pywsgi_handler(serve):
    """Without gws13.WebSocketHandler (the socket is taken over from
    gevent.pywsgi.WSGIHandler): same behaviour and no error in the server."""
    from gevent import pywsgi

    errors = []

    class RecordingHandler(pywsgi.WSGIHandler):
        def handle_error(self, t, v, tb):
            errors.append(v)
            super().handle_error(t, v, tb)

    app = bottle.Bottle()

    @app.route("/rooms/<room>", apply=[websocket(max_message_size=50)])
    def room(ws, room):
        ws.send(room)
        echo(ws)

    server = serve(app, handler_class=RecordingHandler)
    with connect(server.url + "/rooms/r2") as conn:
        assert conn.recv(timeout=TIMEOUT) == "r2"
        conn.send("hi")
        assert conn.recv(timeout=TIMEOUT) == "hi"
        assert close_code_after(conn, "x" * 51) == 1009
    raw = RawClient(server.port, "/rooms/r3")
    try:
        assert raw.status == 101
        assert raw.next_event().data == "r3"
        raw.send_frame(0x8, b"\x03\xe8")
        assert [type(e).__name__ for e in raw.read_until_close()] == ["Close"]
        assert raw.at_eof()
    finally:
        raw.close()
    assert requests.get(server.http + "/rooms/r1", timeout=TIMEOUT).status_code == 400
    server.stop()  # every handler has finished: its errors are in
    assert errors == []


# -- the example, as its users run it (monkey-patched, in its own process) -----



@pytest.fixture
def bottle_example(tmp_path):
    proc, port = start_example("bottle_app.py", str(tmp_path / "bottle_app.log"))
    yield port
    stop_process(proc)


def test_example_serves_page_echo_and_rooms_concurrently(bottle_example):
    port = bottle_example
    page = requests.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert page.status_code == 200 and "new WebSocket" in page.text
    with connect(f"ws://127.0.0.1:{port}/echo") as conn:
        conn.send(b"\x00binary")
        assert conn.recv(timeout=TIMEOUT) == b"\x00binary"
    # two interleaved connections: each one's bottle.request stays its own
    with connect(f"ws://127.0.0.1:{port}/rooms/r1?name=ann") as ann, \
            connect(f"ws://127.0.0.1:{port}/rooms/r1?name=bob") as bob:
        assert ann.recv(timeout=TIMEOUT) == "welcome to r1 (1 here)"
        assert bob.recv(timeout=TIMEOUT) == "welcome to r1 (2 here)"
        for i in range(3):
            ann.send(f"a{i}")
            assert ann.recv(timeout=TIMEOUT) == f"[r1] ann: a{i}"
            assert bob.recv(timeout=TIMEOUT) == f"[r1] ann: a{i}"
            bob.send(f"b{i}")
            assert ann.recv(timeout=TIMEOUT) == f"[r1] bob: b{i}"
            assert bob.recv(timeout=TIMEOUT) == f"[r1] bob: b{i}"
    assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=TIMEOUT).status_code == 400
