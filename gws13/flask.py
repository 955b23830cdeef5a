"""Flask integration: WebSocket routes with the decorator shape of flask-sock.

    from flask import Flask
    from gws13.flask import Sock

    app = Flask(__name__)
    sock = Sock(app)                  # or Sock() + sock.init_app(app)

    @sock.route("/ws/<room>", ping_interval=5)
    def chat(ws, room):               # URL variables come after the socket
        for message in ws:
            ws.send(f"{room}: {message}")

Serve the app with ``gevent.pywsgi.WSGIServer(addr, app,
handler_class=gws13.WebSocketHandler)`` (or any server gws13 can take the
socket from).  The view runs inside Flask's request context for the whole life
of the connection, so ``flask.request``, ``flask.session`` (read only: there is
no HTTP response to carry a new cookie) and ``flask.g`` work as in any view.

Parameters of a connection, nearest first: keyword arguments of
``sock.route`` that are gws13 parameter names, then
``app.config["SOCK_SERVER_OPTIONS"]`` (a dict of gws13 parameters), then
:func:`gws13.parameterize` blocks and :data:`gws13.parameters`.  Other keyword
arguments of ``sock.route`` go to Flask's ``route`` (``endpoint``,
``strict_slashes``, ``defaults``...).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar

import flask
from werkzeug.routing import WebsocketMismatch

from . import params as _params
from .api import with_websocket
from .connection import WebSocket
from .handshake import is_upgrade_request
from .server import finish_response

__all__ = ["Sock", "websocket_view", "CONFIG_KEY"]

#: the ``app.config`` key holding default gws13 parameters for the app's routes
CONFIG_KEY = "SOCK_SERVER_OPTIONS"

F = TypeVar("F", bound=Callable[..., Any])


def _split_options(options: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split ``sock.route`` keyword arguments into (gws13 parameters, Flask
    route options); gws13 parameters are validated here, at decoration time."""
    names = set(dir(_params.parameters))
    ws_params = {k: v for k, v in options.items() if k in names}
    route_options = {k: v for k, v in options.items() if k not in names}
    return _params.validate(ws_params), route_options


def _config_options(app: flask.Flask) -> Dict[str, Any]:
    options = app.config.get(CONFIG_KEY) or {}
    if not isinstance(options, Mapping):
        raise TypeError(f"app.config[{CONFIG_KEY!r}] must be a dict of gws13 parameters")
    return dict(options)


class _UpgradedResponse(flask.Response):
    """What a WebSocket view returns once the connection was upgraded (or
    refused by ``accept_connection``, whose answer is already written).

    As a WSGI application it writes nothing: the socket belongs to the
    WebSocket (and is closed) by then.  It hands the server
    :func:`gws13.server.finish_response`'s answer, which tells servers whose
    socket was taken over (stock pywsgi handler, gunicorn's gevent worker) not
    to write a response either.  Its ``status_code`` is 101 for
    ``after_request`` hooks."""

    def __init__(self, result: Iterable[bytes] = ()) -> None:
        super().__init__(status=101)
        self._gws13_result = result

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return finish_response(environ, self._gws13_result, start_response)


def _no_http_after_websocket(response: flask.Response) -> flask.Response:
    """``after_this_request`` hook of a request whose socket became a WebSocket:
    an error page Flask made for an exception of the view cannot be sent."""
    if isinstance(response, _UpgradedResponse):
        return response
    return _UpgradedResponse()


def _serve(environ: dict[str, Any], proc: Callable[[WebSocket], Any], params: Dict[str, Any]) -> flask.Response:
    """Run ``proc`` over the request's WebSocket and turn ``with_websocket``'s
    WSGI answer into a Flask response."""
    captured: List[Any] = []

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
        captured[:] = [status, headers]
        return lambda data: None

    def run(ws: WebSocket) -> Any:
        # upgraded: whatever happens next, Flask's response must not be written
        flask.after_this_request(_no_http_after_websocket)
        return proc(ws)

    result = with_websocket(environ, start_response, run, **params)
    if not captured:
        return _UpgradedResponse(result)
    # not upgraded: a handshake error (400/426), or a server that cannot hand
    # its socket over (500); an ordinary HTTP answer
    body = b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()
    status, headers = captured
    return flask.current_app.response_class(body, status=status, headers=headers)


