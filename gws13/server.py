"""Server side: the pywsgi handler and the accept step shared by every integration.

A request carrying ``Upgrade: websocket`` is validated as soon as it arrives
(a bad one is answered 400/426 without reaching the application), then the
application runs with ``environ["wsgi.websocket"]`` set to a :class:`WebSocket`
that is not yet upgraded.  The 101 goes out on the application's first use of
it, or inside :func:`gws13.with_websocket`, because only then are the effective
parameters (``accept_connection``, ``subprotocols``...) known.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
from gevent.pywsgi import WSGIHandler

from . import params as _params
from .connection import WebSocket
from .exceptions import (AccessDenied, HandshakeError, UnexpectedError, UnsupportedVersion,
                         WebSocketError)
from .handshake import check_request, is_upgrade_request, response_headers
from .protocol import Protocol

__all__ = ["WebSocketHandler", "negotiate", "error_response", "select_subprotocol"]

_REASONS = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required", 500: "Internal Server Error"}


def error_response(exc: HandshakeError, start_response: Callable) -> List[bytes]:
    """Answer a failed handshake: the error's status and a one-line reason."""
    body = (exc.reason or "bad WebSocket handshake").encode("utf-8") + b"\n"
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
               ("Connection", "close")]
    if isinstance(exc, UnsupportedVersion):
        headers.append(("Sec-WebSocket-Version", "13"))
    elif exc.status == 400:
        headers += [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    start_response(f"{exc.status} {_REASONS.get(exc.status, 'Error')}", headers)
    return [body]


def _offered_subprotocols(environ: dict) -> List[str]:
    value = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    return [p.strip() for p in value.split(",") if p.strip()]


def select_subprotocol(environ: dict, params: Dict[str, Any]) -> Optional[str]:
    """The subprotocol to answer with: the ``select_subprotocol(offered, environ)``
    hook's choice, else the first of ``subprotocols`` that the client offered.
    Never one the client did not offer (RFC 6455 §4.2.2)."""
    offered = _offered_subprotocols(environ)
    hook = params.get("select_subprotocol")
    if hook is not None:
        chosen = hook(offered, environ)
        if chosen is not None and chosen not in offered:
            raise UnexpectedError(f"select_subprotocol chose {chosen!r}, which the client did not offer")
        return chosen
    for name in params.get("subprotocols") or ():
        if name in offered:
            return name
    return None


def negotiate(environ: dict, params: Dict[str, Any]) -> Tuple[bytes, Protocol, Optional[str], Optional[str]]:
    """Everything the 101 depends on: the response head, the protocol object,
    the chosen subprotocol and extensions header."""
    key = environ.get("gws13.key") or check_request(environ)
    subprotocol = select_subprotocol(environ, params)
    deflate = extensions = None
    offer = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
    if offer and params.get("compression") is not None:
        from .deflate import server_negotiate
        deflate, extensions = server_negotiate(offer, params["compression"])
    head = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in response_headers(key, subprotocol, extensions)) + "\r\n"
    proto = Protocol(max_frame_size=params["max_frame_size"],
                     max_message_size=params["max_message_size"], deflate=deflate)
    return head.encode("latin-1"), proto, subprotocol, extensions


def _track(server: Any, ws: WebSocket) -> None:
    # Closing the server (WSGIServer.stop calls close first) says 1001 to every
    # open WebSocket before the listener goes away.
    registry = server.__dict__.get("_gws13_websockets")
    if registry is None:
        registry = server._gws13_websockets = weakref.WeakSet()
        original_close = server.close

        def close() -> None:
            closing = [gevent.spawn(w.close, 1001, "server shutting down") for w in list(registry)]
            original_close()
            gevent.joinall(closing, timeout=_params.parameters.close_timeout or 1)

        server.close = close
    registry.add(ws)


class WebSocketHandler(WSGIHandler):
    """A ``gevent.pywsgi`` handler that upgrades WebSocket requests.

    Use it as ``WSGIServer(addr, app, handler_class=gws13.WebSocketHandler)``.
    Ordinary requests are handled exactly as by ``WSGIHandler``.
    """

    def run_application(self) -> None:
        environ = self.environ
        if not is_upgrade_request(environ):
            return super().run_application()
        try:
            environ["gws13.key"] = check_request(environ)
        except HandshakeError as exc:
            self.close_connection = True
            self.result = error_response(exc, self.start_response)
            try:
                self.process_result()
            finally:
                self.result = None
            return None
        ws = WebSocket(environ=environ)
        ws._acceptor = self._accept
        environ["wsgi.websocket"] = ws
        environ["wsgi.websocket_version"] = "13"
        self._gws13_refused = False
        try:
            try:
                self.result = self.application(environ, self.start_response)
            except AccessDenied:
                if not self._gws13_refused:
                    raise
                return None
            except BaseException as exc:
                if not ws._accepted:
                    raise
                # the socket is a WebSocket now: no HTTP 500 can be written to it
                error = exc if isinstance(exc, WebSocketError) else UnexpectedError(repr(exc))
                ws.fail(error if not isinstance(exc, gevent.GreenletExit) else
                        WebSocketError("server shutting down", 1001))
                if not isinstance(exc, (WebSocketError, gevent.GreenletExit)):
                    self.server.loop.handle_error(self.environ, *sys.exc_info())
                    return None
                if isinstance(exc, gevent.GreenletExit):
                    raise
                return None
            if ws._accepted:
                ws.close()  # the application returned: 1000, as with_websocket does
            elif not self._gws13_refused:
                self.process_result()
        finally:
            close = getattr(self.result, "close", None)
            self.result = None
            if close is not None:
                close()
            if ws._accepted or self._gws13_refused:
                self.close_connection = True
        return None

    def _accept(self, ws: WebSocket, params: Optional[Dict[str, Any]]) -> None:
        """Send the 101 and start the connection (or answer ``access_denied``)."""
        if params is None:
            params = _params.effective()
        environ = ws.environ
        if not params["accept_connection"](ws.origin):
            self._gws13_refused = True
            ws._acceptor = None
            result = params["access_denied"](environ, self.start_response)
            try:
                for data in result:
                    if data:
                        self.write(data)
                if not self.headers_sent:
                    self.write(b"")
            finally:
                if hasattr(result, "close"):
                    result.close()
            raise AccessDenied(f"origin {ws.origin!r} refused")
        head, proto, ws.subprotocol, ws.extensions = negotiate(environ, params)
        pending = _take_buffered(self.rfile, self.socket)
        self.socket.sendall(head)
        ws._acceptor = None
        self.status = "101 Switching Protocols"
        self.headers_sent = True
        self.close_connection = True
        ws._start(self.socket, proto, params, pending)
        _track(self.server, ws)


def _take_buffered(rfile: Any, sock: Any) -> bytes:
    """Bytes the HTTP parser read past the request head (a client that did not
    wait for the 101), so the WebSocket layer sees them."""
    if rfile is None:
        return b""
    previous = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return rfile.read1(1 << 16) or b""
    except (BlockingIOError, OSError, ValueError):
        return b""
    finally:
        sock.settimeout(previous)



def websocket_from_environ(environ: dict) -> Optional[WebSocket]:
    """A not-yet-accepted WebSocket for a request served by a handler other than
    :class:`WebSocketHandler`, or None where the socket cannot be taken over."""
    return None
