"""Mirrors gevent-websocket's examples/echoserver.py (Python 2 there): a WSGI
echo endpoint on pywsgi with gevent-websocket's handler, and a plain-HTTP
``/version``.  Changed besides the import line: Python 3 syntax, the port
from argv, ``get_version()`` for the old ``__version__``.

    python echoserver.py PORT
"""

import os
import sys

from gevent.pywsgi import WSGIServer

import gws13.compat.geventwebsocket as geventwebsocket  # was: import geventwebsocket


def echo(environ, start_response):
    websocket = environ.get("wsgi.websocket")
    if websocket is None:
        return http_handler(environ, start_response)
    try:
        while True:
            message = websocket.receive()
            if message is None:
                break
            websocket.send(message)
        websocket.close()
    except geventwebsocket.WebSocketError as ex:
        print("%s: %s" % (ex.__class__.__name__, ex))
    return []


def http_handler(environ, start_response):
    if environ["PATH_INFO"].strip("/") == "version":
        start_response("200 OK", [])
        return [agent.encode()]
    start_response("400 Bad Request", [])
    return [b"WebSocket connection is expected here."]


path = os.path.dirname(geventwebsocket.__file__)
agent = "gevent-websocket/%s" % geventwebsocket.get_version()

if __name__ == "__main__":
    print("Running %s from %s" % (agent, path), flush=True)
    WSGIServer(("127.0.0.1", int(sys.argv[1])), echo,
               handler_class=geventwebsocket.WebSocketHandler).serve_forever()
