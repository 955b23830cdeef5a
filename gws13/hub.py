"""Rooms and broadcast: :class:`Hub`.

A hub keeps, per process, which WebSockets are in which rooms and sends a
published message to every member::

    hub = gws13.Hub()                      # in-process
    hub = gws13.Hub("redis://127.0.0.1:6379/0")   # every worker, every machine

    def chat(ws):
        hub.join(ws, "lobby")              # left automatically when ws closes
        for text in ws:
            hub.publish("lobby", text)

Slow clients never hold up a publisher.  A published frame goes into the
connection's outgoing buffer (see :mod:`gws13.connection`), whose writer sends
it at once when the socket takes it, the usual case (with the C extension, one
loop in C writes it to every plain connection whose buffer is empty, and only
the others go through :meth:`Hub._offer`); while that buffer holds
``write_limit`` bytes or more, messages wait in the connection's bounded queue
here instead, moved into the buffer when it drains (no greenlet involved
either way).  When the queue is full the hub's policy applies:

``"drop-oldest"``
    the oldest queued message is discarded to make room;
``"drop-newest"``
    the new message is discarded;
``"close"`` (the default)
    the connection leaves every room at once, its queue is discarded and it is
    closed with ``close_code`` (1008 unless set to 1013) and a reason, after
    what is already in its outgoing buffer; a peer that does not take that
    within ``close_timeout`` seconds has its TCP connection dropped.

Every count is in :meth:`Hub.stats`; :meth:`Hub.metrics_text` renders them in
the Prometheus text format.

Thread safety: a hub may be shared by greenlets of any number of hubs (OS
threads).  Writes to a connection always happen in the thread that owns the
connection; a publish from another thread is handed over with
``run_callback_threadsafe``.
"""

from __future__ import annotations

import collections
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import gevent
from gevent import monkey

from ._logutil import RateLimiter, peer_of
from .connection import WebSocket
from .frames import OP_BINARY, OP_TEXT, encode_header

if TYPE_CHECKING:
    from .protocol import Protocol

try:
    from gevent._hub_local import get_hub_if_exists as _current_hub
except ImportError:  # pragma: no cover - older gevent
    from gevent.hub import _get_hub as _current_hub  # type: ignore[attr-defined,no-redef]

_fanout: Optional[Callable[[List[Any], bytes, int, object], Tuple[int, List[Any], List[Any]]]]
try:  # the broadcast loop in C: absent without the extension, and on Windows
    from ._speedups import fanout as _fanout
except ImportError:
    _fanout = None

__all__ = ["Hub", "POLICIES"]

#: the full-queue policies
POLICIES = ("drop-oldest", "drop-newest", "close")

#: slow-client policy actions, at INFO: at most 5 lines per policy every 10 s
#: (then one "suppressed K similar messages" line)
_log = logging.getLogger("gws13.hub")
_actions = RateLimiter(_log, burst=5, interval=10.0)

# a real lock even under monkey patching: the sections it guards never switch
_allocate_lock = monkey.get_original("_thread", "allocate_lock")

Message = Union[str, bytes, bytearray, memoryview]


class _Item:
    """One published message: its payload and, for connections without
    extensions, the whole frame (encoded once per publish, shared by all)."""

    __slots__ = ("payload", "binary", "frame")

    def __init__(self, payload: bytes, binary: bool) -> None:
        self.payload = payload
        self.binary = binary
        self.frame = encode_header(OP_BINARY if binary else OP_TEXT, len(payload)) + payload

    def encode_for(self, ws: WebSocket) -> bytes:
        """The bytes to write to ``ws`` (put them in its buffer before any other
        switch: a compression context must see frames in wire order)."""
        proto: Protocol = ws._proto  # type: ignore[assignment]  # a member is an accepted WebSocket
        if proto.deflate is None:
            counts = proto.counts  # the connection's metrics (send_message counts the other case)
            counts.messages_out += 1
            counts.payload_out += len(self.payload)
            return self.frame
        return b"".join(proto.send_message(self.payload, self.binary))


class _Member:
    """A WebSocket known to a hub: its rooms and its outgoing queue."""

    __slots__ = ("ws", "hub", "rooms", "queue", "refill", "closing", "__weakref__")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.hub = ws._hub  # the gevent hub (thread) that owns the socket
        self.rooms: set[str] = set()
        self.queue: Deque[_Item] = collections.deque()
        #: the callback the connection's writer runs when its buffer drains;
        #: None whenever the queue is empty
        self.refill: Optional[Any] = None
        self.closing = False


