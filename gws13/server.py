"""Server side: the pywsgi handler and the accept step shared by every integration.

A request carrying ``Upgrade: websocket`` is validated as soon as it arrives
(a bad one is answered 400/426 without reaching the application), then the
application runs with ``environ["wsgi.websocket"]`` set to a :class:`WebSocket`
that is not yet upgraded.  The 101 goes out on the application's first use of
it, or inside :func:`gws13.with_websocket`, because only then are the effective
parameters (``accept_connection``, ``subprotocols``...) known.
"""

from __future__ import annotations

import email.parser
import functools
import http.client
import io
import logging
import re
import socket
import ssl
import sys
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import gevent
import gevent.ssl
from gevent import pywsgi
from gevent import socket as gsocket
from gevent.pywsgi import WSGIHandler

from . import _metrics
from . import params as _params, tls
from ._logutil import RateLimiter, configured, peer_of
from .connection import WebSocket
from .exceptions import (AccessDenied, HandshakeError, UnexpectedError, UnsupportedVersion,
                         WebSocketError)
from .handshake import check_request, is_upgrade_request, response_headers
from .protocol import Protocol

__all__ = ["WebSocketHandler", "WebSocketServer", "negotiate", "error_response", "select_subprotocol",
           "websocket_from_environ", "finish_response", "MAX_REQUEST_LINE", "MAX_HEADER_BYTES",
           "MAX_HEADERS"]

#: Peers that go away (resets, broken pipes, timeouts) are logged here, at
#: DEBUG, one line each: on the internet they are normal, not server errors.
_log = logging.getLogger("gws13.server")

#: Longest request line, CRLF included, that :class:`WebSocketHandler` reads
#: (gevent.pywsgi's limit); a longer one is answered 414 and the connection closed.
MAX_REQUEST_LINE = pywsgi.MAX_REQUEST_LINE - 1  # type: ignore[attr-defined]  # not in gevent's stubs
#: Largest header section (every header line with its CRLF, the empty line
#: included); a larger one is answered 431 and the connection closed.
MAX_HEADER_BYTES = 32768
#: Most header lines: the parser pywsgi uses (http.client's) refuses a 100th;
#: more are answered 431 and the connection closed.
MAX_HEADERS = 99

_REASONS = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required", 500: "Internal Server Error"}


#: The close reason (code 1011) a peer gets when the application raises after
#: the upgrade: the exception itself goes to the server's log only.
INTERNAL_ERROR = "internal error"


# Refused handshakes are INFO lines, at most 10 per status every 10 s (then one
# "suppressed K similar messages" line): a scanner or a reconnect storm cannot
# flood the log.
_refusals = RateLimiter(_log, burst=10, interval=10.0)


def refused(environ: Optional[Dict[str, Any]], status: int, why: str) -> None:
    """Count a WebSocket handshake answered with ``status`` (not 101) in
    :func:`gws13.metrics` and log it at INFO (rate-limited)."""
    environ = environ or {}
    _metrics.refused(status)
    _refusals.log(logging.INFO, ("refused", status), "%s: WebSocket handshake for %s refused: %d %s",
                  peer_of(environ), _request_path(environ), status, why)


def _status_of(status_line: Any) -> int:
    try:
        return int(str(status_line).split(None, 1)[0])
    except (ValueError, IndexError):
        return 0