def websocket_view(view: Optional[F] = None, **params: Any) -> Any:
    """Turn ``view(ws, **url_variables)`` into a Flask view function.

    Use it bare or with gws13 parameters, under a route registered with
    ``websocket=True`` (Werkzeug only routes upgrade requests to such rules)::

        @bp.route("/ws/<room>", websocket=True)
        @websocket_view(ping_interval=5)
        def chat(ws, room): ...

    :meth:`Sock.route` does both steps at once.  ``SOCK_SERVER_OPTIONS`` of the
    current app applies under ``params``.
    """
    checked = _params.validate(params)

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def endpoint(*args: Any, **kwargs: Any) -> flask.Response:
            settings = _config_options(flask.current_app)
            settings.update(checked)
            return _serve(flask.request.environ, lambda ws: f(ws, *args, **kwargs), settings)

        return endpoint  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate


def _mismatch(error: WebsocketMismatch) -> Any:
    """Answer a plain HTTP request to a WebSocket route with a 400 that says
    how to connect (``Upgrade: websocket``, ``Sec-WebSocket-Version: 13``), as
    gws13's own handshake errors do."""
    if is_upgrade_request(flask.request.environ):
        return error  # the opposite mismatch: a WebSocket client at an HTTP URL
    body = "This URL is a WebSocket endpoint: connect with a WebSocket client.\n"
    return flask.current_app.response_class(
        body, status=400, mimetype="text/plain",
        headers=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")])


class Sock:
    """WebSocket routes for a Flask app or blueprint (flask-sock's API).

    ``Sock(app)`` or ``Sock()`` + :meth:`init_app` (routes declared before
    ``init_app`` are registered by it).  ``init_app`` also installs a handler
    for Werkzeug's ``WebsocketMismatch`` (unless the app has one) so a plain
    GET to a WebSocket route gets a 400 with ``Upgrade: websocket``.
    """

    def __init__(self, app: Optional[flask.Flask] = None) -> None:
        self.app: Optional[flask.Flask] = None
        self._deferred: List[Tuple[str, Dict[str, Any], Callable[..., Any]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Attach to ``app``: check ``SOCK_SERVER_OPTIONS`` now (TypeError or
        ValueError for a bad entry) and register pending routes."""
        _params.validate(_config_options(app))
        self.app = app
        app.extensions["gws13.sock"] = self
        registered = app.error_handler_spec.get(None, {}).get(WebsocketMismatch.code, {})
        if WebsocketMismatch not in registered:  # keep a handler the app already has
            app.register_error_handler(WebsocketMismatch, _mismatch)
        deferred, self._deferred = self._deferred, []
        for path, options, view in deferred:
            app.add_url_rule(path, view_func=view, **options)

    def route(self, path: str, bp: Optional[flask.Blueprint] = None, **options: Any) -> Callable[[F], F]:
        """Decorator: register ``view(ws, **url_variables)`` as the WebSocket
        endpoint at ``path``, on ``bp`` if given, else on the app.

        Keyword arguments named like gws13 parameters (``ping_interval``,
        ``max_message_size``, ``subprotocols``...) apply to this route's
        connections; the rest go to Flask's ``route`` (``endpoint`` etc.).
        Returns the view unchanged, as Flask's ``route`` does."""
        ws_params, route_options = _split_options(options)
        route_options["websocket"] = True

        def decorator(f: F) -> F:
            view = websocket_view(**ws_params)(f)
            rule_options = dict(route_options)
            rule_options.setdefault("endpoint", f.__name__)
            if bp is not None:
                bp.add_url_rule(path, view_func=view, **rule_options)
            elif self.app is not None:
                self.app.add_url_rule(path, view_func=view, **rule_options)
            else:
                self._deferred.append((path, rule_options, view))
            return f

        return decorator
