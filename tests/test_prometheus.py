"""The Prometheus collector (issue 13, point 3): scrape a running server's
/metrics route, parse it with prometheus_client's own text parser and watch
the values move as clients connect, talk and close."""

from __future__ import annotations

import urllib.request

import pytest

import gws13

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import gws13.prometheus  # noqa: E402

from conftest import end_earlier_connections, wait_until  # noqa: E402


def scrape(server):
    """{(sample name, frozenset of labels): value} from the server's /metrics."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


HUB = gws13.Hub()


def make_app():
    metrics_app = gws13.prometheus.wsgi_app(hubs=[HUB])

    def chat(ws):
        HUB.join(ws, "lobby")
        for message in ws:
            ws.send(message)

    ws_app = gws13.websocket_app(chat, compression=None, ping_interval=0.05, connection_timeout=0)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/metrics":
            return metrics_app(environ, start_response)
        return ws_app(environ, start_response)

    return app


def test_a_scrape_follows_connections_messages_and_closes(serve):
    server = serve(make_app())
    end_earlier_connections()
    before = scrape(server)
    assert value(before, "gws13_connections_open", side="server") == 0
    clients = [gws13.connect(server.url + "/chat", compression=None) for _ in range(4)]
    s = wait_until(lambda: (lambda s: s if value(s, "gws13_connections_open", side="server") == 4 else None)(
        scrape(server)), 5, "four open connections in the scrape")
    assert value(s, "gws13_connections_total", side="server") - value(before, "gws13_connections_total",
                                                                      side="server") == 4
    assert value(s, "gws13_hub_room_members", room="lobby") == 4
    for ws in clients:
        for _ in range(5):
            ws.send("hello")
            assert ws.receive(timeout=5) == "hello"
    s = scrape(server)
    received = value(s, "gws13_messages_received_total") - value(before, "gws13_messages_received_total")
    sent = value(s, "gws13_messages_sent_total") - value(before, "gws13_messages_sent_total")
    assert received == 40 and sent == 40  # both ends of 20 round trips live in this process
    assert value(s, "gws13_received_payload_bytes_total") - value(
        before, "gws13_received_payload_bytes_total") == 40 * 5
    assert value(s, "gws13_received_bytes_total") > value(before, "gws13_received_bytes_total")
    # keepalive pings every 50 ms: round trips land in the histogram
    s = wait_until(lambda: (lambda s: s if value(s, "gws13_ping_rtt_seconds_count") > value(
        before, "gws13_ping_rtt_seconds_count") else None)(scrape(server)), 5, "a ping round trip")
    assert value(s, "gws13_ping_rtt_seconds_bucket", le="+Inf") == value(s, "gws13_ping_rtt_seconds_count")
    assert value(s, "gws13_ping_rtt_seconds_sum") > 0
    for ws in clients[:3]:
        ws.close(1000)
    clients[3].close(4321, "bye")
    s = wait_until(lambda: (lambda s: s if value(s, "gws13_connections_open", side="server") == 0 else None)(
        scrape(server)), 5, "every connection closed")
    assert value(s, "gws13_closes_total", code="1000") - value(before, "gws13_closes_total", code="1000") == 6
    assert value(s, "gws13_closes_total", code="4321") - value(before, "gws13_closes_total", code="4321") == 2
    assert value(s, "gws13_hub_room_members", room="lobby") == 0


def test_refusals_are_labelled_by_status(serve):
    server = serve(make_app())
    before = scrape(server)
    request = urllib.request.Request(server.http + "/chat", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    s = scrape(server)
    assert value(s, "gws13_handshakes_refused_total", status="400") - value(
        before, "gws13_handshakes_refused_total", status="400") == 1


def test_register_is_one_line_and_refuses_a_second_collector():
    registry = prometheus_client.CollectorRegistry()
    gws13.prometheus.register(registry)
    text = prometheus_client.generate_latest(registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"gws13_connections_open", "gws13_messages_received", "gws13_messages_sent", "gws13_closes",
            "gws13_ping_rtt_seconds"} <= names
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["gws13_ping_rtt_seconds"] == "histogram" and types["gws13_messages_sent"] == "counter"
    assert types["gws13_connections_open"] == "gauge"
    with pytest.raises(ValueError):
        gws13.prometheus.register(registry)
