"""Mirrors flask-sock's examples/clock.py: a background *thread* sends the
time every second to every connected client, which ends with ``'stop'``.
Upstream runs it with ``app.run()`` (Werkzeug's threaded server); gws13 needs
gevent, so this runs it as flask-sock's gevent example does (monkey
patching, which turns the thread and time.sleep into greenlet ones, and
gevent's stock WSGIServer).  Changed besides the import line: that server,
the port from argv; templates/clock.html is written for these tests.

    python clock.py PORT
"""

import sys

from gevent import monkey
monkey.patch_all()

import datetime  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from flask import Flask, render_template  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from gws13.compat.flask_sock import Sock  # noqa: E402  (was: from flask_sock import Sock)

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}

sock = Sock(app)

client_list = []


@app.route("/")
def index():
    return render_template("clock.html")


def send_time():
    while True:
        time.sleep(1)
        clients = client_list.copy()
        for client in clients:
            try:
                client.send(json.dumps({
                    "text": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
                }))
            except:  # noqa: E722  (as upstream: a client that is gone is dropped)
                client_list.remove(client)


@sock.route("/clock")
def clock(ws):
    client_list.append(ws)
    while True:
        data = ws.receive()
        if data == "stop":
            break
    client_list.remove(ws)


if __name__ == "__main__":
    t = threading.Thread(target=send_time)
    t.daemon = True
    t.start()
    WSGIServer(("127.0.0.1", int(sys.argv[1])), app).serve_forever()
