"""Mirrors gevent-websocket's examples/chat/chat.py (Python 2 there): a
Flask page plus a ``WebSocketApplication`` behind a ``Resource`` on a
``WebSocketServer``; the chat broadcasts through ``ws.handler.server.clients``
and keeps nicknames on ``ws.handler.active_client``.  Changed besides the
import line: Python 3 (print()), the port from argv, the page's script
without jQuery/Foundation from bower (templates/index.html, same protocol).

    python chat.py PORT
"""

import json
import sys

from gevent import monkey
monkey.patch_all()

from flask import Flask, render_template  # noqa: E402
from werkzeug.debug import DebuggedApplication  # noqa: E402

from gws13.compat.geventwebsocket import WebSocketServer, WebSocketApplication, Resource  # noqa: E402

flask_app = Flask(__name__)
flask_app.debug = True


class ChatApplication(WebSocketApplication):
    def on_open(self):
        print("Some client connected!", flush=True)

    def on_message(self, message):
        if message is None:
            return

        message = json.loads(message)

        if message["msg_type"] == "message":
            self.broadcast(message)
        elif message["msg_type"] == "update_clients":
            self.send_client_list(message)

    def send_client_list(self, message):
        current_client = self.ws.handler.active_client
        current_client.nickname = message["nickname"]

        self.ws.send(json.dumps({
            "msg_type": "update_clients",
            "clients": [getattr(client, "nickname", "anonymous")
                        for client in self.ws.handler.server.clients.values()],
        }))

    def broadcast(self, message):
        for client in self.ws.handler.server.clients.values():
            client.ws.send(json.dumps({
                "msg_type": "message",
                "nickname": message["nickname"],
                "message": message["message"],
            }))

    def on_close(self, reason):
        print("Connection closed!", flush=True)


@flask_app.route("/")
def index():
    return render_template("index.html")


WebSocketServer(
    ("127.0.0.1", int(sys.argv[1])),
    Resource([
        ("^/chat", ChatApplication),
        ("^/.*", DebuggedApplication(flask_app)),
    ]),
    debug=False,
).serve_forever()
