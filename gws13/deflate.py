"""permessage-deflate (RFC 7692): settings, negotiation and the per-connection codec.

No I/O and nothing from gevent: the protocol core (:class:`gws13.protocol.Protocol`)
calls the codec, the handshake code calls the negotiation functions.

- :class:`Deflate` is the value of the ``compression`` parameter (``None`` turns
  compression off).  The default, ``Deflate()``, bounds the memory of a server
  connection: the server compresses with a 4 KiB window (``server_max_window_bits``
  12) and zlib ``memLevel`` 5, about 70 KiB per connection with the client's
  32 KiB window.
- :func:`server_negotiate` answers a client's ``Sec-WebSocket-Extensions`` offer;
  :func:`client_offer` and :func:`client_accept` are the client's two halves.
- :class:`PerMessageDeflate` is one negotiated connection's compressor and
  decompressor.  Decompression is bounded: output beyond ``max_length`` raises
  :class:`~gws13.MessageTooLarge` before more than about ``max_length`` bytes
  are allocated, so a decompression bomb costs its receiver nothing.

zlib cannot deflate with a 256-byte window (``max_window_bits`` 8: zlib 1.2.9
and later refuse a raw stream with it).  When a peer asks for 8, gws13 agrees
and compresses with Huffman coding only, which makes no back-references at
all, so the stream is valid for any window.
"""

from __future__ import annotations

import re
import sys
import zlib
from typing import Any, Dict, List, Optional, Tuple, Union

from . import params as _params
from .exceptions import InvalidHandshake, MessageTooLarge, ProtocolError
from .handshake import format_extensions, parse_extensions

__all__ = ["Deflate", "PerMessageDeflate", "server_negotiate", "client_offer", "client_accept",
           "EXTENSION_NAME"]

EXTENSION_NAME = "permessage-deflate"

# the empty stored block's LEN/NLEN that ends every Z_SYNC_FLUSH (RFC 7692 §7.2.1)
_TAIL = b"\x00\x00\xff\xff"
# a whole message's payload up to this size is inflated with the tail joined to it: one
# zlib call instead of two for the price of a small copy
_JOIN_TAIL = 16384
_SERVER_NCT = "server_no_context_takeover"
_CLIENT_NCT = "client_no_context_takeover"
_SERVER_BITS = "server_max_window_bits"
_CLIENT_BITS = "client_max_window_bits"
_KNOWN = frozenset((_SERVER_NCT, _CLIENT_NCT, _SERVER_BITS, _CLIENT_BITS))
# "a decimal integer value without leading zeroes between 8 to 15" (RFC 7692 §7.1.2)
_BITS_VALUE = re.compile(r"(?:8|9|1[0-5])\Z")


def _check_bits(name: str, value: Any, optional: bool) -> Optional[int]:
    """Validate a window-bits setting (8-15, or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int between 8 and 15"
                        + (" or None" if optional else "") + f", not {type(value).__name__}")
    if not 8 <= value <= 15:
        raise ValueError(f"{name} must be between 8 and 15, got {value!r}")
    return value


def _check_flag(name: str, value: Any) -> bool:
    """Validate a boolean setting."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


