"""The Redis backend of :class:`gws13.Hub`: fan-out across workers and machines.

Per process (per hub), two connections to Redis, each owned by one greenlet:

* a **subscriber**, ``PSUBSCRIBE <prefix>*``: every room's messages arrive on
  it and are handed to this process's members.  It answers the question "is
  the link alive" with a ``PING`` after ``ping_interval`` seconds of silence
  and reconnects (with back-off up to ``max_backoff`` seconds) whenever the
  connection breaks or a ping goes unanswered.
* a **publisher**: :meth:`Hub.publish` only appends to a bounded outbox
  (``outbox_size`` messages); the publisher greenlet sends what has
  accumulated as one pipeline of ``PUBLISH <prefix><room> <body>`` commands.
  A batch whose replies did not all come back is sent again after the
  reconnection (it may or may not have reached Redis).  It sends only while
  the subscriber is subscribed, and after one of its own errors (an outage)
  only once the subscriber has shown that its subscription is alive since
  (a new ``PSUBSCRIBE`` confirmation, or the answer to a ``PING`` the
  publisher sends on the subscription): what it kept through an outage is
  not published into a window where this process's own members would miss it.

:meth:`Hub.close` (``stop``) sends what the outbox holds first: it waits, up
to its ``timeout``, until Redis has confirmed every message and (while
subscribed) the subscriber has received the last one back, so the members
of this process get them too.  What is still unconfirmed then is counted in
``close_dropped`` (the last batch may or may not have reached Redis).

Every body starts with a 20-byte header: a magic, the message type, an id
drawn at random per process and a sequence number.  Subscribers remember the
last sequence number seen from each publisher and drop anything not newer:
a batch sent twice is delivered once, and a publisher's messages are
delivered in the order it published them.  Messages from other Redis clients
(``redis-cli PUBLISH gws13:lobby hello``) carry no header: they are sent as
text when they are UTF-8, else as binary.

What is lost: anything published (by another process) while the subscriber
of a process is disconnected never reaches that process's members (Redis
pub/sub keeps no history); the oldest messages in a full outbox
(``outbox_dropped``); what :meth:`Hub.close` could not send within its
timeout (``close_dropped``).

The connections use gevent sockets, so the backend cooperates with gevent
whether or not the process is monkey-patched (``rediss://`` and ``unix://``
use redis-py's own connection classes, which need monkey patching).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import struct
import sys
from typing import Any, Deque, Dict, List, Optional, Tuple

import gevent
import gevent.socket
from gevent.event import Event
from gevent import monkey

from ._logutil import RateLimiter, configured

try:
    import redis  # noqa: F401
    from redis.backoff import NoBackoff
    from redis.connection import Connection, parse_url
    from redis.exceptions import RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gws13.Hub with a redis:// URL needs the redis package: "
                      "pip install redis (or gws13[redis])") from exc
try:  # the pure-Python parser: hiredis's would block the hub on select()
    from redis._parsers import _RESP2Parser as _Parser
except ImportError:  # pragma: no cover - older redis-py
    # attr-defined on some redis-py versions only
    from redis.connection import PythonParser as _Parser  # type: ignore[attr-defined,no-redef,unused-ignore]

try:
    from gevent._hub_local import get_hub_if_exists as _current_hub
except ImportError:  # pragma: no cover - older gevent
    from gevent.hub import _get_hub as _current_hub  # type: ignore[attr-defined,no-redef]

__all__ = ["RedisBackend"]

#: Redis lost: one WARNING per outage (with the error); back: one INFO; outbox
#: drops: WARNING, at most one line every 10 s (and a count of the others).
_log = logging.getLogger("gws13.redis")

_MAGIC = b"\x00G1"
_HEAD = struct.Struct("!3sc8sQ")  # magic, b"t"/b"b", publisher id, sequence number
_KEEP_PUBLISHERS = 10000  # publishers remembered for de-duplication
_allocate_lock = monkey.get_original("_thread", "allocate_lock")
_ERRORS = (RedisError, OSError)


class _GeventConnection(Connection):
    """redis-py's TCP connection on a gevent socket (cooperative without
    monkey patching)."""

    def _connect(self) -> Any:
        error: Optional[BaseException] = None
        for family, socktype, proto, _, address in gevent.socket.getaddrinfo(
                self.host, self.port, self.socket_type, socket.SOCK_STREAM):
            sock = gevent.socket.socket(family, socktype, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.socket_keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for key, value in self.socket_keepalive_options.items():
                        sock.setsockopt(socket.IPPROTO_TCP, key, value)
                sock.settimeout(self.socket_connect_timeout)
                sock.connect(address)
                sock.settimeout(self.socket_timeout)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error if error is not None else OSError("getaddrinfo returned nothing")


def _glob_escape(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


class RedisBackend:
    """Redis pub/sub transport for a :class:`gws13.Hub` (made by the hub from
    its URL; keyword arguments come from ``Hub(..., redis_options={...})``).

    ``prefix``: channel name prefix (pub/sub ignores the URL's db number, so
    use different prefixes to keep applications on one Redis apart).
    ``outbox_size``: messages waiting to be published before the oldest are
    dropped (during an outage).  ``ping_interval``: seconds of silence on the
    subscription before a PING; no answer within as long again means
    reconnect.  ``socket_timeout``/``connect_timeout``: seconds for one Redis
    reply / one connection attempt.  ``max_backoff``: the longest pause
    between reconnection attempts.  ``batch``: most PUBLISH commands in one
    pipeline.
    """

    name = "redis"

    def __init__(self, hub: Any, url: str, *, prefix: str = "gws13:", outbox_size: int = 1000,
                 ping_interval: float = 5.0, socket_timeout: float = 5.0,
                 connect_timeout: float = 2.0, max_backoff: float = 1.0, batch: int = 256) -> None:
        kwargs = parse_url(url)  # type: ignore[no-untyped-call]  # redis leaves it unannotated
        connection_class = kwargs.pop("connection_class", None) or _GeventConnection
        # RESP2: pub/sub messages are plain replies (RESP3 would route them to push handlers)
        kwargs.update(socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
                      parser_class=_Parser, health_check_interval=0, protocol=2)
        self.url = url
        self._hub = hub
        self._connection_class = connection_class
        self._connection_kwargs = kwargs
        self._prefix = prefix.encode("utf-8")
        self._pattern = _glob_escape(self._prefix) + b"*"
        self.outbox_size = outbox_size
        self.ping_interval = ping_interval
        self.socket_timeout = socket_timeout
        self.max_backoff = max_backoff
        self.batch = batch
        self._lock = _allocate_lock()
        self._pid: Optional[int] = None
        self._owner: Any = None
        self._running = False
        self._greenlets: List[gevent.Greenlet[Any, Any]] = []
        self._wake: Optional[Event] = None
        self._publisher_id = os.urandom(8)
        self._seq = 0
        self._outbox: Deque[Tuple[bytes, bytes]] = collections.deque()
        self._inflight: List[Tuple[bytes, bytes]] = []  # the batch being sent
        self._acked = 0          # sequence number of the last message Redis confirmed
        self._acked_epoch = 0    # the subscription it was confirmed under
        self._epoch = 0          # subscriptions confirmed so far
        self._evidence = 0       # replies on the subscription (proof that it is alive)
        self._subscription: Any = None  # the subscriber's connection
        self._closing = False
        self._stopped: Optional[Event] = None  # set when a stop() has finished
        self._seen: "collections.OrderedDict[bytes, int]" = collections.OrderedDict()
        self.connected = False
        self.publisher_connected = False
        self.subscribed = False
        self._subscribed_before = False
        self.reconnects = 0
        self.errors = 0
        self.outbox_dropped = 0
        self.close_dropped = 0
        self.duplicates = 0
        self.received = 0
        # logging: when the current outage began (None: Redis is reachable)
        self._outage: Optional[float] = None
        self._outage_errors = 0
        self._drops = RateLimiter(_log, burst=1, interval=10.0)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start both greenlets in the current thread's hub (once per process:
        a forked child starts its own)."""
        if self._running and self._pid == os.getpid():
            return
        with self._lock:
            if self._running and self._pid == os.getpid():
                return
            if self._pid is not None and self._pid != os.getpid():
                # forked: the parent's connections and greenlets are not ours
                self._greenlets = []
                self._outbox.clear()
                self._inflight = []
                self._publisher_id = os.urandom(8)
                self._seq = self._acked = 0
                self._subscription, self._stopped, self._closing = None, None, False
                self.connected = self.subscribed = self.publisher_connected = False
            self._pid = os.getpid()
            self._owner = gevent.get_hub()
            self._wake = Event()
            self._running = True
            self._greenlets = [gevent.spawn(self._subscribe_loop), gevent.spawn(self._publish_loop)]

    def stop(self, timeout: Optional[float] = 5.0) -> None:
        """Send what :meth:`publish` accepted, then stop both greenlets and
        close their connections.

        Waits (cooperatively, in any thread) up to ``timeout`` seconds (None:
        no limit; 0: do not wait) for Redis to confirm every message in the
        outbox and, while subscribed, for the subscriber to receive the last
        one back.  Messages still unconfirmed then are counted in
        ``close_dropped``.  Raises ValueError for a negative timeout."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        with self._lock:
            if not self._running:
                return
            if self._pid != os.getpid():  # forked: nothing here is ours to close
                self._running = False
                self._greenlets = []
                return
            done = self._stopped
            first = done is None
            if first:
                done = self._stopped = Event()
        assert done is not None
        if first:
            if _current_hub() is not self._owner:
                self._owner.loop.run_callback_threadsafe(gevent.spawn, self._close, timeout, done)
            elif gevent.getcurrent() is self._owner:  # (the hub itself cannot wait)
                gevent.spawn(self._close, timeout, done)
                return
            else:
                self._close(timeout, done)
                return
        # another thread (or a second stop()): wait for the owner's _close
        if not done.wait(None if timeout is None else timeout + 2.0):
            with self._lock:  # the owner's hub does not run any more: its greenlets are gone
                if self._stopped is done:
                    self._running = False
                    self._greenlets = []
                    self._stopped = None

    def _close(self, timeout: Optional[float], done: Event) -> None:
        """stop()'s work, in the owner's hub."""
        try:
            self._closing = True
            if self._wake is not None:
                self._wake.set()
            greenlets = list(self._greenlets)
            if len(greenlets) == 2 and timeout != 0:
                greenlets[1].join(timeout)  # the publisher ends by itself once all is sent
            with self._lock:
                self._running = False
                greenlets, self._greenlets = self._greenlets, []
            # a publisher still connecting, sending or waiting for a subscription gives up now
            me = gevent.getcurrent()
            gevent.killall([g for g in greenlets if g is not me], block=True, timeout=1.0)
            self.close_dropped += len(self._outbox) + len(self._inflight)
            self._outbox.clear()
            self._inflight = []
        finally:
            self._closing = False
            with self._lock:
                if self._stopped is done:
                    self._stopped = None
            done.set()

    def _alive(self) -> bool:
        return self._running and self._pid == os.getpid()

    @property
    def ready(self) -> bool:
        return self.subscribed

    def _connect(self) -> Any:
        connection = self._connection_class(socket_timeout=self.socket_timeout, **self._connection_kwargs)
        connection.connect()
        return connection

    @staticmethod
    def _disconnect(connection: Any) -> None:
        try:
            connection.disconnect()
        except Exception:
            pass

    def _pause(self, backoff: float) -> float:
        """Sleep ``backoff`` seconds; return the next, longer pause."""
        gevent.sleep(backoff)
        return min(max(backoff * 2, 0.05), self.max_backoff)

    # -- logging ---------------------------------------------------------------
    def _where(self) -> str:
        # the URL without its credentials (redis://user:password@host/0)
        scheme, sep, rest = self.url.partition("://")
        netloc, slash, path = rest.partition("/")
        return scheme + sep + netloc.rpartition("@")[2] + slash + path

    def _lost(self, exc: BaseException) -> None:
        """A Redis error: one WARNING for the first of an outage, then counted."""
        self._outage_errors += 1
        if self._outage is None:
            self._outage = gevent.get_hub().loop.now()
            _log.warning("Redis at %s lost: %s: %s; retrying (messages published meanwhile by other "
                         "processes do not reach this one)", self._where(), type(exc).__name__, exc)

    def _back(self, what: str) -> None:
        """Redis answers again (or for the first time): one INFO line."""
        if self._outage is not None:
            _log.info("Redis at %s back after %.1f s (%d errors): %s", self._where(),
                      gevent.get_hub().loop.now() - self._outage, self._outage_errors, what)
            self._outage = None
            self._outage_errors = 0
        elif not self._subscribed_before:
            _log.info("connected to Redis at %s: %s", self._where(), what)

    def _dropped(self, count: int) -> None:
        self._drops.log(logging.WARNING, "outbox", "Redis outbox full (%d messages): dropped the oldest; "
                        "%d dropped so far", self.outbox_size, count)

    # -- publishing ------------------------------------------------------------
    def publish(self, room: str, payload: bytes, binary: bool) -> None:
        """Queue a message for the publisher greenlet; never blocks."""
        self.start()
        if _current_hub() is self._owner:
            self._enqueue(room, payload, binary)
        else:
            self._owner.loop.run_callback_threadsafe(self._enqueue, room, payload, binary)

    def _enqueue(self, room: str, payload: bytes, binary: bool) -> None:
        self._seq += 1
        body = _HEAD.pack(_MAGIC, b"b" if binary else b"t", self._publisher_id, self._seq) + payload
        outbox = self._outbox
        if len(outbox) >= self.outbox_size:
            outbox.popleft()
            self.outbox_dropped += 1
            self._dropped(self.outbox_dropped)
        outbox.append((self._prefix + room.encode("utf-8"), body))
        if self._wake is not None:
            self._wake.set()

    def _may_send(self, needed: int) -> bool:
        """Whether a PUBLISH now reaches this process's own members too."""
        return self.subscribed and self._evidence >= needed

    def _flushed(self) -> bool:
        """Closing: everything is confirmed and, if the subscription that
        confirmed it still holds, the last message came back on it."""
        if self._outbox or self._inflight:
            return False
        if not self.subscribed or self._epoch != self._acked_epoch:
            return True  # it cannot come back any more
        return self._seen.get(self._publisher_id, 0) >= self._acked

    def _probe(self) -> None:
        """Ask the subscription to prove it is alive (its answer counts as
        evidence): a PING on the subscriber's connection, whose greenlet is
        waiting to read."""
        connection = self._subscription
        if connection is not None:
            try:
                connection.send_command(b"PING", check_health=False)
            except _ERRORS:  # the subscriber notices too, and resubscribes
                pass

    def _publish_loop(self) -> None:
        outbox = self._outbox
        connection = None
        backoff = 0.0
        needed = 0  # evidence the subscription must have given before we send
        probe = False
        try:
            while self._alive():
                if not outbox or not self._may_send(needed):
                    if self._closing and self._flushed():
                        break
                    if outbox and probe and self.subscribed:
                        probe = False
                        self._probe()
                    self._wake.clear()  # type: ignore[union-attr]  # set by start() before this greenlet runs
                    self._wake.wait()  # type: ignore[union-attr]
                    continue
                if connection is None:
                    try:
                        connection = self._connect()
                    except _ERRORS as exc:
                        self.errors += 1
                        self._lost(exc)
                        backoff = self._pause(backoff)
                        continue
                    self.publisher_connected = True
                    if not self._may_send(needed):
                        continue
                batch = self._inflight = [outbox.popleft() for _ in range(min(len(outbox), self.batch))]
                epoch = self._epoch
                try:
                    connection.send_packed_command(
                        connection.pack_commands([(b"PUBLISH", channel, body) for channel, body in batch]),
                        check_health=False)
                    for _ in batch:
                        connection.read_response()
                except _ERRORS as exc:
                    # unknown whether Redis got them: send again (subscribers drop repeats)
                    outbox.extendleft(reversed(batch))
                    self._inflight = []
                    dropped = self.outbox_dropped
                    while len(outbox) > self.outbox_size:
                        outbox.popleft()
                        self.outbox_dropped += 1
                    if self.outbox_dropped != dropped:
                        self._dropped(self.outbox_dropped)
                    self.errors += 1
                    self._lost(exc)
                    self.publisher_connected = False
                    self._disconnect(connection)
                    connection = None
                    # an outage: send again only under a subscription alive since
                    needed = self._evidence + 1
                    probe = True
                    backoff = self._pause(backoff)
                    continue
                self._inflight = []
                self._acked = _HEAD.unpack_from(batch[-1][1])[3]
                self._acked_epoch = epoch
                backoff = 0.0
                if self._outage is not None:
                    self._back("publishing again")
        finally:
            self.publisher_connected = False
            if connection is not None and self._pid == os.getpid():
                self._disconnect(connection)

    # -- subscribing -----------------------------------------------------------
    def _subscribe_loop(self) -> None:
        backoff = 0.0
        while self._alive():
            connection = None
            try:
                connection = self._connect()
                connection.send_command(b"PSUBSCRIBE", self._pattern, check_health=False)
                self.connected = True
                self._subscription = connection
                pinged = False
                while self._alive():
                    if connection.can_read(timeout=self.ping_interval):
                        reply = connection.read_response()
                        pinged = False
                        backoff = 0.0
                        self._on_reply(reply)
                        gevent.sleep(0)  # a burst of fan-outs must not starve the other greenlets
                    elif pinged:
                        raise TimeoutError("Redis did not answer a PING")
                    else:
                        connection.send_command(b"PING", check_health=False)
                        pinged = True
            except _ERRORS as exc:
                self.errors += 1
                self._lost(exc)
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                self.errors += 1
                self._lost(exc)
                if configured(_log):
                    _log.error("the Redis subscriber failed", exc_info=True)
                else:
                    gevent.get_hub().handle_error(None, *sys.exc_info())
            finally:
                self.connected = self.subscribed = False
                self._subscription = None
                if self._closing and self._wake is not None:
                    self._wake.set()  # close(): what was sent cannot come back on this one
                if connection is not None and self._pid == os.getpid():
                    self._disconnect(connection)
            if self._alive():
                backoff = self._pause(backoff)

    def _on_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"pmessage" and len(reply) == 4:
            self._on_message(reply[2], reply[3])
        elif kind == b"psubscribe":
            self.subscribed = True
            self._epoch += 1
            self._evidence += 1
            self._back("subscribed to %s*" % self._prefix.decode("utf-8", "replace"))
            if self._subscribed_before:
                self.reconnects += 1
            self._subscribed_before = True
            if self._wake is not None:
                self._wake.set()  # the publisher may send now
        elif kind == b"pong":
            self._evidence += 1
            if self._wake is not None:
                self._wake.set()

    def _on_message(self, channel: bytes, data: bytes) -> None:
        prefix = self._prefix
        if not channel.startswith(prefix):
            return
        room = channel[len(prefix):].decode("utf-8", "replace")
        if data[:3] == _MAGIC and len(data) >= _HEAD.size:
            _, kind, publisher, seq = _HEAD.unpack_from(data)
            seen = self._seen
            last = seen.get(publisher)
            if last is not None:
                if seq <= last:
                    self.duplicates += 1
                    return
                seen.move_to_end(publisher)
            elif len(seen) >= _KEEP_PUBLISHERS:
                seen.popitem(last=False)
            seen[publisher] = seq
            if self._closing and publisher == self._publisher_id and self._wake is not None:
                self._wake.set()  # our own message came back: close() may be done
            payload = data[_HEAD.size:]
            binary = kind == b"b"
        else:  # from another Redis client
            payload = data
            try:
                data.decode("utf-8")
                binary = False
            except UnicodeDecodeError:
                binary = True
        self.received += 1
        try:
            self._hub._fanout(room, payload, binary)
        except Exception:  # report it, keep the subscription
            if configured(_log):
                _log.error("delivering a message of room %r failed", room, exc_info=True)
            else:
                gevent.get_hub().handle_error(None, *sys.exc_info())

    def stats(self) -> Dict[str, Any]:
        return {
            "connected": self.connected,
            "subscribed": self.subscribed,
            "publisher_connected": self.publisher_connected,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "outbox": len(self._outbox),
            "outbox_dropped": self.outbox_dropped,
            "close_dropped": self.close_dropped,
            "duplicates": self.duplicates,
            "redis_received": self.received,
        }
