"""Server-wide metrics without a Hub (issue 13, point 2): gws13.metrics() and
ws.stats.  Figures are process-wide, so each test compares before and after
(with bounded waits: the server runs in its own thread)."""

from __future__ import annotations

import json
import queue
import time

import gevent
import pytest

import gws13
import gws13.protocol
from conftest import RawClient, end_earlier_connections, raw_connect, wait_until
from gws13.frames import OP_BINARY, OP_TEXT

KEYS = {"connections_open", "connections_total", "handshakes_refused", "closes_by_code", "messages_received",
        "messages_sent", "bytes_received", "bytes_sent", "payload_bytes_received", "payload_bytes_sent",
        "closes_by_side", "handshakes_accepted", "pings_sent", "pongs_late", "ping_rtt", "reads_paused",
        "read_queue_high_water", "write_buffer_high_water", "dropped_for_limit"}


def delta(before, after, key, sub=None):
    if sub is None:
        return after[key] - before[key]
    return after[key].get(sub, 0) - before[key].get(sub, 0)


def echo(ws):
    for message in ws:
        ws.send(message)


def test_metrics_is_a_plain_dict_with_the_documented_keys():
    m = gws13.metrics()
    assert type(m) is dict and KEYS <= set(m)
    for key in ("handshakes_refused", "closes_by_code", "closes_by_side", "dropped_for_limit"):
        assert type(m[key]) is dict
    json.dumps({k: v for k, v in m.items() if not isinstance(v, dict)})
    assert gws13.metrics() is not gws13.metrics()  # a snapshot each call


@pytest.mark.parametrize("path", ["C", "pure-python"])
def test_figures_move_as_clients_connect_talk_and_close(serve, monkeypatch, path):
    if path == "pure-python":
        # the C small-frame scanner and encoder off: messages are parsed and
        # framed (and counted) by protocol.py's own code
        monkeypatch.setattr(gws13.protocol, "scan_small", None)
        monkeypatch.setattr(gws13.protocol, "frame_small", None)
    elif gws13.protocol.scan_small is None:
        pytest.skip("the C accelerator is not built")
    server = serve(gws13.websocket_app(echo))
    end_earlier_connections()
    before = gws13.metrics()
    clients = [gws13.connect(server.url + "/echo") for _ in range(3)]
    m = wait_until(lambda: (lambda m: m if m["server_connections_open"] == 3 else None)(gws13.metrics()), 5,
                 "three server connections")
    assert m["connections_open"] == 6  # both ends live in this process
    assert m["client_connections_open"] == 3
    assert delta(before, m, "connections_total") == 6 and delta(before, m, "handshakes_accepted") == 3
    for ws in clients:
        for _ in range(10):
            ws.send("x" * 32)
            assert ws.receive(timeout=5) == "x" * 32
    # the server's last write is counted once send() returns, which may be just
    # after this thread got the echo
    wire = 30 * (32 + 2) + 30 * (32 + 6)
    m = wait_until(lambda: (lambda m: m if delta(before, m, "bytes_sent") == wire else None)(gws13.metrics()), 5,
                 "the last write to be counted")
    # 30 messages each way on each side: 60 received, 60 sent
    assert delta(before, m, "messages_received") == 60
    assert delta(before, m, "messages_sent") == 60
    assert delta(before, m, "payload_bytes_received") == 60 * 32
    # wire bytes: 2-byte headers from the server, 6-byte (masked) from the clients
    assert delta(before, m, "bytes_received") == wire
    clients[0].close(1000)
    clients[1].close(4000, "done")
    clients[2].close(1001)
    m = wait_until(lambda: (lambda m: m if m["connections_open"] == 0 else None)(gws13.metrics()), 5,
                 "every connection to close")
    assert delta(before, m, "closes_by_code", 1000) == 2
    assert delta(before, m, "closes_by_code", 4000) == 2
    assert delta(before, m, "closes_by_code", 1001) == 2
    assert delta(before, m, "closes_by_side", "local") == 3   # the clients closed first...
    assert delta(before, m, "closes_by_side", "remote") == 3  # ...as the servers saw it
    # totals of closed connections are kept
    assert delta(before, m, "messages_received") == 60
    assert delta(before, m, "bytes_sent") >= 30 * (32 + 2) + 30 * (32 + 6) + 6 * 2  # plus close frames


def test_refused_handshakes_are_counted_by_status(serve):
    server = serve(gws13.websocket_app(echo, accept_connection=lambda origin: not origin))
    before = gws13.metrics()
    sock, status, _, _ = raw_connect(server.port, version="7")
    sock.close()
    assert status == 426
    sock, status, _, _ = raw_connect(server.port, key="short")
    sock.close()
    assert status == 400
    sock, status, _, _ = raw_connect(server.port, headers={"Origin": "https://elsewhere"})
    sock.close()
    assert status == 403
    m = wait_until(lambda: (lambda m: m if delta(before, m, "handshakes_refused", 403) else None)(gws13.metrics()),
                 5, "the 403")
    assert {s: delta(before, m, "handshakes_refused", s) for s in (400, 403, 426)} == {400: 1, 403: 1, 426: 1}
    assert delta(before, m, "handshakes_accepted") == 0


