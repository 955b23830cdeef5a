"""gws13 through Flask: a ``gws13.flask.Sock`` echo route on ``/``, served as gws13's Flask guide
says (``gevent.pywsgi.WSGIServer`` with ``handler_class=gws13.WebSocketHandler``); 16 MiB message
and frame limits like examples/echo.py, other settings gws13's defaults.  No monkey patching: the
view does nothing that blocks outside gevent."""
from cli import options

import flask
from gevent import pywsgi

import gws13
from gws13.flask import Sock

app = flask.Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": 16 << 20, "max_frame_size": 16 << 20}
sock = Sock(app)


@sock.route("/")
def echo(ws):
    for message in ws:
        ws.send(message)


if __name__ == "__main__":
    pywsgi.WSGIServer(("127.0.0.1", options().port), app, handler_class=gws13.WebSocketHandler, log=None,
                      backlog=1024).serve_forever()
