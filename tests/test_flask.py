"""gws13.flask end to end: a Flask app on gevent.pywsgi with gws13.WebSocketHandler
(the ``serve`` fixture), driven by real clients over loopback."""

from __future__ import annotations

import json
import threading

import pytest

flask = pytest.importorskip("flask")
requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")  # websocket-client
ws_client = pytest.importorskip("websockets.sync.client")
ws_exceptions = pytest.importorskip("websockets.exceptions")

from gws13.flask import Sock  # noqa: E402
from gws13.testing import Client  # noqa: E402

from conftest import (RawClient, check_per_route_parameters, close_code_after,  # noqa: E402
                      connect, start_example, stop_process)

TIMEOUT = 5


def make_app(**config) -> "flask.Flask":
    app = flask.Flask(__name__)
    app.secret_key = "test secret"
    app.config.update(config)
    return app


def echo(ws):
    for message in ws:
        ws.send(message)


def test_url_variables_reach_the_view():
    # a round trip through the real handler: the in-process client is enough
    app = make_app()
    sock = Sock(app)

    @sock.route("/rooms/<room>/<int:n>")
    def room(ws, room, n):
        ws.send(json.dumps({"room": room, "n": n, "path": ws.path, "endpoint": flask.request.endpoint}))
        for message in ws:
            ws.send(f"{room}#{n}: {message}")

    with Client(app).connect("/rooms/lobby/7") as conn:
        assert json.loads(conn.receive(timeout=TIMEOUT)) == {
            "room": "lobby", "n": 7, "path": "/rooms/lobby/7", "endpoint": "room"}
        conn.send("hello")
        assert conn.receive(timeout=TIMEOUT) == "lobby#7: hello"


def test_route_returns_the_view_unchanged_and_registers_a_websocket_rule():
    app = make_app()
    sock = Sock(app)

    def view(ws):
        return "called"

    assert sock.route("/ws")(view) is view
    rule = next(r for r in app.url_map.iter_rules() if r.rule == "/ws")
    assert rule.websocket is True
    assert rule.endpoint == "view"


def test_blueprint_routes():
    app = make_app()
    sock = Sock(app)
    bp = flask.Blueprint("chat", __name__, url_prefix="/chat")

    @sock.route("/<room>", bp=bp)
    def join(ws, room):
        ws.send(f"{flask.request.blueprint}:{flask.request.endpoint}:{room}")
        echo(ws)

    app.register_blueprint(bp)
    with Client(app).connect("/chat/general") as conn:
        assert conn.receive(timeout=TIMEOUT) == "chat:chat.join:general"
        conn.send("ping?")
        assert conn.receive(timeout=TIMEOUT) == "ping?"


def test_websocket_view_under_the_blueprints_own_route(serve):
    from gws13.flask import websocket_view

    app = make_app(SOCK_SERVER_OPTIONS={"max_message_size": 10})
    Sock(app)
    bp = flask.Blueprint("live", __name__, url_prefix="/live")

    @bp.route("/<room>", websocket=True)
    @websocket_view(max_message_size=30)
    def room(ws, room):
        ws.send(room)
        echo(ws)

    @bp.route("/bare", websocket=True)
    @websocket_view
    def bare(ws):
        echo(ws)

    app.register_blueprint(bp)
    server = serve(app)
    with connect(server.url + "/live/news") as conn:
        assert conn.recv(timeout=TIMEOUT) == "news"
        conn.send("a" * 30)
        assert conn.recv(timeout=TIMEOUT) == "a" * 30
        assert close_code_after(conn, "a" * 31) == 1009
    with connect(server.url + "/live/bare") as conn:  # SOCK_SERVER_OPTIONS applies
        conn.send("b" * 10)
        assert conn.recv(timeout=TIMEOUT) == "b" * 10
        assert close_code_after(conn, "b" * 11) == 1009


def test_blueprint_without_init_app_and_deferred_app_routes(serve):
    """Application-factory style: routes declared on a Sock() before init_app,
    and a blueprint whose app never saw init_app."""
    sock = Sock()
    bp = flask.Blueprint("api", __name__)

    @sock.route("/early")
    def early(ws):
        ws.send("early")

    @sock.route("/bp", bp=bp)
    def in_bp(ws):
        ws.send("bp")

    app = make_app()
    app.register_blueprint(bp)
    sock.init_app(app)
    assert app.extensions["gws13.sock"] is sock
    server = serve(app)
    for path, expected in (("/early", "early"), ("/bp", "bp")):
        with connect(server.url + path) as conn:
            assert conn.recv(timeout=TIMEOUT) == expected
            assert close_code_after(conn) == 1000


