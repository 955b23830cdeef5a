"""gws13.websocket_app on gevent.pywsgi, with gws13.WebSocketHandler and with
the stock WSGIHandler (where server.websocket_from_environ takes the socket
over).  gunicorn's workers are covered in test_gunicorn.py."""

from __future__ import annotations

import io
import socket

import pytest
import requests
from gevent import pywsgi

import gws13
from gws13.frames import OP_CLOSE, OP_TEXT, apply_mask, encode_close, encode_header
from gws13.protocol import Close, Protocol

from conftest import RawClient, echo_from_greenlets, read_response_head  # noqa: E402

TIMEOUT = 5
HANDLERS = {"gws13-handler": gws13.WebSocketHandler, "stock-handler": pywsgi.WSGIHandler}


@pytest.fixture(params=sorted(HANDLERS))
def handler_class(request):
    return HANDLERS[request.param]


def echo(ws):
    for message in ws:
        ws.send(message)


def client_frame(opcode, payload):
    mask = b"\x0a\x0b\x0c\x0d"
    return encode_header(opcode, len(payload), True, False, mask) + apply_mask(payload, mask)


def read_to_eof(sock, timeout=TIMEOUT):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_echo_and_subprotocol(serve, handler_class):
    app = gws13.websocket_app(echo, subprotocols=["echo.v1"])
    server = serve(app, handler_class=handler_class)
    ws = gws13.connect(server.url + "/any/path", subprotocols=["other", "echo.v1"])
    try:
        assert ws.subprotocol == "echo.v1"
        for message in ["hi", b"\x00\x01", "z" * 100000]:
            ws.send(message)
            assert ws.receive(timeout=TIMEOUT) == message
    finally:
        ws.close()
    assert ws.close_code == 1000


