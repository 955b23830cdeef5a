"""The client side: :func:`connect` opens a ``ws://`` or ``wss://`` connection
and returns the same :class:`~gws13.WebSocket` the server side uses (masking
its frames, as RFC 6455 requires of clients).

It uses gevent's sockets whether or not the standard library is
monkey-patched, so it works in gevent code, in plain scripts (calls block the
calling thread's greenlet only) and in ``gevent.monkey.patch_all()`` scripts
with threads.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl as _stdlib_ssl
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union
from urllib.parse import unquote, urlsplit

import gevent
from gevent import socket as _gsocket
from gevent import ssl as _gssl

from . import params as _params
from .connection import WebSocket
from .exceptions import InvalidHandshake
from .handshake import accept_key, client_key, header_tokens
from .protocol import Protocol

__all__ = ["connect"]

#: a handshake the server refused or answered wrongly is one DEBUG line here (the
#: caller gets the exception); opened/closed lines are on gws13.connection
_log = logging.getLogger("gws13.client")

HeadersLike = Union[Mapping[str, str], Iterable[Tuple[str, str]]]
_W = TypeVar("_W", bound=WebSocket)

_MAX_HEAD = 64 * 1024     # a 101 response head is a few hundred bytes
_MAX_BODY_SHOWN = 512     # of a refusal's body, quoted in the error message
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# headers the handshake computes; ``headers=`` may not set them
_RESERVED = {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
             "sec-websocket-protocol", "sec-websocket-extensions"}


def connect(url: str, *, subprotocols: Optional[Sequence[str]] = None,
            headers: Optional[HeadersLike] = None, origin: Optional[str] = None,
            ssl_context: Optional[_stdlib_ssl.SSLContext] = None, timeout: Optional[float] = 10,
            **params: Any) -> WebSocket:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

    :param subprotocols: subprotocols to offer, in order of preference (default:
        the ``subprotocols`` parameter); the server's choice is in
        ``ws.subprotocol`` and must be one of them.
    :param headers: extra request headers (a mapping or ``(name, value)`` pairs);
        ``Host`` may be replaced, the WebSocket headers may not.
    :param origin: the ``Origin`` header to send (none by default).
    :param ssl_context: for ``wss://``; default ``ssl.create_default_context()``
        (certificate and host name verified against the system CAs).
    :param timeout: seconds for the whole opening handshake (TCP connect, TLS,
        request and response); None waits forever.
    :param params: connection parameters (``ping_interval``, ``max_message_size``,
        ``compression`` when :mod:`gws13.deflate` is available...), on top of
        :data:`gws13.parameters` and :func:`gws13.parameterize`.

    Returns an open :class:`WebSocket` (client side).  Raises
    :class:`InvalidHandshake` when the server refuses (``.status`` is its HTTP
    status, ``.headers`` and ``.body`` its response) or answers with an invalid
    handshake, :class:`TimeoutError` when ``timeout`` expires, ``OSError``
    (``ConnectionRefusedError``, ``socket.gaierror``, ``ssl.SSLError``...) for
    network and TLS failures, ``ValueError``/``TypeError`` for bad arguments.
    """
    return _connect(url, _open_socket, WebSocket, subprotocols=subprotocols, headers=headers,
                    origin=origin, ssl_context=ssl_context, timeout=timeout, params=params)


