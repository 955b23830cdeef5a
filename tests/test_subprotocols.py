"""Subprotocol negotiation (RFC 6455 §4.2.2): the ``subprotocols`` parameter,
the ``select_subprotocol(offered, environ)`` hook, ``require_subprotocol``, and
the client's check of the server's choice.  Checked on the wire with a raw
client, with gws13.connect and with the ``websockets`` library's client."""

from __future__ import annotations

import pytest
from gevent import pywsgi

import gws13

from conftest import RawClient  # noqa: E402

ws_client = pytest.importorskip("websockets.sync.client")

TIMEOUT = 5
HANDLERS = {"gws13-handler": gws13.WebSocketHandler, "stock-handler": pywsgi.WSGIHandler}


@pytest.fixture(params=sorted(HANDLERS))
def handler_class(request):
    return HANDLERS[request.param]


def report(ws):
    """Tell the client which subprotocol the server side sees, then echo."""
    ws.send(f"subprotocol={ws.subprotocol}")
    for message in ws:
        ws.send(message)


def raw_101(port, offer=None):
    headers = {"Sec-WebSocket-Protocol": offer} if offer is not None else {}
    client = RawClient(port, headers=headers)
    try:
        first = client.next_event() if client.status == 101 else None
    finally:
        client.close()
    return client.status, client.headers, first


def test_server_picks_its_preferred_offered_subprotocol(serve, handler_class):
    app = gws13.websocket_app(report, subprotocols=["chat.v2", "chat.v1"])
    server = serve(app, handler_class=handler_class)
    # the server's order wins: chat.v2 although the client lists it last
    ws = gws13.connect(server.url, subprotocols=["chat.v1", "chat.v2"])
    try:
        assert ws.subprotocol == "chat.v2"
        assert ws.receive(timeout=TIMEOUT) == "subprotocol=chat.v2"
    finally:
        ws.close()
    status, headers, first = raw_101(server.port, "chat.v1, chat.v2")
    assert status == 101 and headers["sec-websocket-protocol"] == "chat.v2"
    assert first.data == "subprotocol=chat.v2"


def test_only_acceptable_offer_is_chosen(serve, handler_class):
    server = serve(gws13.websocket_app(report, subprotocols=["chat.v2", "chat.v1"]),
                   handler_class=handler_class)
    status, headers, first = raw_101(server.port, "mqtt, chat.v1")
    assert status == 101 and headers["sec-websocket-protocol"] == "chat.v1"
    assert first.data == "subprotocol=chat.v1"


@pytest.mark.parametrize("offer", [None, "unknown.v9", "unknown.v9, other"])
def test_no_acceptable_offer_gets_a_101_without_the_header(serve, handler_class, offer):
    server = serve(gws13.websocket_app(report, subprotocols=["chat.v1"]), handler_class=handler_class)
    status, headers, first = raw_101(server.port, offer)
    assert status == 101
    assert "sec-websocket-protocol" not in headers  # never an echo of the offer
    assert first.data == "subprotocol=None"


def test_client_offering_none_gets_none(serve):
    server = serve(gws13.websocket_app(report, subprotocols=["chat.v1"]))
    ws = gws13.connect(server.url)
    try:
        assert ws.subprotocol is None
        assert ws.receive(timeout=TIMEOUT) == "subprotocol=None"
    finally:
        ws.close()


def test_required_subprotocol_refuses_with_400(serve, handler_class):
    ran = []

    def proc(ws):
        ran.append(ws.subprotocol)
        report(ws)

    app = gws13.websocket_app(proc, subprotocols=["chat.v1"], require_subprotocol=True)
    server = serve(app, handler_class=handler_class)
    for offer in (None, "mqtt"):
        client = RawClient(server.port, headers={"Sec-WebSocket-Protocol": offer} if offer else {})
        try:
            assert client.status == 400
            assert "sec-websocket-accept" not in client.headers
            assert client.at_eof()
        finally:
            client.close()
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url, subprotocols=["mqtt"])
    assert info.value.status == 400
    assert "requires a subprotocol" in str(info.value) and "chat.v1" in str(info.value)
    ws = gws13.connect(server.url, subprotocols=["mqtt", "chat.v1"])
    assert ws.subprotocol == "chat.v1"
    assert ws.receive(timeout=TIMEOUT) == "subprotocol=chat.v1"
    ws.close()
    assert ran == ["chat.v1"]


