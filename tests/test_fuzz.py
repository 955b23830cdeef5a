"""Property-based fuzzing of the protocol core (bytes in, events out).

Streams of frames are generated (valid ones, then mutated: frame fields and raw
bytes), and each is fed to fresh Protocols in every way the connection layer
may feed it: all at once, in random reads (handed over as memoryviews of a
buffer that is scribbled over afterwards, as the connection reuses its read
buffer), and read in place through ``payload_buffer()``; with the C extension's
functions and with the pure-Python ones; returning Message events or appending
to a messages list (the connection's fast path); server and client side.

Properties:

- every way gives the same messages, control events and failure (type and
  close code).  The one exception is documented in :func:`_same`: a compressed
  text message whose deflate data are corrupt after bytes that inflate to
  invalid UTF-8 fails with 1002 or 1007 depending on the split (both end the
  connection; zlib discards the output of a call that fails, so which error
  comes first depends on where the read ended);
- only gws13's own exceptions are recorded as failures, with close codes 1002,
  1007 or 1009, and no other exception escapes;
- message data are exactly ``str`` or ``bytes``; after a failure or a close
  frame, input is ignored;
- a valid stream encoded by a Protocol's own ``send_message``/``frame``
  methods decodes to what was sent.

The default suite runs a bounded, fixed set of examples (hypothesis profile
``gws13-default``: derandomized, no example database, about 15 s on a slow
machine).  ``HYPOTHESIS_PROFILE=fuzz`` selects many more random examples
(``GWS13_FUZZ_EXAMPLES``, default 2000 a test) and keeps hypothesis's example
database, so a failure found once is replayed first: ``tox -e fuzz``.
Streams that found bugs are kept as ``@example``s of
:func:`test_random_bytes_fail_the_same_way_however_they_are_read`.

The handshake side (``gws13.handshake`` and the permessage-deflate
negotiation) is fuzzed for the same promise: nothing but gws13's own
exceptions, with their HTTP status.
"""

from __future__ import annotations

import contextlib
import os
import random
import zlib
from typing import Any, List, Optional, Tuple

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, note, settings  # noqa: E402
from hypothesis.control import currently_in_test_context  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import gws13.frames as frames_module  # noqa: E402
import gws13.protocol as protocol_module  # noqa: E402
from gws13 import handshake  # noqa: E402
from gws13.deflate import Deflate, PerMessageDeflate, client_accept, server_negotiate  # noqa: E402
from gws13.exceptions import HandshakeError, InvalidData, InvalidHandshake, WebSocketError  # noqa: E402
from gws13.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, _py_apply_mask  # noqa: E402
from gws13.protocol import Close, Message, Ping, Pong, Protocol  # noqa: E402

settings.register_profile("gws13-default", max_examples=200, deadline=None, derandomize=True,
                          database=None, suppress_health_check=list(HealthCheck))
settings.register_profile("fuzz", max_examples=int(os.environ.get("GWS13_FUZZ_EXAMPLES", "2000")),
                          deadline=None, print_blob=True, suppress_health_check=list(HealthCheck))
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "gws13-default")
if _PROFILE not in ("gws13-default", "fuzz"):
    _PROFILE = "gws13-default"  # a profile of some other project: keep the bounded run
#: the settings of every property here, as a decorator (other modules' settings stay theirs)
FUZZ = settings(settings.get_profile(_PROFILE))

# -- implementations ----------------------------------------------------------------

_C_NAMES = ("apply_mask", "scan_small", "frame_small", "new_payload", "unmask_into")
_C_FUNCTIONS = {name: getattr(protocol_module, name) for name in _C_NAMES}
_PY_FUNCTIONS = {"apply_mask": _py_apply_mask, "scan_small": None, "frame_small": None, "new_payload": None,
                 "unmask_into": None}
#: "c" is whatever gws13.frames chose (the C extension when it is built)
IMPLEMENTATIONS = {"c": _C_FUNCTIONS, "py": _PY_FUNCTIONS}
HAVE_C = frames_module.new_payload is not None


