"""The egg's API in Python: ``with_websocket``, ``with_concurrent_websocket``,
``receive_message``, ``send_message`` and ``current_websocket``."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Tuple, Union

import gevent

from . import params as _params
from .connection import WebSocket, _Closed
from .exceptions import (AccessDenied, ConnectionClosed, HandshakeError, InvalidOptype,
                         UnexpectedError, WebSocketError)
from .handshake import check_request
from .server import error_response, refused

__all__ = ["with_websocket", "with_concurrent_websocket", "receive_message", "send_message",
           "current_websocket"]

_CURRENT = "gws13.current_websocket"
_DATA_TYPES = {"text": False, "binary": True}  # send_message's data types: the binary flag


def current_websocket() -> Optional[WebSocket]:
    """The WebSocket of the enclosing ``with_websocket`` call (None outside one);
    greenlets spawned inside inherit it."""
    return _params.lookup(_CURRENT)


def _resolve(ws: Optional[WebSocket]) -> WebSocket:
    if ws is None:
        ws = _params.lookup(_CURRENT)
        if ws is None:
            raise UnexpectedError("no current websocket: pass ws= or call inside with_websocket")
    return ws


def receive_message(ws: Optional[WebSocket] = None) -> Tuple[Union[str, bytes, None], Optional[str]]:
    """Next message as ``(data, type)``; type is ``"text"`` (str) or ``"binary"``
    (bytes).  When the connection closes: ``(close payload, "connection-close")``
    once, then ``(None, None)`` once, as the egg does.

    Raises the error that failed the connection (ProtocolError, InvalidData,
    MessageTooLarge, ConnectionTimeout) once, in place of the close; and
    ConnectionClosed on every call after the end was reported (a loop that
    ignores the end does not spin)."""
    ws = _resolve(ws)
    item = ws._next(None)
    if item.__class__ is not _Closed:
        return item, ("text" if item.__class__ is str else "binary")
    reported = item.reported
    if reported >= 2:
        raise ws._closed_error()
    item.reported = reported + 1
    if reported:
        return None, None
    if ws.failure is not None:
        raise ws.failure
    return item.payload, "connection-close"


def send_message(data: Union[str, bytes], type: str = "text", ws: Optional[WebSocket] = None) -> None:
    """Send ``data`` as ``type``: "text", "binary", "ping" or "pong".

    Raises InvalidOptype for any other type and ConnectionClosed after close."""
    binary = _DATA_TYPES.get(type)
    if binary is None and type not in ("ping", "pong"):
        raise InvalidOptype(f"invalid message type {type!r}")
    ws = _resolve(ws)
    if binary is not None:
        ws.send(data, binary)
    elif type == "ping":
        ws.ping(data)
    else:
        ws.pong(data.encode("utf-8") if isinstance(data, str) else data)


def _websocket_for(environ: dict) -> Optional[WebSocket]:
    ws = environ.get("wsgi.websocket")
    if isinstance(ws, WebSocket):
        return ws
    from .server import websocket_from_environ  # other servers: take the socket over
    return websocket_from_environ(environ)


def with_websocket(environ: dict, start_response: Callable, proc: Callable[[WebSocket], Any],
                   **params: Any) -> Iterable[bytes]:
    """Upgrade the request, run ``proc(ws)`` and close the connection properly.

    Keyword arguments override parameters for this connection.  Returns the
    WSGI response: empty after an upgrade, 400/426 for a request that is not a
    valid upgrade, ``access_denied``'s response for a refused origin.  Errors
    of the connection close it with their code (1002, 1007, 1009, 1001, else
    1011) and are re-raised only if ``propagate_common_errors``; an exception
    from ``proc`` itself is always re-raised after the close.
    """
    return _run(environ, start_response, proc, params, 1)


def with_concurrent_websocket(environ: dict, start_response: Callable,
                              proc: Callable[[WebSocket], Any], **params: Any) -> Iterable[bytes]:
    """Like :func:`with_websocket`, but messages are read ahead into a queue of
    up to ``max_queue`` while ``proc`` works (still delivered in order)."""
    return _run(environ, start_response, proc, params, None)


def _run(environ: dict, start_response: Callable, proc: Callable, call_params: dict,
         read_ahead: Optional[int]) -> Iterable[bytes]:
    if read_ahead is not None and "max_queue" not in call_params:
        settings = _params.effective(max_queue=read_ahead, **call_params)
    else:
        settings = _params.effective(**call_params)
    try:
        check_request(environ)
    except HandshakeError as exc:
        refused(environ, exc.status, exc.reason)
        return error_response(exc, start_response)
    ws = _websocket_for(environ)
    if ws is None:
        exc = HandshakeError("this server cannot hand over its socket: run it with "
                             "gws13.WebSocketHandler", status=500)
        return error_response(exc, start_response)
    if ws._accepted:
        raise UnexpectedError("the websocket was already accepted before with_websocket")
    try:
        ws._acceptor(ws, settings)
    except AccessDenied:
        return []
    # _params.bind without a context manager object: this frame lives as long
    # as the connection
    layer = _params.push(_CURRENT, ws)
    try:
        try:
            proc(ws)
        except WebSocketError as exc:
            ws.fail(exc if not isinstance(exc, ConnectionClosed) else WebSocketError(exc.reason, 1000))
            if isinstance(exc, ConnectionClosed) and ws.failure is not None:
                exc = ws.failure
            if settings["propagate_common_errors"]:
                raise exc
        except gevent.GreenletExit:
            ws.fail(WebSocketError("going away", 1001))
            raise
        except BaseException as exc:
            ws.fail(UnexpectedError("internal error"))  # the exception goes to the log, not the peer
            raise  # to the application, then the server: gws13.WebSocketHandler logs it once
        else:
            ws.close(1000)
            if ws.failure is not None and settings["propagate_common_errors"]:
                raise ws.failure
    finally:
        _params.pop(layer)
    return []
