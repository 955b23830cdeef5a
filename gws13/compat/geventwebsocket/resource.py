"""gevent-websocket's ``WebSocketApplication`` and ``Resource`` (routing by path).

    class Echo(WebSocketApplication):
        def on_message(self, message):
            if message is not None:
                self.ws.send(message)

    WebSocketServer(("", 8000), Resource([("^/echo", Echo), ("^/.*", wsgi_app)])).serve_forever()

``Resource`` works under the facade's server and handler, and also under
:class:`gws13.WebSocketHandler`, gevent's stock pywsgi handler and
gunicorn's gevent workers (it upgrades the request itself there).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, List, Mapping, Sequence, Tuple, Type, Union

from .exceptions import WebSocketError
from .protocols.base import BaseProtocol
from .websocket import WebSocket, is_websocket_request, serve

__all__ = ["WebSocketApplication", "Resource"]


class WebSocketApplication:
    """One instance per connection: ``handle()`` calls ``on_open()``, then
    ``on_message(message)`` for every ``ws.receive()`` (``None`` once, at the
    end) and ``on_close(reason)`` when ``receive`` raises after the end.  The
    default ``on_message`` echoes."""

    protocol_class: Type[BaseProtocol] = BaseProtocol

    def __init__(self, ws: WebSocket) -> None:
        self.protocol = self.protocol_class(self)
        self.ws = ws

    def handle(self) -> None:
        self.protocol.on_open()
        while True:
            try:
                message = self.ws.receive()
            except WebSocketError:
                self.protocol.on_close()
                break
            self.protocol.on_message(message)

    def on_open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_close(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_message(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self.ws.send(message, **kwargs)

    @classmethod
    def protocol_name(cls) -> str:
        return cls.protocol_class.PROTOCOL_NAME


#: a WebSocketApplication subclass, or a WSGI application
AppSpec = Any


class Resource:
    """Route requests by regular expression (``re.match`` on ``PATH_INFO``, in
    order): WebSocket requests to the first matching
    :class:`WebSocketApplication` subclass, others to the first matching
    WSGI application.  ``apps`` is a list of ``(pattern, app)`` pairs or a
    dict (ordered since Python 3.7, so no warning about it here).

    Raises Exception("No apps defined") when nothing matches, as
    gevent-websocket does."""

    def __init__(self, apps: Union[Sequence[Tuple[str, AppSpec]], Mapping[str, AppSpec], None] = None) -> None:
        if isinstance(apps, Mapping):
            self.apps: List[Tuple[str, AppSpec]] = list(apps.items())
        else:
            self.apps = list(apps) if apps else []

    def _is_websocket_app(self, app: Any) -> bool:
        # override to route other kinds of WebSocket applications
        return isinstance(app, type) and issubclass(app, WebSocketApplication)

    def _app_by_path(self, environ_path: str, is_websocket_request: bool) -> AppSpec:
        for path, app in self.apps:
            if re.match(path, environ_path) and is_websocket_request == self._is_websocket_app(app):
                return app
        return None

    def app_protocol(self, path: str) -> str:
        """The subprotocol of the WebSocket application at ``path`` ("" for none)."""
        app = self._app_by_path(path, True)
        return app.protocol_name() if hasattr(app, "protocol_name") else ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        websocket_call = is_websocket_request(environ)
        app = self._app_by_path(environ.get("PATH_INFO", ""), websocket_call)
        if app is None:
            raise Exception("No apps defined")
        if not websocket_call:
            body: Iterable[bytes] = app(environ, start_response)
            return body

        def run(ws: WebSocket) -> None:
            current = app(ws)
            current.ws = ws
            current.handle()

        protocol = app.protocol_name() if hasattr(app, "protocol_name") else ""
        return serve(environ, start_response, run, protocol or None)
