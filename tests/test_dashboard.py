"""The live dashboard (issue 13, point 4): gws13.dashboard.app mounted under a
prefix of a real server, its files, its accept hook, its WebSocket, and the
page in headless Chromium (Debian's, driven by Playwright without a browser
download): the charts render and the numbers follow test clients that
connect, talk and leave.  The screenshot goes to test-artifacts/dashboard.png."""

from __future__ import annotations

import fnmatch
import json
import os
import threading
import urllib.error
import urllib.request

import pytest

import gws13
import gws13.dashboard

from conftest import wait_until

websocket = pytest.importorskip("websocket")  # websocket-client: blocking test clients in threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
STATIC = os.path.join(ROOT, "gws13", "dashboard", "static")
CHROMIUM = os.environ.get("GWS13_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT = 15


def make_app(accept=None, prefix="/ops/dashboard"):
    hub = gws13.Hub()

    def chat(ws):
        hub.join(ws, ws.environ.get("QUERY_STRING") or "lobby")
        for message in ws:
            ws.send(message)

    endpoint = gws13.websocket_app(chat, ping_interval=0.2, connection_timeout=0, compression=None)
    dashboard = gws13.dashboard.app(hub=hub, accept=accept, interval=0.25)
    return gws13.dashboard.mount(prefix, dashboard, endpoint), hub


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read(), response.geturl()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read(), url


class Client:
    """A websocket-client connection with a reader thread (which also answers pings)."""

    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=5)
        self.received = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return
                self.received.append(data)
        except Exception:
            return

    def close(self, code=1000):
        try:
            self.ws.close(status=code, timeout=2)
        finally:
            self.thread.join(5)


def test_files_prefix_redirect_and_snapshot(serve):
    app, _ = make_app()
    server = serve(app)
    base = server.http + "/ops/dashboard"
    status, headers, body, final = get(base)  # no slash: redirected, so relative URLs resolve
    assert status == 200 and final == base + "/" and b"<svg id=\"chart-open\"" in body
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")]:
        status, headers, body, _ = get(f"{base}/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
        with open(os.path.join(STATIC, name), "rb") as f:
            assert body == f.read()
    assert get(base + "/../../etc/passwd")[0] == 404
    assert get(base + "/nothing")[0] == 404
    status, _, body, _ = get(base + "/snapshot.json")
    snap = json.loads(body)
    assert status == 200 and {"connections_open", "closes_by_code", "ping_rtt", "hub", "time"} <= set(snap)
    assert snap["hub"]["backend"] == "local" and snap["hub"]["redis"] is None
    # the rest of the server is untouched by the mount
    assert get(server.http + "/other")[0] == 400  # the WebSocket endpoint, asked without an upgrade


def test_nested_script_name_is_kept():
    app = gws13.dashboard.app()
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/app/admin", "PATH_INFO": "", "REMOTE_ADDR": "127.0.0.1"}
    app(environ, start_response)
    assert seen["status"].startswith("301") and seen["headers"]["Location"] == "/app/admin/"


def test_accept_hook_guards_the_page_and_the_websocket(serve):
    app, _ = make_app(accept=lambda environ: environ.get("HTTP_X_ADMIN_TOKEN") == "letmein")
    server = serve(app)
    base = server.http + "/ops/dashboard/"
    assert get(base)[0] == 403
    assert get(base + "snapshot.json")[0] == 403
    assert get(base, {"X-Admin-Token": "letmein"})[0] == 200
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.url + "/ops/dashboard/ws", timeout=5)
    assert info.value.status_code == 403
    ws = websocket.create_connection(server.url + "/ops/dashboard/ws", timeout=5,
                                     header=["X-Admin-Token: letmein"])
    assert json.loads(ws.recv())["type"] == "hello"
    ws.close()


def test_default_accept_is_loopback_only():
    app = gws13.dashboard.app()
    statuses = []
    for addr in ("127.0.0.1", "::1", "10.1.2.3", None):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/snapshot.json"}
        if addr:
            environ["REMOTE_ADDR"] = addr
        app(environ, lambda status, headers: statuses.append(status[:3]))
    assert statuses == ["200", "200", "403", "403"]


