"""flask-sock's API on gws13: ``from gws13.compat.flask_sock import Sock, ConnectionClosed``.

    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}
    sock = Sock(app)

    @sock.route("/echo")
    def echo(ws):                   # simple-websocket's socket API
        while True:
            data = ws.receive()
            if data == "close":
                break
            ws.send(data)

Routes get a :class:`WebSocket` with simple-websocket's semantics:
``receive(timeout=None)`` returns ``None`` on a timeout and raises
:class:`ConnectionClosed` once the connection is closed (messages that
arrived before the close are delivered first); ``send(data)`` sends ``bytes``
as binary and anything else as text (``str(data)``); ``close(reason=None,
message=None)``; ``connected``; ``close_reason`` (the close *code*) and
``close_message`` (its text); ``subprotocol``.  A route that ends with
``ConnectionClosed`` ends quietly, as in flask-sock.

``app.config["SOCK_SERVER_OPTIONS"]`` takes simple-websocket's ``Server``
options: ``ping_interval`` (None: no pings and no idle timeout, as
simple-websocket; N: a ping every N seconds, the connection closed after 2N
seconds without a frame from the client), ``max_message_size`` (None keeps
gws13's limit of 1 MiB, see ``docs/migration.md``), ``subprotocols`` (chosen in
the client's order of preference, as simple-websocket).  ``receive_bytes``,
``thread_class``, ``event_class`` and ``selector_class`` are accepted and
ignored; other gws13 parameter names (``close_timeout``, ``compression``...)
pass through; anything else is a TypeError when a client connects.

Serve the app with ``pywsgi.WSGIServer(addr, app)`` (gevent's stock handler,
as flask-sock's gevent example does), ``handler_class=gws13.WebSocketHandler``,
or gunicorn's gevent workers.  Werkzeug's development server (``app.run()``)
and thread-based servers cannot hand over their socket: the upgrade gets a 500.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

import flask

import gws13
from gws13.server import finish_response

__all__ = ["Sock", "ConnectionClosed", "WebSocket"]

F = TypeVar("F", bound=Callable[..., Any])

# wsproto's CloseReason values that simple-websocket reports
_NO_STATUS_RCVD = 1005
_NORMAL_CLOSURE = 1000

# simple-websocket Server options that have no meaning here (threads, buffers)
_IGNORED_OPTIONS = frozenset(("receive_bytes", "thread_class", "event_class", "selector_class"))
_SUBPROTOCOLS_KEY = "gws13.compat.flask_sock.subprotocols"


class ConnectionClosed(RuntimeError):
    """The connection is closed: ``reason`` is the close code (1005 when none
    came), ``message`` its text (None when none came), as simple-websocket's."""

    def __init__(self, reason: int = _NO_STATUS_RCVD, message: Optional[str] = None) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"Connection closed: {reason} {message or ''}")