def _request_path(environ: Dict[str, Any]) -> str:
    return (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"


def report_application_error(ws: WebSocket) -> bool:
    """Log the exception being handled, raised by the application after the
    upgrade, as one ERROR record with its traceback on ``gws13.server``.

    Returns False, logging nothing, when no handler would show the record
    (the application did not configure :mod:`logging`): the caller then
    leaves it to the server's own error printer, so that a traceback is
    never lost.  Either way it is reported exactly once."""
    if not configured(_log):
        return False
    _log.error("%s: the WebSocket handler for %s raised; the connection was closed with 1011",
               peer_of(ws.environ), ws.path or "/", exc_info=True)
    return True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def error_response(exc: HandshakeError, start_response: Callable[..., Any]) -> List[bytes]:
    """Answer a failed handshake: the error's status and a one-line reason."""
    body = (exc.reason or "bad WebSocket handshake").encode("utf-8") + b"\n"
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if isinstance(exc, UnsupportedVersion):
        headers.append(("Sec-WebSocket-Version", "13"))
    elif exc.status == 400:
        headers += [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    start_response(f"{exc.status} {_REASONS.get(exc.status, 'Error')}", headers)
    return [body]


def _offered_subprotocols(environ: dict[str, Any]) -> List[str]:
    value = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    return [p.strip() for p in value.split(",") if p.strip()]


def select_subprotocol(environ: dict[str, Any], params: Dict[str, Any]) -> Optional[str]:
    """The subprotocol to answer with: the ``select_subprotocol(offered, environ)``
    hook's choice, else the first of ``subprotocols`` that the client offered.
    Never one the client did not offer (RFC 6455 §4.2.2)."""
    offered = _offered_subprotocols(environ)
    hook = params.get("select_subprotocol")
    if hook is not None:
        chosen: Optional[str] = hook(offered, environ)
        if chosen is not None and chosen not in offered:
            raise UnexpectedError(f"select_subprotocol chose {chosen!r}, which the client did not offer")
        return chosen
    name: str
    for name in params.get("subprotocols") or ():
        if name in offered:
            return name
    return None


def negotiate(environ: dict[str, Any], params: Dict[str, Any]) -> Tuple[bytes, Protocol, Optional[str], Optional[str]]:
    """Everything the 101 depends on: the response head, the protocol object,
    the chosen subprotocol and extensions header."""
    key = environ.get("gws13.key") or check_request(environ)
    subprotocol = select_subprotocol(environ, params)
    if subprotocol is None and params.get("require_subprotocol"):
        wanted = ", ".join(params.get("subprotocols") or ()) or "see the API's documentation"
        raise HandshakeError(f"this endpoint requires a subprotocol (Sec-WebSocket-Protocol: {wanted})")
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
    # open WebSocket before the listener goes away.  A plain set (a WeakSet
    # costs a weak reference per connection): the handler's run_application
    # takes the WebSocket out when it ends (_untrack).
    registry = server.__dict__.get("_gws13_websockets")
    if registry is None:
        registry = server._gws13_websockets = set()
        original_close = server.close

        def close() -> None:
            closing = [gevent.spawn(w.close, 1001, "server shutting down") for w in list(registry)]
            original_close()
            gevent.joinall(closing, timeout=_params.parameters.close_timeout or 1)
            # Peers that neither answered nor read: their close() may still be
            # waiting (writing the close frame, then for the reply, each up to
            # close_timeout).  The server is going away: drop them now, so that
            # every descriptor is closed when close() (and stop()) returns.
            dropped = list(registry)
            for w in dropped:
                w._drop()
            if dropped:
                # a descriptor that a greenlet still waits on (a blocked send)
                # is closed by the hub once that wait is cancelled: let it run
                # (bounded: a busy loop is seldom idle)
                with gevent.Timeout(1, False):  # type: ignore[arg-type]  # False: expire silently (gevent's documented form)
                    gevent.idle()

        server.close = close
    registry.add(ws)


def _untrack(server: Any, ws: WebSocket) -> None:
    registry = server.__dict__.get("_gws13_websockets")
    if registry is not None:
        registry.discard(ws)


_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                      b"Content-Length: 0\r\n\r\n")


class _HeadTooLarge(ValueError):
    """The request's header section is over MAX_HEADER_BYTES or MAX_HEADERS."""


class _LimitedHead:
    """The handler's read buffer as the header parser sees it: it stops the
    header section at MAX_HEADER_BYTES (http.client alone would take 99 lines
    of 64 KiB each)."""

    __slots__ = ("_fp", "_left")

    def __init__(self, fp: Any) -> None:
        self._fp = fp
        self._left = MAX_HEADER_BYTES

    def readline(self, size: int = -1) -> bytes:
        limit = self._left + 1
        line: bytes = self._fp.readline(limit if size < 0 else min(size, limit))
        self._left -= len(line)
        if self._left < 0:
            raise _HeadTooLarge(f"header section over {MAX_HEADER_BYTES} bytes")
        return line


# The request head's header section, as pywsgi's parser reads it (http.client's
# line limits, then the email package) but without the email package for the
# lines every client sends: "Name: value" with a name of visible characters and
# no CR inside.  Anything else (continuation lines, a bare CR, a line with no
# colon, the end of the input before the empty line) goes to the email parser
# with the lines already read, so its answer (and its defects) is exactly what
# it was.  (The email parser costs about a tenth of a WebSocket connection.)
_MAX_LINE = getattr(http.client, "_MAXLINE", 65536)
_MAX_LINES = getattr(http.client, "_MAXHEADERS", 100)
_PLAIN_HEADER = re.compile(rb"([\x21-\x39\x3b-\x7e]+):([^\r\n]*)\r?\n\Z")


def _parse_headers(fp: Any) -> Any:
    message_class: Any = pywsgi.OldMessage
    lines = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            message = message_class()
            message.status = "Line too long"  # as pywsgi's parser says it: a 400
            return message
        lines.append(line)
        if len(lines) > _MAX_LINES:
            raise http.client.HTTPException(f"got more than {_MAX_LINES} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    fields = []
    if line:
        match = _PLAIN_HEADER.match
        for line in lines[:-1]:
            plain = match(line)
            if plain is None:
                break
            name, value = plain.groups()
            # what the email package's compat32 policy keeps of a field
            fields.append((name.decode("latin-1"), value.decode("latin-1").lstrip(" \t")))
        else:
            message = message_class()
            message._headers = fields
            return message
    return email.parser.Parser(_class=message_class).parsestr(b"".join(lines).decode("latin-1"))


class WebSocketHandler(WSGIHandler):
    """A ``gevent.pywsgi`` handler that upgrades WebSocket requests.

    Use it as ``WSGIServer(addr, app, handler_class=gws13.WebSocketHandler)``.
    Ordinary requests are handled as by ``WSGIHandler``, with these limits on
    every request head, plain HTTP included:

    * ``handshake_timeout`` (a gws13 parameter, 10 s by default, 0 disables):
      a connection whose request head (request line and headers) is not
      complete that many seconds after the handler starts waiting for it is
      closed without an answer.  The wait for the next request on a
      keep-alive connection counts: an idle connection is closed after it.
      Request bodies are the application's to read, without this deadline.
    * a request line longer than :data:`MAX_REQUEST_LINE` bytes gets 414, a
      header section over :data:`MAX_HEADER_BYTES` bytes or
      :data:`MAX_HEADERS` lines gets 431, any other malformed head 400; the
      connection is closed after the answer.

    Peers that reset the connection, stop mid-request or time out are logged
    at DEBUG on the ``gws13.server`` logger, one line each, and never reach
    the server's error log; errors of the application still do.
    """

    _gws13_timer: Any = None  # gevent.Timeout for the request head being read
    _gws13_heads = 0  # request heads read on this connection
    _gws13_used = 0  # bytes of the last request head (request line and headers)
    _gws13_lost: Any = None  # the error of the last failed write on the connection

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        if rfile is None:
            rfile = _head_reader(sock)
        super().__init__(sock, address, server, rfile)  # type: ignore[call-arg]  # not in gevent's stubs

    def handle(self) -> None:
        try:
            super().handle()
        except gevent.Timeout as exc:
            if exc is not self._gws13_timer:
                raise
            _log.debug("%s: no request head within %s s: connection closed",
                       self._peer(), exc.seconds)
        except OSError as exc:
            # only the answer to a bad request head gets here (pywsgi's handle
            # writes it unguarded): the peer is gone
            _log.debug("%s: connection lost: %s", self._peer(), _describe(exc))
        finally:
            self._gws13_timer = None

    def _head_timeout(self, first: bool) -> float:
        """Seconds allowed for the next request head (0: no limit); ``first``:
        the connection's first request."""
        seconds: float = _params.parameters.handshake_timeout
        return seconds

    def read_requestline(self) -> str:
        seconds = self._head_timeout(not self._gws13_heads)
        self._gws13_heads += 1
        if seconds:
            # a new one each time: a libev timer started again after a stop
            # only runs for what was left of its time
            timer = self._gws13_timer = gevent.Timeout(seconds)
            timer.start()
        try:
            line = self.rfile.readline(pywsgi.MAX_REQUEST_LINE)  # type: ignore[attr-defined]
        except OSError as exc:  # pywsgi then ends the connection without a word
            _log.debug("%s: connection lost before a request line: %s", self._peer(), _describe(exc))
            raise
        self._gws13_used = len(line)
        if line[-1:] != b"\n" and len(line) < pywsgi.MAX_REQUEST_LINE:  # type: ignore[attr-defined]
            if line:
                _log.debug("%s: connection closed in the middle of the request line", self._peer())
            return ""  # nothing to answer (pywsgi would parse the piece, and fail loudly)
        return line.decode("latin-1")

    def read_request(self, raw_requestline: str) -> Any:  # what pywsgi's returns
        try:
            return super().read_request(raw_requestline)
        finally:
            self._end_of_head()

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self._end_of_head()  # also after a refused request line, or none

    def _end_of_head(self) -> None:
        timer = self._gws13_timer
        if timer is not None:
            timer.close()

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 (pywsgi's name)
        limited = _LimitedHead(fp)
        headers = _parse_headers(limited)
        self._gws13_used += MAX_HEADER_BYTES - limited._left
        if headers.defects:
            # a line that is no header field: the parser would take it and
            # every header after it for a body, and drop them silently
            raise ValueError("malformed header line")
        return headers

    def _handle_client_error(self, ex: BaseException) -> Any:
        # pywsgi prints a traceback for anything but a ValueError (a reset while
        # reading the headers, too many of them) and logs every bad request to
        # the error log; then handle() writes the 400 on a possibly dead socket
        if isinstance(ex, OSError) and not isinstance(ex, pywsgi._InvalidClientInput):  # type: ignore[attr-defined]  # not in gevent's stubs
            _log.debug("%s: connection lost in the request head: %s", self._peer(), _describe(ex))
            self.close_connection = True
            return None
        if isinstance(ex, (_HeadTooLarge, http.client.HTTPException)):
            _log.debug("%s: request header fields too large: %s", self._peer(), ex)
            return ("431", _HEADERS_TOO_LARGE)
        _log.debug("%s: bad request: %s", self._peer(),
                   getattr(ex, "formatted_message", None) or str(ex) or type(ex).__name__)
        return ("400", pywsgi._BAD_REQUEST_RESPONSE)  # type: ignore[attr-defined]  # not in gevent's stubs

    def _sendall(self, data: bytes) -> None:
        try:
            super()._sendall(data)  # type: ignore[misc]  # pywsgi's WSGIHandler._sendall is not in gevent's stubs
        except OSError as exc:
            self._gws13_lost = exc
            raise

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        # pywsgi ignores EPIPE and ECONNRESET from anywhere; any other error of
        # a write to the peer (a TLS peer that vanished: SSLEOFError,
        # ETIMEDOUT...) would be logged with a traceback.  Errors from the
        # application's own sockets (a database...) are still logged.
        if v is not None and v is self._gws13_lost:
            _log.debug("%s: connection lost: %s", self._peer(), _describe(v))
            self.close_connection = True
            return
        super().handle_error(t, v, tb)

    def log_request(self) -> None:
        # pywsgi formats the access-log line (a datetime, a strftime) even for
        # log=None, where it is thrown away: a few % of a reconnect storm
        if self.server.log.__class__ is not _NOOP_LOG:
            super().log_request()

    def _peer(self) -> str:
        return _format_address(self.client_address)

    def run_application(self) -> None:
        environ: Dict[str, Any] = self.environ  # type: ignore[assignment]  # set by handle_one_request
        if not is_upgrade_request(environ):
            return super().run_application()
        try:
            environ["gws13.key"] = check_request(environ)
        except HandshakeError as exc:
            self.close_connection = True
            refused(environ, exc.status, exc.reason)
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
                self.result = self.application(environ, self.start_response)  # type: ignore[misc]  # set by handle_one_request
            except AccessDenied:
                if not self._gws13_refused:
                    raise
                return None
            except BaseException as exc:
                if not ws._accepted:
                    raise
                # the socket is a WebSocket now: no HTTP 500 can be written to it;
                # the peer gets a fixed reason, the log the exception
                error = exc if isinstance(exc, WebSocketError) else UnexpectedError(INTERNAL_ERROR)
                ws.fail(error if not isinstance(exc, gevent.GreenletExit) else
                        WebSocketError("server shutting down", 1001))
                if not isinstance(exc, (WebSocketError, gevent.GreenletExit)):
                    # one ERROR record on gws13.server, or (logging not configured) pywsgi's printer
                    if not report_application_error(ws):
                        self._log_error(*sys.exc_info())  # type: ignore[attr-defined]  # pywsgi's WSGIHandler._log_error is not in gevent's stubs
                    return None
                if isinstance(exc, gevent.GreenletExit):
                    raise
                return None
            if ws._accepted:
                ws.close()  # the application returned: 1000, as with_websocket does
            elif not self._gws13_refused:
                self.process_result()
        finally:
            if ws._accepted:
                _untrack(self.server, ws)
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
            refused(environ, getattr(self, "code", None) or 0, f"origin {ws.origin!r} not accepted")
            raise AccessDenied(f"origin {ws.origin!r} refused")
        try:
            head, proto, ws.subprotocol, ws.extensions = negotiate(environ, params)
        except HandshakeError as exc:  # e.g. no acceptable subprotocol: answer it, like a refusal
            self._gws13_refused = True
            ws._acceptor = None
            refused(environ, exc.status, exc.reason)
            for data in error_response(exc, self.start_response):
                self.write(data)
            raise AccessDenied(exc.reason, status=exc.status) from exc
        rfile = self.rfile
        raw = getattr(rfile, "raw", None)
        if self._gws13_heads == 1 and raw.__class__ is _CountingReader and raw.received == self._gws13_used:
            pending = b""  # the usual case: the client waits for the 101
        else:
            pending = _take_buffered(rfile, self.socket)
        # the HTTP reader and its 8 KiB buffer would live as long as the connection
        self.rfile = None  # type: ignore[assignment]  # dropped on purpose: see above
        if getattr(self, "wsgi_input", None) is not None:
            # pywsgi only calls _discard() on it after the application: there is
            # no request body to skip on a WebSocket
            self.wsgi_input = _NO_INPUT  # type: ignore[assignment]
        if environ.get("wsgi.input") is not None and not isinstance(environ["wsgi.input"], io.BytesIO):
            environ["wsgi.input"] = io.BytesIO()
        if rfile is not None:
            # now, not when it is collected: while the reader is open, closing
            # the socket leaves its descriptor open
            try:
                rfile.close()
            except (OSError, ValueError):
                pass
        try:
            _send_head(self.socket, head)
        except OSError as exc:
            self._gws13_lost = exc
            raise
        ws._acceptor = None
        # the parsed request headers (an email Message, ~1.3 KB) would live as
        # long as the connection; only an access log reads them again
        self.headers = _HeadersFromEnviron(environ)  # type: ignore[assignment]  # an access log reads only .get() of it
        self.status = "101 Switching Protocols"
        self.headers_sent = True
        self.close_connection = True
        ws._start(self.socket, proto, params, pending)
        _track(self.server, ws)


class WebSocketServer(pywsgi.WSGIServer):
    """``gevent.pywsgi.WSGIServer`` with :class:`WebSocketHandler` as its
    default handler, and a TLS accept step that bad peers cannot hurt either.

    With TLS (``keyfile``/``certfile`` or ``ssl_context``), the stock server
    does the TLS handshake before any handler runs: without a deadline (a peer
    that never sends its ClientHello holds the connection forever), and a peer
    that breaks it off gets a traceback printed.  Here the handshake happens
    in the handler's first read instead (``do_handshake_on_connect=False``
    unless given), so ``handshake_timeout`` covers it, and a peer lost before
    or during it is one DEBUG line on the ``gws13.server`` logger.  Without
    TLS it is the stock server.

    TLS runs through memory BIOs (:mod:`gws13.tls`): large reads and writes
    on the socket instead of OpenSSL's one or two syscalls per record.  A
    ``keyfile``/``certfile`` (with ``cert_reqs``, ``ca_certs``, ``ciphers``)
    or an ``ssl_context`` is served that way; any other TLS argument falls
    back to gevent's TLS socket.
    """

    handler_class = WebSocketHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls_context = None if self.ssl_args is None else tls.server_context(self.ssl_args)
        if self.ssl_args is not None:
            self.ssl_args.setdefault("do_handshake_on_connect", False)
        context = kwargs.get("ssl_context")
        if context is not None and not isinstance(context, gevent.ssl.SSLContext):
            # The standard library's context makes the standard library's
            # sockets: blocking, so one peer that stops reading would stop the
            # whole server.  gevent's socket takes any context.
            self.wrap_socket = functools.partial(_cooperative_tls, context)  # type: ignore[method-assign,misc]

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
        if self._tls_context is not None:
            tls_socket = tls.TLSSocket(client_socket, self._tls_context)
            try:
                return self.handle(tls_socket, address)  # type: ignore[arg-type]  # a socket to pywsgi
            finally:
                tls_socket.close()
        try:
            ssl_socket = self.wrap_socket(client_socket, **self.ssl_args)  # type: ignore[misc,arg-type]
        except OSError as exc:  # e.g. reset between accept and wrap (ENOTCONN)
            _log.debug("%s: connection lost before TLS: %s", _format_address(address), _describe(exc))
            return None
        try:
            return self.handle(ssl_socket, address)
        finally:
            ssl_socket.close()


def _cooperative_tls(context: ssl.SSLContext, sock: Any, **kwargs: Any) -> Any:
    return gevent.ssl.SSLSocket(sock=sock, _context=context, **kwargs)


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "?")


class _HeadersFromEnviron:
    """Stands in for a pywsgi handler's parsed request headers once the
    connection is a WebSocket.  Nothing reads them while it is open; after it,
    an access log may (gunicorn's reads ``headers.items()``).  The same headers
    are in the environ (``HTTP_*``, ``CONTENT_TYPE``, ``CONTENT_LENGTH``), so the
    message is rebuilt from there on first use: the same values, names in
    title case, repeated headers joined as pywsgi joins them in the environ."""

    __slots__ = ("_environ", "_message")

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ
        self._message: Any = None

    def _parsed(self) -> Any:
        message = self._message
        if message is None:
            lines = []
            for key, value in list(self._environ.items()):
                if key.startswith("HTTP_"):
                    key = key[5:]
                elif key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                    continue
                if isinstance(value, str):
                    lines.append(f"{key.replace('_', '-').title()}: {value}\r\n")
            head = ("".join(lines) + "\r\n").encode("latin-1", "replace")
            message = self._message = pywsgi.headers_factory(io.BytesIO(head))  # type: ignore[attr-defined]  # not in gevent's stubs
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parsed(), name)

    def __getitem__(self, name: str) -> Any:
        return self._parsed()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._parsed()

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return str(self._parsed())


class _NoInput:
    """A pywsgi handler's ``wsgi_input`` after the upgrade: the socket
    carries frames now, there is no HTTP body left to read or discard."""

    __slots__ = ()

    def _discard(self) -> None:
        pass

    def read(self, length: Optional[int] = None) -> bytes:
        return b""

    def readline(self, size: Optional[int] = None) -> bytes:
        return b""


_NO_INPUT = _NoInput()
_NOOP_LOG = getattr(pywsgi, "_NoopLog", None)  # the server's log with log=None


class _CountingReader(socket.SocketIO):
    """The raw stream under a :class:`WebSocketHandler`'s buffered reader.  It
    counts the bytes it received, so that the upgrade knows without a syscall
    whether the buffer holds any past the request head: asking the socket
    (a read that fails with EAGAIN) cost a tenth of a reconnect storm."""

    received = 0

    def readinto(self, b: Any) -> Optional[int]:
        n = super().readinto(b)
        if n:
            self.received += n
        return n


def _head_reader(sock: Any) -> Any:
    # what sock.makefile("rb") makes, over a _CountingReader
    raw = _CountingReader(sock, "rb")
    sock._io_refs += 1  # the reader's close gives it back (as makefile's does)
    return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


def _send_head(sock: Any, head: bytes) -> None:
    """Write the 101: one plain ``send``, the whole of it in the usual case
    (``sendall`` would first ask the socket its buffer size)."""
    sent = sock.send(head)
    if sent < len(head):
        sock.sendall(memoryview(head)[sent:])


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


# True: a client that offers none of the acceptable subprotocols is answered
# 400 instead of a 101 without Sec-WebSocket-Protocol.
_params.define("require_subprotocol", False, _params._flag)


def websocket_from_environ(environ: dict[str, Any]) -> Optional[WebSocket]:
    """A not-yet-accepted WebSocket for a request served by a handler other than
    :class:`WebSocketHandler`, or None where the socket cannot be taken over.

    Supported: ``gevent.pywsgi`` with its stock ``WSGIHandler`` (or any subclass,
    so also gunicorn's ``gevent_pywsgi`` worker), found through the handler's
    read buffer in ``environ["wsgi.input"]``; and gunicorn's ``gevent`` worker,
    through ``environ["gunicorn.socket"]``.  Plain sockets and TLS alike.
    Anything else (threaded servers, gunicorn's sync/gthread workers) gives None.

    Accepting (``with_websocket`` does it) writes the 101 on the socket itself
    and leaves the server a connection that it neither answers nor reuses: the
    request's response is the WebSocket, and the connection ends with it, when
    the application returns.  The WebSocket gets the socket on loan: closing
    it shuts the connection down and the server closes the descriptor, so a
    response the server or a framework still writes fails harmlessly (EPIPE).
    The application should return :func:`finish_response` (as
    :func:`gws13.websocket_app` does): gunicorn's ``gevent`` worker needs it,
    and it puts the 101 in pywsgi's access log.
    """
    ws = environ.get("wsgi.websocket")
    if isinstance(ws, WebSocket):
        return ws
    if not is_upgrade_request(environ):
        return None
    takeover = _pywsgi_takeover(environ) or _gunicorn_takeover(environ)
    if takeover is None:
        return None
    ws = WebSocket(environ=environ)
    ws._acceptor = takeover.accept
    environ["wsgi.websocket"] = ws
    environ["wsgi.websocket_version"] = "13"
    environ["gws13.takeover"] = takeover
    return ws


def finish_response(environ: dict[str, Any], result: Iterable[bytes],
                    start_response: Optional[Callable[..., Any]] = None) -> Iterable[bytes]:
    """Return what a WSGI application should return once the WebSocket of
    ``environ`` has ended: ``result`` itself, except after
    :func:`websocket_from_environ` took a gunicorn ``gevent`` worker's socket
    over, where it raises StopIteration, gunicorn's sign that the application
    handled the connection itself (gunicorn then closes it without writing).

    Given the server's own ``start_response``, it also records the 101 in a
    pywsgi handler, so that access logs show it (gunicorn's ``gevent_pywsgi``
    access log needs this).

    :func:`gws13.websocket_app` calls it; integrations that call
    :func:`gws13.with_websocket` on their own should return
    ``finish_response(environ, with_websocket(...), start_response)``, or raise
    StopIteration where their framework calls the WSGI response."""
    takeover = environ.get("gws13.takeover")
    if takeover is None or not takeover.used:
        return result
    if takeover.raise_stop_iteration:
        raise StopIteration
    handler = getattr(start_response, "__self__", None)
    if isinstance(handler, WSGIHandler) and not handler.headers_sent:
        # as WebSocketHandler does: the response (the 101, or a refusal) was
        # written by the takeover, the handler has nothing more to write
        handler.status = handler._orig_status = takeover.status  # type: ignore[attr-defined]  # pywsgi's WSGIHandler._orig_status is not in gevent's stubs
        handler.code = int(takeover.status.split(None, 1)[0])
        handler.response_headers = []
        handler.response_length = takeover.sent
        handler.headers_sent = True
        handler.close_connection = True
    return result


class _Borrowed:
    """A server's connection socket lent to a WebSocket.  ``close()`` ends the
    TCP connection (shutdown) but leaves the descriptor to the server, which
    closes it when its handler returns.  A response the server or framework
    still writes afterwards (Bottle always calls ``start_response``) then fails
    with EPIPE, which pywsgi and gunicorn ignore, instead of EBADF on a closed
    socket, which they log as an error (or, worse, a write on a reused
    descriptor number)."""

    __slots__ = ("_wrapped",)

    def __init__(self, sock: Any) -> None:
        object.__setattr__(self, "_wrapped", sock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def close(self) -> None:
        try:
            self._wrapped.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset by the peer


class _Takeover:
    """Accepts a WebSocket on a socket borrowed from a server that knows
    nothing about WebSockets."""

    #: the server must be told by StopIteration that the connection was handled
    raise_stop_iteration = False

    def __init__(self, sock: Any) -> None:
        self.sock = _Borrowed(sock)
        #: True once the 101 or a refusal was written on the socket
        self.used = False
        #: the status line written, and the bytes of a refusal (for access logs)
        self.status = ""
        self.sent = 0

    def pending(self) -> bytes:
        """Bytes the server read past the request head (frames sent early)."""
        return b""

    def release(self) -> None:
        """Make sure the server neither reuses nor answers on the connection."""

    def accept(self, ws: WebSocket, params: Optional[Dict[str, Any]]) -> None:
        if params is None:
            params = _params.effective()
        ws._acceptor = None
        environ = ws.environ
        if not params["accept_connection"](ws.origin):
            self._answer(params["access_denied"], environ)
            refused(environ, _status_of(self.status), f"origin {ws.origin!r} not accepted")
            raise AccessDenied(f"origin {ws.origin!r} refused")
        try:
            head, proto, subprotocol, extensions = negotiate(environ, params)
        except HandshakeError as exc:
            refused(environ, exc.status, exc.reason)
            self._answer(lambda env, start_response, error=exc: error_response(error, start_response),
                         environ)
            raise AccessDenied(exc.reason, status=exc.status) from exc
        pending = self.pending()
        self.release()
        self.used = True
        self.status = "101 Switching Protocols"
        _send_head(self.sock, head)
        ws.subprotocol, ws.extensions = subprotocol, extensions
        ws._start(self.sock, proto, params, pending)  # type: ignore[arg-type]  # a _Borrowed socket has what WebSocket uses of a socket

    def _answer(self, app: Callable[..., Any], environ: dict[str, Any]) -> None:
        """Write a whole HTTP response from the WSGI ``app`` and end the connection."""
        response: List[Any] = []

        def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            response[:] = [status, headers]
            return chunks.append

        chunks: List[bytes] = []
        result = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = response or ("500 Internal Server Error", [])
        headers = [(k, v) for k, v in headers if k.lower() not in ("connection", "transfer-encoding")]
        head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += "Connection: close\r\n\r\n"
        self.release()
        self.used = True
        self.status = status
        data = head.encode("latin-1") + b"".join(chunks)
        self.sent = len(data)
        try:
            self.sock.sendall(data)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _PywsgiTakeover(_Takeover):
    # The handler reads requests through a buffered file on the socket: closing
    # it makes the handler's keep-alive loop stop after this request.  The
    # handler writes nothing itself unless the application calls start_response
    # (then the write fails with EPIPE on the shut-down connection, ignored).

    def __init__(self, sock: Any, rfile: Any) -> None:
        super().__init__(sock)
        self.rfile = rfile

    def pending(self) -> bytes:
        return _take_buffered(self.rfile, self.sock._wrapped)

    def release(self) -> None:
        try:
            self.rfile.close()
        except (OSError, ValueError):
            pass


def _pywsgi_takeover(environ: dict[str, Any]) -> Optional[_Takeover]:
    stream = environ.get("wsgi.input")
    # upgrade requests get the handler's rfile itself; others an Input around it
    rfile = stream.rfile if isinstance(stream, pywsgi.Input) else stream
    sock = getattr(getattr(rfile, "raw", None), "_sock", None)
    if not isinstance(sock, (gsocket.socket, tls.TLSSocket)) or getattr(rfile, "closed", True):
        return None
    return _PywsgiTakeover(sock, rfile)


class _GunicornTakeover(_Takeover):
    # gunicorn's gevent worker writes a response unless the application raises
    # StopIteration (see finish_response; without start_response it would fail
    # on a missing status); it closes the socket afterwards.
    raise_stop_iteration = True

    def __init__(self, sock: Any, environ: dict[str, Any]) -> None:
        super().__init__(sock)
        self.environ = environ

    def pending(self) -> bytes:
        reader = getattr(self.environ.get("wsgi.input"), "reader", None)
        unreader = getattr(reader, "unreader", None)
        if unreader is None:
            return b""
        take = getattr(unreader, "take_buffered", None)
        if take is not None:
            return take() or b""
        buf = getattr(unreader, "buf", None)
        if buf is None:
            return b""
        data: bytes = buf.getvalue()
        unreader.buf = io.BytesIO()
        return data


def _gunicorn_takeover(environ: dict[str, Any]) -> Optional[_Takeover]:
    sock = environ.get("gunicorn.socket")
    # only the gevent worker: sync/gthread workers block a thread per connection
    if not isinstance(sock, gsocket.socket):
        return None
    return _GunicornTakeover(sock, environ)