@contextlib.contextmanager
def implementation(name: str):
    """Make gws13.protocol use the C extension's functions or the pure-Python ones
    (the protocol looks them up as module globals at each call)."""
    saved = {n: getattr(protocol_module, n) for n in _C_NAMES}
    try:
        for n, fn in IMPLEMENTATIONS[name].items():
            setattr(protocol_module, n, fn)
        yield
    finally:
        for n, fn in saved.items():
            setattr(protocol_module, n, fn)


def test_both_implementations_are_exercised():
    if not HAVE_C:
        pytest.skip("the C extension is not built: both names run the pure-Python functions")
    assert _C_FUNCTIONS["scan_small"] is not None and _C_FUNCTIONS["apply_mask"] is not _py_apply_mask
    with implementation("py"):
        assert protocol_module.scan_small is None and protocol_module.apply_mask is _py_apply_mask
    assert protocol_module.scan_small is _C_FUNCTIONS["scan_small"]


# -- permessage-deflate pairs -------------------------------------------------------

OFFERS = [
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
]
SETTINGS = Deflate(server_max_window_bits=12)


def codecs(offer: str):
    """A fresh (server codec, client codec) pair negotiated for ``offer``."""
    server, response = server_negotiate(offer, SETTINGS)
    return server, client_accept(response, SETTINGS)


# -- frames -------------------------------------------------------------------------

