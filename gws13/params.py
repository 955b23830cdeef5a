"""Connection parameters, after the egg's SRFI-39 parameters.

Three layers, the nearest wins: keyword arguments of a call (``with_websocket(...,
ping_interval=5)``), :func:`parameterize` blocks (greenlet-local, and inherited by
the greenlets spawned inside them), and process-wide defaults set as attributes
of :data:`parameters`.  Values are checked when they are set, not when a
connection uses them.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Callable, Dict, Iterator, Tuple

from greenlet import getcurrent

__all__ = ["parameters", "parameterize", "Parameters"]


def _access_denied(environ, start_response):
    """Default ``access_denied``: 403 with a short HTML body."""
    body = b"<h1>Access denied</h1>"
    start_response("403 Forbidden", [("Content-Type", "text/html"),
                                      ("Content-Length", str(len(body)))])
    return [body]


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be >= 0 and finite (0 disables it), got {value!r}")
    return value


def _size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 < value < 2 ** 63:
        raise ValueError(f"{name} must be between 1 and 2**63-1, got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


def _callable(name: str, value: Any) -> Callable:
    if not callable(value):
        raise TypeError(f"{name} must be callable")
    return value


def _optional_callable(name: str, value: Any):
    return None if value is None else _callable(name, value)


def _protocols(name: str, value: Any):
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"{name} must be a list of non-empty strings")
    return tuple(value)


#: name -> (default, validator)
_SPEC: Dict[str, Tuple[Any, Callable[[str, Any], Any]]] = {
    "ping_interval": (15, _seconds),
    "close_timeout": (5, _seconds),
    # seconds a server connection has to send each request head (gws13.server)
    "handshake_timeout": (10, _seconds),
    "connection_timeout": (58, _seconds),
    "accept_connection": (lambda origin: True, _callable),
    "access_denied": (_access_denied, _callable),
    "drop_incoming_pings": (False, _flag),
    "propagate_common_errors": (False, _flag),
    "max_frame_size": (2 ** 20, _size),
    "max_message_size": (2 ** 20, _size),
    # messages read ahead of the application before reading stops (TCP backpressure)
    "max_queue": (16, _size),
    "subprotocols": (None, _protocols),
    "select_subprotocol": (None, _optional_callable),
}


def define(name: str, default: Any, validator: Callable[[str, Any], Any]) -> None:
    """Register a parameter (used by optional modules such as compression)."""
    _SPEC[name] = (default, validator)
    _defaults[name] = validator(name, default)


def validate(values: Dict[str, Any]) -> Dict[str, Any]:
    """Check ``values``; raise TypeError for an unknown name or a bad type,
    ValueError for a value out of range."""
    out = {}
    for name, value in values.items():
        spec = _SPEC.get(name)
        if spec is None:
            raise TypeError(f"unknown gws13 parameter {name!r}")
        out[name] = spec[1](name, value)
    return out


_defaults: Dict[str, Any] = {name: check(name, default) for name, (default, check) in _SPEC.items()}
# Each greenlet keeps its stack of override dicts (from parameterize blocks) in
# this attribute: it dies with the greenlet, and reading it is one lookup.
_LAYERS = "_gws13_layers"


def _stack(g) -> list:
    stack = getattr(g, _LAYERS, None)
    if stack is None:
        stack = []
        setattr(g, _LAYERS, stack)
    return stack


def _layers() -> Iterator[dict]:
    """Override layers in force here, nearest first: this greenlet's blocks,
    then those of the greenlet that spawned it, and so on.  Lazy: a lookup
    usually stops at the current greenlet's own layers."""
    g = getcurrent()
    while g is not None:
        stack = getattr(g, _LAYERS, None)
        if stack:
            yield from reversed(stack)
        ref = getattr(g, "spawning_greenlet", None)
        g = ref() if ref is not None else None


def _lookup(name: str) -> Any:
    for layer in _layers():
        if name in layer:
            return layer[name]
    return _defaults[name]


_shared: Dict[str, Any] = {}  # the defaults snapshot handed out while nothing overrides them
# snapshots of the defaults with the same keyword values on top (with_websocket
# always passes max_queue=1): shared too, as long as the defaults do not change
_variants: Dict[tuple, Dict[str, Any]] = {}
_MAX_VARIANTS = 32


