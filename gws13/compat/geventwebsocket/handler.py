"""gevent-websocket's pywsgi handler, on gws13.

    server = pywsgi.WSGIServer(addr, app, handler_class=WebSocketHandler)

As in gevent-websocket, a WebSocket request is upgraded *before* the
application runs: ``environ["wsgi.websocket"]`` holds a
:class:`~.websocket.WebSocket` (gevent-websocket's API), ``start_response``
does nothing, whatever the application returns is consumed and ignored, and
the connection is closed when it returns.  The client is in
``handler.server.clients`` (address -> :class:`~.websocket.Client`) meanwhile.
When the application (e.g. a :class:`~.resource.Resource`) has
``app_protocol(path)``, that subprotocol is answered if the client offers it.

Everything under it is :class:`gws13.WebSocketHandler`: the handshake is
checked first (a bad one is answered 400/426 and never reaches the
application), plain HTTP requests are served as by pywsgi, closing the server
says 1001 to every open WebSocket.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional

from gevent import pywsgi

import gws13
from gws13.handshake import is_upgrade_request

from .websocket import Client, WebSocket, _logger, serve

__all__ = ["WebSocketHandler", "Client"]


def _ignore_start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    # the response is the WebSocket: an HTTP status set now would only make
    # the access log lie (engine.io calls start_response("200 OK") at the end)
    return lambda data: None


class WebSocketHandler(gws13.WebSocketHandler):
    """gevent-websocket's ``WebSocketHandler`` API on :class:`gws13.WebSocketHandler`.

    ``server.pre_start_hook(handler)``, when the server has one and it returns
    true, serves the request as plain HTTP.  ``handler.websocket`` is the
    socket while the connection is open, ``handler.active_client`` its entry in
    ``server.clients``, ``handler.logger`` the server's logger."""

    #: only RFC 6455 (gevent-websocket also accepted the drafts 7 and 8)
    SUPPORTED_VERSIONS = ("13",)

    _gws13_compat_handler = True  # websocket.serve uses this handler as ws.handler
    websocket: Optional[WebSocket] = None

    def run_application(self) -> None:
        hook = getattr(self.server, "pre_start_hook", None)
        if hook is not None and hook(self):
            return pywsgi.WSGIHandler.run_application(self)
        if not is_upgrade_request(self.environ or {}):
            return super().run_application()
        application = self.application
        self.application = lambda environ, start_response: self._run_websocket(
            application, environ, start_response)
        try:
            return super().run_application()
        finally:
            self.application = application
            self.websocket = None

    def _run_websocket(self, application: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        protocol = None
        if hasattr(application, "app_protocol"):
            protocol = application.app_protocol(environ.get("PATH_INFO", "")) or None

        def proc(ws: WebSocket) -> None:
            self.websocket = ws
            result = application(environ, _ignore_start_response)
            try:
                for _ in result or ():  # run a generator application to its end
                    pass
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        return serve(environ, start_response, proc, protocol, handler=self)

    @property
    def active_client(self) -> Client:
        """This connection's entry in ``server.clients``."""
        client: Client = self.server.clients[self.client_address]  # type: ignore[attr-defined]
        return client

    @property
    def logger(self) -> logging.Logger:
        return getattr(self.server, "logger", None) or _logger
