"""gevent-websocket's ``BaseProtocol``: the layer between a socket and a
:class:`~..resource.WebSocketApplication`.

``PROTOCOL_NAME``, when set, is the subprotocol the server answers for the
application's path (if the client offers it)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["BaseProtocol"]


class BaseProtocol:
    """Passes the socket's events to its application; subclass it to give the
    application a subprotocol (``PROTOCOL_NAME``) or another framing."""

    #: the subprotocol answered in the handshake ("" for none)
    PROTOCOL_NAME = ""

    def __init__(self, app: Any) -> None:
        self._app = app

    def on_open(self) -> None:
        self.app.on_open()

    def on_message(self, message: Any) -> None:
        self.app.on_message(message)

    def on_close(self, reason: Optional[str] = None) -> None:
        self.app.on_close(reason)

    @property
    def app(self) -> Any:
        """The application; raises Exception("No application coupled") without one."""
        if not self._app:
            raise Exception("No application coupled")
        return self._app

    @property
    def server(self) -> Any:
        """The pywsgi server of the application's socket (None before it has one)."""
        ws = getattr(self.app, "ws", None)
        return None if ws is None else ws.handler.server

    @property
    def handler(self) -> Any:
        """The handler of the application's socket (None before it has one)."""
        ws = getattr(self.app, "ws", None)
        return None if ws is None else ws.handler
