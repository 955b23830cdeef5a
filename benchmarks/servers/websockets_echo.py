"""websockets (asyncio implementation): compression off (--compression: websockets' default
permessage-deflate, for workload J), TLS with --certfile/--keyfile (workload T), C speedups required, 16 MiB message limit, default keepalive
(ping every 20 s).  --broadcast: "broadcast:<payload>" is sent as
<payload> to every client with websockets' broadcast()."""
from cli import options, server_context
import asyncio

import websockets.frames
import websockets.speedups
from websockets.asyncio.server import broadcast, serve

assert websockets.frames.apply_mask is websockets.speedups.apply_mask, "websockets C speedups not active"
CLIENTS = set()


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


async def echo_or_broadcast(ws):
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("broadcast:"):
                broadcast(CLIENTS, msg[10:])
            else:
                await ws.send(msg)
    finally:
        CLIENTS.discard(ws)


async def main(port, handler, compression=None, ssl=None):
    async with serve(handler, "127.0.0.1", port, compression=compression, max_size=16 << 20,
                     backlog=1024, ssl=ssl) as server:
        await server.serve_forever()


if __name__ == "__main__":
    a = options()
    asyncio.run(main(a.port, echo_or_broadcast if a.broadcast else echo, "deflate" if a.compression else None,
                     server_context(a)))
