"""Mirrors flask-sock's examples/echo-gevent.py: Flask-Sock's echo route
(``'close'`` ends it) served by gevent's stock pywsgi server, no special
handler, after monkey patching.  Changed besides the import line: the port
from argv; templates/index.html is written for these tests (the same page
shape: type a line, see it echoed).

    python echo_gevent.py PORT
"""

import sys

from gevent import monkey
monkey.patch_all()

from gevent.pywsgi import WSGIServer  # noqa: E402
from flask import Flask, render_template  # noqa: E402
from gws13.compat.flask_sock import Sock  # noqa: E402  (was: from flask_sock import Sock)

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}

sock = Sock(app)


@app.route("/")
def index():
    return render_template("index.html")


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        if data == "close":
            break
        ws.send(data)


if __name__ == "__main__":
    WSGIServer(("127.0.0.1", int(sys.argv[1])), app).serve_forever()
