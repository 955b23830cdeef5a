"""permessage-deflate (RFC 7692): negotiation, the codec, the protocol core with
compression, decompression bombs, and interop with the ``websockets`` library
and ``gws13.connect``."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
import tracemalloc
import zlib

import gevent
import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect as websockets_connect

import gws13
from gws13.deflate import (Deflate, PerMessageDeflate, client_accept, client_offer,
                           server_negotiate)
from gws13.frames import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, encode_frame
from gws13.protocol import Close, Message, Protocol
from conftest import RawClient, raw_connect

DEFAULT = Deflate()
OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


def words(n: int, seed: int = 0, vocabulary: int = 400) -> str:
    """Compressible text: ``n`` words from a small vocabulary."""
    rnd = random.Random(seed)
    return " ".join(f"w{rnd.randrange(vocabulary)}" for _ in range(n))


def pair(offer: str, server: Deflate = DEFAULT, client: Deflate = DEFAULT):
    """Negotiate both ends; return (server codec, client codec, response)."""
    s, response = server_negotiate(offer, server)
    assert s is not None, offer
    return s, client_accept(response, client), response


def zero_bomb(size: int, segment: int = 4 * 2 ** 20) -> bytes:
    """A raw deflate stream (sync-flushed, tail not stripped) of ``size`` zero
    bytes, built from one compressed segment repeated: each segment starts
    without back-references, so the concatenation is a valid stream."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = z.compress(bytes(segment)) + z.flush(zlib.Z_SYNC_FLUSH)
    return piece * (size // segment)


def strict_inflate(data: bytes, bits: int) -> bytes:
    """Inflate with exactly a ``2**bits`` window and a tiny output buffer, so that
    zlib checks every back-reference against the window (a one-shot inflate
    would resolve long distances from its own output buffer)."""
    d = zlib.decompressobj(-bits)
    out = []
    data = data + b"\x00\x00\xff\xff"
    while data:
        out.append(d.decompress(data, 64))
        data = d.unconsumed_tail
    return b"".join(out)


# -- settings and the parameter --------------------------------------------------

def test_default_is_on_with_a_small_server_window():
    assert gws13.parameters.compression == Deflate()
    d = gws13.parameters.compression
    assert (d.server_max_window_bits, d.mem_level, d.min_size, d.client_max_window_bits) == (12, 5, 64, None)
    assert not d.server_no_context_takeover and not d.client_no_context_takeover


def test_compression_parameter_values():
    gws13.parameters.compression = None
    assert gws13.parameters.compression is None
    gws13.parameters.compression = False
    assert gws13.parameters.compression is None
    gws13.parameters.compression = True
    assert gws13.parameters.compression == Deflate()
    gws13.parameters.compression = Deflate(server_max_window_bits=15)
    assert gws13.parameters.compression.server_max_window_bits == 15
    with pytest.raises(TypeError):
        gws13.parameters.compression = "deflate"
    gws13.parameters.reset()
    assert gws13.parameters.compression == Deflate()


@pytest.mark.parametrize("kwargs, error", [
    ({"server_max_window_bits": 7}, ValueError),
    ({"server_max_window_bits": 16}, ValueError),
    ({"server_max_window_bits": None}, TypeError),
    ({"client_max_window_bits": 16}, ValueError),
    ({"client_max_window_bits": True}, TypeError),
    ({"server_no_context_takeover": 1}, TypeError),
    ({"mem_level": 0}, ValueError),
    ({"level": 10}, ValueError),
    ({"min_size": -1}, ValueError),
])
def test_bad_settings_are_refused(kwargs, error):
    with pytest.raises(error):
        Deflate(**kwargs)


def test_settings_are_immutable_and_comparable():
    d = Deflate(min_size=10)
    with pytest.raises(AttributeError):
        d.min_size = 5
    assert d == Deflate(min_size=10) and hash(d) == hash(Deflate(min_size=10))
    assert d != Deflate()
    assert "min_size=10" in repr(d)


# -- server negotiation ----------------------------------------------------------

@pytest.mark.parametrize("offer, response", [
    ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
    # Chromium and Firefox
    ("permessage-deflate; client_max_window_bits", "permessage-deflate; server_max_window_bits=12"),
    ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=14", "permessage-deflate; server_max_window_bits=12"),
    ('permessage-deflate; server_max_window_bits="9"', "permessage-deflate; server_max_window_bits=9"),
    ("permessage-deflate; server_max_window_bits=8", "permessage-deflate; server_max_window_bits=8"),
    ("permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ("permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
    ("PerMessage-Deflate; Client_Max_Window_Bits",  # names are case-insensitive tokens
     "permessage-deflate; server_max_window_bits=12"),
    # the first acceptable offer wins; other extensions are ignored
    ("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9, permessage-deflate",
     "permessage-deflate; server_max_window_bits=9"),
    # invalid offers are skipped, the next valid one is accepted
    ("permessage-deflate; foo, permessage-deflate; server_max_window_bits=11",
     "permessage-deflate; server_max_window_bits=11"),
])
def test_server_accepts(offer, response):
    deflate, answer = server_negotiate(offer, DEFAULT)
    assert answer == response
    assert isinstance(deflate, PerMessageDeflate) and not deflate.client


@pytest.mark.parametrize("offer", [
    "x-webkit-deflate-frame",
    "permessage-deflate; foo",                                   # unknown parameter
    "permessage-deflate; foo=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",  # duplicate
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",          # flag with a value
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; server_max_window_bits",                # value required
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",            # leading zero
    "permessage-deflate; server_max_window_bits=1x",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; client_max_window_bits=0",
    "permessage-deflate; client_max_window_bits=+9",
    "permessage-deflate;;",                                      # malformed header
    ", permessage-deflate",
])
def test_server_declines_invalid_offers(offer):
    assert server_negotiate(offer, DEFAULT) == (None, None)


def test_server_settings_shape_the_answer():
    s = Deflate(server_no_context_takeover=True, client_no_context_takeover=True,
                server_max_window_bits=15)
    _, answer = server_negotiate("permessage-deflate", s)
    # both flags may be sent unasked; 15 is not worth saying
    assert answer == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    _, answer = server_negotiate("permessage-deflate; server_max_window_bits=15", s)
    assert answer.endswith("server_max_window_bits=15")


def test_server_client_window_limit():
    s = Deflate(client_max_window_bits=10)
    # the client must allow the server to limit its window, else the offer is declined
    assert server_negotiate("permessage-deflate", s) == (None, None)
    d, answer = server_negotiate("permessage-deflate; client_max_window_bits", s)
    assert answer == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"
    assert d.client_max_window_bits == 10
    _, answer = server_negotiate("permessage-deflate; client_max_window_bits=9", s)
    assert answer.endswith("client_max_window_bits=9")
    # the fallback offer that cannot take the limit comes second: the first one wins
    _, answer = server_negotiate("permessage-deflate, permessage-deflate; client_max_window_bits", s)
    assert answer.endswith("client_max_window_bits=10")


def test_negotiate_hook_in_the_server_module():
    from gws13.server import negotiate
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_UPGRADE": "websocket",
               "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_VERSION": "13",
               "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_HOST": "localhost",
               "HTTP_SEC_WEBSOCKET_EXTENSIONS": "permessage-deflate; client_max_window_bits"}
    head, proto, _, extensions = negotiate(environ, gws13.parameters.defaults())
    assert extensions == "permessage-deflate; server_max_window_bits=12"
    assert b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n" in head
    assert isinstance(proto.deflate, PerMessageDeflate)
    params = dict(gws13.parameters.defaults(), compression=None)
    head, proto, _, extensions = negotiate(environ, params)
    assert extensions is None and proto.deflate is None and b"Extensions" not in head


# -- client negotiation ----------------------------------------------------------

def test_client_offer():
    assert client_offer(DEFAULT) == ("permessage-deflate; server_max_window_bits=12; client_max_window_bits, "
                                     "permessage-deflate; client_max_window_bits")
    assert client_offer(Deflate(server_max_window_bits=15)) == "permessage-deflate; client_max_window_bits"
    assert client_offer(Deflate(server_max_window_bits=15, client_max_window_bits=10,
                                server_no_context_takeover=True, client_no_context_takeover=True)) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10")
    with pytest.raises(ValueError):
        client_offer(None)


def test_client_accept():
    assert client_accept(None, DEFAULT) is None
    assert client_accept("", DEFAULT) is None
    d = client_accept("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11", DEFAULT)
    assert d.client and d.server_max_window_bits == 10 and d.client_max_window_bits == 11
    # the fallback offer had no server_max_window_bits: a bigger window or none is fine
    assert client_accept("permessage-deflate; server_max_window_bits=15", DEFAULT).server_max_window_bits == 15
    d = client_accept("permessage-deflate; server_no_context_takeover; client_no_context_takeover", DEFAULT)
    assert d.server_no_context_takeover and d.client_no_context_takeover
    assert d.server_max_window_bits == 15 and d.client_max_window_bits == 15
    # our own limit applies when the server does not set one
    assert client_accept("permessage-deflate", Deflate(client_max_window_bits=9)).client_max_window_bits == 9


@pytest.mark.parametrize("response, setting", [
    ("x-webkit-deflate-frame", DEFAULT),
    ("permessage-deflate, permessage-deflate", DEFAULT),
    ("permessage-deflate; foo", DEFAULT),
    ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", DEFAULT),
    ("permessage-deflate; client_max_window_bits", DEFAULT),      # a response needs the value
    ("permessage-deflate; server_max_window_bits=16", DEFAULT),
    ("permessage-deflate; server_max_window_bits", DEFAULT),
    ("permessage-deflate; server_no_context_takeover=1", DEFAULT),
    ("permessage-deflate;", DEFAULT),
    ("permessage-deflate", Deflate(server_no_context_takeover=True)),   # our requirement dropped
    ("permessage-deflate; client_max_window_bits=12", Deflate(client_max_window_bits=10)),
])
def test_client_refuses_bad_answers(response, setting):
    with pytest.raises(gws13.InvalidHandshake):
        client_accept(response, setting)


@pytest.mark.parametrize("server, client", [
    (DEFAULT, DEFAULT),
    (Deflate(server_max_window_bits=15), Deflate(server_max_window_bits=15)),
    (Deflate(server_max_window_bits=9, client_max_window_bits=9), DEFAULT),
    (Deflate(server_no_context_takeover=True, client_no_context_takeover=True), DEFAULT),
    (DEFAULT, Deflate(server_no_context_takeover=True, client_no_context_takeover=True,
                      server_max_window_bits=8, client_max_window_bits=8)),
])
def test_our_client_accepts_our_server(server, client):
    s, response = server_negotiate(client_offer(client), server)
    c = client_accept(response, client)
    assert c.parameters() == s.parameters()
    for i in range(5):
        text = words(3000, seed=i).encode()
        assert c.decompress(s.compress(text), 2 ** 20) + c.finish(2 ** 20) == text
        assert s.decompress(c.compress(text), 2 ** 20) + s.finish(2 ** 20) == text


# -- the codec -------------------------------------------------------------------

def roundtrip(sender: PerMessageDeflate, receiver: PerMessageDeflate, data: bytes, split: int = 0) -> bytes:
    payload = sender.compress(data)
    if split:
        out = b"".join(receiver.decompress(payload[i:i + split], 2 ** 30)
                       for i in range(0, len(payload), split))
    else:
        out = receiver.decompress(payload, 2 ** 30)
    return out + receiver.finish(2 ** 30)


def test_round_trips_in_any_split():
    s, c, _ = pair("permessage-deflate")
    for i, data in enumerate([b"", b"a", words(50).encode(), bytes(range(256)) * 300,
                              random.Random(1).randbytes(70000)]):
        for split in (0, 1, 7, 4096):
            assert roundtrip(s, c, data, split) == data
            assert roundtrip(c, s, data, split) == data


def test_empty_message_is_a_single_zero_byte():
    s, c, _ = pair("permessage-deflate")
    assert s.compress(b"") == b"\x00"
    assert roundtrip(s, c, b"") == b""
    s.compress(b"x" * 100)
    assert s.compress(b"") == b"\x00"


def test_context_takeover_shrinks_repeated_messages():
    s, c, _ = pair("permessage-deflate")
    text = words(300).encode()
    first = s.compress(text)
    second = s.compress(text)
    assert len(second) < len(first) // 5    # a back-reference to the previous message
    assert c.decompress(first, 10 ** 6) + c.finish(10 ** 6) == text
    assert c.decompress(second, 10 ** 6) + c.finish(10 ** 6) == text
    # and the receiver needs the context: a fresh inflater cannot read the second one
    fresh = pair("permessage-deflate")[1]
    with pytest.raises(gws13.ProtocolError):
        fresh.decompress(second, 10 ** 6)
        fresh.finish(10 ** 6)


@pytest.mark.parametrize("offer", ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"])
def test_no_context_takeover_compresses_each_message_alone(offer):
    s, c, response = pair(offer)
    assert "server_no_context_takeover" in response and "client_no_context_takeover" in response
    text = words(300).encode()
    first, second = s.compress(text), s.compress(text)
    assert first == second
    assert s._compressor is None     # nothing held between messages
    # every message can be read by a fresh inflater
    assert strict_inflate(second, 12) == text
    for _ in range(3):
        assert roundtrip(c, s, text) == text
        assert s._decompressor is None


@pytest.mark.parametrize("bits", [8, 9, 10, 12, 15])
def test_server_window_bits_are_respected(bits):
    s, c, response = pair(f"permessage-deflate; server_max_window_bits={bits}",
                          server=Deflate(server_max_window_bits=15))
    assert response == f"permessage-deflate; server_max_window_bits={bits}"
    # repeats at distances of 300 bytes to 20 KiB: tempting matches outside small windows
    rnd = random.Random(bits)
    blocks = [rnd.randbytes(size) for size in (300, 700, 3000, 9000, 20000)]
    data = b"".join(block + block for block in blocks)
    # a strict inflater with exactly the negotiated window reads the whole stream,
    # message after message (context takeover)
    d = zlib.decompressobj(-bits)
    for _ in range(3):
        stream = s.compress(data) + b"\x00\x00\xff\xff"
        out = []
        while stream:
            out.append(d.decompress(stream, 64))
            stream = d.unconsumed_tail
        assert b"".join(out) == data
    if bits < 15:
        # the checker is not vacuous: a 15-bit stream fails the same strict inflater
        wide = zlib.compressobj(6, zlib.DEFLATED, -15)
        stream = wide.compress(data) + wide.flush(zlib.Z_SYNC_FLUSH)
        with pytest.raises(zlib.error):
            strict_inflate(stream[:-4], bits)


def test_window_8_uses_huffman_only_and_still_compresses():
    s, c, _ = pair("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
                   client=Deflate(server_max_window_bits=8, client_max_window_bits=8))
    text = words(2000).encode()
    payload = s.compress(text)
    assert len(payload) < len(text) * 0.7
    assert strict_inflate(payload, 8) == text
    assert roundtrip(c, s, text) == text


def test_a_peer_ending_the_stream_with_bfinal_is_read():
    s, _, _ = pair("permessage-deflate")
    for text in (b"first message " * 20, b"second message " * 20):
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = z.compress(text) + z.flush(zlib.Z_FINISH)
        assert s.decompress(payload, 10 ** 6) + s.finish(10 ** 6) == text


def general_path(codec: PerMessageDeflate, payload: bytes, limit: int):
    """What inflate() of the payload and then of None make of a message, or the error."""
    try:
        out = codec.inflate(payload, limit)
        return out if len(out) > limit else out + codec.inflate(None, limit - len(out))
    except gws13.ProtocolError as exc:
        return type(exc)


def one_call(codec: PerMessageDeflate, payload: bytes, limit: int):
    try:
        return codec.inflate_message(payload, limit)
    except gws13.ProtocolError as exc:
        return type(exc)


@pytest.mark.parametrize("offer", ["permessage-deflate",
                                   "permessage-deflate; client_no_context_takeover"])
def test_inflate_message_is_the_general_path_in_one_call(offer):
    # a sequence of messages with context takeover, ones the peer ends with BFINAL (with and
    # without its own tail), data after the end, corrupt data, limits and large payloads:
    # both ways give the same output, errors and later state
    rnd = random.Random(7)
    texts = [words(rnd.randrange(1, 400), seed=i).encode() for i in range(12)]
    texts += [rnd.randbytes(40000), bytes(100000), b""]

    def payloads():
        yield from ((t, c.compress(t)) for t in texts for c in [pair(offer)[1]])
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        final = z.compress(texts[0]) + z.flush(zlib.Z_FINISH)
        yield texts[0], final
        yield texts[0], final + b"\x00\x00\xff\xff"
        yield None, final + b"\x00"  # data after the end
        yield None, b"\xff\xff\xff\xff\xff"

    for limit in (2 ** 20, 1000, 0):
        general, single = pair(offer)[0], pair(offer)[0]
        sender = pair(offer)[1]
        for text, payload in list(payloads()) + [(t, sender.compress(t)) for t in texts]:
            a, b = general_path(general, payload, limit), one_call(single, payload, limit)
            assert a == b, (text and text[:20], limit)
            if a is gws13.ProtocolError or len(a) > limit:
                general, single = pair(offer)[0], pair(offer)[0]  # a failed connection ends
                sender = pair(offer)[1]
            elif text is not None:
                assert a == text


def test_protocol_single_frame_compressed_failures_match_fragmented_ones():
    # invalid UTF-8 before the limit is reported as such (1007), after it as too large (1009)
    for text, code in ((b"\xc3\x28" + b"a" * 5000, 1007), (b"a" * 5000 + b"\xc3\x28", 1009)):
        payload = deflate_raw(text)
        whole, parts = server_proto(max_message_size=4096), server_proto(max_message_size=4096)
        whole.receive_data(client_frame(OP_TEXT, payload, rsv1=True))
        parts.receive_data(client_frame(OP_TEXT, payload[:5], fin=False, rsv1=True)
                           + client_frame(OP_CONT, payload[5:]))
        assert whole.failure.code == parts.failure.code == code


def test_corrupt_data_is_a_protocol_error():
    s, _, _ = pair("permessage-deflate")
    with pytest.raises(gws13.ProtocolError) as info:
        s.decompress(b"\xff\xff\xff\xff\xff", 10 ** 6)
        s.finish(10 ** 6)
    assert info.value.code == 1002


def test_decompression_limit_is_exact():
    s, c, _ = pair("permessage-deflate")
    data = b"z" * 100000
    assert c.decompress(s.compress(data), 100000) + c.finish(100000) == data
    s, c, _ = pair("permessage-deflate")
    with pytest.raises(gws13.MessageTooLarge) as info:
        c.decompress(s.compress(data + b"!"), 100000)
        c.finish(100000)
    assert info.value.code == 1009


def test_decompression_never_allocates_much_beyond_the_limit():
    payload = zero_bomb(64 * 2 ** 20)[:-4]
    s, _, _ = pair("permessage-deflate")
    tracemalloc.start()
    try:
        with pytest.raises(gws13.MessageTooLarge):
            s.decompress(payload, 2 ** 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak


# -- the protocol core with compression -------------------------------------------

def server_proto(**kwargs) -> Protocol:
    return Protocol(deflate=server_negotiate("permessage-deflate", DEFAULT)[0], **kwargs)


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    return encode_frame(opcode, payload, fin, rsv1, b"\x11\x22\x33\x44")


def deflate_raw(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_protocol_reads_compressed_and_fragmented_messages():
    p = server_proto()
    text = ("héllo wörld " * 500).encode()
    payload = deflate_raw(text)
    # one frame, then the same stream in three fragments (RSV1 on the first only)
    data = client_frame(OP_TEXT, payload, rsv1=True)
    thirds = [payload[:10], payload[10:20], payload[20:]]
    data += client_frame(OP_TEXT, thirds[0], fin=False, rsv1=True)
    data += client_frame(OP_CONT, thirds[1], fin=False)
    data += client_frame(OP_PING, b"in between")
    data += client_frame(OP_CONT, thirds[2])
    data += client_frame(OP_BINARY, b"plain", rsv1=False)      # per-message choice
    events = []
    for i in range(0, len(data), 3):    # and byte by byte-ish
        events += p.receive_data(data[i:i + 3])
    assert p.failure is None
    messages = [e.data for e in events if isinstance(e, Message)]
    assert messages == [text.decode(), text.decode(), b"plain"]


@pytest.mark.parametrize("frames, code", [
    # RSV1 on a continuation frame
    ([client_frame(OP_TEXT, deflate_raw(b"ab"), fin=False, rsv1=True),
      client_frame(OP_CONT, deflate_raw(b"cd"), rsv1=True)], 1002),
    # RSV1 on a control frame
    ([client_frame(OP_PING, b"", rsv1=True)], 1002),
    # not deflate at all
    ([client_frame(OP_BINARY, b"\xff\xfe\xfd\xfc\xfb", rsv1=True)], 1002),
    # invalid UTF-8 inside a compressed text message
    ([client_frame(OP_TEXT, deflate_raw(b"ok \xc3\x28 bad"), rsv1=True)], 1007),
    # decompressed size over the limit
    ([client_frame(OP_BINARY, deflate_raw(bytes(5000)), rsv1=True)], 1009),
])
def test_protocol_failures(frames, code):
    p = server_proto(max_message_size=4096)
    p.receive_data(b"".join(frames))
    assert p.failure is not None and p.failure.code == code


def test_rsv1_without_negotiation_is_refused():
    p = Protocol()
    p.receive_data(client_frame(OP_TEXT, deflate_raw(b"hello"), rsv1=True))
    assert p.failure is not None and p.failure.code == 1002



# -- limits on compressed frames: about the data, not the wire ---------------------

def deflate_frames(pieces, wbits: int = -15, mem_level: int = 8, strategy: int = zlib.Z_DEFAULT_STRATEGY):
    """One message compressed with a sync flush after each piece: one payload per piece
    (the last without the ``00 00 ff ff`` tail)."""
    z = zlib.compressobj(6, zlib.DEFLATED, wbits, mem_level, strategy)
    out = [z.compress(piece) + z.flush(zlib.Z_SYNC_FLUSH) for piece in pieces]
    out[-1] = out[-1][:-4]
    return out


def test_incompressible_frame_longer_on_the_wire_than_max_frame_size_is_read():
    # deflate makes 1000 random bytes longer: the frame's 1000 bytes of data are within the limit
    p = server_proto(max_frame_size=1000, max_message_size=1000)
    data = random.Random(1).randbytes(1000)
    (payload,) = deflate_frames([data])
    assert len(payload) > 1000
    assert [e.data for e in p.receive_data(client_frame(OP_BINARY, payload, rsv1=True))] == [data]
    # zlib's worst case: a 512-byte window rules out stored blocks, fixed codes
    # spend 9 bits on bytes 144-255 (12.5% more)
    high = bytes(144 + b % 112 for b in random.Random(2).randbytes(1000))
    (payload,) = deflate_frames([high], wbits=-9, mem_level=4, strategy=zlib.Z_FIXED)
    assert len(payload) > 1100
    assert [e.data for e in p.receive_data(client_frame(OP_BINARY, payload, rsv1=True))] == [high]
    assert p.failure is None


@pytest.mark.parametrize("continuation", [False, True])
def test_compressed_frame_longer_than_deflate_makes_of_max_frame_size_is_refused_from_its_header(continuation):
    from gws13.protocol import _deflate_bound
    bound = _deflate_bound(1000)
    assert 1125 < bound < 1200
    head = b""
    if continuation:
        head = client_frame(OP_BINARY, deflate_frames([b"a", b""])[0], fin=False, rsv1=True)
    op = OP_CONT if continuation else OP_BINARY
    rsv = 0 if continuation else 0x40
    p = server_proto(max_frame_size=1000, max_message_size=10 ** 6)
    assert p.receive_data(head + bytes([op | rsv, 0x80 | 126]) + bound.to_bytes(2, "big")) == []
    assert p.failure is None                            # may still inflate to 1000 bytes
    p = server_proto(max_frame_size=1000, max_message_size=10 ** 6)
    p.receive_data(head + bytes([op | rsv, 0x80 | 126]) + (bound + 1).to_bytes(2, "big"))
    assert isinstance(p.failure, gws13.MessageTooLarge) and p.failure.code == 1009
    assert "max_frame_size 1000" in p.failure.reason


@pytest.mark.parametrize("step", [7, 100, 10 ** 6])
def test_compressed_frame_inflating_beyond_max_frame_size_is_refused(step):
    # 5000 bytes of data in a 30-byte frame: max_frame_size is about the data
    p = server_proto(max_frame_size=1000, max_message_size=10 ** 6)
    data = client_frame(OP_BINARY, deflate_raw(bytes(5000)), rsv1=True)
    for i in range(0, len(data), step):
        p.receive_data(data[i:i + step])
    assert isinstance(p.failure, gws13.MessageTooLarge) and p.failure.code == 1009
    assert "max_frame_size 1000" in p.failure.reason
    # each frame of a fragmented message on its own: 3 x 800 bytes are fine
    p = server_proto(max_frame_size=1000, max_message_size=10 ** 6)
    pieces = [bytes([65 + i]) * 800 for i in range(3)]
    payloads = deflate_frames(pieces)
    data = (client_frame(OP_TEXT, payloads[0], fin=False, rsv1=True)
            + client_frame(OP_CONT, payloads[1], fin=False) + client_frame(OP_CONT, payloads[2]))
    events = []
    for i in range(0, len(data), step):
        events += p.receive_data(data[i:i + step])
    assert [e.data for e in events] == [b"".join(pieces).decode()] and p.failure is None
    # the message limit still counts them all
    p = server_proto(max_frame_size=1000, max_message_size=2000)
    p.receive_data(data)
    assert p.failure is not None and "max_message_size 2000" in p.failure.reason


def test_compressed_message_of_empty_deflate_blocks_ends():
    # empty stored blocks inflate to nothing: the message's compressed data is bounded too
    empty_blocks = b"\x00\x00\x00\xff\xff" * 200
    p = server_proto(max_frame_size=1000, max_message_size=1000)
    p.receive_data(client_frame(OP_BINARY, empty_blocks, fin=False, rsv1=True))
    sent = 1
    while p.failure is None and sent < 1000:
        p.receive_data(client_frame(OP_CONT, empty_blocks, fin=False))
        sent += 1
    assert isinstance(p.failure, gws13.MessageTooLarge) and p.failure.code == 1009
    assert sent == 2                                    # 2000 bytes > 1000 + 1000/8 + 64 + ...
    # a legitimate message with a flush after each of many small fragments is read
    p = server_proto(max_frame_size=1000, max_message_size=1000)
    payloads = deflate_frames([b"x"] * 1000)
    data = client_frame(OP_BINARY, payloads[0], fin=False, rsv1=True)
    data += b"".join(client_frame(OP_CONT, x, fin=False) for x in payloads[1:-1])
    data += client_frame(OP_CONT, payloads[-1])
    assert [e.data for e in p.receive_data(data)] == [b"x" * 1000]


@pytest.mark.parametrize("limit", ["max_frame_size", "max_message_size"])
@pytest.mark.parametrize("step", [None, 4096])
def test_a_small_frame_inflating_past_a_limit_is_refused_without_inflating_it(limit, step):
    # 64 MiB of zeros in ~64 KB of deflate: refused with 1009 once inflating passes
    # the limit (256 KiB), with no more than about the limit ever allocated
    bomb = zero_bomb(64 * 2 ** 20)[:-4]
    if limit == "max_frame_size":
        p = server_proto(max_frame_size=256 * 1024, max_message_size=2 ** 30)
        data = client_frame(OP_BINARY, bomb, rsv1=True)
    else:
        p = server_proto(max_frame_size=2 ** 30, max_message_size=256 * 1024)
        # the bomb in frames that are each small on the wire (one deflate stream)
        pieces = [bomb[i:i + 8192] for i in range(0, len(bomb), 8192)]
        data = b"".join(client_frame(OP_BINARY if i == 0 else OP_CONT, piece, fin=i == len(pieces) - 1,
                                     rsv1=i == 0) for i, piece in enumerate(pieces))
    assert len(data) < 100 * 1024
    mv = memoryview(data)
    tracemalloc.start()
    try:
        if step is None:
            events = p.receive_data(mv)
        else:
            events = []
            for i in range(0, len(data), step):
                events += p.receive_data(mv[i:i + step])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert events == []
    assert isinstance(p.failure, gws13.MessageTooLarge) and p.close_code == 1009
    assert f"{limit} {256 * 1024}" in p.failure.reason
    # the allowed 256 KiB (and the joined message it would be), the frame's bytes: not 64 MiB
    assert peak < 2 * 256 * 1024 + 2 * len(data) + 64 * 1024, peak


def test_send_message_compression_choices():
    p = server_proto()
    big = words(100)
    header = lambda pieces: pieces[0][0]
    assert header(p.send_message(big)) & 0x40                        # compressed
    assert not header(p.send_message("short")) & 0x40                # under min_size
    assert header(p.send_message("short", compress=True)) & 0x40     # forced
    assert not header(p.send_message(big, compress=False)) & 0x40    # opted out
    assert not header(Protocol().send_message(big, compress=True)) & 0x40   # nothing negotiated
    # the client side masks compressed frames
    c = Protocol(client=True, deflate=client_accept("permessage-deflate", DEFAULT))
    (frame,) = c.send_message(big)
    assert frame[0] & 0x40 and frame[1] & 0x80


def test_protocol_round_trip_both_ways():
    s, c, _ = pair(client_offer(DEFAULT))
    server, client = Protocol(deflate=s), Protocol(client=True, deflate=c)
    for i in range(20):
        msg = words(200 + i, seed=i)
        (frame,) = client.send_message(msg)
        assert [e.data for e in server.receive_data(frame)] == [msg]
        assert [e.data for e in client.receive_data(b"".join(server.send_message(msg.encode())))] == [msg.encode()]


# -- end to end --------------------------------------------------------------------

def echo_app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    for message in ws:
        ws.send(message)
    return []


def test_websockets_client_negotiates_and_round_trips(serve):
    srv = serve(echo_app)
    with websockets_connect(srv.url, open_timeout=5, max_size=None) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate; server_max_window_bits=12"
        for message in ["hi", words(1000), b"\x00" * 100000, "é" * 5000, random.Random(2).randbytes(200000),
                        words(1000)]:
            ws.send(message)
            assert ws.recv() == message
        # fragmented compressed message from the client
        ws.send([words(500, seed=i) for i in range(4)])
        assert ws.recv() == "".join(words(500, seed=i) for i in range(4))


@pytest.mark.parametrize("factory, answer", [
    (ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"),
    (ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9),
     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"),
    (ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=None),
     "permessage-deflate; server_max_window_bits=9"),
])
def test_websockets_client_with_parameters(serve, factory, answer):
    srv = serve(echo_app)
    with websockets_connect(srv.url, open_timeout=5, extensions=[factory], compression=None) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == answer
        for i in range(30):
            message = words(800, seed=i % 3)
            ws.send(message)
            assert ws.recv() == message


def test_compression_off_answers_without_the_extension(serve):
    def app(environ, start_response):
        return gws13.with_websocket(environ, start_response, lambda ws: [ws.send(m) for m in ws],
                                    compression=None)
    srv = serve(app)
    with websockets_connect(srv.url, open_timeout=5) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(words(100))
        assert ws.recv() == words(100)


def test_server_sends_compressed_frames_only_when_worth_it(serve):
    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        ws.send(words(100))
        ws.send("tiny")
        ws.send(words(100), compress=False)
        ws.send("tiny", compress=True)
        ws.receive()
        return []
    srv = serve(app)
    sock, status, headers, data = raw_connect(srv.port, headers=OFFER)
    assert status == 101
    while True:     # raw bytes, to look at the RSV1 bits
        p = Protocol(client=True, deflate=client_accept(headers["sec-websocket-extensions"], DEFAULT))
        if len([e for e in p.receive_data(data) if isinstance(e, Message)]) == 4:
            break
        data += sock.recv(65536)
    rsv1 = []
    pos = 0
    while pos < len(data):
        length = data[pos + 1] & 0x7F
        head = 2
        if length == 126:
            length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        rsv1.append(bool(data[pos] & 0x40))
        pos += head + length
    assert rsv1 == [True, False, False, True]
    sock.close()


class _CountingSocket:
    """Stands in for a connection's raw socket: counts the writes."""

    def __init__(self, sock, writes):
        self._sock = sock
        self.writes = writes  # the size of each, in order

    def send(self, data, *flags):
        self.writes.append(len(data))
        return self._sock.send(data, *flags)

    def sendmsg(self, pieces, *args):
        self.writes.append(sum(map(len, pieces)))
        return self._sock.sendmsg(pieces, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_held_compressed_replies_go_out_a_few_at_a_time(serve):
    # 32 messages queued at once: their 32 compressed replies are written neither in one
    # syscall (the client would wait for all 32 to be compressed) nor one syscall each
    writes = []

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        first = ws.receive()
        deadline = time.monotonic() + 5
        while len(ws._queue) < 31 and time.monotonic() < deadline:
            gevent.sleep(0.001)  # until the rest is read and queued
        ws._raw = _CountingSocket(ws._raw, writes)  # every write happens before its bytes arrive
        ws.send(first)
        for _ in range(31):
            ws.send(ws.receive())
        ws.receive()
        return []

    srv = serve(app)
    gws13.parameters.max_queue = 64
    texts = [words(150, seed=i) for i in range(32)]
    client = RawClient(srv.port, headers=OFFER)
    assert client.status == 101
    client.proto.deflate = client_accept(client.headers["sec-websocket-extensions"], DEFAULT)
    client.sock.sendall(b"".join(client_frame(OP_TEXT, t.encode()) for t in texts))
    got = [client.next_event().data for _ in texts]
    assert got == texts
    wire = sum(writes)
    assert wire < sum(map(len, texts)) / 2  # compressed
    assert 2 <= len(writes) < 32, writes
    assert max(writes) < 2048 + 1024, writes  # never much more than the threshold at once
    client.sock.close()


def test_a_compression_bomb_is_closed_with_1009_without_inflating_it(serve):
    srv = serve(echo_app)
    # 1 GiB of zeros deflates to about 1 MB: one frame, under the default 1 MiB max_frame_size
    payload = zero_bomb(2 ** 30)[:-4]
    assert len(payload) < gws13.parameters.max_frame_size
    c = RawClient(srv.port, headers=OFFER)
    assert c.headers["sec-websocket-extensions"].startswith("permessage-deflate")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        c.send_frame(OP_BINARY, payload, rsv=4)
        events = c.read_until_close(timeout=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    closes = [e for e in events if isinstance(e, Close)]
    assert closes and closes[0].code == 1009
    # the client's frame (~1 MB, masked copy) plus at most ~2x max_message_size in the server
    assert peak < 16 * 2 ** 20, f"peak traced allocation {peak} bytes"
    assert elapsed < 5
    c.close()


def test_a_fragmented_bomb_is_closed_with_1009(serve):
    srv = serve(echo_app)
    c = RawClient(srv.port, headers=OFFER)
    chunk = zero_bomb(16 * 2 ** 20)
    first = True
    try:
        for i in range(64):     # 64 frames of 16 MiB each, decompressed
            c.send_frame(OP_BINARY if first else OP_CONT, chunk, fin=(i == 63), rsv=4 if first else 0)
            first = False
    except OSError:
        pass    # the server closed on us, as it should
    events = c.read_until_close(timeout=10)
    closes = [e for e in events if isinstance(e, Close)]
    assert closes and closes[0].code == 1009
    c.close()


def test_max_message_size_is_about_the_decompressed_size(serve):
    def app(environ, start_response):
        return gws13.with_websocket(environ, start_response, lambda ws: [ws.send(m) for m in ws],
                                    max_message_size=4 * 2 ** 20, max_frame_size=4 * 2 ** 20)
    srv = serve(app)
    # compresses to ~3 KB, inflates under the raised limits (max_frame_size too:
    # the client sends it as one frame, and a frame's limit is on its data)
    big = bytes(3 * 2 ** 20)
    with websockets_connect(srv.url, open_timeout=5, max_size=None) as ws:
        ws.send(big)
        assert ws.recv() == big



@pytest.mark.parametrize("max_frame_size", [None, 2 * 2 ** 20])
def test_websockets_client_sends_an_incompressible_message_of_about_max_frame_size(serve, max_frame_size):
    # deflate makes the frame ~2.5 KB longer than its 1 MiB - 8 bytes of data: the
    # default max_frame_size (1 MiB) is about the data and lets it through (it was
    # closed with 1009 "frame of 1051129 bytes exceeds max_frame_size")
    limits = {"max_message_size": 2 * 2 ** 20}
    if max_frame_size is not None:
        limits["max_frame_size"] = max_frame_size

    def app(environ, start_response):
        return gws13.with_websocket(environ, start_response, lambda ws: [ws.send(m) for m in ws], **limits)
    srv = serve(app)
    message = os.urandom(2 ** 20 - 8)
    with websockets_connect(srv.url, open_timeout=5, compression="deflate", max_size=2 * 2 ** 20) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.send(message)
        assert ws.recv(timeout=10) == message
        ws.send(message[:2 ** 20 // 2])
        assert ws.recv(timeout=10) == message[:2 ** 20 // 2]


def test_gws13_client_to_gws13_server(serve):
    connect = getattr(gws13, "connect", None)
    if connect is None:
        pytest.skip("gws13.connect is not available (gws13/client.py missing)")
    srv = serve(echo_app)
    results = {}

    def run():
        ws = connect(srv.url)
        try:
            results["extensions"] = ws.extensions
            results["echo"] = []
            for message in [words(1000), b"\x01" * 50000, "short"] + [words(300, seed=i) for i in range(10)]:
                ws.send(message)
                results["echo"].append(ws.receive() == message)
            ws.send(words(100), compress=False)
            results["echo"].append(ws.receive() == words(100))
        finally:
            ws.close()
        off = connect(srv.url, compression=None)
        try:
            results["off"] = off.extensions
            off.send(words(100))
            results["echo"].append(off.receive() == words(100))
        finally:
            off.close()
        tight = connect(srv.url, compression=Deflate(server_max_window_bits=9, client_max_window_bits=9,
                                                     client_no_context_takeover=True))
        try:
            results["tight"] = tight.extensions
            for i in range(5):
                tight.send(words(800, seed=i))
                results["echo"].append(tight.receive() == words(800, seed=i))
        finally:
            tight.close()

    gevent.spawn(run).get(timeout=20)
    assert results["extensions"] == "permessage-deflate; server_max_window_bits=12"
    assert results["off"] is None
    assert results["tight"] == ("permessage-deflate; client_no_context_takeover; "
                                "server_max_window_bits=9; client_max_window_bits=9")
    assert all(results["echo"]) and len(results["echo"]) == 20


def test_concurrent_senders_keep_the_compressed_stream_in_order(serve):
    """With context takeover, frames must be written in the order they were
    compressed, also when greenlets queue on a congested socket's send lock
    (gevent's lock lets a releasing greenlet take it again first)."""
    senders, count = 4, 40

    def make(rnd: random.Random) -> bytes:
        # text at both ends (back-references into the previous message), noise between
        text = lambda: " ".join(f"w{rnd.randrange(3000)}" for _ in range(3000)).encode()
        return text() + rnd.randbytes(60000) + text()

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        ws._ensure()
        ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)

        def sender(k: int) -> None:
            rnd = random.Random(k)
            for _ in range(count):
                ws.send(make(rnd))
        gevent.joinall([gevent.spawn(sender, k) for k in range(senders)])
        ws.receive()
        return []

    expected = set()
    for k in range(senders):
        rnd = random.Random(k)
        expected.update(hashlib.sha1(make(rnd)).digest() for _ in range(count))
    srv = serve(app)
    sock, status, headers, rest = raw_connect(srv.port, headers=OFFER, timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    proto = Protocol(client=True, deflate=client_accept(headers["sec-websocket-extensions"], DEFAULT))
    time.sleep(0.5)     # let the server's socket fill up so that senders queue on the lock
    messages = [e for e in proto.receive_data(rest) if isinstance(e, Message)]
    while len(messages) < senders * count and proto.failure is None:
        data = sock.recv(65536)
        assert data, "connection closed early"
        messages += [e for e in proto.receive_data(data) if isinstance(e, Message)]
    sock.close()
    assert proto.failure is None, proto.failure
    corrupted = sum(hashlib.sha1(m.data).digest() not in expected for m in messages)
    assert corrupted == 0, f"{corrupted} of {len(messages)} messages corrupted"