def test_hook_chooses_from_offer_and_environ(serve, handler_class):
    def choose(offered, environ):
        # a version pinned by the URL, else the newest offered
        wanted = environ.get("QUERY_STRING", "").partition("v=")[2]
        if wanted:
            return f"api.{wanted}" if f"api.{wanted}" in offered else None
        versions = sorted(p for p in offered if p.startswith("api."))
        return versions[-1] if versions else None

    server = serve(gws13.websocket_app(report, select_subprotocol=choose), handler_class=handler_class)
    offer = ["api.v1", "api.v3", "api.v2"]
    ws = gws13.connect(server.url, subprotocols=offer)
    assert ws.subprotocol == "api.v3" and ws.receive(timeout=TIMEOUT) == "subprotocol=api.v3"
    ws.close()
    ws = gws13.connect(server.url + "/?v=v1", subprotocols=offer)
    assert ws.subprotocol == "api.v1" and ws.receive(timeout=TIMEOUT) == "subprotocol=api.v1"
    ws.close()
    ws = gws13.connect(server.url + "/?v=v7", subprotocols=offer)
    assert ws.subprotocol is None and ws.receive(timeout=TIMEOUT) == "subprotocol=None"
    ws.close()


def test_hook_may_refuse_with_a_handshake_error(serve, handler_class):
    def choose(offered, environ):
        if "legacy" in offered:
            raise gws13.HandshakeError("legacy clients must upgrade", status=403)
        return offered[0] if offered else None

    server = serve(gws13.websocket_app(report, select_subprotocol=choose), handler_class=handler_class)
    with pytest.raises(gws13.InvalidHandshake) as info:
        gws13.connect(server.url, subprotocols=["legacy"])
    assert info.value.status == 403 and "legacy clients must upgrade" in str(info.value)
    ws = gws13.connect(server.url, subprotocols=["modern"])
    assert ws.subprotocol == "modern"
    ws.close()


def test_hook_choosing_an_unoffered_subprotocol_is_a_server_error(serve, handler_class, capfd):
    app = gws13.websocket_app(report, select_subprotocol=lambda offered, environ: "made-up")
    server = serve(app, handler_class=handler_class)
    status, headers, _ = raw_101(server.port, "chat")
    assert status == 500
    assert "sec-websocket-protocol" not in headers
    server.stop()
    assert "which the client did not offer" in capfd.readouterr().err


def test_parameter_layers_set_the_subprotocols(serve):
    app = gws13.websocket_app(report)  # nothing per app: parameters decide
    server = serve(app)
    gws13.parameters.subprotocols = ["global.v1"]
    ws = gws13.connect(server.url, subprotocols=["global.v1"])
    assert ws.subprotocol == "global.v1"
    ws.close()

    def scoped(environ, start_response):
        with gws13.parameterize(subprotocols=["scoped.v1"]):
            return app(environ, start_response)

    server2 = serve(scoped)
    ws = gws13.connect(server2.url, subprotocols=["global.v1", "scoped.v1"])
    assert ws.subprotocol == "scoped.v1"
    ws.close()
    # and the client's default offer comes from the same parameter
    with gws13.parameterize(subprotocols=["global.v1"]):
        ws = gws13.connect(server.url)
    assert ws.subprotocol == "global.v1"
    ws.close()


def test_parameter_values_are_validated():
    with pytest.raises(TypeError):
        gws13.parameters.subprotocols = "chat"  # a string, not a list
    with pytest.raises(TypeError):
        gws13.websocket_app(report, require_subprotocol="yes")
    with pytest.raises(TypeError):
        gws13.websocket_app(report, select_subprotocol="chat")


def test_websockets_library_client_sees_the_choice(serve, handler_class):
    server = serve(gws13.websocket_app(report, subprotocols=["chat.v1", "chat.v2"]),
                   handler_class=handler_class)
    with ws_client.connect(server.url, subprotocols=["chat.v2", "chat.v1"], proxy=None,
                           open_timeout=TIMEOUT) as conn:
        assert conn.subprotocol == "chat.v1"
        assert conn.recv(timeout=TIMEOUT) == "subprotocol=chat.v1"


def test_environ_style_handler_uses_the_parameters_too(serve):
    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        with gws13.parameterize(subprotocols=["lazy.v1"]):
            ws.send("accepted")  # first use: the 101 goes out here
        ws.send(f"subprotocol={ws.subprotocol}")
        for message in ws:
            ws.send(message)
        return []

    server = serve(app)
    client = RawClient(server.port, headers={"Sec-WebSocket-Protocol": "x, lazy.v1"})
    try:
        assert client.status == 101 and client.headers["sec-websocket-protocol"] == "lazy.v1"
        assert [client.next_event().data for _ in range(2)] == ["accepted", "subprotocol=lazy.v1"]
    finally:
        client.close()
