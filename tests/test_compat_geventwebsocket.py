"""gws13.compat.geventwebsocket: gevent-websocket's API over gws13.WebSocket.

Two kinds of tests: gevent-websocket's own examples (echoserver, chat,
plot_graph; mirrored in tests/compat_apps/geventwebsocket/, Python 3, only the
imports changed) as processes with real clients and a browser; and the socket's
semantics in process (the ``serve`` fixture), one behaviour per test."""

from __future__ import annotations

import json
import signal
import socket
import threading

import gevent
import pytest
from gevent import pywsgi

import gws13
from gws13.compat.geventwebsocket import Resource, WebSocketApplication, WebSocketError, get_version
from gws13.compat.geventwebsocket import exceptions as gws_exceptions
from gws13.compat.geventwebsocket.handler import WebSocketHandler
from gws13.compat.geventwebsocket.protocols.base import BaseProtocol
from gws13.compat.geventwebsocket.websocket import WebSocket

websocket = pytest.importorskip("websocket")  # websocket-client
requests = pytest.importorskip("requests")

from compat_support import (APPS, TIMEOUT, Events, browser, needs_chromium, run_app,  # noqa: E402,F401
                            wait_until)
from conftest import connect, raw_connect  # noqa: E402


def ws_connect(url, **kwargs):
    return websocket.create_connection(url, timeout=TIMEOUT, **kwargs)


# -- the upstream examples ------------------------------------------------------

def test_echoserver_example(run_app):
    app = run_app("geventwebsocket/echoserver.py")
    assert requests.get(app.http + "/version", timeout=TIMEOUT).text == "gevent-websocket/0.10.1"
    plain = requests.get(app.http + "/", timeout=TIMEOUT)
    assert plain.status_code == 400 and plain.text == "WebSocket connection is expected here."
    ws = ws_connect(app.url + "/")
    for message in ("hello", "h\u00e9llo " * 1000, ""):
        ws.send(message)
        assert ws.recv() == message
    ws.send_binary(b"\x00\xff" * 40000)
    assert ws.recv() == b"\x00\xff" * 40000
    ws.close()
    # the websockets client: the server's receive() sees None, the app closes with 1000
    with connect(app.url + "/echo") as conn:
        conn.send("over websockets")
        assert conn.recv(timeout=TIMEOUT) == "over websockets"
    assert conn.close_code == 1000
    app.stop()
    app.assert_clean()
    assert "WebSocketError" not in app.log()  # the example prints any it catches


def chat_client(app, nickname):
    ws = ws_connect(app.url + "/chat")
    ws.send(json.dumps({"msg_type": "update_clients", "nickname": nickname}))
    return ws


def next_of(ws, msg_type):
    while True:
        data = json.loads(ws.recv())
        if data["msg_type"] == msg_type:
            return data


def test_chat_example_broadcasts_through_server_clients(run_app):
    app = run_app("geventwebsocket/chat/chat.py")
    page = requests.get(app.http + "/", timeout=TIMEOUT)  # the Flask app behind the Resource
    assert page.status_code == 200 and "Websocket chat" in page.text
    alice = chat_client(app, "alice")
    assert next_of(alice, "update_clients")["clients"] == ["alice"]
    bob = chat_client(app, "bob")
    # handler.active_client carries the nickname; handler.server.clients lists everyone
    assert sorted(next_of(bob, "update_clients")["clients"]) == ["alice", "bob"]
    alice.send(json.dumps({"msg_type": "message", "nickname": "alice", "message": "hi all"}))
    for ws in (alice, bob):
        assert next_of(ws, "message") == {"msg_type": "message", "nickname": "alice", "message": "hi all"}
    bob.close()

    def alone():
        alice.send(json.dumps({"msg_type": "update_clients", "nickname": "alice"}))
        return next_of(alice, "update_clients")["clients"] == ["alice"]

    wait_until(alone, what="bob to leave server.clients")
    alice.close()
    wait_until(lambda: app.log().count("Connection closed!") == 2, what="on_close for both")
    app.stop()
    app.assert_clean()


