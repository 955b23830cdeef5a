"""Mirrors Flask-Sockets' README ("Usage of Flask blueprints"): an HTML
blueprint on the app and a WebSocket blueprint registered with
``sockets.register_blueprint(ws, url_prefix=...)``.  Changed besides the
import lines: the port from argv; the prefixes are ``/`` as in the README plus
a second registration under ``/v2`` to show the prefix is applied.

    python readme_blueprints.py PORT
"""

import sys

from flask import Flask, Blueprint
from gws13.compat.flask_sockets import Sockets  # was: from flask_sockets import Sockets


html = Blueprint(r"html", __name__)
ws = Blueprint(r"ws", __name__)


@html.route("/")
def hello():
    return "Hello World!"


@ws.route("/echo")
def echo_socket(socket):
    while not socket.closed:
        message = socket.receive()
        socket.send(message)


app = Flask(__name__)
sockets = Sockets(app)

app.register_blueprint(html, url_prefix=r"/")
sockets.register_blueprint(ws, url_prefix=r"/")
sockets.register_blueprint(ws, url_prefix=r"/v2")


if __name__ == "__main__":
    from gevent import pywsgi
    from gws13.compat.geventwebsocket.handler import WebSocketHandler  # was: geventwebsocket.handler

    server = pywsgi.WSGIServer(("127.0.0.1", int(sys.argv[1])), app, handler_class=WebSocketHandler)
    server.serve_forever()
