#!/usr/bin/env python
"""Soak test of issue 11, "one bad peer never hurts the server".

Runs a real gws13 server (gevent.pywsgi.WSGIServer + gws13.WebSocketHandler, an
echo app) in a subprocess, attacks it from this process (gevent, raw sockets and
gws13's own client), reads the server's memory, descriptors, greenlets, live
WebSocket objects and largest event-loop stall from its plain-HTTP ``/stats``
route, prints one markdown table and exits 0 when every target holds, 1 if not.

    python scripts/soak.py            # all scenarios (a few minutes)
    python scripts/soak.py --only 1,4 # some of them

The server side is this same file run with ``--serve``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

MiB = 2 ** 20


def _raise_nofile(want: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ---------------------------------------------------------------- server side

def serve(args: argparse.Namespace) -> None:
    import ctypes
    import gc

    import gevent
    import gevent.event
    import greenlet
    from gevent import pywsgi

    import gws13

    _raise_nofile()
    if args.handshake_timeout is not None:
        gws13.parameters.handshake_timeout = args.handshake_timeout
    if args.close_timeout is not None:
        gws13.parameters.close_timeout = args.close_timeout
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        trim = None

    # the loop's largest lateness: a 10 ms repeating timer that should never be late
    stall = {"max": 0.0, "last": time.perf_counter()}
    timer = gevent.get_hub().loop.timer(0.01, 0.01)

    def tick() -> None:
        now = time.perf_counter()
        late = now - stall["last"] - 0.01
        if late > stall["max"]:
            stall["max"] = late
        stall["last"] = now

    timer.start(tick)

    def status() -> dict:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
        return out

    def stats(reset: bool) -> dict:
        max_stall = stall["max"]  # before this request's own gc walk
        gc.collect()
        if trim is not None:
            trim(0)
        objects = gc.get_objects()
        sockets = [o for o in objects if isinstance(o, gws13.WebSocket)]
        out = status()
        out.update(
            fds=len(os.listdir("/proc/self/fd")),
            greenlets=sum(isinstance(o, greenlet.greenlet) for o in objects),
            websockets=len(sockets),
            registered=len(getattr(server, "_gws13_websockets", ())),
            max_buffered=max((getattr(w, "_wsize", 0) for w in sockets), default=0),
            max_stall=max_stall,
        )
        del objects, sockets
        if reset:
            stall["max"], stall["last"] = 0.0, time.perf_counter()
        return out

    def app(environ, start_response):
        ws = environ.get("wsgi.websocket")
        if ws is None:
            if environ.get("PATH_INFO") == "/stats":
                body = json.dumps(stats("reset" in environ.get("QUERY_STRING", ""))).encode()
                start_response("200 OK", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body)))])
                return [body]
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        try:
            for message in ws:
                ws.send(message)
        except gws13.WebSocketError:
            pass  # a refused or dropped peer: nothing to echo any more
        return []

    if args.certfile:
        from gws13.server import WebSocketServer
        server = WebSocketServer(("127.0.0.1", 0), app, log=None, backlog=2048,
                                 keyfile=args.keyfile, certfile=args.certfile)
    else:
        server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=gws13.WebSocketHandler,
                                   log=None, backlog=2048)
    stopping = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    server.start()
    print(server.server_port, flush=True)
    stopping.wait()
    server.stop(timeout=args.close_timeout if args.close_timeout is not None else 5)
    sys.exit(0)


# ---------------------------------------------------------------- client side

class Server:
    """A server subprocess; its stderr goes to a file, read for tracebacks at the end."""

    logs: list = []

    def __init__(self, *extra: str, tls: bool = False) -> None:
        self.tls = _tls_client_context() if tls else None
        if tls:
            extra += ("--keyfile", _TLS["keyfile"], "--certfile", _TLS["certfile"])
        self.log = tempfile.NamedTemporaryFile(prefix="gws13-soak-", suffix=".log", delete=False)
        Server.logs.append(self.log.name)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", *extra],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/"

    def stats(self, reset: bool = False) -> dict:
        from gevent import socket
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        if self.tls is not None:
            s = _cooperative_tls(s, self.tls)
        s.sendall(b"GET /stats%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  % (b"?reset" if reset else b""))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return json.loads(data.split(b"\r\n\r\n", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    from gws13.frames import apply_mask, encode_header
    key = b"\x01\x02\x03\x04"
    return encode_header(opcode, len(payload), fin, False, key) + apply_mask(payload, key)


_TLS: dict = {}


def _tls_client_context():
    """A gevent client context trusting a test CA whose certificate the TLS server uses."""
    import gevent.ssl
    if not _TLS:
        import trustme
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        folder = tempfile.mkdtemp(prefix="gws13-soak-tls-")
        _TLS["keyfile"], _TLS["certfile"] = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        cert.private_key_pem.write_to_path(_TLS["keyfile"])
        with open(_TLS["certfile"], "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        _TLS["ca"] = ca
    context = gevent.ssl.create_default_context()
    _TLS["ca"].configure_trust(context)
    return context


def _cooperative_tls(sock, context):
    # gevent's SSLSocket: a context's own wrap_socket gave the standard
    # library's blocking socket here, which stopped the whole client process
    import gevent.ssl
    return gevent.ssl.SSLSocket(sock=sock, server_hostname="127.0.0.1", _context=context)


def raw_handshake(port: int, rcvbuf: int = 0, timeout: float = 30, tls=None):
    """A raw upgraded socket (gevent) and the bytes read past the 101 head."""
    from gevent import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    if tls is not None:
        s = _cooperative_tls(s, tls)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (port, key))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("EOF during the handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
    return s, rest


class Echoers:
    """n gws13 clients doing echo round trips (one every 10 ms each) until stopped."""

    def __init__(self, url: str, n: int = 5, tls=None) -> None:
        import gevent
        import gws13
        self.rtts: list = []
        self.errors: list = []
        self.running = True
        self.sockets = [gws13.connect(url, compression=None, ssl_context=tls) for _ in range(n)]
        self.greenlets = [gevent.spawn(self._run, ws) for ws in self.sockets]

    def _run(self, ws) -> None:
        import gevent
        msg = "x" * 32
        try:
            while self.running:
                t = time.perf_counter()
                ws.send(msg)
                got = ws.receive(timeout=30)
                if got != msg:
                    raise RuntimeError(f"bad echo: {got!r:.40} (close {ws.close_code} {ws.close_reason!r})")
                self.rtts.append(time.perf_counter() - t)
                gevent.sleep(0.01)
        except Exception as exc:  # reported in the table
            self.errors.append(repr(exc))

    def reset(self) -> None:
        self.rtts = []

    def stop(self) -> None:
        import gevent
        self.running = False
        gevent.joinall(self.greenlets, timeout=30)
        for ws in self.sockets:
            try:
                ws.close()
            except Exception:
                pass

    def figures(self):
        r = sorted(self.rtts)
        if not r:
            return float("inf"), float("inf"), 0
        return r[min(len(r) - 1, int(len(r) * 0.99))] * 1000, r[-1] * 1000, len(r)


ROWS: list = []


def row(scenario: str, measured: str, figure: str, target: str, ok: bool) -> None:
    ROWS.append((scenario, measured, figure, target, "ok" if ok else "FAIL"))


def reader(sock, rest: bytes, out: dict):
    """Read and parse what the server sends until EOF: out['close'] and out['messages']."""
    from gws13.protocol import Close, Message, Protocol
    proto = Protocol(client=True, max_frame_size=2 ** 30, max_message_size=2 ** 30)
    out.setdefault("messages", [])
    data = rest
    sock.settimeout(None)
    try:
        while True:
            for event in proto.receive_data(data) if data else ():
                if isinstance(event, Close):
                    out["close"] = event.code
                    out["close_at"] = time.perf_counter()
                elif isinstance(event, Message):
                    out["messages"].append(event.data)
            data = sock.recv(65536)
            if not data:
                break
    except OSError as exc:
        out["error"] = repr(exc)
    out["eof_at"] = time.perf_counter()


def sendall_chunks(sock, data: bytes, chunk: int, stop) -> int:
    """Send ``data`` in ``chunk`` byte pieces until done or stop(); the bytes sent."""
    view = memoryview(data)
    sent = 0
    while sent < len(view) and not stop():
        sock.sendall(view[sent:sent + chunk])
        sent += min(chunk, len(view) - sent)
    return sent


# ---------------------------------------------------------------- scenarios

def s1_ping_flood(srv: Server) -> None:
    import gevent
    from gws13.frames import OP_PING
    echo = Echoers(srv.url)
    gevent.sleep(0.5)
    before = srv.stats()
    echo.reset()
    sock, _ = raw_handshake(srv.port, rcvbuf=4096, timeout=60)
    batch = frame(OP_PING, b"p" * 125) * 1000
    t = time.perf_counter()
    error = None
    try:
        for _ in range(200):
            sock.sendall(batch)
    except OSError as exc:
        error = repr(exc)
    flood_s = time.perf_counter() - t
    gevent.sleep(0.2)
    echo.stop()
    p99, mx, n = echo.figures()
    after = srv.stats()
    growth = (after["VmRSS"] - before["VmRSS"]) / MiB
    # the flooder is open on the server if its WebSocket is still registered
    # (the echo clients have closed by now)
    still_open = after["registered"] >= 1
    name = "1 ping flood (200,000 x 125 B pings, never read)"
    row(name, "server RSS growth", f"{growth:+.1f} MiB", "< +16 MiB", growth < 16)
    row(name, "server greenlets before / after", f"{before['greenlets']} / {after['greenlets']}",
        "<= before + 2", after["greenlets"] <= before["greenlets"] + 2)
    row(name, f"5 echo clients, {n} round trips: p99 / max", f"{p99:.1f} / {mx:.1f} ms", "p99 < 50 ms",
        p99 < 50 and not echo.errors)
    row(name, "flooding connection after the flood",
        (f"{'open' if still_open else 'ended'} after {flood_s:.1f} s of sending"
         + (f" ({error})" if error else "")
         + f", server-side buffered {after['max_buffered']} B"), "(reported)", True)
    sock.close()
    if echo.errors:
        row(name, "echo client errors", "; ".join(echo.errors[:3]), "none", False)


def s2_cycles(srv: Server, compression: bool, n: int = 20000, workers: int = 8) -> None:
    import gevent
    import gws13
    done = [0]
    marks = {}
    errors = []
    comp = gws13.Deflate() if compression else None
    msg = "hello, soak " * 8

    def work() -> None:
        while done[0] < n:
            done[0] += 1
            k = done[0]
            try:
                ws = gws13.connect(srv.url, compression=comp)
                ws.send(msg)
                got = ws.receive(timeout=30)
                if got != msg:
                    raise RuntimeError(f"bad echo: {got!r:.40} (close {ws.close_code} {ws.close_reason!r})")
                if compression and not ws.extensions:
                    raise RuntimeError("permessage-deflate not negotiated")
                ws.close()
            except Exception as exc:
                errors.append(repr(exc))
            if k == 1000:
                marks[1000] = srv.stats()

    t = time.perf_counter()
    gevent.joinall([gevent.spawn(work) for _ in range(workers)])
    elapsed = time.perf_counter() - t
    deadline = time.monotonic() + 10
    while True:
        end = srv.stats()
        if end["websockets"] == 0 or time.monotonic() > deadline:
            break
        gevent.sleep(0.2)
    growth = (end["VmRSS"] - marks[1000]["VmRSS"]) / MiB
    name = f"2 cycles {'with' if compression else 'without'} compression ({n:,}, {workers} at once, {elapsed:.0f} s)"
    row(name, "RSS after the last minus after the 1,000th", f"{growth:+.1f} MiB", "within 10 MiB",
        abs(growth) <= 10)
    row(name, "live WebSocket objects / fds at the end", f"{end['websockets']} / {end['fds']}",
        "0 WebSockets", end["websockets"] == 0)
    row(name, "failed cycles", f"{len(errors)}" + (f" ({errors[0]})" if errors else ""), "0",
        not errors)


def s3_fragment_flood(srv: Server) -> None:
    import gevent
    from gws13.frames import OP_BINARY, OP_CONT
    echo = Echoers(srv.url, tls=srv.tls)
    gevent.sleep(0.5)
    before = srv.stats(reset=True)
    echo.reset()
    sock, rest = raw_handshake(srv.port, timeout=60, tls=srv.tls)
    out: dict = {}
    rd = gevent.spawn(reader, sock, rest, out)
    one = frame(OP_CONT, b"y", fin=False)
    data = frame(OP_BINARY, b"y", fin=False) + one * (MiB - 2) + frame(OP_CONT, b"y")
    t = time.perf_counter()
    try:
        sendall_chunks(sock, data, 65536, lambda: "close" in out)
        out["sent_at"] = time.perf_counter()
    except OSError as exc:
        out.setdefault("send_error", repr(exc))
    deadline = time.monotonic() + 60
    while not out.get("messages") and "close" not in out and not rd.dead and time.monotonic() < deadline:
        gevent.sleep(0.05)
    took = time.perf_counter() - t
    sent_in = out.get("sent_at", t) - t
    gevent.sleep(0.2)
    echo.stop()
    p99, mx, n = echo.figures()
    after = srv.stats()
    msgs = out.get("messages", [])
    if msgs and msgs[0] == b"y" * MiB:
        outcome = f"echoed whole after {took:.1f} s (sent in {sent_in:.1f} s)"
    elif "close" in out:
        outcome = f"refused with {out['close']} after {took:.1f} s"
    else:
        outcome = f"neither: {out}"[:120]
    sock.close()
    rd.kill()
    peak = (after["VmHWM"] - before["VmHWM"]) / MiB
    name = "3 fragment flood (1 MiB as 1,048,576 one-byte fragments)"
    if srv.tls is not None:
        name = "7 fragment flood over TLS (WebSocketServer, memory BIOs)"
    row(name, "outcome", outcome, "echoed or 1009", outcome.startswith("echoed") or "1009" in outcome)
    row(name, "server peak RSS growth (VmHWM, fresh process)", f"{peak:+.1f} MiB", "< +8 MiB", peak < 8)
    row(name, "largest event-loop stall", f"{after['max_stall'] * 1000:.1f} ms", "< 50 ms",
        after["max_stall"] < 0.05)
    row(name, f"5 echo clients, {n} round trips: p99 / max", f"{p99:.1f} / {mx:.1f} ms", "max < 50 ms",
        mx < 50 and not echo.errors)
    if echo.errors:
        row(name, "echo client errors", "; ".join(echo.errors[:3]), "none", False)


def s4_empty_fragments(srv: Server, limit: int = 3_000_000) -> None:
    import gevent
    from gws13.frames import OP_BINARY, OP_CONT
    sock, rest = raw_handshake(srv.port, timeout=30)
    out: dict = {}
    rd = gevent.spawn(reader, sock, rest, out)
    per = 10000
    batch = frame(OP_CONT, b"", fin=False) * per
    sent = 0
    try:
        sock.sendall(frame(OP_BINARY, b"z", fin=False))
        sent = 1
        while sent < limit and "close" not in out and "eof_at" not in out:
            sock.sendall(batch)
            sent += per
    except OSError as exc:
        out.setdefault("send_error", repr(exc))
    deadline = time.monotonic() + 10
    while "close" not in out and "eof_at" not in out and time.monotonic() < deadline:
        gevent.sleep(0.05)
    sock.close()
    rd.kill()
    code = out.get("close")
    name = "4 endless empty continuation frames"
    row(name, "frames sent before the server's close / its code",
        f"<= {sent:,} / {code if code else 'none (' + out.get('send_error', 'no close') + ')'}",
        "1009 before 3,000,000", code == 1009 and sent < limit)


def s5_stop(n: int = 1000) -> None:
    import gevent
    from gevent.pool import Pool
    srv = Server("--close-timeout", "1")
    try:
        socks: list = []
        pool = Pool(50)
        for s, _ in pool.imap_unordered(lambda _: raw_handshake(srv.port, rcvbuf=4096), range(n)):
            socks.append(s)
        st = srv.stats()
        closed: list = []

        def wait_eof(s) -> None:
            # unresponsive: never answers the close frame; reads (and discards)
            # only to see the EOF or RST
            s.settimeout(15)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            closed.append(time.perf_counter())
            s.close()

        waiters = [gevent.spawn(wait_eof, s) for s in socks]
        t0 = time.perf_counter()
        srv.proc.send_signal(signal.SIGTERM)
        while srv.proc.poll() is None and time.perf_counter() - t0 < 20:
            gevent.sleep(0.01)
        exited = time.perf_counter() - t0 if srv.proc.poll() is not None else float("inf")
        gevent.joinall(waiters, timeout=20)
        last = max(closed) - t0 if len(closed) == n else float("inf")
        name = f"5 SIGTERM -> stop() with {n} unresponsive clients (close_timeout=1)"
        row(name, f"clients upgraded before SIGTERM (server saw {st['websockets']})", f"{len(socks)}",
            f"{n}", len(socks) == n)
        row(name, "process exit / last client EOF after SIGTERM",
            f"{exited:.2f} s / {last:.2f} s ({len(closed)} closed)", "<= 2 s", max(exited, last) <= 2)
    finally:
        srv.stop()


def s6_slowloris(n: int = 500) -> None:
    import gevent
    import gws13
    from gevent import socket
    srv = Server("--handshake-timeout", "2")
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    lifetimes: list = []

    def slow() -> None:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        t = time.perf_counter()
        s.settimeout(1)
        try:
            for b in request:
                s.sendall(bytes((b,)))
                try:
                    while True:  # a 408 first, perhaps, then the EOF
                        if not s.recv(4096):
                            raise ConnectionResetError("EOF")
                except socket.timeout:
                    pass
                if time.perf_counter() - t > 15:
                    break
            lifetimes.append(float("inf"))
        except OSError:
            lifetimes.append(time.perf_counter() - t)
        s.close()

    normal: list = []

    def good() -> None:
        gevent.sleep(1)
        try:
            t = time.perf_counter()
            ws = gws13.connect(srv.url, compression=None, timeout=5)
            ws.send("hi")
            ok = ws.receive(timeout=5) == "hi"
            ws.close()
            normal.append((ok, time.perf_counter() - t))
        except Exception as exc:
            normal.append((False, repr(exc)))

    try:
        gevent.joinall([gevent.spawn(slow) for _ in range(n)] + [gevent.spawn(good)], timeout=40)
        name = f"6 slowloris ({n} requests at 1 byte/s, handshake_timeout=2)"
        worst = max(lifetimes) if len(lifetimes) == n else float("inf")
        row(name, "connections closed by the server / latest close", f"{len(lifetimes) - lifetimes.count(float('inf'))} / {worst:.2f} s",
            f"{n} / <= 3 s", len(lifetimes) == n and worst <= 3)
        ok, took = normal[0] if normal else (False, "did not finish")
        row(name, "a normal client meanwhile", f"echoed in {took * 1000:.0f} ms" if ok else f"failed: {took}",
            "connects and echoes", ok is True)
    finally:
        srv.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--handshake-timeout", type=float)
    parser.add_argument("--close-timeout", type=float)
    parser.add_argument("--keyfile", help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    parser.add_argument("--only", default="1,2,3,4,5,6,7",
                        help="scenarios to run, e.g. 1,3 (7: scenario 3 over TLS)")
    parser.add_argument("--cycles", type=int, default=20000, help="cycles of scenario 2, each way")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    _raise_nofile()
    only = set(args.only.split(","))
    started = time.perf_counter()
    servers = []
    try:
        if only & {"1", "2"}:
            srv = Server()
            servers.append(srv)
            if "1" in only:
                s1_ping_flood(srv)
            if "2" in only:
                s2_cycles(srv, True, args.cycles)
                s2_cycles(srv, False, args.cycles)
        if only & {"3", "4"}:
            srv = Server()  # fresh: VmHWM cannot be reset
            servers.append(srv)
            if "3" in only:
                s3_fragment_flood(srv)
            if "4" in only:
                s4_empty_fragments(srv)
        if "7" in only:
            srv = Server(tls=True)  # fresh, for VmHWM
            servers.append(srv)
            s3_fragment_flood(srv)
        if "5" in only:
            s5_stop()
        if "6" in only:
            s6_slowloris()
    finally:
        for srv in servers:
            srv.stop()
    tracebacks = 0
    for name in Server.logs:
        with open(name, errors="replace") as f:
            tracebacks += f.read().count("Traceback")
    row("all", "tracebacks in the servers' logs", f"{tracebacks}" + (f" (see {', '.join(Server.logs)})" if tracebacks else ""),
        "0", tracebacks == 0)
    if not tracebacks:
        for name in Server.logs:
            os.unlink(name)
    print(f"\ngws13 soak, {time.perf_counter() - started:.0f} s\n")
    print("| scenario | measured | figure | target | |")
    print("|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    return 0 if all(r[4] == "ok" for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
