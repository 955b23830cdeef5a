"""gws13.testing.Client: WebSocket and HTTP routes driven in-process (a socket
pair, the real WebSocketHandler in a greenlet; no port, no thread)."""

from __future__ import annotations

import json
import socket
import threading

import gevent
import pytest

import gws13
import gws13.testing
from gws13.testing import Client

flask = pytest.importorskip("flask")
bottle = pytest.importorskip("bottle")


def echo(ws):
    for message in ws:
        ws.send(message)


def test_plain_wsgi_echo_ping_and_close_code():
    threads = threading.active_count()
    client = Client(gws13.websocket_app(echo))
    with client.connect("/echo?x=1") as ws:
        assert isinstance(ws, gws13.WebSocket) and not ws.closed
        ws.send("hello")
        assert ws.receive(timeout=5) == "hello"
        ws.send(b"\x00\xff" * 70000)  # a large binary message, several frames' worth of reads
        assert ws.receive(timeout=5) == b"\x00\xff" * 70000
        assert ws.ping(b"p").wait(5) >= 0
    assert ws.closed and ws.close_code == 1000
    assert threading.active_count() == threads  # no thread was started


def test_the_app_sees_path_headers_subprotocol_and_origin():
    seen = {}

    def proc(ws):
        seen.update(path=ws.path, query=ws.environ["QUERY_STRING"], token=ws.environ.get("HTTP_X_TOKEN"),
                    origin=ws.origin, server=ws.environ["SERVER_NAME"])
        ws.send(ws.subprotocol or "-")
        ws.receive()

    app = gws13.websocket_app(proc, subprotocols=["chat.v2", "chat.v1"])
    with Client(app).connect("/room/1?q=2", headers={"X-Token": "t"}, subprotocols=["chat.v1"],
                             origin="http://example.test") as ws:
        assert ws.receive(timeout=5) == "chat.v1"
        assert ws.subprotocol == "chat.v1"
    assert seen == {"path": "/room/1", "query": "q=2", "token": "t", "origin": "http://example.test",
                    "server": "testserver"}


def test_the_server_closing_with_a_code_is_seen_by_the_client():
    def proc(ws):
        ws.close(4001, "go away")

    with Client(gws13.websocket_app(proc)).connect("/") as ws:
        assert ws.receive(timeout=5) is None
        assert (ws.close_code, ws.close_reason) == (4001, "go away")


def test_refusals_come_back_as_invalid_handshake_with_status_and_body():
    # accept_connection: 403
    app = gws13.websocket_app(echo, accept_connection=lambda origin: origin == "http://ok.test")
    client = Client(app)
    with pytest.raises(gws13.InvalidHandshake) as info:
        client.connect("/", origin="http://evil.test")
    assert info.value.status == 403
    with client.connect("/", origin="http://ok.test") as ws:
        ws.send("x")
        assert ws.receive(timeout=5) == "x"
    # require_subprotocol without an offer: 400, with a reason in the body
    app = gws13.websocket_app(echo, subprotocols=["chat"], require_subprotocol=True)
    with pytest.raises(gws13.InvalidHandshake) as info:
        Client(app).connect("/")
    assert info.value.status == 400 and b"subprotocol" in info.value.body

    # an HTTP answer to the upgrade (a route that is not a WebSocket route)
    def http_app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not here\n"]

    with pytest.raises(gws13.InvalidHandshake) as info:
        Client(http_app).connect("/nowhere")
    assert info.value.status == 404 and info.value.body == b"not here\n"


def test_an_application_error_is_raised_in_the_test():
    def proc(ws):
        ws.receive()
        raise KeyError("boom")

    client = Client(gws13.websocket_app(proc))
    with pytest.raises(KeyError, match="boom"):
        with client.connect("/") as ws:
            ws.send("go")
            assert ws.receive(timeout=5) is None
    assert ws.close_code == 1011  # the peer still got the internal-error close
    # opted out: the server handles it as it would on a port
    quiet = Client(gws13.websocket_app(proc), raise_server_exceptions=False)
    with quiet.connect("/") as ws:
        ws.send("go")
        assert ws.receive(timeout=5) is None
        assert ws.close_code == 1011


def test_an_error_before_the_upgrade_is_raised_instead_of_the_500():
    def app(environ, start_response):
        raise ValueError("broken route")

    with pytest.raises(ValueError, match="broken route") as info:
        Client(app).connect("/")
    assert isinstance(info.value.__cause__, gws13.InvalidHandshake)
    assert info.value.__cause__.status == 500


def test_a_handshake_that_never_completes_times_out():
    def stuck(environ, start_response):
        gevent.sleep(30)

    client = Client(stuck, timeout=0.3)
    with pytest.raises(TimeoutError):
        client.connect("/")


