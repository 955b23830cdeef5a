"""Mirrors Flask-Sockets' README ("Simple usage of route decorator"): an
echo route written as ``while not ws.closed: ws.send(ws.receive())`` next to
a Flask HTTP route, served by pywsgi with gevent-websocket's handler.
Changed besides the import lines: the port from argv; ``server`` chooses the
handler for the tests (``gws13``: gws13.WebSocketHandler; ``stock``: gevent's
own; the default: the gevent-websocket facade's, as in the README).

    python readme_echo.py PORT [facade|gws13|stock]
"""

import sys

from flask import Flask
from gws13.compat.flask_sockets import Sockets  # was: from flask_sockets import Sockets


app = Flask(__name__)
sockets = Sockets(app)


@sockets.route("/echo")
def echo_socket(ws):
    while not ws.closed:
        message = ws.receive()
        ws.send(message)


@app.route("/")
def hello():
    return "Hello World!"


if __name__ == "__main__":
    from gevent import pywsgi
    from gws13.compat.geventwebsocket.handler import WebSocketHandler  # was: geventwebsocket.handler

    import gws13

    handlers = {"facade": WebSocketHandler, "gws13": gws13.WebSocketHandler, "stock": pywsgi.WSGIHandler}
    handler = handlers[sys.argv[2] if len(sys.argv) > 2 else "facade"]
    server = pywsgi.WSGIServer(("127.0.0.1", int(sys.argv[1])), app, handler_class=handler)
    server.serve_forever()
