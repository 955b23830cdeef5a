"""The gevent connection layer: one :class:`WebSocket` per upgraded socket.

Reading is event driven.  On a plain socket a libev I/O watcher runs the
protocol in the hub as soon as bytes arrive, so pings are answered, pongs and
close frames are processed and the idle timer is refreshed whether or not the
application is calling ``receive``; complete messages wait in a bounded queue
(when it is full the watcher stops and TCP backpressure does the rest).  A
blocked ``receive`` is woken by a direct switch, so a message costs no more
greenlet switches than a raw socket read.  TLS sockets keep decrypted bytes
inside the SSL object, out of sight of an I/O watcher; there one small reader
greenlet does the same work with blocking reads.  Either way one connection
gets a bounded share of each turn of the loop: reads shrink when parsing them
took long (a flood of tiny frames), and the TLS reader yields between them.

Writing goes through one outgoing buffer per connection, whoever writes:
the application's ``send``, pongs and close replies made in the hub,
keepalive pings, a :class:`gws13.Hub`'s broadcasts.  Frames enter the buffer
whole and in the order they were encoded (compression contexts depend on
it), and only the buffer's owner writes to the socket, so frames never
interleave and no timeout ever abandons half a frame:

* On a plain socket every write is non-blocking.  While the buffer is empty a
  frame goes straight to the kernel with one ``send``/``sendmsg``, the common
  case; what the kernel does not take stays in the buffer and the socket's
  write watcher finishes it from the hub.  Small answers to messages that are
  already queued are held until the greenlet yields and written in one
  syscall.
* On a TLS socket the greenlet that finds the buffer idle writes it out with
  blocking ``sendall`` calls (the application's own greenlet in ``send``, a
  single writer greenlet for frames made in the hub).

``send`` returns once its frame is in the buffer; it blocks only while the
buffer holds more than ``write_limit`` bytes, until it is down to a quarter of
that (high and low water marks).  A client's ``send`` returns once the buffer
is empty: its caller is often a plain thread that blocks next outside gevent
(on a queue, a lock, ``input()``), and the hub that would write the rest does
not run then.  Control frames never block and are bounded
by count: an unanswered pong still in the buffer is replaced by the answer to
the latest ping (RFC 6455 5.5.3 allows answering only the latest).  A buffer
that makes no progress for ``connection_timeout`` seconds (a peer that stopped
reading) fails the connection like an idle peer does.  Once a close frame is
in the buffer the connection has ``close_timeout`` seconds to finish the
closing handshake; then the TCP connection is dropped, which wakes every
blocked ``send`` with :class:`ConnectionClosed`.  A write that cannot finish
ends the TCP connection: it is the only way a frame is ever cut.

Pings and the idle timeout share one libev timer per hub (a heap of
deadlines); a connection's entry is cleared when it is dropped, so a closed
connection is not kept alive by its timer.
"""

from __future__ import annotations

import codecs
import collections
import heapq
import logging
import socket
import struct
import sys
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Union

import gevent
from gevent.event import AsyncResult, Event
from gevent.hub import Waiter, get_hub, getcurrent

from . import _metrics
from . import params as _params
from .exceptions import ConnectionClosed, ConnectionTimeout, InvalidData, MessageTooLarge, UnexpectedError, WebSocketError
from .frames import OP_BINARY, OP_CONT, OP_TEXT
from .protocol import Close, Ping, Pong, Protocol
from .tls import Transport

__all__ = ["WebSocket", "PendingPing", "MessageStream"]

_PING = struct.Struct("!Q")
_BATCH = 1 << 16  # bytes of held-back frames that trigger a write at once
# the same for held compressed frames: a few of them, not a whole batch.  Each cost
# tens of µs of zlib, so a syscall per few frames is cheap, and the peer gets the
# first replies to work on while the rest are compressed (workload J: 16 held 1 KiB
# JSON replies 23k msg/s, a write per ~8 of them 30k, a write per reply 26k)
_ZBATCH = 2048
_READ_SIZE = 1 << 18  # largest recv; the buffer is shared by a hub's connections
_READ_START = 1 << 16  # a connection's first reads: grown while parsing stays cheap
_READ_MIN = 1 << 12
_READ_SLOW = 0.004  # seconds of parsing one read that make the next reads smaller
_READ_BURST = 4  # recvs in one readiness callback while the buffer comes back full
_DIRECT_READS = 4  # reads a receiving greenlet may make itself between two waits in the hub
_BATCH_ITEM = 4096  # messages up to this length (chars or bytes) may be held back
_BATCHABLE = (str, bytes)
_IOV = 512  # pieces per sendmsg (below IOV_MAX)
# the writer's states
_IDLE, _HELD, _WRITING = 0, 1, 2
_buffers: "weakref.WeakKeyDictionary[Any, memoryview]" = weakref.WeakKeyDictionary()

# Bytes of outgoing frames a connection may buffer before ``send`` blocks (until
# a quarter of it is left).  Control frames never block.
_params.define("write_limit", 1 << 16, _params._size)


def _warn_blocking_tls() -> None:
    global _warned_blocking_tls
    if not _warned_blocking_tls:
        _warned_blocking_tls = True
        logging.getLogger("gws13.server").warning(
            "a WebSocket runs on a blocking TLS socket of the standard library's ssl module: "
            "one peer that stops reading will stop every connection of this process; give the "
            "server a gevent.ssl.SSLContext (or monkey-patch ssl), or use gws13.server.WebSocketServer")


_warned_blocking_tls = False


def _read_buffer(hub: Any) -> memoryview:
    # Hub callbacks never overlap and the protocol copies what it keeps, so all
    # plain-socket connections of one hub share one receive buffer.
    view = _buffers.get(hub)
    if view is None:
        view = _buffers[hub] = memoryview(bytearray(_READ_SIZE))
    return view


class _Scheduler:
    """One libev timer per hub for every connection's keepalive ping and idle
    deadline: a heap of ``[deadline, seq, ws]`` entries.  With 10,000
    connections this is 10,000 heap entries instead of 10,000 timers re-created
    every interval.  A connection has one live entry (``ws._entry``); a newer
    one, or dropping the connection, empties the old entry's ``ws`` slot, so
    the heap holds no reference to a connection that is gone."""

    __slots__ = ("_loop", "_heap", "_timer", "_at", "_seq")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._heap: List[Any] = []
        self._timer: Any = None
        self._at: Optional[float] = None
        self._seq = 0

    def schedule(self, ws: "WebSocket", deadline: float) -> None:
        old = ws._entry
        if old is not None:
            old[2] = None
        self._seq += 1
        entry = ws._entry = [deadline, self._seq, ws]
        heapq.heappush(self._heap, entry)
        if self._at is None or deadline < self._at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
        self._at = deadline
        self._timer = self._loop.timer(max(deadline - self._loop.now(), 0.0005))
        self._timer.start(self._fire)

    def _fire(self) -> None:
        self._timer.close()
        self._timer = None
        self._at = float("-inf")  # while firing, schedule() does not arm: done once below
        heap = self._heap
        # a millisecond of slack lets connections due together be served in one go
        limit = self._loop.now() + 0.001
        while heap and heap[0][0] <= limit:
            entry = heapq.heappop(heap)
            ws = entry[2]
            if ws is None:
                continue  # dropped, or replaced by a newer entry
            entry[2] = None
            ws._entry = None
            try:
                ws._on_timer()
            except Exception:
                get_hub().handle_error(ws, *sys.exc_info())
        self._at = None
        if heap:
            self._arm(heap[0][0])


_schedulers: "weakref.WeakKeyDictionary[Any, _Scheduler]" = weakref.WeakKeyDictionary()


def _scheduler(hub: Any) -> _Scheduler:
    scheduler = _schedulers.get(hub)
    if scheduler is None:
        scheduler = _schedulers[hub] = _Scheduler(hub.loop)
    return scheduler


class _Closed:
    """Queue sentinel: the connection ended; ``payload`` is the peer's close body.
    Each receive API tells of the end a fixed number of times, then raises
    ConnectionClosed: ``returned`` is True once ``receive`` returned None,
    ``reported`` counts ``receive_message``'s answers."""

    __slots__ = ("payload", "reported", "returned")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.reported = 0
        self.returned = False