def test_request_context_session_cookies_and_g(serve):
    app = make_app()
    sock = Sock(app)

    @app.route("/login")
    def login():
        flask.session["user"] = "alice"
        return "ok"

    @app.before_request
    def load_user():
        flask.g.user = flask.session.get("user")

    @sock.route("/me")
    def me(ws):
        ws.send(json.dumps({
            "session_user": flask.session.get("user"),
            "g_user": flask.g.user,
            "cookie": flask.request.cookies.get("theme"),
            "arg": flask.request.args.get("x"),
            "url_for": flask.url_for("me"),
        }))

    server = serve(app)
    login_response = requests.get(server.http + "/login", timeout=TIMEOUT)
    assert login_response.status_code == 200
    session_cookie = login_response.cookies["session"]
    headers = {"Cookie": f"session={session_cookie}; theme=dark"}
    with connect(f"{server.url}/me?x=1", additional_headers=headers) as conn:
        assert json.loads(conn.recv(timeout=TIMEOUT)) == {
            "session_user": "alice", "g_user": "alice", "cookie": "dark", "arg": "1",
            "url_for": f"ws://127.0.0.1:{server.port}/me"}  # Werkzeug builds ws:// URLs for ws rules
    # without the cookie the handler sees an empty session
    with connect(f"{server.url}/me") as conn:
        assert json.loads(conn.recv(timeout=TIMEOUT))["session_user"] is None


def test_per_route_parameters(serve):
    app = make_app()
    sock = Sock(app)

    @sock.route("/small", max_message_size=50)
    def small(ws):
        echo(ws)

    @sock.route("/default")
    def default(ws):
        echo(ws)

    @sock.route("/proto", subprotocols=["chat.v2", "chat.v1"])
    def proto(ws):
        ws.send(ws.subprotocol or "")

    check_per_route_parameters(serve(app).url)


def test_per_route_ping_interval(serve):
    app = make_app()
    sock = Sock(app)

    @sock.route("/ws", ping_interval=0.2)
    def quiet(ws):
        ws.receive()

    server = serve(app)
    client = websocket.create_connection(server.url + "/ws", timeout=TIMEOUT)
    try:
        opcode, frame = client.recv_data_frame(control_frame=True)  # bounded by timeout
        assert opcode == websocket.ABNF.OPCODE_PING
    finally:
        client.close()


def test_route_options_are_split_between_gws13_and_flask():
    app = make_app()
    sock = Sock(app)

    @sock.route("/a", endpoint="custom", strict_slashes=False, ping_interval=3)
    def a(ws):
        pass

    rule = next(r for r in app.url_map.iter_rules() if r.rule == "/a")
    assert rule.endpoint == "custom" and rule.strict_slashes is False and rule.websocket
    with pytest.raises(TypeError):
        sock.route("/b", ping_interval="soon")
    with pytest.raises(ValueError):
        sock.route("/c", max_message_size=0)


def test_sock_server_options_apply_and_routes_override_them(serve):
    app = make_app(SOCK_SERVER_OPTIONS={"max_message_size": 20})
    sock = Sock(app)

    @sock.route("/configured")
    def configured(ws):
        echo(ws)

    @sock.route("/override", max_message_size=1000)
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


def test_bad_sock_server_options_fail_at_init_app():
    with pytest.raises(TypeError, match="receive_bytes"):
        Sock(make_app(SOCK_SERVER_OPTIONS={"receive_bytes": 4096}))
    with pytest.raises(TypeError):
        Sock(make_app(SOCK_SERVER_OPTIONS={"ping_interval": None}))
    with pytest.raises(TypeError):
        Sock(make_app(SOCK_SERVER_OPTIONS=["ping_interval"]))


