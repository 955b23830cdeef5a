#!/usr/bin/env python3
"""Bytes on the wire and CPU for a stream of 2 KiB JSON messages, with and without
permessage-deflate.

    python benchmarks/compression.py                   # 5000 messages per setting
    python benchmarks/compression.py --messages 20000 --size 2048

For each setting a gws13 server (a child process, gevent.pywsgi +
WebSocketHandler) streams the same JSON messages to one client over loopback;
the client (gws13's protocol core on a plain socket) counts the bytes it
receives after the handshake (frame headers included, TCP/IP headers not) and
checks every message.  CPU is process time: the server's for its send loop
(JSON text -> compressed frames -> socket), the client's for reading and
inflating.  The "codec" columns time the compressor and decompressor alone,
without I/O, and "state" is the memory one server connection's zlib objects
hold (tracemalloc, after one message each way).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import tracemalloc
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from gws13.deflate import Deflate, client_accept, client_offer, server_negotiate  # noqa: E402

SETTINGS: Dict[str, Optional[Deflate]] = {
    "off": None,
    "default (12 bits, memLevel 5)": Deflate(),
    "15 bits, memLevel 8": Deflate(server_max_window_bits=15, mem_level=8),
    "no context takeover": Deflate(server_no_context_takeover=True, client_no_context_takeover=True),
}

_FIRST = ["ada", "grace", "linus", "guido", "barbara", "ken", "dennis", "margaret", "edsger", "donald"]
_WORDS = ("the server sends a message to every client in the room when someone joins leaves or writes "
          "and each message carries the user the time the text and some metadata about the channel "
          "status typing presence read receipts reactions attachments links previews").split()


def json_messages(count: int, size: int, seed: int = 1) -> List[str]:
    """``count`` JSON documents of about ``size`` bytes: a realistic feed of
    chat/event records (repeated keys, varied values)."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        records = []
        doc: Dict[str, Any] = {"type": "batch", "seq": i, "channel": f"room-{rnd.randrange(50)}",
                               "records": records}
        while len(json.dumps(doc)) < size - 220:
            records.append({
                "id": rnd.getrandbits(48),
                "user": {"name": rnd.choice(_FIRST), "id": rnd.randrange(10 ** 6),
                         "online": rnd.random() < 0.5},
                "ts": 1_700_000_000 + rnd.randrange(10 ** 7),
                "text": " ".join(rnd.choice(_WORDS) for _ in range(rnd.randrange(4, 16))),
                "reactions": {rnd.choice(["+1", "heart", "eyes"]): rnd.randrange(9)},
            })
        text = json.dumps(doc)
        out.append(text[:size] if len(text) > size else text + " " * (size - len(text)))
    return out


# -- the server child --------------------------------------------------------------

def serve(port: int, setting: str, count: int, size: int) -> None:
    from gevent import pywsgi

    import gws13

    gws13.parameters.compression = SETTINGS[setting]
    messages = json_messages(count, size)

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        started = time.process_time()
        for message in messages:
            ws.send(message)
        cpu = time.process_time() - started
        ws.send(json.dumps({"server_cpu": cpu, "extensions": ws.extensions}), compress=False)
        ws.receive()
        return []

    server = pywsgi.WSGIServer(("127.0.0.1", port), app, handler_class=gws13.WebSocketHandler, log=None)
    server.start()      # listening before the parent is told so
    print("ready", flush=True)
    server.serve_forever()


# -- the client --------------------------------------------------------------------

def run_client(port: int, setting: Optional[Deflate], count: int) -> Dict[str, Any]:
    from gws13.frames import OP_CLOSE, encode_frame, encode_close
    from gws13.protocol import Message, Protocol

    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    offer = f"Sec-WebSocket-Extensions: {client_offer(setting)}\r\n" if setting else ""
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{offer}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    head, _, rest = head.partition(b"\r\n\r\n")
    answer = None
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-extensions":
            answer = value.strip()
    deflate = client_accept(answer, setting) if setting else None
    proto = Protocol(client=True, max_message_size=2 ** 24, deflate=deflate)
    received: List[Any] = []
    wire = len(rest)
    started = time.process_time()
    received += [e.data for e in proto.receive_data(rest) if isinstance(e, Message)]
    while len(received) < count + 1:
        data = sock.recv(1 << 16)
        if not data:
            raise SystemExit("server closed early")
        wire += len(data)
        received += [e.data for e in proto.receive_data(data) if isinstance(e, Message)]
    cpu = time.process_time() - started
    sock.sendall(encode_frame(OP_CLOSE, encode_close(1000), mask=os.urandom(4)))
    sock.close()
    trailer = json.loads(received.pop())
    return {"messages": received, "wire": wire - (len(json.dumps(trailer)) + 2), "client_cpu": cpu,
            "server_cpu": trailer["server_cpu"], "extensions": trailer["extensions"]}


