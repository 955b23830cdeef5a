"""gws13.compat.bottle_websocket: bottle-websocket's ``GeventWebSocketServer``
and ``websocket`` plugin over gws13.

Its echo and chat examples (mirrored in tests/compat_apps/bottle_websocket/)
run as processes through ``bottle.run(server=GeventWebSocketServer)`` with real
clients and a browser; the plugin under other servers is checked in process."""

from __future__ import annotations

import pytest

bottle = pytest.importorskip("bottle")
requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")  # websocket-client

from gevent import pywsgi  # noqa: E402

import gws13  # noqa: E402
from gws13.compat.bottle_websocket import websocket as websocket_plugin  # noqa: E402

from compat_support import TIMEOUT, Events, browser, needs_chromium, run_app, wait_until  # noqa: E402,F401
from conftest import connect  # noqa: E402


def test_echo_example(run_app):
    app = run_app("bottle_websocket/echo/echo.py")
    assert "Bottle Websockets!" in requests.get(app.http + "/", timeout=TIMEOUT).text
    ws = websocket.create_connection(app.url + "/websocket", timeout=TIMEOUT)
    for message in ("one", "two \u2713"):
        ws.send(message)
        assert ws.recv() == message
    ws.close()
    with connect(app.url + "/websocket") as conn:
        conn.send(b"\x00binary")
        assert conn.recv(timeout=TIMEOUT) == b"\x00binary"
    assert conn.close_code == 1000
    app.stop()
    app.assert_clean()


@needs_chromium
def test_echo_example_page_in_a_browser(run_app, browser):
    from playwright.sync_api import expect

    app = run_app("bottle_websocket/echo/echo.py")
    page = browser.new_page()
    page.goto(app.http + "/")
    expect(page.locator("#messages li").first).to_have_text("WebSocket connection opened.")
    page.locator("#text").fill("from chromium")
    page.locator("#text").press("Enter")
    expect(page.locator("#messages li", has_text="from chromium")).to_have_count(1)
    page.close()
    app.stop()
    app.assert_clean()


def test_chat_example_sends_to_every_user(run_app):
    app = run_app("bottle_websocket/chat/chat.py")
    users = [websocket.create_connection(app.url + "/websocket", timeout=TIMEOUT) for _ in range(3)]
    # every socket is in the app's set once its route runs: a message from each
    # reaches all (wait until the last one has joined)
    def everyone_hears(sender, text):
        sender.send(text)
        return all(u.recv() == text for u in users)

    wait_until(lambda: everyone_hears(users[2], "warm-up"), what="all three in the chat")
    assert everyone_hears(users[0], "alice: hi")
    assert everyone_hears(users[1], "bob: hello")
    for u in users:
        u.close()
    app.stop()
    app.assert_clean()


@pytest.mark.parametrize("handler_class", [gws13.WebSocketHandler, pywsgi.WSGIHandler],
                         ids=["gws13-handler", "stock-pywsgi-handler"])
def test_plugin_under_other_servers(serve, handler_class):
    app = bottle.Bottle()
    events = Events()

    @app.get("/ws/<room>", apply=[websocket_plugin])
    def room(ws, room):
        events.put((type(ws).__module__, ws.path, len(ws.handler.server.clients)))
        while True:
            message = ws.receive()
            if message is None:
                break
            ws.send(f"{room}: {message}")

    server = serve(app, handler_class=handler_class)
    with connect(server.url + "/ws/lobby") as conn:
        conn.send("hi")
        assert conn.recv(timeout=TIMEOUT) == "lobby: hi"
    assert conn.close_code == 1000
    assert events.get() == ("gws13.compat.geventwebsocket.websocket", "/ws/lobby", 1)
    # a plain GET to a WebSocket route: 400 that says what the URL expects
    response = requests.get(server.http + "/ws/lobby", timeout=TIMEOUT)
    assert response.status_code == 400 and response.headers["Upgrade"] == "websocket"


def test_server_adapter_runs_the_facade_handler_with_pywsgi_options():
    import threading

    import gevent

    from compat_support import free_port
    from gws13.compat.bottle_websocket import GeventWebSocketServer

    app = bottle.Bottle()

    @app.get("/ws", apply=[websocket_plugin])
    def echo(ws):
        ws.send(f"{type(ws.handler).__module__} {ws.handler.server.pool.size}")

    adapter = GeventWebSocketServer(host="127.0.0.1", port=free_port(), spawn=7)
    adapter.quiet = True  # as bottle.run(quiet=True) sets it: no access log
    hubs = []

    def run():
        hubs.append(gevent.get_hub())
        adapter.run(app)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"ws://127.0.0.1:{adapter.port}/ws"
    wait_until(lambda: getattr(adapter, "server", None) is not None and adapter.server.started,
               what="the adapter's server")
    with connect(url) as conn:
        assert conn.recv(timeout=TIMEOUT) == "gws13.compat.geventwebsocket.handler 7"
    assert type(adapter.server.log).__name__ == "_NoopLog"  # log=None
    hubs[0].loop.run_callback_threadsafe(lambda: gevent.spawn(adapter.server.stop))
    thread.join(TIMEOUT)
    assert not thread.is_alive()
