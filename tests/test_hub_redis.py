"""gws13.Hub over a real Redis: fan-out across gunicorn workers and separate
server processes ("machines"), exactly once and in order per publisher, and
recovery when redis-server is killed and restarted mid-stream.

Each test starts its own ``redis-server`` on an ephemeral loopback port and
skips when the binary is missing (``apt-get install redis-server``).

This module is also the application under test: gunicorn loads
``test_hub_redis:app`` and ``python tests/test_hub_redis.py --port N`` runs it
on gevent.pywsgi (without monkey patching) as a separate "machine".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import Dict, List, Optional
from urllib.parse import parse_qs

import gevent

import gws13

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REDIS_SERVER = shutil.which("redis-server")

# -- the application under test (runs in the server processes) ---------------------
_hub: Optional[gws13.Hub] = None


def get_hub() -> gws13.Hub:
    """The process's hub, created on first use (after gunicorn forks)."""
    global _hub
    if _hub is None:
        _hub = gws13.Hub(os.environ["GWS13_HUB_URL"],
                         redis_options={"ping_interval": 1.0, "max_backoff": 0.2})
    return _hub


def _stream(ws, hub: gws13.Hub, room: str, tag: str, count: int, interval: float) -> None:
    started = time.monotonic()
    slowest = 0.0
    for i in range(count):
        t0 = time.perf_counter()
        hub.publish(room, f"{tag}:{i}")
        slowest = max(slowest, time.perf_counter() - t0)
        gevent.sleep(interval)
    ws.send(json.dumps({"streamed": count, "seconds": time.monotonic() - started, "slowest": slowest}))


def _session(ws) -> None:
    hub = get_hub()
    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    for room in query.get("room", ["r"])[0].split(","):
        hub.join(ws, room)
    ready = hub.wait_ready(10)
    ws.send(json.dumps({"ready": ready, "pid": os.getpid()}))
    for text in ws:
        cmd = json.loads(text)
        op = cmd["op"]
        if op == "publish":
            for data in cmd["data"]:
                hub.publish(cmd["room"], data.encode() if cmd.get("binary") else data)
        elif op == "stream":
            gevent.spawn(_stream, ws, hub, cmd["room"], cmd["tag"], cmd["count"], cmd["interval"])
        elif op == "stats":
            ready = hub.wait_ready(cmd.get("timeout", 0))
            ws.send(json.dumps(dict(hub.stats(), ready=ready, pid=os.getpid())))


def app(environ, start_response):
    """``/ws?room=a,b``: join, say {"ready", "pid"}, then obey JSON commands;
    ``/stats``: the hub's stats as JSON."""
    if environ.get("PATH_INFO") == "/stats":
        body = json.dumps(dict(get_hub().stats(), pid=os.getpid())).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return gws13.with_websocket(environ, start_response, _session)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from gevent import pywsgi
    server = pywsgi.WSGIServer(("127.0.0.1", args.port), app, handler_class=gws13.WebSocketHandler,
                               log=None)
    server.serve_forever()


if __name__ == "__main__":
    main()
    sys.exit(0)

# -- the tests (run in pytest's process) -------------------------------------------
import pytest  # noqa: E402

pytest.importorskip("redis", reason="the redis package is not installed (pip install redis)")
websocket = pytest.importorskip("websocket")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server is not installed (apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A redis-server of our own on a loopback port (no persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 10, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


class Processes:
    """Server processes started by a test, stopped (by pid) at its end."""

    def __init__(self, redis_url: str) -> None:
        self.env = dict(os.environ, GWS13_HUB_URL=redis_url,
                        PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]))
        self.procs: List[subprocess.Popen] = []

    def _wait_http(self, proc: subprocess.Popen, port: int) -> None:
        def up():
            assert proc.poll() is None, "server process exited"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
                return r.status == 200
        wait_until(up, 30, what=f"server on port {port}")

    def pywsgi(self) -> int:
        """A standalone gevent.pywsgi process (a second "machine")."""
        port = free_port()
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "test_hub_redis.py"), "--port", str(port)],
                                env=self.env, cwd=ROOT)
        self.procs.append(proc)
        self._wait_http(proc, port)
        return port

    def gunicorn(self, workers: int = 2) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "gws13.gunicorn.GeventWebSocketWorker",
             "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", "--log-level", "warning",
             "test_hub_redis:app"], env=self.env, cwd=ROOT)
        self.procs.append(proc)
        self._wait_http(proc, port)
        return port

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def processes(redis_server):
    procs = Processes(redis_server.url)
    yield procs
    procs.stop()