class Frame:
    """One frame to encode; any field may break the rules."""

    __slots__ = ("opcode", "payload", "fin", "rsv", "mask", "form")

    def __init__(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
                 mask: Optional[bytes] = None, form: Optional[int] = None) -> None:
        self.opcode, self.payload, self.fin, self.rsv, self.mask, self.form = (
            opcode, payload, fin, rsv, mask, form)

    def encode(self) -> bytes:
        n = len(self.payload)
        form = self.form
        if form is None or (form == 0 and n > 125) or (form == 1 and n > 65535):
            form = 0 if n < 126 else 1 if n < 65536 else 2  # the minimal encoding
        b0 = (0x80 if self.fin else 0) | (self.rsv & 7) << 4 | (self.opcode & 0x0F)
        m = 0x80 if self.mask is not None else 0
        if form == 0:
            head = bytes((b0, m | n))
        elif form == 1:
            head = bytes((b0, m | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((b0, m | 127)) + n.to_bytes(8, "big")
        if self.mask is None:
            return head + self.payload
        return head + self.mask + _py_apply_mask(self.payload, self.mask)

    def __repr__(self) -> str:
        return (f"Frame({self.opcode:#x}, <{len(self.payload)} bytes {self.payload[:12]!r}>, fin={self.fin}, "
                f"rsv={self.rsv}, mask={self.mask!r}, form={self.form})")


LENGTHS = st.one_of(
    st.integers(0, 12),
    st.sampled_from([124, 125, 126, 127, 1023, 1024, 1025, 16383, 65535, 65536, 65537]),
    st.integers(0, 300),
    st.integers(0, 70000),
)


@st.composite
def data_of(draw, text: bool) -> bytes:
    """A message's data: valid UTF-8 when ``text`` (mutations may break it later)."""
    n = draw(LENGTHS)
    if text:
        piece = draw(st.text(min_size=1, max_size=20))
        s = piece * (n // max(1, len(piece.encode())) + 1)
        data = s.encode()
        while len(data) > n:  # trim on a character boundary
            s = s[:max(0, len(s) - max(1, (len(data) - n) // 4))]
            data = s.encode()
        return data
    kind = draw(st.sampled_from(["random", "zeros", "pattern"]))
    if kind == "zeros":
        return bytes(n)
    if kind == "pattern":
        return (draw(st.binary(min_size=1, max_size=8)) * (n + 1))[:n]
    return random.Random(draw(st.integers(0, 2 ** 32))).randbytes(n)


@st.composite
def close_payload(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "valid", "empty", "one", "any-code", "bad-utf8"]))
    if kind == "empty":
        return b""
    if kind == "one":
        return bytes([draw(st.integers(0, 255))])
    code = draw(st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999]))
    if kind == "any-code":
        code = draw(st.integers(0, 65535))
    reason = draw(st.text(max_size=30)).encode()[:123]
    if kind == "bad-utf8":
        reason = reason[:100] + b"\xc3\x28"
    return code.to_bytes(2, "big") + reason


@st.composite
def control_frame(draw, mask) -> Frame:
    opcode = draw(st.sampled_from([OP_PING, OP_PONG, OP_PING]))
    payload = draw(st.binary(max_size=125))
    return Frame(opcode, payload, mask=mask())


@st.composite
def stream(draw, to_server: bool, codec: Any) -> Tuple[List[Frame], list]:
    """Frames of a valid stream, and the messages they carry.  ``codec`` (or
    None) compresses on the sending side."""
    masks = st.binary(min_size=4, max_size=4)
    mask = (lambda: draw(masks)) if to_server else (lambda: None)
    frames: List[Frame] = []
    expected: list = []
    for _ in range(draw(st.integers(0, 5))):
        text = draw(st.booleans())
        data = draw(data_of(text))
        compress = codec is not None and draw(st.booleans())
        wire = codec.compress(data) if compress else data
        count = draw(st.sampled_from([1, 1, 1, 2, 3, 5, 40, 200]))
        cuts = sorted(draw(st.lists(st.integers(0, len(wire)), min_size=count - 1, max_size=count - 1)))
        pieces = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
        for i, piece in enumerate(pieces):
            first, last = i == 0, i == len(pieces) - 1
            frames.append(Frame((OP_TEXT if text else OP_BINARY) if first else OP_CONT, piece, fin=last,
                                rsv=4 if compress and first else 0, mask=mask()))
            if not last and draw(st.integers(0, 5)) == 0:
                frames.append(draw(control_frame(mask)))
        if draw(st.integers(0, 3)) == 0:
            frames.append(draw(control_frame(mask)))
        expected.append(data.decode() if text else data)
    if draw(st.booleans()):
        frames.append(Frame(OP_CLOSE, draw(close_payload()), mask=mask()))
        if draw(st.booleans()):
            frames.append(Frame(OP_TEXT, b"after the close", mask=mask()))
    return frames, expected


@st.composite
def mutated(draw, frames: List[Frame]) -> bytes:
    """Break some frames' fields, then some bytes; return the stream's bytes."""
    frames = list(frames)
    for _ in range(draw(st.integers(0, 3))):
        if not frames:
            break
        i = draw(st.integers(0, len(frames) - 1))
        f = frames[i]
        f = Frame(f.opcode, f.payload, f.fin, f.rsv, f.mask, f.form)
        what = draw(st.sampled_from(["opcode", "fin", "rsv", "mask", "form", "payload", "drop", "dup",
                                     "swap", "utf8", "long-control", "empty-flood", "cut-utf8"]))
        if what == "opcode":
            f.opcode = draw(st.integers(0, 15))
        elif what == "fin":
            f.fin = not f.fin
        elif what == "rsv":
            f.rsv = draw(st.integers(0, 7))
        elif what == "mask":
            f.mask = None if f.mask is not None else draw(st.binary(min_size=4, max_size=4))
        elif what == "form":
            f.form = draw(st.integers(0, 2))  # non-minimal length encodings
        elif what == "payload":
            f.payload = draw(st.binary(max_size=300))
        elif what == "utf8" and f.payload:
            k = draw(st.integers(0, len(f.payload) - 1))
            f.payload = f.payload[:k] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90"])) \
                + f.payload[k + 1:]
        elif what == "cut-utf8" and f.opcode in (OP_TEXT, OP_CONT):
            f.payload = f.payload + "€".encode()[:draw(st.integers(1, 2))]
        elif what == "long-control":
            f = Frame(draw(st.sampled_from([OP_PING, OP_PONG, OP_CLOSE])), bytes(126), mask=f.mask)
        elif what == "empty-flood":
            flood = [Frame(OP_CONT, b"", fin=False, mask=f.mask) for _ in range(draw(st.integers(1, 300)))]
            frames[i + 1:i + 1] = flood
            continue
        if what == "drop":
            del frames[i]
        elif what == "dup":
            frames.insert(i, f)
        elif what == "swap" and i + 1 < len(frames):
            frames[i], frames[i + 1] = frames[i + 1], frames[i]
        else:
            frames[i] = f
    data = bytearray(b"".join(f.encode() for f in frames))
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header"]))
        if not data and what != "insert":
            continue
        k = draw(st.integers(0, max(0, len(data) - 1)))
        if what == "flip":
            data[k] ^= 1 << draw(st.integers(0, 7))
        elif what == "truncate":
            del data[k:]
        elif what == "insert":
            data[k:k] = draw(st.binary(min_size=1, max_size=20))
        elif what == "header":
            # a raw header with a 16- or 64-bit length of any value (top bit too)
            b1 = draw(st.sampled_from([126, 127])) | draw(st.sampled_from([0, 0x80]))
            k = len(data) if draw(st.booleans()) else k    # at a frame boundary, or anywhere
            data[k:k] = (bytes((draw(st.integers(0, 255)), b1))
                         + draw(st.binary(min_size=(b1 & 0x7F) - 124 if b1 & 0x7F == 126 else 8,
                                          max_size=8)) + draw(st.binary(max_size=4)))
        else:
            del data[k:k + draw(st.integers(1, 50))]
    return bytes(data)


# -- running a stream -----------------------------------------------------------------

def _event(e: Any) -> tuple:
    cls = type(e)
    if cls is Message:
        assert type(e.data) in (str, bytes), type(e.data)
        return ("message", e.data)
    if cls is Close:
        assert type(e.payload) is bytes
        return ("close", e.code, e.reason, e.payload)
    assert cls in (Ping, Pong) and type(e.payload) is bytes, e
    return (cls.__name__.lower(), e.payload)


def run(data: bytes, *, client: bool, deflate: Any, limits: dict, impl: str, api: str,
        delivery: str, sizes: List[int]) -> dict:
    """Feed ``data`` to a fresh Protocol; return what it saw."""
    p = Protocol(client=client, deflate=deflate, **limits)
    messages: Optional[list] = [] if api == "list" else None
    events: list = []
    with implementation(impl):
        if delivery == "whole":
            events += p.receive_data(data, messages) if messages is not None else p.receive_data(data)
        else:
            pos = i = 0
            while pos < len(data):
                step = sizes[i % len(sizes)]
                i += 1
                target = p.payload_buffer() if delivery == "inplace" else None
                if target is not None:
                    n = min(step, len(target), len(data) - pos)
                    target[:n] = data[pos:pos + n]
                    view = target[:n]
                else:
                    n = min(step, len(data) - pos)
                    view = memoryview(bytearray(data[pos:pos + n]))
                got = p.receive_data(view, messages) if messages is not None else p.receive_data(view)
                if target is None:
                    view[:] = b"\xaa" * n  # the connection reuses its read buffer
                events += got
                pos += n
        failure = p.failure
        if failure is not None:
            # nothing but gws13's errors, with the codes they are sent with
            assert isinstance(failure, WebSocketError), repr(failure)
            assert failure.code in (1002, 1007, 1009), repr(failure)
            assert p.close_code == failure.code
        done = failure is not None or p.close_received
        if done:
            # later input is ignored
            late = Frame(OP_TEXT, b"late", mask=None if client else b"abcd").encode()
            if messages is None:
                assert p.receive_data(late) == []
            else:
                before = list(messages)
                assert p.receive_data(late, messages) == [] and messages == before
    evs = [_event(e) for e in events]
    if messages is not None:
        assert all(kind != "message" for kind, *_ in evs)
        for m in messages:
            assert type(m) in (str, bytes), type(m)
        msgs, controls = list(messages), evs
    else:
        msgs = [e[1] for e in evs if e[0] == "message"]
        controls = [e for e in evs if e[0] != "message"]
    return {
        "messages": msgs, "controls": controls, "events": evs if messages is None else None,
        "failure": None if failure is None else (type(failure).__name__, failure.code),
        "reason": None if failure is None else failure.reason,
        "close": (p.close_received, p.close_code if done else None),
        # the metrics' counts (in C on the fast path)
        "counts": (p.counts.messages_in, p.counts.payload_in),
        "bytes_in": p.counts.bytes_in, "fed": len(data) + (len(late) if done else 0),
    }


def _same(a: dict, b: dict) -> bool:
    """Do two runs of one stream agree?  The only leeway: a compressed text
    message whose corrupt deflate data follow bytes that inflate to invalid
    UTF-8 fails with ProtocolError (1002) when both lie in one inflate call
    (zlib discards that call's output) and InvalidData (1007) when a read ended
    between them."""
    keys = ("messages", "controls", "close")
    if all(a[k] == b[k] for k in keys) and a["failure"] == b["failure"]:
        return True
    pair = {a["failure"], b["failure"]}
    reasons = [r["reason"] for r in (a, b) if r["failure"] == ("ProtocolError", 1002)]
    return (all(a[k] == b[k] for k in ("messages", "controls")) and len(pair) == 2
            and pair == {("ProtocolError", 1002), ("InvalidData", 1007)}
            and all(r.startswith("invalid compressed data") for r in reasons))


def check_everywhere(data: bytes, *, client: bool, offer: Optional[str], limits: dict,
                     sizes: List[int]) -> dict:
    """Run ``data`` every way; assert the runs agree; return the first."""
    runs = {}
    for delivery in ("whole", "chunks", "inplace"):
        for impl in IMPLEMENTATIONS:
            for api in ("events", "list"):
                deflate = None
                if offer is not None:
                    server, client_codec = codecs(offer)
                    deflate = client_codec if client else server
                runs[delivery, impl, api] = run(data, client=client, deflate=deflate, limits=limits,
                                                impl=impl, api=api, delivery=delivery, sizes=sizes)
    first = runs["whole", "c", "events"]
    if currently_in_test_context():
        note(f"whole/c/events: failure={first['failure']} reason={first['reason']!r} "
             f"messages={len(first['messages'])} controls={len(first['controls'])}")
    for key, r in runs.items():
        same_split = runs[key[0], "c", "events"]
        # one split: identical whatever the implementation and the API
        assert r["messages"] == same_split["messages"], key
        assert r["controls"] == same_split["controls"], key
        assert r["failure"] == same_split["failure"], (key, r["failure"], same_split["failure"])
        assert r["close"] == same_split["close"], key
        assert r["counts"] == same_split["counts"], (key, r["counts"], same_split["counts"])
        assert r["counts"][0] == len(r["messages"]), key
        assert r["bytes_in"] == r["fed"], (key, r["bytes_in"], r["fed"])
        if r["events"] is not None and key[1] != "c":
            assert r["events"] == runs[key[0], "c", "events"]["events"], key
        # any split: the same, but for the documented leeway
        assert _same(r, first), (key, r["failure"], r["reason"], first["failure"], first["reason"])
    return first


SIZES = st.lists(st.one_of(st.integers(1, 16), st.integers(1, 70000)), min_size=1, max_size=8)
LIMITS = st.fixed_dictionaries({
    "max_frame_size": st.sampled_from([2 ** 20] * 5 + [70000, 1000, 126, 125, 10, 1]),
    "max_message_size": st.sampled_from([2 ** 20] * 5 + [200000, 1000, 126, 125, 10, 1]),
})


# -- properties -------------------------------------------------------------------------

@FUZZ
@given(st.data(), st.booleans(), st.sampled_from([None, None] + OFFERS), SIZES)
def test_valid_streams_decode_to_their_messages(data, to_server, offer, sizes):
    server_codec, client_codec = codecs(offer) if offer else (None, None)
    sender = client_codec if to_server else server_codec
    frames, expected = data.draw(stream(to_server, sender))
    wire = b"".join(f.encode() for f in frames)
    first = check_everywhere(wire, client=not to_server, offer=offer, limits={"max_frame_size": 2 ** 20,
                             "max_message_size": 2 ** 20}, sizes=sizes)
    closes = [f for f in frames if f.opcode == OP_CLOSE]
    close_ok = True
    if closes:
        try:
            frames_module.parse_close(closes[0].payload)
        except WebSocketError:
            close_ok = False
    if close_ok:
        assert first["failure"] is None, first["reason"]
        assert first["messages"] == expected
        controls = [f for f in frames if f.opcode in (OP_PING, OP_PONG, OP_CLOSE)]
        cut = next((i for i, f in enumerate(controls) if f.opcode == OP_CLOSE), len(controls))
        assert [c[0] for c in first["controls"]] == [
            {OP_PING: "ping", OP_PONG: "pong", OP_CLOSE: "close"}[f.opcode] for f in controls[:cut + 1]]
    else:
        assert first["failure"] in (("ProtocolError", 1002), ("InvalidData", 1007))
        assert first["messages"] == expected


@FUZZ
@given(st.data(), st.booleans(), st.sampled_from([None] + OFFERS), SIZES, LIMITS)
def test_mutated_streams_fail_the_same_way_however_they_are_read(data, to_server, offer, sizes, limits):
    server_codec, client_codec = codecs(offer) if offer else (None, None)
    frames, _ = data.draw(stream(to_server, client_codec if to_server else server_codec))
    wire = data.draw(mutated(frames))
    check_everywhere(wire, client=not to_server, offer=offer, limits=limits, sizes=sizes)


def _compressed_text_invalid_then_too_large() -> bytes:
    # found by the mutated-streams property: 1009 read at once, 1007 read in pieces
    payload = codecs(OFFERS[0])[1].compress(b"ok \xff" + b"a" * 5000)
    return Frame(OP_TEXT, payload, rsv=4, mask=b"abcd").encode()


def _final_block_then_tail() -> bytes:
    # found by the valid-streams property (a peer ending with BFINAL, then the tail):
    # accepted read at once, 1002 when a read split the four tail bytes
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = z.compress(b"hello" * 50) + z.flush() + b"\x00\x00\xff\xff"
    return Frame(OP_BINARY, payload, rsv=4, mask=b"abcd").encode()


def _empty_fragment_flood(n: int = 300) -> bytes:
    # accepted without end before fragments counted against max_message_size
    return b"".join(Frame(OP_TEXT if i == 0 else OP_CONT, b"", fin=False, mask=b"abcd").encode()
                    for i in range(n))


_SMALL = {"max_frame_size": 1000, "max_message_size": 1000}
_DEFAULT = {"max_frame_size": 2 ** 20, "max_message_size": 2 ** 20}


@FUZZ
@given(st.binary(max_size=2000), st.booleans(), st.sampled_from([None, OFFERS[0]]), SIZES, LIMITS)
@example(_compressed_text_invalid_then_too_large(), False, OFFERS[0], [1, 2, 1, 3], _SMALL)
@example(_final_block_then_tail(), False, OFFERS[0], [1, 2, 1, 3], _DEFAULT)
@example(_final_block_then_tail(), False, OFFERS[0], [len(_final_block_then_tail()) - 2, 1], _DEFAULT)
@example(_empty_fragment_flood(), False, None, [7, 1, 70000], {"max_frame_size": 10, "max_message_size": 10})
def test_random_bytes_fail_the_same_way_however_they_are_read(blob, client, offer, sizes, limits):
    check_everywhere(blob, client=client, offer=offer, limits=limits, sizes=sizes)


@FUZZ
@given(st.data(), st.sampled_from([None] + OFFERS), SIZES)
def test_a_protocol_decodes_what_a_protocol_sends(data, offer, sizes):
    """Encoded by Protocol.send_message / frame / send_ping on one side, decoded on the other."""
    for to_server in (True, False):
        server_codec, client_codec = codecs(offer) if offer else (None, None)
        sender = Protocol(client=to_server, deflate=client_codec if to_server else server_codec)
        wire = bytearray()
        expected: list = []
        pings: list = []
        for _ in range(data.draw(st.integers(0, 4))):
            text = data.draw(st.booleans())
            raw = data.draw(data_of(text))
            message: Any = raw.decode() if text else raw
            if data.draw(st.booleans()):
                compress = data.draw(st.sampled_from([None, True, False]))
                wire += b"".join(sender.send_message(message, compress=compress))
            else:
                # fragmented by hand with Protocol.frame (compressed as one stream when negotiated)
                deflate = sender.deflate
                rsv1 = deflate is not None and data.draw(st.booleans())
                payload = deflate.compress(raw) if rsv1 else raw
                count = data.draw(st.integers(1, 6))
                step = max(1, len(payload) // count)
                pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
                for i, piece in enumerate(pieces):
                    wire += sender.frame((OP_TEXT if text else OP_BINARY) if i == 0 else OP_CONT, piece,
                                         fin=i == len(pieces) - 1, rsv1=rsv1 and i == 0)
                    if data.draw(st.integers(0, 3)) == 0:
                        ping = data.draw(st.binary(max_size=125))
                        pings.append(("ping", ping))
                        wire += sender.send_ping(ping)
            expected.append(message)
        code = data.draw(st.sampled_from([1000, 1001, 3000, 4999, None]))
        reason = data.draw(st.text(max_size=40)) if code is not None else ""
        wire += sender.send_close(code, reason)
        first = check_everywhere(bytes(wire), client=not to_server, offer=offer,
                                 limits={"max_frame_size": 2 ** 20, "max_message_size": 2 ** 20},
                                 sizes=sizes)
        assert first["failure"] is None, first["reason"]
        assert first["messages"] == expected
        assert first["controls"][:-1] == pings
        close = first["controls"][-1]
        truncated = reason.encode()[:123].decode("utf-8", "ignore")
        assert close[:3] == ("close", code if code is not None else 1005, truncated if code else "")


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=140), st.binary(max_size=140),
                          st.binary(max_size=140).map(bytearray), st.binary(max_size=140).map(memoryview)),
                max_size=6),
       st.sampled_from([None, True, False, 0, 1]))