@needs_chromium
def test_chat_example_in_a_browser(run_app, browser):
    from playwright.sync_api import expect

    app = run_app("geventwebsocket/chat/chat.py")
    one, two = browser.new_page(), browser.new_page()
    for page, nickname in ((one, "ann"), (two, "ben")):
        page.goto(app.http + "/")
        expect(page.locator(".connecting_status")).to_have_text("connected")
        page.locator(".nickname").fill(nickname)
        page.locator(".change_nickname").click()
    for page in (one, two):
        expect(page.locator(".connected_clients li")).to_have_count(2)
    assert sorted(one.locator(".connected_clients li").all_inner_texts()) == ["ann", "ben"]
    one.locator(".message").fill("hello from ann")
    one.locator(".send_message").click()
    for page in (one, two):
        expect(page.locator(".message_pane dd", has_text="hello from ann")).to_have_count(1)
    expect(two.locator(".message_pane dt").first).to_have_text("ann")
    two.close()
    expect(one.locator(".connected_clients li")).to_have_count(1)  # the 2 s refresh
    one.close()
    wait_until(lambda: app.log().count("Connection closed!") == 2, what="on_close for both pages")
    app.stop()
    app.assert_clean()


@needs_chromium
def test_plot_graph_example_in_a_browser(run_app, browser):
    from playwright.sync_api import expect

    app = run_app("geventwebsocket/plot_graph.py")
    page = browser.new_page()
    page.goto(app.http + "/")  # the static WSGI app of the Resource
    expect(page.locator("#status")).to_have_text("open")
    wait_until(lambda: int(page.locator("#count").inner_text()) >= 5, what="five points plotted")
    page.close()
    app.stop()
    app.assert_clean()


