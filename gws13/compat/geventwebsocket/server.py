"""gevent-websocket's ``WebSocketServer``: a pywsgi server with the facade's handler."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from gevent.pywsgi import WSGIServer

from .handler import WebSocketHandler
from .websocket import Client

__all__ = ["WebSocketServer"]


class WebSocketServer(WSGIServer):
    """``WebSocketServer(listener, application, debug=False, pre_start_hook=None,
    **pywsgi_options)``.

    ``clients`` maps each open WebSocket's peer address to its
    :class:`~.websocket.Client`; ``pre_start_hook(handler)`` returning true
    serves that request as plain HTTP; ``debug=True`` turns the ``logger`` to
    DEBUG.  Closing or stopping the server sends 1001 to every open WebSocket
    (gws13)."""

    handler_class = WebSocketHandler

    def __init__(self, *args: Any, debug: bool = False,
                 pre_start_hook: Optional[Callable[[Any], Any]] = None, **kwargs: Any) -> None:
        self.debug = debug
        self.pre_start_hook = pre_start_hook
        self.clients: Dict[Any, Client] = {}
        self._logger: Optional[logging.Logger] = None
        super().__init__(*args, **kwargs)

    @property
    def logger(self) -> logging.Logger:
        if self._logger is None:
            self._logger = logging.getLogger("gws13.compat.geventwebsocket.server")
            if self.debug:
                self._logger.setLevel(logging.DEBUG)
        return self._logger

    @logger.setter
    def logger(self, logger: logging.Logger) -> None:
        self._logger = logger