class Deflate:
    """permessage-deflate settings: the value of the ``compression`` parameter.

    ``server_max_window_bits``
        (8-15, default 12) the largest LZ77 window (``2**bits`` bytes) the
        server compresses with.  A server never uses more and answers a
        client's smaller request with the smaller value; a client asks for it
        in its offer (with a fallback offer without it, RFC 7692 §7.1.3).
    ``client_max_window_bits``
        (None or 8-15, default None) on a server, None accepts whatever window
        the client compresses with (up to 32 KiB); a number asks the client to
        use at most that window and declines offers that cannot honour it.  On
        a client, a number caps the window it compresses with.
    ``server_no_context_takeover`` / ``client_no_context_takeover``
        (default False) require that side to compress every message on its
        own (worse ratio; its compressor or decompressor is freed between
        messages).  Offered or answered whenever True.
    ``mem_level``
        (1-9, default 5) zlib ``memLevel`` of our compressor.
    ``level``
        (0-9 or -1, default 6) zlib compression level.
    ``min_size``
        (default 64) messages shorter than this many bytes are sent
        uncompressed (``send(..., compress=True)`` forces compression).
    """

    __slots__ = ("server_max_window_bits", "client_max_window_bits", "server_no_context_takeover",
                 "client_no_context_takeover", "mem_level", "level", "min_size")

    server_max_window_bits: int
    client_max_window_bits: Optional[int]
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    mem_level: int
    level: int
    min_size: int

    def __init__(self, *, server_max_window_bits: int = 12, client_max_window_bits: Optional[int] = None,
                 server_no_context_takeover: bool = False, client_no_context_takeover: bool = False,
                 mem_level: int = 5, level: int = 6, min_size: int = 64) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "server_max_window_bits",
                 _check_bits("server_max_window_bits", server_max_window_bits, False))
        setattr_(self, "client_max_window_bits",
                 _check_bits("client_max_window_bits", client_max_window_bits, True))
        setattr_(self, "server_no_context_takeover",
                 _check_flag("server_no_context_takeover", server_no_context_takeover))
        setattr_(self, "client_no_context_takeover",
                 _check_flag("client_no_context_takeover", client_no_context_takeover))
        for name, value, low, high in (("mem_level", mem_level, 1, 9), ("level", level, -1, 9),
                                       ("min_size", min_size, 0, sys.maxsize)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")
            setattr_(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Deflate settings are immutable: make a new Deflate(...)")

    def _items(self) -> Tuple[Tuple[str, Any], ...]:
        return tuple((name, getattr(self, name)) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Deflate) and self._items() == other._items()

    def __hash__(self) -> int:
        return hash(self._items())

    def __repr__(self) -> str:
        return "Deflate(" + ", ".join(f"{k}={v!r}" for k, v in self._items()) + ")"


def _validate_compression(name: str, value: Any) -> Optional[Deflate]:
    """Validator of the ``compression`` parameter: None/False (off), True
    (``Deflate()``) or a :class:`Deflate`."""
    if value is None or value is False:
        return None
    if value is True:
        return Deflate()
    if isinstance(value, Deflate):
        return value
    raise TypeError(f"{name} must be None, True or a gws13.Deflate, not {type(value).__name__}")


_params.define("compression", Deflate(), _validate_compression)


class PerMessageDeflate:
    """One connection's negotiated permessage-deflate: what the protocol core calls.

    The four RFC 7692 parameters are given as negotiated (window bits as
    numbers, 15 when the parameter was absent) plus ``client`` (our side).
    """

    def __init__(self, *, client: bool, server_max_window_bits: int = 15,
                 client_max_window_bits: int = 15, server_no_context_takeover: bool = False,
                 client_no_context_takeover: bool = False, mem_level: int = 5, level: int = 6,
                 min_size: int = 64) -> None:
        self.client = client
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        #: messages shorter than this are sent uncompressed (Protocol.send_message reads it)
        self.min_size = min_size
        self._level = level
        self._mem_level = mem_level
        if client:
            send_bits, recv_bits = client_max_window_bits, server_max_window_bits
            self._send_reset, self._recv_reset = client_no_context_takeover, server_no_context_takeover
        else:
            send_bits, recv_bits = server_max_window_bits, client_max_window_bits
            self._send_reset, self._recv_reset = server_no_context_takeover, client_no_context_takeover
        self._send_bits = send_bits
        # a wider inflate window than negotiated accepts every valid stream; 9 tolerates
        # peers whose zlib turns a requested 8 into 9
        self._recv_wbits = -max(recv_bits, 9)
        self._compressor: Any = None
        self._decompressor: Any = None
        self._trailer = b""  # what followed the end of the peer's deflate stream, in this message

    # -- outgoing --------------------------------------------------------------
    def _new_compressor(self) -> Any:
        if self._send_bits < 9:
            # no LZ77 matches at all: valid for a 256-byte window zlib cannot produce
            return zlib.compressobj(self._level, zlib.DEFLATED, -9, self._mem_level, zlib.Z_HUFFMAN_ONLY)
        return zlib.compressobj(self._level, zlib.DEFLATED, -self._send_bits, self._mem_level)

    def compress(self, data: Union[bytes, bytearray, memoryview]) -> bytes:
        """Compress one whole message; return the frame payload (RFC 7692 §7.2.1:
        sync-flushed, without the trailing ``00 00 ff ff``)."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._new_compressor()
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        # no context takeover: a fresh compressor per message, nothing held in between
        self._compressor = None if self._send_reset else compressor
        if out.endswith(_TAIL):
            out = out[:-4]
        # an empty result still needs the block header byte (RFC 7692 §7.2.3.6)
        return out or b"\x00"

    def compress_part(self, data: Union[bytes, bytearray, memoryview]) -> bytes:
        """Compress one fragment of a message that goes on: sync-flushed and
        ending with ``00 00 ff ff`` (only the message's end drops it), so the
        peer can inflate each frame as it arrives.  The message's context is
        the connection's (context takeover) or a fresh one; it ends with
        :meth:`compress_end`."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = self._new_compressor()
        out: bytes = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return out

    def compress_end(self) -> bytes:
        """The last frame's payload of a message sent with :meth:`compress_part`
        (``00``, an empty block, when nothing is pending: RFC 7692 §7.2.3.6);
        applies the no-context-takeover rule as :meth:`compress` does."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._new_compressor()
        out = compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = None if self._send_reset else compressor
        if out.endswith(_TAIL):
            out = out[:-4]
        return out or b"\x00"

    # -- incoming --------------------------------------------------------------
    def _after_end(self, data: bytes) -> None:
        """Data after the end of the deflate stream (a BFINAL block) inside the
        message: only the ``00 00 ff ff`` tail may follow it, however split."""
        trailer = self._trailer + data
        if not _TAIL.startswith(trailer):
            raise ProtocolError("compressed data after the end of the deflate stream")
        self._trailer = trailer

    def inflate(self, chunk: Optional[bytes], max_length: int) -> bytes:
        """Inflate part of a compressed message's payload (any split, even
        inside a frame), or with ``chunk`` None end the message (feed the
        ``00 00 ff ff`` tail and forget the context if the peer does not keep it).

        Returns at most ``max_length + 1`` bytes: more than ``max_length`` means
        the output exceeds the limit (zlib stops there, so no more is ever
        allocated); the caller decides what to do with the allowed part.
        Raises ProtocolError for data that is not valid deflate."""
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(self._recv_wbits)
            self._trailer = b""
        if chunk is None:
            if decompressor.eof:
                out = b""
                if self._trailer not in (b"", _TAIL):
                    raise ProtocolError("compressed data after the end of the deflate stream")
            else:
                out = self._inflate(decompressor, _TAIL, max_length)
            if self._recv_reset or decompressor.eof:
                self._decompressor = None
            return out
        if decompressor.eof:
            self._after_end(chunk)
            return b""
        return self._inflate(decompressor, chunk, max_length)

    def inflate_message(self, payload: bytes, max_length: int) -> bytes:
        """Inflate a whole compressed message that came in one frame: what
        :meth:`inflate` of ``payload`` and then of None return, joined, from
        one zlib call (the tail goes in with the data), with the same limit and
        the same errors."""
        if len(payload) > _JOIN_TAIL:
            # two calls rather than a copy of a large frame to join the tail
            out = self.inflate(payload, max_length)
            return out if len(out) > max_length else out + self.inflate(None, max_length - len(out))
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = zlib.decompressobj(self._recv_wbits)
        try:
            data: bytes = decompressor.decompress(payload + _TAIL, min(max(max_length, 0) + 1, sys.maxsize))
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data ({exc})") from None
        if decompressor.eof:
            # our tail is left over, after the peer's own one if it sent it
            if decompressor.unused_data not in (_TAIL, _TAIL + _TAIL):
                raise ProtocolError("compressed data after the end of the deflate stream")
            self._decompressor = None
        else:
            self._decompressor = None if self._recv_reset else decompressor
        return data

    def _inflate(self, decompressor: Any, data: bytes, max_length: int) -> bytes:
        if max_length < 0:
            max_length = 0
        try:
            # one byte more than allowed tells "too large" from "exactly the limit"
            out: bytes = decompressor.decompress(data, min(max_length + 1, sys.maxsize))
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data ({exc})") from None
        if decompressor.eof and decompressor.unused_data:
            self._after_end(decompressor.unused_data)
        return out

    def decompress(self, chunk: bytes, max_length: int) -> bytes:
        """:meth:`inflate` that raises MessageTooLarge when the output would
        exceed ``max_length`` bytes."""
        out = self.inflate(chunk, max_length)
        if len(out) > max_length:
            raise MessageTooLarge(f"decompressed data exceed the limit of {max_length} bytes")
        return out

    def finish(self, max_length: int) -> bytes:
        """End a compressed message (:meth:`inflate` with None); raises
        MessageTooLarge when the rest of the output exceeds ``max_length`` bytes."""
        out = self.inflate(None, max_length)
        if len(out) > max_length:
            raise MessageTooLarge(f"decompressed data exceed the limit of {max_length} bytes")
        return out

    # -- description -----------------------------------------------------------
    def parameters(self) -> List[Tuple[str, Optional[str]]]:
        """The negotiated parameters in header form (absent ones left out)."""
        items: List[Tuple[str, Optional[str]]] = []
        if self.server_no_context_takeover:
            items.append((_SERVER_NCT, None))
        if self.client_no_context_takeover:
            items.append((_CLIENT_NCT, None))
        if self.server_max_window_bits < 15:
            items.append((_SERVER_BITS, str(self.server_max_window_bits)))
        if self.client_max_window_bits < 15:
            items.append((_CLIENT_BITS, str(self.client_max_window_bits)))
        return items

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        return f"<PerMessageDeflate {side} {format_extensions([(EXTENSION_NAME, self.parameters())])!r}>"


# -- negotiation ---------------------------------------------------------------
class _Invalid(Exception):
    """An offer or response that breaks RFC 7692 §7's parameter rules."""


def _parse_params(params: List[Tuple[str, Optional[str]]], response: bool) -> Dict[str, Any]:
    """Check one permessage-deflate element's parameters; return name -> value
    (True for flags and a valueless ``client_max_window_bits``, int for bits)."""
    out: Dict[str, Any] = {}
    for name, value in params:
        if name not in _KNOWN:
            raise _Invalid(f"unknown parameter {name!r}")
        if name in out:
            raise _Invalid(f"duplicate parameter {name!r}")
        if name in (_SERVER_NCT, _CLIENT_NCT):
            if value is not None:
                raise _Invalid(f"{name} takes no value")
            out[name] = True
        elif value is None:
            # only an offer's client_max_window_bits may come without a value
            if name == _SERVER_BITS or response:
                raise _Invalid(f"{name} needs a value")
            out[name] = True
        elif not _BITS_VALUE.match(value):
            raise _Invalid(f"invalid {name} value {value!r}")
        else:
            out[name] = int(value)
    return out


def _coerce(setting: Any) -> Deflate:
    """The Deflate for a ``compression`` value; ValueError when it means off."""
    value = _validate_compression("compression", setting)
    if value is None:
        raise ValueError("compression is off: there is nothing to negotiate")
    return value


def _server_accept(offer: Dict[str, Any], s: Deflate) -> Optional[Tuple[PerMessageDeflate, str]]:
    """Our answer to one valid offer, or None when ``s`` cannot honour it."""
    # server_no_context_takeover: must be answered when offered (§7.1.1.1); we may add it
    server_nct = bool(offer.get(_SERVER_NCT)) or s.server_no_context_takeover
    # client_no_context_takeover: we may always include it (§7.1.1.2); including the
    # client's own hint lets us free its context between messages
    client_nct = bool(offer.get(_CLIENT_NCT)) or s.client_no_context_takeover
    # server_max_window_bits: the same or a smaller value than offered (§7.1.2.1); we may
    # include it although it was not offered
    server_bits = min(offer.get(_SERVER_BITS, 15), s.server_max_window_bits)
    # client_max_window_bits: only if offered (§7.1.2.2), and not above an offered value
    client_bits = 15
    answer_client_bits = False
    if _CLIENT_BITS in offer:
        offered = offer[_CLIENT_BITS]
        limit = s.client_max_window_bits
        if offered is not True:
            client_bits = offered if limit is None else min(offered, limit)
            answer_client_bits = True
        elif limit is not None:
            client_bits = limit
            answer_client_bits = True
    elif s.client_max_window_bits is not None:
        return None  # we require a smaller client window and this offer cannot take one
    deflate = PerMessageDeflate(client=False, server_max_window_bits=server_bits,
                                client_max_window_bits=client_bits,
                                server_no_context_takeover=server_nct,
                                client_no_context_takeover=client_nct,
                                mem_level=s.mem_level, level=s.level, min_size=s.min_size)
    items: List[Tuple[str, Optional[str]]] = []
    if server_nct:
        items.append((_SERVER_NCT, None))
    if client_nct:
        items.append((_CLIENT_NCT, None))
    if server_bits < 15 or _SERVER_BITS in offer:
        items.append((_SERVER_BITS, str(server_bits)))
    if answer_client_bits:
        items.append((_CLIENT_BITS, str(client_bits)))
    return deflate, format_extensions([(EXTENSION_NAME, items)])


def server_negotiate(offer_header: str, setting: Any) -> Tuple[Optional[PerMessageDeflate], Optional[str]]:
    """Answer a client's ``Sec-WebSocket-Extensions`` offer.

    Returns ``(codec, response header value)`` for the first acceptable
    permessage-deflate offer, or ``(None, None)`` to go on without the
    extension: a malformed header, offers with unknown, duplicate or invalid
    parameters, and offers this ``setting`` cannot honour are all declined
    (never an error: the handshake proceeds uncompressed)."""
    settings = _coerce(setting)
    try:
        offers = parse_extensions(offer_header)
    except InvalidHandshake:
        return None, None
    for name, params in offers:
        if name != EXTENSION_NAME:
            continue
        try:
            offer = _parse_params(params, response=False)
        except _Invalid:
            continue
        accepted = _server_accept(offer, settings)
        if accepted is not None:
            return accepted
    return None, None


def _client_offer_params(s: Deflate, with_server_bits: bool) -> List[Tuple[str, Optional[str]]]:
    """The parameters of one client offer."""
    items: List[Tuple[str, Optional[str]]] = []
    if s.server_no_context_takeover:
        items.append((_SERVER_NCT, None))
    if s.client_no_context_takeover:
        items.append((_CLIENT_NCT, None))
    if with_server_bits:
        items.append((_SERVER_BITS, str(s.server_max_window_bits)))
    bits = s.client_max_window_bits
    items.append((_CLIENT_BITS, None if bits is None else str(bits)))
    return items


def client_offer(setting: Any) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client sends for ``setting``.

    Always offers ``client_max_window_bits`` (the server may limit our window).
    A ``server_max_window_bits`` below 15 is requested in a first offer and
    left out of a second, so servers that do not support it still compress."""
    s = _coerce(setting)
    offers = []
    if s.server_max_window_bits < 15:
        offers.append((EXTENSION_NAME, _client_offer_params(s, True)))
    offers.append((EXTENSION_NAME, _client_offer_params(s, False)))
    return format_extensions(offers)


def client_accept(response_header: Optional[str], setting: Any) -> Optional[PerMessageDeflate]:
    """Check the server's ``Sec-WebSocket-Extensions`` answer to
    :func:`client_offer`; return the codec, or None if the server declined.

    Raises InvalidHandshake for a malformed answer, an extension we did not
    offer, invalid or duplicate parameters, or parameters that match none of
    our offers (RFC 7692 §5: the client must fail the connection)."""
    s = _coerce(setting)
    if response_header is None or not response_header.strip():
        return None
    extensions = parse_extensions(response_header)
    if len(extensions) != 1 or extensions[0][0] != EXTENSION_NAME:
        raise InvalidHandshake(f"server answered extensions we did not offer: {response_header!r}")
    try:
        answer = _parse_params(extensions[0][1], response=True)
    except _Invalid as exc:
        raise InvalidHandshake(f"invalid permessage-deflate response: {exc}") from None
    if s.server_no_context_takeover and not answer.get(_SERVER_NCT):
        raise InvalidHandshake("server did not accept server_no_context_takeover, which we required")
    server_bits = answer.get(_SERVER_BITS, 15)
    # server_max_window_bits: any value matches the fallback offer without it; the
    # value bounds our decompression window
    client_bits = answer.get(_CLIENT_BITS)
    if client_bits is None:
        client_bits = 15 if s.client_max_window_bits is None else s.client_max_window_bits
    elif s.client_max_window_bits is not None and client_bits > s.client_max_window_bits:
        raise InvalidHandshake(f"server answered client_max_window_bits={client_bits}, above the "
                               f"{s.client_max_window_bits} we offered")
    return PerMessageDeflate(client=True, server_max_window_bits=server_bits,
                             client_max_window_bits=client_bits,
                             server_no_context_takeover=bool(answer.get(_SERVER_NCT)),
                             client_no_context_takeover=bool(answer.get(_CLIENT_NCT))
                             or s.client_no_context_takeover,
                             mem_level=s.mem_level, level=s.level, min_size=s.min_size)