def test_plot_graph_example_under_the_gunicorn_worker():
    """plot_graph's docstring: ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker
    plot_graph:app``; a graceful stop says 1001 to the open WebSocket."""
    from test_gunicorn import Gunicorn, assert_clean

    server = Gunicorn("plot_graph:app", "-k", "gws13.compat.geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                      cwd=APPS / "geventwebsocket", workers=1, graceful=3)
    try:
        assert "<canvas" in requests.get(server.http + "/", timeout=TIMEOUT).text
        ws = gws13.connect(server.url + "/data")
        points = [ws.receive(timeout=TIMEOUT) for _ in range(3)]
        assert [p.split()[:2] for p in points] == [["0", "0"], ["0", "1"], ["0", "2"]]
        elapsed, code = server.stop(signal.SIGTERM)
        while ws.receive(timeout=TIMEOUT) is not None:
            pass  # points sent before the close
        assert ws.close_code == 1001
        assert code == 0
        assert_clean(server)
        assert any('"GET /data HTTP/1.1" 101' in line for line in server.access), server.access
    finally:
        server.kill()


# -- the socket's semantics, in process -----------------------------------------

def facade_app(proc):
    """A WSGI app running ``proc(ws)`` on environ["wsgi.websocket"]."""
    def app(environ, start_response):
        proc(environ["wsgi.websocket"])
        return []
    return app


def test_receive_returns_none_once_then_raises_a_socket_error(serve):
    events = Events()

    def proc(ws):
        messages = []
        while True:
            closed_before = ws.closed
            try:
                message = ws.receive()
            except socket.error as exc:  # gevent-websocket's WebSocketError is one
                events.put((messages, type(exc), closed_before, ws.closed))
                return
            messages.append(message)

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    with connect(server.url + "/") as conn:
        conn.send("one")
        conn.send(b"two")
    messages, error, closed_before_last, closed = events.get()
    # every message sent before the close is delivered before the end
    assert messages == ["one", bytearray(b"two"), None]
    assert type(messages[1]) is bytearray  # gevent-websocket's type for binary
    assert error is WebSocketError and issubclass(error, gws13.WebSocketError)
    assert closed_before_last and closed


def test_send_after_the_close_raises_a_socket_error(serve):
    events = Events()

    def proc(ws):
        assert ws.receive() is None
        try:
            ws.send("too late")
        except socket.error as exc:
            events.put(str(exc))

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    with connect(server.url + "/"):
        pass
    assert events.get() == "Socket is dead"


def test_close_sends_code_and_message(serve):
    def proc(ws):
        ws.send("bye soon")
        ws.close(4001, b"gone fishing")
        ws.close()  # twice: nothing more
        assert ws.closed

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    with connect(server.url + "/") as conn:
        assert conn.recv(timeout=TIMEOUT) == "bye soon"
        with pytest.raises(Exception):
            conn.recv(timeout=TIMEOUT)
    assert (conn.close_code, conn.close_reason) == (4001, "gone fishing")


class ChatProtocol(BaseProtocol):
    PROTOCOL_NAME = "chat.v1"


class SubprotocolApp(WebSocketApplication):
    protocol_class = ChatProtocol

    def on_open(self):
        self.ws.send(f"{self.ws.subprotocol}|{self.ws.protocol}")


def test_protocol_name_is_answered_as_the_subprotocol(serve):
    server = serve(Resource([("^/chat", SubprotocolApp)]), handler_class=WebSocketHandler)
    # websocket-client refuses a 101 without the subprotocol it asked for
    ws = ws_connect(server.url + "/chat", subprotocols=["chat.v2", "chat.v1"])
    assert ws.subprotocol == "chat.v1"
    assert ws.recv() == "chat.v1|chat.v2,chat.v1"  # the header as websocket-client wrote it
    ws.close()
    # not offered: no Sec-WebSocket-Protocol in the 101 (never one the client did not ask for)
    sock, status, headers, rest = raw_connect(server.port, "/chat", {"Sec-WebSocket-Protocol": "chatty"})
    assert status == 101 and "sec-websocket-protocol" not in headers
    sock.close()


def test_request_attributes_handler_and_server_clients(serve):
    events = Events()

    def proc(ws):
        clients = ws.handler.server.clients
        events.put({
            "path": ws.path, "origin": ws.origin, "protocol": ws.protocol, "version": ws.version,
            "environ": ws.environ["QUERY_STRING"], "logger": ws.logger.name,
            "client_ws": clients[ws.handler.client_address].ws is ws,
            "active": ws.handler.active_client.ws is ws, "handler_ws": ws.handler.websocket is ws,
            "address": ws.handler.client_address[0],
        })
        ws.current_app.on_close("ignored")  # the null app: gevent-websocket's MockApp
        events.put(len(clients))
        ws.receive()

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    sock, status, headers, rest = raw_connect(server.port, "/p/q?x=1", {
        "Origin": "http://example.test", "Sec-WebSocket-Protocol": "a, b"})
    assert status == 101
    seen = events.get()
    assert seen == {"path": "/p/q", "origin": "http://example.test", "protocol": "a, b", "version": "13",
                    "environ": "x=1", "logger": seen["logger"], "client_ws": True, "active": True,
                    "handler_ws": True, "address": "127.0.0.1"}
    sock.close()
    assert events.get() == 1
    # the client leaves server.clients with the connection
    wait_until(lambda: server.server.clients == {}, what="server.clients to empty")


def test_read_message_and_send_frame(serve):
    events = Events()

    def proc(ws):
        first = ws.read_message()
        ws.send_frame("text frame", WebSocket.OPCODE_TEXT)
        ws.send_frame(b"\x01\x02", WebSocket.OPCODE_BINARY)
        ws.send(bytearray(b"\x03"))
        ws.send(memoryview(b"\x04"))
        ws.send(None, binary=False)  # str(None or ""): an empty text message
        events.put(first)
        events.put(ws.read_message())
        with pytest.raises(WebSocketError):
            ws.read_message()
        events.put("raised")

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    with connect(server.url + "/") as conn:
        conn.send("hello")
        assert [conn.recv(timeout=TIMEOUT) for _ in range(5)] == ["text frame", b"\x01\x02", b"\x03", b"\x04", ""]
    assert events.get() == "hello"
    assert events.get() is None
    assert events.get() == "raised"


@pytest.mark.parametrize("handler_class", [gws13.WebSocketHandler, pywsgi.WSGIHandler],
                         ids=["gws13-handler", "stock-pywsgi-handler"])
def test_resource_upgrades_by_itself_under_other_handlers(serve, handler_class):
    events = Events()

    class Echo(WebSocketApplication):
        def on_open(self):
            events.put((type(self.ws).__name__, sorted(str(a) for a in self.ws.handler.server.clients)))

        def on_message(self, message):
            if message is not None:
                self.ws.send(message)

        def on_close(self, reason):
            events.put("closed")

    def http(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain"]

    server = serve(Resource([("^/echo", Echo), ("^/", http)]), handler_class=handler_class)
    assert requests.get(server.http + "/", timeout=TIMEOUT).text == "plain"
    with connect(server.url + "/echo") as conn:
        conn.send("x")
        assert conn.recv(timeout=TIMEOUT) == "x"
        name, clients = events.get()
        assert name == "WebSocket" and len(clients) == 1
    assert events.get() == "closed"
    assert conn.close_code == 1000


def test_resource_without_a_match_raises(serve):
    server = serve(Resource([("^/only", SubprotocolApp)]), handler_class=WebSocketHandler)
    assert requests.get(server.http + "/elsewhere", timeout=TIMEOUT).status_code == 500


def test_handshake_errors_never_reach_the_application(serve):
    called = []
    server = serve(facade_app(called.append), handler_class=WebSocketHandler)
    sock, status, headers, rest = raw_connect(server.port, "/", version="8")
    assert status == 426 and headers["sec-websocket-version"] == "13"
    sock.close()
    sock, status, headers, rest = raw_connect(server.port, "/", key="short")
    assert status == 400
    sock.close()
    assert called == []


def test_pre_start_hook_serves_plain_http(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"websocket" if environ.get("wsgi.websocket") is not None else b"http"]

    server = serve(app, handler_class=WebSocketHandler)
    server.server.pre_start_hook = lambda handler: handler.environ["PATH_INFO"] == "/http"
    sock, status, headers, rest = raw_connect(server.port, "/http")
    assert status == 200 and rest == b"http"
    sock.close()


def test_a_generator_application_runs_to_its_end(serve):
    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        ws.send("from a generator")
        yield b""
        ws.send("after the yield")

    server = serve(app, handler_class=WebSocketHandler)
    with connect(server.url + "/") as conn:
        assert conn.recv(timeout=TIMEOUT) == "from a generator"
        assert conn.recv(timeout=TIMEOUT) == "after the yield"


def test_an_exception_of_the_application_closes_with_1011(serve):
    def proc(ws):
        ws.receive()
        raise RuntimeError("application bug")

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    with connect(server.url + "/") as conn:
        conn.send("boom")
        with pytest.raises(Exception):
            conn.recv(timeout=TIMEOUT)
    assert conn.close_code == 1011


def test_websocket_server_clients_and_stop_says_1001():
    from gws13.compat.geventwebsocket import WebSocketServer

    seen = Events()

    class Hold(WebSocketApplication):
        def on_open(self):
            seen.put(len(self.ws.handler.server.clients))

    ready = threading.Event()
    holder = {}

    def run():
        server = WebSocketServer(("127.0.0.1", 0), Resource([("^/", Hold)]), log=None)
        server.start()
        holder["server"], holder["hub"] = server, gevent.get_hub()
        ready.set()
        holder["stop"] = gevent.event.Event()
        holder["stop"].wait()
        server.stop(timeout=5)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)
    server = holder["server"]
    assert server.clients == {} and server.logger.name.startswith("gws13.compat")
    with connect(f"ws://127.0.0.1:{server.server_port}/") as conn:
        assert seen.get() == 1
        holder["hub"].loop.run_callback_threadsafe(holder["stop"].set)
        with pytest.raises(Exception):
            conn.recv(timeout=TIMEOUT)
    assert conn.close_code == 1001
    thread.join(TIMEOUT)
    assert server.clients == {}


def test_exceptions_and_version():
    assert issubclass(gws_exceptions.ProtocolError, WebSocketError)
    assert issubclass(gws_exceptions.FrameTooLargeException, gws_exceptions.ProtocolError)
    assert issubclass(WebSocketError, OSError) and issubclass(WebSocketError, gws13.WebSocketError)
    error = WebSocketError("x")
    assert (str(error), error.reason, error.code) == ("x", "x", 1011)
    assert get_version() == "0.10.1"


def test_still_correct_when_gws13_receive_raises_after_the_end(serve, monkeypatch):
    """The core is moving to ``receive()``: None once, then ConnectionClosed.
    The facade tracks the end itself: None once, then WebSocketError."""
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

    def proc(ws):
        # someone else takes gws13's one None (another reader of the connection)
        results = [ws.gws13_websocket.receive()]
        results.append(ws.receive())  # gws13 raises now: the facade still reports the end once
        try:
            ws.receive()
        except WebSocketError as exc:
            results.append(str(exc))
        events.put(results)

    server = serve(facade_app(proc), handler_class=WebSocketHandler)
    with connect(server.url + "/"):
        pass
    assert events.get() == [None, None, "Connection is already closed"]
