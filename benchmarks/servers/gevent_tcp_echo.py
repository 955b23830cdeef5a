"""Ceiling: raw gevent TCP echo (StreamServer, one greenlet per connection, no framing)."""
from cli import options
import socket

from gevent.server import StreamServer


def handle(sock, _addr):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, sendall = sock.recv, sock.sendall
    while True:
        data = recv(262144)
        if not data:
            return
        sendall(data)


if __name__ == "__main__":
    StreamServer(("127.0.0.1", options().port), handle, backlog=1024).serve_forever()