def test_plain_request_gets_400_with_upgrade_guidance(serve, handler_class):
    server = serve(gws13.websocket_app(echo), handler_class=handler_class)
    response = requests.get(server.http + "/chat", timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert "Upgrade: websocket" in response.text


def test_fallback_app_serves_plain_requests(serve, handler_class):
    def index(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"index of ", environ["PATH_INFO"].encode()]

    server = serve(gws13.websocket_app(echo, fallback=index), handler_class=handler_class)
    with requests.Session() as session:  # keep-alive still works around it
        for path in ("/a", "/b"):
            response = session.get(server.http + path, timeout=TIMEOUT)
            assert (response.status_code, response.text) == (200, "index of " + path)
    ws = gws13.connect(server.url + "/a")
    ws.send("still a websocket")
    assert ws.receive(timeout=TIMEOUT) == "still a websocket"
    ws.close()


@pytest.mark.parametrize("headers, status", [
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Sec-WebSocket-Key": "too-short"}, 400),
])
def test_invalid_upgrades_are_answered_not_run(serve, handler_class, headers, status):
    ran = []
    server = serve(gws13.websocket_app(lambda ws: ran.append(ws)), handler_class=handler_class)
    client = RawClient(server.port, **{"version": headers["Sec-WebSocket-Version"]}
                       if "Sec-WebSocket-Version" in headers else {"key": headers["Sec-WebSocket-Key"]})
    try:
        assert client.status == status
    finally:
        client.close()
    assert ran == []


def test_stock_handler_writes_nothing_after_the_websocket_and_closes(serve):
    """After the closing handshake the connection carries nothing else: no HTTP
    response from pywsgi, no reuse for another request."""
    server = serve(gws13.websocket_app(echo), handler_class=pywsgi.WSGIHandler)
    client = RawClient(server.port, "/x")
    try:
        assert client.status == 101
        client.send_frame(OP_TEXT, b"ping?")
        assert client.next_event().data == "ping?"
        # a close, then an HTTP request pipelined behind it: it must not be answered
        client.sock.sendall(client_frame(OP_CLOSE, encode_close(1000))
                            + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = read_to_eof(client.sock)
        events = client.proto.receive_data(rest)
        assert [type(e) for e in events] == [Close] and events[0].code == 1000
        assert b"HTTP/1." not in rest
        assert not client.proto._buf  # nothing after the close frame
    finally:
        client.close()


def test_frames_sent_with_the_handshake_are_not_lost(serve, handler_class):
    server = serve(gws13.websocket_app(echo), handler_class=handler_class)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        request = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request + client_frame(OP_TEXT, b"eager") + client_frame(OP_TEXT, b"beaver"))
        status, headers, rest = read_response_head(sock)
        assert status == 101
        proto = Protocol(client=True)
        events = proto.receive_data(rest)
        sock.settimeout(TIMEOUT)
        while len(events) < 2:
            events += proto.receive_data(sock.recv(65536))
        assert [e.data for e in events] == ["eager", "beaver"]
    finally:
        sock.close()


def test_an_upgrade_after_a_keep_alive_request_keeps_its_eager_frames(serve, handler_class):
    # the second head on the connection, with a body read before it: what the
    # HTTP reader holds past the head is found without the first head's shortcut
    def http(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = serve(gws13.websocket_app(echo, fallback=http), handler_class=handler_class)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, rest = read_response_head(sock)
        assert status == 200
        while len(rest) < 5:
            rest += sock.recv(65536)
        assert rest == b"hello"
        request = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request + client_frame(OP_TEXT, b"eager"))
        status, headers, rest = read_response_head(sock)
        assert status == 101
        proto = Protocol(client=True)
        events = proto.receive_data(rest)
        while not events:
            events += proto.receive_data(sock.recv(65536))
        assert [e.data for e in events] == ["eager"]
    finally:
        sock.close()


def test_error_in_proc_closes_1011_and_no_http_500_follows(serve, handler_class, capfd, caplog):
    def proc(ws):
        ws.receive()
        raise RuntimeError("handler bug")

    server = serve(gws13.websocket_app(proc), handler_class=handler_class)
    client = RawClient(server.port)
    try:
        assert client.status == 101
        client.send_frame(OP_TEXT, b"boom")
        close = client.next_event()
        assert isinstance(close, Close) and close.code == 1011
        client.send_frame(OP_CLOSE, encode_close(1011), mask=True)
        rest = read_to_eof(client.sock)
        assert b"HTTP/1." not in rest and b"500" not in rest
    finally:
        client.close()
    server.stop()
    # the application's error is still reported: once on the gws13.server logger
    # (gws13's handler, issue 13) or by the stock handler on stderr
    if handler_class is gws13.WebSocketHandler:
        assert [r.name for r in caplog.records if r.exc_info] == ["gws13.server"]
        assert "handler bug" not in capfd.readouterr().err
    else:
        assert "RuntimeError: handler bug" in capfd.readouterr().err


def test_refused_origin_gets_access_denied_response(serve, handler_class):
    app = gws13.websocket_app(echo, accept_connection=lambda origin: origin.endswith(".good.example"))
    server = serve(app, handler_class=handler_class)
    client = RawClient(server.port, headers={"Origin": "https://evil.example"})
    try:
        assert client.status == 403
        assert "sec-websocket-accept" not in client.headers
        assert client.at_eof()
    finally:
        client.close()
    ws = gws13.connect(server.url, origin="https://app.good.example")
    ws.send("welcome")
    assert ws.receive(timeout=TIMEOUT) == "welcome"
    ws.close()


def test_stock_handler_logs_no_error_for_normal_sessions(serve, capfd):
    errors = io.StringIO()
    server = serve(gws13.websocket_app(echo), handler_class=pywsgi.WSGIHandler, error_log=errors)
    for _ in range(5):
        ws = gws13.connect(server.url)
        ws.send("x")
        assert ws.receive(timeout=TIMEOUT) == "x"
        ws.close()
    client = RawClient(server.port)  # and one that just drops the TCP connection
    client.send_frame(OP_TEXT, b"bye")
    client.next_event()
    client.close()
    server.stop()
    assert errors.getvalue() == ""
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def test_many_concurrent_connections_on_the_stock_handler(serve):
    server = serve(gws13.websocket_app(echo), handler_class=pywsgi.WSGIHandler, spawn=1000)
    echo_from_greenlets(server.url, clients=100, messages=10)


def test_parameters_are_checked_when_the_app_is_made():
    with pytest.raises(TypeError, match="unknown gws13 parameter"):
        gws13.websocket_app(echo, ping_intervall=3)
    with pytest.raises(TypeError, match="fallback"):
        gws13.websocket_app(echo, fallback="index.html")
    app = gws13.websocket_app(echo)
    assert app.__name__ == "echo" and app.__wrapped__ is echo


def test_per_app_parameters_apply(serve, handler_class):
    app = gws13.websocket_app(echo, max_message_size=10)
    server = serve(app, handler_class=handler_class)
    ws = gws13.connect(server.url)
    ws.send("0123456789")
    assert ws.receive(timeout=TIMEOUT) == "0123456789"
    ws.send("01234567890")
    assert ws.receive(timeout=TIMEOUT) is None
    assert ws.close_code == 1009
    ws.close()


def test_websocket_from_environ_is_none_for_plain_requests(serve):
    seen = []

    def app(environ, start_response):
        from gws13.server import websocket_from_environ
        seen.append(websocket_from_environ(environ))
        start_response("204 No Content", [])
        return []

    server = serve(app, handler_class=pywsgi.WSGIHandler)
    assert requests.get(server.http, timeout=TIMEOUT).status_code == 204
    assert seen == [None]


def test_gevent_websocket_style_handler_on_the_stock_server(serve):
    """``websocket_from_environ`` + ``with_websocket`` directly, for code that
    cannot use websocket_app."""
    from gws13.server import finish_response, websocket_from_environ

    def app(environ, start_response):
        ws = websocket_from_environ(environ)
        assert ws is not None and not ws._accepted
        return finish_response(environ, gws13.with_websocket(environ, start_response, echo))

    server = serve(app, handler_class=pywsgi.WSGIHandler)
    ws = gws13.connect(server.url)
    ws.send("direct")
    assert ws.receive(timeout=TIMEOUT) == "direct"
    ws.close()
    assert ws.close_code == 1000


def test_framework_calling_start_response_after_the_websocket(serve, capfd):
    """Frameworks such as Bottle call start_response after every route, also
    after a WebSocket: the stock handler's late write must neither reach the
    client nor be logged as an error."""
    from gws13.server import websocket_from_environ

    def app(environ, start_response):
        websocket_from_environ(environ)
        gws13.with_websocket(environ, start_response, echo)
        start_response("101 Switching Protocols", [])  # what the framework does next
        return [b""]

    server = serve(app, handler_class=pywsgi.WSGIHandler)
    for _ in range(3):
        client = RawClient(server.port)
        try:
            assert client.status == 101
            client.send_frame(OP_TEXT, b"late")
            assert client.next_event().data == "late"
            client.send_frame(OP_CLOSE, encode_close(1000))
            rest = read_to_eof(client.sock)
            assert [type(e) for e in client.proto.receive_data(rest)] == [Close]
            assert b"HTTP/1." not in rest
        finally:
            client.close()
    server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Bad file descriptor" not in err


def test_messages_keep_order_under_load(serve, handler_class):
    server = serve(gws13.websocket_app(echo), handler_class=handler_class)
    ws = gws13.connect(server.url)
    try:
        for i in range(500):
            ws.send(str(i))
        assert [ws.receive(timeout=TIMEOUT) for _ in range(500)] == [str(i) for i in range(500)]
    finally:
        ws.close()


def test_request_headers_after_the_upgrade_are_rebuilt_for_access_logs(serve):
    # the handler drops its parsed headers once the connection is a WebSocket;
    # what an access log reads after it (gunicorn: headers.items()) is still there
    seen = []

    class Handler(gws13.WebSocketHandler):
        def log_request(self):
            seen.append((self.status, dict(self.headers.items()), self.headers.get("x-trace"),
                         "User-Agent" in self.headers, self.requestline))
            super().log_request()

    server = serve(gws13.websocket_app(echo), handler_class=Handler)
    client = RawClient(server.port, path="/ws?a=1", headers={"User-Agent": "t/1", "X-Trace": "a",
                                                              "x-trace": "b"})
    try:
        assert client.status == 101
        client.send_frame(OP_TEXT, b"hi")
        assert client.next_event().data == "hi"
        client.send_frame(OP_CLOSE, encode_close(1000))
        read_to_eof(client.sock)
    finally:
        client.close()
    server.stop()
    (status, headers, trace, has_agent, requestline), = seen
    assert status == "101 Switching Protocols" and has_agent and trace == "a,b"
    assert requestline == "GET /ws?a=1 HTTP/1.1"
    assert {k.lower(): v for k, v in headers.items()} == {
        "host": f"127.0.0.1:{server.port}", "upgrade": "websocket", "connection": "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13",
        "user-agent": "t/1", "x-trace": "a,b"}


def test_the_access_log_gets_upgrades_and_log_none_formats_nothing(serve):
    lines, formatted = [], []

    class Log:
        def write(self, line):
            lines.append(line)

    class LoggedServer(pywsgi.WSGIServer):
        def __init__(self, *args, log=None, **kwargs):
            super().__init__(*args, log=Log(), **kwargs)

    class Handler(gws13.WebSocketHandler):
        def format_request(self):
            formatted.append(self.requestline)
            return super().format_request()

    for server_class in (LoggedServer, pywsgi.WSGIServer):
        server = serve(gws13.websocket_app(echo), handler_class=Handler, server_class=server_class)
        ws = gws13.connect(server.url + "/ws")
        ws.send("hi")
        assert ws.receive(timeout=TIMEOUT) == "hi"
        ws.close()
        server.stop()
    (line,) = lines
    assert '"GET /ws HTTP/1.1" 101' in line
    assert formatted == ["GET /ws HTTP/1.1"]  # the log=None server formatted no line