class WebSocket:
    """simple-websocket's ``Server`` API over a gws13 connection
    (``ws.gws13_websocket``)."""

    __slots__ = ("gws13_websocket", "environ", "_ended", "__weakref__")

    #: how the socket was obtained (simple-websocket's attribute)
    mode = "gevent"

    def __init__(self, ws: gws13.WebSocket, environ: dict[str, Any]) -> None:
        self.gws13_websocket = ws
        self.environ = environ
        self._ended = False  # receive() raised ConnectionClosed once

    @property
    def connected(self) -> bool:
        """False once a close frame went either way or the connection dropped."""
        return not self.gws13_websocket.closed

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol chosen in the handshake (None for none)."""
        return self.gws13_websocket.subprotocol

    @property
    def close_reason(self) -> int:
        """The close code: the peer's, ours if we closed first, 1006 for a lost
        connection; 1005 while the connection is open."""
        ws = self.gws13_websocket
        code = ws.close_code if ws.closed else None
        return _NO_STATUS_RCVD if code is None else code

    @property
    def close_message(self) -> Optional[str]:
        """The close frame's text ("" for none), None while the connection is open."""
        ws = self.gws13_websocket
        return ws.close_reason if ws.closed else None

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_reason, self.close_message)

    def receive(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        """The next message (``str`` or ``bytes``); ``None`` if ``timeout`` seconds
        pass without one (0: do not wait).

        Raises ConnectionClosed once the connection is closed and every message
        that came before the close was received."""
        if self._ended:
            raise self._closed_error()
        if timeout is not None and timeout < 0:
            timeout = 0
        try:
            data = self.gws13_websocket.receive(timeout)
        except TimeoutError:
            return None
        except gws13.ConnectionClosed:
            data = None  # the end was reported once already (to another greenlet)
        if data is None:
            self._ended = True
            raise self._closed_error()
        return data

    def send(self, data: Any) -> None:
        """Send ``bytes`` as a binary message and anything else as text
        (``str(data)``: a ``bytearray`` goes as its repr, as with simple-websocket).

        Raises ConnectionClosed once the connection is closed."""
        if not self.connected:
            raise self._closed_error()
        try:
            if isinstance(data, bytes):
                self.gws13_websocket.send(data, True)
            else:
                self.gws13_websocket.send(data if isinstance(data, str) else str(data), False)
        except gws13.ConnectionClosed:
            raise self._closed_error() from None

    def close(self, reason: Optional[int] = None, message: Optional[str] = None) -> None:
        """Close with code ``reason`` (1000) and text ``message``, waiting for
        the peer's close frame at most gws13's ``close_timeout``.

        Raises ConnectionClosed if the connection is closed already, ValueError
        for a code that may not be sent."""
        if not self.connected:
            raise self._closed_error()
        self.gws13_websocket.close(reason or _NORMAL_CLOSURE, message or "")

    def __repr__(self) -> str:
        return f"<gws13.compat.flask_sock.WebSocket {'connected' if self.connected else 'closed'}>"


def _client_order(offered: List[str], environ: dict[str, Any]) -> Optional[str]:
    # simple-websocket's choice: the first subprotocol *the client* listed
    # that the server accepts
    accepted = environ.get(_SUBPROTOCOLS_KEY) or ()
    for name in offered:
        if name in accepted:
            return name
    return None


def _parameters(options: Mapping[str, Any], environ: dict[str, Any]) -> Dict[str, Any]:
    """gws13 parameters for simple-websocket ``Server`` options.

    Raises TypeError for an option neither library knows."""
    if not isinstance(options, Mapping):
        raise TypeError("app.config['SOCK_SERVER_OPTIONS'] must be a dict")
    known = set(dir(gws13.parameters))
    params: Dict[str, Any] = {}
    ping_interval = options.get("ping_interval")
    if ping_interval:
        params["ping_interval"] = ping_interval
        # simple-websocket closes when a ping is not answered before the next
        params["connection_timeout"] = 2 * ping_interval
    else:  # None (its default) or 0: no pings, no idle timeout
        params["ping_interval"] = params["connection_timeout"] = 0
    max_message_size = options.get("max_message_size")
    if max_message_size is not None:
        params["max_message_size"] = params["max_frame_size"] = max_message_size
    subprotocols = options.get("subprotocols")
    if subprotocols:
        environ[_SUBPROTOCOLS_KEY] = [subprotocols] if isinstance(subprotocols, str) else list(subprotocols)
        params["select_subprotocol"] = _client_order
    for name, value in options.items():
        if name in ("ping_interval", "max_message_size", "subprotocols") or name in _IGNORED_OPTIONS:
            continue
        if name not in known:
            raise TypeError(f"unknown SOCK_SERVER_OPTIONS entry {name!r}")
        params[name] = value
    return params


class _UpgradedResponse(flask.Response):
    """The view's answer once the socket is a WebSocket: writes nothing (or
    tells gunicorn's gevent worker, by StopIteration, that the connection was
    handled)."""

    def __init__(self, result: Iterable[bytes] = ()) -> None:
        super().__init__(status=101)
        self._gws13_result = result

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return finish_response(environ, self._gws13_result, start_response)


def _keep_upgraded(response: flask.Response) -> flask.Response:
    # an error page Flask made for an exception of the route cannot be sent
    # on a WebSocket
    return response if isinstance(response, _UpgradedResponse) else _UpgradedResponse()


def _serve(f: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> flask.Response:
    environ = flask.request.environ
    params = _parameters(flask.current_app.config.get("SOCK_SERVER_OPTIONS") or {}, environ)
    captured: List[Any] = []

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
        captured[:] = [status, headers]
        return lambda data: None

    def run(gws: gws13.WebSocket) -> None:
        flask.after_this_request(_keep_upgraded)
        ws = WebSocket(gws, environ)
        try:
            f(ws, *args, **kwargs)
        except ConnectionClosed:
            pass
        try:
            ws.close()
        except Exception:  # closed already, as flask-sock ignores it
            pass

    upgraded = getattr(environ.get("wsgi.websocket"), "gws13_websocket", None)
    if isinstance(upgraded, gws13.WebSocket):
        # the gevent-websocket facade's handler upgraded the request before the
        # app ran (with its own parameters): serve the route on that connection
        run(upgraded)
        return _UpgradedResponse()
    result = gws13.with_websocket(environ, start_response, run, **params)
    if not captured:
        return _UpgradedResponse(result)
    # not upgraded: a bad handshake (400/426), or a server that cannot hand its
    # socket over (500)
    body = b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()
    status, headers = captured
    return flask.current_app.response_class(body, status=status, headers=headers)


class Sock:
    """flask-sock's extension: ``Sock(app)``, or ``Sock()`` + :meth:`init_app`.

    Routes declared before ``init_app`` without a blueprint go on ``sock.bp``
    (a blueprint that ``init_app`` registers), as in flask-sock."""

    def __init__(self, app: Optional[flask.Flask] = None) -> None:
        self.app: Optional[flask.Flask] = None
        self.bp: Optional[flask.Blueprint] = None
        if app is not None:
            self.app = app
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        if self.bp:
            app.register_blueprint(self.bp)
        self.app = app

    def route(self, path: str, bp: Optional[flask.Blueprint] = None, **kwargs: Any) -> Callable[[F], F]:
        """Decorator: ``f(ws, **url_variables)`` serves WebSocket requests to
        ``path``, on ``bp`` if given (the app registers it), else on the app.
        Other keyword arguments go to Flask's ``route``.  Returns ``f``."""
        def decorator(f: F) -> F:
            @functools.wraps(f)
            def websocket_route(*args: Any, **kw: Any) -> flask.Response:
                return _serve(f, args, kw)

            options = dict(kwargs, websocket=True)
            if bp:
                bp.route(path, **options)(websocket_route)
            elif self.app:
                self.app.route(path, **options)(websocket_route)
            else:
                if self.bp is None:
                    self.bp = flask.Blueprint("__flask_sock", __name__)
                self.bp.route(path, **options)(websocket_route)
            return f

        return decorator