def test_bad_arguments():
    with pytest.raises(ValueError):
        gws13.dashboard.app(interval=0)
    with pytest.raises(ValueError):
        gws13.dashboard.app(history=1)
    with pytest.raises(TypeError):
        gws13.dashboard.app(accept="yes")
    with pytest.raises(ValueError):
        gws13.dashboard.mount("dashboard/", gws13.dashboard.app(), lambda e, s: [])


def test_the_websocket_pushes_snapshots_that_follow_the_clients(serve):
    app, _ = make_app()
    server = serve(app)
    viewer = websocket.create_connection(server.url + "/ops/dashboard/ws", timeout=5)
    hello = json.loads(viewer.recv())
    assert hello["type"] == "hello" and hello["interval"] == 0.25 and hello["history"]
    base = hello["snapshot"]["server_connections_open"]
    clients = [Client(server.url + "/chat?lobby") for _ in range(3)]

    def latest():
        return json.loads(viewer.recv())["snapshot"]

    snap = wait_until(lambda: (lambda s: s if s["server_connections_open"] == base + 3 else None)(latest()),
                      what="three more connections in a snapshot")
    assert snap["hub"]["rooms"] == {"lobby": 3}
    for client in clients:
        client.close()
    wait_until(lambda: latest()["server_connections_open"] == base, what="the clients gone")
    viewer.close()


def test_package_data_ships_every_dashboard_file():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["gws13.dashboard"]
    files = sorted(os.listdir(STATIC))
    assert {"index.html", "dashboard.js", "dashboard.css", "favicon.svg"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch("static/" + name, p) for p in patterns), name
    with open(os.path.join(ROOT, "MANIFEST.in")) as f:
        assert "recursive-include gws13/dashboard/static" in f.read()


# -- in a real browser ---------------------------------------------------------

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
needs_chromium = pytest.mark.skipif(not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
                                    reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium")


@needs_chromium
def test_the_page_draws_live_charts_in_chromium(serve, tmp_path):
    app, hub = make_app()
    server = serve(app)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, timeout=TIMEOUT * 1000, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT * 1000)
        errors = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server.http + "/ops/dashboard")  # redirected to the slash
            expect = sync_api.expect
            expect(page.locator("#status")).to_have_text("live")
            expect(page.locator("#open")).not_to_have_text("–")
            base = int(page.locator("#open").inner_text())  # the page's own WebSocket counts too
            clients = [Client(server.url + "/chat?lobby") for _ in range(3)]
            clients += [Client(server.url + "/chat?support")]
            expect(page.locator("#open")).to_have_text(str(base + 4))
            for client in clients:
                for i in range(20):
                    client.ws.send(f"message {i}")
            wait_until(lambda: all(len(c.received) == 20 for c in clients), what="the echoes")
            # the charts: a line for open connections, rates, rooms, ping round trips
            expect(page.locator("#chart-open path.series.open")).to_have_count(1)
            wait_until(lambda: int(page.locator("#chart-open").get_attribute("data-points") or 0) >= 3,
                       what="a few samples in the open-connections chart")
            expect(page.locator("#chart-rate path.series.in")).to_have_count(1)
            expect(page.locator("#chart-rooms rect.bar")).to_have_count(2)
            expect(page.locator("#chart-rooms")).to_contain_text("lobby")
            expect(page.locator("#chart-rooms")).to_contain_text("support")
            expect(page.locator("#room-count")).to_have_text("2 rooms, 4 members")
            expect(page.locator("#chart-rtt rect.bar").first).to_be_attached()
            messages = page.locator("#messages").inner_text()
            assert messages != "– · –"
            # two leave, one with an application close code
            clients[0].close(1000)
            clients[1].close(4001)
            expect(page.locator("#open")).to_have_text(str(base + 2))
            expect(page.locator("#chart-closes")).to_contain_text("4001")
            expect(page.locator("#room-count")).to_have_text("2 rooms, 2 members")
            os.makedirs(ARTIFACTS, exist_ok=True)
            page.screenshot(path=os.path.join(ARTIFACTS, "dashboard.png"), full_page=True)
            for client in clients[2:]:
                client.close()
            expect(page.locator("#open")).to_have_text(str(base))
            assert errors == [], errors
        finally:
            context.close()