def codec_costs(setting: Optional[Deflate], messages: List[str]) -> Dict[str, float]:
    """Microseconds per message for compress and decompress alone, and the
    bytes one connection's zlib state holds."""
    if setting is None:
        return {"compress_us": 0.0, "decompress_us": 0.0, "state": 0}
    payloads = [m.encode() for m in messages]
    server, answer = server_negotiate(client_offer(setting), setting)
    client = client_accept(answer, setting)
    started = time.process_time()
    frames = [server.compress(p) for p in payloads]
    compress_us = (time.process_time() - started) / len(payloads) * 1e6
    started = time.process_time()
    for frame in frames:
        client.decompress(frame, 2 ** 24)
        client.finish(2 ** 24)
    decompress_us = (time.process_time() - started) / len(payloads) * 1e6
    # memory held by a fresh server connection after one message each way
    incoming = client_accept(answer, setting).compress(payloads[1])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fresh, _ = server_negotiate(client_offer(setting), setting)
    out = fresh.compress(payloads[0])
    inflated = fresh.decompress(incoming, 2 ** 24) + fresh.finish(2 ** 24)
    state = tracemalloc.get_traced_memory()[0] - base - sys.getsizeof(out) - sys.getsizeof(inflated)
    tracemalloc.stop()
    del fresh
    return {"compress_us": compress_us, "decompress_us": decompress_us, "state": state}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--size", type=int, default=2048, help="bytes per JSON message (default 2048)")
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "SETTING"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.messages, args.size)
        return 0

    expected = json_messages(args.messages, args.size)
    payload = sum(len(m.encode()) for m in expected)
    rows = []
    for name, setting in SETTINGS.items():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port), name,
                                  "--messages", str(args.messages), "--size", str(args.size)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("server did not start")
            result = run_client(port, setting, args.messages)
        finally:
            child.terminate()
            child.wait(10)
        if result["messages"] != expected:
            raise SystemExit(f"{name}: messages did not arrive intact")
        costs = codec_costs(setting, expected)
        rows.append((name, result, costs))

    n = args.messages
    print(f"{n} JSON messages of {args.size} bytes ({payload:,} bytes of payload), server -> client "
          "over loopback\n")
    header = ("setting", "wire bytes", "ratio", "bytes/msg", "server CPU µs/msg", "client CPU µs/msg",
              "compress µs", "inflate µs", "zlib state")
    table = [header]
    base_server = rows[0][1]["server_cpu"] / n * 1e6
    for name, result, costs in rows:
        table.append((
            name,
            f"{result['wire']:,}",
            f"{payload / result['wire']:.2f}x",
            f"{result['wire'] / n:.0f}",
            f"{result['server_cpu'] / n * 1e6:.0f}",
            f"{result['client_cpu'] / n * 1e6:.0f}",
            f"{costs['compress_us']:.0f}" if costs["state"] else "-",
            f"{costs['decompress_us']:.0f}" if costs["state"] else "-",
            f"{costs['state'] / 1024:.0f} KiB" if costs["state"] else "-",
        ))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("| " + " | ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                                 for j, (c, w) in enumerate(zip(row, widths))) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) if j == 0 else "-" * (w + 1) + ":"
                                 for j, w in enumerate(widths)) + "|")
    print("\nnegotiated: " + "; ".join(f"{name}: {result['extensions'] or 'none'}"
                                       for name, result, _ in rows))
    print(f"server CPU without compression: {base_server:.0f} µs/msg (framing, syscalls, gevent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
