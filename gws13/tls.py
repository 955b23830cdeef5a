"""TLS over memory BIOs, for :class:`gws13.server.WebSocketServer`.

gevent's ``SSLSocket`` lets OpenSSL read the socket itself: two ``recv``
calls per TLS record (its header, then its body), at most one record per
read, and a ``sendall`` that asks the socket its buffer size first.  Here
the socket's bytes go through :class:`ssl.MemoryBIO` objects instead: one
``recv`` of up to 256 KiB feeds the incoming BIO, and as many records as
arrived are decrypted from it without another syscall; what a write
encrypts goes out with one ``send``.

A :class:`TLSSocket` has two faces:

* As a socket (``recv_into``, ``recv``, ``send``, ``sendall``, ``close``, ...)
  it blocks cooperatively, honouring the socket's timeout, like the gevent
  socket under it.  pywsgi reads the HTTP request through it, and the TLS
  handshake happens on the first read (under the handshake deadline).
* Its :attr:`~TLSSocket.tls_transport` is what a WebSocket reads and writes once
  the connection is upgraded: the non-blocking calls of a plain socket
  (``recv_into``, ``send``, ``sendmsg``, raising :class:`BlockingIOError`),
  so that the connection layer's plain-socket path (I/O watchers, direct
  writes, one outgoing buffer) runs TLS unchanged.

Writes.  Plaintext handed to the transport is encrypted (a TLS record
cannot be taken back), small pieces joined so that they share records, and
written a send per :data:`CHUNK` bytes; the first send the kernel does not
take whole ends the call, and what is left of it is kept (the backlog) and
goes out before anything else.  While a backlog is left, the call reports
the last byte it was given as not sent: the connection keeps that byte in its
buffer, so it waits for the socket to be writable, does not consider its
buffer drained, and calls again with that byte first, which is then not
encrypted a second time.  So a connection's unsent bytes are its buffer
plus one backlog of at most one chunk and one record of ciphertext.

Reads.  Records read ahead stay in the incoming BIO, where no I/O watcher
sees them; :meth:`Transport.pending` says when there are some, and the
connection reads them without waiting for the socket.
"""

from __future__ import annotations

import errno
import io
import socket
import ssl
import weakref
from typing import Any, Mapping, Optional, Sequence

from gevent import get_hub

__all__ = ["TLSSocket", "Transport", "CHUNK", "RECORD"]

#: Plaintext bytes encrypted between two sends: bounds (with one record
#: more) the ciphertext kept for a peer that does not read.
CHUNK = 1 << 16
RECORD = 1 << 14  # the most plaintext a TLS record holds
_RECV = 1 << 18  # ciphertext bytes taken from the kernel by one recv

_buffers: "weakref.WeakKeyDictionary[Any, memoryview]" = weakref.WeakKeyDictionary()


def _scratch() -> memoryview:
    # One per hub: a ciphertext read is copied into the incoming BIO before
    # anything can switch, so the connections of a hub can share it.  (A
    # connection stays in the hub it was accepted in: each keeps its hub's.)
    hub = get_hub()
    view = _buffers.get(hub)
    if view is None:
        view = _buffers[hub] = memoryview(bytearray(_RECV))
    return view


