"""Flask-Sockets' API on gws13: ``from gws13.compat.flask_sockets import Sockets``.

    app = Flask(__name__)
    sockets = Sockets(app)

    @sockets.route("/echo")
    def echo_socket(ws):            # gevent-websocket's socket API
        while not ws.closed:
            message = ws.receive()
            ws.send(message)

Routes get a :class:`gws13.compat.geventwebsocket.websocket.WebSocket` (the
gevent-websocket API Flask-Sockets handed them) and run inside the app and
request contexts, with ``request.cookie`` set as Flask-Sockets sets it.
Serve the app with ``pywsgi.WSGIServer(addr, app,
handler_class=gws13.WebSocketHandler)`` (or the gevent-websocket facade's
handler, gevent's stock handler, gunicorn's gevent workers, or
``gunicorn -k gws13.compat.flask_sockets.worker``).

Requests that are not WebSocket requests, or match no socket route, go to the
Flask app.  Sending after the close raises a ``WebSocketError``, which ends
the route quietly (the README's echo loop ends this way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List

from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_cookie
from werkzeug.routing import Map, Rule

from .geventwebsocket.websocket import WebSocket, is_websocket_request, serve

if TYPE_CHECKING:
    import flask

# This module does not import Flask itself: ``gunicorn -k
# gws13.compat.flask_sockets.worker`` imports it in the arbiter, before the
# fork, and Flask's import-time logging handler would then be finalized after
# gevent's thread module at each worker's exit (a traceback in the log).

__all__ = ["Sockets", "SocketMiddleware"]  # and `worker`, imported on first use (needs gunicorn)


class SocketMiddleware:
    """Wraps the Flask app's ``wsgi_app``: WebSocket requests that match a
    socket route go to it, everything else to Flask."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], app: "flask.Flask", socket: "Sockets") -> None:
        self.ws = socket
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_websocket_request(environ):
            return self.wsgi_app(environ, start_response)
        adapter = self.ws.url_map.bind_to_environ(environ)
        try:
            handler, values = adapter.match()
        except HTTPException:  # NotFound, and Werkzeug's WebsocketMismatch
            return self.wsgi_app(environ, start_response)

        def run(ws: WebSocket) -> None:
            cookie = parse_cookie(environ["HTTP_COOKIE"]) if "HTTP_COOKIE" in environ else None
            with self.app.app_context():
                with self.app.request_context(environ) as context:
                    # Flask-Sockets' attribute (Flask's own request.cookies works too)
                    context.request.cookie = cookie  # type: ignore[attr-defined]
                    handler(ws, **values)

        return serve(environ, start_response, run)


class Sockets:
    """WebSocket routes for a Flask app: ``Sockets(app)`` or ``Sockets()`` +
    :meth:`init_app`.  ``url_map`` is the routes' own Werkzeug map."""

    def __init__(self, app: Any = None) -> None:
        self.url_map = Map()
        self.blueprints: Dict[str, "flask.Blueprint"] = {}
        self._blueprint_order: List["flask.Blueprint"] = []
        if app:
            self.init_app(app)

    def init_app(self, app: "flask.Flask") -> None:
        app.wsgi_app = SocketMiddleware(app.wsgi_app, app, self)  # type: ignore[method-assign]

    def route(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``f(ws, **url_variables)`` serves WebSocket requests to ``rule``."""
        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            endpoint = options.pop("endpoint", None)
            self.add_url_rule(rule, endpoint, f, **options)
            return f
        return decorator

    def add_url_rule(self, rule: str, _: Any, f: Callable[..., Any], **options: Any) -> None:
        # websocket=True: Werkzeug 2+ only matches upgrade requests to such rules
        # (Flask-Sockets' plain rules raise WebsocketMismatch there)
        self.url_map.add(Rule(rule, endpoint=f, defaults=options.get("defaults") or None, websocket=True))

    def register_blueprint(self, blueprint: "flask.Blueprint", **options: Any) -> None:
        """Register the WebSocket routes of a Flask ``Blueprint`` (its
        ``url_prefix`` and ``url_defaults`` apply).  Raises AssertionError for a
        different blueprint of the same name."""
        first_registration = False
        if blueprint.name in self.blueprints:
            assert self.blueprints[blueprint.name] is blueprint, (
                f"A blueprint's name collision occurred between {blueprint!r} and "
                f"{self.blueprints[blueprint.name]!r}. Both share the same name {blueprint.name!r}.")
        else:
            self.blueprints[blueprint.name] = blueprint
            self._blueprint_order.append(blueprint)
            first_registration = True
        # Flask's Blueprint.register expects a whole Flask app; its setup state
        # only needs add_url_rule, so replay the blueprint's routes through it
        state = blueprint.make_setup_state(self, options, first_registration)  # type: ignore[arg-type]
        for deferred in blueprint.deferred_functions:
            deferred(state)


def __getattr__(name: str) -> Any:
    # ``gunicorn -k gws13.compat.flask_sockets.worker``: imported only when asked
    # for, so that this module does not need gunicorn
    if name == "worker":
        from .geventwebsocket.gunicorn.workers import GeventWebSocketWorker
        return GeventWebSocketWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
