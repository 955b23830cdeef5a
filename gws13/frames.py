"""RFC 6455 frame-level constants and helpers: opcodes, header encoding, close
payloads and masking.  Pure functions, no I/O."""

from __future__ import annotations

import struct

from typing import Any, Callable, List, Optional, Tuple, Union

from .exceptions import InvalidData, ProtocolError

__all__ = [
    "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    "OPTYPES", "encode_header", "encode_frame", "apply_mask",
    "encode_close", "parse_close", "is_valid_close_code",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

#: the egg's message type names ("optypes") and their opcodes
OPTYPES = {
    "continuation": OP_CONT, "text": OP_TEXT, "binary": OP_BINARY,
    "connection-close": OP_CLOSE, "ping": OP_PING, "pong": OP_PONG,
}

_U16 = struct.Struct("!BBH")
_U64 = struct.Struct("!BBQ")


def encode_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False,
                  mask: bytes | None = None) -> bytes:
    """Return the header of a frame with ``length`` payload bytes (the masking key included)."""
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    m = 0x80 if mask else 0
    if length < 126:
        head = bytes((b0, m | length))
    elif length < 65536:
        head = _U16.pack(b0, m | 126, length)
    else:
        head = _U64.pack(b0, m | 127, length)
    return head + mask if mask else head


def encode_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False,
                 mask: bytes | None = None) -> bytes:
    """Return a whole frame; ``mask`` (4 bytes) masks it, as clients must."""
    head = encode_header(opcode, len(payload), fin, rsv1, mask)
    return head + (apply_mask(payload, mask) if mask else payload)


def _py_apply_mask(data: Union[bytes, bytearray, memoryview], mask: bytes) -> bytes:
    # XOR as one big integer: C speed per machine word, no per-byte Python loop.
    n = len(data)
    if not n:
        return b""
    key = int.from_bytes(bytes(mask) * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


class _PyCounters:
    """A connection's byte, message and payload counts (the C extension's
    ``Counters``, which its scanner and encoder add to directly)."""

    __slots__ = ("bytes_in", "messages_in", "payload_in", "queue_high", "messages_out", "payload_out")

    def __init__(self) -> None:
        self.bytes_in = self.messages_in = self.payload_in = self.queue_high = 0
        self.messages_out = self.payload_out = 0


# None without the C extension (types in _speedups.pyi)
new_payload: Optional[Callable[[int], Tuple[bytes, memoryview]]]
# (counts: a Counters of the extension's own type)
scan_small: Optional[Callable[[Union[bytes, bytearray, memoryview], int, int, int, List[Union[str, bytes]],
                               Any], int]]
frame_small: Optional[Callable[[object, Optional[bool], Any], Optional[bytes]]]
unmask_into: Optional[Callable[[memoryview, int, Union[bytes, memoryview], Optional[bytes]], None]]
try:
    from ._speedups import Counters as Counters
    from ._speedups import apply_mask as apply_mask
    from ._speedups import frame_small as frame_small
    from ._speedups import new_payload as new_payload, scan_small as scan_small, unmask_into as unmask_into
except ImportError:  # no compiler at install time: the pure-Python path is correct, just slower
    apply_mask = _py_apply_mask  # type: ignore[assignment]  # same behaviour; the C signature takes any buffer
    Counters = _PyCounters  # type: ignore[misc, assignment]  # the same attributes
    # without the extension large payloads are collected in chunks and joined,
    # and small frames are parsed and encoded by the protocol's own code
    new_payload = scan_small = frame_small = unmask_into = None


def _valid_codes() -> frozenset[int]:
    # 1004-1006 and 1015 are reserved for local use and never travel in a frame;
    # 1012-1014 are registered with IANA; 3000-4999 belong to libraries and apps.
    return frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) | frozenset(range(3000, 5000))


_VALID_CODES = _valid_codes()


def is_valid_close_code(code: int) -> bool:
    """True if ``code`` may appear in a close frame (RFC 6455 §7.4, IANA registry)."""
    return code in _VALID_CODES


def encode_close(code: int | None = 1000, reason: str = "") -> bytes:
    """Return the payload of a close frame; ``code=None`` gives an empty body."""
    if code is None:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    data = code.to_bytes(2, "big") + reason.encode("utf-8")
    if len(data) > 125:
        raise ValueError("close reason longer than 123 bytes")
    return data


def parse_close(payload: bytes) -> tuple[int, str]:
    """Return ``(code, reason)`` of a received close payload (1005 when it is empty).

    Raises ProtocolError for a 1-byte body or a code that may not be sent, and
    InvalidData for a reason that is not UTF-8."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidData("close reason is not valid UTF-8") from None
    return code, reason