def test_plain_get_to_a_websocket_route_is_400_with_guidance(serve):
    app = make_app()
    sock = Sock(app)

    @sock.route("/ws")
    def ws_route(ws):
        pytest.fail("the view must not run for a plain GET")

    server = serve(app)
    response = requests.get(server.http + "/ws", timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert "WebSocket" in response.text


def test_an_apps_own_websocket_mismatch_handler_is_kept():
    from werkzeug.routing import WebsocketMismatch

    app = make_app()
    app.register_error_handler(WebsocketMismatch, lambda e: ("mine", 418))
    sock = Sock(app)

    @sock.route("/ws")
    def ws_route(ws):
        pass

    response = app.test_client().get("/ws")
    assert response.status_code == 418 and response.data == b"mine"


def test_http_and_websocket_routes_can_share_a_path(serve):
    app = make_app()
    sock = Sock(app)

    @app.route("/chat")
    def page():
        return "the chat page"

    @sock.route("/chat")
    def chat(ws):
        ws.send("the chat socket")

    server = serve(app)
    response = requests.get(server.http + "/chat", timeout=TIMEOUT)
    assert response.status_code == 200 and response.text == "the chat page"
    with connect(server.url + "/chat") as conn:
        assert conn.recv(timeout=TIMEOUT) == "the chat socket"


def test_websocket_client_at_an_http_route_gets_400(serve):
    app = make_app()
    Sock(app)

    @app.route("/page")
    def page():
        return "page"

    server = serve(app)
    raw = RawClient(server.port, "/page")
    try:
        assert raw.status == 400
    finally:
        raw.close()


def test_nothing_is_written_after_the_websocket_ends(serve):
    """After the view returns: the close frame, then EOF; no HTTP response from
    Flask leaks onto the socket (even with after_request hooks and a session
    change)."""
    app = make_app()
    sock = Sock(app)
    hooks = []
    hooked = threading.Event()

    @app.after_request
    def after(response):
        hooks.append(response.status_code)
        response.headers["X-After"] = "yes"
        hooked.set()
        return response

    @sock.route("/bye")
    def bye(ws):
        flask.session["touched"] = True
        ws.send("bye")

    server = serve(app)
    raw = RawClient(server.port, "/bye")
    try:
        assert raw.status == 101
        events = raw.read_until_close()
        assert [type(e).__name__ for e in events] == ["Message", "Close"]
        assert events[0].data == "bye"
        assert events[-1].code == 1000
        raw.send_frame(0x8, b"\x03\xe8")  # answer the close
        assert raw.at_eof()
    finally:
        raw.close()
    assert hooked.wait(TIMEOUT)  # hooks run once the view returned, after the close
    assert hooks == [101]


def test_refused_origin_gets_only_the_access_denied_answer(serve):
    app = make_app()
    sock = Sock(app)

    @sock.route("/guarded", accept_connection=lambda origin: origin == "http://good.example")
    def guarded(ws):
        ws.send("welcome")

    server = serve(app)
    raw = RawClient(server.port, "/guarded", headers={"Origin": "http://evil.example"})
    try:
        assert raw.status == 403
        assert raw.at_eof()  # the 403 and nothing after it
    finally:
        raw.close()
    with connect(server.url + "/guarded", origin="http://good.example") as conn:
        assert conn.recv(timeout=TIMEOUT) == "welcome"


def test_view_exception_closes_1011_and_server_keeps_serving(serve):
    app = make_app()
    sock = Sock(app)
    errors = []
    torn_down = threading.Event()

    @app.teardown_request
    def teardown(exc):
        if flask.request.endpoint == "boom":
            errors.append(exc)
            torn_down.set()

    @sock.route("/boom")
    def boom(ws):
        ws.receive()
        raise RuntimeError("boom")

    @sock.route("/echo")
    def echo_route(ws):
        echo(ws)

    server = serve(app)
    with connect(server.url + "/boom") as conn:
        assert close_code_after(conn, "go") == 1011
    with connect(server.url + "/echo") as conn:
        conn.send("still here")
        assert conn.recv(timeout=TIMEOUT) == "still here"
    assert torn_down.wait(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)  # Flask saw (and logged) it


def test_flask_sock_style_view_runs_unchanged(serve):
    """flask-sock's canonical ``while True: ws.send(ws.receive())`` loop: when the
    client closes, ``receive`` gives None and ``send`` raises ConnectionClosed,
    which ends the view quietly (no error reaches Flask)."""
    app = make_app()
    sock = Sock(app)
    outcome = []
    done = threading.Event()

    @app.teardown_request
    def teardown(exc):
        outcome.append(exc)
        done.set()

    @sock.route("/echo")
    def echo_forever(ws):
        while True:
            data = ws.receive()
            ws.send(data)

    server = serve(app)
    with connect(server.url + "/echo") as conn:
        conn.send("one")
        assert conn.recv(timeout=TIMEOUT) == "one"
        conn.send(b"two")
        assert conn.recv(timeout=TIMEOUT) == b"two"
    assert done.wait(TIMEOUT)
    assert outcome == [None]


def test_concurrent_connections_keep_their_own_request_context(serve):
    """Flask's contexts are per greenlet: two interleaved connections each see
    their own URL variables and request after the other one ran."""
    app = make_app()
    sock = Sock(app)

    @sock.route("/who/<name>")
    def who(ws, name):
        for message in ws:
            ws.send(f"{name}:{flask.request.view_args['name']}:{flask.request.args['q']}:{message}")

    server = serve(app)
    with connect(server.url + "/who/a?q=1") as a, connect(server.url + "/who/b?q=2") as b:
        for i in range(3):
            a.send(str(i))
            b.send(str(i))
            assert a.recv(timeout=TIMEOUT) == f"a:a:1:{i}"
            assert b.recv(timeout=TIMEOUT) == f"b:b:2:{i}"


# -- the example, as its users run it (its own process) ------------------------





@pytest.fixture
def flask_example(tmp_path):
    proc, port = start_example("flask_app.py", str(tmp_path / "flask_app.log"))
    yield port
    stop_process(proc)


def test_example_serves_page_echo_and_rooms_with_session(flask_example):
    port = flask_example
    http = requests.Session()
    page = http.get(f"http://127.0.0.1:{port}/login/alice", timeout=TIMEOUT)
    assert page.status_code == 200 and "<b>alice</b>" in page.text
    cookie = f"session={http.cookies['session']}"
    with connect(f"ws://127.0.0.1:{port}/echo") as conn:
        conn.send(b"\x00binary")
        assert conn.recv(timeout=TIMEOUT) == b"\x00binary"
    with connect(f"ws://127.0.0.1:{port}/rooms/r1", additional_headers={"Cookie": cookie}) as alice, \
            connect(f"ws://127.0.0.1:{port}/rooms/r1") as guest:
        assert alice.recv(timeout=TIMEOUT) == "welcome to r1, alice (1 here)"
        assert guest.recv(timeout=TIMEOUT) == "welcome to r1, guest@127.0.0.1 (2 here)"
        alice.send("hello")
        assert alice.recv(timeout=TIMEOUT) == "[r1] alice: hello"
        assert guest.recv(timeout=TIMEOUT) == "[r1] alice: hello"
    response = requests.get(f"http://127.0.0.1:{port}/echo", timeout=TIMEOUT)
    assert response.status_code == 400 and response.headers["Upgrade"] == "websocket"


def test_under_the_stock_pywsgi_handler(serve):
    """Without gws13.WebSocketHandler (the socket is taken over from
    gevent.pywsgi.WSGIHandler): same behaviour, and the handler neither writes
    after the WebSocket nor reports an error."""
    from gevent import pywsgi

    errors = []

    class RecordingHandler(pywsgi.WSGIHandler):
        def handle_error(self, t, v, tb):
            errors.append(v)
            super().handle_error(t, v, tb)

    app = make_app()
    sock = Sock(app)

    @sock.route("/rooms/<room>", max_message_size=50)
    def room(ws, room):
        ws.send(room)
        echo(ws)

    @sock.route("/boom")
    def boom(ws):
        ws.receive()
        raise RuntimeError("boom (expected by the test)")

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
    with connect(server.url + "/boom") as conn:  # Flask's 500 page is not written either
        assert close_code_after(conn, "go") == 1011
    assert requests.get(server.http + "/rooms/r1", timeout=TIMEOUT).status_code == 400
    server.stop()  # every handler has finished: its errors are in
    assert errors == []


def test_server_that_cannot_hand_over_its_socket_gets_500_not_a_hang():
    """Werkzeug's test client (like its dev server) has no socket to hand over:
    the upgrade is answered 500 with the reason, and the view never runs."""
    app = make_app()
    sock = Sock(app)
    ran = []

    @sock.route("/ws")
    def ws_route(ws):
        ran.append(ws)

    response = app.test_client().get("/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert response.status_code == 500
    assert b"socket" in response.data
    assert ran == []
