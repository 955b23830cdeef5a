"""gevent-websocket's exceptions.

:class:`WebSocketError` is a :class:`socket.error` (:class:`OSError`), as in
gevent-websocket, so ``except socket.error`` around ``send()`` keeps working;
it is also a :class:`gws13.WebSocketError`, so gws13's integrations close the
connection quietly (no traceback) when one ends an application.
"""

from __future__ import annotations

import socket
from typing import Any

import gws13

__all__ = ["WebSocketError", "ProtocolError", "FrameTooLargeException"]


class WebSocketError(socket.error, gws13.WebSocketError):
    """Base class of the facade's errors: a ``socket.error`` and a
    ``gws13.WebSocketError`` (close code 1011 when one ends a connection)."""

    def __init__(self, *args: Any) -> None:
        socket.error.__init__(self, *args)
        # what gws13 sends as the close reason when this error ends a connection
        self.reason = str(args[0]) if args else ""


class ProtocolError(WebSocketError):
    """The peer broke the protocol (close code 1002)."""

    code = 1002


class FrameTooLargeException(ProtocolError):
    """A frame or message was over the size limit (close code 1009)."""

    code = 1009