class Client:
    """A websocket-client connection to the test app."""

    def __init__(self, port: int, rooms: str = "r") -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?room={rooms}", timeout=15)
        hello = json.loads(self.ws.recv())
        assert hello["ready"], "the hub did not get ready"
        self.pid = hello["pid"]
        self.port = port
        self.control: List[dict] = []  # JSON replies that arrived among room messages
        self.pending: List = []  # room messages that arrived while waiting for a reply

    def send(self, **cmd) -> None:
        self.ws.send(json.dumps(cmd))

    def recv_message(self, timeout: float = 15.0):
        """The next room message (JSON control replies are set aside)."""
        if self.pending:
            return self.pending.pop(0)
        self.ws.settimeout(timeout)
        while True:
            message = self.ws.recv()
            if isinstance(message, str) and message.startswith("{"):
                self.control.append(json.loads(message))
                continue
            return message

    def recv_control(self, key: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, reply in enumerate(self.control):
                if key in reply:
                    return self.control.pop(i)
            self.ws.settimeout(max(deadline - time.monotonic(), 0.01))
            message = self.ws.recv()
            if isinstance(message, str) and message.startswith("{"):
                self.control.append(json.loads(message))
            else:
                self.pending.append(message)

    def stats(self, timeout: float = 10.0) -> dict:
        self.send(op="stats", timeout=timeout)
        return self.recv_control("published", timeout + 5)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


def spread_over_workers(port: int, workers: int = 2, per_worker: int = 2, rooms: str = "r",
                        limit: int = 60) -> List[Client]:
    """Connect to a gunicorn port until ``per_worker`` clients sit on each of
    ``workers`` distinct worker processes."""
    clients: List[Client] = []
    by_pid: Dict[int, int] = {}
    while len(by_pid) < workers or min(by_pid.values()) < per_worker:
        if len(clients) >= limit:
            raise AssertionError(f"connections did not spread over {workers} workers: {by_pid}")
        c = Client(port, rooms)
        clients.append(c)
        by_pid[c.pid] = by_pid.get(c.pid, 0) + 1
    return clients


def first_per_pid(clients: List[Client]) -> List[Client]:
    seen: Dict[int, Client] = {}
    for c in clients:
        seen.setdefault(c.pid, c)
    return list(seen.values())


def parse(message: str):
    tag, _, index = message.rpartition(":")
    return tag, index


# -- in one process: two hubs in two server threads --------------------------------
def test_two_hubs_share_rooms_through_redis(serve, redis_server):
    import redis as redis_py
    hubs = [gws13.Hub(redis_server.url), gws13.Hub(redis_server.url)]

    def make_app(hub):
        def proc(ws):
            hub.join(ws, "r")
            hub.wait_ready(10)
            ws.send("ready")
            for text in ws:
                hub.publish("r", text)
        return lambda e, s: gws13.with_websocket(e, s, proc)

    servers = [serve(make_app(hub)) for hub in hubs]
    clients = []
    for server in servers:
        for _ in range(2):
            ws = websocket.create_connection(server.url, timeout=10)
            assert ws.recv() == "ready"
            clients.append(ws)
    clients[0].send("from 0")
    assert [ws.recv() for ws in clients] == ["from 0"] * 4
    # from the test's thread (no gevent hub running here), binary
    hubs[1].publish("r", b"\x00\xffbin")
    assert [ws.recv() for ws in clients] == [b"\x00\xffbin"] * 4
    # a plain Redis client can publish too: UTF-8 arrives as text
    r = redis_py.Redis(port=redis_server.port)
    assert r.publish("gws13:r", "from redis-cli") == 2
    r.publish("gws13:r", b"\xff\xfe")
    assert [ws.recv() for ws in clients] == ["from redis-cli"] * 4
    assert [ws.recv() for ws in clients] == [b"\xff\xfe"] * 4
    r.close()
    for hub in hubs:
        stats = hub.stats()
        assert stats["backend"] == "redis" and stats["subscribed"] and stats["duplicates"] == 0
        assert stats["rooms"] == {"r": 2}
        assert "gws13_hub_redis_connected 1" in hub.metrics_text()
    assert hubs[0].stats()["published"] == 1 and hubs[1].stats()["published"] == 1
    for ws in clients:
        ws.close()
    for hub in hubs:
        hub.close()


def test_a_batch_sent_twice_is_delivered_once(serve, redis_server):
    # the reply to a pipeline of PUBLISH commands is lost: the publisher cannot
    # know whether Redis got them and sends them again; subscribers drop the repeats
    import redis as redis_py
    from gws13.redis_backend import _GeventConnection

    lost = []

    class LosesFirstReply(_GeventConnection):
        def read_response(self, *args, **kwargs):
            reply = super().read_response(*args, **kwargs)
            if isinstance(reply, int) and not lost:  # the first PUBLISH reply
                lost.append(reply)
                raise redis_py.exceptions.ConnectionError("reply lost (simulated)")
            return reply

    hub = gws13.Hub(redis_server.url)
    hub._backend._connection_class = LosesFirstReply

    def proc(ws):
        hub.join(ws, "r")
        hub.wait_ready(10)
        ws.send("ready")
        for text in ws:
            for i in range(5):
                hub.publish("r", f"{text}{i}")  # one batch: no yield in between

    server = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    clients = [websocket.create_connection(server.url, timeout=10) for _ in range(2)]
    for ws in clients:
        assert ws.recv() == "ready"
    clients[0].send("m")
    clients[0].send("end")
    for ws in clients:
        assert [ws.recv() for _ in range(10)] == [f"m{i}" for i in range(5)] + [f"end{i}" for i in range(5)]
    # the first batch (all ten, or the first five) comes back from Redis a second time...
    wait_until(lambda: hub.stats()["outbox"] == 0 and hub.stats()["duplicates"] >= 5, 10,
               what="the batch to be sent again")
    assert lost and hub.stats()["errors"] >= 1
    # ... and is not delivered again: the next message anyone gets is the probe
    clients[1].send("probe")
    for ws in clients:
        assert ws.recv() == "probe0"
    for ws in clients:
        ws.close()
    hub.close()


def test_publish_never_blocks_while_redis_is_down(serve, redis_server):
    hub = gws13.Hub(redis_server.url, redis_options={"ping_interval": 0.5, "max_backoff": 0.1})
    timings = []

    def proc(ws):
        hub.join(ws, "r")
        hub.wait_ready(10)
        ws.send("ready")
        for text in ws:
            t0 = time.perf_counter()
            for i in range(50):
                hub.publish("r", f"{text}{i}")
            timings.append(time.perf_counter() - t0)
            ws.send("published")

    server = serve(lambda e, s: gws13.with_websocket(e, s, proc))
    ws = websocket.create_connection(server.url, timeout=10)
    assert ws.recv() == "ready"
    redis_server.kill()
    wait_until(lambda: not hub.ready, 10, what="the hub to notice the outage")
    ws.send("down")
    assert ws.recv() == "published"
    assert timings[-1] < 0.1
    assert hub.stats()["errors"] >= 1
    redis_server.start()
    wait_until(lambda: hub.ready, 10, what="the hub to resubscribe")
    ws.send("up")
    messages = []
    while not (messages and messages[-1] == "up49"):
        messages.append(ws.recv())
    assert [m for m in messages if m.startswith("up")] == [f"up{i}" for i in range(50)]
    assert len(set(messages)) == len(messages)  # whatever survived of "down" came once
    stats = hub.stats()
    assert stats["reconnects"] >= 1 and stats["subscribed"]
    ws.close()
    hub.close()


def test_slow_client_through_redis(serve, redis_server):
    # the policy applies to messages that come from Redis just the same
    from test_hub import SlowClient, burst, client, read_fast_clients, room_app
    from gws13.protocol import Close, Message
    gws13.parameters.close_timeout = 5
    hub = gws13.Hub(redis_server.url, queue_size=8)
    server = serve(room_app(hub, send_buffer=4096))
    fast = [client(server)]
    wait_until(lambda: hub.ready, 10, what="the subscription")
    fast.append(client(server))
    slow = SlowClient(server.port)
    wait_until(lambda: len(hub.members("r")) == 3, 5, what="three members")
    timings = burst(server, "r", 400, 1024)
    read_fast_clients(fast, 400)
    assert timings["max"] < 0.05, timings  # a publish only queues for the publisher greenlet
    stats = hub.stats()
    assert stats["closed_slow"] == 1 and stats["published"] == 400 and stats["duplicates"] == 0
    events = slow.read_all()
    assert isinstance(events[-1], Close) and events[-1].code == 1008
    got = [int(e.data[:8]) for e in events if isinstance(e, Message) and e.data != "joined"]
    assert got == list(range(len(got))) and len(got) < 400
    slow.close()
    for ws in fast:
        ws.close()
    hub.close()


# -- nothing promised is lost: close() and reconnection ------------------------------
def gevent_wait(predicate, timeout: float = 10.0, what: str = "condition"):
    """wait_until for hubs owned by the test's thread: their greenlets only
    run while this thread waits in gevent."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.01)


def member_app(hub: gws13.Hub, room: str = "r"):
    """Join ``room``, say "ready" once subscribed, publish what the client
    sends as "<text>0".."<text>4" (one go, no yield in between)."""
    def proc(ws):
        hub.join(ws, room)
        hub.wait_ready(10)
        ws.send("ready")
        for text in ws:
            for i in range(5):
                hub.publish(room, f"{text}{i}")
    return lambda e, s: gws13.with_websocket(e, s, proc)


def test_close_sends_what_publish_accepted_to_another_process(processes, redis_server):
    # row 17: a script publishes 5 messages and closes its hub at once
    machine = processes.pywsgi()
    receiver = Client(machine, "r")
    script = textwrap.dedent("""
        import json, sys, time, gws13
        hub = gws13.Hub(sys.argv[1])
        for i in range(5):
            hub.publish("r", f"m{i}")
        t0 = time.monotonic()
        hub.close()
        print(json.dumps(dict(hub.stats(), seconds=time.monotonic() - t0)))
    """)
    out = subprocess.run([sys.executable, "-c", script, redis_server.url], env=processes.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["published"] == 5 and stats["outbox"] == 0 and stats["close_dropped"] == 0, stats
    assert stats["seconds"] < 5, stats
    assert [receiver.recv_message(10) for _ in range(5)] == [f"m{i}" for i in range(5)]
    receiver.close()


def test_close_from_another_thread_delivers_here_and_elsewhere(serve, redis_server):
    closing, other = gws13.Hub(redis_server.url), gws13.Hub(redis_server.url)
    servers = [serve(member_app(closing)), serve(member_app(other))]
    members = [websocket.create_connection(server.url, timeout=10) for server in servers]
    for ws in members:
        assert ws.recv() == "ready"
    # from the test's thread: handed to the owner's hub, then closed at once
    for i in range(5):
        closing.publish("r", f"c{i}")
    closing.close()
    assert closing.stats()["close_dropped"] == 0 and closing.stats()["outbox"] == 0
    # the closing hub's own member got them too: close waited for them to come back
    for ws in members:
        assert [ws.recv() for _ in range(5)] == [f"c{i}" for i in range(5)]
    for ws in members:
        ws.close()
    other.close()


def test_close_with_redis_down_returns_within_the_timeout_and_counts_the_loss(redis_server):
    hub = gws13.Hub(redis_server.url, redis_options={"ping_interval": 0.5, "max_backoff": 0.1})
    assert hub.wait_ready(10)  # owned by this thread's hub
    redis_server.kill()
    gevent_wait(lambda: not hub.ready, 10, "the hub to notice the outage")
    for i in range(5):
        hub.publish("r", f"lost{i}")
    t0 = time.monotonic()
    hub.close(timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 2.5, elapsed
    stats = hub.stats()
    assert stats["close_dropped"] == 5 and stats["outbox"] == 0, stats
    assert "gws13_hub_redis_close_dropped_total 5" in hub.metrics_text()
    # timeout=0: nothing waits; a negative one is refused
    hub.publish("r", "lost5")  # (starts the backend again)
    t0 = time.monotonic()
    hub.close(timeout=0)
    assert time.monotonic() - t0 < 1.5 and hub.stats()["close_dropped"] == 6
    with pytest.raises(ValueError):
        hub.close(timeout=-1)


def test_kept_messages_are_published_only_under_a_new_subscription(serve, redis_server):
    # after an outage the subscriber comes back late: the publisher must not
    # send what it kept before this process is subscribed again
    hub = gws13.Hub(redis_server.url, redis_options={"ping_interval": 0.5, "max_backoff": 0.05})
    backend = hub._backend
    slow = []
    connect = backend._connect

    def slow_subscriber_connect():
        if slow and gevent.getcurrent() is backend._greenlets[0]:
            gevent.sleep(0.6)
        return connect()

    backend._connect = slow_subscriber_connect
    server = serve(member_app(hub))
    member = websocket.create_connection(server.url, timeout=10)
    assert member.recv() == "ready"
    member.send("before")
    assert [member.recv() for _ in range(5)] == [f"before{i}" for i in range(5)]
    redis_server.kill()
    wait_until(lambda: not hub.ready, 10, what="the hub to notice the outage")
    slow.append(True)
    member.send("kept")  # published while Redis is down: kept in the outbox
    wait_until(lambda: hub.stats()["outbox"] == 5, 5, what="the kept messages")
    redis_server.start()
    # the member of this very hub gets every kept message, once, in order
    assert [member.recv() for _ in range(5)] == [f"kept{i}" for i in range(5)]
    stats = hub.stats()
    assert stats["reconnects"] >= 1 and stats["outbox"] == 0 and stats["duplicates"] == 0, stats
    member.send("after")
    assert [member.recv() for _ in range(5)] == [f"after{i}" for i in range(5)]
    member.close()
    hub.close()


def test_a_publisher_that_alone_lost_its_connection_proves_the_subscription(serve, redis_server):
    # only the publisher's connection is killed: the subscription never broke,
    # so no new PSUBSCRIBE comes; a PING on it must show it alive, at once
    # (the subscriber's own PING would come after ping_interval, 30 s here)
    import redis as redis_py
    hub = gws13.Hub(redis_server.url, redis_options={"ping_interval": 30.0, "max_backoff": 0.05})
    server = serve(member_app(hub))
    member = websocket.create_connection(server.url, timeout=10)
    assert member.recv() == "ready"
    member.send("a")
    assert [member.recv() for _ in range(5)] == [f"a{i}" for i in range(5)]
    r = redis_py.Redis(port=redis_server.port)
    assert r.client_kill_filter(_type="normal", skipme=True) >= 1  # the publisher, not the pubsub
    r.close()
    member.send("b")
    member.settimeout(5)
    assert [member.recv() for _ in range(5)] == [f"b{i}" for i in range(5)]
    stats = hub.stats()
    assert stats["errors"] >= 1 and stats["reconnects"] == 0 and stats["duplicates"] == 0, stats
    member.close()
    hub.close()


# -- many processes ---------------------------------------------------------------
def test_every_client_gets_every_message_once_across_workers_and_machines(processes):
    gunicorn_port = processes.gunicorn(workers=2)
    machine_a = processes.pywsgi()
    machine_b = processes.pywsgi()
    clients = spread_over_workers(gunicorn_port, workers=2, per_worker=2)
    clients += [Client(machine_a) for _ in range(3)] + [Client(machine_b) for _ in range(3)]
    others = [Client(machine_a, "other"), Client(gunicorn_port, "other")]
    publishers = first_per_pid(clients)
    assert len(publishers) == 4, "expected 2 gunicorn workers and 2 machines"
    count = 60
    for i in range(count):
        for p, publisher in enumerate(publishers):
            publisher.send(op="publish", room="r", data=[f"p{p}:{i}"])
    expected = len(publishers) * count
    for c in clients:
        got: Dict[str, List[int]] = {}
        for _ in range(expected):
            tag, index = parse(c.recv_message())
            got.setdefault(tag, []).append(int(index))
        for p in range(len(publishers)):
            assert got.get(f"p{p}") == list(range(count)), f"client on pid {c.pid}: p{p} {got.get(f'p{p}')}"
    # nothing more is pending: the next message everyone sees is the marker
    publishers[0].send(op="publish", room="r", data=["end"])
    publishers[1].send(op="publish", room="other", data=["other only"], binary=True)
    for c in clients:
        assert c.recv_message(10) == "end"
    for c in others:
        assert c.recv_message(10) == b"other only"
    for c in first_per_pid(clients):
        stats = c.stats()
        assert stats["duplicates"] == 0 and stats["outbox_dropped"] == 0
        assert stats["rooms"]["r"] >= 1
    assert processes.alive()
    for c in clients + others:
        c.close()


def test_redis_restart_mid_stream(processes, redis_server):
    gunicorn_port = processes.gunicorn(workers=2)
    machine = processes.pywsgi()
    clients = spread_over_workers(gunicorn_port, workers=2, per_worker=2)
    clients += [Client(machine) for _ in range(3)]
    pub_machine = next(c for c in clients if c.port == machine)
    pub_worker = next(c for c in clients if c.port == gunicorn_port)
    count, interval = 250, 0.01
    pub_machine.send(op="stream", room="r", tag="a", count=count, interval=interval)
    pub_worker.send(op="stream", room="r", tag="b", count=count, interval=interval)
    time.sleep(0.7)
    redis_server.kill()  # SIGKILL, mid-stream
    time.sleep(1.0)
    redis_server.start()
    # publishing never blocked: each stream ran at its own pace through the outage
    for publisher in (pub_machine, pub_worker):
        done = publisher.recv_control("streamed", 20)
        assert done["seconds"] < count * interval + 5 and done["slowest"] < 0.1, done
    # every process resubscribes
    for c in first_per_pid(clients):
        stats = c.stats(timeout=10)
        assert stats["ready"], stats
        assert stats["reconnects"] >= 1, stats
    assert processes.alive(), "a server process died"
    pub_machine.send(op="publish", room="r", data=["a:final"])
    pub_worker.send(op="publish", room="r", data=["b:final"])
    for c in clients:
        got: Dict[str, List[str]] = {"a": [], "b": []}
        while got["a"][-1:] != ["final"] or got["b"][-1:] != ["final"]:
            tag, index = parse(c.recv_message(15))
            got[tag].append(index)
        for tag, indexes in got.items():
            numbers = [int(i) for i in indexes[:-1]]
            # no duplicates, publish order kept; some messages of the outage may be missing
            assert numbers == sorted(set(numbers)), f"{tag}: {numbers}"
            assert numbers and numbers[0] == 0, f"{tag}: lost the start {numbers[:5]} (client pid {c.pid})"
            assert numbers[-1] == count - 1 or len(numbers) > count // 3, f"{tag}: {numbers}"
    for c in clients:
        c.close()


def test_chat_example_across_two_processes(processes, redis_server):
    script = os.path.join(ROOT, "examples", "chat.py")
    ports = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen([sys.executable, script, "--port", str(port), "--redis", redis_server.url],
                                env=processes.env, cwd=ROOT, stdout=subprocess.DEVNULL)
        processes.procs.append(proc)
        processes._wait_http(proc, port)
        ports.append(port)

    def ready(port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
            return json.loads(r.read())["hub"]["subscribed"]

    for port in ports:
        wait_until(lambda: ready(port), 10, what="chat.py to subscribe")
    a = websocket.create_connection(f"ws://127.0.0.1:{ports[0]}/ws", timeout=10)
    name_a = json.loads(a.recv())["name"]
    b = websocket.create_connection(f"ws://127.0.0.1:{ports[1]}/ws", timeout=10)
    name_b = json.loads(b.recv())["name"]
    assert name_a != name_b
    # a sees b join although b is on the other process
    while json.loads(a.recv()) != {"type": "notice", "text": f"{name_b} joined"}:
        pass
    b.send("hello from the other machine")
    for ws in (a, b):
        while True:
            msg = json.loads(ws.recv())
            if msg["type"] == "message":
                break
        assert msg == {"type": "message", "name": name_b, "text": "hello from the other machine"}
    with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "gws13_hub_redis_connected 1" in text and "gws13_hub_connections 1" in text
    a.close()
    b.close()
