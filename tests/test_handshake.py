"""The opening handshake: unit checks of the validator and end-to-end answers."""

import socket

import pytest
import requests

import gws13
from gws13.handshake import accept_key, check_request
from conftest import RawClient, raw_connect, read_response_head

GOOD = {
    "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_HOST": "example.com:8080",
}


def test_accept_key_matches_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_request_with_token_lists_and_any_case():
    env = dict(GOOD, HTTP_UPGRADE="WebSocket", HTTP_CONNECTION="keep-alive, UPGRADE")
    assert check_request(env) == "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("change, error, status", [
    ({"HTTP_UPGRADE": "h2c"}, gws13.MissingUpgradeHeader, 400),
    ({"HTTP_CONNECTION": "keep-alive"}, gws13.MissingUpgradeHeader, 400),
    ({"REQUEST_METHOD": "POST"}, gws13.InvalidHandshake, 400),
    ({"SERVER_PROTOCOL": "HTTP/1.0"}, gws13.InvalidHandshake, 400),
    ({"HTTP_SEC_WEBSOCKET_KEY": "not base64!"}, gws13.InvalidHandshake, 400),
    ({"HTTP_SEC_WEBSOCKET_KEY": "c2hvcnQ="}, gws13.InvalidHandshake, 400),   # 5 bytes
    ({"HTTP_SEC_WEBSOCKET_KEY": ""}, gws13.InvalidHandshake, 400),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, gws13.UnsupportedVersion, 426),
    ({"HTTP_HOST": None}, gws13.InvalidHandshake, 400),
    ({"HTTP_HOST": " "}, gws13.InvalidHandshake, 400),
    ({"HTTP_HOST": "a.example,b.example"}, gws13.InvalidHandshake, 400),  # two, as WSGI joins them
])
def test_invalid_requests(change, error, status):
    env = {k: v for k, v in dict(GOOD, **change).items() if v is not None}
    with pytest.raises(error) as info:
        check_request(env)
    assert info.value.status == status
    assert isinstance(info.value, gws13.HandshakeError)


def echo_app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain http"]
    for message in ws:
        ws.send(message)
    return []


def test_non_upgrade_request_reaches_the_app_untouched(serve):
    srv = serve(echo_app)
    r = requests.get(srv.http + "/x", timeout=5)
    assert r.status_code == 200 and r.text == "plain http"


def test_101_response(serve):
    srv = serve(echo_app)
    raw = RawClient(srv.port)
    assert raw.status == 101
    assert raw.headers["upgrade"].lower() == "websocket"
    assert raw.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert "sec-websocket-protocol" not in raw.headers
    raw.close()


@pytest.mark.parametrize("kw, status", [
    ({"key": "bad"}, 400),
    ({"key": ""}, 400),
    ({"version": "8"}, 426),
])
def test_bad_handshakes_answered_without_upgrade(serve, kw, status):
    calls = []
    srv = serve(lambda e, s: calls.append(1) or echo_app(e, s))
    sock, got, headers, body = raw_connect(srv.port, **kw)
    assert got == status
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
    assert body.strip()  # a short reason
    assert calls == []   # the app never saw it
    sock.close()


def test_missing_connection_header_is_400(serve):
    srv = serve(echo_app)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, _, _ = read_response_head(sock)
    assert status == 400
    sock.close()


def test_origin_refused_gets_access_denied_and_no_upgrade(serve):
    def app(environ, start_response):
        return gws13.with_websocket(environ, start_response, lambda ws: ws.send("never"),
                                    accept_connection=lambda origin: origin == "https://good.example")
    srv = serve(app)
    sock, status, headers, body = raw_connect(srv.port, headers={"Origin": "https://evil.example"})
    assert status == 403
    assert body == b"<h1>Access denied</h1>"
    assert headers["content-type"].startswith("text/html")
    sock.close()
    ok = RawClient(srv.port, headers={"Origin": "https://good.example"})
    assert ok.status == 101
    assert ok.next_event().data == "never"
    ok.close()


def test_origin_check_on_the_environ_path_uses_parameters(serve):
    gws13.parameters.accept_connection = lambda origin: origin == ""
    srv = serve(echo_app)
    sock, status, _, _ = raw_connect(srv.port, headers={"Origin": "http://x"})
    assert status == 403
    sock.close()
    raw = RawClient(srv.port)
    assert raw.status == 101
    raw.close()


def test_custom_access_denied_app(serve):
    def denied(environ, start_response):
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"log in first"]

    def app(environ, start_response):
        return gws13.with_websocket(environ, start_response, lambda ws: None,
                                    accept_connection=lambda o: False, access_denied=denied)
    srv = serve(app)
    sock, status, _, body = raw_connect(srv.port)
    assert status == 401 and b"log in first" in body
    sock.close()


def test_with_websocket_on_a_plain_request(serve):
    srv = serve(lambda e, s: gws13.with_websocket(e, s, lambda ws: None))
    r = requests.get(srv.http + "/", timeout=5)
    assert r.status_code == 400
    assert r.headers["Upgrade"] == "websocket"


def test_client_that_does_not_wait_for_the_101(serve):
    # frames sent in the same packet as the request still reach the app
    srv = serve(echo_app)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    from gws13.protocol import Protocol
    client = Protocol(client=True)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                 + b"".join(client.send_message("early")))
    status, _, rest = read_response_head(sock)
    assert status == 101
    events = client.receive_data(rest)
    while not events:
        events = client.receive_data(sock.recv(4096))
    assert events[0].data == "early"
    sock.close()


UPGRADE = (b"GET / HTTP/1.1\r\n%sUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def host_app(environ, start_response):
    """Both server paths: the handler's environ["wsgi.websocket"], and
    with_websocket (which a stock handler serves through websocket_from_environ)."""
    if environ["PATH_INFO"] == "/egg":
        return gws13.with_websocket(environ, start_response, lambda ws: ws.send("hello"))
    return echo_app(environ, start_response)


@pytest.mark.parametrize("handler, path", [("gws13", "/"), ("gws13", "/egg"), ("stock", "/egg")])
@pytest.mark.parametrize("hosts, status", [
    ([], 400),
    (["a.example", "b.example"], 400),
    (["a.example", "a.example"], 400),
    ([""], 400),
    (["a.example:8080"], 101),
], ids=["none", "two", "twice-the-same", "empty", "one"])
def test_host_header_missing_or_repeated_is_400(serve, handler, path, hosts, status):
    """RFC 6455 §4.2.1 / RFC 7230 §5.4: one Host header, neither none nor two."""
    from gevent import pywsgi

    srv = serve(host_app, handler_class=gws13.WebSocketHandler if handler == "gws13" else pywsgi.WSGIHandler)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    head = b"".join(b"Host: %s\r\n" % h.encode() for h in hosts)
    sock.sendall(UPGRADE.replace(b"GET / ", f"GET {path} ".encode()) % head)
    got, headers, rest = read_response_head(sock)
    assert got == status
    if status == 400:
        assert b"Host header" in rest or b"Host header" in sock.recv(4096)
    sock.close()
