"""Bottle integration: a route plugin that hands the callback a gws13 WebSocket.

    from gevent import monkey; monkey.patch_all()   # first, as Bottle requires under gevent
    import bottle
    from gws13.bottle import websocket

    app = bottle.Bottle()

    @app.route("/ws/<room>", apply=[websocket])
    def chat(ws, room):               # URL arguments come after the socket
        for message in ws:
            ws.send(f"{room}: {message}")

``websocket`` is a plain decorator, which Bottle accepts as a plugin, so it
also works stacked (``@app.get("/ws")`` over ``@websocket``); with gws13
parameters it is ``apply=[websocket(ping_interval=5)]``.  Default parameters
for an app's WebSocket routes live in its config under the ``gws13.``
namespace (``app.config["gws13.ping_interval"] = 5``, or
``app.config.load_dict({"gws13": {...}})``).  Nearest wins: the decorator's
arguments, then the app config, then :func:`gws13.parameterize` and
:data:`gws13.parameters`.

A request that is not a WebSocket upgrade gets a 400 with ``Upgrade:
websocket``.  Serve the app with ``gevent.pywsgi.WSGIServer(addr, app,
handler_class=gws13.WebSocketHandler)``.  Bottle keeps ``bottle.request`` and
``bottle.response`` in ``threading.local``: call ``gevent.monkey.patch_all()``
before importing Bottle so that each greenlet (each connection) has its own,
exactly as Bottle's own gevent adapter insists.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import bottle

from . import params as _params
from .api import with_websocket

__all__ = ["websocket", "CONFIG_PREFIX"]

#: Bottle config namespace holding default gws13 parameters (``gws13.<name>``)
CONFIG_PREFIX = "gws13."

F = TypeVar("F", bound=Callable[..., Any])


def _config_options(app: Optional[bottle.Bottle]) -> Dict[str, Any]:
    if app is None:
        return {}
    return {key[len(CONFIG_PREFIX):]: value for key, value in app.config.items()
            if key.startswith(CONFIG_PREFIX)}


def _wrap(callback: F, params: Dict[str, Any]) -> F:
    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> bottle.HTTPResponse:
        request = bottle.request
        environ = request.environ
        settings = _config_options(environ.get("bottle.app"))
        settings.update(params)
        captured: List[Any] = []

        def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured[:] = [status, headers]
            return lambda data: None

        result = with_websocket(environ, start_response, lambda ws: callback(ws, *args, **kwargs),
                                **settings)
        if not captured:
            # upgraded (or refused by accept_connection, already answered): the
            # socket is no longer HTTP; Bottle sends no body with a 101
            return bottle.HTTPResponse(status=101)
        # a handshake error (400/426) or a server that cannot hand its socket over
        body = b"".join(result)
        close = getattr(result, "close", None)
        if close is not None:
            close()
        status, headers = captured
        return bottle.HTTPResponse(body, status=status, headers=headers)

    return wrapper  # type: ignore[return-value]


def websocket(callback: Optional[F] = None, **params: Any) -> Any:
    """Bottle plugin/decorator: call ``callback(ws, *url_args)`` with the
    request's :class:`gws13.WebSocket` and close it properly when it returns.

    ``apply=[websocket]`` uses the app's defaults; ``apply=[websocket(**params)]``
    sets gws13 parameters for the route (checked here: TypeError/ValueError).
    What ``callback`` returns is ignored; its exceptions are logged by Bottle
    after the connection is closed with 1011 (see :func:`gws13.with_websocket`).
    """
    checked = _params.validate(params)
    if callback is not None:
        return _wrap(callback, checked)
    return functools.partial(_wrap, params=checked)