def _write_all(write: Any, data: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[write(view):]


def _would_block() -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


class TLSSocket:
    """A server-side TLS connection over a gevent socket, through memory BIOs.

    ``sock`` is the accepted gevent socket; ``context`` the server's
    :class:`ssl.SSLContext` (the standard library's kind or gevent's: only
    its settings are used, never its sockets).  The TLS handshake happens on
    the first read or write (or :meth:`do_handshake`); a peer that breaks it
    off raises :class:`ssl.SSLError` (an :class:`OSError`) there."""

    def __init__(self, sock: Any, context: ssl.SSLContext) -> None:
        self._gsock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._scratch = _scratch()
        self._handshaken = False
        self._closed = False
        self._io_refs = 0  # SocketIO readers made on this socket (as socket.socket counts them)
        #: the non-blocking face, for the connection layer
        self.tls_transport = Transport(self)

    # -- the blocking face (pywsgi, the HTTP request, the 101) -----------------
    def do_handshake(self) -> None:
        """Run the TLS handshake to its end (blocking cooperatively)."""
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._push_all()
                self._fill()
        self._handshaken = True
        self._push_all()  # its last flight, and TLS 1.3's session tickets

    def _fill(self) -> None:
        """Wait for ciphertext and put it in the incoming BIO (EOF too)."""
        scratch = self._scratch
        n = self._gsock.recv_into(scratch)
        if n:
            self._incoming.write(scratch[:n])
        else:
            self._incoming.write_eof()

    def _push_all(self) -> None:
        """Send every byte of ciphertext there is (blocking cooperatively)."""
        transport = self.tls_transport
        if transport._backlog is not None:
            self._gsock.sendall(transport._backlog)
            transport._backlog = None
        data = self._outgoing.read()
        if data:
            self._gsock.sendall(data)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if not self._handshaken:
            self.do_handshake()
        view = memoryview(buffer).cast("B")
        want = nbytes or len(view)
        if not want:
            return 0
        while True:
            try:
                n: Any = self._ssl.read(want, view)  # (a count when given a buffer)
                return int(n)
            except ssl.SSLWantReadError:
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0  # close_notify, or the TCP connection ended (as suppress_ragged_eofs)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        buffer = bytearray(bufsize)
        return bytes(buffer[:self.recv_into(buffer)])

    def sendall(self, data: Any, flags: int = 0) -> None:
        if not self._handshaken:
            self.do_handshake()
        _write_all(self._ssl.write, memoryview(data).cast("B"))
        self._push_all()

    def send(self, data: Any, flags: int = 0) -> int:
        self.sendall(data)
        return len(data)

    # -- the socket's other calls ----------------------------------------------
    def makefile(self, mode: str = "r", buffering: Optional[int] = None) -> Any:
        """A buffered binary reader (pywsgi's handler reads requests with one)."""
        if mode not in ("r", "rb"):
            raise ValueError(f"unsupported mode {mode!r}: a TLSSocket makes readers only")
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]  # has what SocketIO uses of a socket
        self._io_refs += 1
        size = buffering if buffering and buffering > 0 else io.DEFAULT_BUFFER_SIZE
        return io.BufferedReader(raw, size)

    def fileno(self) -> int:
        return int(self._gsock.fileno())

    def settimeout(self, timeout: Optional[float]) -> None:
        self._gsock.settimeout(timeout)

    def gettimeout(self) -> Optional[float]:
        timeout: Optional[float] = self._gsock.gettimeout()
        return timeout

    def setsockopt(self, *args: Any) -> None:
        self._gsock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._gsock.getsockopt(*args)

    def getpeername(self) -> Any:
        return self._gsock.getpeername()

    def getsockname(self) -> Any:
        return self._gsock.getsockname()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    def version(self) -> Optional[str]:
        return self._ssl.version()

    def selected_alpn_protocol(self) -> Optional[str]:
        return self._ssl.selected_alpn_protocol()

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, how: int) -> None:
        self._gsock.shutdown(how)

    def _decref_socketios(self) -> None:
        # a SocketIO made on this socket was closed (socket.socket's protocol)
        if self._io_refs > 0:
            self._io_refs -= 1

    def close(self) -> None:
        # no close_notify: the WebSocket closing handshake (or its absence)
        # already said how the connection ended, as with gevent's socket
        if not self._closed:
            self._closed = True
            self.tls_transport._backlog = None
            self._gsock.close()


