"""An in-process test client for WebSocket routes: no port, no thread.

::

    client = gws13.testing.Client(app)
    with client.connect("/ws", headers={"X-Token": "t"}, subprotocols=["chat"]) as ws:
        ws.send("hello")
        assert ws.receive() == "hello"

Each :meth:`Client.connect` (and each plain HTTP request, :meth:`Client.get`
...) makes a socket pair.  One end is served in a new greenlet of the calling
thread by the real server code path: a ``gevent.pywsgi.WSGIServer`` that
never listens, with :class:`gws13.WebSocketHandler` (or the ``handler_class``
given), exactly as a request on a port would be.  The other end is the client
side of :func:`gws13.connect` (the same handshake checks, the same
:class:`~gws13.WebSocket` API, frames masked as a client's are).  So a
refusal (``accept_connection``, a 400/403/426, an HTTP route answering the
upgrade) raises :class:`gws13.InvalidHandshake` with ``.status``, ``.headers``
and ``.body``, as against a real server.

The client's blocking calls run the server greenlet while they wait: a test
is plain sequential code, in gevent or not.  Every wait has a deadline (the
client's ``timeout``, 10 s by default).

Cookies: the client keeps a cookie jar, :attr:`Client.cookies` (a dict, name to
value).  ``Set-Cookie`` headers of every response (plain HTTP, the 101, a
refusal) go into it, and every request sends it as a ``Cookie`` header (unless
``headers=`` gives one).  So a Flask session made by an HTTP route
(``client.post("/login")``) is sent with the next ``client.connect``; a value
can also be set directly (``client.cookies["session"] = ...``).  Attributes
(domain, path, expiry except deletion) are not modelled: one jar per client.

Errors of the application: an exception the WSGI application raises (not a
:class:`~gws13.WebSocketError`, which is how a route closes a connection with
a code) is re-raised in the test when the ``with client.connect(...)`` block
ends, when a refused handshake comes back, or when an HTTP response was read
(``raise_server_exceptions=False`` turns this off: then the server logs them
as usual).
"""

from __future__ import annotations

import http.client
import io
import json as _json
import weakref
from http.cookies import SimpleCookie
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import gevent
from gevent import pywsgi
from gevent import socket as _gsocket

from . import client as _client
from .connection import WebSocket
from .exceptions import InvalidHandshake, WebSocketError
from .server import WebSocketHandler

__all__ = ["Client", "ClientWebSocket", "Response"]

HeadersLike = Union[Mapping[str, str], Iterable[Tuple[str, str]]]

_ADDRESS = ("127.0.0.1", 50000)  # the peer address the application sees


