"""Connection parameters, after the egg's SRFI-39 parameters.

Three layers, the nearest wins: keyword arguments of a call (``with_websocket(...,
ping_interval=5)``), :func:`parameterize` blocks (greenlet-local, and inherited by
the greenlets spawned inside them), and process-wide defaults set as attributes
of :data:`parameters`.  Values are checked when they are set, not when a
connection uses them.

Inheritance follows :mod:`contextvars`: a greenlet sees the blocks that were
open in its spawner when it was spawned (a snapshot, kept after the spawner
leaves them), never a block its spawner enters later, never one of another
greenlet.  gevent's hub is the root of its thread's greenlets: what it spawns
(a server's connection greenlets) starts with no block, so to configure a
server use :data:`parameters`, the call's keywords or a block in the
application.
"""

from __future__ import annotations

import contextlib
import numbers
import sys
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

from greenlet import getcurrent

__all__ = ["parameters", "parameterize", "Parameters"]


def _access_denied(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
    """Default ``access_denied``: 403 with a short HTML body."""
    body = b"<h1>Access denied</h1>"
    start_response("403 Forbidden", [("Content-Type", "text/html"),
                                      ("Content-Length", str(len(body)))])
    return [body]


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0 or value == float("inf"):  # type: ignore[operator]  # typeshed's numbers.Real has no operators
        raise ValueError(f"{name} must be >= 0 and finite (0 disables it), got {value!r}")
    return value  # type: ignore[return-value]  # a Real is a float to the caller


def _size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 < value < 2 ** 63:  # type: ignore[operator]  # typeshed's numbers.Integral has no operators
        raise ValueError(f"{name} must be between 1 and 2**63-1, got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


def _callable(name: str, value: Any) -> Callable[..., Any]:
    if not callable(value):
        raise TypeError(f"{name} must be callable")
    checked: Callable[..., Any] = value
    return checked


def _optional_callable(name: str, value: Any) -> Optional[Callable[..., Any]]:
    return None if value is None else _callable(name, value)


def _protocols(name: str, value: Any) -> Optional[Tuple[str, ...]]:
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
    _changed()


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
# bumped on every change of _defaults: effective() reuses its snapshots while it stays the same
_version = 0


def _changed() -> None:
    global _version
    _version += 1


# -- where the blocks live ---------------------------------------------------------
# The layers in force in a greenlet form an immutable linked list, nearest
# first: a node is the tuple (layer, next node) and None ends the list.  A
# greenlet's current node is kept in its gevent ``spawn_tree_locals`` dict,
# under _KEY.  gevent's Greenlet.__init__ (and the greenlets of spawn_raw)
# copy the spawner's ``spawn_tree_locals`` reference into each new greenlet.
# That dict is never written to once it holds a node: entering or leaving a
# block gives the greenlet a *new* dict (a copy with another node), so the
# reference a child took at its spawn stays a snapshot of the blocks open in
# its spawner at that moment.  The capture is gevent's own: nothing is added
# to any spawn, and a lookup is one attribute, one dict.get and a short walk.
_TREE = "spawn_tree_locals"
_KEY = "gws13.layers"
_ABSENT = object()


class _Token:
    """What entering a block did, so that leaving it can undo just that."""

    __slots__ = ("greenlet", "layer", "before", "installed")

    def __init__(self, greenlet: Any, layer: Dict[str, Any], before: Any, installed: Dict[Any, Any]) -> None:
        self.greenlet = greenlet
        self.layer = layer
        self.before = before        # the greenlet's spawn_tree_locals before (or _ABSENT)
        self.installed = installed  # the dict installed in its place


def _node(g: Any) -> Optional[Tuple[Any, ...]]:
    tree = getattr(g, _TREE, None)
    return tree.get(_KEY) if tree.__class__ is dict else None


def _ensure_hub() -> None:
    """Have this thread's gevent hub made now, before a raw greenlet (the main
    one, usually) holds a block: gevent's hub copies the spawn_tree_locals of
    the greenlet that makes it, and everything it spawns later (a server's
    connection greenlets) would take that block for good.  The hub is the
    root of the thread's greenlets and inherits none."""
    gevent = sys.modules.get("gevent")  # (the core does not import gevent itself)
    get_hub = getattr(gevent, "get_hub", None)
    if get_hub is not None:
        get_hub()


def _enter(layer: Dict[str, Any]) -> _Token:
    g = getcurrent()
    before = getattr(g, _TREE, _ABSENT)
    if before.__class__ is dict:
        installed = before.copy()  # the old dict may be shared with greenlets spawned before
        tail = before.get(_KEY)
    else:  # a raw greenlet (or gevent's tree tracking is off): a dict of our own
        installed, tail = {}, None
        if before is _ABSENT:
            _ensure_hub()
    installed[_KEY] = (layer, tail)
    setattr(g, _TREE, installed)
    return _Token(g, layer, before, installed)


def _exit(token: _Token) -> None:
    g = token.greenlet
    tree = getattr(g, _TREE, None)
    if tree is token.installed:
        # nothing entered or left since (the usual, nested case): give the
        # greenlet back the very dict it had, and its spawn tree with it
        if token.before is _ABSENT:
            try:
                delattr(g, _TREE)
            except AttributeError:
                pass
        else:
            setattr(g, _TREE, token.before)
        return
    # blocks left out of order (or spawn_tree_locals replaced meanwhile):
    # drop just this layer, keeping the ones entered after it
    node = tree.get(_KEY) if tree.__class__ is dict else None
    above = []
    while node is not None and node[0] is not token.layer:
        above.append(node[0])
        node = node[1]
    if node is None:
        return  # not in force here any more
    node = node[1]
    for layer in reversed(above):
        node = (layer, node)
    new: Dict[str, Any] = dict(tree) if tree.__class__ is dict else {}
    if node is None:
        new.pop(_KEY, None)
    else:
        new[_KEY] = node
    setattr(g, _TREE, new)


def _lookup(name: str) -> Any:
    tree = getattr(getcurrent(), _TREE, None)
    node = tree.get(_KEY) if tree.__class__ is dict else None
    while node is not None:
        layer, node = node
        if name in layer:
            return layer[name]
    return _defaults[name]


_shared: Dict[str, Any] = {}  # the defaults snapshot handed out while nothing overrides them
_shared_version = -1
# snapshots of the defaults with the same keyword values on top (with_websocket
# always passes max_queue=1): shared too, as long as the defaults do not change
_variants: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
_MAX_VARIANTS = 32


def effective(**call_values: Any) -> Dict[str, Any]:
    """A snapshot of every parameter as seen from the current greenlet, with
    ``call_values`` (validated here) on top.  Treat it as read-only: when no
    block overrides anything, connections with the same keyword values share
    one snapshot.  Raises TypeError/ValueError for a bad ``call_values``."""
    global _shared, _shared_version
    tree = getattr(getcurrent(), _TREE, None)
    node = tree.get(_KEY) if tree.__class__ is dict else None
    layers = []
    while node is not None:
        layer, node = node
        for k in layer:
            if k in _SPEC:  # (a binding such as the current websocket is not a parameter)
                layers.append(layer)
                break
    if not layers:
        if _shared_version != _version:
            _shared = dict(_defaults)  # a new object: earlier snapshots stay as they were
            _shared_version = _version
            _variants.clear()
        if not call_values:
            return _shared
        # keyed on the values as given: a hit skips validation (only values
        # the validators hand back unchanged are keyed).  The type is part of
        # the key: 5 and 5.0 are equal, but a snapshot gives back exactly the
        # value it was given.
        key: Optional[Tuple[Any, ...]] = tuple((k, v.__class__, v) for k, v in call_values.items())
        try:
            values = _variants.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable value (e.g. a list of subprotocols)
            values, key = None, None
        if values is not None:
            return values
        checked = validate(call_values)
        values = dict(_shared)
        values.update(checked)
        if key is not None and len(_variants) < _MAX_VARIANTS and all(
                checked[k] is v for k, v in call_values.items()):
            _variants[key] = values
        return values
    values = dict(_defaults)
    for layer in reversed(layers):
        values.update((k, v) for k, v in layer.items() if k in _SPEC)
    values.update(validate(call_values))
    return values


class Parameters:
    """Process-wide defaults as attributes; reading one gives the value in force
    in the current greenlet (a :func:`parameterize` block wins over the default).

    Raises AttributeError for an unknown name; setting one raises TypeError or
    ValueError for a bad value."""

    def __getattribute__(self, name: str) -> Any:
        # parameters first, without the failed instance lookup __getattr__ would cost
        if name in _SPEC:
            return _lookup(name)
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"unknown gws13 parameter {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        _defaults.update(validate({name: value}))
        _changed()

    def __dir__(self) -> List[str]:
        return sorted(_SPEC)

    def defaults(self) -> Dict[str, Any]:
        """The process-wide defaults (ignores parameterize blocks)."""
        return dict(_defaults)

    def reset(self) -> None:
        """Restore every default to its built-in value."""
        for name, (default, check) in _SPEC.items():
            _defaults[name] = check(name, default)
        _changed()


parameters = Parameters()


class _Block(contextlib.ContextDecorator):
    """The context manager of :func:`parameterize` and :class:`bind` (also a
    decorator; one object may be entered by several greenlets, or nested)."""

    __slots__ = ("_layer", "_tokens")

    def __init__(self, layer: Dict[str, Any]) -> None:
        self._layer = layer
        self._tokens: List[_Token] = []

    def _recreate_cm(self) -> "_Block":
        block = object.__new__(self.__class__)
        block._layer, block._tokens = self._layer, []
        return block

    def __enter__(self) -> None:
        self._tokens.append(_enter(self._layer))

    def __exit__(self, *exc_info: Any) -> None:
        tokens = self._tokens
        g = getcurrent()
        for i in range(len(tokens) - 1, -1, -1):
            if tokens[i].greenlet is g:
                _exit(tokens.pop(i))
                return
        if tokens:  # left in another greenlet than the one that entered it
            _exit(tokens.pop())


def parameterize(**values: Any) -> ContextManager[None]:
    """Override parameters for the duration of the ``with`` block, in the
    current greenlet and in the greenlets it spawns inside the block.

    Like :mod:`contextvars`, a greenlet takes a snapshot of the blocks open in
    its spawner *when it is spawned*: it never sees a block its spawner enters
    later (nor one of an unrelated greenlet), and it keeps the values it
    inherited after the spawner leaves the block, for as long as it lives.
    This rides on gevent's ``spawn_tree_locals``: greenlets made by
    ``gevent.spawn``, ``Greenlet(...)``, pools, ``spawn_raw`` and monkey-patched
    threads inherit; a raw ``greenlet.greenlet`` or an OS thread does not (it
    sees the defaults), and nothing is inherited when gevent tracks no
    greenlet tree (``GEVENT_TRACK_GREENLET_TREE=0``).  Inside a block the
    greenlet holds its own copy of ``spawn_tree_locals`` (given back when the
    block ends), so what gevent shares in that dict is shared with the
    greenlets spawned in the block, not with the rest of the tree.

    Raises TypeError/ValueError at once for unknown names or bad values."""
    return _Block(validate(values))


class bind(_Block):
    """Bind a library-internal greenlet-inherited value (no validation), e.g.
    the current websocket, for a ``with`` block; read it back with
    :func:`lookup`.  Inherited like :func:`parameterize`'s blocks."""

    __slots__ = ()

    def __init__(self, name: str, value: Any) -> None:
        super().__init__({name: value})


def push(name: str, value: Any) -> _Token:
    """What entering :class:`bind` does, for a caller that keeps no context
    manager: bind ``name`` in the current greenlet until :func:`pop` is given
    the token returned here."""
    return _enter({name: value})


def pop(token: _Token) -> None:
    """End a binding that :func:`push` made (in the greenlet that made it)."""
    _exit(token)


def lookup(name: str, default: Any = None) -> Any:
    """The value bound with :func:`bind` (or a parameter) in force here."""
    tree = getattr(getcurrent(), _TREE, None)
    node = tree.get(_KEY) if tree.__class__ is dict else None
    while node is not None:
        layer, node = node
        if name in layer:
            return layer[name]
    return _defaults.get(name, default)
