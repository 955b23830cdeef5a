"""Ceiling: the least per-message work a gevent WebSocket server can do.

A real (minimal) RFC 6455 handshake, then per message: read the header (+ extended length,
+ mask key), read the payload, unmask it with the C routine from websockets.speedups and send
header + payload back with one sendall().  No UTF-8 validation, no fragmentation or control-frame
handling beyond close, no str decoding.  --broadcast: a text message "broadcast:<payload>" is sent
as <payload> to every connected client instead of being echoed (fan-out ceiling for workload E).
"""
from cli import options
import base64
import hashlib
import socket
import struct

from gevent.server import StreamServer
from websockets.speedups import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
U16, U64 = struct.Struct("!H"), struct.Struct("!Q")
CLIENTS = set()
BROADCAST = False


def header(b0, n):
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return bytes((b0, 126)) + U16.pack(n)
    return bytes((b0, 127)) + U64.pack(n)


def handle(sock, _addr):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rfile = sock.makefile("rb", 65536)
    key = b""
    while True:
        line = rfile.readline(8192)
        if not line:
            return
        if line in (b"\r\n", b"\n"):
            break
        if line[:18].lower() == b"sec-websocket-key:":
            key = line[18:].strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    read, send = rfile.read, sock.sendall
    CLIENTS.add(sock)
    try:
        while True:
            h = read(2)
            if len(h) < 2:
                return
            b0, n = h[0], h[1] & 0x7F
            if n == 126:
                n = U16.unpack(read(2))[0]
            elif n == 127:
                n = U64.unpack(read(8))[0]
            mask = read(4) if h[1] & 0x80 else None
            payload = read(n)
            if len(payload) < n:
                return
            if mask:
                payload = apply_mask(payload, mask)
            if b0 & 0x0F == 8:
                send(header(0x88, len(payload)) + payload)
                return
            if BROADCAST and payload[:10] == b"broadcast:":
                frame = header(0x81, n - 10) + payload[10:]
                for s in list(CLIENTS):
                    try:
                        s.sendall(frame)
                    except OSError:
                        CLIENTS.discard(s)
                continue
            send(header(b0, n) + payload)
    finally:
        CLIENTS.discard(sock)


if __name__ == "__main__":
    a = options()
    BROADCAST = a.broadcast
    StreamServer(("127.0.0.1", a.port), handle, backlog=1024).serve_forever()
