"""gws13.compat.flask_sockets: Flask-Sockets' ``Sockets`` over gws13.

Its README's two examples (mirrored in tests/compat_apps/flask_sockets/) run
as processes under the gevent-websocket facade's handler, gws13's handler and
gevent's stock handler, and under gunicorn with ``flask_sockets.worker``; the
routing, request context and blueprint details are checked in process."""

from __future__ import annotations

import pytest

flask = pytest.importorskip("flask")
requests = pytest.importorskip("requests")

import gws13  # noqa: E402
from gws13.compat.flask_sockets import Sockets  # noqa: E402

from compat_support import APPS, TIMEOUT, Events, run_app  # noqa: E402,F401
from conftest import RawClient, connect  # noqa: E402


def check_echo(url):
    with connect(url) as conn:
        for message in ("hello", b"\x01\x02", "h\u00e9" * 3000):
            conn.send(message)
            assert conn.recv(timeout=TIMEOUT) == message
    assert conn.close_code == 1000


@pytest.mark.parametrize("handler", ["facade", "gws13", "stock"])
def test_readme_echo_example(run_app, handler):
    app = run_app("flask_sockets/readme_echo.py", handler)
    assert requests.get(app.http + "/", timeout=TIMEOUT).text == "Hello World!"
    check_echo(app.url + "/echo")
    check_echo(app.url + "/echo")
    # not a WebSocket request: it goes to Flask, which has no /echo
    assert requests.get(app.http + "/echo", timeout=TIMEOUT).status_code == 404
    app.stop()
    # the README's loop ends by sending None after the close: a WebSocketError
    # that ends the route quietly
    app.assert_clean()


def test_readme_blueprints_example(run_app):
    app = run_app("flask_sockets/readme_blueprints.py")
    assert requests.get(app.http + "/", timeout=TIMEOUT).text == "Hello World!"
    check_echo(app.url + "/echo")
    check_echo(app.url + "/v2/echo")
    # no such socket route: as with gevent-websocket's handler the request was
    # upgraded before the app ran, so Flask's 404 cannot be sent; the
    # connection is closed at once
    client = RawClient(app.port, "/v3/echo")
    assert client.status == 101
    (close,) = client.read_until_close(timeout=TIMEOUT)
    assert close.code == 1000
    client.close()
    app.stop()
    app.assert_clean()


def test_readme_echo_example_with_the_gunicorn_worker():
    """The README's deployment: ``gunicorn -k flask_sockets.worker hello:app``."""
    from test_gunicorn import Gunicorn, assert_clean

    server = Gunicorn("readme_echo:app", "-k", "gws13.compat.flask_sockets.worker",
                      cwd=APPS / "flask_sockets", workers=1, graceful=3)
    try:
        assert requests.get(server.http + "/", timeout=TIMEOUT).text == "Hello World!"
        check_echo(server.url + "/echo")
        assert "worker_class: gws13.compat.flask_sockets.worker" in server.log()
        elapsed, code = server.stop()
        assert code == 0
        assert_clean(server)
    finally:
        server.kill()


def test_routes_run_in_the_request_context_with_url_variables_and_cookies(serve):
    app = flask.Flask(__name__)
    sockets = Sockets(app)
    events = Events()

    @sockets.route("/rooms/<room>/<int:n>")
    def room(ws, room, n):
        events.put({"room": room, "n": n, "path": flask.request.path, "app": flask.current_app.name,
                    "cookie": dict(flask.request.cookie or {}), "cookies": dict(flask.request.cookies),
                    "args": dict(flask.request.args), "socket": type(ws).__module__})
        ws.send(ws.receive())

    server = serve(app, handler_class=gws13.WebSocketHandler)
    with connect(server.url + "/rooms/lobby/7?x=1", additional_headers={"Cookie": "a=1; b=2"}) as conn:
        conn.send("ping")
        assert conn.recv(timeout=TIMEOUT) == "ping"
    assert events.get() == {"room": "lobby", "n": 7, "path": "/rooms/lobby/7", "app": app.name,
                            "cookie": {"a": "1", "b": "2"}, "cookies": {"a": "1", "b": "2"},
                            "args": {"x": "1"}, "socket": "gws13.compat.geventwebsocket.websocket"}


def test_init_app_later_and_a_flask_route_of_the_same_path(serve):
    app = flask.Flask(__name__)
    sockets = Sockets()

    @sockets.route("/both")
    def both_ws(ws):
        ws.send("websocket")

    @app.route("/both")
    def both_http():
        return "http"

    sockets.init_app(app)
    server = serve(app, handler_class=gws13.WebSocketHandler)
    assert requests.get(server.http + "/both", timeout=TIMEOUT).text == "http"
    with connect(server.url + "/both") as conn:
        assert conn.recv(timeout=TIMEOUT) == "websocket"


def test_register_blueprint_name_collision():
    sockets = Sockets()
    sockets.register_blueprint(flask.Blueprint("ws", __name__))
    with pytest.raises(AssertionError):
        sockets.register_blueprint(flask.Blueprint("ws", __name__))


def test_worker_is_the_facades_gunicorn_worker():
    pytest.importorskip("gunicorn")
    import gws13.compat.flask_sockets as flask_sockets
    from gws13.compat.geventwebsocket.gunicorn.workers import GeventWebSocketWorker

    assert flask_sockets.worker is GeventWebSocketWorker
    with pytest.raises(AttributeError):
        flask_sockets.no_such_name