def test_both_encoders_write_and_count_the_same_frames(messages, binary):
    """A server's small messages are framed in C (frame_small); the Python
    encoder must give the same bytes, the same errors and the same counts."""
    out = {}
    for impl in IMPLEMENTATIONS:
        p = Protocol()
        wire: list = []
        with implementation(impl):
            for m in messages:
                try:
                    wire.append(b"".join(p.send_message(m, binary)))
                except (InvalidData, UnicodeEncodeError) as exc:
                    wire.append(type(exc).__name__)
        sent = [m for m, w in zip(messages, wire) if type(w) is bytes]
        assert p.counts.messages_out == len(sent)
        assert p.counts.payload_out == sum(len(m.encode("utf-8") if type(m) is str else m) for m in sent)
        out[impl] = wire, p.counts.messages_out, p.counts.payload_out
    assert out["c"] == out["py"]


def test_a_str_that_cannot_be_encoded_raises_as_before():
    # a lone surrogate: the C encoder hands it back to Python, which raises
    for impl in IMPLEMENTATIONS:
        p = Protocol()
        with implementation(impl), pytest.raises(UnicodeEncodeError):
            p.send_message("\ud800")
        assert p.counts.messages_out == 0


# -- regressions found by (or written for) the properties above ---------------------------

def _both_splits(wire: bytes, client: bool = False, offer: Optional[str] = None, **limits) -> dict:
    limits = {"max_frame_size": 2 ** 20, "max_message_size": 2 ** 20, **limits}
    return check_everywhere(wire, client=client, offer=offer, limits=limits, sizes=[1, 2, 1, 3])


