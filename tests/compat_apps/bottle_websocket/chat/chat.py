"""Mirrors bottle-websocket's examples/chat/chat.py: every message goes to
every connected socket (a module-level set).  Changed besides the import
lines: the port from argv; index.tpl is written for these tests.

    python chat.py PORT
"""

import sys

from bottle import get, template, run
from gws13.compat.bottle_websocket import GeventWebSocketServer  # was: bottle.ext.websocket
from gws13.compat.bottle_websocket import websocket  # was: bottle.ext.websocket

users = set()


@get("/")
def index():
    return template("index")


@get("/websocket", apply=[websocket])
def chat(ws):
    users.add(ws)
    while True:
        msg = ws.receive()
        if msg is not None:
            for u in users:
                u.send(msg)
        else:
            break
    users.remove(ws)


run(host="127.0.0.1", port=int(sys.argv[1]), server=GeventWebSocketServer)
