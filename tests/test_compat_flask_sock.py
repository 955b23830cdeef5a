"""gws13.compat.flask_sock: flask-sock's ``Sock`` and simple-websocket's
socket semantics over gws13.WebSocket.

flask-sock's examples (echo-gevent, clock, blueprints; mirrored in
tests/compat_apps/flask_sock/) run as processes with real clients and a
browser; the socket's semantics are checked in process, one behaviour per test."""

from __future__ import annotations

import json
import socket

import pytest

flask = pytest.importorskip("flask")
websocket = pytest.importorskip("websocket")  # websocket-client
requests = pytest.importorskip("requests")

import gws13  # noqa: E402
from gws13.compat.flask_sock import ConnectionClosed, Sock  # noqa: E402

from compat_support import (APPS, TIMEOUT, Events, browser, needs_chromium, run_app,  # noqa: E402,F401
                            wait_until)
from conftest import RawClient, close_code_after, connect, raw_connect  # noqa: E402


def make_app(**options):
    app = flask.Flask(__name__)
    if options:
        app.config["SOCK_SERVER_OPTIONS"] = options
    return app


# -- the upstream examples ------------------------------------------------------

def test_echo_gevent_example_on_the_stock_pywsgi_server(run_app):
    app = run_app("flask_sock/echo_gevent.py")
    assert "Flask-Sock Demo" in requests.get(app.http + "/", timeout=TIMEOUT).text
    with connect(app.url + "/echo") as conn:
        for message in ("hello", b"\x00bytes", "h\u00e9" * 5000):
            conn.send(message)
            assert conn.recv(timeout=TIMEOUT) == message
        # 'close' ends the route; flask-sock then closes the connection (1000)
        assert close_code_after(conn, "close") == 1000
    with connect(app.url + "/echo") as conn:  # and a client that just leaves
        conn.send("x")
        assert conn.recv(timeout=TIMEOUT) == "x"
    # a plain GET to the WebSocket route: Werkzeug's 400, as with flask-sock
    assert requests.get(app.http + "/echo", timeout=TIMEOUT).status_code == 400
    app.stop()
    app.assert_clean()


@needs_chromium
def test_echo_example_page_in_a_browser(run_app, browser):
    from playwright.sync_api import expect

    app = run_app("flask_sock/echo_gevent.py")
    page = browser.new_page()
    page.goto(app.http + "/")
    expect(page.locator("#log .status")).to_have_text(["[open]"])
    for text in ("first line", "second \u2713"):
        page.locator("#text").fill(text)
        page.locator("#text").press("Enter")
        expect(page.locator("#log .in", has_text=text)).to_have_count(1)
    page.locator("#text").fill("close")
    page.locator("#text").press("Enter")
    expect(page.locator("#log .status").last).to_have_text("<<< closed 1000")
    app.stop()
    app.assert_clean()


def test_clock_example_thread_sends_to_every_client(run_app):
    app = run_app("flask_sock/clock.py")
    clients = [websocket.create_connection(app.url + "/clock", timeout=TIMEOUT) for _ in range(2)]
    for ws in clients:
        ticks = [json.loads(ws.recv())["text"] for _ in range(2)]  # one a second, from the thread
        assert all(len(t) == len("2024-01-01 00:00:00") for t in ticks) and ticks[0] != ticks[1]
    clients[0].send("stop")
    # the route returns; the connection ends with 1000
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        while True:
            clients[0].recv()
    clients[1].close()
    app.stop()
    app.assert_clean()


@needs_chromium
def test_clock_example_page_in_a_browser(run_app, browser):
    from playwright.sync_api import expect

    app = run_app("flask_sock/clock.py")
    page = browser.new_page()
    page.goto(app.http + "/")
    wait_until(lambda: int(page.locator("#ticks").inner_text()) >= 2, what="two ticks")
    page.locator("#stop").click()
    expect(page.locator("#log")).to_have_text("[Stopped 1000]")
    app.stop()
    app.assert_clean()


def test_blueprints_example(run_app):
    app = run_app("flask_sock/blueprints/run.py")
    assert "Flask-Sock Demo" in requests.get(app.http + "/", timeout=TIMEOUT).text
    with connect(app.url + "/echo") as conn:
        conn.send("through a Sock() registered by init_app")
        assert conn.recv(timeout=TIMEOUT) == "through a Sock() registered by init_app"
        assert close_code_after(conn, "close") == 1000
    app.stop()
    app.assert_clean()


def test_echo_example_under_gunicorns_gevent_worker():
    """flask-sock's documented gunicorn deployment: ``--worker-class gevent``."""
    from test_gunicorn import Gunicorn, assert_clean

    server = Gunicorn("echo_gevent:app", "-k", "gevent", cwd=APPS / "flask_sock", workers=1, graceful=2)
    try:
        with connect(server.url + "/echo") as conn:
            conn.send("on gunicorn")
            assert conn.recv(timeout=TIMEOUT) == "on gunicorn"
            assert close_code_after(conn, "close") == 1000
        elapsed, code = server.stop()
        assert code == 0
        assert_clean(server)
    finally:
        server.kill()