def test_too_large_after_invalid_utf8_is_invalid_utf8_in_every_split():
    # a compressed text message inflating past the limit, invalid UTF-8 before it:
    # the earliest error wins whatever the reads (it was 1009 read at once and
    # 1007 read in pieces)
    server_codec, client_codec = codecs(OFFERS[0])
    payload = client_codec.compress(b"ok \xff" + b"a" * 5000)
    wire = Frame(OP_TEXT, payload, rsv=4, mask=b"abcd").encode()
    assert _both_splits(wire, offer=OFFERS[0], max_message_size=1000)["failure"] == ("InvalidData", 1007)
    payload = codecs(OFFERS[0])[1].compress(b"a" * 5000 + b"\xff")
    wire = Frame(OP_TEXT, payload, rsv=4, mask=b"abcd").encode()
    assert _both_splits(wire, offer=OFFERS[0], max_message_size=1000)["failure"] == ("MessageTooLarge", 1009)


def test_the_tail_after_a_final_deflate_block_may_come_in_pieces():
    # a deflate stream ended with BFINAL, then 00 00 ff ff, in the payload: one
    # read accepted it, reads that split the four bytes failed with 1002
    z = __import__("zlib").compressobj(6, 8, -15)
    payload = z.compress(b"hello" * 50) + z.flush() + b"\x00\x00\xff\xff"
    wire = Frame(OP_BINARY, payload, rsv=4, mask=b"abcd").encode()
    first = _both_splits(wire, offer=OFFERS[0])
    assert first["failure"] is None and first["messages"] == [b"hello" * 50]
    bad = Frame(OP_BINARY, payload[:-4] + b"\x00\x00\xff\xfe", rsv=4, mask=b"abcd").encode()
    assert _both_splits(bad, offer=OFFERS[0])["failure"] == ("ProtocolError", 1002)


