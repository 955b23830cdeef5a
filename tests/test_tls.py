"""wss://: gevent.pywsgi with keyfile/certfile made by trustme, clients that
verify the test CA.  TLS sockets keep decrypted bytes inside the SSL object,
so the server's WebSocket reads them with a reader greenlet (no raw-socket
watcher); these tests run that path on both handlers."""

from __future__ import annotations

import ssl
import threading

import gevent
import pytest
from gevent import pywsgi

import gws13
from conftest import echo_from_greenlets

pytest.importorskip("trustme")  # the ca and cert_files fixtures (conftest)
ws_client = pytest.importorskip("websockets.sync.client")

# gevent's keyfile/certfile path builds its context with the deprecated PROTOCOL_TLS
pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")

TIMEOUT = 5
HANDLERS = {"gws13-handler": gws13.WebSocketHandler, "stock-handler": pywsgi.WSGIHandler}


@pytest.fixture
def client_context(ca):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(params=sorted(HANDLERS))
def tls_server(request, serve, cert_files):
    """Start ``app`` over TLS on the handler of this parametrization; returns (server, wss url)."""
    keyfile, certfile = cert_files

    def start(app):
        server = serve(app, handler_class=HANDLERS[request.param], keyfile=keyfile, certfile=certfile)
        return server, f"wss://127.0.0.1:{server.port}"

    return start


def echo(ws):
    for message in ws:
        ws.send(message)


def test_wss_echo_through_the_reader_greenlet(tls_server, client_context):
    server_sides = []

    def proc(ws):
        server_sides.append(ws)
        echo(ws)

    server, url = tls_server(gws13.websocket_app(proc, subprotocols=["tls.v1"]))
    ws = gws13.connect(url + "/secure", ssl_context=client_context, subprotocols=["tls.v1"])
    try:
        assert ws.subprotocol == "tls.v1"
        messages = ["hello over TLS", b"\x00" * 10, "é" * 40000, bytes(range(256)) * 3500]
        for message in messages:  # up to ~900 KB: many TLS records per message
            ws.send(message)
            assert ws.receive(timeout=TIMEOUT) == message
        for i in range(300):
            ws.send(str(i))
        assert [ws.receive(timeout=TIMEOUT) for _ in range(300)] == [str(i) for i in range(300)]
        assert ws.ping(b"tls").wait(TIMEOUT) >= 0
        # both ends run on TLS sockets: no raw-socket watcher, a reader greenlet each
        (server_ws,) = server_sides
        assert hasattr(server_ws._sock, "_sslobj") and server_ws._raw is None
        assert server_ws._reader is not None
        assert hasattr(ws._sock, "_sslobj") and ws._raw is None and ws._reader is not None
    finally:
        ws.close()
    assert ws.close_code == 1000


def test_wss_server_close_and_pings(tls_server, client_context):
    def proc(ws):
        ws.send("hi")
        # wait (bounded) for an automatic ping's pong to come back over TLS
        for _ in range(100):
            if ws.latency is not None:
                break
            gevent.sleep(0.05)
        ws.send(f"latency-known={ws.latency is not None}")
        ws.close(4100, "tls done")

    server, url = tls_server(gws13.websocket_app(proc, ping_interval=0.1))
    ws = gws13.connect(url, ssl_context=client_context)
    assert ws.receive(timeout=TIMEOUT) == "hi"
    assert ws.receive(timeout=TIMEOUT) == "latency-known=True"
    assert ws.receive(timeout=TIMEOUT) is None
    assert (ws.close_code, ws.close_reason) == (4100, "tls done")
    ws.close()


def test_wss_with_localhost_name(serve, cert_files, client_context):
    keyfile, certfile = cert_files
    server = serve(gws13.websocket_app(echo), keyfile=keyfile, certfile=certfile)
    ws = gws13.connect(f"wss://localhost:{server.port}/", ssl_context=client_context)
    ws.send("by name")
    assert ws.receive(timeout=TIMEOUT) == "by name"
    ws.close()


def test_untrusted_certificate_is_refused_by_default(serve, cert_files):
    keyfile, certfile = cert_files
    server = serve(gws13.websocket_app(echo), keyfile=keyfile, certfile=certfile)
    # no ssl_context: the system's CAs, which do not know the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        gws13.connect(f"wss://127.0.0.1:{server.port}/", timeout=TIMEOUT)


def test_certificate_for_another_host_is_refused(serve, ca, tmp_path, client_context):
    other = ca.issue_cert("other.example")
    keyfile, certfile = tmp_path / "k.pem", tmp_path / "c.pem"
    other.private_key_pem.write_to_path(str(keyfile))
    other.cert_chain_pems[0].write_to_path(str(certfile))
    server = serve(gws13.websocket_app(echo), keyfile=str(keyfile), certfile=str(certfile))
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)mismatch|doesn't match|not valid"):
        gws13.connect(f"wss://127.0.0.1:{server.port}/", ssl_context=client_context, timeout=TIMEOUT)


def test_independent_client_over_wss(tls_server, client_context):
    server, url = tls_server(gws13.websocket_app(echo))
    with ws_client.connect(url, ssl=client_context, proxy=None, open_timeout=TIMEOUT) as conn:
        for message in ["independent", b"\x01" * 300000]:
            conn.send(message)
            assert conn.recv(timeout=TIMEOUT) == message


_TLS_ECHO_SERVER = """
import sys
from gevent import pywsgi
import gws13

def echo(ws):
    for message in ws:
        ws.send(message)

handler = gws13.WebSocketHandler if sys.argv[3] == "gws13-handler" else pywsgi.WSGIHandler
server = pywsgi.WSGIServer(("127.0.0.1", 0), gws13.websocket_app(echo), handler_class=handler,
                           keyfile=sys.argv[1], certfile=sys.argv[2], log=None)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_concurrent_wss_clients(handler, cert_files, client_context):
    # The server runs in its own process: a server-side crash (this test once
    # caught a watcher left on a descriptor the stock handler closes) shows as a
    # failure here instead of taking the test process down.
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-c", _TLS_ECHO_SERVER, *cert_files, handler],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"wss://127.0.0.1:{port}"

        echo_from_greenlets(url, clients=20, messages=10, ssl_context=client_context)
        assert server.poll() is None  # the server survived it
    finally:
        server.terminate()
        server.wait(10)


def test_server_shutdown_says_1001_over_tls(serve, cert_files, client_context):
    keyfile, certfile = cert_files
    entered = threading.Event()

    def proc(ws):
        entered.set()
        echo(ws)

    server = serve(gws13.websocket_app(proc), keyfile=keyfile, certfile=certfile)
    ws = gws13.connect(f"wss://127.0.0.1:{server.port}/", ssl_context=client_context)
    assert entered.wait(TIMEOUT)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    assert ws.receive(timeout=TIMEOUT) is None
    assert ws.close_code == 1001
    ws.close()
    stopper.join(TIMEOUT)
