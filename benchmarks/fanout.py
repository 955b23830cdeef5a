#!/usr/bin/env python3
"""Fan-out benchmark for gws13.Hub: one publish to 1,000 connected clients.

    python benchmarks/fanout.py                 # every scenario, prints a table
    python benchmarks/fanout.py --clients 200 --rounds 10 --no-redis

Scenarios:

* **in-process**: one gevent.pywsgi server, ``gws13.Hub()``; all clients on it.
* **redis**: two server processes (standing in for two machines) sharing a
  ``redis-server`` started here on a loopback port; half the clients on each,
  the publish happens in the first one and reaches the second through Redis.
* **C client**: when ``benchmarks/client/wsload`` is there (or gcc can build
  it from ``wsload.c``), the same two fan-outs timed by the suite's C load
  client (its "fanout" mode: one of its connections sends ``broadcast:<32 B>``),
  whose own cost per message is far below the Python client's.  Its Redis row
  has all clients on one server process (the message goes to Redis and back).
* **slow client**: in-process again, plus one client that never reads (small
  socket buffers on both ends, hub policy drop-oldest, queue 64).  Bursts of
  publishes are timed inside the server (how long each ``publish()`` call
  takes) with and without that client, then the fan-out rounds are repeated.

A round: the load client sends "publish" on a control connection and waits
until every client has the message; "last" is the time until the last client
had it, "median" until half of them had.  The load client is one Python
process using raw sockets and epoll, pinned to CPU 0; the servers (and
redis-server) run in their own processes pinned to CPU 1 when there are two
CPUs.  A loopback send that wakes a reader on the other CPU is expensive in
the kernel (about 15-45 us per socket on a small VM): that, not the hub's
Python (about 1 us per member), is most of the fan-out time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

ROOM = "bench"


# ----------------------------------------------------------------------------- server
def serve(port: int, hub_url: Optional[str], policy: str, queue_size: int) -> None:
    """The server process: ``/ws`` joins the room (``?slow=1``: tiny send
    buffer), ``/ctl`` takes JSON commands."""
    import gevent
    from gevent import pywsgi

    import gws13

    raise_nofile()
    gws13.parameters.ping_interval = 0  # keep 1,000 idle timers out of the measurement
    hub = gws13.Hub(hub_url, policy=policy, queue_size=queue_size)

    def member(ws):
        if "slow=1" in ws.environ.get("QUERY_STRING", ""):
            ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        hub.join(ws, ROOM)
        for message in ws:  # until the client goes
            if isinstance(message, str) and message.startswith("broadcast:"):
                hub.publish(ROOM, message[10:])  # the C client's (wsload) fan-out request

    def control(ws):
        for text in ws:
            cmd = json.loads(text)
            op = cmd["op"]
            if op == "publish":
                t0 = time.perf_counter()
                hub.publish(ROOM, cmd["data"])
                ws.send(json.dumps({"publish_s": time.perf_counter() - t0}))
            elif op == "burst":
                times = []
                payload = "x" * cmd["size"]
                for i in range(cmd["count"]):
                    t0 = time.perf_counter()
                    hub.publish(ROOM, payload)
                    times.append(time.perf_counter() - t0)
                    gevent.sleep(0)  # a real publisher yields between messages
                ws.send(json.dumps({"times": times}))
            elif op == "stats":
                hub.wait_ready(10)
                ws.send(json.dumps(dict(hub.stats(), ready=hub.ready)))

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/ctl":
            return gws13.with_websocket(environ, start_response, control)
        return gws13.with_websocket(environ, start_response, member)

    server = pywsgi.WSGIServer(("127.0.0.1", port), app, handler_class=gws13.WebSocketHandler,
                               log=None, backlog=2048)
    server.serve_forever()


# ----------------------------------------------------------------------------- client
def raise_nofile(want: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def handshake(port: int, path: str, rcvbuf: Optional[int] = None) -> Tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("no handshake response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.decode("latin-1"))
    return sock, rest


class Control:
    """A WebSocket control connection (masked frames out, one reply in)."""

    def __init__(self, port: int) -> None:
        from gws13.protocol import Protocol
        self.sock, rest = handshake(port, "/ctl")
        self.sock.settimeout(60)
        self.proto = Protocol(client=True, max_frame_size=2 ** 26, max_message_size=2 ** 26)
        self.events = list(self.proto.receive_data(rest)) if rest else []

    def send(self, **cmd) -> None:
        self.sock.sendall(b"".join(self.proto.send_message(json.dumps(cmd))))

    def reply(self) -> dict:
        while not self.events:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("control connection closed")
            self.events += self.proto.receive_data(data)
        return json.loads(self.events.pop(0).data)

    def call(self, **cmd) -> dict:
        self.send(**cmd)
        return self.reply()


class Clients:
    """Many raw WebSocket clients watched by one epoll."""

    def __init__(self) -> None:
        self.socks: Dict[int, socket.socket] = {}
        self.tails: Dict[int, bytes] = {}
        self.poller = select.epoll()
        self.idle: List[socket.socket] = []  # slow clients: connected, never read

    def connect(self, port: int, count: int) -> None:
        for _ in range(count):
            sock, _ = handshake(port, "/ws")
            sock.setblocking(False)
            fd = sock.fileno()
            self.socks[fd] = sock
            self.tails[fd] = b""
            self.poller.register(fd, select.EPOLLIN)

    def connect_slow(self, port: int) -> None:
        sock, _ = handshake(port, "/ws?slow=1", rcvbuf=4096)
        self.idle.append(sock)

    def wait_for(self, marker: bytes, started: float, timeout: float = 30.0) -> List[float]:
        """Seconds from ``started`` until each client had ``marker``."""
        waiting = set(self.socks)
        times: List[float] = []
        keep = len(marker) - 1
        deadline = time.perf_counter() + timeout
        while waiting:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(waiting)} clients never got {marker!r}")
            for fd, _ in self.poller.poll(1.0):
                sock = self.socks[fd]
                try:
                    data = sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("a client was disconnected")
                if fd not in waiting:
                    continue
                seen = self.tails[fd] + data
                if marker in seen:
                    times.append(time.perf_counter() - started)
                    waiting.discard(fd)
                    self.tails[fd] = b""
                else:
                    self.tails[fd] = seen[-keep:]
        return times

    def close(self) -> None:
        for sock in list(self.socks.values()) + self.idle:
            sock.close()
        self.poller.close()


def wsload_binary() -> Optional[str]:
    """benchmarks/client/wsload (the suite's C load client), built into a
    temporary directory from wsload.c if needed and gcc is there."""
    built = os.path.join(HERE, "client", "wsload")
    if os.access(built, os.X_OK):
        return built
    source = os.path.join(HERE, "client", "wsload.c")
    gcc = shutil.which("gcc")
    if not (os.path.exists(source) and gcc):
        return None
    target = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"gws13-wsload-{os.getpid()}")
    if subprocess.run([gcc, "-O2", "-o", target, source]).returncode != 0:
        return None
    return target


def wsload_fanout(binary: str, port: int, clients: int, seconds: float) -> Dict[str, float]:
    """The C client's fan-out mode: one of its connections sends
    "broadcast:<32 B>", it times the arrival at the last connection."""
    cmd = [binary, "-p", str(port), "-P", "/ws", "-m", "fanout", "-c", str(clients), "-s", "32",
           "-d", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120,
                          preexec_fn=lambda: pin(0, CLIENT_CPUS))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip()[-200:]}
    if "last_p50_us" not in result:
        raise RuntimeError(f"wsload failed: {result}")
    return {"last_p50": result["last_p50_us"] / 1000, "last_p90": result["last_p90_us"] / 1000,
            "last_max": result["last_max_us"] / 1000, "rounds": result["rounds"]}


def fanout_rounds(ctl: Control, clients: Clients, rounds: int) -> Dict[str, float]:
    lasts, medians = [], []
    for i in range(-2, rounds):  # two warm-up rounds
        marker = f"<round {i} {time.perf_counter_ns()}>"
        started = time.perf_counter()
        ctl.send(op="publish", data=marker)
        times = clients.wait_for(marker.encode(), started)
        ctl.reply()
        if i >= 0:
            times.sort()
            lasts.append(times[-1] * 1000)
            medians.append(times[len(times) // 2] * 1000)
        time.sleep(0.02)
    lasts.sort()
    return {"last_p50": statistics.median(lasts), "last_p90": lasts[int(len(lasts) * 0.9)],
            "last_max": lasts[-1], "median_p50": statistics.median(medians)}


def burst(ctl: Control, clients: Clients, count: int, size: int) -> Dict[str, float]:
    times = sorted(ctl.call(op="burst", count=count, size=size)["times"])
    # let the readers catch up before the next measurement
    marker = f"<drain {time.perf_counter_ns()}>"
    ctl.send(op="publish", data=marker)
    clients.wait_for(marker.encode(), time.perf_counter(), timeout=120)
    ctl.reply()
    return {"publish_p50_ms": times[len(times) // 2] * 1000,
            "publish_p99_ms": times[int(len(times) * 0.99)] * 1000,
            "publish_max_ms": times[-1] * 1000}


# ----------------------------------------------------------------------------- orchestration
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_CPUS = {1} if (os.cpu_count() or 1) > 1 else None
CLIENT_CPUS = {0} if SERVER_CPUS else None


def pin(pid: int, cpus) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass


class Children:
    """Server and redis-server processes, pinned to SERVER_CPUS."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def server(self, hub_url: Optional[str] = None, policy: str = "close", queue_size: int = 256) -> int:
        port = free_port()
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", str(port), "--policy", policy,
               "--queue-size", str(queue_size)]
        if hub_url:
            cmd += ["--hub", hub_url]
        self.procs.append(subprocess.Popen(cmd, cwd=ROOT))
        pin(self.procs[-1].pid, SERVER_CPUS)
        wait_port(port)
        return port

    def redis(self) -> Optional[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            return None
        port = free_port()
        self.procs.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        pin(self.procs[-1].pid, SERVER_CPUS)
        wait_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_members(ctls: List[Control], expected: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = [c.call(op="stats") for c in ctls]
        if sum(s["rooms"].get(ROOM, 0) for s in stats) >= expected and all(s["ready"] for s in stats):
            return
        time.sleep(0.05)
    raise RuntimeError("clients did not all join")


def run(args) -> List[Tuple[str, Dict[str, float]]]:
    rows: List[Tuple[str, Dict[str, float]]] = []
    n = args.clients

    # in-process
    children = Children()
    try:
        port = children.server()
        clients = Clients()
        clients.connect(port, n)
        ctl = Control(port)
        wait_members([ctl], n)
        rows.append((f"in-process, {n} clients", fanout_rounds(ctl, clients, args.rounds)))
        clients.close()
    finally:
        children.stop()

    # through Redis, two server processes
    if not args.no_redis:
        children = Children()
        try:
            url = children.redis()
            if url is None:
                print("redis-server not found: skipping the Redis scenario", file=sys.stderr)
            else:
                a, b = children.server(url), children.server(url)
                clients = Clients()
                clients.connect(a, n // 2)
                clients.connect(b, n - n // 2)
                ctl_a, ctl_b = Control(a), Control(b)
                wait_members([ctl_a, ctl_b], n)
                rows.append((f"redis, 2 processes, {n} clients", fanout_rounds(ctl_a, clients, args.rounds)))
                clients.close()
        finally:
            children.stop()

    # the suite's C load client, when it can be had
    binary = None if args.no_wsload else wsload_binary()
    if binary is not None:
        children = Children()
        try:
            port = children.server()
            rows.append((f"in-process, {n} clients, C client", wsload_fanout(binary, port, n, 3.0)))
            url = None if args.no_redis else children.redis()
            if url is not None:
                port = children.server(url)
                rows.append((f"redis, 1 process, {n} clients, C client",
                             wsload_fanout(binary, port, n, 3.0)))
        finally:
            children.stop()

    # one client that never reads
    children = Children()
    try:
        port = children.server(policy="drop-oldest", queue_size=64)
        clients = Clients()
        clients.connect(port, n - 1)
        ctl = Control(port)
        wait_members([ctl], n - 1)
        base = burst(ctl, clients, args.burst, args.size)
        base.update(fanout_rounds(ctl, clients, args.rounds))
        rows.append((f"in-process, {n - 1} clients, burst of {args.burst} x {args.size} B", base))
        clients.connect_slow(port)
        wait_members([ctl], n)
        slow = burst(ctl, clients, args.burst, args.size)
        slow.update(fanout_rounds(ctl, clients, args.rounds))
        stats = ctl.call(op="stats")
        slow["dropped"] = stats["dropped_oldest"]
        rows.append((f"  + 1 client that never reads", slow))
        clients.close()
    finally:
        children.stop()
    return rows


def table(rows: List[Tuple[str, Dict[str, float]]]) -> str:
    columns = [("last_p50", "last ms (p50)"), ("last_p90", "last ms (p90)"), ("last_max", "last ms (max)"),
               ("median_p50", "median ms"), ("publish_p50_ms", "publish() p50 ms"),
               ("publish_p99_ms", "publish() p99 ms"), ("publish_max_ms", "publish() max ms"),
               ("dropped", "dropped (slow)")]
    head = "| scenario | " + " | ".join(title for _, title in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, values in rows:
        cells = []
        for key, _ in columns:
            value = values.get(key)
            cells.append("" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200, help="publishes per burst (slow-client run)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per burst message")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--no-wsload", action="store_true", help="skip the C client (benchmarks/client/wsload)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hub", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="close", help=argparse.SUPPRESS)
    parser.add_argument("--queue-size", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.hub, args.policy, args.queue_size)
        return
    raise_nofile(args.clients * 2 + 256)
    pin(0, CLIENT_CPUS)
    rows = run(args)
    print(table(rows))
    print("\nlast = time until the last client had the message; median = until half had it; "
          "publish() = time one call takes inside the server.")
    print(f"{args.clients} clients, {args.rounds} rounds per scenario; {os.cpu_count()} CPUs; "
          f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
