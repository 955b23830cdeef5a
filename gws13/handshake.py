"""The opening handshake (RFC 6455 §4), server and client side, without I/O.

The server side reads a WSGI environ (a plain dict) and answers with header
lists; the client side builds request bytes and checks the response."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Iterable, Mapping

from .exceptions import InvalidHandshake, MissingUpgradeHeader, UnsupportedVersion

__all__ = [
    "GUID", "accept_key", "is_upgrade_request", "check_request", "response_headers",
    "header_tokens", "parse_extensions", "format_extensions", "client_key",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def client_key(random16: bytes) -> str:
    """Return a ``Sec-WebSocket-Key`` built from 16 random bytes."""
    return base64.b64encode(random16).decode("ascii")


def header_tokens(value: str | None) -> list[str]:
    """Split a comma-separated header into lower-case tokens."""
    if not value:
        return []
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def is_upgrade_request(environ: Mapping[str, Any]) -> bool:
    """True if the request asks for a WebSocket (``Upgrade: websocket``), valid or not."""
    return "websocket" in header_tokens(environ.get("HTTP_UPGRADE"))


def check_request(environ: Mapping[str, Any]) -> str:
    """Validate an upgrade request and return its ``Sec-WebSocket-Key``.

    Raises MissingUpgradeHeader (400) when Upgrade/Connection are missing,
    InvalidHandshake (400) for a wrong method, HTTP version or key, or a
    ``Host`` header missing, empty or repeated, and UnsupportedVersion (426)
    when ``Sec-WebSocket-Version`` is not 13."""
    if not is_upgrade_request(environ):
        raise MissingUpgradeHeader("missing 'Upgrade: websocket' header")
    if "upgrade" not in header_tokens(environ.get("HTTP_CONNECTION")):
        raise MissingUpgradeHeader("missing 'Connection: upgrade' header")
    if environ.get("REQUEST_METHOD") != "GET":
        raise InvalidHandshake("WebSocket handshake must use GET")
    proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    if proto not in ("HTTP/1.1",) and not proto.startswith("HTTP/1.") or proto == "HTTP/1.0":
        raise InvalidHandshake("WebSocket handshake needs HTTP/1.1")
    # RFC 6455 §4.2.1 and RFC 7230 §5.4: exactly one Host header.  WSGI servers
    # (pywsgi, gunicorn) join repeated headers with "," in the environ, and no
    # host name or address contains one.
    host = environ.get("HTTP_HOST")
    if host is None or not host.strip():
        raise InvalidHandshake("missing Host header")
    if "," in host:
        raise InvalidHandshake("more than one Host header")
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
    if version is None:
        raise InvalidHandshake("missing Sec-WebSocket-Version header")
    if version.strip() != "13":
        raise UnsupportedVersion("unsupported Sec-WebSocket-Version (only 13)")
    key = (environ.get("HTTP_SEC_WEBSOCKET_KEY") or "").strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise InvalidHandshake("Sec-WebSocket-Key must be base64 of 16 bytes")
    return key


def parse_extensions(value: str | None) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse a ``Sec-WebSocket-Extensions`` header into ``[(name, [(param, value)])]``.

    Raises InvalidHandshake for a malformed header."""
    result: list[tuple[str, list[tuple[str, str | None]]]] = []
    if not value:
        return result
    for item in value.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            raise InvalidHandshake(f"malformed Sec-WebSocket-Extensions: {value!r}")
        params: list[tuple[str, str | None]] = []
        val: str | None
        for p in parts[1:]:
            if not p:
                raise InvalidHandshake(f"malformed Sec-WebSocket-Extensions: {value!r}")
            name, eq, val = p.partition("=")
            val = val.strip().strip('"') if eq else None
            params.append((name.strip().lower(), val))
        result.append((parts[0].lower(), params))
    return result


def format_extensions(extensions: Iterable[tuple[str, list[tuple[str, str | None]]]]) -> str:
    """Inverse of :func:`parse_extensions`."""
    items = []
    for name, params in extensions:
        items.append("; ".join([name] + [k if v is None else f"{k}={v}" for k, v in params]))
    return ", ".join(items)


def response_headers(key: str, subprotocol: str | None = None,
                     extensions: str | None = None) -> list[tuple[str, str]]:
    """Headers of the 101 response for a validated request."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    return headers
