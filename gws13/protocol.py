"""The RFC 6455 protocol as a state machine without I/O.

Feed it bytes with :meth:`Protocol.receive_data`, get events back; ask it for
the bytes of outgoing frames with the ``send_*`` methods.  It enforces every
MUST of RFC 6455 on incoming data: masking, reserved bits, opcodes, control
frame rules, continuation order, close codes, UTF-8 (incrementally, so a bad
byte fails the connection before the rest of the message arrives) and the size
limits (from the frame header, before any payload is buffered).
"""

from __future__ import annotations

import codecs
import enum
import os
import sys
from typing import Any, Callable, List, NoReturn, Optional, Tuple, Union

from .exceptions import (ConnectionClosed, InvalidData, MessageTooLarge, ProtocolError,
                         ReservedBitsNotSupported, WebSocketError)
from .frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Counters, apply_mask,
                     encode_close, encode_header, frame_small, new_payload, parse_close, scan_small,
                     unmask_into)

__all__ = ["State", "Message", "Ping", "Pong", "Close", "Event", "Protocol"]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_JOIN = 1 << 14  # payloads below this are joined to their header: one write, one copy
# Pieces of a fragmented message shorter than this are merged with the piece
# before them, so that a message costs about its size whatever its
# fragmentation (one object and one list slot per 1-byte fragment cost ~130
# bytes a byte); longer pieces are kept as they are and joined once at the end.
_COALESCE = 1024
# A fragmented message may have at most max_message_size + _SPARE_FRAMES frames
# (see the Protocol docstring).
_SPARE_FRAMES = 128
# Bytes of compressed data a frame may add, beyond _deflate_bound of the
# message's limit, for its share of flush markers and block headers.
_FRAME_DEFLATE_SLACK = 16
# unmasked headers of whole text and binary frames of 0-125 bytes, by opcode
_SMALL_HEADERS = {op: [bytes((0x80 | op, n)) for n in range(126)] for op in (OP_TEXT, OP_BINARY)}


class _Hold:
    """The sink of a held message (Protocol.hold_oversized): always full."""

    __slots__ = ()

    def full(self) -> bool:
        return True


_HOLD = _Hold()


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"   # one close frame went one way
    CLOSED = "closed"     # both close frames exchanged, or the stream ended


class Message:
    """A complete data message: ``data`` is ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: Union[str, bytes]) -> None:
        self.data = data

    @property
    def type(self) -> str:
        return "text" if isinstance(self.data, str) else "binary"

    def __repr__(self) -> str:
        return f"Message({self.data[:40]!r}{'...' if len(self.data) > 40 else ''})"


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"Ping({self.payload!r})"


class Pong(Ping):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"Pong({self.payload!r})"


class Close:
    """The peer's close frame: parsed ``code``/``reason`` and the raw ``payload``."""

    __slots__ = ("code", "reason", "payload")

    def __init__(self, code: int, reason: str, payload: bytes) -> None:
        self.code, self.reason, self.payload = code, reason, payload

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"


Event = Union[Message, Ping, Pong, Close]


def _deflate_bound(n: int) -> int:
    """The most bytes of deflate data a compressor makes of ``n`` bytes.

    zlib's own worst case (``deflateBound()`` for non-default settings: fixed
    Huffman codes with 9-bit literals, about 13.7%, as zlib emits when a small
    window rules out stored blocks; stored blocks cost at most about 4%), plus
    64 bytes for block headers and the flush marker.  No deflate stream a
    real compressor writes for ``n`` bytes is longer, so a compressed frame
    longer than this is refused from its header."""
    return n + (n >> 3) + (n >> 8) + (n >> 9) + 64


def _whole(text: bool, payload: bytes) -> Union[str, bytes]:
    """The data of one unfragmented, uncompressed frame."""
    if text:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidData("text message is not valid UTF-8") from None
    return payload