class Response:
    """A plain HTTP response: ``status`` (int), ``reason``, ``headers``
    (``(name, value)`` pairs), ``body`` (bytes)."""

    def __init__(self, status: int, reason: str, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first header called ``name`` (any case), or ``default``."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError if it is not)."""
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<gws13.testing.Response {self.status} {self.reason}>"


class ClientWebSocket(WebSocket):
    """The client side of a :meth:`Client.connect`: a :class:`gws13.WebSocket`
    that is also a context manager.  Leaving the ``with`` block closes it
    (code 1000), waits for the server side to finish (at most the client's
    ``timeout``; then it is killed) and re-raises an exception the application
    raised."""

    __slots__ = ("_gws13_session",)
    _gws13_session: "_Session"

    def __enter__(self) -> "ClientWebSocket":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()
        session = getattr(self, "_gws13_session", None)
        if session is not None:
            session.finish(raise_error=exc_type is None)


class _Session:
    """One socket pair's server side: its greenlet and what the app raised."""

    def __init__(self, client: "Client", sock: Any) -> None:
        self.client = client
        self.error: Optional[BaseException] = None
        self.greenlet = gevent.spawn(self._serve, sock)

    def _serve(self, sock: Any) -> None:
        try:
            self.client._server.handle(sock, _ADDRESS)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def finish(self, raise_error: bool = True) -> None:
        """Wait (bounded) for the server side to end; re-raise the app's error."""
        self.greenlet.join(self.client.timeout)
        if not self.greenlet.dead:
            self.greenlet.kill(block=True, timeout=1)
        error, self.error = self.error, None
        if error is not None and raise_error and self.client.raise_server_exceptions:
            raise error


class Client:
    """Drive ``app``'s routes (WebSocket and plain HTTP) in-process.

    :param app: a WSGI application (a Flask or Bottle app, ``gws13.websocket_app(...)``...).
    :param handler_class: the pywsgi handler (default :class:`gws13.WebSocketHandler`;
        e.g. ``gws13.compat.geventwebsocket.handler.WebSocketHandler``).
    :param server_class: the ``pywsgi.WSGIServer`` subclass to run it (never listens).
    :param environ: extra WSGI environ for every request (``SERVER_NAME``
        ``testserver`` and ``SERVER_PORT`` ``80`` by default).
    :param cookies: the initial cookie jar.
    :param timeout: seconds for every wait: the opening handshake, an HTTP
        response, the server side's end after a ``with`` block.
    :param raise_server_exceptions: re-raise the application's exceptions in the test.
    """

    def __init__(self, app: Callable[..., Any], *, handler_class: type = WebSocketHandler,
                 server_class: type = pywsgi.WSGIServer, environ: Optional[Dict[str, Any]] = None,
                 cookies: Optional[Mapping[str, str]] = None, timeout: float = 10.0,
                 raise_server_exceptions: bool = True) -> None:
        self.app = app
        self.timeout = timeout
        self.raise_server_exceptions = raise_server_exceptions
        #: the cookie jar: name -> value, sent with every request
        self.cookies: Dict[str, str] = dict(cookies or {})
        base = {"SERVER_NAME": "testserver", "SERVER_PORT": "80"}
        base.update(environ or {})
        self._sessions: "weakref.WeakKeyDictionary[Any, _Session]" = weakref.WeakKeyDictionary()
        # a server that is never started: its handle() serves one socket
        self._server = server_class(_ADDRESS, self._app, handler_class=handler_class, log=None,
                                    environ=base)

    def _app(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # the application runs in its session's greenlet (pywsgi calls it there)
        session = self._sessions.get(gevent.getcurrent())
        try:
            return self.app(environ, start_response)
        except (WebSocketError, gevent.GreenletExit):
            raise  # how routes close with a code / a shutdown: the handler's business
        except BaseException as exc:
            if session is not None:
                session.error = exc
            raise

    def _open(self) -> Tuple[Any, _Session]:
        ours, theirs = _gsocket.socketpair()
        session = _Session(self, theirs)
        self._sessions[session.greenlet] = session
        return ours, session

    # -- cookies -------------------------------------------------------------
    def _with_cookies(self, headers: Optional[HeadersLike]) -> List[Tuple[str, str]]:
        items: List[Tuple[str, str]] = []
        if headers is not None:
            items = list(headers.items() if isinstance(headers, Mapping) else headers)
        if self.cookies and not any(name.lower() == "cookie" for name, _ in items):
            items.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        return items

    def _store_cookies(self, headers: Iterable[Tuple[str, str]]) -> None:
        for name, value in headers:
            if name.lower() != "set-cookie":
                continue
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value)
            except Exception:  # a cookie the standard library cannot parse: not kept
                continue
            for key, morsel in jar.items():
                if morsel["max-age"] in ("0", "-1") or (morsel["expires"] and
                                                        "1970" in morsel["expires"]):
                    self.cookies.pop(key, None)  # deleted (werkzeug deletes with both)
                else:
                    self.cookies[key] = morsel.value

    # -- WebSocket -------------------------------------------------------------
    def connect(self, path: str = "/", *, headers: Optional[HeadersLike] = None,
                subprotocols: Optional[Sequence[str]] = None, origin: Optional[str] = None,
                **params: Any) -> ClientWebSocket:
        """Open a WebSocket to ``path`` (may hold a query string); use the
        result as a context manager, or close it.

        ``headers``, ``subprotocols``, ``origin`` and ``params`` (connection
        parameters: ``compression``, ``max_message_size``...) are those of
        :func:`gws13.connect`.  Raises :class:`InvalidHandshake` when the
        server refuses (``.status``, ``.headers``, ``.body``), the
        application's own exception if it raised during the handshake,
        TimeoutError after the client's ``timeout``."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        session_box: List[_Session] = []

        def opener(target: Any, ssl_context: Any, timeout: Optional[float]) -> Any:
            sock, session = self._open()
            session_box.append(session)
            return sock

        try:
            ws = _client._connect("ws://testserver" + path, opener, ClientWebSocket,
                                  subprotocols=subprotocols, headers=self._with_cookies(headers),
                                  origin=origin, ssl_context=None, timeout=self.timeout,
                                  params=params)
        except InvalidHandshake as exc:
            self._store_cookies(getattr(exc, "headers", None) or ())
            if session_box:
                error = session_box[0]
                try:
                    error.finish()
                except BaseException as app_error:
                    raise app_error from exc
            raise
        except BaseException:
            if session_box:
                session_box[0].finish(raise_error=False)
            raise
        ws._gws13_session = session_box[0]
        self._store_cookies(ws.environ.get("gws13.response_headers") or ())
        return ws

    # -- plain HTTP ------------------------------------------------------------
    def request(self, method: str, path: str = "/", *, headers: Optional[HeadersLike] = None,
                body: Union[bytes, str] = b"", json: Any = None) -> Response:
        """Send one HTTP/1.1 request (``Connection: close``) to the app and read
        the whole response.  ``json`` sends a JSON body.  Raises the
        application's exception (see the module docstring), TimeoutError."""
        items = self._with_cookies(headers)
        if json is not None:
            body = _json.dumps(json).encode("utf-8")
            items.append(("Content-Type", "application/json"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = [f"{method} {path} HTTP/1.1", "Host: testserver", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in items]
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock, session = self._open()
        data = bytearray()
        try:
            with gevent.Timeout(self.timeout, TimeoutError(f"no complete response within {self.timeout} s")):
                sock.sendall(head + body)
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        finally:
            sock.close()
            session.finish()
        response = http.client.HTTPResponse(_FakeSocket(bytes(data)))  # type: ignore[arg-type]
        response.begin()
        result = Response(response.status, response.reason, response.getheaders(), response.read())
        self._store_cookies(result.headers)
        return result

    def get(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("GET", path, ...)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("POST", path, ...)``."""
        return self.request("POST", path, **kwargs)


class _FakeSocket:
    """What http.client.HTTPResponse reads a response from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO(self._data)
