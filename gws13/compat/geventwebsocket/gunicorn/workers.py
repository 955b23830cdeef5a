"""gevent-websocket's gunicorn worker, on gws13's.

    gunicorn -k gws13.compat.geventwebsocket.gunicorn.workers.GeventWebSocketWorker app:app

Requests are handled by the facade's :class:`~..handler.WebSocketHandler`
(``environ["wsgi.websocket"]`` is a gevent-websocket socket) with gunicorn's
access log; the worker is :class:`gws13.gunicorn.GeventWebSocketWorker`, so
a graceful stop (SIGTERM) says 1001 to every WebSocket before the worker exits.
"""

from __future__ import annotations

from gws13.gunicorn import GeventWebSocketWorker as _Gws13Worker
from gws13.gunicorn import GunicornWebSocketHandler

from ..handler import WebSocketHandler

__all__ = ["GeventWebSocketWorker"]


class _GunicornHandler(WebSocketHandler, GunicornWebSocketHandler):
    """The facade's handler with gunicorn's environ additions and access log."""


class GeventWebSocketWorker(_Gws13Worker):
    """gunicorn's gevent pywsgi worker with gevent-websocket's handler API."""

    wsgi_handler = _GunicornHandler
