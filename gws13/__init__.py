"""gws13: RFC 6455 WebSockets for gevent WSGI servers.

    server = gevent.pywsgi.WSGIServer(addr, app, handler_class=gws13.WebSocketHandler)

then either use ``environ["wsgi.websocket"]`` (gevent-websocket style) or the
egg-style API: ``with_websocket(environ, start_response, proc)``.
"""

import logging as _logging

from ._metrics import metrics
from .api import (current_websocket, receive_message, send_message, with_concurrent_websocket,
                  with_websocket)
from .connection import MessageStream, PendingPing, WebSocket
from .deflate import Deflate  # also registers the ``compression`` parameter
from .exceptions import (AccessDenied, ConnectionClosed, ConnectionTimeout, HandshakeError,
                         InvalidData, InvalidHandshake, InvalidOptype, MessageTooLarge,
                         MissingUpgradeHeader, ProtocolError, ReservedBitsNotSupported,
                         UnexpectedError, UnsupportedVersion, WebSocketError)
from .hub import Hub
from .params import Parameters, parameterize, parameters
from .server import WebSocketHandler
from .client import connect
from .wsgi import websocket_app
from . import testing  # gws13.testing.Client, usable after a plain "import gws13"

__version__ = "0.1.0"

# a library logs, the application decides what is shown (docs/guide/observability.md)
_logging.getLogger("gws13").addHandler(_logging.NullHandler())


def _accelerator() -> "tuple[bool, str]":
    # gws13.frames decides: it imports the C functions from gws13._speedups and
    # falls back to pure Python on any ImportError (GWS13_NO_EXTENSIONS only acts
    # at build time, by not building the extension).  Say which path it took, and why.
    import importlib
    import warnings

    from . import frames

    try:
        module = importlib.import_module("gws13._speedups")
    except ModuleNotFoundError as exc:
        if exc.name != "gws13._speedups":
            raise
        return False, ("the C extension gws13._speedups is not installed: it was built without a C "
                       "compiler or Python headers, or with GWS13_NO_EXTENSIONS=1 (pure Python, slower)")
    except ImportError as exc:  # built, but this interpreter cannot load it
        reason = f"the C extension gws13._speedups is there but does not load: {exc}"
        warnings.warn(f"gws13 runs in pure Python: {reason}", RuntimeWarning, stacklevel=3)
        return False, reason
    if frames.apply_mask is not getattr(module, "apply_mask", None) or getattr(frames, "scan_small") is None:
        return False, (f"the C extension {module.__file__} lacks functions this gws13 needs "
                       "(left from another version? reinstall gws13)")
    return True, f"the C extension gws13._speedups is loaded ({module.__file__})"


#: True when the C accelerator (``gws13._speedups``: unmasking, small-frame
#: parsing, large reads straight into the message) is in use, False when gws13
#: runs in pure Python; :data:`accelerator_reason` says why.  ``python -m gws13``
#: prints both.
accelerated: bool
#: Why :data:`accelerated` is what it is: where the extension was loaded from,
#: or why it is not in use (not built, or built but failing to load).
accelerator_reason: str
accelerated, accelerator_reason = _accelerator()
del _accelerator

def __getattr__(name: str) -> "object":
    # gws13.dashboard without an import of its own (it needs nothing more than gws13)
    if name == "dashboard":
        import importlib

        return importlib.import_module(".dashboard", __name__)
    raise AttributeError(f"module 'gws13' has no attribute {name!r}")


__all__ = [
    "WebSocketHandler", "WebSocket", "PendingPing", "MessageStream", "connect", "websocket_app",
    "with_websocket", "with_concurrent_websocket", "receive_message", "send_message",
    "current_websocket", "parameters", "parameterize", "Parameters", "Deflate",
    "WebSocketError", "ProtocolError", "ReservedBitsNotSupported", "InvalidData",
    "MessageTooLarge", "ConnectionTimeout", "InvalidOptype", "HandshakeError",
    "MissingUpgradeHeader", "InvalidHandshake", "UnsupportedVersion", "AccessDenied",
    "UnexpectedError", "ConnectionClosed",
    "Hub", "metrics",
]
