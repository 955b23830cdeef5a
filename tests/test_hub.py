"""gws13.Hub in one process: rooms, publish, automatic leave, slow-client
policies, publisher latency, stats, publishing from other threads."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from urllib.parse import parse_qs, quote

import gevent
import pytest
import websocket

import gws13
from gws13.protocol import Close, Message, Protocol

from conftest import read_response_head

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True, params=["C", "Python"])
def delivery(request, monkeypatch):
    """Every test runs twice: with the broadcast loop of the C extension and
    with the pure-Python one (installs without the extension, Windows)."""
    if request.param == "C":
        if gws13.hub._fanout is None:
            pytest.skip("no C broadcast loop here (built without the extension, or Windows)")
    else:
        monkeypatch.setattr(gws13.hub, "_fanout", None)
    return request.param


def wait_for(predicate, timeout=5.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def room_app(hub, rooms=("r",), send_buffer=None):
    """Each WebSocket joins ``rooms`` (or ``?room=a,b``), gets "joined", then
    every text message it sends is a JSON command:
    {"op": "publish", "room": R, "data": D, "binary": bool}
    {"op": "burst", "room": R, "count": N, "size": S} -> replies {"max": s, "median": s}
    {"op": "leave", "room": R}  {"op": "echo", "data": D}."""

    def proc(ws):
        query = parse_qs(ws.environ.get("QUERY_STRING", ""))
        names = query["room"][0].split(",") if "room" in query else rooms
        if send_buffer and "slow" in query:  # a small kernel buffer: the hub queue fills fast
            ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        for name in names:
            hub.join(ws, name)
        ws.send("joined")
        for text in ws:
            cmd = json.loads(text)
            op = cmd["op"]
            if op == "publish":
                data = cmd["data"]
                hub.publish(cmd["room"], data.encode() if cmd.get("binary") else data)
            elif op == "burst":
                times = []
                for i in range(cmd["count"]):
                    message = f"{i:08d}".ljust(cmd["size"], ".")
                    t0 = time.perf_counter()
                    hub.publish(cmd["room"], message)
                    times.append(time.perf_counter() - t0)
                    if i % 16 == 15:
                        gevent.sleep(0)  # let the sockets drain as a real app would
                times.sort()
                ws.send(json.dumps({"max": times[-1], "median": times[len(times) // 2]}))
            elif op == "leave":
                hub.leave(ws, cmd["room"])
                ws.send("left")
            elif op == "echo":
                ws.send(cmd["data"])

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/stats":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(hub.stats()).encode()]
        return gws13.with_websocket(environ, start_response, proc)

    return app


def client(server, room=None, **kwargs):
    url = server.url + "/" + (f"?room={quote(room)}" if room else "")
    ws = websocket.create_connection(url, timeout=5, **kwargs)
    assert ws.recv() == "joined"
    return ws


def cmd(ws, **command):
    ws.send(json.dumps(command))


class SlowClient:
    """A raw client with a tiny receive buffer that reads nothing until told."""

    def __init__(self, port, path="/?slow=1"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        status, _, rest = read_response_head(sock)
        assert status == 101
        self.sock = sock
        self.proto = Protocol(client=True, max_frame_size=2 ** 24, max_message_size=2 ** 24)
        self.events = list(self.proto.receive_data(rest)) if rest else []

    def read_all(self, timeout=10.0):
        """Every event until the close frame or EOF."""
        self.sock.settimeout(timeout)
        out = self.events
        while not out or not isinstance(out[-1], Close):
            try:
                data = self.sock.recv(1 << 16)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            out += self.proto.receive_data(data)
        return out

    def close(self):
        self.sock.close()


# -- membership -------------------------------------------------------------------
def test_join_leave_members_rooms_and_automatic_leave(serve):
    hub = gws13.Hub()
    server = serve(room_app(hub))
    a = client(server, "x,y")
    b = client(server, "y")
    assert sorted(hub.rooms) == ["x", "y"]
    assert len(hub.members("x")) == 1 and len(hub.members("y")) == 2
    assert hub.members("nope") == []
    member_a = hub.members("x")[0]
    assert hub.rooms_of(member_a) == ["x", "y"]
    cmd(a, op="leave", room="x")
    assert a.recv() == "left"
    assert hub.rooms == ["y"] and hub.members("x") == []
    b.close()
    assert wait_for(lambda: len(hub.members("y")) == 1)
    a.close()
    assert wait_for(lambda: hub.rooms == [])
    assert hub.stats()["connections"] == 0


def test_join_closed_socket_is_refused(serve):
    gws13.parameters.close_timeout = 0.2
    hub = gws13.Hub()
    seen = {}

    def proc(ws):
        ws.close()
        seen["joined"] = hub.join(ws, "r")

    server = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    ws = websocket.create_connection(server.url, timeout=5)
    assert wait_for(lambda: "joined" in seen)
    assert seen["joined"] is False and hub.rooms == []
    ws.close()


def test_join_accepts_a_pending_websocket(serve):
    # handler style: the WebSocket in the environ is accepted by its first use, here join
    hub = gws13.Hub()

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        hub.join(ws, "r")
        for text in ws:
            hub.publish("r", text)
        return []

    server = serve(app)
    a = websocket.create_connection(server.url, timeout=5)
    b = websocket.create_connection(server.url, timeout=5)
    assert wait_for(lambda: len(hub.members("r")) == 2)
    a.send("hi")
    assert a.recv() == "hi" and b.recv() == "hi"
    a.close()
    b.close()


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        gws13.Hub(policy="ignore")
    with pytest.raises(ValueError):
        gws13.Hub(queue_size=0)
    with pytest.raises(ValueError):
        gws13.Hub(close_code=1000)
    with pytest.raises(ValueError):
        gws13.Hub("amqp://localhost")
    hub = gws13.Hub(close_code=1013)
    with pytest.raises(TypeError):
        hub.publish("r", 42)
    with pytest.raises(TypeError):
        hub.publish(1, "x")
    with pytest.raises(UnicodeDecodeError):
        hub.publish("r", b"\xff", binary=False)
    hub.publish("empty", "nobody listens")  # no member: nothing happens
    assert hub.stats()["published"] == 1


# -- publishing ---------------------------------------------------------------------
def test_publish_reaches_the_room_only_text_and_binary(serve):
    hub = gws13.Hub()
    server = serve(room_app(hub))
    xs = [client(server, "x") for _ in range(3)]
    ys = [client(server, "y") for _ in range(2)]
    cmd(ys[0], op="publish", room="x", data="hello x")
    for ws in xs:
        assert ws.recv() == "hello x"
    cmd(xs[0], op="publish", room="x", data="bin", binary=True)
    for ws in xs:
        assert ws.recv() == b"bin"
    cmd(xs[1], op="publish", room="y", data="hello y")
    for ws in ys:
        assert ws.recv() == "hello y"
    for ws in xs:  # nothing for room y arrived in room x
        cmd(ws, op="echo", data="probe")
        assert ws.recv() == "probe"
    stats = hub.stats()
    assert stats["published"] == 3 and stats["delivered"] == 3 * 2 + 2
    assert stats["rooms"] == {"x": 3, "y": 2} and stats["connections"] == 5
    for ws in xs + ys:
        ws.close()


def test_publish_from_another_thread_and_many_messages_in_order(serve):
    # the test's thread is not the server's: publish hands over to the server's hub
    hub = gws13.Hub()
    server = serve(room_app(hub))
    clients = [client(server) for _ in range(4)]
    for i in range(500):
        hub.publish("r", f"m{i}")
    for ws in clients:
        assert [ws.recv() for _ in range(500)] == [f"m{i}" for i in range(500)]
    # and from a thread that has no gevent hub at all
    t = threading.Thread(target=hub.publish, args=("r", b"\x01\x02"))
    t.start()
    t.join()
    for ws in clients:
        assert ws.recv() == b"\x01\x02"
        ws.close()


def test_application_sends_and_hub_messages_do_not_interleave(serve):
    # the application writes its own large frames while the hub publishes to
    # the same socket: every frame must arrive whole and valid
    hub = gws13.Hub(queue_size=10000)
    big = "B" * 100000

    def proc(ws):
        hub.join(ws, "r")
        ws.send("joined")
        sender = gevent.spawn(lambda: [ws.send(big) for _ in range(10)])
        for i in range(2000):
            hub.publish("r", f"hub{i}")
            if i % 50 == 0:
                gevent.sleep(0)
        sender.join()
        ws.send("end")
        ws.receive()

    server = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    ws = websocket.create_connection(server.url, timeout=10)
    assert ws.recv() == "joined"
    got_hub, got_big = [], 0
    while True:
        message = ws.recv()
        if message == "end":
            break
        if message == big:
            got_big += 1
        else:
            got_hub.append(message)
    assert got_big == 10
    assert got_hub == [f"hub{i}" for i in range(2000)]
    ws.close()


def test_fan_out_to_compressed_connections(serve):
    # permessage-deflate keeps a compression context per connection: each
    # member gets its own encoding, in wire order, even when sockets block
    hub = gws13.Hub(queue_size=10000)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()

    def text(tag, i):
        return f"{tag}:{i}:" + " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(300))

    def proc(ws):
        ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        hub.join(ws, "r")
        ws.send("joined")
        if ws.receive() == "go":
            publishers = [gevent.spawn(lambda t=t: [hub.publish("r", text(t, i)) or gevent.sleep(0)
                                                    for i in range(200)]) for t in "AB"]
            gevent.joinall(publishers)
        ws.receive()

    server = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    clients = [gws13.connect(server.url, timeout=5) for _ in range(3)]
    assert all(ws.extensions and "permessage-deflate" in ws.extensions for ws in clients)
    for ws in clients:
        assert ws.receive() == "joined"
    assert wait_for(lambda: len(hub.members("r")) == 3)
    clients[0].send("go")
    time.sleep(0.2)  # let the server's buffers fill
    for ws in clients:
        got = {"A": [], "B": []}
        for _ in range(400):
            message = ws.receive(timeout=10)
            tag, i, _ = message.split(":", 2)
            assert message == text(tag, int(i))
            got[tag].append(int(i))
        assert got == {"A": list(range(200)), "B": list(range(200))}
        ws.close()


@pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")
def test_fan_out_over_tls(serve, tmp_path):
    # TLS sockets have no raw fd to write to from the publisher: the sender greenlet does it
    import ssl
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    keyfile, certfile = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    hub = gws13.Hub()
    server = serve(room_app(hub), keyfile=str(keyfile), certfile=str(certfile))
    url = f"wss://127.0.0.1:{server.port}/"
    clients = [gws13.connect(url, ssl_context=context, timeout=5) for _ in range(3)]
    for ws in clients:
        assert ws.receive(timeout=5) == "joined"
    for i in range(100):
        hub.publish("r", f"tls{i}")
    for ws in clients:
        assert [ws.receive(timeout=5) for _ in range(100)] == [f"tls{i}" for i in range(100)]
        ws.close()
    assert hub.stats()["delivered"] == 300


# -- slow clients -----------------------------------------------------------------
def burst(server, room, count, size):
    """Ask the server to publish ``count`` messages; return publish() timings."""
    ctl = client(server, "control")
    cmd(ctl, op="burst", room=room, count=count, size=size)
    timings = json.loads(ctl.recv())
    ctl.close()
    return timings


def read_fast_clients(fast, count):
    for ws in fast:
        got = [ws.recv() for _ in range(count)]
        assert [int(m[:8]) for m in got] == list(range(count))


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest"])
def test_drop_policies_count_every_message(serve, policy):
    hub = gws13.Hub(queue_size=8, policy=policy)
    server = serve(room_app(hub, send_buffer=4096))
    fast = [client(server) for _ in range(2)]
    slow = SlowClient(server.port)
    assert wait_for(lambda: len(hub.members("r")) == 3)
    count = 400
    timings = burst(server, "r", count, 1024)
    read_fast_clients(fast, count)
    stats = hub.stats()
    dropped = stats["dropped_oldest"] if policy == "drop-oldest" else stats["dropped_newest"]
    assert dropped > 0 and stats["closed_slow"] == 0
    assert stats["queue_high_water"] == 8
    # the slow client catches up: it has every message not dropped, in order
    slow.sock.settimeout(5)
    got = []
    while len(got) < count - dropped:
        for event in slow.proto.receive_data(slow.sock.recv(1 << 16)):
            if event.data != "joined":
                got.append(int(event.data[:8]))
    assert got == sorted(got) and len(set(got)) == len(got) == count - dropped
    if policy == "drop-oldest":
        assert got[-1] == count - 1  # the newest always survives
    else:
        assert got[0] == 0 and got[-1] < count - 1
    assert timings["max"] < 0.1, timings
    slow.close()
    for ws in fast:
        ws.close()


def test_close_policy_closes_the_slow_client_with_1008(serve):
    gws13.parameters.close_timeout = 5
    hub = gws13.Hub(queue_size=8)
    server = serve(room_app(hub, send_buffer=4096))
    fast = [client(server) for _ in range(2)]
    slow = SlowClient(server.port)
    assert wait_for(lambda: len(hub.members("r")) == 3)
    count = 400
    timings = burst(server, "r", count, 1024)
    read_fast_clients(fast, count)  # the others are not held up
    stats = hub.stats()
    assert stats["closed_slow"] == 1
    assert len(hub.members("r")) == 2  # it left its rooms at once
    events = slow.read_all()
    messages = [int(e.data[:8]) for e in events if isinstance(e, Message) and e.data != "joined"]
    assert messages == list(range(len(messages))) and len(messages) < count
    assert isinstance(events[-1], Close), events[-3:]
    assert events[-1].code == 1008 and "slow" in events[-1].reason
    assert timings["max"] < 0.1, timings
    slow.close()
    for ws in fast:
        ws.close()


def test_close_policy_drops_a_peer_that_never_reads(serve):
    gws13.parameters.close_timeout = 0.5
    hub = gws13.Hub(queue_size=4, close_code=1013)
    server = serve(room_app(hub, send_buffer=4096))
    slow = SlowClient(server.port)
    fast = client(server)
    assert wait_for(lambda: len(hub.members("r")) == 2)
    timings = burst(server, "r", 300, 2048)
    read_fast_clients([fast], 300)
    assert hub.stats()["closed_slow"] == 1
    # it never read: after close_timeout its TCP connection is gone
    assert wait_for(lambda: hub.stats()["connections"] == 1)
    time.sleep(1.5)
    events = slow.read_all(timeout=3)
    assert not any(isinstance(e, Message) and e.data.startswith("00000299") for e in events)
    assert timings["max"] < 0.1
    slow.close()
    fast.close()


def test_publisher_latency_is_not_affected_by_a_slow_client(serve):
    hub = gws13.Hub(queue_size=64, policy="drop-oldest")
    server = serve(room_app(hub, send_buffer=4096))
    fast = [client(server) for _ in range(3)]
    baseline = burst(server, "r", 300, 1024)
    read_fast_clients(fast, 300)
    slow = SlowClient(server.port)
    assert wait_for(lambda: len(hub.members("r")) == 4)
    with_slow = burst(server, "r", 300, 1024)
    read_fast_clients(fast, 300)
    assert hub.stats()["dropped_oldest"] > 0
    # a publish costs microseconds either way; allow for scheduling noise
    assert with_slow["median"] < max(10 * baseline["median"], 0.002), (baseline, with_slow)
    assert with_slow["max"] < 0.1
    slow.close()
    for ws in fast:
        ws.close()


# -- metrics ------------------------------------------------------------------------
def test_stats_and_metrics_text(serve):
    hub = gws13.Hub(queue_size=16, policy="drop-newest")
    server = serve(room_app(hub))
    a = client(server, 'lobby,we"ird')
    b = client(server, "lobby")
    cmd(a, op="publish", room="lobby", data="x")
    assert a.recv() == "x" and b.recv() == "x"
    # the server thread counts a delivery just after the bytes left: they can arrive first
    wait_for(lambda: hub.stats()["delivered"] >= 2)
    stats = hub.stats()
    assert stats["backend"] == "local" and stats["policy"] == "drop-newest"
    assert stats["rooms"] == {"lobby": 2, 'we"ird': 1}
    assert stats["published"] == 1 and stats["delivered"] == 2 and stats["queued"] == 0
    text = hub.metrics_text()
    assert "gws13_hub_connections 2\n" in text
    assert 'gws13_hub_room_members{room="lobby"} 2\n' in text
    assert 'gws13_hub_room_members{room="we\\"ird"} 1\n' in text
    assert "gws13_hub_delivered_total 2\n" in text
    assert 'gws13_hub_policy_drops_total{policy="drop-newest"} 0\n' in text
    assert 'gws13_hub_policy_closes_total{policy="close"} 0\n' in text
    a.close()
    b.close()


def test_every_delivery_is_counted_on_its_connection(serve, delivery, monkeypatch):
    offered = []
    plain_offer = gws13.Hub._offer
    monkeypatch.setattr(gws13.Hub, "_offer", lambda self, member, item: (offered.append(member),
                                                                         plain_offer(self, member, item)))
    hub = gws13.Hub()
    server = serve(room_app(hub))
    people = [client(server) for _ in range(20)]
    sizes = [0, 1, 125, 126, 5000, 70000]
    for size in sizes:
        cmd(people[0], op="publish", room="r", data="é" * (size // 2) + "x" * (size % 2))
    for ws in people:
        assert [len(ws.recv().encode()) for _ in sizes] == sizes
    frames = sum(size + 2 + (2 if 126 <= size < 65536 else 8 if size >= 65536 else 0) for size in sizes)
    members = hub.members("r")
    # the server counts a delivery just after the bytes left: they can arrive first
    assert wait_for(lambda: hub.stats()["delivered"] == 20 * len(sizes))
    for ws in members:
        stats = ws.stats
        assert stats["messages_sent"] == 1 + len(sizes)  # "joined" first
        assert stats["payload_bytes_sent"] == len("joined") + sum(sizes)
        assert stats["bytes_sent"] == 2 + len("joined") + frames
    # the C loop writes to every plain connection itself; the Python one offers each
    assert len(offered) == (0 if delivery == "C" else 20 * len(sizes))
    for ws in people:
        ws.close()


def test_a_frame_the_socket_takes_in_part_is_finished_by_the_writer(serve, monkeypatch):
    parts = []
    plain = gws13.WebSocket._sent_part
    monkeypatch.setattr(gws13.WebSocket, "_sent_part", lambda self, pieces, sent: (parts.append(sent),
                                                                                    plain(self, pieces, sent)))
    hub = gws13.Hub()
    server = serve(room_app(hub, send_buffer=4096))
    slow = SlowClient(server.port)
    publisher = client(server, "other")
    big = "".join(chr(33 + i % 90) for i in range(300_000))  # far more than the kernel takes at once
    cmd(publisher, op="publish", room="r", data=big)
    cmd(publisher, op="publish", room="r", data="after")
    slow.sock.settimeout(10)
    events = slow.events
    while len([e for e in events if isinstance(e, Message)]) < 3:  # "joined", the big one, "after"
        data = slow.sock.recv(1 << 16)
        assert data, "the server closed the connection"
        events += slow.proto.receive_data(data)
    messages = [e.data for e in events if isinstance(e, Message)]
    assert messages == ["joined", big, "after"]
    assert parts and 0 <= parts[0] < len(big)  # the first write took part of the frame
    slow.close()
    publisher.close()


# -- the examples -------------------------------------------------------------------
def _load_example(name):
    import importlib.util
    path = os.path.join(HERE, os.pardir, "examples", name)
    if not os.path.exists(path):
        pytest.skip(f"examples/{name} is not there")
    spec = importlib.util.spec_from_file_location(f"example_{name[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chat_example_fans_out_through_the_hub(serve):
    chat = _load_example("chat.py")
    if not hasattr(chat, "hub"):
        pytest.skip("examples/chat.py does not use the hub")
    server = serve(chat.app)
    a = websocket.create_connection(server.url + "/ws", timeout=5)
    welcome = json.loads(a.recv())
    assert welcome["type"] == "welcome"
    b = websocket.create_connection(server.url + "/ws", timeout=5)
    assert json.loads(b.recv())["type"] == "welcome"
    while json.loads(a.recv())["type"] != "notice":  # "guest-N joined"
        pass
    a.send("hello everyone")
    for ws in (a, b):
        while True:
            msg = json.loads(ws.recv())
            if msg["type"] == "message":
                break
        assert msg["text"] == "hello everyone" and msg["name"] == welcome["name"]
    import urllib.request
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    assert "gws13_hub_connections 2" in text
    a.close()
    b.close()


def test_metrics_example(serve):
    metrics = _load_example("metrics.py")
    server = serve(metrics.app)
    a = websocket.create_connection(server.url + "/ws?room=demo", timeout=5)
    a.send("ping")
    assert a.recv() == "ping"
    import urllib.request
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    assert 'gws13_hub_room_members{room="demo"} 1' in text
    assert "gws13_hub_delivered_total 1" in text
    a.close()
