"""bottle-websocket's API on gws13:
``from gws13.compat.bottle_websocket import GeventWebSocketServer, websocket``
(instead of ``bottle.ext.websocket`` / ``bottle_websocket``).

    @get("/websocket", apply=[websocket])
    def echo(ws):                   # gevent-websocket's socket API
        while True:
            msg = ws.receive()
            if msg is not None:
                ws.send(msg)
            else:
                break

    run(host="127.0.0.1", port=8080, server=GeventWebSocketServer)

``GeventWebSocketServer`` runs gevent's pywsgi server with the
gevent-websocket facade's handler (gws13 underneath).  The ``websocket``
plugin hands the route that server's socket, or, under any other server gws13
works with (:class:`gws13.WebSocketHandler`, gevent's stock handler,
gunicorn's gevent workers), upgrades the request itself.  A plain HTTP
request to a WebSocket route gets a 400 with ``Upgrade: websocket``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import bottle
from gevent import pywsgi

import gws13
import gws13.bottle

from .geventwebsocket.handler import WebSocketHandler
from .geventwebsocket.websocket import WebSocket, adopt

__all__ = ["GeventWebSocketServer", "websocket"]

F = TypeVar("F", bound=Callable[..., Any])


class GeventWebSocketServer(bottle.ServerAdapter):  # type: ignore[misc]  # bottle is untyped
    """``bottle.run(server=GeventWebSocketServer, host=..., port=..., **pywsgi_options)``."""

    def run(self, handler: Callable[..., Any]) -> None:
        options = dict(self.options)
        if self.quiet:
            options.setdefault("log", None)
        server = pywsgi.WSGIServer((self.host, self.port), handler, handler_class=WebSocketHandler,
                                   **options)
        self.server = server  # for a caller that wants to stop it
        server.serve_forever()


def websocket(callback: F) -> F:
    """Bottle plugin/decorator: call ``callback(ws, *url_args)`` with a
    gevent-websocket socket for the request.  The connection is closed when
    the callback returns; what it returns is ignored."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        environ = bottle.request.environ
        ws = environ.get("wsgi.websocket")
        if isinstance(ws, WebSocket):  # GeventWebSocketServer upgraded the request
            callback(ws, *args, **kwargs)
            return None

        def run(gws: gws13.WebSocket, *args: Any, **kwargs: Any) -> None:
            with adopt(gws, environ) as sock:
                callback(sock, *args, **kwargs)

        return gws13.bottle.websocket(run)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
