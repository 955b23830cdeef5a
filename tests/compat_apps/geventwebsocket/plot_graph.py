"""Mirrors gevent-websocket's examples/plot_graph.py (Python 2 there): a
``WebSocketApplication`` whose ``on_open`` streams random points, next to a
static page, routed by a ``Resource`` built from a dict, on a
``WebSocketServer``; or under gunicorn with the gevent-websocket worker, as
its docstring says.  Changed besides the import lines: Python 3 (range), the
port from argv, a module-level ``app`` for gunicorn (the upstream docstring's
``plot_graph:app`` names one that the file does not define), the page drawn on
a canvas instead of jQuery/flot from CDNs (plot_graph.html, same protocol).

    python plot_graph.py PORT
    gunicorn -k "gws13.compat.geventwebsocket.gunicorn.workers.GeventWebSocketWorker" plot_graph:app
"""

import os
import random
import sys

import gevent

from gws13.compat.geventwebsocket.server import WebSocketServer  # was: geventwebsocket.server
from gws13.compat.geventwebsocket.resource import WebSocketApplication, Resource  # was: geventwebsocket.resource

HERE = os.path.dirname(os.path.abspath(__file__))


class PlotApplication(WebSocketApplication):
    def on_open(self):
        for i in range(10000):
            self.ws.send("0 %s %s\n" % (i, random.random()))
            gevent.sleep(0.1)


def static_wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html")])
    with open(os.path.join(HERE, "plot_graph.html"), "rb") as page:
        return page.readlines()


resource = Resource(apps={
    "/": static_wsgi_app,
    "/data": PlotApplication,
})
app = resource

if __name__ == "__main__":
    server = WebSocketServer(("127.0.0.1", int(sys.argv[1])), resource, debug=True)
    server.serve_forever()