class Protocol:
    """One side of a WebSocket connection.

    ``client`` selects the side (clients mask their frames and require unmasked
    ones).  ``deflate`` is a negotiated permessage-deflate object (see
    :mod:`gws13.deflate`) or None.

    Limits are inclusive, apply to incoming data only, and are about the
    application's data: a breach fails the connection with
    :class:`~gws13.MessageTooLarge` (close code 1009).

    ``max_frame_size``
        bytes of data in one frame.  An uncompressed frame is refused from its
        header.  A compressed frame's limit is on what it inflates to: it is
        refused from its header when its length exceeds the most deflate
        makes of ``max_frame_size`` bytes (``_deflate_bound``: about
        ``1.13 n + 64``, zlib's worst case), else as soon as
        inflating it gives more than ``max_frame_size`` bytes.
    ``max_message_size``
        bytes of a message's data, all fragments together, after
        decompression.  Uncompressed, the header of the frame that would
        exceed it is refused; compressed, inflating stops one byte past it.
        A compressed message is also refused once its compressed data
        exceed ``_deflate_bound(max_message_size)`` plus 16 bytes a frame.
    fragments
        a message may have at most ``max_message_size + 128`` frames: as many
        as it could have if every fragment carried one byte, plus 128 empty
        ones.  So a message costs at most about its size to receive, however
        it is fragmented, and an endless stream of empty fragments ends.

    A fragmented message is reassembled in memory of about its size: small
    fragments are merged as they arrive.

    After a violation :attr:`failure` holds the error (its ``code`` is the close
    code) and further input is ignored: the caller should send
    ``send_close(failure.code)`` and close the TCP connection.
    """

    __slots__ = ("client", "max_frame_size", "max_message_size", "deflate", "close_sent",
                 "close_received", "eof", "close_code", "close_reason", "failure", "_buf", "_op",
                 "_compressed", "_parts", "_size", "_decoder", "_frame", "_frames", "_wire",
                 "_inflated", "_sink", "_limits", "hold_oversized", "counts")

    def __init__(self, *, client: bool = False, max_frame_size: int = 2 ** 20,
                 max_message_size: int = 2 ** 20, deflate: Any = None) -> None:
        self.client = client
        self.max_frame_size = max_frame_size
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.close_sent = False
        self.close_received = False
        self.eof = False
        #: the close code and reason the connection ended with (1006: no close frame)
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.failure: Optional[WebSocketError] = None
        self._buf = bytearray()
        # the message being assembled
        self._op: Optional[int] = None
        self._compressed = False
        self._parts: List[Any] = []
        self._size = 0          # its data so far (decompressed)
        self._frames = 0        # its frames so far
        self._wire = 0          # its compressed data so far
        self._inflated = 0      # what the current compressed frame inflated to so far
        self._decoder: Any = None
        # a data frame whose payload is still arriving: [opcode, fin, rsv, mask,
        # remaining, offset, payload, view]; for a whole binary message read in
        # place (C extension), payload is the message's bytes being filled and
        # view a writable memoryview of them, else both are None
        self._frame: Optional[List[Any]] = None
        #: the bytes given to receive_data, the messages received and sent,
        #: their application bytes (UTF-8 for text; decompressed) and the most
        #: messages a ``receive_data`` list held, for the metrics: a
        #: :class:`~gws13.frames.Counters` that the C scanner and encoder add
        #: to directly
        self.counts = Counters()
        # streaming receive (stream_next): where the next message's pieces go,
        # and the limits it replaced for that message
        self._sink: Any = None
        self._limits: Optional[Tuple[int, int]] = None
        #: keep a message that exceeds the limits at its first header instead of
        #: failing at once (the connection layer sets it: see held / refuse_held)
        self.hold_oversized = False

    # -- state -------------------------------------------------------------
    @property
    def state(self) -> State:
        if self.eof or (self.close_sent and self.close_received):
            return State.CLOSED
        if self.close_sent or self.close_received:
            return State.CLOSING
        return State.OPEN

    # -- incoming ----------------------------------------------------------
    def receive_data(self, data: Union[bytes, bytearray, memoryview],
                     messages: Optional[List[Union[str, bytes]]] = None) -> List[Event]:
        """Consume bytes from the peer; return the events they complete.

        With a ``messages`` list the data of complete messages (``str`` for
        text, ``bytes`` for binary) are appended to it, in order, instead of
        being returned as :class:`Message` events; the events returned are then
        the control frames only.  That is the connection layer's fast path."""
        events: List[Event] = []
        if self.failure is not None or self.close_received or self.eof:
            self.counts.bytes_in += len(data)  # (read, though ignored)
            return events
        pos = 0
        if (messages is not None and not self._buf and self._frame is None and self._op is None
                and scan_small is not None and not self.client and self._sink is None):
            # small whole messages, all in C (counted there); whatever it stops at is checked below
            pos = scan_small(data, 0, self.max_frame_size, self.max_message_size, messages, self.counts)
            if pos == len(data):
                return events
        # the rest is counted here, per read: its bytes, the messages it completed
        counts = self.counts
        counts.bytes_in += len(data) - pos
        if messages is None:
            self._receive(data, pos, messages, events)
            counts.messages_in += sum(event.__class__ is Message for event in events)
        else:
            before = len(messages)
            self._receive(data, pos, messages, events)
            n = len(messages)
            counts.messages_in += n - before
            if n > counts.queue_high:
                counts.queue_high = n
        return events

    def _receive(self, data: Union[bytes, bytearray, memoryview], pos: int,
                 messages: Optional[List[Union[str, bytes]]], events: List[Event]) -> List[Event]:
        if self._sink is not None:
            return self._receive_streaming(data, messages, events)
        buf = self._buf
        if messages is None:
            emit = lambda item: events.append(Message(item))  # noqa: E731
        else:
            emit = messages.append
        if not buf:
            # nothing left over: parse the caller's buffer in place, keep only the tail
            mv = data if data.__class__ is memoryview else memoryview(data)
            try:
                pos = self._parse(mv, mv, events, emit, pos)
            except WebSocketError as exc:
                self._fail(exc)
                return events
            if pos < len(mv) and not self.close_received:
                buf += mv[pos:]  # (nothing after a close frame is read: not kept)
            return events
        buf += data
        mv = memoryview(buf)
        pos = 0
        try:
            pos = self._parse(buf, mv, events, emit, 0)
        except WebSocketError as exc:
            self._fail(exc)
            pos = len(buf)
        finally:
            mv.release()
        if self.close_received:
            buf.clear()
        else:
            del buf[:pos]
        return events

    def payload_buffer(self) -> Optional[memoryview]:
        """Where the rest of a large binary frame may be read to directly, or None.

        The caller may ``recv_into`` this view and then pass the slice it filled
        (``view[:n]``) to :meth:`receive_data`; the payload is unmasked in place
        and becomes the message with no further copy.  Only offered while no
        other input is buffered and only with the C extension."""
        frame = self._frame
        if frame is None or frame[7] is None or self._buf:
            return None
        offset = frame[5]
        view: memoryview = frame[7][offset:offset + frame[4]]
        return view

    def receive_eof(self) -> None:
        """The peer closed the TCP connection."""
        if not self.close_received and self.close_code is None:
            self.close_code, self.close_reason = 1006, ""
        self.eof = True

    def _parse(self, buf: Union[bytearray, memoryview], mv: memoryview, events: List[Event],
               emit: Callable[[Any], Any], pos: int) -> int:
        n = len(buf)
        # server side only: frames up to this size need no limit check
        small = (-1 if self.client or self._sink is not None
                 else min(125, self.max_frame_size, self.max_message_size))
        while not self.close_received:
            if self._frame is not None:
                pos = self._stream(mv, pos, n, emit)
                if self._frame is not None:
                    break
                continue  # type: ignore[unreachable]  # _stream clears it: mypy keeps the narrowing above
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            if (b0 == 0x81 or b0 == 0x82) and b1 & 0x80 and length <= small and self._op is None:
                # the common case, kept lean: a small masked single-frame message
                end = pos + 6 + length
                if end <= n:
                    emit(_whole(b0 == 0x81, apply_mask(mv[pos + 6:end], mv[pos + 2:pos + 6])))
                    self.counts.payload_in += length
                    pos = end
                    continue
                if b0 == 0x82:
                    break  # wait for the rest; a partial text frame goes on to be checked early
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(mv[pos + 2:pos + 10], "big")
                start = pos + 10
                if length >> 63:
                    raise ProtocolError("frame length has its most significant bit set")
            opcode = b0 & 0x0F
            try:
                self._check_header(opcode, b0, b1, length)
            except MessageTooLarge:
                if not self.hold_oversized or self._sink is not None:
                    raise  # a stream's own limit (or a hold already) is final
                # a message that this frame takes over the limits (known from its
                # header: uncompressed sizes, compressed bounds): kept from here,
                # unparsed, for the application to stream (stream_next, with its
                # own limit) or refuse (refuse_held)
                self._sink = _HOLD
                return pos
            if b1 & 0x80:
                start += 4
                if n < start:
                    break
                mask = bytes(mv[start - 4:start])
            else:
                mask = None
            end = start + length
            if end <= n:
                payload = apply_mask(mv[start:end], mask) if mask else bytes(mv[start:end])
                pos = end
                if opcode >= OP_CLOSE:
                    self._on_control(opcode, payload, events)
                else:
                    self._on_data(opcode, b0, payload, emit)
            elif opcode >= OP_CLOSE:
                break  # control frames are small: wait for all of it
            else:
                # a large data frame: consume its payload as it arrives, so the UTF-8
                # check fails fast and nothing is held twice.  A whole binary message
                # goes straight into its final bytes object (see payload_buffer).
                if (new_payload is not None and b0 & 0xF0 == 0x80 and opcode == OP_BINARY
                        and self._sink is None):
                    payload, view = new_payload(length)
                else:
                    payload = view = None  # type: ignore[assignment]
                self._frame = [opcode, b0 & 0x80, b0 & 0x70, mask, length, 0, payload, view]
                pos = start
        return pos

    def _check_header(self, opcode: int, b0: int, b1: int, length: int) -> None:
        if bool(b1 & 0x80) == self.client:
            raise ProtocolError("frame from the server is masked" if self.client
                                else "frame from the client is not masked")
        rsv = b0 & 0x70
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise ProtocolError(f"unknown opcode {opcode:#x}")
            if rsv:
                raise ReservedBitsNotSupported("reserved bits set on a control frame")
            if not b0 & 0x80:
                raise ProtocolError("fragmented control frame")
            if length > 125:
                raise ProtocolError("control frame payload longer than 125 bytes")
            return
        if opcode == OP_CONT:
            if self._op is None:
                raise ProtocolError("continuation frame without a message to continue")
            if rsv:
                raise ReservedBitsNotSupported("reserved bits set on a continuation frame")
            # (checked here, not for every frame: the single-frame path pays nothing)
            if self._frames >= self.max_message_size + _SPARE_FRAMES:
                raise MessageTooLarge(f"message of more than {self._frames} frames (max_message_size "
                                      f"{self.max_message_size} + {_SPARE_FRAMES})")
        elif opcode == OP_TEXT or opcode == OP_BINARY:
            if self._op is not None:
                raise ProtocolError("new message started before the previous one finished")
            if rsv and (rsv != 0x40 or self.deflate is None):
                raise ReservedBitsNotSupported("reserved bits set without a negotiated extension")
        else:
            raise ProtocolError(f"unknown opcode {opcode:#x}")
        compressed = self._compressed if opcode == OP_CONT else rsv
        if length > self.max_frame_size:
            # a compressed frame's limit is on its data: refused here only when
            # no compressor makes that many bytes of max_frame_size bytes
            if not compressed:
                raise MessageTooLarge(f"frame of {length} bytes exceeds max_frame_size {self.max_frame_size}")
            if length > _deflate_bound(self.max_frame_size):
                raise MessageTooLarge(f"compressed frame of {length} bytes is longer than deflate makes "
                                      f"of max_frame_size {self.max_frame_size} bytes")
        if compressed:
            if (self._wire + length > _deflate_bound(self.max_message_size)
                    + _FRAME_DEFLATE_SLACK * self._frames):
                raise MessageTooLarge(f"compressed message exceeds the most deflate makes of "
                                      f"max_message_size {self.max_message_size}")
        elif self._size + length > self.max_message_size:
            raise MessageTooLarge(f"message exceeds max_message_size {self.max_message_size}")

    def _start(self, opcode: int, rsv: int) -> None:
        self._op = opcode
        self._compressed = bool(rsv)
        self._parts = []
        self._size = 0
        self._frames = 1
        self._wire = 0
        self._inflated = 0
        self._decoder = _utf8_decoder() if opcode == OP_TEXT else None
        if self._sink is not None:
            self.counts.messages_in += 1  # (counted when it begins: none of it is queued)
            self._sink.start(opcode == OP_TEXT)

    def _on_data(self, opcode: int, b0: int, payload: bytes, emit: Callable[[Any], Any]) -> None:
        if opcode != OP_CONT:
            rsv = b0 & 0x70
            if b0 & 0x80 and not rsv:
                emit(_whole(opcode == OP_TEXT, payload))  # a whole message in one frame
                self.counts.payload_in += len(payload)
                return
            if b0 & 0x80 and self._sink is None:
                # a whole compressed message (rsv is RSV1: _check_header let it through)
                self._whole_compressed(opcode == OP_TEXT, payload, emit)
                return
            self._start(opcode, rsv)
        else:
            self._frames += 1
            self._inflated = 0
        self._feed(payload)
        if b0 & 0x80:
            self._finish(emit)

    def _stream(self, mv: memoryview, pos: int, n: int, emit: Callable[[Any], Any]) -> int:
        frame: List[Any] = self._frame  # type: ignore[assignment]  # called only with a frame in progress
        opcode, fin, rsv, mask, remaining, offset, payload, view = frame
        take: int = min(remaining, n - pos)
        if not take and remaining:
            return pos
        chunk: Union[memoryview, bytes] = mv[pos:pos + take]
        if view is not None:
            # copies and unmasks, or only unmasks what recv_into put in place
            unmask_into(view, offset, chunk, mask and mask[offset & 3:] + mask[:offset & 3])  # type: ignore[misc]  # a view comes only with the C extension
            if take < remaining:
                frame[4] = remaining - take
                frame[5] = offset + take
            else:
                self._frame = None
                emit(payload)
                self.counts.payload_in += len(payload)
            return pos + take
        if mask:
            k = offset & 3
            chunk = apply_mask(chunk, mask[k:] + mask[:k])
        else:
            chunk = bytes(chunk)
        if offset == 0:
            if opcode != OP_CONT:
                self._start(opcode, rsv)
            else:
                self._frames += 1
                self._inflated = 0
        self._feed(chunk)
        remaining -= take
        if remaining:
            frame[4] = remaining
            frame[5] = offset + take
        else:
            self._frame = None
            if fin:
                self._finish(emit)
        return pos + take

    def _whole_compressed(self, text: bool, payload: bytes, emit: Callable[[Any], Any]) -> None:
        """A compressed message in one frame: inflated in one step, decoded at
        once; what the general path (_start, _feed, _finish) makes of it, for
        less work per message."""
        frame_room = self.max_frame_size
        message_room = self.max_message_size
        room = frame_room if frame_room < message_room else message_room
        out = self.deflate.inflate_message(payload, room)
        if len(out) > room:
            self._too_large(_utf8_decoder() if text else None, out, room, frame_room < message_room)
        emit(_whole(text, out))
        self.counts.payload_in += len(out)

    def _too_large(self, decoder: Any, out: bytes, room: int, frame_limit: bool) -> NoReturn:
        """Refuse inflated data past a limit.  The allowed part (``room``
        bytes) is checked first: the error reported is the one at the earliest
        byte, however the data were split."""
        if decoder is not None:
            try:
                decoder.decode(out[:room])
            except UnicodeDecodeError:
                raise InvalidData("text message is not valid UTF-8") from None
        if frame_limit:
            raise MessageTooLarge(f"compressed frame inflates to more than max_frame_size "
                                  f"{self.max_frame_size}")
        raise MessageTooLarge(f"decompressed message exceeds max_message_size {self.max_message_size}")

    def _inflate(self, chunk: Optional[bytes]) -> bytes:
        """Inflate a piece of the current compressed frame (None: the end of
        the message), within both limits."""
        frame_room = self.max_frame_size - self._inflated
        message_room = self.max_message_size - self._size
        room = frame_room if frame_room < message_room else message_room
        if chunk is not None:
            self._wire += len(chunk)
        out: bytes = self.deflate.inflate(chunk, room)
        if len(out) > room:
            self._too_large(self._decoder, out, room, frame_room < message_room)
        self._inflated += len(out)
        return out

    def _feed(self, chunk: Optional[bytes]) -> None:
        """Add a piece of the message's payload (None: the end of a compressed message)."""
        if self._compressed:
            chunk = self._inflate(chunk)
        elif chunk is None:
            return
        self._size += len(chunk)
        if self._size > self.max_message_size:
            raise MessageTooLarge(f"message exceeds max_message_size {self.max_message_size}")
        if self._decoder is not None:
            try:
                chunk = self._decoder.decode(chunk)
            except UnicodeDecodeError:
                raise InvalidData("text message is not valid UTF-8") from None
        if not chunk:
            return
        sink = self._sink
        if sink is not None:
            sink.piece(chunk)  # streamed: the piece goes out as it is, nothing kept here
            return
        parts = self._parts
        if parts and len(chunk) < _COALESCE:
            # a small piece: merge it with a small piece before it
            last = parts[-1]
            if last.__class__ is bytearray:
                last += chunk
                return
            if len(last) < _COALESCE:
                # binary grows one bytearray in place; text is copied, at most
                # _COALESCE characters a piece
                parts[-1] = last + chunk if self._decoder is not None else bytearray(last) + chunk
                return
        parts.append(chunk)

    def _finish(self, emit: Callable[[Any], Any]) -> None:
        if self._compressed:
            # the end of the deflate stream: plain inflater output from here on
            self._feed(None)
            self._compressed = False
        if self._decoder is not None:
            try:
                self._decoder.decode(b"", True)
            except UnicodeDecodeError:
                raise InvalidData("text message ends inside a UTF-8 sequence") from None
            data: Union[str, bytes] = "".join(self._parts) if self._sink is None else ""
        else:
            # bytes, also from a bytearray piece; a single bytes piece is not copied
            data = b"".join(self._parts)
        self.counts.payload_in += self._size
        self._op = None
        self._compressed = False
        self._parts = []
        self._size = 0
        self._frames = 0
        self._wire = 0
        self._decoder = None
        if self._sink is not None:
            self._end_stream()
            return
        emit(data)

    def _on_control(self, opcode: int, payload: bytes, events: List[Event]) -> None:
        if opcode == OP_PING:
            events.append(Ping(payload))
        elif opcode == OP_PONG:
            events.append(Pong(payload))
        else:
            code, reason = parse_close(payload)
            self.close_received = True
            if not self.close_sent:
                self.close_code, self.close_reason = code, reason
            events.append(Close(code, reason, payload))

    def _fail(self, exc: WebSocketError) -> None:
        self.failure = exc
        if self._sink is not None:
            self._end_stream(False)
        self._frame = None
        self.close_code, self.close_reason = exc.code, exc.reason

    # -- streaming receive (issue 15) ----------------------------------------
    def stream_next(self, sink: Any, max_size: Optional[int]) -> None:
        """Deliver the next message's data to ``sink`` as it arrives instead of
        assembling it: ``sink.start(text)`` when it begins, ``sink.piece(data)``
        for each piece (``str`` decoded incrementally for text, ``bytes`` for
        binary), ``sink.end()`` after its last frame.  A message already begun
        is handed over with what it has so far.  For that message
        ``max_size`` (None: no limit) replaces both ``max_frame_size`` and
        ``max_message_size``; a breach fails the connection as usual (1009).

        While the sink's ``full()`` is true, parsing stops and input stays
        buffered; call ``receive_data(b"")`` to go on.  Parsing goes in small
        steps (256 bytes of compressed input, 64 KiB otherwise), so a sink
        that became full is overrun by about one step's output at most:
        bounded even for a compressed message, since deflate expands at most
        ~1032 times."""
        if self._sink is not None and self._sink is not _HOLD:
            raise RuntimeError("a stream is already being received")
        self._limits = (self.max_frame_size, self.max_message_size)
        limit = max_size if max_size is not None else sys.maxsize
        self.max_frame_size = self.max_message_size = limit
        self._sink = sink
        if self._op is not None:
            # a fragmented message under way: what it has so far goes first
            sink.start(self._decoder is not None)
            parts, self._parts = self._parts, []
            for part in parts:
                sink.piece(part if part.__class__ is not bytearray else bytes(part))
        # (a whole binary frame being read in place is delivered as one piece)

    @property
    def held(self) -> bool:
        """True while a message over the limits waits (``hold_oversized``): the
        input from its first header on is buffered, unparsed."""
        return self._sink is _HOLD

    def refuse_held(self) -> None:
        """Fail the connection for the held message (MessageTooLarge, 1009)."""
        if self._sink is _HOLD:
            self._sink = None
            self._fail(MessageTooLarge(f"message exceeds max_message_size {self.max_message_size} "
                                       f"or max_frame_size {self.max_frame_size}"))

    def stream_cancel(self) -> bool:
        """Take back :meth:`stream_next` if its message has not begun (True), so
        that the next message is assembled as usual; False once it has."""
        if self._sink is None or self._op is not None or self._frame is not None:
            return False
        self._end_stream(False)
        return True

    def _end_stream(self, tell: bool = True) -> None:
        sink, self._sink = self._sink, None
        if sink is _HOLD:
            return
        if self._limits is not None:
            self.max_frame_size, self.max_message_size = self._limits
            self._limits = None
        if tell:
            sink.end()

    def _receive_streaming(self, data: Any, messages: Optional[List[Any]], events: List[Event]) -> List[Event]:
        """receive_data while a message is streamed: in steps, stopping while
        the sink is full (the rest stays in ``_buf``)."""
        if messages is None:
            normal = lambda item: events.append(Message(item))  # noqa: E731
        else:
            normal = messages.append

        def emit(item: Union[str, bytes]) -> None:
            sink = self._sink
            if sink is None:
                normal(item)  # type: ignore[no-untyped-call]
                return
            # a whole message in one frame while streaming: one piece
            self.counts.messages_in += 1
            sink.start(item.__class__ is str)
            if item:
                sink.piece(item)
            self._end_stream()

        buf = self._buf
        buf += data
        mv = memoryview(buf)
        pos = 0
        try:
            while pos < len(buf) and not self.close_received:
                sink = self._sink
                if sink is None:
                    pos = self._parse(buf, mv, events, emit, pos)
                    break
                if sink.full():
                    break
                # small steps while what comes may be compressed (known from
                # the first frame's header): 256 bytes inflate to ~264 KiB at most
                step = 256 if self.deflate is not None and (self._compressed or self._op is None) else 65536
                end = min(len(buf), pos + step)
                sub = mv[:end]
                try:
                    new = self._parse(sub, sub, events, emit, pos)
                finally:
                    sub.release()
                if new == pos:
                    break  # the rest is an incomplete header: wait for more input
                pos = new
        except WebSocketError as exc:
            self._fail(exc)
            pos = len(buf)
        finally:
            mv.release()
        if self.close_received:
            buf.clear()
        else:
            del buf[:pos]
        return events

    # -- outgoing ----------------------------------------------------------
    def frame(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
        """Encode one frame, masked when this is the client side."""
        if self.client:
            mask = os.urandom(4)
            return encode_header(opcode, len(payload), fin, rsv1, mask) + apply_mask(payload, mask)
        return encode_header(opcode, len(payload), fin, rsv1) + payload

    def check_open(self) -> None:
        """Raise ConnectionClosed if no more data may be sent."""
        if self.close_sent or self.eof:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)

    def send_message(self, data: Union[str, bytes, bytearray, memoryview],
                     binary: Optional[bool] = None, compress: Optional[bool] = None) -> List[bytes]:
        """Encode a message; return the pieces to write in order: one for a
        small message, header and payload for a large one (no copy).

        ``str`` is sent as text and bytes-like as binary unless ``binary`` says
        otherwise; ``compress=False`` opts out of permessage-deflate.
        Raises ConnectionClosed after a close frame was sent."""
        if self.close_sent or self.eof:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        if self.deflate is None and frame_small is not None and not self.client:
            frame = frame_small(data, binary, self.counts)  # a small str or bytes, counted
            if frame is not None:
                return [frame]
        cls = data.__class__
        if cls is str:
            payload = data.encode("utf-8")  # type: ignore[union-attr]  # cls is str
            opcode = OP_BINARY if binary else OP_TEXT
        elif cls is bytes or isinstance(data, (bytes, bytearray, memoryview)):
            payload = data
            opcode = OP_TEXT if binary is False else OP_BINARY
            if opcode == OP_TEXT:
                try:
                    codecs.decode(payload, "utf-8")  # type: ignore[arg-type]  # bytes-like here
                except UnicodeDecodeError:
                    raise InvalidData("text payload is not valid UTF-8") from None
        else:
            raise TypeError(f"cannot send {type(data).__name__}: use str or bytes")
        counts = self.counts
        counts.messages_out += 1
        counts.payload_out += len(payload)
        rsv1 = False
        deflate = self.deflate
        if deflate is not None and compress is not False and (compress or len(payload) >= deflate.min_size):
            payload = deflate.compress(payload)
            rsv1 = True
        if self.client:
            return [self.frame(opcode, payload, True, rsv1)]
        n = len(payload)
        if n < 126 and not rsv1:
            return [_SMALL_HEADERS[opcode][n] + payload]
        header = encode_header(opcode, n, True, rsv1)
        if n < _JOIN:
            return [header + payload]
        return [header, payload]

    def send_fragment(self, opcode: int, payload: Union[bytes, bytearray, memoryview], fin: bool,
                      rsv1: bool = False) -> List[Any]:
        """Encode one frame of a fragmented message (``opcode`` OP_TEXT or
        OP_BINARY for the first, OP_CONT after; ``payload`` already
        compressed if the message is): the pieces to write, as
        :meth:`send_message` returns them.  The caller keeps the order
        (RFC 6455 5.4).  Raises ConnectionClosed after a close frame was sent."""
        if self.close_sent or self.eof:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        if self.client:
            return [self.frame(opcode, bytes(payload), fin, rsv1)]
        header = encode_header(opcode, len(payload), fin, rsv1)
        if len(payload) < _JOIN:
            return [header + payload]
        return [header, payload]

    def send_ping(self, payload: bytes = b"") -> bytes:
        self.check_open()
        if len(payload) > 125:
            raise ValueError("ping payload longer than 125 bytes")
        return self.frame(OP_PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        self.check_open()
        if len(payload) > 125:
            raise ValueError("pong payload longer than 125 bytes")
        return self.frame(OP_PONG, payload)

    def send_close(self, code: Optional[int] = 1000, reason: str = "") -> bytes:
        """Encode our close frame (``code=None``: empty body).  Only once.

        Raises ConnectionClosed when a close frame was already sent, ValueError
        for a code that may not be sent or a reason over 123 bytes."""
        if self.close_sent or self.eof:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        reason_bytes = reason.encode("utf-8")
        if len(reason_bytes) > 123:  # truncate on a character boundary
            reason = reason_bytes[:123].decode("utf-8", "ignore")
        payload = encode_close(code, reason)
        self.close_sent = True
        if not self.close_received:
            self.close_code, self.close_reason = (code if code is not None else 1005), reason
        return self.frame(OP_CLOSE, payload)
