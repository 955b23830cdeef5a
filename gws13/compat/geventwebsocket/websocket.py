"""gevent-websocket's socket object, over one :class:`gws13.WebSocket`.

:class:`WebSocket` gives an application written for gevent-websocket the
API it expects (``receive`` returning ``None`` once at the end and raising
:class:`~.exceptions.WebSocketError` afterwards, ``read_message``,
``send(message, binary=None)``, ``close(code, message)``, ``closed``,
``handler.server.clients``, ``current_app``...).  Every byte goes through the
gws13 connection it wraps (``ws.gws13_websocket``).

:func:`serve` is how the other facades (``Resource``, Flask-Sockets,
bottle-websocket) get such a socket on any server gws13 works with: the
facade's own handler and server, :class:`gws13.WebSocketHandler`, gevent's
stock pywsgi handler or gunicorn's gevent workers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

from gevent import pywsgi

import gws13
from gws13.handshake import is_upgrade_request
from gws13.server import finish_response

from .exceptions import WebSocketError

__all__ = ["WebSocket", "Client", "serve", "adopt", "MSG_SOCKET_DEAD", "MSG_ALREADY_CLOSED",
           "MSG_CLOSED"]

# gevent-websocket's messages, passed to ``current_app.on_close`` and raised
MSG_SOCKET_DEAD = "Socket is dead"
MSG_ALREADY_CLOSED = "Connection is already closed"
MSG_CLOSED = "Connection closed"

_logger = logging.getLogger("gws13.compat.geventwebsocket")


class _NullApp:
    """``current_app`` when the server's application names none (gevent-websocket's MockApp)."""

    def on_close(self, *args: Any) -> None:
        pass


_NULL_APP = _NullApp()


class Client:
    """An entry of ``server.clients``: the peer's address and its socket.
    Applications may hang their own attributes on it (the chat example's
    ``nickname``)."""

    def __init__(self, address: Any, ws: "WebSocket") -> None:
        self.address = address
        self.ws = ws


class WebSocket:
    """gevent-websocket's ``WebSocket`` API over a gws13 connection.

    ``receive()`` returns ``str`` (text) or ``bytearray`` (binary), as
    gevent-websocket does; ``None`` once when the connection ends (close
    frame, protocol error or lost connection), then raises
    :class:`WebSocketError`.  ``closed`` turns True when this socket closes
    the connection or ``receive`` has reported its end, so messages that came
    before the peer's close frame are all delivered first.
    """

    OPCODE_CONTINUATION = 0x00
    OPCODE_TEXT = 0x01
    OPCODE_BINARY = 0x02
    OPCODE_CLOSE = 0x08
    OPCODE_PING = 0x09
    OPCODE_PONG = 0x0A

    __slots__ = ("gws13_websocket", "environ", "handler", "_ended", "_closed_here", "__weakref__")

    def __init__(self, ws: gws13.WebSocket, environ: dict[str, Any], handler: Any) -> None:
        #: the gws13 connection carrying this socket (its own API is there too)
        self.gws13_websocket = ws
        self.environ = environ
        #: the server's handler for this connection (``handler.server.clients``,
        #: ``handler.active_client``, ``handler.logger``)
        self.handler = handler
        self._ended = False  # receive() has returned the end (None) once
        self._closed_here = False  # close() was called on this socket

    # -- the request ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once this socket closed the connection or ``receive`` reported its end."""
        return self._closed_here or self._ended

    @property
    def path(self) -> Optional[str]:
        """``PATH_INFO`` of the request."""
        return self.environ.get("PATH_INFO")

    @property
    def origin(self) -> Optional[str]:
        """The ``Origin`` header (None without one)."""
        return self.environ.get("HTTP_ORIGIN")

    @property
    def protocol(self) -> Optional[str]:
        """The ``Sec-WebSocket-Protocol`` header the client sent (its offer; None without one)."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")

    @property
    def version(self) -> Optional[str]:
        """The ``Sec-WebSocket-Version`` header (``"13"``)."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_VERSION")

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol answered in the 101 (None if none; not in gevent-websocket)."""
        return self.gws13_websocket.subprotocol

    @property
    def logger(self) -> logging.Logger:
        return getattr(self.handler, "logger", None) or _logger

    @property
    def current_app(self) -> Any:
        """``handler.server.application.current_app`` where the application has
        one, else an object whose ``on_close`` does nothing (as gevent-websocket)."""
        application = getattr(getattr(self.handler, "server", None), "application", None)
        if hasattr(application, "current_app"):
            return application.current_app  # type: ignore[union-attr]
        return _NULL_APP

    # -- reading -------------------------------------------------------------
    def receive(self) -> Union[str, bytearray, None]:
        """The next message; ``None`` once at the end of the connection.

        Raises WebSocketError when called after that, or after ``close()``."""
        if self.closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        message = self._next()
        if message is None and self.gws13_websocket.close_code == 1006:
            # no close frame: gevent-websocket reports a socket error this way
            self.current_app.on_close(MSG_CLOSED)
        return message

    def read_message(self) -> Union[str, bytearray, None]:
        """The next message, ``None`` at the close (gevent-websocket's lower-level
        read: no ``on_close`` notification).  Raises WebSocketError once the end
        was reported."""
        if self._ended:
            raise WebSocketError(MSG_ALREADY_CLOSED)
        return self._next()

    def _next(self) -> Union[str, bytearray, None]:
        try:
            message = self.gws13_websocket.receive()
        except gws13.ConnectionClosed:
            # gws13 reports the end once (None), then raises: someone else
            # (another greenlet) took the None
            message = None
        if message is None:
            self._ended = True
            return None
        if isinstance(message, bytes):
            return bytearray(message)  # gevent-websocket's type for binary messages
        return message

    # -- writing -------------------------------------------------------------
    def send(self, message: Any, binary: Optional[bool] = None) -> None:
        """Send ``message``: binary unless it is a ``str`` (``binary`` forces the
        type).  A text message that is not a ``str`` is sent as ``str(message or "")``,
        a binary one as ``bytes(message)``.

        Raises WebSocketError once the connection is closed or dead."""
        if binary is None:
            binary = not isinstance(message, str)
        try:
            self._send(message, binary)
        except WebSocketError:
            self.current_app.on_close(MSG_SOCKET_DEAD)
            raise WebSocketError(MSG_SOCKET_DEAD) from None

    def _send(self, message: Any, binary: bool) -> None:
        if self.closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        if binary:
            if not isinstance(message, (bytes, bytearray, memoryview)):
                message = bytes(message)
        elif not isinstance(message, str):
            message = str(message or "")
        try:
            self.gws13_websocket.send(message, binary)
        except gws13.ConnectionClosed as exc:
            raise WebSocketError(MSG_SOCKET_DEAD) from exc

    def send_frame(self, message: Any, opcode: int) -> None:
        """Send one unfragmented frame: text, binary, ping, pong or close.

        Raises WebSocketError once closed, ValueError for another opcode."""
        if opcode == self.OPCODE_TEXT:
            self._send(message, False)
        elif opcode == self.OPCODE_BINARY:
            self._send(message, True)
        elif opcode in (self.OPCODE_PING, self.OPCODE_PONG):
            if self.closed:
                raise WebSocketError(MSG_ALREADY_CLOSED)
            data = message.encode("utf-8") if isinstance(message, str) else bytes(message or b"")
            try:
                if opcode == self.OPCODE_PING:
                    self.gws13_websocket.ping(data)
                else:
                    self.gws13_websocket.pong(data)
            except gws13.ConnectionClosed as exc:
                raise WebSocketError(MSG_SOCKET_DEAD) from exc
        elif opcode == self.OPCODE_CLOSE:
            self.close(1000, message or b"")
        else:
            raise ValueError(f"cannot send a frame with opcode {opcode!r}")

    def close(self, code: int = 1000, message: Union[bytes, str, None] = b"") -> None:
        """Send a close frame with ``code`` and ``message`` (bytes in UTF-8, or
        str) and end the connection; it waits for the peer's close frame at most
        gws13's ``close_timeout``.  Closing twice does nothing more.

        Raises ValueError for a code that may not be sent (e.g. 1005, 999)."""
        if self._closed_here:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
        self._closed_here = True
        if isinstance(message, (bytes, bytearray, memoryview)):
            reason = bytes(message).decode("utf-8", "replace")
        else:
            reason = str(message or "")
        self.gws13_websocket.close(code, reason)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<gws13.compat.geventwebsocket.WebSocket {self.path or '?'} {state}>"


class _StandaloneServer:
    """``handler.server`` where the server is not a gevent pywsgi one (gunicorn's
    ``gevent`` worker): one per process, with its own ``clients``."""

    application = None

    def __init__(self) -> None:
        self.clients: Dict[Any, Client] = {}
        self.logger = _logger


_standalone = _StandaloneServer()


class _HandlerView:
    """``ws.handler`` for a connection served by a handler that is not the
    facade's own (gws13.WebSocketHandler, gevent's stock one, gunicorn's):
    what gevent-websocket applications read from it, and everything else
    from the real handler when there is one."""

    def __init__(self, handler: Any, environ: dict[str, Any]) -> None:
        self._handler = handler
        if handler is not None:
            self.server = handler.server
            self.client_address = handler.client_address
        else:
            self.server = _standalone
            self.client_address = (environ.get("REMOTE_ADDR", ""), _port(environ.get("REMOTE_PORT")))

    @property
    def active_client(self) -> Client:
        client: Client = self.server.clients[self.client_address]
        return client

    @property
    def logger(self) -> logging.Logger:
        return getattr(self.server, "logger", None) or _logger

    def __getattr__(self, name: str) -> Any:
        if self._handler is None:
            raise AttributeError(name)
        return getattr(self._handler, name)


def _port(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _handler_for(start_response: Optional[Callable[..., Any]], environ: dict[str, Any]) -> Any:
    handler = getattr(start_response, "__self__", None)
    if getattr(handler, "_gws13_compat_handler", False):
        return handler  # the facade's own WebSocketHandler has it all
    return _HandlerView(handler if isinstance(handler, pywsgi.WSGIHandler) else None, environ)


@contextlib.contextmanager
def adopt(ws: gws13.WebSocket, environ: dict[str, Any], handler: Any = None,
          start_response: Optional[Callable[..., Any]] = None) -> Iterator[WebSocket]:
    """Wrap the accepted gws13 connection ``ws`` in a gevent-websocket socket,
    put it in ``environ["wsgi.websocket"]`` and in ``handler.server.clients``
    for the duration of the ``with`` block.

    ``handler`` defaults to the pywsgi handler behind ``start_response``
    (or a stand-in with a per-process ``clients`` dict)."""
    if handler is None:
        handler = _handler_for(start_response, environ)
    sock = WebSocket(ws, environ, handler)
    server = handler.server
    clients = getattr(server, "clients", None)
    if clients is None:
        clients = server.clients = {}  # as gevent-websocket does on a plain WSGIServer
    address = handler.client_address
    client = clients[address] = Client(address, sock)
    environ["wsgi.websocket"] = sock
    try:
        yield sock
    finally:
        if clients.get(address) is client:
            del clients[address]


def serve(environ: dict[str, Any], start_response: Callable[..., Any], proc: Callable[[WebSocket], Any],
          subprotocol: Optional[str] = None, handler: Any = None) -> Iterable[bytes]:
    """Upgrade the request, run ``proc(ws)`` with a gevent-websocket socket and
    close the connection when it returns; return the WSGI response.

    Where ``environ["wsgi.websocket"]`` already holds such a socket (the
    facade's handler upgraded the request) ``proc`` simply runs on it.
    ``subprotocol`` (e.g. a ``protocol_class.PROTOCOL_NAME``) is answered when
    the client offers it.  The rest is :func:`gws13.with_websocket`'s: a bad
    handshake gets its 400/426, an exception of ``proc`` closes with 1011 and
    is re-raised, a :class:`WebSocketError` (e.g. sending after the close)
    ends the connection quietly."""
    existing = environ.get("wsgi.websocket")
    if isinstance(existing, WebSocket):
        proc(existing)
        return []
    if handler is None:
        handler = _handler_for(start_response, environ)

    def run(ws: gws13.WebSocket) -> None:
        with adopt(ws, environ, handler) as sock:
            proc(sock)

    params = {"subprotocols": [subprotocol]} if subprotocol else {}
    result = gws13.with_websocket(environ, start_response, run, **params)
    return finish_response(environ, result, start_response)


def is_websocket_request(environ: dict[str, Any]) -> bool:
    """True for a request that asks for a WebSocket (or was upgraded already)."""
    return environ.get("wsgi.websocket") is not None or is_upgrade_request(environ)