class PendingPing:
    """Returned by :meth:`WebSocket.ping`; :meth:`wait` gives the round trip."""

    __slots__ = ("payload", "sent", "_result")

    def __init__(self, payload: bytes, sent: float) -> None:
        self.payload = payload
        self.sent = sent
        self._result: AsyncResult[float] = AsyncResult()

    def wait(self, timeout: Optional[float] = None) -> float:
        """Round-trip time in seconds.  Raises TimeoutError, or ConnectionClosed
        if the connection ended before the pong came."""
        try:
            return self._result.get(timeout=timeout)  # type: ignore[return-value]  # a timeout raises
        except gevent.Timeout:
            raise TimeoutError("no pong within %s s" % timeout) from None

    @property
    def done(self) -> bool:
        return self._result.ready()


def _wait_woken(hub: Any, waiters: List[Any], timeout: Optional[float], what: str) -> None:
    """Block until the reader wakes one of ``waiters`` (TimeoutError after
    ``timeout`` seconds)."""
    waiter: Waiter[Any] = Waiter(hub)
    waiters.append(waiter)
    timer = gevent.Timeout._start_new_or_dummy(timeout) if timeout is not None else None  # type: ignore[attr-defined]  # not in gevent's stubs
    try:
        waiter.get()
    except BaseException as exc:
        try:
            waiters.remove(waiter)
        except ValueError:
            pass  # woken and interrupted at once
        if timer is not None and exc is timer:
            raise TimeoutError(f"no {what} within {timeout} s") from None
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _counted(name: str) -> "property":
    """A WebSocket's view of one of its protocol's counts (0 before it has one)."""
    def get(ws: "WebSocket") -> int:
        proto = ws._proto
        return 0 if proto is None else int(getattr(proto.counts, name))
    return property(get)


