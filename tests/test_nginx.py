"""Behind nginx, with the real thing: Debian's nginx in front of gunicorn with
the gws13 worker, configured with docs/deployment.md's own nginx block (only the
ports, certificate paths and timeouts are changed for the test).

- ws:// is proxied (Upgrade/Connection headers), wss:// is terminated at nginx
  (certificates made here with trustme);
- X-Forwarded-For/-Proto reach the app, and the documented ProxyFix recipe makes
  Flask see the client's address and scheme: url_for builds wss:// URLs and the
  same-origin check accepts the page's https:// origin;
- gws13's keepalive pings keep a connection up through an idle period longer
  than nginx's proxy_read_timeout (and without them nginx does close it);
- gunicorn's graceful shutdown (SIGTERM) still reaches clients as close 1001.

nginx runs as a foreground process on free loopback ports with a temporary
prefix and configuration: no system service is touched.  Skipped, saying so,
when nginx is not installed (`apt-get install nginx`; .ci/run does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

pytest.importorskip("flask")
pytest.importorskip("werkzeug.middleware.proxy_fix")
trustme = pytest.importorskip("trustme")

from conftest import connect  # noqa: E402
from test_docs import blocks_of  # noqa: E402
from test_gunicorn import Gunicorn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")

READ_TIMEOUT = 2  # nginx's proxy_read_timeout in the test, seconds
PING_INTERVAL = 0.5  # gws13's keepalive on the /echo route: well below READ_TIMEOUT
TIMEOUT = 10

APP = textwrap.dedent('''
    import json
    import os

    from flask import Flask, request, url_for
    from werkzeug.middleware.proxy_fix import ProxyFix

    from gws13.flask import Sock

    app = Flask(__name__)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)   # the recipe of docs/deployment.md
    sock = Sock(app)


    def same_origin(origin):
        return origin == request.host_url.rstrip("/")


    def serve(ws):
        for message in ws:
            if message == "info":
                ws.send(json.dumps({
                    "remote_addr": request.remote_addr,
                    "scheme": request.scheme,
                    "url": url_for("echo", _external=True),
                    "wss_url": url_for("echo", _external=True, _scheme="wss"),
                    "forwarded_for": request.headers.get("X-Forwarded-For"),
                    "forwarded_proto": request.headers.get("X-Forwarded-Proto"),
                    "proxy_addr": ws.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR"),
                }))
            else:
                ws.send(message)



    @sock.route("/echo", ping_interval=%(ping)r)
    def echo(ws):
        serve(ws)


    @sock.route("/quiet", ping_interval=0)
    def quiet(ws):
        serve(ws)


    @sock.route("/same-origin", accept_connection=same_origin)
    def same_origin_echo(ws):
        serve(ws)


    @app.route("/")
    def index():
        return "plain http from %%d" %% os.getpid()
''') % {"ping": PING_INTERVAL}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented_config() -> str:
    (block,) = [b for b in blocks_of(ROOT / "docs" / "deployment.md") if b.marker == "nginx"]
    return block.code


def substitute(config: str, replacements: dict) -> str:
    for old, new in replacements.items():
        assert config.count(old) == 1, f"docs/deployment.md's nginx config no longer has {old!r} once"
        config = config.replace(old, new)
    return config


class Nginx:
    def __init__(self, prefix: Path, upstream_port: int, cert: Path, key: Path):
        self.prefix = prefix
        for sub in ("logs", "temp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        self.port, self.tls_port = free_port(), free_port()
        site = substitute(documented_config(), {
            "listen 80;": f"listen 127.0.0.1:{self.port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.tls_port} ssl;",
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
            "/etc/ssl/certs/example.com.pem": str(cert),
            "/etc/ssl/private/example.com.key": str(key),
            "proxy_read_timeout 60s;": f"proxy_read_timeout {READ_TIMEOUT}s;",
            "proxy_send_timeout 60s;": f"proxy_send_timeout {READ_TIMEOUT}s;",
        })
        temp = prefix / "temp"
        conf = textwrap.dedent(f"""
            daemon off;
            master_process off;
            worker_processes 1;
            pid {prefix}/nginx.pid;
            error_log stderr notice;
            events {{ worker_connections 256; }}
            http {{
                access_log off;
                client_body_temp_path {temp}/body;
                proxy_temp_path {temp}/proxy;
                fastcgi_temp_path {temp}/fastcgi;
                uwsgi_temp_path {temp}/uwsgi;
                scgi_temp_path {temp}/scgi;
            """) + textwrap.indent(site, "    ") + "}\n"
        (prefix / "nginx.conf").write_text(conf)
        self.log = prefix / "nginx.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                          "-e", "stderr"], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while not all(self._listening(p) for p in (self.port, self.tls_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not start: {self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.02)

    @staticmethod
    def _listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: what `nginx -s quit` sends
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)


@pytest.fixture
def stack(tmp_path):
    """gunicorn (gws13 worker, the Flask app) behind nginx; yields an object
    with .ws, .wss (base URLs), .tls (client SSL context), .gunicorn, .nginx."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        with open(cert_path, "ab") as f:
            f.write(extra.bytes())
    (tmp_path / "proxied.py").write_text(APP)

    server = Gunicorn("proxied:app", "-k", "gws13.gunicorn.GeventWebSocketWorker", cwd=tmp_path, workers=1,
                      graceful=5)
    nginx = None
    try:
        server.wait_serving()
        nginx = Nginx(tmp_path / "nginx", server.port, cert_path, key_path)

        class Stack:
            pass

        s = Stack()
        s.gunicorn, s.nginx = server, nginx
        s.ws = f"ws://127.0.0.1:{nginx.port}"
        s.wss = f"wss://127.0.0.1:{nginx.tls_port}"
        s.tls = ssl.create_default_context()
        ca.configure_trust(s.tls)
        yield s
    finally:
        if nginx is not None:
            nginx.stop()
        server.kill()


def info(conn) -> dict:
    conn.send("info")
    return json.loads(conn.recv(timeout=TIMEOUT))


def test_ws_is_proxied_and_the_client_address_is_forwarded(stack):
    # The client connects from 127.0.0.2 and claims to be 203.0.113.7: nginx adds
    # the real address, ProxyFix(x_for=1) trusts only that one.
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", stack.nginx.port))
    with connect(stack.ws + "/echo", sock=sock, additional_headers={"X-Forwarded-For": "203.0.113.7"}) as conn:
        conn.send("through nginx")
        assert conn.recv(timeout=TIMEOUT) == "through nginx"
        seen = info(conn)
    assert seen["forwarded_for"] == "203.0.113.7, 127.0.0.2"
    assert seen["remote_addr"] == "127.0.0.2"      # the client, not nginx, not the forged value
    assert seen["proxy_addr"] == "127.0.0.1"       # what the environ said before ProxyFix: nginx
    assert seen["forwarded_proto"] == "http" and seen["scheme"] == "http"
    assert seen["url"] == f"{stack.ws}/echo"
    assert seen["wss_url"] == f"wss://127.0.0.1:{stack.nginx.port}/echo"


def test_wss_is_terminated_at_nginx(stack):
    with connect(stack.wss + "/echo", ssl=stack.tls) as conn:
        conn.send("over TLS")
        assert conn.recv(timeout=TIMEOUT) == "over TLS"
        seen = info(conn)
    assert seen["forwarded_proto"] == "https"
    assert seen["scheme"] == "https"               # ProxyFix(x_proto=1)
    assert seen["url"] == f"{stack.wss}/echo"      # url_for picks wss:// by itself
    assert seen["wss_url"] == f"{stack.wss}/echo"


def test_the_same_origin_check_sees_the_https_origin(stack):
    from websockets.exceptions import InvalidStatus

    page = f"https://127.0.0.1:{stack.nginx.tls_port}"
    with connect(stack.wss + "/same-origin", ssl=stack.tls, origin=page) as conn:
        conn.send("same origin")
        assert conn.recv(timeout=TIMEOUT) == "same origin"
    for other in (f"http://127.0.0.1:{stack.nginx.tls_port}", "https://evil.example"):
        with pytest.raises(InvalidStatus) as refused:
            connect(stack.wss + "/same-origin", ssl=stack.tls, origin=other)
        assert refused.value.response.status_code == 403


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_keepalive_pings_outlive_proxy_read_timeout(stack, scheme):
    from websockets.exceptions import ConnectionClosed

    base, tls = (stack.ws, None) if scheme == "ws" else (stack.wss, stack.tls)
    options = {"ssl": tls} if tls else {}
    # the client sends nothing of its own accord (no client pings) while idle
    with connect(base + "/echo", ping_interval=None, **options) as kept, \
            connect(base + "/quiet", ping_interval=None, **options) as quiet:
        start = time.monotonic()
        # /quiet has no keepalive: nginx closes it after proxy_read_timeout
        with pytest.raises(ConnectionClosed):
            quiet.recv(timeout=READ_TIMEOUT * 5)
        assert time.monotonic() - start < READ_TIMEOUT * 4
        # /echo has been idle as long, and stays idle past three timeouts in all
        while time.monotonic() - start < READ_TIMEOUT * 3:
            with pytest.raises(TimeoutError):
                kept.recv(timeout=READ_TIMEOUT * 3 - (time.monotonic() - start))
        kept.send("still here")
        assert kept.recv(timeout=TIMEOUT) == "still here"


def test_graceful_shutdown_1001_reaches_clients_through_nginx(stack):
    from websockets.exceptions import ConnectionClosed

    with ExitStack() as opened:
        clients = [opened.enter_context(connect(stack.ws + "/echo")),
                   opened.enter_context(connect(stack.wss + "/echo", ssl=stack.tls))]
        for conn in clients:
            conn.send("hello")
            assert conn.recv(timeout=TIMEOUT) == "hello"
        stack.gunicorn.proc.send_signal(signal.SIGTERM)
        for conn in clients:
            with pytest.raises(ConnectionClosed) as closed:
                conn.recv(timeout=TIMEOUT)
            assert closed.value.rcvd is not None, "no close frame came through nginx"
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "server shutting down")
        stack.gunicorn.proc.wait(TIMEOUT)
