"""gevent-websocket's API on gws13: change ``geventwebsocket`` to
``gws13.compat.geventwebsocket`` in the imports and nothing else.

    from gws13.compat.geventwebsocket import WebSocketServer, WebSocketApplication, Resource
    from gws13.compat.geventwebsocket.handler import WebSocketHandler
    from gws13.compat.geventwebsocket.gunicorn.workers import GeventWebSocketWorker
    from gws13.compat.geventwebsocket.exceptions import WebSocketError

Modules: :mod:`.handler` (``WebSocketHandler``), :mod:`.server`
(``WebSocketServer``), :mod:`.resource` (``WebSocketApplication``,
``Resource``), :mod:`.websocket` (the socket object), :mod:`.exceptions`,
:mod:`.protocols.base` (``BaseProtocol``), :mod:`.gunicorn.workers`.  The
socket is a thin layer over :class:`gws13.WebSocket`; what still differs
from gevent-websocket is listed in ``docs/migration.md``.
"""

from .exceptions import WebSocketError
from .handler import WebSocketHandler
from .resource import Resource, WebSocketApplication
from .server import WebSocketServer

#: the gevent-websocket release whose API this mirrors
VERSION = (0, 10, 1, "final", 0)

__all__ = ["WebSocketApplication", "Resource", "WebSocketServer", "WebSocketError", "WebSocketHandler",
           "get_version", "VERSION"]


def get_version(*args: object, **kwargs: object) -> str:
    """The gevent-websocket version whose API this facade mirrors ("0.10.1")."""
    return "%d.%d.%d" % VERSION[:3]
