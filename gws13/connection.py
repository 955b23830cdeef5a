"""The gevent connection layer: one :class:`WebSocket` per upgraded socket.

Reading is event driven.  On a plain socket a libev I/O watcher runs the
protocol in the hub as soon as bytes arrive, so pings are answered, pongs and
close frames are processed and the idle timer is refreshed whether or not the
application is calling ``receive``; complete messages wait in a bounded queue
(when it is full the watcher stops and TCP backpressure does the rest).  A
blocked ``receive`` is woken by a direct switch, so a message costs no more
greenlet switches than a raw socket read.  TLS sockets keep decrypted bytes
inside the SSL object, out of sight of an I/O watcher; there one small reader
greenlet does the same work with blocking reads.

Pings and the idle timeout share one libev timer per connection.  Sends are
serialised by a lock so concurrent greenlets never interleave frames.
"""

from __future__ import annotations

import heapq
import socket
import struct
import sys
import time
import weakref
from typing import Any, Dict, Iterator, Optional, Union

import gevent
from gevent.event import AsyncResult, Event
from gevent.hub import Waiter, get_hub, getcurrent
from gevent.lock import Semaphore

from .exceptions import ConnectionClosed, ConnectionTimeout, WebSocketError
from .protocol import Close, Ping, Pong, Protocol

__all__ = ["WebSocket", "PendingPing"]

_PING = struct.Struct("!Q")
_BATCH = 1 << 16  # bytes of batched frames that trigger a write at once
_READ_SIZE = 1 << 18  # one recv; the buffer is shared by a hub's connections
_READ_BURST = 4  # recvs in one readiness callback while the buffer comes back full
_DIRECT_READS = 4  # reads a receiving greenlet may make itself between two waits in the hub
_BATCH_ITEM = 4096  # messages up to this length (chars or bytes) may be batched
_BATCHABLE = (str, bytes)
_buffers: "weakref.WeakKeyDictionary[Any, memoryview]" = weakref.WeakKeyDictionary()


def _read_buffer(hub) -> memoryview:
    # Hub callbacks never overlap and the protocol copies what it keeps, so all
    # plain-socket connections of one hub share one receive buffer.
    view = _buffers.get(hub)
    if view is None:
        view = _buffers[hub] = memoryview(bytearray(_READ_SIZE))
    return view


class _Scheduler:
    """One libev timer per hub for every connection's keepalive ping and idle
    deadline: a heap of ``(deadline, seq, ws)``.  With 10,000 connections this
    is 10,000 heap entries instead of 10,000 timers re-created every interval.
    A connection has one live entry (``ws._deadline``); entries of connections
    that were dropped are skipped when they come up."""

    __slots__ = ("_loop", "_heap", "_timer", "_at", "_seq")

    def __init__(self, loop) -> None:
        self._loop = loop
        self._heap: list = []
        self._timer: Any = None
        self._at: Optional[float] = None
        self._seq = 0

    def schedule(self, ws: "WebSocket", deadline: float) -> None:
        self._seq += 1
        ws._deadline = deadline
        heapq.heappush(self._heap, (deadline, self._seq, ws))
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
            deadline, _, ws = heapq.heappop(heap)
            if ws._deadline != deadline:
                continue  # dropped, or a stale entry
            ws._deadline = None
            try:
                ws._on_timer()
            except Exception:
                get_hub().handle_error(ws, *sys.exc_info())
        self._at = None
        if heap:
            self._arm(heap[0][0])


_schedulers: "weakref.WeakKeyDictionary[Any, _Scheduler]" = weakref.WeakKeyDictionary()


def _scheduler(hub) -> _Scheduler:
    scheduler = _schedulers.get(hub)
    if scheduler is None:
        scheduler = _schedulers[hub] = _Scheduler(hub.loop)
    return scheduler


class _Closed:
    """Queue sentinel: the connection ended; ``payload`` is the peer's close body."""

    __slots__ = ("payload", "reported")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.reported = False


class PendingPing:
    """Returned by :meth:`WebSocket.ping`; :meth:`wait` gives the round trip."""

    __slots__ = ("payload", "sent", "_result")

    def __init__(self, payload: bytes, sent: float) -> None:
        self.payload = payload
        self.sent = sent
        self._result = AsyncResult()

    def wait(self, timeout: Optional[float] = None) -> float:
        """Round-trip time in seconds.  Raises TimeoutError, or ConnectionClosed
        if the connection ended before the pong came."""
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout:
            raise TimeoutError("no pong within %s s" % timeout) from None

    @property
    def done(self) -> bool:
        return self._result.ready()


