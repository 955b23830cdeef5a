#!/usr/bin/env python3
"""Peak memory of a gws13 server hit by a permessage-deflate decompression bomb.

    python benchmarks/deflate_bomb.py                  # 1 GiB of zeros in one ~1 MB frame
    python benchmarks/deflate_bomb.py --size 4096 --frames 4 --limit 16
    python benchmarks/deflate_bomb.py --naive          # also: what an unbounded inflate costs

The gws13 echo server runs in a child process (its defaults: compression on,
max_message_size 1 MiB unless --limit says otherwise).  The bomb is built in
this process, then the child's peak RSS (VmHWM, reset just before the attack
through /proc/self/clear_refs) is read over HTTP before and after the attack.
The server must answer with close code 1009 and its peak RSS must stay near
its idle RSS.  Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MiB = 2 ** 20


def _status() -> Dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    text = open("/proc/self/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def serve(port: int, limit: int) -> None:
    """The child: a gws13 echo server plus /status and /reset over HTTP."""
    from gevent import pywsgi

    import gws13

    gws13.parameters.max_message_size = limit

    def app(environ, start_response):
        ws = environ.get("wsgi.websocket")
        if ws is not None:
            for message in ws:
                ws.send(message)
            return []
        reset = environ["PATH_INFO"] == "/reset" and _reset_peak()
        body = json.dumps(dict(_status(), reset=reset)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    server = pywsgi.WSGIServer(("127.0.0.1", port), app, handler_class=gws13.WebSocketHandler, log=None)
    server.start()      # listening before the parent is told so
    print("ready", flush=True)
    server.serve_forever()


def zero_bomb(size: int, segment: int = 4 * MiB) -> bytes:
    """Raw deflate of ``size`` zero bytes, sync-flushed, without the 00 00 ff ff tail.

    One compressed segment repeated: a segment starts with no back-reference,
    so the concatenation is a valid stream (about 1/1030 of ``size``)."""
    segment = min(segment, size)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = z.compress(bytes(segment)) + z.flush(zlib.Z_SYNC_FLUSH)
    return (piece * (size // segment))[:-4]


def _get(port: int, path: str) -> Dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def attack(port: int, payload: bytes, frames: int) -> Dict[str, object]:
    """Handshake offering permessage-deflate, send the bomb, wait for the close."""
    from gws13.deflate import client_accept, client_offer, Deflate
    from gws13.frames import OP_BINARY, OP_CONT, encode_frame
    from gws13.protocol import Close, Protocol

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {client_offer(Deflate())}\r\n\r\n"
                  ).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    head, _, rest = head.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^sec-websocket-extensions:\s*(.+?)\s*$", head)
    if not match:
        raise SystemExit("the server did not negotiate permessage-deflate")
    extensions = match.group(1).decode()
    proto = Protocol(client=True, max_frame_size=2 ** 40, max_message_size=2 ** 40,
                     deflate=client_accept(extensions, Deflate()))
    step = -(-len(payload) // frames)
    started = time.perf_counter()
    sent = 0
    try:
        for i in range(frames):
            part = payload[i * step:(i + 1) * step]
            sock.sendall(encode_frame(OP_BINARY if i == 0 else OP_CONT, part, fin=i == frames - 1,
                                      rsv1=i == 0, mask=os.urandom(4)))
            sent += len(part)
    except OSError:
        pass  # the server closed while we were still sending: that is the point
    code: Optional[int] = None
    events: List[object] = proto.receive_data(rest)
    try:
        while not any(isinstance(e, Close) for e in events):
            data = sock.recv(65536)
            if not data:
                break
            events += proto.receive_data(data)
    except OSError:
        pass
    elapsed = time.perf_counter() - started
    sock.close()
    for event in events:
        if isinstance(event, Close):
            code = event.code
    return {"extensions": extensions, "close_code": code, "seconds": elapsed, "sent": sent}


def naive_peak(payload: bytes) -> int:
    """Peak RSS (KiB) of a child that inflates ``payload`` with no limit."""
    code = ("import sys, zlib, re\n"
            "data = sys.stdin.buffer.read()\n"
            "out = zlib.decompressobj(-15).decompress(data + b'\\x00\\x00\\xff\\xff')\n"
            "print(len(out), re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n")
    result = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True)
    return int(result.stdout.split()[1])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="decompressed size in MiB (default 1024)")
    ap.add_argument("--frames", type=int, default=1, help="split the compressed message into N frames")
    ap.add_argument("--limit", type=int, default=1, help="server max_message_size in MiB (default 1)")
    ap.add_argument("--naive", action="store_true", help="also measure an unbounded zlib inflate")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.limit * MiB)
        return 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port),
                              "--limit", str(args.limit)], stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("server did not start")
        payload = zero_bomb(args.size * MiB)
        if len(payload) // args.frames > 2 ** 20:
            print(f"note: frames of {len(payload) // args.frames} bytes exceed the default 1 MiB "
                  "max_frame_size: use --frames", file=sys.stderr)
        idle = _get(port, "/status")
        # a small bomb first (2x the limit): the code paths are loaded and warm
        warm = attack(port, zero_bomb(2 * args.limit * MiB, MiB), 1)
        before = _get(port, "/reset")
        result = attack(port, payload, args.frames)
        after = _get(port, "/status")
    finally:
        child.terminate()
        child.wait(10)
    rows = [
        ("bomb", f"{args.size} MiB of zeros -> {len(payload):,} compressed bytes in {args.frames} frame(s)"),
        ("server max_message_size", f"{args.limit} MiB"),
        ("negotiated", result["extensions"]),
        ("close code", f"{result['close_code']} after {result['seconds'] * 1000:.0f} ms "
                       f"({result['sent']:,} compressed bytes sent)"),
        ("server RSS idle / before attack", f"{idle['VmRSS'] / 1024:.1f} MiB / {before['VmRSS'] / 1024:.1f} MiB"),
        ("server peak RSS during attack", f"{after['VmHWM'] / 1024:.1f} MiB "
                                          f"(+{(after['VmHWM'] - before['VmRSS']) / 1024:.1f} MiB)"
                                          + ("" if before.get("reset") else " [VmHWM reset unavailable:"
                                             " peak since start]")),
        ("server RSS after", f"{after['VmRSS'] / 1024:.1f} MiB"),
    ]
    if args.naive:
        rows.append(("unbounded zlib inflate, peak RSS", f"{naive_peak(payload) / 1024:.1f} MiB"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    ok = result["close_code"] == 1009 and warm["close_code"] == 1009
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