def test_ws_stats_on_both_sides(serve):
    stats = queue.Queue()

    def app(ws):
        for message in ws:
            ws.send(message)
        stats.put(ws.stats)

    server = serve(gws13.websocket_app(app, compression=None))  # exact wire sizes
    ws = gws13.connect(server.url)
    assert ws.stats["messages_sent"] == 0 and ws.stats["messages_received"] == 0
    ws.send(b"\x00" * 100)
    ws.receive(timeout=5)
    ws.send("héllo")
    ws.receive(timeout=5)
    s = ws.stats
    assert (s["messages_sent"], s["messages_received"]) == (2, 2)
    assert s["payload_bytes_sent"] == 100 + len("héllo".encode())  # UTF-8 bytes for text
    assert s["payload_bytes_received"] == 100 + len("héllo".encode())
    assert s["bytes_received"] == 2 + 100 + 2 + len("héllo".encode())
    assert s["duration"] > 0
    ws.close()
    server_side = stats.get(timeout=5)
    assert (server_side["messages_received"], server_side["messages_sent"]) == (2, 2)
    assert server_side["read_queue_high_water"] >= 1
    assert server_side["payload_bytes_received"] == server_side["payload_bytes_sent"] == 106


def test_compression_shows_in_wire_and_payload_bytes(serve):
    pytest.importorskip("zlib")
    stats = queue.Queue()

    def app(ws):
        for message in ws:
            ws.send(message)
        stats.put(ws.stats)

    server = serve(gws13.websocket_app(app, compression=gws13.Deflate()))
    ws = gws13.connect(server.url, compression=gws13.Deflate())
    assert ws.extensions and "permessage-deflate" in ws.extensions
    for _ in range(5):
        ws.send("abc" * 10_000)
        assert ws.receive(timeout=5) == "abc" * 10_000
    ws.close()
    s = stats.get(timeout=5)
    assert s["payload_bytes_received"] == 5 * 30_000
    assert s["bytes_received"] < s["payload_bytes_received"] / 20  # compressed on the wire
    assert s["bytes_sent"] < s["payload_bytes_sent"] / 20


def test_ping_round_trips_fill_the_histogram_and_unanswered_pings_count_late(serve):
    server = serve(gws13.websocket_app(echo, ping_interval=0.05, connection_timeout=0))
    before = gws13.metrics()
    ws = gws13.connect(server.url)  # gws13's client answers pings in its hub
    raw = RawClient(server.port)     # this one never answers
    m = wait_until(lambda: (lambda m: m if m["ping_rtt"]["count"] - before["ping_rtt"]["count"] >= 3
                          and delta(before, m, "pongs_late") >= 2 else None)(gws13.metrics()), 10,
                 "round trips and late pongs")
    assert delta(before, m, "pings_sent") >= 5
    buckets = m["ping_rtt"]["buckets"]
    assert buckets[-1][0] == float("inf") and buckets[-1][1] == m["ping_rtt"]["count"]
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))  # cumulative
    assert m["ping_rtt"]["sum"] > before["ping_rtt"]["sum"]
    ws.close()
    raw.close()


def test_a_bound_that_ends_a_connection_is_counted(serve):
    server = serve(gws13.websocket_app(echo, max_message_size=1000))
    before = gws13.metrics()
    raw = RawClient(server.port)
    raw.send_frame(OP_BINARY, b"y" * 2000)
    assert raw.read_until_close()[-1].code == 1009
    raw.close()
    m = wait_until(lambda: (lambda m: m if delta(before, m, "dropped_for_limit", "max_message_size") else None)(
        gws13.metrics()), 5, "the count")
    assert delta(before, m, "closes_by_code", 1009) == 1


def test_paused_reads_and_high_water_marks(serve):
    release = queue.Queue()

    def app(ws):
        # read nothing until told: the read queue fills and reading pauses;
        # then send a lot to a client that is not reading: the buffer fills
        deadline = time.monotonic() + 10
        while release.empty() and time.monotonic() < deadline:
            gevent.sleep(0.01)  # (a blocking get would stop the server's hub)
        chunk = b"z" * 1_000_000
        for _ in range(100):  # until the kernel's buffers are full and gws13's holds the rest
            ws.send(chunk)
            if ws.buffered_amount:
                break
        for _ in ws:
            pass

    server = serve(gws13.websocket_app(app, max_queue=2, write_limit=1 << 16))
    before = gws13.metrics()
    raw = RawClient(server.port)

    def paused():
        # the pause is decided when more input comes after the queue is full
        raw.send_frame(OP_TEXT, b"m" * 100)
        m = gws13.metrics()
        return m if delta(before, m, "reads_paused") >= 1 else None

    m = wait_until(paused, 5, "a paused read")
    assert m["read_queue_high_water"] >= 2
    release.put(True)
    m = wait_until(lambda: (lambda m: m if m["write_buffer_high_water"] >= 1 << 16 else None)(gws13.metrics()),
                 5, "the write buffer to fill")
    raw.close()


def test_hub_broadcasts_count_as_sent(serve):
    hub = gws13.Hub()
    ready = queue.Queue()

    def app(ws):
        hub.join(ws, "room")
        ready.put(True)
        for _ in ws:
            pass

    server = serve(gws13.websocket_app(app))
    ws = gws13.connect(server.url)
    ready.get(timeout=5)
    before = gws13.metrics()
    for i in range(7):
        server.call(hub.publish, "room", f"m{i}")
    for i in range(7):
        assert ws.receive(timeout=5) == f"m{i}"
    m = wait_until(lambda: (lambda m: m if delta(before, m, "messages_sent") >= 7 else None)(gws13.metrics()),
                 5, "the server's count")
    assert delta(before, m, "messages_sent") == 7 and delta(before, m, "messages_received") == 7
    assert delta(before, m, "payload_bytes_sent") == 14
    ws.close()
