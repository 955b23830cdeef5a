"""simple-websocket (wsproto inside) under gevent.pywsgi with monkey patching, the way flask-sock
runs on gevent; message limit 16 MiB, other settings are the library defaults."""
from gevent import monkey

monkey.patch_all()

from cli import options  # noqa: E402

import simple_websocket  # noqa: E402
from gevent import pywsgi  # noqa: E402


def app(environ, start_response):
    ws = simple_websocket.Server(environ, max_message_size=16 << 20)
    try:
        while True:
            ws.send(ws.receive())  # str -> text frame, bytes -> binary frame
    except simple_websocket.ConnectionClosed:
        pass
    return []


if __name__ == "__main__":
    pywsgi.WSGIServer(("127.0.0.1", options().port), app, log=None, backlog=1024).serve_forever()