# -- Sock, as flask-sock's own tests check it --------------------------------------

def test_sock_with_an_app_registers_websocket_rules():
    app = flask.Flask(__name__, static_folder=None)
    sock = Sock(app)

    @sock.route("/ws")
    def ws(ws):
        pass

    assert sock.app is app and sock.bp is None
    (rule,) = app.url_map.iter_rules()
    assert rule.rule == "/ws" and rule.websocket is True
    assert ws.__name__ == "ws"  # the view comes back (flask-sock returns None)


def test_sock_without_an_app_keeps_routes_on_its_blueprint_until_init_app():
    app = flask.Flask(__name__, static_folder=None)
    sock = Sock()

    @sock.route("/ws")
    def ws(ws):
        pass

    assert sock.app is None and sock.bp is not None
    sock.init_app(app)
    assert sock.app is app
    (rule,) = app.url_map.iter_rules()
    assert rule.rule == "/ws" and rule.websocket is True


def test_sock_route_on_a_blueprint():
    app = flask.Flask(__name__, static_folder=None)
    bp = flask.Blueprint("bp", __name__)
    sock = Sock()

    @sock.route("/ws", bp=bp)
    def ws(ws):
        pass

    assert sock.bp is None
    sock.init_app(app)
    app.register_blueprint(bp, url_prefix="/bp")

    @sock.route("/ws")
    def ws2(ws):
        pass

    rules = sorted((r.rule, r.websocket) for r in app.url_map.iter_rules())
    assert rules == [("/bp/ws", True), ("/ws", True)]


# -- simple-websocket's semantics, in process -----------------------------------------

def serve_route(serve, route, handler_class=gws13.WebSocketHandler, path="/ws", **options):
    app = make_app(**options)
    Sock(app).route(path)(route)
    return serve(app, handler_class=handler_class)


def test_receive_timeout_returns_none_then_messages_then_connection_closed(serve):
    events = Events()

    def route(ws):
        events.put(("timeout", ws.receive(timeout=0.05), ws.receive(timeout=0)))
        ws.send("ready")
        got = []
        try:
            while True:
                got.append(ws.receive())
        except ConnectionClosed as exc:
            events.put((got, exc.reason, exc.message, ws.connected, ws.close_reason, ws.close_message))
        with pytest.raises(ConnectionClosed):  # every later call too
            ws.receive(timeout=1)
        with pytest.raises(ConnectionClosed):
            ws.send("too late")
        events.put("done")

    server = serve_route(serve, route)
    with connect(server.url + "/ws") as conn:
        assert events.get() == ("timeout", None, None)
        assert conn.recv(timeout=TIMEOUT) == "ready"
        conn.send("a")
        conn.send(b"b")
        conn.close(4000, "bye")
    got, reason, message, connected, close_reason, close_message = events.get()
    # the messages sent before the close all arrive first
    assert got == ["a", b"b"]
    assert (reason, message, connected, close_reason, close_message) == (4000, "bye", False, 4000, "bye")
    assert events.get() == "done"


def test_state_while_open(serve):
    events = Events()

    def route(ws):
        events.put((ws.connected, ws.close_reason, ws.close_message, ws.subprotocol, ws.mode))

    server = serve_route(serve, route)
    with connect(server.url + "/ws"):
        assert events.get() == (True, 1005, None, None, "gevent")


def test_send_types_as_simple_websocket(serve):
    def route(ws):
        ws.send("text")
        ws.send(b"binary")
        ws.send(42)  # not bytes: str(42), as text
        ws.send(bytearray(b"ab"))  # not bytes either: its repr, as simple-websocket does
        ws.send({"k": 1})

    server = serve_route(serve, route)
    with connect(server.url + "/ws") as conn:
        assert [conn.recv(timeout=TIMEOUT) for _ in range(5)] == [
            "text", b"binary", "42", "bytearray(b'ab')", "{'k': 1}"]


def test_close_with_reason_and_message(serve):
    events = Events()

    def route(ws):
        ws.close(reason=4001, message="done here")
        try:
            ws.close()
        except ConnectionClosed as exc:  # closing twice raises, as simple-websocket
            events.put((exc.reason, ws.close_reason, ws.connected))

    server = serve_route(serve, route)
    with connect(server.url + "/ws") as conn:
        with pytest.raises(Exception):
            conn.recv(timeout=TIMEOUT)
    assert (conn.close_code, conn.close_reason) == (4001, "done here")
    assert events.get() == (4001, 4001, False)


