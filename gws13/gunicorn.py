"""A gunicorn worker that serves WebSockets and drains them on shutdown.

    gunicorn -k gws13.gunicorn.GeventWebSocketWorker -w 4 app:app

It is gunicorn's ``gevent_pywsgi`` worker with :class:`gws13.WebSocketHandler`
(so ``environ["wsgi.websocket"]``, :func:`gws13.with_websocket`,
:func:`gws13.websocket_app`, the Flask and Bottle integrations all work), plus
a shutdown that tells every open WebSocket goodbye:

* SIGTERM (graceful stop, e.g. ``kill -TERM <arbiter>`` or a rolling restart):
  the worker stops accepting, sends close 1001 "server shutting down" to every
  WebSocket at once, waits for the handlers to finish and exits; handlers still
  running shortly before ``graceful_timeout`` are killed, so the worker exits
  within it.
* SIGQUIT / SIGINT (quick stop): the same, but it waits at most
  ``min(graceful_timeout, close_timeout)`` (``close_timeout`` is the gws13
  parameter, 5 s by default) for the closing handshakes.

Every request head has ``handshake_timeout`` seconds (the gws13 parameter, 10 s
by default; see :class:`gws13.WebSocketHandler`); on a keep-alive connection
the wait for the next request is bounded by gunicorn's ``keepalive`` setting
too, as in gunicorn's own workers.  With TLS (``--certfile``), the TLS
handshake counts as part of the first request head.

gunicorn's stock ``gevent`` workers run :func:`gws13.websocket_app` too (see
:func:`gws13.server.websocket_from_environ`), but their WebSockets only end
when ``graceful_timeout`` runs out.
"""

from __future__ import annotations

import socket
import sys
import time
import weakref
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from . import params as _params
from .server import WebSocketHandler, WebSocketServer

__all__ = ["GeventWebSocketWorker", "GunicornWebSocketHandler"]

# the worker's servers (one per listening socket; one worker per process)
_servers: "weakref.WeakSet[Any]" = weakref.WeakSet()


# handlers waiting for a request line (an idle keep-alive connection)
_idle: "weakref.WeakSet[Any]" = weakref.WeakSet()


class GunicornWebSocketHandler(WebSocketHandler, PyWSGIHandler):
    """:class:`gws13.WebSocketHandler` with gunicorn's access log and environ
    additions (``gunicorn.sock``, ``RAW_URI``)."""

    def read_requestline(self) -> Any:
        _idle.add(self)
        try:
            return super().read_requestline()
        finally:
            _idle.discard(self)

    def _head_timeout(self, first: bool) -> float:
        # gunicorn's ``keepalive`` bounds the wait for the next request on a
        # keep-alive connection, as in its other workers (pywsgi alone ignores it)
        seconds = super()._head_timeout(first)
        if not first and _keepalive > 0:
            return min(seconds, _keepalive) if seconds else _keepalive
        return seconds

    def log_request(self) -> None:
        if self.response_headers is None:  # a 101 written by the WebSocket layer
            self.response_headers = []
        if self.environ is None:
            # a request head refused before it had an environ (400/414/431):
            # gunicorn's access log needs one
            address: Any = self.client_address  # typeshed says str; pywsgi sets a (host, port) tuple
            self.environ = {"REQUEST_METHOD": self.command or "-", "RAW_URI": self.path or "-",
                            "SERVER_PROTOCOL": self.request_version or "-",
                            "REMOTE_ADDR": address[0] if isinstance(address, tuple) else "-"}
        super().log_request()


# gunicorn's ``keepalive`` setting (seconds), set by the worker of this process
_keepalive: float = 0


class _Server(WebSocketServer, PyWSGIServer):
    # WebSocketServer: with TLS (--certfile), the TLS handshake happens in the
    # handler, under handshake_timeout and its quiet error handling
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _servers.add(self)


class GeventWebSocketWorker(GeventPyWSGIWorker):
    """gunicorn's gevent pywsgi worker with WebSocket support and a graceful
    WebSocket drain on SIGTERM/SIGQUIT/SIGINT (close code 1001)."""

    server_class = _Server
    wsgi_handler = GunicornWebSocketHandler

    _shutting_down = False

    def init_process(self) -> None:
        global _keepalive
        _keepalive = self.cfg.keepalive
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: graceful stop within ``graceful_timeout``."""
        super().handle_exit(sig, frame)
        # leave part of the graceful timeout for the exit itself, before the
        # arbiter's SIGKILL
        graceful = self.cfg.graceful_timeout
        self._begin_shutdown(max(graceful - min(1.0, max(0.5, graceful / 4)), 0.1))

    def handle_quit(self, sig: int, frame: Any) -> None:
        """SIGQUIT/SIGINT: quick stop, but the WebSockets still hear 1001."""
        self.alive = False
        close_timeout = _params.parameters.close_timeout or 1
        self._begin_shutdown(min(self.cfg.graceful_timeout, close_timeout), quit_hook=True)

    def _begin_shutdown(self, limit: float, quit_hook: bool = False) -> None:
        # this runs in a signal handler: move the work to a greenlet
        if self._shutting_down:
            return
        self._shutting_down = True
        gevent.spawn(self._shutdown, limit, quit_hook)

    def _shutdown(self, limit: float, quit_hook: bool) -> None:
        deadline = time.monotonic() + limit
        if quit_hook:
            self.cfg.worker_int(self)
        servers = list(_servers)
        # closing a server stops accepting and sends 1001 to each of its
        # WebSockets (gws13.server._track), waiting up to close_timeout for
        # the closing handshakes
        closing = [gevent.spawn(server.close) for server in servers]
        # connections idle between HTTP requests would hold the drain until the
        # deadline (pywsgi has no keep-alive timeout): end them now
        for handler in list(_idle):
            try:
                handler.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
        gevent.joinall(closing, timeout=max(deadline - time.monotonic(), 0))
        while time.monotonic() < deadline and any(_busy(server) for server in servers):
            self.notify()
            gevent.sleep(0.05)
        busy = [server for server in servers if _busy(server)]
        if busy:
            self.log.warning("gws13: killing %d handler(s) still running at shutdown",
                             sum(server.pool.size - server.pool.free_count() for server in busy))
            for server in busy:
                server.pool.kill(block=True, timeout=0.5)
        sys.exit(0)  # raised in the main greenlet by gevent: the worker exits now


def _busy(server: Any) -> bool:
    pool = server.pool
    return pool is not None and pool.free_count() != pool.size
