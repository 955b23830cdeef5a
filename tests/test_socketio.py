"""Flask-SocketIO (``async_mode="gevent"``) on gws13, with the real
python-socketio client: under pywsgi + gws13.WebSocketHandler, under the
gevent-websocket facade's handler and under the gws13 gunicorn worker.

python-engineio's gevent driver uses ``environ["wsgi.websocket"]`` only when
``import geventwebsocket`` succeeds (it then reads ``.version``, ``.path``,
``.origin``, ``.protocol``); otherwise it falls back to simple-websocket,
which takes the socket itself.  The app's ``/stats`` shows which one carried
the traffic (see tests/compat_apps/socketio/app.py); the negative control
hides gevent-websocket and sees gws13 carry nothing."""

from __future__ import annotations

import queue

import pytest

socketio = pytest.importorskip("socketio")
pytest.importorskip("flask_socketio")
pytest.importorskip("geventwebsocket", reason="engine.io takes wsgi.websocket only with gevent-websocket")
requests = pytest.importorskip("requests")
pytest.importorskip("websocket")  # websocket-client: python-socketio's WebSocket transport

from compat_support import APPS, TIMEOUT, run_app, wait_until  # noqa: E402,F401

APP = "socketio/app.py"
TRANSPORTS = {"websocket-only": ["websocket"], "polling-then-upgrade": ["polling", "websocket"]}


def stats(base: str) -> dict:
    return requests.get(base + "/stats", timeout=TIMEOUT).json()


class Client:
    """A python-socketio client whose events land in queues."""

    def __init__(self, base: str, transports) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: "dict[str, queue.Queue]" = {name: queue.Queue() for name in ("said", "all", "gone")}
        self.sio.on("said", lambda data: self.events["said"].put(data))
        self.sio.on("all", lambda data: self.events["all"].put(data))
        self.sio.on("disconnect", lambda *reason: self.events["gone"].put(reason))
        self.sio.connect(base, transports=transports, wait_timeout=TIMEOUT)
        # with polling first, the upgrade to WebSocket happens in the background
        wait_until(lambda: self.sio.transport() == "websocket", what="the upgrade to websocket")

    def next(self, name: str):
        return self.events[name].get(timeout=TIMEOUT)

    def close(self) -> None:
        self.sio.disconnect()


def exercise(base: str, transports) -> None:
    """Emit with ack, rooms, broadcast, client and server-side disconnects;
    then check that gws13 accepted and closed every WebSocket (1000)."""
    before = stats(base)
    a, b, c = (Client(base, transports) for _ in range(3))
    # emit with an acknowledgement: the ack comes back over the WebSocket
    assert a.sio.call("echo", {"n": 1, "text": "h\u00e9"}, timeout=TIMEOUT) == {"n": 1, "text": "h\u00e9"}
    assert b.sio.call("echo", "x" * 70000, timeout=TIMEOUT) == "x" * 70000  # several frames' worth
    # a broadcast to a room reaches its members only
    assert a.sio.call("join", "room1", timeout=TIMEOUT) == "room1"
    assert b.sio.call("join", "room1", timeout=TIMEOUT) == "room1"
    a.sio.emit("say", {"room": "room1", "text": "hello room"})
    for member in (a, b):
        said = member.next("said")
        assert (said["room"], said["text"], said["from"]) == ("room1", "hello room", a.sio.get_sid())
    # c is not in the room: the next broadcast to everyone is the first thing it hears
    b.sio.emit("everyone", "to all")
    for client in (a, b, c):
        assert client.next("all") == "to all"
    assert c.events["said"].empty()
    # client disconnect
    c.close()
    # server-side disconnect: the client is told
    b.sio.emit("kick")
    b.next("gone")
    wait_until(lambda: not b.sio.connected, what="the kicked client to be disconnected")
    a.close()
    after = wait_until(lambda: (lambda s: s if len(s["closed"]) - len(before["closed"]) >= 3
                                and s["disconnects"] - before["disconnects"] >= 3 else None)(stats(base)),
                       what="the server to see three WebSockets closed")
    # the bytes went through gws13: each session's WebSocket was a gws13.WebSocket,
    # accepted by gws13 and closed by it with a closing handshake
    new_closed = after["closed"][len(before["closed"]):]
    assert new_closed == [1000, 1000, 1000], after
    assert after["offered"] - before["offered"] == 3, after
    assert after["connects"] - before["connects"] == 3, after


@pytest.mark.parametrize("transports", list(TRANSPORTS.values()), ids=list(TRANSPORTS))
@pytest.mark.parametrize("handler", ["gws13", "facade"])
def test_flask_socketio_on_pywsgi(run_app, handler, transports):
    app = run_app(APP, handler)
    exercise(app.http, transports)
    app.stop()
    app.assert_clean()


@pytest.mark.parametrize("transports", list(TRANSPORTS.values()), ids=list(TRANSPORTS))
def test_flask_socketio_under_the_gws13_gunicorn_worker(tmp_path, transports):
    from test_gunicorn import Gunicorn, assert_clean

    server = Gunicorn("app:app", "-k", "gws13.gunicorn.GeventWebSocketWorker", cwd=APPS / "socketio",
                      workers=1, graceful=3)
    try:
        exercise(server.http, transports)
        elapsed, code = server.stop()
        assert code == 0
        assert_clean(server)
    finally:
        server.kill()


def test_without_gevent_websocket_engineio_bypasses_gws13(run_app):
    """The negative control for the check above: engine.io falls back to
    simple-websocket, which takes the socket itself; the session works but no
    gws13.WebSocket is ever accepted (no close callback runs)."""
    app = run_app(APP, "gws13", env={"HIDE_GEVENTWEBSOCKET": "1"})
    client = Client(app.http, ["websocket"])
    assert client.sio.call("echo", "via simple-websocket", timeout=TIMEOUT) == "via simple-websocket"
    client.close()
    wait_until(lambda: stats(app.http)["disconnects"] == 1, what="the disconnect")
    seen = stats(app.http)
    assert seen["offered"] == 1 and seen["closed"] == [], seen