def _connect(url: str, opener: Callable[[Any, Any, Optional[float]], Any], ws_class: Type[_W], *,
             subprotocols: Optional[Sequence[str]], headers: Optional[HeadersLike],
             origin: Optional[str], ssl_context: Any, timeout: Optional[float],
             params: Dict[str, Any]) -> _W:
    """:func:`connect` over the socket ``opener(target, ssl_context, timeout)``
    returns, making a ``ws_class`` (gws13.testing opens a socket pair)."""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    settings = _params.effective(**params)
    if subprotocols is not None:
        offer = _params.validate({"subprotocols": subprotocols})["subprotocols"] or ()
    else:
        offer = settings["subprotocols"] or ()
    for name in offer:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"subprotocol {name!r} is not an HTTP token")
    target = _Target(url)
    if ssl_context is not None and not target.secure:
        raise ValueError("ssl_context is for wss:// URLs; this one is ws://")
    extra = _header_list(headers, origin)
    deflate_api = _deflate_api(settings)
    key = client_key(os.urandom(16))
    request = target.request(key, offer, extra,
                             deflate_api[0](settings["compression"]) if deflate_api else None)

    timer = gevent.Timeout(timeout) if timeout is not None else None
    sock = None
    try:
        if timer is not None:
            timer.start()
        sock = opener(target, ssl_context, timeout)
        sock.sendall(request)
        status, reason, response_headers, rest = _read_head(sock)
        if status != 101:
            body = _read_body(sock, response_headers, rest)
            raise _refused(status, reason, response_headers, body)
        subprotocol, extensions, deflate = _check_response(response_headers, key, offer,
                                                           deflate_api, settings)
    except gevent.Timeout as exc:
        _close(sock)
        if exc is not timer:
            raise
        raise TimeoutError(f"WebSocket handshake with {url} did not complete within {timeout} s") from None
    except BaseException as exc:
        _close(sock)
        if isinstance(exc, (InvalidHandshake, OSError)):
            _log.debug("WebSocket handshake with %s failed: %s: %s", target.hostport, type(exc).__name__,
                       getattr(exc, "reason", None) or exc)
        raise
    finally:
        if timer is not None:
            timer.close()

    # the WebSocket layer expects blocking (cooperative) sockets: a timeout
    # left on the socket would turn a quiet peer into a lost connection
    sock.settimeout(None)
    environ = target.environ(origin, response_headers, extra)
    ws = ws_class(environ=environ, client=True, params=settings)
    ws.subprotocol = subprotocol
    ws.extensions = extensions
    proto = Protocol(client=True, max_frame_size=settings["max_frame_size"],
                     max_message_size=settings["max_message_size"], deflate=deflate)
    ws._start(sock, proto, settings, rest)
    return ws


class _Target:
    """The parts of a ``ws://``/``wss://`` URL the handshake needs."""

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss"):
            raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
        if parts.fragment or url.endswith("#"):
            raise ValueError(f"a WebSocket URL may not have a fragment: {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in {url!r}")
        self.url = url
        self.secure = scheme == "wss"
        self.host = host
        self.port = parts.port or (443 if self.secure else 80)  # ValueError for a bad port
        self.path = parts.path or "/"
        self.query = parts.query
        self.resource = self.path + ("?" + parts.query if parts.query else "")
        hostport = f"[{host}]" if ":" in host else host
        if parts.port is not None and parts.port != (443 if self.secure else 80):
            hostport += f":{parts.port}"
        self.hostport = hostport
        self.auth = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.auth = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")

    def request(self, key: str, offer: Sequence[str], extra: List[Tuple[str, str]],
                extensions: Optional[str]) -> bytes:
        names = {name.lower() for name, _ in extra}
        lines = [f"GET {self.resource} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {self.hostport}")
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
        if offer:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(offer))
        if extensions:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        if self.auth and "authorization" not in names:
            lines.append(f"Authorization: {self.auth}")
        lines += [f"{name}: {value}" for name, value in extra]
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("request headers must be latin-1 text (percent-encode the URL)") from None

    def environ(self, origin: Optional[str], response_headers: List[Tuple[str, str]],
                extra: List[Tuple[str, str]]) -> dict[str, Any]:
        """A WSGI-style description of the request (``ws.path``, ``ws.origin``)
        plus the server's response headers under ``gws13.response_headers``."""
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": unquote(self.path), "QUERY_STRING": self.query,
               "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": self.hostport,
               "wsgi.url_scheme": "https" if self.secure else "http",
               "gws13.url": self.url, "gws13.response_headers": response_headers}
        for name, value in extra:
            env["HTTP_" + name.upper().replace("-", "_")] = value
        if origin is not None:
            env["HTTP_ORIGIN"] = origin
        return env


def _header_list(headers: Optional[HeadersLike], origin: Optional[str]) -> List[Tuple[str, str]]:
    items: List[Tuple[str, str]] = []
    if headers is not None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("header names and values must be str")
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} contains a line break")
            lower = name.lower()
            if lower in _RESERVED:
                hint = {"sec-websocket-protocol": " (use subprotocols=)",
                        "sec-websocket-extensions": " (use compression=)"}.get(lower, "")
                raise ValueError(f"header {name!r} is set by the handshake itself{hint}")
            if lower == "origin" and origin is not None:
                raise ValueError("give the origin either as origin= or in headers, not both")
            items.append((name, value))
    if origin is not None:
        if "\r" in origin or "\n" in origin:
            raise ValueError("origin contains a line break")
        items.append(("Origin", origin))
    return items


def _deflate_api(settings: Dict[str, Any]) -> Optional[Tuple[Any, Any]]:
    """``(client_offer, client_accept)`` when compression is asked for and
    :mod:`gws13.deflate` provides them, else None."""
    if settings.get("compression") is None:
        return None
    try:
        from . import deflate
    except ImportError:
        return None
    offer = getattr(deflate, "client_offer", None)
    accept = getattr(deflate, "client_accept", None)
    if offer is None or accept is None:
        return None
    return offer, accept