class WebSocket:
    """An open WebSocket connection (server or client side).

    Blocking calls cooperate with gevent.  ``receive`` returns ``str`` for
    text, ``bytes`` for binary and ``None`` once the connection is closed;
    ``send`` is safe to call from many greenlets at once.
    """

    # slots: thousands of idle connections are the common case, keep each small
    __slots__ = (
        "environ", "subprotocol", "extensions", "latency", "failure", "__weakref__",
        "_sock", "_client", "_params", "_proto", "_acceptor", "_queue", "_waiters", "_send_lock",
        "_done", "_pings", "_ping_seq", "_io", "_reader", "_resume", "_paused", "_deadline",
        "_dropped", "_deferred", "_grace", "_close_callbacks", "_out", "_out_size",
        "_flush_scheduled", "_max_queue", "_drop_pings", "_hub", "_loop", "_last_seen",
        "_last_ping", "_keepalive", "_raw", "_rbuf", "_direct_reads",
    )

    def __init__(self, sock: Optional[socket.socket] = None, *, environ: Optional[dict] = None,
                 client: bool = False, params: Optional[Dict[str, Any]] = None) -> None:
        self.environ: dict = environ if environ is not None else {}
        self.subprotocol: Optional[str] = None
        self.extensions: Optional[str] = None
        #: round trip of the last ping answered, in seconds (None before the first)
        self.latency: Optional[float] = None
        self.failure: Optional[WebSocketError] = None
        self._sock = sock
        self._client = client
        self._params = params
        self._proto: Optional[Protocol] = None
        # set by integrations for sockets that are not upgraded yet (lazy accept)
        self._acceptor: Any = None
        # messages for the application, then at most one _Closed (a short list:
        # cheaper per idle connection than a deque)
        self._queue: list = []
        self._waiters: list = []
        self._send_lock = Semaphore()
        # created when first needed: most connections never use them
        self._done: Optional[Event] = None  # set when the connection is dropped
        self._pings: Optional[Dict[bytes, PendingPing]] = None  # in the order sent
        self._ping_seq = 0
        self._io: Any = None
        self._reader: Any = None
        self._resume: Optional[Event] = None
        self._paused = False
        self._direct_reads = _DIRECT_READS
        # this connection's entry in its hub's _Scheduler (None: not scheduled)
        self._deadline: Optional[float] = None
        # the last keepalive ping: (payload, time sent)
        self._keepalive: Optional[tuple] = None
        self._dropped = False
        # the close reply or failure close that waits for the application to take
        # the messages that arrived before it (see _defer)
        self._deferred: Any = None
        self._grace: Any = None
        self._close_callbacks: Optional[list] = None
        # small frames held back while more input is queued, written in one
        # syscall when this greenlet next yields (see send)
        self._out: list = []
        self._out_size = 0
        self._flush_scheduled = False

    # -- set-up ----------------------------------------------------------------
    def _start(self, sock: socket.socket, protocol: Protocol, params: Dict[str, Any],
               pending: bytes = b"") -> None:
        """Begin I/O on an upgraded socket.  ``pending`` holds bytes already read
        past the handshake."""
        self._sock = sock
        self._proto = protocol
        self._params = params
        self._max_queue = params["max_queue"]
        self._drop_pings = params["drop_incoming_pings"]
        hub = self._hub = get_hub()
        self._loop = hub.loop
        self._last_seen = self._last_ping = self._loop.now()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a socketpair in tests, a Unix socket)
        raw = getattr(sock, "_sock", None)
        if raw is not None and not hasattr(sock, "_sslobj"):
            self._raw = raw
            self._rbuf = _read_buffer(hub)
            # the socket's own read watcher (nothing else waits on it while
            # this one reads): one libev watcher less per connection
            io = getattr(sock, "_read_event", None)
            if io is None or io.active or io.callback is not None:
                io = self._loop.io(sock.fileno(), 1)
            self._io = io
            io.start(self._on_readable)
        else:
            self._raw = None
            self._resume = Event()
            self._resume.set()
            self._reader = gevent.spawn(self._read_loop)
        self._arm_timer()
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
        return proto

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
        return env.get("SCRIPT_NAME", "") + path if "SCRIPT_NAME" in env else path

    @property
    def origin(self) -> str:
        return self.environ.get("HTTP_ORIGIN", "")

    @property
    def version(self) -> str:
        """The request's ``Sec-WebSocket-Version`` header (``"13"``), as gevent-websocket has it."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_VERSION", "")

    @property
    def protocol(self) -> Optional[str]:
        """The request's ``Sec-WebSocket-Protocol`` header as the client sent it (the
        offer, None without one), as gevent-websocket has it; the subprotocol chosen is
        :attr:`subprotocol`."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")

    def receive(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        """Next message: ``str`` (text) or ``bytes`` (binary); ``None`` once closed.

        Raises TimeoutError when ``timeout`` seconds pass without a message."""
        item = self._next(timeout)
        return None if item.__class__ is _Closed else item

    def _next(self, timeout: Optional[float]):
        if self._proto is None:
            self._ensure()
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
            waiter = Waiter(self._hub)
            self._waiters.append(waiter)
            timer = gevent.Timeout._start_new_or_dummy(timeout) if timeout is not None else None
            try:
                waiter.get()
            except BaseException as exc:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # woken and interrupted at once
                if timer is not None and exc is timer:
                    raise TimeoutError("no message within %s s" % timeout) from None
                raise
            finally:
                if timer is not None:
                    timer.cancel()
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

    def send(self, data: Union[str, bytes, bytearray, memoryview], binary: Optional[bool] = None,
             compress: Optional[bool] = None) -> None:
        """Send one message: ``str`` as text, bytes-like as binary (``binary``
        forces the type; ``compress=False`` skips permessage-deflate).

        Raises ConnectionClosed once the connection is closing or closed."""
        proto = self._proto
        if proto is None:
            proto = self._ensure()
        if (self._queue and self._raw is not None and data.__class__ in _BATCHABLE
                and len(data) <= _BATCH_ITEM):
            # More messages are already waiting for the application, which will
            # answer them before it blocks: batch the answers into one write,
            # made when this greenlet yields to the hub (or the batch is big).
            # Encoding and queueing happen with no switch in between, so frames
            # keep the order of a compressor's shared context.
            for piece in proto.send_message(data, binary, compress):
                self._out.append(piece)
                self._out_size += len(piece)
            if self._out_size < _BATCH:
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.run_callback(self._flush_batch)
                return
            with self._send_lock:
                self._write(())
            return
        lock = self._send_lock
        if self._raw is not None and not self._out and not lock.locked():
            # Nothing is being written: a frame encoded and handed to a
            # non-blocking send with no switch in between cannot interleave with
            # another, nor overtake one (compressed frames keep their order).
            pieces = proto.send_message(data, binary, compress)
            if len(pieces) == 1:
                frame = pieces[0]
                try:
                    sent = self._raw.send(frame)
                except OSError:
                    sent = 0  # _write below retries, waits or reports it
                if sent == len(frame):
                    return
                pieces = [memoryview(frame)[sent:]]
            with lock:
                self._write(pieces)
            return
        with lock:
            # encoded under the lock: with permessage-deflate the order frames are
            # compressed in must be the order they are written in
            self._write(proto.send_message(data, binary, compress))

    def _take_out(self) -> bytes:
        out = b"".join(self._out)
        self._out = []
        self._out_size = 0
        return out

    def _write(self, pieces) -> None:
        """Write batched frames, then ``pieces``.  The caller holds the send lock."""
        if self._out:
            pieces = [self._take_out(), *pieces]
        try:
            raw = self._raw
            if raw is None:
                for piece in pieces:
                    self._sock.sendall(piece)
                return
            # usually the kernel takes it all at once, header and payload in one
            # syscall: skip gevent's sendall machinery unless it does not
            try:
                if len(pieces) == 1:
                    sent = raw.send(pieces[0])
                    if sent == len(pieces[0]):
                        return
                else:
                    sent = raw.sendmsg(pieces) if pieces else 0
            except (BlockingIOError, InterruptedError):
                sent = 0
            for piece in pieces:
                size = len(piece)
                if sent >= size:
                    sent -= size
                    continue
                self._sock.sendall(memoryview(piece)[sent:] if sent else piece)
                sent = 0
        except OSError:
            self._lost()
            raise ConnectionClosed(1006, "connection lost while sending") from None

    def _flush_batch(self) -> None:
        # runs in the hub once the sending greenlet has yielded
        self._flush_scheduled = False
        if self._out and not self._dropped:
            self._send_soon(b"")

    def ping(self, data: bytes = b"") -> PendingPing:
        """Send a ping; the returned object's ``wait(timeout)`` gives the round trip."""
        proto = self._ensure()
        if isinstance(data, str):
            data = data.encode("utf-8")
        data = bytes(data)
        pending = PendingPing(data, time.perf_counter())
        frame = proto.send_ping(data)
        if self._pings is None:
            self._pings = {}
        self._pings[data] = pending
        with self._send_lock:
            self._write([frame])
        return pending

    def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        frame = self._ensure().send_pong(bytes(data))
        with self._send_lock:
            self._write([frame])

    def close(self, code: Optional[int] = 1000, reason: str = "") -> None:
        """Start (or answer) the closing handshake and close the TCP connection.

        Waits at most ``close_timeout`` seconds for the peer's close frame (0:
        does not wait).  Closing a closed connection does nothing."""
        proto = self._proto
        if proto is None:
            return  # never upgraded: there is nothing to close
        timeout = self._params["close_timeout"]
        if self._done is None:
            self._done = Event()  # before our close frame goes out: the answer sets it
        if not proto.close_sent and not proto.eof:
            frame = proto.send_close(code, reason)
            try:
                with gevent.Timeout(timeout or None, False):
                    with self._send_lock:
                        self._write([frame])
            except ConnectionClosed:
                pass
            if proto.close_received:
                self._drop()  # that was our answer to the peer's close
                return
        if timeout:
            # the peer's close frame, our own pending reply or an error's lingering
            # close all end in _drop, which sets _done
            if not self._dropped:
                self._done.wait(timeout)
        self._drop()

    def add_close_callback(self, callback) -> None:
        """Call ``callback(ws)`` once the connection is closed (at once if it is).
        It runs in the hub: it must not block."""
        if self._dropped:
            callback(self)
        else:
            if self._close_callbacks is None:
                self._close_callbacks = []
            self._close_callbacks.append(callback)

    def fail(self, error: WebSocketError) -> None:
        """Close with ``error.code`` because of ``error`` (used by with_websocket)."""
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
            view = self._rbuf if proto._frame is None else proto.payload_buffer() or self._rbuf
            try:
                n = raw.recv_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if not n:
                self._lost()
                return
            self._data_received(view[:n])
            if n < len(view) or self._dropped:
                return

    def _read_loop(self) -> None:
        view = memoryview(bytearray(1 << 14))
        sock = self._sock
        proto, queue = self._proto, self._queue
        while not self._dropped:
            if len(queue) >= self._max_queue and queue[-1].__class__ is not _Closed:
                self._pause()  # as in _on_readable; after the end, read on until EOF
            if self._paused:
                self._resume.wait()
                continue
            target = proto.payload_buffer() or view
            try:
                n = sock.recv_into(target)
            except OSError:
                n = 0
            if not n:
                self._lost()
                return
            self._data_received(target[:n])

    def _data_received(self, data) -> None:
        proto = self._proto
        self._last_seen = self._loop.now()
        queue = self._queue
        # messages go straight onto the queue; the events are control frames
        for event in proto.receive_data(data, queue):
            cls = event.__class__
            if cls is Ping:
                if not self._drop_pings and not proto.close_sent:
                    self._send_soon(proto.send_pong(event.payload))
            elif cls is Pong:
                self._on_pong(event.payload)
            else:  # Close
                self._on_close(event)
        if proto.failure is not None:
            self._on_failure(proto)
        self._wake()

    def _on_pong(self, payload: bytes) -> None:
        keepalive = self._keepalive
        if keepalive is not None and keepalive[0] == payload:
            self.latency = time.perf_counter() - keepalive[1]
            self._keepalive = None
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
                break

    def _on_close(self, event: Close) -> None:
        proto = self._proto
        self._queue.append(_Closed(event.payload))
        self._stop_reading()
        if proto.close_sent:
            if self._done is not None:
                self._done.set()  # our close was answered: close() drops the TCP connection
        else:
            # echo the peer's code (no reason), then the server closes TCP first
            self._defer(self._reply_close)

    def _reply_close(self) -> None:
        # echo the peer's code (no reason); the server closes TCP first
        proto = self._proto
        if proto.close_sent or self._dropped:
            return
        code = proto.close_code
        reply = proto.send_close(code if code != 1005 else None)
        self._send_soon(reply, then=self._drop if not self._client else self._linger)

    def _on_failure(self, proto: Protocol) -> None:
        if self.failure is None:
            self.failure = proto.failure
        self._queue.append(_Closed(b""))
        self._stop_reading()
        self._defer(self._send_failure)

    def _send_failure(self) -> None:
        proto = self._proto
        if proto.close_sent or self._dropped:
            return
        error = proto.failure
        self._send_soon(proto.send_close(error.code, error.reason), then=self._linger)

    def _defer(self, action) -> None:
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
        if self._io is not None:
            self._io.stop()
        else:
            self._resume.clear()

    def _unpause(self) -> None:
        self._paused = False
        if self._dropped:
            return
        if self._io is not None:
            self._io.start(self._on_readable)
        else:
            self._resume.set()

    def _stop_reading(self) -> None:
        if self._io is not None:
            self._io.stop()

    # -- writing from the hub --------------------------------------------------
    def _send_soon(self, data: bytes, then=None) -> None:
        """Write batched frames and ``data`` without blocking the caller (which
        may be the hub), then call ``then``.  Goes straight to the socket when
        it can, else hands the rest to a greenlet."""
        if self._raw is not None and self._send_lock.acquire(blocking=False):
            if self._out:
                data = self._take_out() + data
            try:
                sent = self._raw.send(data) if data else 0
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._send_lock.release()
                self._lost()
                return
            if sent == len(data):
                self._send_lock.release()
                if then is not None:
                    then()
                return
            gevent.spawn(self._finish_send, data[sent:], then, True)
        else:
            gevent.spawn(self._finish_send, data, then, False)

    def _finish_send(self, data: bytes, then, locked: bool) -> None:
        if not locked:
            self._send_lock.acquire()
        try:
            with gevent.Timeout(self._params["close_timeout"] or None, False):
                self._write([data] if data else ())
        except ConnectionClosed:
            pass
        finally:
            self._send_lock.release()
        if then is not None:
            then()

    # -- liveness --------------------------------------------------------------
    def _arm_timer(self) -> None:
        params = self._params
        interval, idle = params["ping_interval"], params["connection_timeout"]
        if self._dropped or not (interval or idle):
            return
        deadlines = []
        if interval:
            deadlines.append(self._last_ping + interval)
        if idle:
            deadlines.append(self._last_seen + idle)
        _scheduler(self._hub).schedule(self, min(deadlines))

    def _on_timer(self) -> None:
        # runs in the hub, called by the _Scheduler
        proto = self._proto
        if self._dropped or proto.close_sent or proto.close_received:
            return
        now = self._loop.now()
        params = self._params
        idle = params["connection_timeout"]
        if self._paused:
            self._last_seen = now  # we stopped reading, the peer is not idle
        if idle and now - self._last_seen >= idle:
            error = ConnectionTimeout("no frame from the peer for %s s" % idle)
            self.failure = error
            self._queue.append(_Closed(b""))
            self._stop_reading()
            self._send_soon(proto.send_close(error.code, "connection timeout"), then=self._linger)
            self._wake()
            return
        interval = params["ping_interval"]
        if interval and now - self._last_ping >= interval - 0.001:
            self._last_ping = now
            self._ping_seq += 1
            payload = _PING.pack(self._ping_seq)
            self._keepalive = (payload, time.perf_counter())
            self._send_soon(proto.send_ping(payload))
        self._arm_timer()

    # -- ending ----------------------------------------------------------------
    def _linger(self) -> None:
        """After our close frame for an error: half-close, let the peer finish
        (bounded by close_timeout), then drop.  Avoids a reset that could
        destroy the close frame before the peer reads it."""
        if self._dropped:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop()
            return
        gevent.spawn(self._drain_then_drop)

    def _drain_then_drop(self) -> None:
        sock = self._sock
        with gevent.Timeout(self._params["close_timeout"] or 0.001, False):
            try:
                while sock.recv(1 << 14):
                    pass
            except OSError:
                pass
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
        self._deadline = None  # the scheduler skips this connection's entry
        if self._resume is not None:
            self._resume.set()
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            # Stop the reader's wait now: a socket borrowed from a server is closed
            # by that server, which must not leave a live watcher on the descriptor.
            read_event = getattr(self._sock, "_read_event", None)
            if read_event is not None:
                read_event.stop()
            reader.kill(block=False)
        proto = self._proto
        if proto is not None and proto.close_code is None:
            proto.close_code = 1006
        try:
            self._sock.close()
        except OSError:
            pass
        closed = ConnectionClosed(self.close_code or 1006, self.close_reason)
        for pending in (self._pings or {}).values():
            pending._result.set_exception(closed)
        self._pings = None
        if not self._queue or self._queue[-1].__class__ is not _Closed:
            self._queue.append(_Closed(b""))
        if self._done is not None:
            self._done.set()
        self._wake()
        callbacks, self._close_callbacks = self._close_callbacks or (), None
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                self._hub.handle_error(callback, *sys.exc_info())

    def __repr__(self) -> str:
        state = "pending" if self._proto is None else self._proto.state.value
        return f"<gws13.WebSocket {self.path or '?'} {state}>"
