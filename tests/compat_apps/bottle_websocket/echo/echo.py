"""Mirrors bottle-websocket's examples/echo/echo.py: a Bottle page and an
echo route with the ``websocket`` plugin, run by ``bottle.run`` with
``GeventWebSocketServer``.  Changed besides the import lines: the port from
argv; index.tpl is written for these tests (no jQuery from a CDN).

    python echo.py PORT
"""

import sys

from bottle import get, run, template
from gws13.compat.bottle_websocket import GeventWebSocketServer  # was: bottle.ext.websocket
from gws13.compat.bottle_websocket import websocket  # was: bottle.ext.websocket


@get("/")
def index():
    return template("index")


@get("/websocket", apply=[websocket])
def echo(ws):
    while True:
        msg = ws.receive()
        if msg is not None:
            ws.send(msg)
        else:
            break


run(host="127.0.0.1", port=int(sys.argv[1]), server=GeventWebSocketServer)
