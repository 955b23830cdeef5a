"""A live dashboard page: :func:`app` is a WSGI application (off unless you
mount it) that serves one HTML page, its script, style sheet and icon (plain
HTML/JS/SVG shipped in the package: no CDN, no build step) and a WebSocket
that pushes a snapshot of :func:`gws13.metrics` (and of a :class:`gws13.Hub`)
every ``interval`` seconds.  The page draws open connections and messages per
second over the last minutes, the ping round-trip distribution, closes by
code, rooms and their sizes, and Redis status.

Mount it under any prefix; it builds every URL from ``SCRIPT_NAME``::

    dashboard = gws13.dashboard.app(hub=hub, accept=lambda environ: is_admin(environ))
    application = gws13.dashboard.mount("/dashboard", dashboard, application)

(or give it to any WSGI dispatcher that sets ``SCRIPT_NAME``, such as
werkzeug's ``DispatcherMiddleware``).  ``accept(environ)`` decides who may see
it, for every request (page and WebSocket); without one only loopback
clients may (``REMOTE_ADDR`` 127.0.0.1 or ::1): behind a proxy, pass one.

Routes, relative to the mount point: ``/`` the page, ``/ws`` the WebSocket,
``/snapshot.json`` one snapshot, ``/dashboard.js``, ``/dashboard.css``,
``/favicon.svg``.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional


from .._metrics import metrics
from ..connection import WebSocket
from ..wsgi import websocket_app

__all__ = ["app", "mount", "snapshot"]

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    # everything is same-origin: the page needs no other source
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
]


def _loopback(environ: Dict[str, Any]) -> bool:
    return environ.get("REMOTE_ADDR") in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value == float("inf"):
        return "+Inf"
    return value


def snapshot(hub: Any = None) -> Dict[str, Any]:
    """What the dashboard pushes: :func:`gws13.metrics` with string keys (JSON),
    ``time``, and with a hub its ``rooms`` and ``redis`` status (None without
    a Redis backend)."""
    out: Dict[str, Any] = _jsonable(metrics())
    out["time"] = time.time()
    out["hub"] = None
    if hub is not None:
        stats = hub.stats()
        redis = None
        if stats.get("backend") == "redis":
            redis = {key: stats.get(key) for key in ("connected", "subscribed", "reconnects", "errors",
                                                      "outbox", "outbox_dropped")}
        out["hub"] = {"backend": stats.get("backend"), "connections": stats.get("connections"),
                      "rooms": dict(stats.get("rooms", {})), "redis": redis,
                      "closed_slow": stats.get("closed_slow"), "published": stats.get("published")}
    return out


class _Dashboard:
    def __init__(self, hub: Any, accept: Callable[[Dict[str, Any]], Any], interval: float,
                 history: int, title: str) -> None:
        self.hub = hub
        self.accept = accept
        self.interval = interval
        self.title = title
        # one compact sample per interval while someone watches: [t, open, in, out]
        self.history: Deque[List[float]] = collections.deque(maxlen=history)
        self._last: Optional[Dict[str, Any]] = None
        self._files: Dict[str, bytes] = {}
        self._ws = websocket_app(self._push, compression=None, ping_interval=20.0)

    def sample(self) -> Dict[str, Any]:
        # viewers share one snapshot per interval (metrics() walks every connection)
        last = self._last
        now = time.time()
        if last is not None and now - last["time"] < self.interval * 0.5:
            return last
        snap = snapshot(self.hub)
        self._last = snap
        self.history.append([round(snap["time"], 3), snap["server_connections_open"],
                             snap["messages_received"], snap["messages_sent"]])
        return snap

    def _push(self, ws: WebSocket) -> None:
        snap = self.sample()
        ws.send(json.dumps({"type": "hello", "title": self.title, "interval": self.interval,
                            "history": list(self.history), "snapshot": snap}))
        while True:
            # receive() doubles as the pause: it returns None when the viewer leaves
            try:
                if ws.receive(timeout=self.interval) is None:
                    return
            except TimeoutError:
                pass
            ws.send(json.dumps({"type": "snapshot", "snapshot": self.sample()}))

    def _file(self, name: str) -> bytes:
        data = self._files.get(name)
        if data is None:
            with open(os.path.join(_STATIC, name), "rb") as f:
                data = self._files[name] = f.read()
        return data

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.accept(environ):
            body = b"forbidden\n"
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        path = environ.get("PATH_INFO", "") or ""
        if path == "":
            # "/prefix" -> "/prefix/": the page's relative URLs need the slash
            location = (environ.get("SCRIPT_NAME", "") or "") + "/"
            start_response("301 Moved Permanently", [("Location", location), ("Content-Length", "0")])
            return [b""]
        if path == "/ws":
            return self._ws(environ, start_response)
        if path == "/snapshot.json":
            body = json.dumps(self.sample()).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                           + _SECURITY_HEADERS)
            return [body]
        entry = _FILES.get(path)
        if entry is None or environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            body = b"not found\n"
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        name, content_type = entry
        body = self._file(name)
        if name == "index.html":
            body = body.replace(b"{{title}}", _html_escape(self.title).encode("utf-8"))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
                       + _SECURITY_HEADERS)
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def app(hub: Any = None, accept: Optional[Callable[[Dict[str, Any]], Any]] = None, *,
        interval: float = 1.0, history: int = 600, title: str = "gws13") -> WSGIApp:
    """The dashboard as a WSGI application.

    :param hub: a :class:`gws13.Hub` whose rooms and Redis status to show.
    :param accept: ``accept(environ)``, truthy to let a request in (the page,
        its files and its WebSocket); others get 403.  Default: loopback
        clients only.
    :param interval: seconds between two snapshots pushed to a page.
    :param history: samples kept for the time charts (one per ``interval``,
        recorded while at least one page is open): 600 is ten minutes.
    :param title: shown in the page's title and heading.

    Raises ValueError for an ``interval`` that is not positive or a
    ``history`` below 2."""
    if not (isinstance(interval, (int, float)) and interval > 0):
        raise ValueError("interval must be a positive number of seconds")
    if not (isinstance(history, int) and history >= 2):
        raise ValueError("history must be an integer >= 2")
    if accept is not None and not callable(accept):
        raise TypeError("accept must be callable: accept(environ) -> bool")
    return _Dashboard(hub, accept or _loopback, float(interval), history, title)


def mount(prefix: str, dashboard: WSGIApp, fallback: WSGIApp) -> WSGIApp:
    """A WSGI application that sends ``prefix`` and everything under it to
    ``dashboard`` (moving ``prefix`` from ``PATH_INFO`` to ``SCRIPT_NAME``,
    as WSGI dispatchers do) and every other request to ``fallback``.
    Raises ValueError unless ``prefix`` starts with ``/`` and does not end
    with one."""
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError("prefix must look like '/dashboard'")

    def mounted(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = (environ.get("SCRIPT_NAME", "") or "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            return dashboard(environ, start_response)
        return fallback(environ, start_response)

    return mounted


