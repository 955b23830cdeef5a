"""flask-sock: its echo route on ``/``, served the way flask-sock documents for gevent
(``gevent.pywsgi.WSGIServer`` with the standard library monkey patched: simple-websocket, inside
flask-sock, runs its reader in a thread); 16 MiB message limit, other settings the defaults."""
from gevent import monkey

monkey.patch_all()

from cli import options  # noqa: E402

import flask  # noqa: E402
from flask_sock import Sock  # noqa: E402
from gevent import pywsgi  # noqa: E402

app = flask.Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": 16 << 20}
sock = Sock(app)


@sock.route("/")
def echo(ws):
    while True:  # flask-sock ends the view on the client's close (ConnectionClosed)
        ws.send(ws.receive())


if __name__ == "__main__":
    pywsgi.WSGIServer(("127.0.0.1", options().port), app, log=None, backlog=1024).serve_forever()
