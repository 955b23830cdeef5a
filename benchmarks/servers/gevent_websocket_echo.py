"""gevent-websocket 0.10.1: gevent.pywsgi.WSGIServer + geventwebsocket.handler.WebSocketHandler,
library defaults.  --broadcast: "broadcast:<payload>" is sent as <payload> to every client."""
from cli import options

from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

CLIENTS = set()
BROADCAST = False


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"websocket only\n"]
    CLIENTS.add(ws)
    try:
        while True:
            msg = ws.receive()  # str for text, bytearray for binary, None on close
            if msg is None:
                break
            if BROADCAST and isinstance(msg, str) and msg.startswith("broadcast:"):
                for c in list(CLIENTS):
                    try:
                        c.send(msg[10:])
                    except Exception:  # noqa: BLE001 - a dead client must not stop the fan-out
                        CLIENTS.discard(c)
                continue
            ws.send(msg)  # binary iff not str: same opcode as received
    finally:
        CLIENTS.discard(ws)
    return []


if __name__ == "__main__":
    a = options()
    BROADCAST = a.broadcast
    pywsgi.WSGIServer(("127.0.0.1", a.port), app, handler_class=WebSocketHandler, log=None,
                      backlog=1024).serve_forever()
