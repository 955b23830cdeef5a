"""picows (Cython) on the stdlib asyncio loop: echoes every frame with its type, 16 MiB frame
limit, TLS with --certfile/--keyfile (workload T), library defaults otherwise.  --broadcast: "broadcast:<payload>" is sent as <payload> to
every client."""
from cli import options, server_context
import asyncio

from picows import WSListener, WSMsgType, ws_create_server

CLIENTS = set()
BROADCAST = False
PREFIX = b"broadcast:"


class Echo(WSListener):
    def on_ws_connected(self, transport):
        CLIENTS.add(transport)

    def on_ws_disconnected(self, transport):
        CLIENTS.discard(transport)

    def on_ws_frame(self, transport, frame):
        t = frame.msg_type
        if t in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            payload = frame.get_payload_as_memoryview()
            if BROADCAST and t == WSMsgType.TEXT and payload[:10] == PREFIX:
                data = bytes(payload[10:])
                for c in CLIENTS:
                    c.send(WSMsgType.TEXT, data)
                return
            transport.send(t, payload, frame.fin)
        elif t == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main(port, ssl=None):
    server = await ws_create_server(lambda _request: Echo(), "127.0.0.1", port,
                                    max_frame_size=16 << 20, backlog=1024, ssl=ssl)
    await server.serve_forever()


if __name__ == "__main__":
    a = options()
    BROADCAST = a.broadcast
    asyncio.run(main(a.port, server_context(a)))