def effective(**call_values: Any) -> Dict[str, Any]:
    """A snapshot of every parameter as seen from the current greenlet, with
    ``call_values`` (validated here) on top.  Treat it as read-only: when no
    layer overrides anything, connections with the same keyword values share
    one snapshot."""
    global _shared
    layers = list(_layers())
    if not layers:
        if _shared != _defaults:
            _shared = dict(_defaults)  # a new object: earlier snapshots stay as they were
            _variants.clear()
        if not call_values:
            return _shared
        checked = validate(call_values)
        # the type is part of the key: 5 and 5.0 are equal, but a snapshot
        # gives back exactly the value it was given
        key = tuple((k, v.__class__, v) for k, v in checked.items())
        try:
            values = _variants.get(key)
        except TypeError:  # an unhashable value (e.g. a callable object)
            values, key = None, None
        if values is None:
            values = dict(_shared)
            values.update(checked)
            if key is not None and len(_variants) < _MAX_VARIANTS:
                _variants[key] = values
        return values
    values = dict(_defaults)
    for layer in reversed(layers):
        values.update((k, v) for k, v in layer.items() if k in _SPEC)
    values.update(validate(call_values))
    return values


class Parameters:
    """Process-wide defaults as attributes; reading one gives the value in force
    in the current greenlet (a :func:`parameterize` block wins over the default)."""

    def __getattr__(self, name: str) -> Any:
        if name not in _SPEC:
            raise AttributeError(f"unknown gws13 parameter {name!r}")
        return _lookup(name)

    def __setattr__(self, name: str, value: Any) -> None:
        _defaults.update(validate({name: value}))

    def __dir__(self):
        return sorted(_SPEC)

    def defaults(self) -> Dict[str, Any]:
        """The process-wide defaults (ignores parameterize blocks)."""
        return dict(_defaults)

    def reset(self) -> None:
        """Restore every default to its built-in value."""
        for name, (default, check) in _SPEC.items():
            _defaults[name] = check(name, default)


parameters = Parameters()


@contextlib.contextmanager
def parameterize(**values: Any) -> Iterator[None]:
    """Override parameters for the current greenlet and the greenlets it spawns,
    for the duration of the ``with`` block.  Raises TypeError/ValueError at once
    for unknown names or bad values."""
    layer = validate(values)
    g = getcurrent()
    stack = _stack(g)
    stack.append(layer)
    try:
        yield
    finally:
        _pop(stack, layer)


def _pop(stack: list, layer: dict) -> None:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is layer:
            del stack[i]
            return


def push(name: str, value: Any) -> dict:
    """What entering :class:`bind` does, for a caller that keeps no context
    manager: bind ``name`` in the current greenlet until :func:`pop` (called
    in the same greenlet)."""
    layer = {name: value}
    _stack(getcurrent()).append(layer)
    return layer


def pop(layer: dict) -> None:
    """End a binding that :func:`push` made in the current greenlet."""
    _pop(_stack(getcurrent()), layer)


class bind:
    """Bind a library-internal greenlet-inherited value (no validation), e.g.
    the current websocket, for a ``with`` block; read it back with
    :func:`lookup`.  A small class rather than a generator-based context
    manager: with_websocket holds one for the whole life of a connection."""

    __slots__ = ("_layer", "_stack")

    def __init__(self, name: str, value: Any) -> None:
        self._layer = {name: value}
        self._stack: Any = None

    def __enter__(self) -> None:
        stack = self._stack = _stack(getcurrent())
        stack.append(self._layer)

    def __exit__(self, *exc_info: Any) -> None:
        _pop(self._stack, self._layer)


def lookup(name: str, default: Any = None) -> Any:
    """The value bound with :func:`bind` (or a parameter) in force here."""
    stack = getattr(getcurrent(), _LAYERS, None)
    if stack and name in stack[-1]:
        return stack[-1][name]  # bound by the innermost block of this greenlet
    try:
        return _lookup(name)
    except KeyError:
        return default
