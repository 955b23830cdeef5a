"""Exceptions raised by gws13.

Every error the library raises is a :class:`WebSocketError`.  Errors that end a
connection carry the close code the library sends for them in ``code`` (and the
reason in ``reason``), so ``with_websocket`` can map any of them to the right
close frame without a lookup table.
"""

from __future__ import annotations

__all__ = [
    "WebSocketError",
    "ProtocolError",
    "ReservedBitsNotSupported",
    "InvalidData",
    "MessageTooLarge",
    "ConnectionTimeout",
    "InvalidOptype",
    "HandshakeError",
    "MissingUpgradeHeader",
    "InvalidHandshake",
    "UnsupportedVersion",
    "AccessDenied",
    "UnexpectedError",
    "ConnectionClosed",
]


class WebSocketError(Exception):
    """Base class of every gws13 error (the egg's ``websocket`` condition kind)."""

    #: close code sent to the peer when this error ends a connection
    code: int = 1011

    def __init__(self, reason: str = "", code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455 framing rules (close code 1002)."""

    code = 1002


class ReservedBitsNotSupported(ProtocolError):
    """A frame set RSV bits that no negotiated extension defines (close code 1002)."""


class InvalidData(WebSocketError):
    """A text message or close reason was not valid UTF-8 (close code 1007)."""

    code = 1007


class MessageTooLarge(WebSocketError):
    """A frame or message exceeded ``max_frame_size``/``max_message_size`` (close code 1009)."""

    code = 1009


class ConnectionTimeout(WebSocketError):
    """Nothing was received from the peer for ``connection_timeout`` seconds (close code 1001)."""

    code = 1001


class InvalidOptype(WebSocketError, ValueError):
    """``send_message`` was given a message type it does not know."""


class HandshakeError(WebSocketError):
    """The opening handshake failed; ``status`` is the HTTP status answered to the client."""

    status: int = 400

    def __init__(self, reason: str = "", status: int | None = None) -> None:
        super().__init__(reason)
        if status is not None:
            self.status = status


class MissingUpgradeHeader(HandshakeError):
    """The request lacks ``Upgrade: websocket`` or ``Connection: upgrade`` (HTTP 400)."""


class InvalidHandshake(HandshakeError):
    """The request is an upgrade attempt but not a valid one (HTTP 400), or the
    server's response to a client handshake is not acceptable."""


class UnsupportedVersion(HandshakeError):
    """``Sec-WebSocket-Version`` is not 13 (HTTP 426 with ``Sec-WebSocket-Version: 13``)."""

    status = 426


class AccessDenied(HandshakeError):
    """``accept_connection`` refused the request's origin (``access_denied`` answered it)."""

    status = 403


class UnexpectedError(WebSocketError):
    """Something went wrong that is nobody's protocol fault (close code 1011)."""

    code = 1011


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` are the close frame's
    (1006 when the TCP connection was lost without one)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(reason, code)

    def __str__(self) -> str:
        return f"connection closed: {self.code}" + (f" {self.reason}" if self.reason else "")