class Transport:
    """The non-blocking face of a :class:`TLSSocket`: what the connection
    layer calls instead of a plain socket's ``recv_into``/``send``/``sendmsg``."""

    __slots__ = ("_raw", "_ssl", "_incoming", "_outgoing", "_scratch", "_backlog", "_owed")

    def __init__(self, tls: TLSSocket) -> None:
        self._raw: Any = tls._gsock._sock  # the non-blocking socket under gevent's
        self._ssl = tls._ssl
        self._incoming = tls._incoming
        self._outgoing = tls._outgoing
        self._scratch = tls._scratch
        self._backlog: Optional[memoryview] = None  # ciphertext the kernel has not taken yet
        self._owed = False  # the last byte of the last write was reported unsent (see the module)

    def pending(self) -> bool:
        """Decrypted or undecrypted bytes are waiting here, not in the kernel."""
        return bool(self._incoming.pending or self._ssl.pending())

    def recv_into(self, view: Any, size: int = 0) -> int:
        """Decrypt into ``view``: every record available, up to ``size`` bytes;
        0 at the end of the connection.  BlockingIOError when there is
        nothing to decrypt yet."""
        sslobj = self._ssl
        incoming = self._incoming
        size = size or len(view)
        got = 0
        n: Any  # (read gives a count when given a buffer)
        while got < size:
            # (asked first: an SSLWantReadError per read costs more than the question)
            if incoming.pending or sslobj.pending():
                try:
                    n = sslobj.read(size - got, view[got:] if got else view)
                except ssl.SSLWantReadError:
                    n = None  # part of a record: the rest is still in the kernel
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
                if n is not None:
                    if not n:
                        break
                    got += n
                    continue
            if got:
                break
            scratch = self._scratch
            n = self._raw.recv_into(scratch)  # BlockingIOError: nothing came
            if n:
                incoming.write(scratch[:n])
            else:
                incoming.write_eof()
                if not incoming.pending:
                    break  # the end of the connection (all that came before it was read)
        if self._outgoing.pending:
            self._flush()  # a reply the TLS layer makes by itself (a key update)
        return got

    def send(self, data: Any) -> int:
        return self.sendmsg((data,))

    def sendmsg(self, pieces: Sequence[Any]) -> int:
        """Encrypt the pieces and write them, a send per :data:`CHUNK` bytes,
        until the kernel does not take one whole (the backlog) or all are
        out; returns how many plaintext bytes count as sent (see the module
        on the last byte held back).  BlockingIOError when earlier
        ciphertext is still waiting and none of it could be written."""
        backlog = self._backlog
        if backlog is not None and self._flush():
            if self._backlog is backlog:
                raise _would_block()
            return 0  # progress, but nothing more of this data is out yet
        taken = 0
        if self._owed:
            # the first byte given is the one held back last time: its
            # ciphertext has just gone out
            self._owed = False
            taken = 1
            pieces = [memoryview(pieces[0])[1:], *pieces[1:]]
        # Small pieces (frame headers, small messages) are joined before they
        # are encrypted, up to a full record, so that they share records: a
        # write makes at least one record of its own.  A send per CHUNK of
        # plaintext, for as long as the kernel takes all of it.
        write = self._ssl.write
        stage = bytearray()
        since = 0  # plaintext encrypted since the last send
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            view = memoryview(piece).cast("B")
            if len(stage) + len(view) <= RECORD and (stage or i < last):
                stage += view  # (a lone small piece, the usual reply, is written as it is)
                continue
            if stage:
                fill = RECORD - len(stage)
                stage += view[:fill]
                view = view[fill:]
                _write_all(write, stage)
                since += RECORD
                taken += RECORD
                stage = bytearray()
            while view:
                part = view[:CHUNK]
                _write_all(write, part)
                since += len(part)
                taken += len(part)
                view = view[len(part):]
                if since >= CHUNK:
                    if self._flush():
                        self._owed = True
                        return taken - 1
                    since = 0
        if stage:
            _write_all(write, stage)
            taken += len(stage)
        if self._flush():
            self._owed = True
            return taken - 1
        return taken

    def _flush(self) -> bool:
        """Write the backlog and new ciphertext, as much as the kernel takes
        now; True if some is left (the backlog)."""
        backlog = self._backlog
        fresh = self._outgoing.read() if self._outgoing.pending else b""
        data: Any = fresh
        if backlog is not None:
            data = bytes(backlog) + fresh if fresh else backlog
        if not data:
            return False
        try:
            sent = self._raw.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            self._backlog = None
            return False
        if sent or data is not backlog:
            self._backlog = memoryview(data)[sent:]
        return True


def server_context(ssl_args: Mapping[str, Any]) -> Optional[ssl.SSLContext]:
    """The context a pywsgi server's TLS arguments describe, or None when
    they hold something this module does not map (then gevent's own TLS
    socket serves the connection, as before)."""
    args = dict(ssl_args)
    for ignored in ("server_side", "do_handshake_on_connect", "suppress_ragged_eofs"):
        args.pop(ignored, None)
    context: Optional[ssl.SSLContext] = args.pop("ssl_context", None)
    if context is None:
        certfile, keyfile = args.pop("certfile", None), args.pop("keyfile", None)
        if certfile is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        cert_reqs = args.pop("cert_reqs", ssl.CERT_NONE)
        ca_certs = args.pop("ca_certs", None)
        if ca_certs:
            context.load_verify_locations(ca_certs)
        context.verify_mode = cert_reqs
        ciphers = args.pop("ciphers", None)
        if ciphers:
            context.set_ciphers(ciphers)
    return None if args else context