# -- the handshake: only gws13's own errors ----------------------------------------------

# what a WSGI server puts in the environ: native strings of latin-1 characters
HEADER_TEXT = st.one_of(
    st.text(st.characters(max_codepoint=255), max_size=60),
    st.text(max_size=30),  # beyond latin-1 too: a server may hand over anything
    st.sampled_from(["websocket", "Upgrade", "upgrade, keep-alive", "13", " 13 ", "8", "GET", "HTTP/1.1",
                     "HTTP/1.0", "HTTP/2", "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", "", ","]),
)
VALID_REQUEST = {
    "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
}


@st.composite
def environ(draw) -> dict:
    """A valid upgrade request with some fields removed or replaced by anything."""
    env = dict(VALID_REQUEST)
    for name in draw(st.lists(st.sampled_from(sorted(VALID_REQUEST)), max_size=4)):
        if draw(st.integers(0, 3)) == 0:
            env.pop(name, None)
        else:
            env[name] = draw(HEADER_TEXT)
    return env


@FUZZ
@given(environ())
def test_the_request_check_raises_only_handshake_errors(env):
    try:
        key = handshake.check_request(env)
    except HandshakeError as exc:
        assert exc.status in (400, 426), exc.status
        assert isinstance(exc, WebSocketError)
        return
    assert len(__import__("base64").b64decode(key, validate=True)) == 16
    headers = dict(handshake.response_headers(key))
    assert headers["Sec-WebSocket-Accept"] == handshake.accept_key(key)
    assert handshake.is_upgrade_request(env)


