"""A WebSocket endpoint as a plain WSGI application.

    app = gws13.websocket_app(echo, ping_interval=20)

It runs under ``gevent.pywsgi`` with :class:`gws13.WebSocketHandler` or with
the stock handler, and under gunicorn's gevent workers (see
:func:`gws13.server.websocket_from_environ` for how the socket is taken over).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from . import params as _params
from .api import with_websocket
from .connection import WebSocket
from .exceptions import MissingUpgradeHeader
from .handshake import is_upgrade_request
from .server import error_response, finish_response

__all__ = ["websocket_app"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def websocket_app(proc: Callable[[WebSocket], Any], *, fallback: Optional[WSGIApp] = None,
                  **params: Any) -> WSGIApp:
    """Return a WSGI application that upgrades each request and runs ``proc(ws)``.

    ``proc`` gets an open :class:`WebSocket`; when it returns, the connection
    is closed with 1000 (see :func:`gws13.with_websocket` for errors).
    Keyword arguments are connection parameters for this endpoint
    (``subprotocols``, ``require_subprotocol``, ``ping_interval``...), checked
    now.  Requests without ``Upgrade: websocket`` go to ``fallback`` when it is
    given, else get 400 with ``Upgrade: websocket`` telling the client what
    this URL expects.
    """
    if not callable(proc):
        raise TypeError("proc must be callable")
    if fallback is not None and not callable(fallback):
        raise TypeError("fallback must be a WSGI application")
    _params.validate(params)  # a typo fails at start-up, not at the first connection

    def websocket_application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_upgrade_request(environ):
            if fallback is not None:
                return fallback(environ, start_response)
            return error_response(MissingUpgradeHeader(
                "this URL serves WebSocket connections only: send a GET request with "
                "'Upgrade: websocket' and 'Connection: Upgrade' (RFC 6455)"), start_response)
        result = with_websocket(environ, start_response, proc, **params)
        return finish_response(environ, result, start_response)

    websocket_application.__name__ = getattr(proc, "__name__", "websocket_application")
    websocket_application.__doc__ = getattr(proc, "__doc__", None)
    websocket_application.__wrapped__ = proc  # type: ignore[attr-defined]
    return websocket_application