def test_concurrent_connections_from_greenlets():
    client = Client(gws13.websocket_app(echo))

    def talk(n):
        with client.connect(f"/{n}") as ws:
            for i in range(20):
                ws.send(f"{n}:{i}")
                assert ws.receive(timeout=5) == f"{n}:{i}"
        return n

    jobs = [gevent.spawn(talk, n) for n in range(5)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert [job.value for job in jobs] == list(range(5))


def test_http_requests_and_the_cookie_jar():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/set":
            start_response("200 OK", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")])
            return [b"set"]
        if environ["PATH_INFO"] == "/del":
            start_response("200 OK", [("Set-Cookie", "a=; Max-Age=0; Path=/")])
            return [b""]
        body = json.dumps({"cookie": environ.get("HTTP_COOKIE"), "method": environ["REQUEST_METHOD"],
                           "body": environ["wsgi.input"].read().decode()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]  # no Content-Length: pywsgi sends it chunked

    client = Client(app)
    assert client.get("/set").text == "set"
    assert client.cookies == {"a": "1", "b": "2"}
    answer = client.post("/echo", json={"k": 1})
    assert answer.status == 200 and answer.header("content-type") == "application/json"
    assert answer.json() == {"cookie": "a=1; b=2", "method": "POST", "body": '{"k": 1}'}
    client.get("/del")
    assert client.cookies == {"b": "2"}


def test_flask_sock_with_request_context_and_a_session_cookie():
    from gws13.flask import Sock

    app = flask.Flask(__name__)
    app.secret_key = "test secret"
    sock = Sock(app)

    @app.route("/login", methods=["POST"])
    def login():
        flask.session["user"] = flask.request.get_json()["user"]
        return "ok"

    @sock.route("/ws/<room>")
    def room(ws, room):
        ws.send(json.dumps({"user": flask.session.get("user"), "room": room,
                            "url": flask.url_for("room", room=room), "path": flask.request.path}))
        for message in ws:
            ws.send(f"{flask.session.get('user')}: {message}")

    client = Client(app)
    assert client.post("/login", json={"user": "ann"}).text == "ok"
    assert "session" in client.cookies
    with client.connect("/ws/lobby") as ws:
        assert json.loads(ws.receive(timeout=5)) == {"user": "ann", "room": "lobby",
                                                     "url": "ws://testserver/ws/lobby",
                                                     "path": "/ws/lobby"}
        ws.send("hi")
        assert ws.receive(timeout=5) == "ann: hi"
    # a plain HTTP request to the WebSocket route gets Flask's answer
    assert client.get("/ws/lobby").status == 400
    # and an upgrade to a route that does not exist: Flask's 404
    with pytest.raises(gws13.InvalidHandshake) as info:
        client.connect("/nowhere")
    assert info.value.status == 404


def test_bottle_route():
    from gws13.bottle import websocket

    app = bottle.Bottle()

    @app.route("/rooms/<room>", apply=[websocket])
    def room(ws, room):
        ws.send(f"{room} {bottle.request.query.get('q')}")
        for message in ws:
            ws.send(message.upper())

    with Client(app).connect("/rooms/r1?q=7") as ws:
        assert ws.receive(timeout=5) == "r1 7"
        ws.send("abc")
        assert ws.receive(timeout=5) == "ABC"


def test_compat_flask_sock():
    from gws13.compat.flask_sock import Sock

    app = flask.Flask(__name__)
    sock = Sock(app)

    @sock.route("/echo")
    def route(ws):
        while True:
            data = ws.receive()
            if data == "close":
                break
            ws.send(data)

    with Client(app).connect("/echo") as ws:
        ws.send("one")
        assert ws.receive(timeout=5) == "one"
        ws.send("close")
        assert ws.receive(timeout=5) is None


def test_compat_flask_sockets():
    from gws13.compat.flask_sockets import Sockets

    app = flask.Flask(__name__)
    sockets = Sockets(app)

    @sockets.route("/echo")
    def route(ws):
        while not ws.closed:
            message = ws.receive()
            if message is not None:
                ws.send(message)

    with Client(app).connect("/echo") as ws:
        ws.send("two")
        assert ws.receive(timeout=5) == "two"


def test_compat_geventwebsocket_resource_under_its_handler():
    from gws13.compat.geventwebsocket import Resource, WebSocketApplication
    from gws13.compat.geventwebsocket.handler import WebSocketHandler

    class Echo(WebSocketApplication):
        def on_message(self, message):
            if message is not None:
                self.ws.send(message)

    client = Client(Resource([("^/echo", Echo)]), handler_class=WebSocketHandler)
    with client.connect("/echo") as ws:
        ws.send("three")
        assert ws.receive(timeout=5) == "three"


def test_compat_bottle_websocket():
    from gws13.compat.bottle_websocket import websocket

    app = bottle.Bottle()

    @app.get("/ws", apply=[websocket])
    def route(ws):
        while True:
            msg = ws.receive()
            if msg is None:
                break
            ws.send(msg)

    with Client(app).connect("/ws") as ws:
        ws.send("four")
        assert ws.receive(timeout=5) == "four"


def test_no_port_is_opened(monkeypatch):
    # nothing binds or listens: socket.bind would be how a port is opened
    def refuse(*args, **kwargs):
        raise AssertionError("a socket was bound")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with Client(gws13.websocket_app(echo)).connect("/") as ws:
        ws.send("x")
        assert ws.receive(timeout=5) == "x"


def test_path_must_be_absolute():
    with pytest.raises(ValueError):
        Client(gws13.websocket_app(echo)).connect("ws")