EXTENSION_TEXT = st.one_of(
    HEADER_TEXT,
    # permessage-deflate offers made of their real pieces, in any order and number
    st.lists(st.sampled_from(["permessage-deflate", "x-webkit-deflate-frame", ";", ",", "=", '"', " ",
                              "client_max_window_bits", "server_max_window_bits", "server_no_context_takeover",
                              "client_no_context_takeover", "8", "9", "12", "15", "16", "0x0f", "١٥", "1_5",
                              " 15", "foo"]), max_size=25).map("".join),
)


@FUZZ
@given(EXTENSION_TEXT, st.sampled_from([Deflate(), Deflate(server_max_window_bits=15),
                                        Deflate(client_max_window_bits=9, server_no_context_takeover=True)]))
def test_extension_negotiation_raises_only_its_own_errors(value, setting):
    try:
        parsed = handshake.parse_extensions(value)
    except InvalidHandshake:
        parsed = None
    else:
        for name, params in parsed:
            assert type(name) is str and all(type(k) is str and (v is None or type(v) is str)
                                             for k, v in params)
    # the server never fails a handshake over an offer: it declines it
    codec, answer = server_negotiate(value, setting)
    assert (codec is None) == (answer is None)
    if codec is not None:
        assert isinstance(codec, PerMessageDeflate) and parsed is not None
        assert handshake.parse_extensions(answer)[0][0] == "permessage-deflate"
        for bits in (codec.server_max_window_bits, codec.client_max_window_bits):
            assert 8 <= bits <= 15
    # the client fails the handshake for a bad answer, with InvalidHandshake only
    try:
        accepted = client_accept(value, setting)
    except InvalidHandshake:
        return
    assert accepted is None or isinstance(accepted, PerMessageDeflate)