class WebSocket:
    """An open WebSocket connection (server or client side).

    Blocking calls cooperate with gevent.  ``receive`` returns ``str`` for
    text, ``bytes`` for binary and ``None`` once, when the connection has
    closed; ``send`` is safe to call from many greenlets at once.
    """

    # slots: thousands of idle connections are the common case, keep each small
    __slots__ = (
        "environ", "subprotocol", "extensions", "latency", "failure", "__weakref__",
        "_sock", "_client", "_params", "_proto", "_acceptor", "_queue", "_waiters",
        "_done", "_pings", "_ping_seq", "_io", "_reader", "_resume", "_paused", "_entry",
        "_dropped", "_deferred", "_grace", "_close_callbacks", "_max_queue", "_drop_pings",
        "_hub", "_loop", "_last_seen", "_last_ping", "_keepalive", "_raw", "_rbuf",
        "_direct_reads", "_rsize",
        # the writer
        "_wbuf", "_wsize", "_wstate", "_whold", "_wlimit", "_wblock", "_wio", "_writer", "_wwaiters", "_wpong",
        "_wthen", "_wprogress", "_wdrain", "_ctimer",
        # streams (issue 15): the message being sent as fragments, the one being received
        "_wstream", "_rstream",
        # TLS through memory BIOs: the timer that reads what the transport holds
        "_rtimer",
        # metrics (gws13.metrics(), ws.stats): plain counters, see gws13/_metrics.py
        "_n_bout", "_n_pings", "_n_late", "_n_paused", "_n_whigh", "_n_opened", "_n_closer",
    )

    def __init__(self, sock: Optional[socket.socket] = None, *, environ: Optional[Dict[str, Any]] = None,
                 client: bool = False, params: Optional[Dict[str, Any]] = None) -> None:
        self.environ: Dict[str, Any] = environ if environ is not None else {}
        self.subprotocol: Optional[str] = None
        self.extensions: Optional[str] = None
        #: round trip of the last ping answered, in seconds (None before the first)
        self.latency: Optional[float] = None
        #: the error that failed the connection (None while it is open or closed cleanly)
        self.failure: Optional[WebSocketError] = None
        self._sock: socket.socket = sock  # type: ignore[assignment]  # set before any I/O (here or by _start)
        self._client = client
        self._params: Dict[str, Any] = params  # type: ignore[assignment]  # likewise
        self._proto: Optional[Protocol] = None
        # set by integrations for sockets that are not upgraded yet (lazy accept)
        self._acceptor: Any = None
        # messages for the application, then at most one _Closed (a short list:
        # cheaper per idle connection than a deque)
        self._queue: List[Any] = []
        self._waiters: List[Any] = []
        # created when first needed: most connections never use them
        self._done: Optional[Event] = None  # set when the connection is dropped
        self._pings: Optional[Dict[bytes, PendingPing]] = None  # in the order sent
        self._ping_seq = 0
        self._io: Any = None
        self._reader: Any = None
        self._resume: Optional[Event] = None
        self._paused = False
        self._direct_reads = _DIRECT_READS
        self._rsize = _READ_START
        # this connection's live entry in its hub's _Scheduler
        self._entry: Optional[List[Any]] = None
        # the last keepalive ping: (payload, time sent)
        self._keepalive: Optional[tuple[bytes, float]] = None
        self._dropped = False
        # the close reply or failure close that waits for the application to take
        # the messages that arrived before it (see _defer)
        self._deferred: Any = None
        self._grace: Any = None
        self._close_callbacks: Optional[List[Any]] = None
        # the writer: whole frames waiting for the socket, in wire order
        self._wbuf: List[Any] = []
        self._wsize = 0
        self._wstate = _IDLE
        self._whold = _BATCH  # while _HELD: the held bytes that make it write at once
        self._wlimit = 1 << 16
        self._wblock = 1 << 16  # send blocks above this: write_limit, a client's 0
        self._wio: Any = None  # the write watcher (plain sockets)
        self._writer: Any = None  # the greenlet writing (TLS)
        self._wwaiters: Optional[List[Any]] = None  # sends blocked above the high-water mark
        self._wpong: Any = None  # the last pong put in the buffer
        self._wthen: Optional[Callable[[], None]] = None  # runs once the buffer is empty
        self._wprogress = 0.0  # when the buffer last made progress (or filled)
        self._wdrain: Optional[List[Any]] = None  # callbacks run when the buffer drains
        self._ctimer: Any = None  # the closing handshake's deadline
        self._wstream: Optional[_SendStream] = None  # a fragmented message being sent
        self._rstream: Any = None  # the _StreamSink of the message being streamed in
        self._rtimer: Any = None  # see _read_ahead
        # metrics (gws13/_metrics.py): wire bytes out, pings sent, keepalive
        # pongs late, reads paused, the write buffer's high-water mark (bytes
        # and messages in, messages out, application bytes and the read
        # queue's mark: the protocol's counts)
        self._n_bout = 0
        self._n_pings = self._n_late = self._n_paused = self._n_whigh = 0
        self._n_opened = 0.0  # time.monotonic() at _start; 0: not started
        self._n_closer: Optional[str] = None  # who sent the first close frame: "local" / "remote"

    # -- set-up ----------------------------------------------------------------
    def _start(self, sock: socket.socket, protocol: Protocol, params: Dict[str, Any],
               pending: bytes = b"") -> None:
        """Begin I/O on an upgraded socket.  ``pending`` holds bytes already read
        past the handshake."""
        self._sock = sock
        self._proto = protocol
        # a message over the limits waits for the application: receive_stream
        # may take it with its own limit, receive refuses it (1009)
        protocol.hold_oversized = True
        self._params = params
        self._max_queue = params["max_queue"]
        self._drop_pings = params["drop_incoming_pings"]
        self._wlimit = params.get("write_limit", 1 << 16)
        self._wblock = 0 if self._client else self._wlimit
        hub = self._hub = get_hub()
        self._loop = hub.loop
        self._last_seen = self._last_ping = self._loop.now()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a socketpair in tests, a Unix socket)
        raw = getattr(sock, "_sock", None)
        transport = getattr(sock, "tls_transport", None)  # (also through a server's _Borrowed)
        if transport is not None:
            raw = transport  # TLS through memory BIOs: the plain path, see gws13.tls
        elif hasattr(sock, "_sslobj"):
            raw = None
        if raw is not None:
            self._raw = raw
            self._rbuf = _read_buffer(hub)
            # the socket's own read watcher (nothing else waits on it while
            # this one reads): one libev watcher less per connection
            io = getattr(sock, "_read_event", None)
            if io is None or io.active or io.callback is not None:
                io = self._loop.io(sock.fileno(), 1)
            self._io = io
            io.start(self._on_readable)
            self._read_ahead()
        else:
            if sock.__class__.__module__ == "ssl" and sock.gettimeout() is None:
                _warn_blocking_tls()
            self._raw = None
            self._resume = Event()
            self._resume.set()
            self._reader = gevent.spawn(self._read_loop)
        self._arm_timer()
        # metrics: this connection counts in gws13.metrics() from now on
        self._n_opened = time.monotonic()
        _metrics.opened(self)
        if _metrics.debug_enabled():
            _metrics.log_opened(self)
        if pending:
            self._data_received(pending)

    @property
    def _accepted(self) -> bool:
        return self._proto is not None

    def _ensure(self) -> Protocol:
        proto = self._proto
        if proto is None:
            if self._acceptor is None:
                raise ConnectionClosed(1006, "not connected")
            self._acceptor(self, None)
            proto = self._proto
        return proto  # type: ignore[return-value]  # the acceptor set it, or raised

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason)

    # -- public API ------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once a close frame went either way or the connection dropped."""
        proto = self._proto
        return self._dropped or (proto is not None and (proto.close_sent or proto.close_received or proto.eof))

    @property
    def close_code(self) -> Optional[int]:
        return self._proto.close_code if self._proto is not None else None

    @property
    def close_reason(self) -> str:
        return self._proto.close_reason if self._proto is not None else ""

    @property
    def path(self) -> str:
        env = self.environ
        path = env.get("PATH_INFO", "")
        return env.get("SCRIPT_NAME", "") + path if "SCRIPT_NAME" in env else path  # type: ignore[no-any-return]  # environ values are str

    @property
    def origin(self) -> str:
        return self.environ.get("HTTP_ORIGIN", "")  # type: ignore[no-any-return]  # environ values are str

    @property
    def version(self) -> str:
        """The request's ``Sec-WebSocket-Version`` header (``"13"``), as gevent-websocket has it."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_VERSION", "")  # type: ignore[no-any-return]  # environ values are str

    @property
    def protocol(self) -> Optional[str]:
        """The request's ``Sec-WebSocket-Protocol`` header as the client sent it (the
        offer, None without one), as gevent-websocket has it; the subprotocol chosen is
        :attr:`subprotocol`."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")

    @property
    def buffered_amount(self) -> int:
        """Bytes of frames waiting to be written (as the browser API's ``bufferedAmount``)."""
        return self._wsize

    @property
    def stats(self) -> Dict[str, Any]:
        """This connection's figures, a snapshot as a plain dict:
        ``messages_received``, ``messages_sent``, ``bytes_received``,
        ``bytes_sent`` (wire bytes), ``payload_bytes_received``,
        ``payload_bytes_sent`` (application data), ``pings_sent``,
        ``pongs_late``, ``reads_paused``, ``read_queue_high_water``,
        ``write_buffer_high_water``, ``duration`` (seconds since it opened)
        and ``latency``.  See :func:`gws13.metrics` for what each counts."""
        return _metrics.connection_figures(self)

    # bytes and messages in, messages out and their application bytes are
    # counted by the protocol, which already knows each message's size: in C
    # on the usual paths (its scanner and small-frame encoder), with no
    # per-message work here
    _n_bin = _counted("bytes_in")
    _n_min = _counted("messages_in")
    _n_mout = _counted("messages_out")
    _n_ain = _counted("payload_in")
    _n_aout = _counted("payload_out")
    _n_qhigh = _counted("queue_high")

    def receive(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        """Next message: ``str`` (text) or ``bytes`` (binary).  Returns ``None``
        once, when the connection has closed.

        Raises TimeoutError when ``timeout`` seconds pass without a message, and
        ConnectionClosed when called again after it returned None (a loop that
        ignores the end does not spin)."""
        item = self._next(timeout)
        if item.__class__ is not _Closed:
            return item  # type: ignore[no-any-return]  # a message: str or bytes
        if item.returned:
            raise self._closed_error()
        item.returned = True
        return None

    def _next(self, timeout: Optional[float]) -> Any:
        if self._proto is None:
            self._ensure()
        if self._rstream is not None:
            self._stream_in_the_way(timeout)
        queue = self._queue
        if self._deferred is not None and queue and queue[0].__class__ is _Closed:
            self._run_deferred()
        while not queue:
            io = self._io
            if self._direct_reads and io is not None and io.active:
                # Try a read before parking in the hub, as gevent's socket.recv
                # does: often the next message is already there, and the time
                # this takes lets the hub find it ready rather than sleep and be
                # woken for it.  Bounded, so that a peer that never runs dry
                # cannot keep this greenlet from yielding to other connections.
                self._direct_reads -= 1
                self._on_readable()
                if queue:
                    break
            if self._proto._sink is not None and self._proto.held:  # type: ignore[union-attr]  # set by _ensure above
                # a message over the limits held for a possible receive_stream
                # (found before this call, by its read or while it waited):
                # receive refuses it
                self._refuse_held()
                break
            _wait_woken(self._hub, self._waiters, timeout, "message")
            self._direct_reads = _DIRECT_READS
        item = queue[0]
        if item.__class__ is not _Closed:  # the close sentinel stays for every later call
            del queue[0]
            if self._paused and len(queue) < self._max_queue:
                self._unpause()
        return item

    def __iter__(self) -> Iterator[Union[str, bytes]]:
        next_item = self._next
        while True:
            item = next_item(None)
            if item.__class__ is _Closed:
                return
            yield item

    def send(self, data: Union[str, bytes, bytearray, memoryview, Iterable[Union[str, bytes, bytearray, memoryview]]],
             binary: Optional[bool] = None, compress: Optional[bool] = None) -> None:
        """Send one message: ``str`` as text, bytes-like as binary (``binary``
        forces the type; ``compress=False`` skips permessage-deflate).

        Any other iterable (a generator, an iterator, a list of chunks) is sent
        as one fragmented message, a frame per chunk as it yields them: see
        :meth:`_send_stream` and the Streaming guide.  Its chunks are all
        ``str`` (text) or all bytes-like (binary); a chunk of another kind
        raises TypeError.

        Returns once the message is in the connection's outgoing buffer; blocks
        while that holds more than ``write_limit`` bytes.  On a client it
        returns once the buffer is empty (the kernel has every byte), so that a
        thread may block outside gevent right after.  Raises
        ConnectionClosed once the connection is closing or closed (also when it
        ends while this call is blocked)."""
        proto = self._proto
        if proto is None:
            proto = self._ensure()
        if self._dropped:
            raise self._closed_error()
        if self._wstream is not None:
            self._wait_stream()  # a fragmented message is going out: never interleave
        # Encoded and put in the buffer with no switch in between: frames keep
        # the order of a compressor's shared context, whichever greenlet sends.
        try:
            pieces = proto.send_message(data, binary, compress)  # type: ignore[arg-type]  # an iterable raises TypeError
        except TypeError:
            if not _is_stream(data):
                raise
            self._send_stream(data, binary, compress)
            return
        raw = self._raw
        if raw is None:
            self._enqueue(pieces, True)
        elif self._wbuf:
            self._enqueue(pieces)
        elif self._queue and data.__class__ in _BATCHABLE and len(data) <= _BATCH_ITEM and self._wblock:
            # More messages are already waiting for the application, which will
            # answer them before it blocks: hold the answers back and write them
            # in one syscall when this greenlet yields to the hub.  (Not on a
            # client, _wblock 0: its caller may block outside gevent next.)
            frame = pieces[0]
            self._wbuf.append(frame)
            self._wsize = len(frame)
            self._wstate = _HELD
            self._whold = _ZBATCH if frame[0] & 0x40 else _BATCH
            self._wprogress = self._loop.now()
            self._loop.run_callback(self._flush_held)
            return
        else:
            # nothing is waiting: straight to the kernel, the usual case
            if not self._write_now(raw, pieces):
                raise ConnectionClosed(1006, "connection lost while sending")
            if not self._wbuf:
                return
        if self._wsize > self._wblock:
            self._wait_drained()
        elif self._dropped:
            raise self._closed_error()  # the write failed

    def ping(self, data: Union[str, bytes] = b"") -> PendingPing:
        """Send a ping; the returned object's ``wait(timeout)`` gives the round trip.

        Raises ConnectionClosed once the connection is closing or closed, and
        ValueError for a payload over 125 bytes."""
        proto = self._ensure()
        if isinstance(data, str):
            data = data.encode("utf-8")
        data = bytes(data)
        frame = proto.send_ping(data)
        if self._dropped:
            raise self._closed_error()
        pending = PendingPing(data, time.perf_counter())
        self._n_pings += 1  # metrics
        if self._pings is None:
            self._pings = {}
        self._pings[data] = pending
        self._enqueue([frame])
        return pending

    def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat).  Raises like :meth:`ping`."""
        frame = self._ensure().send_pong(bytes(data))
        if self._dropped:
            raise self._closed_error()
        self._enqueue([frame])

    def close(self, code: Optional[int] = 1000, reason: str = "") -> None:
        """Start (or answer) the closing handshake and close the TCP connection.

        Waits at most ``close_timeout`` seconds for the peer's close frame (0:
        does not wait; the close frame still goes out if the socket takes it
        within a second).  On a WebSocket that was not accepted yet, accepts it
        first, so that the client sees ``code`` (refusing with a close code, as
        gevent-websocket applications do).  Closing a closed connection does
        nothing.  Raises ValueError for a code that may not be sent."""
        proto = self._proto
        if proto is None:
            if self._acceptor is None:
                return
            proto = self._ensure()
        if self._dropped:
            return
        timeout = self._params["close_timeout"]
        if self._done is None:
            self._done = Event()  # the peer's answer or the deadline sets it (via _drop)
        if proto.close_received:
            # the peer closed first: our answer (maybe deferred) ends it
            if self._deferred is not None:
                self._run_deferred()
            if not proto.close_sent:
                self._start_close(code, reason, self._drop)
        elif not proto.close_sent:
            self._start_close(code, reason, None if timeout else self._drop)
        if not timeout or getcurrent() is self._hub:
            return  # the peer's close frame or the handshake's deadline ends it
        if not self._dropped:
            self._done.wait(timeout)
        self._drop()

    def add_close_callback(self, callback: Callable[["WebSocket"], Any]) -> None:
        """Call ``callback(ws)`` once the connection is closed (at once if it is).
        It runs in the hub: it must not block."""
        if self._dropped:
            callback(self)
        else:
            if self._close_callbacks is None:
                self._close_callbacks = []
            self._close_callbacks.append(callback)

    def fail(self, error: WebSocketError) -> None:
        """Close with ``error.code`` because of ``error`` (used by with_websocket).
        A ConnectionClosed error only makes sure the connection is closed."""
        if isinstance(error, ConnectionClosed):
            self.close()
            return
        if self.failure is None:
            self.failure = error
        self.close(error.code, error.reason[:100] if error.reason else "")

    # -- reading ---------------------------------------------------------------
    def _on_readable(self) -> None:
        # runs in the hub: no blocking here
        raw, proto, queue = self._raw, self._proto, self._queue
        # A full buffer means more is waiting (a large message arriving): take a
        # few more reads in this turn of the loop, bounded so that other
        # connections still get theirs.
        for _ in range(_READ_BURST):
            if len(queue) >= self._max_queue:
                # The application is behind: stop reading until it catches up (TCP
                # backpressure).  Decided when more input comes, not when the queue
                # fills, so a reader that keeps up never stops and restarts this.
                self._pause()
                return
            # the rest of a large binary frame is read straight into its message
            view = self._rbuf if proto._frame is None else proto.payload_buffer() or self._rbuf  # type: ignore[union-attr]
            size = self._rsize if view is self._rbuf else len(view)
            try:
                n = raw.recv_into(view, size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if not n:
                self._lost()
                return
            if n > _READ_MIN and view is self._rbuf:
                started = time.perf_counter()
                self._data_received(view[:n])
                if not self._budget(n, size, time.perf_counter() - started):
                    return
            else:
                self._data_received(view[:n])
            if n < size or self._dropped or self._paused:
                return
        self._read_ahead()  # this turn's reads are over, not necessarily the input

    def _read_ahead(self) -> None:
        """Input a TLS transport holds already (records read ahead, in its
        BIO) makes no I/O watcher fire: read it in the next turn of the loop.
        A timer, not a callback: timers run after the loop has polled every
        other socket, while callbacks that schedule callbacks run on without
        polling (a flood of tiny frames held the loop 0.6 s that way)."""
        raw = self._raw
        if raw.__class__ is Transport and raw.pending():
            timer = self._rtimer
            if timer is None:
                timer = self._rtimer = self._loop.timer(0.0)
            if not timer.active:
                timer.start(self._read_held)

    def _read_held(self) -> None:
        if not self._dropped and not self._paused and self._io is not None and self._io.active:
            self._on_readable()

    def _budget(self, n: int, size: int, spent: float) -> bool:
        """Adapt the read size to what parsing costs, so that one connection's
        turn stays short however its bytes arrive (many tiny frames parse slowly,
        large ones fast).  False: this turn is over."""
        if spent > _READ_SLOW:
            self._rsize = max(_READ_MIN, self._rsize >> 2)
            return False
        if n == size and self._rsize < _READ_SIZE and spent < _READ_SLOW / 4:
            self._rsize <<= 1
        return True

    def _read_loop(self) -> None:
        view = memoryview(bytearray(1 << 14))
        sock = self._sock
        proto, queue, loop = self._proto, self._queue, self._loop
        stamp, turn = loop.now(), time.perf_counter()
        while not self._dropped:
            if len(queue) >= self._max_queue and queue[-1].__class__ is not _Closed:
                self._pause()  # as in _on_readable; after the end, read on until EOF
            if self._paused:
                self._resume.wait()  # type: ignore[union-attr]  # set by _pause
                continue
            target = proto.payload_buffer() or view  # type: ignore[union-attr]  # accepted
            try:
                n = sock.recv_into(target)
            except (OSError, ValueError):  # ValueError: the SSL socket was closed under us
                n = 0
            except Exception:
                if not self._dropped:
                    raise
                return  # type: ignore[unreachable]  # dropped while this greenlet read (as in _write_tls)
            if not n:
                self._lost()
                return
            self._data_received(target[:n])
            # Decrypted bytes already in the SSL object are read without a
            # switch: yield when this turn of the loop has gone on too long, or
            # a flood would keep the loop.  (The loop's clock moves only when
            # the hub ran: then a new turn began.)
            now = loop.now()
            if now != stamp:
                stamp, turn = now, time.perf_counter()
            elif time.perf_counter() - turn > _READ_SLOW:
                # a timer, not sleep(0): the loop must poll the other sockets
                # before this greenlet reads again (with sleep(0) a flood of
                # tiny frames held the loop 116 ms)
                gevent.sleep(0.0001)
                stamp, turn = loop.now(), time.perf_counter()

    def _data_received(self, data: Union[bytes, bytearray, memoryview]) -> None:
        proto: Protocol = self._proto  # type: ignore[assignment]  # accepted: set by _start
        self._last_seen = self._loop.now()
        queue = self._queue
        # messages go straight onto the queue (they and the bytes are counted
        # by the protocol); the events are control frames
        events = proto.receive_data(data, queue)
        event: Any  # dispatched on its class below
        for event in events:
            cls = event.__class__
            if cls is Ping:
                if not self._drop_pings and not proto.close_sent and not self._dropped:
                    self._answer_ping(proto.send_pong(event.payload))
            elif cls is Pong:
                self._on_pong(event.payload)
            else:  # Close
                self._on_close(event)
        if proto.failure is not None:
            self._on_failure(proto)
        elif proto._sink is not None and proto.held and not self._paused:
            self._pause()  # nothing more is parsed until the application decides
        self._wake()

    def _answer_ping(self, frame: bytes) -> None:
        buf = self._wbuf
        if buf and buf[-1] is self._wpong:
            # the pong for an earlier ping is still waiting: answer only the
            # latest (RFC 6455 5.5.3), so a ping flood costs nothing more
            self._wsize += len(frame) - len(buf[-1])
            buf[-1] = frame
        else:
            self._enqueue([frame])
        self._wpong = frame

    def _on_pong(self, payload: bytes) -> None:
        keepalive = self._keepalive
        if keepalive is not None and keepalive[0] == payload:
            self.latency = time.perf_counter() - keepalive[1]
            self._keepalive = None
            _metrics.observe_rtt(self.latency)
        pings = self._pings
        if not pings or payload not in pings:
            return
        now = time.perf_counter()
        # a pong answers its ping and every ping sent before it (RFC 6455 5.5.3)
        while pings:
            key = next(iter(pings))
            pending = pings.pop(key)
            pending._result.set(now - pending.sent)
            if key == payload:
                self.latency = now - pending.sent
                _metrics.observe_rtt(self.latency)
                break

    def _on_close(self, event: Close) -> None:
        proto: Protocol = self._proto  # type: ignore[assignment]  # accepted: set by _start
        if self._n_closer is None:  # metrics: the peer's close came first (ours sets "local")
            self._n_closer = "remote"
        self._queue.append(_Closed(event.payload))
        self._stop_reading()
        if proto.close_sent:
            self._drop()  # our close was answered: the closing handshake is complete
        else:
            self._defer(self._reply_close)

    def _reply_close(self) -> None:
        # echo the peer's code (no reason); the server closes TCP first
        proto: Protocol = self._proto  # type: ignore[assignment]  # accepted: set by _start
        if proto.close_sent or self._dropped:
            return
        code = proto.close_code
        self._start_close(code if code != 1005 else None, "",
                          self._drop if not self._client else self._linger)

    def _on_failure(self, proto: Protocol) -> None:
        if self.failure is None:
            self.failure = proto.failure
        self._queue.append(_Closed(b""))
        self._stop_reading()
        self._defer(self._send_failure)

    def _send_failure(self) -> None:
        proto: Protocol = self._proto  # type: ignore[assignment]  # accepted: set by _start
        if proto.close_sent or self._dropped:
            return
        error: WebSocketError = proto.failure  # type: ignore[assignment]  # called on a failure
        self._start_close(error.code, error.reason, self._linger)

    def _defer(self, action: Callable[[], None]) -> None:
        """Run ``action`` (which ends the connection) once the application has
        taken the messages queued before the end, so that its answers to them
        still go out; at most 0.5 s later for an application that is not
        reading."""
        if len(self._queue) <= 1:
            action()
            return
        self._deferred = action
        self._grace = self._loop.timer(0.5)
        self._grace.start(self._run_deferred)

    def _run_deferred(self) -> None:
        action, self._deferred = self._deferred, None
        if self._grace is not None:
            self._grace.stop()
            self._grace.close()
            self._grace = None
        if action is not None:
            action()

    def _lost(self) -> None:
        """The TCP connection ended or broke without a closing handshake."""
        if self._proto is not None:
            self._proto.receive_eof()
        self._drop()

    def _wake(self) -> None:
        waiters = self._waiters
        if not waiters:
            return
        self._waiters = []
        if getcurrent() is self._hub:
            for waiter in waiters:
                waiter.switch(None)
        else:
            for waiter in waiters:
                self._loop.run_callback(waiter.switch, None)

    def _pause(self) -> None:
        self._paused = True
        self._n_paused += 1  # metrics
        if self._io is not None:
            self._io.stop()
        else:
            self._resume.clear()  # type: ignore[union-attr]  # set by _pause

    def _unpause(self) -> None:
        if self._proto._sink is not None and self._proto.held:  # type: ignore[union-attr]  # an open connection's
            return  # a held message: reading waits for receive_stream or its refusal
        self._paused = False
        if self._dropped:
            return
        if self._io is not None:
            self._io.start(self._on_readable)
            self._read_ahead()
        else:
            self._resume.set()  # type: ignore[union-attr]  # set by _pause

    def _stop_reading(self) -> None:
        if self._io is not None:
            self._io.stop()

    # -- writing ---------------------------------------------------------------
    def _enqueue(self, pieces: List[Any], inline: bool = False) -> None:
        """Put whole frames in the outgoing buffer and see that they get
        written.  Never blocks unless ``inline`` (TLS only: the calling greenlet
        writes them itself); callable from the hub."""
        if self._dropped:
            return
        buf = self._wbuf
        if not buf:
            self._wprogress = self._loop.now()
        size = self._wsize
        for piece in pieces:
            buf.append(piece)
            size += len(piece)
        self._wsize = size
        state = self._wstate
        if state == _WRITING or (state == _HELD and size < self._whold):
            return
        if self._raw is not None:
            self._flush()
        elif inline and getcurrent() is not self._hub:
            self._write_tls()
        else:
            self._wstate = _WRITING
            self._writer = gevent.spawn(self._write_tls)

    def _write_now(self, raw: Any, pieces: List[Any]) -> bool:
        """Write whole frames straight to the kernel (plain sockets, empty
        buffer; never blocks).  What the socket does not take now is buffered
        for the write watcher.  False if the connection was lost."""
        try:
            if len(pieces) == 1:
                frame = pieces[0]
                sent = raw.send(frame)
                if sent == len(frame):
                    self._n_bout += sent  # metrics
                    return True
            else:
                sent = raw.sendmsg(pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lost()
            return False
        self._n_bout += sent  # metrics
        self._sent_part(pieces, sent)
        return True

    def _sent_part(self, pieces: List[Any], sent: int) -> None:
        """A direct write took ``sent`` bytes of ``pieces`` (counted already):
        the rest goes in the empty buffer, for the write watcher."""
        self._buffer_rest(pieces, sent)
        if self._wbuf:
            self._await_writable()

    def _buffer_rest(self, pieces: List[Any], sent: int) -> None:
        """Keep what a direct write did not take, in the empty buffer."""
        buf = self._wbuf
        size = 0
        for piece in pieces:
            n = len(piece)
            if sent >= n:
                sent -= n
                continue
            if sent:
                piece = memoryview(piece)[sent:]
                n -= sent
                sent = 0
            buf.append(piece)
            size += n
        self._wsize = size
        self._wprogress = self._loop.now()

    def _flush_held(self) -> None:
        # runs in the hub once the sending greenlet has yielded
        if self._wstate == _HELD:
            self._flush()

    def _flush(self) -> None:
        """Write as much of the buffer as the socket takes now (plain sockets;
        never blocks).  What is left waits for the write watcher."""
        buf = self._wbuf
        if self._wsize > self._n_whigh:  # metrics: the buffer only grows between flushes
            self._n_whigh = self._wsize
        raw = self._raw
        progressed = False
        while buf:
            batch = buf if len(buf) <= _IOV else buf[:_IOV]
            try:
                sent = raw.send(batch[0]) if len(batch) == 1 else raw.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._lost()
                return
            progressed = True
            full = sent == sum(map(len, batch)) if len(batch) > 1 else sent == len(batch[0])
            self._wsize -= sent
            self._n_bout += sent  # metrics
            i = 0
            while sent:
                n = len(buf[i])
                if sent < n:
                    buf[i] = memoryview(buf[i])[sent:]
                    break
                sent -= n
                i += 1
            del buf[:i]
            if not full:
                break
        if progressed:
            self._wprogress = self._loop.now()
        if buf:
            self._await_writable()
            if self._wwaiters and self._wsize <= self._wlimit >> 2:
                self._wake_writers()
            return
        if self._wstate == _WRITING:
            self._wio.stop()
        self._wstate = _IDLE
        self._drained()

    def _await_writable(self) -> None:
        # the rest of the buffer goes out from the hub when the socket can take it
        if self._wstate == _WRITING:
            return
        self._wstate = _WRITING
        io = self._wio
        if io is None:
            sock = self._sock
            # the socket's own write watcher: nothing else writes on it now
            io = getattr(sock, "_write_event", None)
            if io is None or io.active or io.callback is not None:
                io = self._loop.io(sock.fileno(), 2)
            self._wio = io
        io.start(self._flush)

    def _write_tls(self) -> None:
        """Write the buffer out with blocking writes (TLS): in a send's own
        greenlet or in the one writer greenlet.  A write that fails or is
        interrupted may have cut a frame: the connection ends."""
        self._writer = getcurrent()
        self._wstate = _WRITING
        buf = self._wbuf
        sock = self._sock
        try:
            while buf and not self._dropped:
                if self._wsize > self._n_whigh:  # metrics
                    self._n_whigh = self._wsize
                piece = buf[0]
                sock.sendall(piece)
                del buf[0]
                self._wsize -= len(piece)
                self._n_bout += len(piece)  # metrics
                self._wprogress = self._loop.now()
                if self._wwaiters and self._wsize <= self._wlimit >> 2:
                    self._wake_writers()
        except (OSError, ValueError):  # ValueError: the SSL socket was closed under us
            self._writer = None
            self._lost()
            return
        except Exception:
            self._writer = None
            if self._dropped:
                return  # dropped while this greenlet wrote (gevent's SSL socket then has no SSL object)
            self._drop()
            raise
        except BaseException:
            self._writer = None
            self._drop()
            raise
        finally:
            if self._writer is getcurrent():
                self._writer = None
            self._wstate = _IDLE
        if not self._dropped:
            self._drained()

    def _drained(self) -> None:
        """The buffer is empty."""
        if self._wwaiters:
            self._wake_writers()
        then = self._wthen
        if then is not None:
            self._wthen = None
            then()
        drain = self._wdrain
        if drain and self._wstream is None:  # (a stream's end runs them: _end_stream)
            for callback in list(drain):
                callback()

    def _wait_drained(self) -> None:
        """Block the sending greenlet until the buffer is down to the low-water
        mark.  Raises ConnectionClosed if the connection ends meanwhile."""
        if getcurrent() is self._hub:
            return  # cannot wait in the hub: the buffer grows, bounded by the caller
        low = self._wblock >> 2
        while self._wsize > low and not self._dropped:
            waiter: Waiter[Any] = Waiter(self._hub)
            if self._wwaiters is None:
                self._wwaiters = []
            self._wwaiters.append(waiter)
            try:
                waiter.get()
            finally:
                waiters = self._wwaiters
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
        if self._dropped:
            raise self._closed_error()

    def _wake_writers(self) -> None:
        waiters, self._wwaiters = self._wwaiters, None
        for waiter in waiters or ():
            self._loop.run_callback(waiter.switch, None)

    def _start_close(self, code: Optional[int], reason: str = "",
                     then: Optional[Callable[[], None]] = None) -> None:
        """Put our close frame in the buffer and start the closing handshake's
        deadline (``close_timeout``): when it passes, the TCP connection is
        dropped, whatever is still unwritten.  ``then`` runs once the frame
        is written.  Never blocks."""
        proto: Protocol = self._proto  # type: ignore[assignment]  # accepted: set by _start
        if self._dropped or proto.close_sent or proto.eof:
            return
        frame = proto.send_close(code, reason)
        if self._n_closer is None:  # metrics: we sent the first close frame
            self._n_closer = "local"
        if self._ctimer is None:
            self._ctimer = self._loop.timer(self._params["close_timeout"] or 1.0)
            self._ctimer.start(self._drop)
        self._wthen = then
        self._enqueue([frame])

    # -- streams (issue 15) ----------------------------------------------------
    def receive_stream(self, max_size: Optional[int] = -1,
                       timeout: Optional[float] = None) -> Optional["MessageStream"]:
        """The next message as an iterator over its pieces, as its frames arrive
        (a :class:`MessageStream`): ``str`` pieces for text (decoded
        incrementally: invalid UTF-8 fails the connection with 1007 as soon as
        it arrives), ``bytes`` for binary; ``stream.text`` tells which.

        ``max_size`` bounds this message's data (bytes, after decompression):
        by default the connection's ``max_message_size``; None for no limit;
        more fails the connection with 1009.  For this message it also stands
        in for ``max_frame_size``: a streamed frame is never held whole.
        Memory stays bounded by a few hundred KiB whatever the size: reading
        from the socket stops while the consumer is behind (TCP backpressure).

        Waits for the message to begin (``timeout`` seconds at most for it and
        for each piece: TimeoutError).  Returns ``None`` once when the
        connection has closed, then raises ConnectionClosed, as
        :meth:`receive` does.  Iterating raises the connection's error
        (:class:`MessageTooLarge`, :class:`InvalidData`...) or
        ConnectionClosed if it ends in the middle of the message.

        Mixed use: while a stream is open (not exhausted nor closed),
        :meth:`receive`, iteration over the WebSocket and another
        ``receive_stream`` raise RuntimeError.  Closing the stream
        (``stream.close()``, leaving a ``with`` block, or a ``for`` loop that
        breaks out of an unreferenced stream) skips the rest of its message:
        its pieces are read and dropped (the limit still applies) and the
        connection stays usable for the next message.

        A message whose frame header already shows it over ``max_frame_size``
        or ``max_message_size`` before any ``receive_stream`` asked for it is
        held, unparsed, with reading paused (bounded memory, TCP
        backpressure): the next ``receive_stream`` takes it under its own
        ``max_size``; :meth:`receive` refuses it with 1009 as it would
        without streams."""
        proto = self._proto
        if proto is None:
            proto = self._ensure()
        if self._rstream is not None:
            self._stream_in_the_way(timeout)
        limit = proto.max_message_size if max_size == -1 else max_size
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"max_size must be a number of bytes or None, got {max_size!r}")
        queue = self._queue
        if queue:
            item = queue[0]
            if item.__class__ is _Closed:
                return self._stream_end_of_connection(item)
            # already assembled (it arrived before this call): one piece
            del queue[0]
            if self._paused and len(queue) < self._max_queue:
                self._unpause()
            if limit is not None and len(item.encode("utf-8") if item.__class__ is str else item) > limit:
                error = MessageTooLarge(f"message exceeds max_size {limit}")
                self.fail(error)
                raise error
            return MessageStream(_StreamSink(self, timeout, item))
        stream = _StreamSink(self, timeout)
        self._rstream = stream
        proto.stream_next(stream, limit)
        try:
            stream._wait_start()
        except BaseException:
            if proto.stream_cancel():
                self._rstream = None
            else:
                stream.close()
            raise
        if stream._state == _S_WAITING:  # the connection ended first
            proto.stream_cancel()
            self._rstream = None
            item = queue[-1] if queue and queue[-1].__class__ is _Closed else _Closed(b"")
            return self._stream_end_of_connection(item)
        return MessageStream(stream)

    def _refuse_held(self) -> None:
        """receive() reached a message over the limits that was held for a
        possible receive_stream: fail the connection with 1009 as if it had
        been refused at its header."""
        proto = self._proto
        if proto is None:
            return
        proto.refuse_held()
        if proto.failure is not None:
            self._on_failure(proto)

    def _stream_end_of_connection(self, item: "_Closed") -> Optional["MessageStream"]:
        if item.returned:
            raise self._closed_error()
        item.returned = True
        return None

    def _stream_in_the_way(self, timeout: Optional[float]) -> None:
        stream = self._rstream
        if stream._state != _S_ABANDONED:
            raise RuntimeError("a message stream of this WebSocket is open: read it to its end or "
                               "close it before receiving another message")
        # an abandoned stream's message is still being skipped: the next message follows it
        stream._wait(timeout, lambda: self._rstream is not stream)

    def _send_stream(self, chunks: Iterable[Any], binary: Optional[bool],
                     compress: Optional[bool]) -> None:
        """Send the chunks of ``chunks`` as one fragmented message (RFC 6455
        5.4): a frame per non-empty chunk as it is produced, then an empty
        final frame (the end is known only when the iterator is exhausted).

        Every frame goes through the connection's one writer and its
        ``write_limit`` like any send.  Pings are answered and keepalives sent
        in between (control frames may be interleaved); other greenlets' sends
        and :class:`Hub` broadcasts wait until the message has ended.
        permessage-deflate, when negotiated and not ``compress=False``, runs
        over the whole message (RSV1 on the first frame, each frame
        sync-flushed so the peer can inflate it at once).

        Raises TypeError for a chunk that is not str/bytes-like or not of the
        first chunk's kind, InvalidData for a text stream of bytes that is not
        UTF-8, and whatever the iterable raises.  Nothing sent yet: just the
        error.  Once a frame has gone out the message cannot be completed:
        the connection is closed with 1011 and the error re-raised (a half
        message is never followed by another)."""
        if getcurrent() is self._hub:
            raise RuntimeError("a stream cannot be sent from the hub (it blocks)")
        iterator = iter(chunks)  # TypeError for a non-iterable, before anything is sent
        if self._wstream is not None:
            self._wait_stream()
        proto: Protocol = self._proto  # type: ignore[assignment]  # send() ensured it
        stream = self._wstream = _SendStream(getcurrent())
        deflate = proto.deflate if compress is not False else None
        text: Optional[bool] = None if binary is None else not binary
        decoder: Any = None
        opcode = 0
        try:
            for chunk in iterator:
                cls = chunk.__class__
                if cls is str:
                    kind = True
                elif isinstance(chunk, (bytes, bytearray, memoryview)):
                    kind = False
                else:
                    raise TypeError(f"cannot stream a chunk of type {cls.__name__}: str or bytes-like")
                if stream.kind is None:
                    stream.kind = kind
                    if text is None:
                        text = kind
                elif kind != stream.kind:
                    raise TypeError("a stream's chunks must all be str or all bytes-like, not both")
                payload = chunk.encode("utf-8") if kind else chunk
                if text and not kind:
                    if decoder is None:
                        decoder = codecs.getincrementaldecoder("utf-8")()
                    try:
                        decoder.decode(payload)
                    except UnicodeDecodeError:
                        raise InvalidData("text stream is not valid UTF-8") from None
                if not len(payload):
                    continue
                proto.counts.payload_out += len(payload)  # metrics (as send_message: bytes, before compression)
                if deflate is not None:
                    payload = deflate.compress_part(payload)
                if not stream.sent:
                    opcode = OP_TEXT if text else OP_BINARY
                    pieces = proto.send_fragment(opcode, payload, False, deflate is not None)
                else:
                    pieces = proto.send_fragment(OP_CONT, payload, False)
                stream.sent = True
                self._stream_write(pieces)
            if decoder is not None:
                try:
                    decoder.decode(b"", True)
                except UnicodeDecodeError:
                    raise InvalidData("text stream ends inside a UTF-8 sequence") from None
            if not stream.sent:
                # nothing (or only empty chunks): one empty message of the stream's kind
                self._wstream = None
                self._stream_write(proto.send_message("" if text or text is None else b"",
                                                      None, compress))  # (counted there)
            else:
                self._stream_write(proto.send_fragment(OP_CONT, deflate.compress_end()
                                                       if deflate is not None else b"", True))
                proto.counts.messages_out += 1  # metrics: a streamed message counts once it has ended
        except BaseException as exc:
            if stream.sent and not self._dropped and not proto.close_sent:
                # the message cannot be finished: end the connection, never send another
                error = exc if isinstance(exc, WebSocketError) and not isinstance(exc, ConnectionClosed) \
                    else UnexpectedError("message stream failed")
                if self.failure is None:
                    self.failure = error
                self._start_close(UnexpectedError.code, "message stream failed", self._linger)
            raise
        finally:
            self._end_send_stream(stream)

    def _stream_write(self, pieces: List[Any]) -> None:
        # as send() after encoding: into the buffer whole, block above write_limit
        self._enqueue(pieces, True)
        if self._wsize > self._wblock:
            self._wait_drained()
        elif self._dropped:
            raise self._closed_error()

    def _wait_stream(self) -> None:
        """Block a data send until the fragmented message going out has ended
        (or the connection: ConnectionClosed).  No deadline of its own: the
        stream's writes have the connection's (a peer that stops reading
        fails it after ``connection_timeout``, a close after ``close_timeout``)."""
        stream: _SendStream = self._wstream  # type: ignore[assignment]  # called only while one is going out
        current = getcurrent()
        if stream.owner is current:
            raise RuntimeError("send() of the same WebSocket inside the iterable it is streaming")
        if current is self._hub:
            raise RuntimeError("cannot wait in the hub for a message stream to end")
        while self._wstream is not None and not self._dropped:
            waiter: Any = Waiter(self._hub)
            self._wstream.waiters.append(waiter)
            try:
                waiter.get()
            finally:
                waiters = stream.waiters
                if waiter in waiters:
                    waiters.remove(waiter)
            stream = self._wstream or stream
        if self._dropped:
            raise self._closed_error()

    def _end_send_stream(self, stream: "_SendStream") -> None:
        if self._wstream is stream:
            self._wstream = None
        for waiter in stream.waiters:
            self._loop.run_callback(waiter.switch, None)
        stream.waiters = []
        if not self._wbuf and self._wdrain and not self._dropped:
            self._drained()  # the Hub's refills held back during the stream

    # -- liveness --------------------------------------------------------------
    def _arm_timer(self) -> None:
        params = self._params
        interval, idle = params["ping_interval"], params["connection_timeout"]
        if self._dropped or not (interval or idle):
            return
        deadline = float("inf")
        if interval:
            deadline = self._last_ping + interval
        if idle:
            deadline = min(deadline, self._last_seen + idle)
            if self._wbuf:
                deadline = min(deadline, self._wprogress + idle)
        _scheduler(self._hub).schedule(self, deadline)

    def _on_timer(self) -> None:
        # runs in the hub, called by the _Scheduler
        proto: Protocol = self._proto  # type: ignore[assignment]  # accepted: set by _start
        if self._dropped or proto.close_sent or proto.close_received:
            return
        now = self._loop.now()
        params = self._params
        idle = params["connection_timeout"]
        if self._paused:
            self._last_seen = now  # we stopped reading, the peer is not idle
        if idle and now - self._last_seen >= idle:
            self._time_out("no frame from the peer for %s s" % idle)
            return
        if idle and self._wbuf and now - self._wprogress >= idle:
            self._time_out("the peer took no data for %s s" % idle)
            return
        interval = params["ping_interval"]
        if interval and now - self._last_ping >= interval - 0.001:
            self._last_ping = now
            self._ping_seq += 1
            self._n_pings += 1  # metrics
            if self._keepalive is not None:
                self._n_late += 1  # the previous keepalive ping is still unanswered
            payload = _PING.pack(self._ping_seq)
            self._keepalive = (payload, time.perf_counter())
            self._enqueue([proto.send_ping(payload)])
        self._arm_timer()

    def _time_out(self, why: str) -> None:
        self.failure = ConnectionTimeout(why)
        self._queue.append(_Closed(b""))
        self._stop_reading()
        self._start_close(ConnectionTimeout.code, "connection timeout", self._linger)
        self._wake()

    # -- ending ----------------------------------------------------------------
    def _linger(self) -> None:
        """After our close frame for an error: half-close, let the peer finish
        (until the closing handshake's deadline), then drop.  Avoids a reset
        that could destroy the close frame before the peer reads it."""
        if self._dropped:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop()
            return
        if self._io is not None:
            self._io.start(self._discard_input)
        # (a TLS reader goes on reading until EOF by itself)

    def _discard_input(self) -> None:
        # runs in the hub while lingering: read and drop whatever still comes
        try:
            n = self._raw.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if not n:
            self._drop()

    def _drop(self) -> None:
        """Close the TCP connection and release every resource (idempotent)."""
        if self._dropped:
            return
        self._dropped = True
        io = self._io
        if io is not None:
            io.stop()
            if io is not getattr(self._sock, "_read_event", None):
                io.close()  # our own watcher; the socket's is closed with the socket
        io = self._wio
        if io is not None:
            io.stop()
            if io is not getattr(self._sock, "_write_event", None):
                io.close()
        for timer in (self._ctimer, self._grace, self._rtimer):
            if timer is not None:
                timer.stop()
                timer.close()
        self._ctimer = self._grace = self._deferred = self._wthen = self._rtimer = None
        entry = self._entry
        if entry is not None:
            entry[2] = None  # the scheduler forgets this connection
            self._entry = None
        if self._resume is not None:
            self._resume.set()
        reader = self._reader
        if reader is not None and reader is not getcurrent():
            # Stop the reader's wait now: a socket borrowed from a server is closed
            # by that server, which must not leave a live watcher on the descriptor.
            read_event = getattr(self._sock, "_read_event", None)
            if read_event is not None:
                read_event.stop()
            reader.kill(block=False)
        proto = self._proto
        if proto is not None and proto.close_code is None:
            proto.close_code = 1006
        sock = self._sock
        try:
            # shutdown first: close() alone leaves the connection open while
            # another reference to the descriptor (a server's file object) lives
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass  # already reset by the peer, or never connected
        try:
            sock.close()
        except OSError:
            pass
        if self._wsize > self._n_whigh:  # metrics: what a stalled peer left unwritten
            self._n_whigh = self._wsize
        self._wbuf = []
        self._wsize = 0
        self._wstate = _IDLE
        self._wpong = None
        self._wdrain = None
        closed = ConnectionClosed(self.close_code or 1006, self.close_reason)
        for pending in (self._pings or {}).values():
            pending._result.set_exception(closed)
        self._pings = None
        if not self._queue or self._queue[-1].__class__ is not _Closed:
            self._queue.append(_Closed(b""))
        if self._done is not None:
            self._done.set()
        self._wake()
        if self._wwaiters:
            self._wake_writers()
        if self._n_opened:
            _metrics.closed(self)  # metrics and the DEBUG "closed" line
        callbacks, self._close_callbacks = self._close_callbacks or (), None
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                self._hub.handle_error(callback, *sys.exc_info())

    def __repr__(self) -> str:
        state = "pending" if self._proto is None else self._proto.state.value
        return f"<gws13.WebSocket {self.path or '?'} {state}>"


def _is_stream(data: Any) -> bool:
    """send()'s test for a message given as an iterable of chunks (tried only
    after str/bytes-like failed: the whole-message path pays nothing)."""
    return hasattr(data, "__iter__") and not isinstance(data, (str, bytes, bytearray, memoryview, Mapping))


class _SendStream:
    """The fragmented message a connection is sending: its greenlet, the
    sends waiting for its end, its kind (True: str chunks) and whether a
    frame went out."""

    __slots__ = ("owner", "waiters", "kind", "sent")

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.waiters: List[Any] = []
        self.kind: Optional[bool] = None
        self.sent = False


# MessageStream states
_S_WAITING, _S_OPEN, _S_ENDED, _S_DONE, _S_ABANDONED = range(5)
# bytes of unread pieces above which reading from the socket stops, and below
# which it resumes (the protocol overruns the high mark by at most one step)
_STREAM_HIGH = 1 << 18
_STREAM_LOW = 1 << 16


class MessageStream:
    """The pieces of one message, as :meth:`WebSocket.receive_stream` returns
    them: iterate over it (``str`` pieces for text, ``bytes`` for binary).
    A context manager: leaving the block closes it (see :meth:`close`), and
    so does dropping the last reference to it (a ``for`` loop that breaks).

    Iterating raises TimeoutError (the ``timeout`` given to
    ``receive_stream``, for each piece), the error that failed the
    connection (MessageTooLarge 1009, InvalidData 1007, ProtocolError...), or
    ConnectionClosed if the connection ends before the message does."""

    __slots__ = ("_sink",)

    def __init__(self, sink: "_StreamSink") -> None:
        self._sink = sink

    @property
    def text(self) -> bool:
        """True for a text message (``str`` pieces), False for binary."""
        return self._sink.text

    @property
    def received(self) -> int:
        """Characters (text) or bytes (binary) given out so far."""
        return self._sink.received

    def __iter__(self) -> "MessageStream":
        return self

    def __next__(self) -> Union[str, bytes]:
        return self._sink.next()

    def read(self) -> Union[str, bytes]:
        """The rest of the message in one ``str``/``bytes`` (as much memory as it takes)."""
        parts = [piece for piece in self]
        if self._sink.text:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def close(self) -> None:
        """Skip the rest of the message: it is read and dropped as it arrives
        (its size limit still applies) and the connection goes on with the
        next message.  Does nothing once the message has been read."""
        self._sink.close()

    def __enter__(self) -> "MessageStream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._sink.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        sink = self._sink
        state = ("waiting", "open", "ended", "done", "abandoned")[sink._state]
        return f"<gws13.MessageStream {'text' if sink.text else 'binary'} {state} {sink.received}>"


class _StreamSink:
    """A streamed message's state, shared by the protocol (which feeds it),
    the connection (``_rstream``) and the :class:`MessageStream` the
    application holds (which alone may abandon it)."""

    __slots__ = ("text", "received", "_ws", "_timeout", "_pieces", "_size", "_state")

    def __init__(self, ws: WebSocket, timeout: Optional[float], whole: Any = None) -> None:
        self._ws = ws
        self._timeout = timeout
        self.received = 0
        self._pieces: Any = collections.deque()
        self._size = 0
        self.text = False
        if whole is None:
            self._state = _S_WAITING
        else:
            self.text = whole.__class__ is str
            if whole:
                self._pieces.append(whole)
            self._state = _S_ENDED

    # the protocol's sink (runs where the input is parsed, usually the hub)
    def start(self, text: bool) -> None:
        self.text = text
        if self._state == _S_WAITING:
            self._state = _S_OPEN

    def piece(self, data: Union[str, bytes]) -> None:
        if self._state == _S_ABANDONED:
            return  # skipped
        self._pieces.append(data)
        self._size += len(data)
        ws = self._ws
        if self._size > _STREAM_HIGH and not ws._paused:
            ws._pause()  # the consumer is behind: TCP backpressure

    def end(self) -> None:
        if self._state == _S_ABANDONED:
            # skipped to its end: the connection goes on (the parser wakes the waiters)
            self._ws._rstream = None
            self._state = _S_DONE
        else:
            self._state = _S_ENDED

    def full(self) -> bool:
        return self._size > _STREAM_HIGH

    # the consumer's side
    def next(self) -> Union[str, bytes]:
        while True:
            pieces = self._pieces
            if pieces:
                data: Union[str, bytes] = pieces.popleft()
                self._size -= len(data)
                self.received += len(data)
                if self._ws._paused and self._size <= _STREAM_LOW:
                    self._refill()
                return data
            state = self._state
            if state == _S_ENDED:
                self._finish()
                raise StopIteration
            if state >= _S_DONE:
                raise StopIteration
            ws = self._ws
            proto: Protocol = ws._proto  # type: ignore[assignment]  # an open connection's
            if ws._dropped or ws.closed or proto.failure is not None:
                self._state = _S_DONE
                ws._rstream = None
                failure = ws.failure
                if isinstance(failure, WebSocketError) and not isinstance(failure, ConnectionClosed):
                    raise failure
                raise ws._closed_error()
            self._wait(self._timeout, lambda: bool(self._pieces) or self._state != _S_OPEN
                       or ws._dropped or ws.closed or proto.failure is not None)

    def close(self) -> None:
        state = self._state
        if state in (_S_WAITING, _S_OPEN):
            self._pieces.clear()
            self._size = 0
            self._state = _S_ABANDONED
            self._refill()
        elif state == _S_ENDED:
            self._pieces.clear()
            self._finish()

    def _finish(self) -> None:
        self._state = _S_DONE
        ws = self._ws
        if ws._rstream is self:
            ws._rstream = None
        self._refill()

    def _refill(self) -> None:
        """Resume reading: parse what the protocol kept while the stream was
        full, then let the socket's data in again."""
        ws = self._ws
        if ws._dropped:
            return
        proto: Protocol = ws._proto  # type: ignore[assignment]  # an open connection's
        if proto._buf and not proto.close_received:
            ws._data_received(b"")
        if ws._paused and self._size <= _STREAM_LOW and len(ws._queue) < ws._max_queue \
                and not proto.close_received and proto.failure is None:
            ws._unpause()

    def _wait_start(self) -> None:
        ws = self._ws
        proto: Protocol = ws._proto  # type: ignore[assignment]  # an open connection's
        if self._state == _S_WAITING:
            self._refill()  # input kept back (a held message) may hold the message's start
        self._wait(self._timeout, lambda: self._state != _S_WAITING or ws._dropped or ws.closed
                   or proto.failure is not None)

    def _wait(self, timeout: Optional[float], ready: Callable[[], bool]) -> None:
        ws = self._ws
        while not ready():
            _wait_woken(ws._hub, ws._waiters, timeout, "data")