def test_connection_closed_ends_the_route_quietly(serve):
    def route(ws):
        while True:  # flask-sock's canonical loop: ends with ConnectionClosed
            ws.send(ws.receive())

    server = serve_route(serve, route)
    with connect(server.url + "/ws") as conn:
        conn.send("echo me")
        assert conn.recv(timeout=TIMEOUT) == "echo me"
    assert conn.close_code == 1000


def test_subprotocol_in_the_clients_order(serve):
    def route(ws):
        ws.send(str(ws.subprotocol))

    server = serve_route(serve, route, subprotocols=["a.v1", "b.v1"])
    # simple-websocket picks the client's first acceptable choice (gws13's own
    # subprotocols parameter would pick the server's first)
    with connect(server.url + "/ws", subprotocols=["b.v1", "a.v1"]) as conn:
        assert conn.subprotocol == "b.v1" and conn.recv(timeout=TIMEOUT) == "b.v1"
    with connect(server.url + "/ws", subprotocols=["c"]) as conn:
        assert conn.subprotocol is None and conn.recv(timeout=TIMEOUT) == "None"


def test_no_ping_interval_means_no_idle_timeout(serve):
    # gws13's own defaults would close an idle client after connection_timeout
    gws13.parameters.connection_timeout = 0.2

    def route(ws):
        while True:
            ws.send(ws.receive())

    server = serve_route(serve, route)  # no SOCK_SERVER_OPTIONS: simple-websocket's ping_interval=None
    client = RawClient(server.port, "/ws")
    assert client.status == 101
    with pytest.raises(socket.timeout):  # TimeoutError from Python 3.10 on
        client.next_event(timeout=0.6)  # silence: no ping, no close
    client.send_frame(0x1, b"still here")
    assert client.next_event().data == "still here"
    client.close()


def test_ping_interval_pings_and_drops_a_silent_client(serve):
    def route(ws):
        while True:
            ws.receive()

    server = serve_route(serve, route, ping_interval=0.2, thread_class=object, receive_bytes=1)
    client = RawClient(server.port, "/ws")  # answers nothing
    events = client.read_until_close(timeout=TIMEOUT)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Ping" and kinds[-1] == "Close", kinds
    client.close()


def test_max_message_size(serve):
    def route(ws):
        while True:
            ws.send(ws.receive())

    server = serve_route(serve, route, max_message_size=10)
    with connect(server.url + "/ws") as conn:
        conn.send("x" * 10)
        assert conn.recv(timeout=TIMEOUT) == "x" * 10
        assert close_code_after(conn, "x" * 11) == 1009


def test_an_unknown_option_fails_the_request(serve):
    server = serve_route(serve, lambda ws: None, no_such_option=1)
    sock, status, headers, rest = raw_connect(server.port, "/ws")
    assert status == 500
    sock.close()


def test_gws13_parameters_pass_through(serve):
    def route(ws):
        ws.send(ws.receive())

    server = serve_route(serve, route, compression=None)
    with connect(server.url + "/ws", compression="deflate") as conn:
        conn.send("hi")
        assert conn.recv(timeout=TIMEOUT) == "hi"
        assert "permessage-deflate" not in (conn.response.headers.get("Sec-WebSocket-Extensions") or "")


def test_an_exception_of_the_route_closes_with_1011(serve):
    def route(ws):
        ws.receive()
        raise KeyError("bug")

    server = serve_route(serve, route)
    with connect(server.url + "/ws") as conn:
        assert close_code_after(conn, "go") == 1011


def test_routes_under_the_gevent_websocket_facades_handler(serve):
    """An app that mixes libraries (e.g. Flask-SocketIO served by the
    gevent-websocket facade's handler, plus flask-sock routes)."""
    from gws13.compat.geventwebsocket.handler import WebSocketHandler

    def route(ws):
        while True:
            ws.send(ws.receive())

    server = serve_route(serve, route, handler_class=WebSocketHandler)
    with connect(server.url + "/ws") as conn:
        conn.send("mixed")
        assert conn.recv(timeout=TIMEOUT) == "mixed"
    assert conn.close_code == 1000


def test_still_correct_when_gws13_receive_raises_after_the_end(serve, monkeypatch):
    """The core is moving to ``receive()``: None once, then ConnectionClosed."""
    original = gws13.WebSocket.receive
    reported = set()

    def receive(self, timeout=None):
        if id(self) in reported:
            raise gws13.ConnectionClosed(self.close_code or 1006, self.close_reason)
        message = original(self, timeout)
        if message is None:
            reported.add(id(self))
        return message

    monkeypatch.setattr(gws13.WebSocket, "receive", receive)
    events = Events()

    def route(ws):
        assert ws.gws13_websocket.receive() is None  # another reader took gws13's None
        for _ in range(2):
            try:
                ws.receive()
            except ConnectionClosed as exc:
                events.put(exc.reason)

    server = serve_route(serve, route)
    with connect(server.url + "/ws") as conn:
        conn.close(4002)
    assert (events.get(), events.get()) == (4002, 4002)