class _LocalBackend:
    """In-process delivery: publish fans out at once."""

    name = "local"

    def __init__(self, hub: "Hub") -> None:
        self._hub = hub

    def start(self) -> None:
        pass

    def stop(self, timeout: Optional[float] = None) -> None:
        pass  # publish delivered at once: nothing waits

    @property
    def ready(self) -> bool:
        return True

    def publish(self, room: str, payload: bytes, binary: bool) -> None:
        self._hub._fanout(room, payload, binary)

    def stats(self) -> Dict[str, Any]:
        return {}


class Hub:
    """Rooms of WebSockets and a publish that reaches every member.

    ``url`` selects the backend: None (or ``"memory://"``) for this process
    only, ``redis://host:port/db`` to reach every process subscribed to the
    same Redis server (needs the ``redis`` package; see
    :class:`gws13.redis_backend.RedisBackend` for ``redis_options``).

    ``queue_size`` bounds each connection's queue of hub messages not yet
    written; ``policy`` says what happens when it is full (``"drop-oldest"``,
    ``"drop-newest"`` or ``"close"``), ``close_code``/``close_reason`` what a
    ``"close"`` sends (1008 Policy Violation or 1013 Try Again Later, or an
    application code 3000-4999).

    Rooms are strings.  ``rooms``, ``members`` and :meth:`stats` describe
    this process; with Redis, other processes have their own members.
    """

    def __init__(self, url: Optional[str] = None, *, queue_size: int = 256, policy: str = "close",
                 close_code: int = 1008, close_reason: str = "too slow: hub queue full",
                 channel_prefix: str = "gws13:", redis_options: Optional[Dict[str, Any]] = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise ValueError("queue_size must be an integer >= 1")
        if close_code not in (1008, 1013) and not 3000 <= close_code <= 4999:
            raise ValueError("close_code must be 1008, 1013 or an application code 3000-4999")
        if len(close_reason.encode("utf-8")) > 123:
            raise ValueError("close_reason is longer than 123 bytes")
        self.queue_size = queue_size
        self.policy = policy
        self.close_code = close_code
        self.close_reason = close_reason
        self.url = url
        self._lock = _allocate_lock()
        self._rooms: Dict[str, Dict[WebSocket, _Member]] = {}
        self._members: Dict[WebSocket, _Member] = {}
        # sockets that already carry our close callback
        self._watched: "weakref.WeakSet[WebSocket]" = weakref.WeakSet()
        # sockets being closed by the "close" policy: they may not join again
        self._condemned: "weakref.WeakSet[WebSocket]" = weakref.WeakSet()
        self._published = 0
        self._fanned_out = 0
        self._delivered = 0
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._closed_slow = 0
        self._high_water = 0
        if url is None or url in ("memory://", "local", "local://"):
            self._backend: Any = _LocalBackend(self)
        elif url.startswith(("redis://", "rediss://", "unix://")):
            from .redis_backend import RedisBackend
            self._backend = RedisBackend(self, url, prefix=channel_prefix, **(redis_options or {}))
        else:
            raise ValueError(f"unsupported hub URL {url!r}: use None or redis://host:port/db")

    # -- membership ------------------------------------------------------------
    def join(self, ws: WebSocket, room: str) -> bool:
        """Add ``ws`` to ``room`` (a no-op if it is there already).  It leaves
        every room by itself when it closes.  Returns False, and joins nothing,
        for a connection that is already closed (or being closed by the
        "close" policy).

        A WebSocket not yet accepted (``environ["wsgi.websocket"]`` before any
        use) is accepted here, as by any first use."""
        if not isinstance(room, str):
            raise TypeError(f"room must be a str, not {type(room).__name__}")
        if ws._proto is None:
            ws._ensure()
        if ws.closed or ws in self._condemned:
            return False
        self._backend.start()
        with self._lock:
            member = self._members.get(ws)
            if member is None:
                member = self._members[ws] = _Member(ws)
            if room not in member.rooms:
                member.rooms.add(room)
                self._rooms.setdefault(room, {})[ws] = member
            watch = ws not in self._watched
            if watch:
                self._watched.add(ws)
        if watch:
            ws.add_close_callback(self._on_close)
        return True

    def leave(self, ws: WebSocket, room: Optional[str] = None) -> bool:
        """Remove ``ws`` from ``room`` (from every room when ``room`` is None).
        Messages already queued for it are still sent.  Returns True if it was
        a member."""
        with self._lock:
            member = self._members.get(ws)
            if member is None:
                return False
            rooms = list(member.rooms) if room is None else [room]
            found = False
            for name in rooms:
                if name in member.rooms:
                    found = True
                    self._unlink(member, name)
            if not member.rooms and member.refill is None:
                del self._members[ws]  # (one still sending keeps its queue, and order, if it rejoins)
            return found

    def _unlink(self, member: _Member, room: str) -> None:
        # the caller holds the lock
        member.rooms.discard(room)
        people = self._rooms.get(room)
        if people is not None:
            people.pop(member.ws, None)
            if not people:
                del self._rooms[room]

    def _forget(self, member: _Member) -> None:
        """Take ``member`` out of every room (it is closing)."""
        with self._lock:
            for room in list(member.rooms):
                self._unlink(member, room)
            if self._members.get(member.ws) is member:
                del self._members[member.ws]

    def _on_close(self, ws: WebSocket) -> None:
        # a close callback: runs in the hub, must not block
        member = self._members.get(ws)
        if member is None:
            return
        member.closing = True
        member.queue.clear()
        member.refill = None
        self._forget(member)

    @property
    def rooms(self) -> List[str]:
        """The rooms that have at least one member in this process."""
        with self._lock:
            return list(self._rooms)

    def members(self, room: str) -> List[WebSocket]:
        """The WebSockets of this process in ``room``."""
        with self._lock:
            people = self._rooms.get(room)
            return list(people) if people else []

    def rooms_of(self, ws: WebSocket) -> List[str]:
        """The rooms ``ws`` is in."""
        with self._lock:
            member = self._members.get(ws)
            return sorted(member.rooms) if member is not None else []

    # -- publishing ------------------------------------------------------------
    def publish(self, room: str, message: Message, binary: Optional[bool] = None) -> None:
        """Send ``message`` to every member of ``room`` (in every process, with
        Redis): ``str`` as a text message, bytes-like as binary (``binary``
        forces the type; text must be UTF-8).

        Never blocks on a connection: it writes what each socket takes at
        once and queues the rest.  With Redis it only queues the message for
        the process's publisher greenlet (members here get it back through
        Redis, like everyone else, so every process sees one order per room)."""
        if not isinstance(room, str):
            raise TypeError(f"room must be a str, not {type(room).__name__}")
        if isinstance(message, str):
            payload = message.encode("utf-8")
            is_binary = bool(binary)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            payload = bytes(message)
            is_binary = binary is not False
            if not is_binary:
                payload.decode("utf-8")  # UnicodeDecodeError for a text message that is not UTF-8
        else:
            raise TypeError(f"cannot publish {type(message).__name__}: use str or bytes")
        self._published += 1
        self._backend.publish(room, payload, is_binary)

    def _fanout(self, room: str, payload: bytes, binary: bool) -> int:
        """Deliver one message to this process's members of ``room`` (called by
        the backend).  Returns how many members it was offered to."""
        self._fanned_out += 1
        people = self._rooms.get(room)
        if not people:
            return 0
        with self._lock:
            targets = list(people.values())
        item = _Item(payload, binary)
        here = _current_hub()
        targets = self._send_each(targets, item, here)
        offer = self._offer
        elsewhere: Optional[Dict[Any, List[_Member]]] = None
        for member in targets:
            if member.hub is here:
                offer(member, item)
            else:
                if elsewhere is None:
                    elsewhere = {}
                elsewhere.setdefault(member.hub, []).append(member)
        if elsewhere:
            for hub, group in elsewhere.items():
                try:
                    hub.loop.run_callback_threadsafe(self._offer_all, group, item)
                except Exception:  # that thread's hub is gone: so are its sockets
                    pass
        return len(targets)

    def _send_each(self, members: List[_Member], item: _Item, here: Any) -> List[_Member]:
        """Write ``item`` to the members whose socket takes it now, in C (see
        ``fanout`` in ``_speedups.c``: what :meth:`_offer` does for a plain
        connection with nothing buffered); returns the others, for
        :meth:`_offer` or their own hub."""
        if _fanout is None:
            return members
        delivered, rest, partial = _fanout(members, item.frame, len(item.payload), here)
        for i in range(0, len(partial), 2):  # [member, bytes sent, ...]
            partial[i].ws._sent_part([item.frame], partial[i + 1])
        self._delivered += delivered + len(partial) // 2
        return rest

    def _offer_all(self, members: List[_Member], item: _Item) -> None:
        for member in self._send_each(members, item, _current_hub()):
            self._offer(member, item)

    def _offer(self, member: _Member, item: _Item) -> None:
        """Put ``item`` in ``member``'s outgoing buffer while that is below its
        ``write_limit``, else queue it here (applying the policy).  Never
        blocks; runs in the member's hub."""
        if member.closing:
            return
        ws = member.ws
        queue = member.queue
        if not queue and ws._wsize < ws._wlimit and ws._wstream is None:
            # (while a fragmented message goes out, the item waits: never interleaved)
            if ws.closed:
                return
            # encoded and buffered with no switch in between: compressed frames
            # keep the order of the connection's compression context
            raw = ws._raw
            if raw is not None and not ws._wbuf:
                # the usual case in a broadcast: straight to the kernel, as send() does
                ws._write_now(raw, [item.encode_for(ws)])
            else:
                ws._enqueue([item.encode_for(ws)])
            self._delivered += 1
            return
        if len(queue) >= self.queue_size:
            policy = self.policy
            if policy == "drop-newest":
                self._dropped_newest += 1
                _actions.log(logging.INFO, "drop-newest", "%s: %s is too slow (hub queue of %d full): "
                             "dropped a new message", peer_of(ws.environ), ws.path or "/", self.queue_size)
                return
            if policy == "drop-oldest":
                queue.popleft()
                self._dropped_oldest += 1
                _actions.log(logging.INFO, "drop-oldest", "%s: %s is too slow (hub queue of %d full): "
                             "dropped its oldest message", peer_of(ws.environ), ws.path or "/",
                             self.queue_size)
            else:
                self._close_slow(member)
                return
        queue.append(item)
        if len(queue) > self._high_water:
            self._high_water = len(queue)
        if member.refill is None:
            # the connection's writer calls this when its buffer has drained
            member.refill = lambda: self._refill(member)
            if ws._wdrain is None:
                ws._wdrain = []
            ws._wdrain.append(member.refill)

    def _refill(self, member: _Member) -> None:
        """The member's buffer drained: move queued messages into it, up to its
        ``write_limit`` (runs where the writer runs, in the member's hub)."""
        ws = member.ws
        queue = member.queue
        if ws.closed:
            return  # (nothing is encoded, so nothing is counted as sent)
        pieces = []
        size = ws._wsize
        limit = ws._wlimit
        while queue and size < limit and not member.closing:
            item = queue.popleft()
            data = item.encode_for(ws)
            pieces.append(data)
            size += len(data)
        if not queue and member.refill is not None:
            drain = ws._wdrain
            if drain and member.refill in drain:
                drain.remove(member.refill)
            member.refill = None
        if pieces:
            self._delivered += len(pieces)
            ws._enqueue(pieces)

    # -- the "close" policy ----------------------------------------------------
    def _close_slow(self, member: _Member) -> None:
        """The queue is full under the "close" policy: leave every room, drop
        the queue and close.  The close frame goes out after what is already in
        the connection's outgoing buffer; a peer that does not take it within
        ``close_timeout`` seconds has its TCP connection dropped (the
        connection's closing-handshake deadline).  Runs in the member's hub;
        does not block."""
        ws = member.ws
        member.closing = True
        member.queue.clear()
        self._closed_slow += 1
        _actions.log(logging.INFO, "close", "%s: %s is too slow (hub queue of %d full): closing it with %d",
                     peer_of(ws.environ), ws.path or "/", self.queue_size, self.close_code)
        self._condemned.add(ws)
        self._forget(member)
        ws._start_close(self.close_code, self.close_reason)

    # -- readiness, lifecycle ---------------------------------------------------
    def start(self) -> None:
        """Start the backend now (otherwise the first join or publish does) in
        the current thread's hub.  For Redis: connect, subscribe and start the
        publisher greenlet.  Call it after forking (gunicorn: in the worker)."""
        self._backend.start()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Start the backend and wait (cooperatively) until it delivers: True
        at once in-process; with Redis, once the subscription is active.
        Returns False if ``timeout`` seconds passed first."""
        self._backend.start()
        if self._backend.ready:
            return True
        deadline = None if timeout is None else gevent.get_hub().loop.now() + timeout
        while not self._backend.ready:
            if deadline is not None and gevent.get_hub().loop.now() >= deadline:
                return False
            gevent.sleep(0.005)
        return True

    @property
    def ready(self) -> bool:
        """True when a publish is delivered (Redis: connected and subscribed)."""
        ready: bool = self._backend.ready
        return ready

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stop the backend's greenlets and connections.  Members stay (a later
        join or publish starts the backend again).

        With Redis, what :meth:`publish` accepted is sent first: close waits
        (cooperatively, from any thread) up to ``timeout`` seconds (None: no
        limit, 0: not at all) until Redis confirmed every message and this
        process's subscriber got the last one back; what is still unsent then
        is counted in ``stats()["close_dropped"]``.  Raises ValueError for a
        negative timeout."""
        self._backend.stop(timeout)

    # -- metrics ---------------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        """Counters and gauges of this process::

            backend            "local" or "redis"
            connections        WebSockets in at least one room
            rooms              {room: members here}
            published          publish() calls here
            fanned_out         messages handed to this process's members (from any process)
            delivered          frames written to sockets
            dropped_oldest     messages discarded by "drop-oldest"
            dropped_newest     messages discarded by "drop-newest"
            closed_slow        connections closed by "close"
            queued             messages waiting in queues now
            queue_high_water   the deepest any queue has been
            policy, queue_size the settings

        plus the backend's own (Redis: connected, subscribed, reconnects,
        errors, outbox, outbox_dropped, close_dropped, duplicates)."""
        with self._lock:
            rooms = {room: len(people) for room, people in self._rooms.items()}
            members = list(self._members.values())
        out: Dict[str, Any] = {
            "backend": self._backend.name,
            "connections": sum(1 for m in members if m.rooms),
            "rooms": rooms,
            "published": self._published,
            "fanned_out": self._fanned_out,
            "delivered": self._delivered,
            "dropped_oldest": self._dropped_oldest,
            "dropped_newest": self._dropped_newest,
            "closed_slow": self._closed_slow,
            "queued": sum(len(m.queue) for m in members),
            "queue_high_water": self._high_water,
            "policy": self.policy,
            "queue_size": self.queue_size,
        }
        out.update(self._backend.stats())
        return out

    def metrics_text(self, prefix: str = "gws13_hub") -> str:
        """:meth:`stats` in the Prometheus text exposition format."""
        s = self.stats()
        lines: List[str] = []

        def metric(name: str, kind: str, value: Any, help_: str, labels: str = "") -> None:
            full = f"{prefix}_{name}"
            lines.append(f"# HELP {full} {help_}")
            lines.append(f"# TYPE {full} {kind}")
            lines.append(f"{full}{labels} {int(value)}")

        metric("connections", "gauge", s["connections"], "WebSockets in at least one room")
        full = f"{prefix}_room_members"
        lines.append(f"# HELP {full} members of each room in this process")
        lines.append(f"# TYPE {full} gauge")
        for room, count in sorted(s["rooms"].items()):
            lines.append(f'{full}{{room="{_label(room)}"}} {count}')
        metric("published_total", "counter", s["published"], "publish() calls in this process")
        metric("fanned_out_total", "counter", s["fanned_out"], "messages fanned out to this process's members")
        metric("delivered_total", "counter", s["delivered"], "frames written to sockets")
        full = f"{prefix}_policy_drops_total"
        lines.append(f"# HELP {full} messages discarded because a queue was full")
        lines.append(f"# TYPE {full} counter")
        lines.append(f'{full}{{policy="drop-oldest"}} {s["dropped_oldest"]}')
        lines.append(f'{full}{{policy="drop-newest"}} {s["dropped_newest"]}')
        metric("policy_closes_total", "counter", s["closed_slow"],
               "connections closed because their queue was full", '{policy="close"}')
        metric("queued", "gauge", s["queued"], "messages waiting in queues")
        metric("queue_high_water", "gauge", s["queue_high_water"], "deepest queue seen")
        if s["backend"] == "redis":
            metric("redis_connected", "gauge", s["connected"] and s["subscribed"],
                   "1 while subscribed to Redis")
            metric("redis_reconnects_total", "counter", s["reconnects"], "subscriber reconnections")
            metric("redis_errors_total", "counter", s["errors"], "Redis connection errors")
            metric("redis_outbox", "gauge", s["outbox"], "messages waiting to be published to Redis")
            metric("redis_outbox_dropped_total", "counter", s["outbox_dropped"],
                   "messages lost because the Redis outbox overflowed")
            metric("redis_close_dropped_total", "counter", s["close_dropped"],
                   "messages close() could not send to Redis within its timeout")
            metric("redis_duplicates_total", "counter", s["duplicates"],
                   "re-sent messages recognised and not delivered twice")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (f"<gws13.Hub {self._backend.name} rooms={len(self._rooms)} "
                f"connections={len(self._members)} policy={self.policy}>")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
