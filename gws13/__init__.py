"""gws13: RFC 6455 WebSockets for gevent WSGI servers.

    server = gevent.pywsgi.WSGIServer(addr, app, handler_class=gws13.WebSocketHandler)

then either use ``environ["wsgi.websocket"]`` (gevent-websocket style) or the
egg-style API: ``with_websocket(environ, start_response, proc)``.
"""

from .api import (current_websocket, receive_message, send_message, with_concurrent_websocket,
                  with_websocket)
from .connection import PendingPing, WebSocket
from .deflate import Deflate  # also registers the ``compression`` parameter
from .exceptions import (AccessDenied, ConnectionClosed, ConnectionTimeout, HandshakeError,
                         InvalidData, InvalidHandshake, InvalidOptype, MessageTooLarge,
                         MissingUpgradeHeader, ProtocolError, ReservedBitsNotSupported,
                         UnexpectedError, UnsupportedVersion, WebSocketError)
from .hub import Hub
from .params import Parameters, parameterize, parameters
from .server import WebSocketHandler
from .client import connect
from .wsgi import websocket_app

__version__ = "0.1.0"

__all__ = [
    "WebSocketHandler", "WebSocket", "PendingPing", "connect", "websocket_app",
    "with_websocket", "with_concurrent_websocket", "receive_message", "send_message",
    "current_websocket", "parameters", "parameterize", "Parameters", "Deflate",
    "WebSocketError", "ProtocolError", "ReservedBitsNotSupported", "InvalidData",
    "MessageTooLarge", "ConnectionTimeout", "InvalidOptype", "HandshakeError",
    "MissingUpgradeHeader", "InvalidHandshake", "UnsupportedVersion", "AccessDenied",
    "UnexpectedError", "ConnectionClosed",
    "Hub",
]