def _open_socket(target: _Target, ssl_context: Any, timeout: Optional[float]) -> Any:
    sock = _gsocket.create_connection((target.host, target.port), timeout=timeout)
    if not target.secure:
        return sock
    try:
        context = ssl_context if ssl_context is not None else _gssl.create_default_context()
        if isinstance(context, _gssl.SSLContext):
            return context.wrap_socket(sock, server_hostname=target.host)
        # a standard-library context in an unpatched process: gevent's SSLSocket
        # accepts any SSLContext and keeps the TLS I/O cooperative
        return _gssl.SSLSocket(sock=sock, server_hostname=target.host, _context=context)
    except BaseException:
        sock.close()
        raise


def _close(sock: Any) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _read_head(sock: Any) -> Tuple[int, str, List[Tuple[str, str]], bytes]:
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(data) > _MAX_HEAD:
            raise InvalidHandshake(f"handshake response head longer than {_MAX_HEAD} bytes")
        chunk = sock.recv(16384)
        if not chunk:
            raise InvalidHandshake("connection closed before the handshake response"
                                   + (" was complete" if data else ""))
        data += chunk
    head, rest = data[:end], data[end + 4:]
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
    if not match:
        raise InvalidHandshake(f"not an HTTP/1.1 response: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise InvalidHandshake(f"malformed response header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return int(match.group(1)), match.group(2) or "", headers, rest


def _get(headers: List[Tuple[str, str]], name: str) -> List[str]:
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def _read_body(sock: Any, headers: List[Tuple[str, str]], data: bytes) -> bytes:
    """Up to _MAX_BODY_SHOWN bytes of a refusal's body (best effort: the
    handshake timeout still bounds it)."""
    lengths = _get(headers, "content-length")
    want = _MAX_BODY_SHOWN
    if lengths and lengths[0].isdigit():
        want = min(int(lengths[0]), _MAX_BODY_SHOWN)
    elif any("chunked" in header_tokens(v) for v in _get(headers, "transfer-encoding")):
        return b""
    try:
        while len(data) < want:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data[:want]


def _refused(status: int, reason: str, headers: List[Tuple[str, str]], body: bytes) -> InvalidHandshake:
    text = body.decode("utf-8", "replace").strip()
    message = f"server refused the WebSocket handshake: HTTP {status} {reason}".rstrip()
    if text:
        message += f": {text[:200]}"
    exc = InvalidHandshake(message, status=status)
    exc.headers = headers  # type: ignore[attr-defined]
    exc.body = body  # type: ignore[attr-defined]
    return exc


def _check_response(headers: List[Tuple[str, str]], key: str, offer: Sequence[str],
                    deflate_api: Optional[Tuple[Any, Any]], settings: Dict[str, Any]
                    ) -> Tuple[Optional[str], Optional[str], Any]:
    """Validate a 101 (RFC 6455 §4.1, the client's checks 1-6); return
    ``(subprotocol, extensions header, deflate object)``."""
    if "websocket" not in header_tokens(", ".join(_get(headers, "upgrade"))):
        raise InvalidHandshake("101 response without 'Upgrade: websocket'")
    if "upgrade" not in header_tokens(", ".join(_get(headers, "connection"))):
        raise InvalidHandshake("101 response without 'Connection: Upgrade'")
    accepts = _get(headers, "sec-websocket-accept")
    if len(accepts) != 1:
        raise InvalidHandshake("101 response needs exactly one Sec-WebSocket-Accept header")
    if accepts[0] != accept_key(key):
        raise InvalidHandshake("Sec-WebSocket-Accept does not match the key sent "
                               f"(got {accepts[0]!r}, expected {accept_key(key)!r})")

    subprotocol = None
    protocols = _get(headers, "sec-websocket-protocol")
    if protocols:
        if len(protocols) > 1 or "," in protocols[0]:
            raise InvalidHandshake(f"server chose several subprotocols: {', '.join(protocols)!r}")
        subprotocol = protocols[0]
        if not offer:
            raise InvalidHandshake(f"server chose subprotocol {subprotocol!r} but none was offered")
        if subprotocol not in offer:
            raise InvalidHandshake(f"server chose subprotocol {subprotocol!r}, which was not offered "
                                   f"(offered: {', '.join(offer)})")

    extensions = ", ".join(_get(headers, "sec-websocket-extensions")) or None
    deflate = None
    if extensions is not None:
        if deflate_api is None:
            raise InvalidHandshake(f"server negotiated extensions that were not offered: {extensions!r}")
        deflate = deflate_api[1](extensions, settings["compression"])
    return subprotocol, extensions, deflate
