"""Streams (issue 15): ws.send(iterable) as one fragmented message and
ws.receive_stream() over a message's pieces, against real peers over loopback
(websockets, our own client, a raw socket reading the frames) and in-process
through gws13.testing.Client."""

from __future__ import annotations

import os
import queue
import socket
import struct
import zlib

import gevent
import gevent.event
import pytest

import gws13
from gws13.frames import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from gws13.testing import Client

from conftest import RawClient, close_code_after, connect

TIMEOUT = 5


def read_frame(sock, timeout=TIMEOUT):
    """One unmasked frame from the server: (fin, rsv1, opcode, payload)."""
    sock.settimeout(timeout)

    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return data

    b0, b1 = exactly(2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, exactly(length)


def read_message_frames(sock, timeout=TIMEOUT):
    """Frames up to the FIN of a data message; control frames in between are kept."""
    frames = []
    while True:
        frame = read_frame(sock, timeout)
        frames.append(frame)
        if frame[0] and frame[2] in (OP_TEXT, OP_BINARY, OP_CONT):
            return frames


def gated_chunks(gate, chunks, sent=None):
    """Yield each chunk after the gate opens (the test opens it from its thread)."""
    for chunk in chunks:
        gate.wait(TIMEOUT)
        gate.clear()
        if sent is not None:
            sent.put(chunk)
        yield chunk


# -- sending -----------------------------------------------------------------
def test_a_sent_stream_is_one_fragmented_message_for_websockets_and_for_our_client(serve):
    def proc(ws):
        for message in ws:
            n = int(message)
            ws.send(f"{i:05d}" * 1000 for i in range(n))          # text, a generator
            ws.send([b"\x00" * 70000, bytearray(b"\x01") * 3, memoryview(b"\x02" * 5)])  # binary, a list

    server = serve(gws13.websocket_app(proc))
    with connect(server.url, compression=None) as conn:
        conn.send("50")
        assert conn.recv(timeout=TIMEOUT) == "".join(f"{i:05d}" * 1000 for i in range(50))
        assert conn.recv(timeout=TIMEOUT) == b"\x00" * 70000 + b"\x01" * 3 + b"\x02" * 5
    ws = gws13.connect(server.url)
    try:
        ws.send("3")
        assert ws.receive(timeout=TIMEOUT) == "".join(f"{i:05d}" * 1000 for i in range(3))
        assert len(ws.receive(timeout=TIMEOUT)) == 70008
    finally:
        ws.close()


def test_the_wire_holds_a_frame_per_chunk_then_an_empty_final_frame(serve):
    def proc(ws):
        ws.receive()
        ws.send(iter(["ab", "", "cd"]))  # an empty chunk makes no frame
        ws.send(iter([]))                 # an empty iterable: one empty message
        ws.send(iter([]), binary=True)
        ws.receive()

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_TEXT, b"go")
    assert read_message_frames(client.sock) == [(False, False, OP_TEXT, b"ab"), (False, False, OP_CONT, b"cd"),
                                                (True, False, OP_CONT, b"")]
    assert read_frame(client.sock) == (True, False, OP_TEXT, b"")
    assert read_frame(client.sock) == (True, False, OP_BINARY, b"")
    client.close()


def test_a_ping_is_answered_between_the_fragments_of_a_stream(serve):
    gate = gevent.event.Event()
    sent = queue.Queue()

    def proc(ws):
        ws.receive()
        ws.send(gated_chunks(gate, [b"one", b"two"], sent))
        ws.receive()

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_TEXT, b"go")
    server.call(gate.set)
    assert read_frame(client.sock) == (False, False, OP_BINARY, b"one")
    client.send_frame(OP_PING, b"mid")   # the stream waits for its gate: the reader answers
    assert read_frame(client.sock) == (True, False, OP_PONG, b"mid")
    server.call(gate.set)
    assert read_frame(client.sock) == (False, False, OP_CONT, b"two")
    server.call(gate.set)  # the generator's end
    assert read_frame(client.sock) == (True, False, OP_CONT, b"")
    client.close()


def test_other_greenlets_sends_wait_for_the_end_of_a_stream(serve):
    gate = gevent.event.Event()
    order = queue.Queue()

    def proc(ws):
        ws.receive()

        def other(i):
            ws.send(f"other {i}")
            order.put(i)

        def chunks():
            for i in range(5):
                gate.wait(TIMEOUT)
                gate.clear()
                yield b"%d" % i
                if i == 1:
                    # others try to send in the middle of the stream
                    for j in range(3):
                        gevent.spawn(other, j)
                    gevent.sleep(0.01)

        ws.send(chunks())
        ws.receive()

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_TEXT, b"go")
    frames = []
    for _ in range(4):
        server.call(gate.set)
        frames.append(read_frame(client.sock))
    assert order.empty()  # all three are still waiting
    server.call(gate.set)  # the last chunk, then the end
    frames.append(read_frame(client.sock))
    frames.append(read_frame(client.sock))
    assert [f[2] for f in frames] == [OP_BINARY] + [OP_CONT] * 5 and frames[-1][0]
    # then the waiting sends, whole and in order
    assert [read_frame(client.sock) for _ in range(3)] == [
        (True, False, OP_TEXT, f"other {j}".encode()) for j in range(3)]
    client.close()


def test_an_iterable_that_raises_after_a_fragment_closes_1011_and_the_caller_gets_the_error(serve):
    errors = queue.Queue()

    def chunks():
        yield b"first"
        raise LookupError("source failed")

    def proc(ws):
        ws.receive()
        try:
            ws.send(chunks())
        except LookupError as exc:
            errors.put(exc)
        with pytest.raises(gws13.ConnectionClosed):
            ws.send("after")  # never a second message after the half one
        errors.put("closed")

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_TEXT, b"go")
    assert read_frame(client.sock) == (False, False, OP_BINARY, b"first")
    fin, _, opcode, payload = read_frame(client.sock)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011
    assert isinstance(errors.get(timeout=TIMEOUT), LookupError)
    assert errors.get(timeout=TIMEOUT) == "closed"
    client.close()


def test_bad_chunks_raise_typeerror_and_close_only_once_something_was_sent(serve):
    results = queue.Queue()

    def proc(ws):
        ws.receive()
        for bad in ([1, 2], ["a", b"b"]):
            try:
                ws.send(bad)
            except TypeError as exc:
                results.put(("TypeError", ws.closed, str(exc)))
        ws.send("still open")
        ws.receive()
        try:
            ws.send(iter([b"x", "y"]))
        except TypeError:
            results.put(("TypeError", ws.closed, "after a fragment"))

    server = serve(gws13.websocket_app(proc))
    with connect(server.url) as conn:
        conn.send("go")
        assert results.get(timeout=TIMEOUT)[:2] == ("TypeError", False)   # [1, 2]: nothing sent
        assert results.get(timeout=TIMEOUT)[:2] == ("TypeError", True)    # "a" went out, then b"b"
        assert close_code_after(conn) == 1011
    with connect(server.url) as conn:
        conn.send("go")
        results.get(timeout=TIMEOUT)
        results.get(timeout=TIMEOUT)


def test_deflate_runs_across_the_fragments(serve):
    chunks = [os.urandom(1000) * 20 for _ in range(4)]  # compressible, each chunk different

    def proc(ws):
        ws.receive()
        ws.send(iter(chunks))
        ws.send(iter(["hello " * 500, "world " * 500]))
        for message in ws:
            ws.send(message)

    server = serve(gws13.websocket_app(proc))
    # websockets negotiates permessage-deflate and inflates the fragments as one message
    with connect(server.url) as conn:
        assert conn.protocol.extensions  # deflate negotiated
        conn.send("go")
        assert conn.recv(timeout=TIMEOUT) == b"".join(chunks)
        assert conn.recv(timeout=TIMEOUT) == "hello " * 500 + "world " * 500
    # on the wire: RSV1 on the first frame only, each frame far smaller than its chunk
    client = RawClient(server.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert "permessage-deflate" in client.headers.get("sec-websocket-extensions", "")
    client.send_frame(OP_TEXT, b"go")
    frames = read_message_frames(client.sock)
    assert [f[1] for f in frames] == [True] + [False] * (len(frames) - 1)
    assert len(frames) == 5 and all(len(f[3]) < 4000 for f in frames)
    inflater = zlib.decompressobj(-15)
    data = inflater.decompress(b"".join(f[3] for f in frames) + b"\x00\x00\xff\xff")
    assert data == b"".join(chunks)
    # the context goes on (context takeover) into the text message that follows
    frames = read_message_frames(client.sock)
    assert inflater.decompress(b"".join(f[3] for f in frames) + b"\x00\x00\xff\xff") == \
        ("hello " * 500 + "world " * 500).encode()
    client.close()
    # our client sends a compressed stream, the server echoes it whole
    ws = gws13.connect(server.url)
    try:
        assert ws.extensions
        ws.send("skip")
        ws.receive(timeout=TIMEOUT), ws.receive(timeout=TIMEOUT)
        ws.send(iter(chunks))
        assert ws.receive(timeout=TIMEOUT) == b"".join(chunks)
    finally:
        ws.close()


# -- receiving ---------------------------------------------------------------
def test_a_stream_from_a_websockets_peer_arrives_in_pieces(serve):
    results = queue.Queue()

    def proc(ws):
        stream = ws.receive_stream()
        pieces = list(stream)
        results.put((stream.text, len(pieces), "".join(pieces) if stream.text else b"".join(pieces)))
        stream = ws.receive_stream(max_size=None)
        pieces = list(stream)
        results.put((stream.text, len(pieces), b"".join(pieces)))
        ws.send("done")

    server = serve(gws13.websocket_app(proc))
    text = [f"part {i} é " * 100 for i in range(10)]
    binary = [bytes([i]) * 100000 for i in range(30)]  # 3 MB: over max_message_size, fine with None
    with connect(server.url) as conn:
        conn.send(iter(text))  # websockets fragments: a frame per chunk
        assert results.get(timeout=TIMEOUT) == (True, 10, "".join(text))
        conn.send(iter(binary))
        is_text, count, data = results.get(timeout=TIMEOUT)
        assert (is_text, data) == (False, b"".join(binary)) and count >= 30
        assert conn.recv(timeout=TIMEOUT) == "done"


def test_pieces_come_as_frames_arrive_not_at_the_end(serve):
    got = queue.Queue()

    def proc(ws):
        for piece in ws.receive_stream():
            got.put(piece)
        got.put(None)

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_BINARY, b"a" * 10, fin=False)
    assert got.get(timeout=TIMEOUT) == b"a" * 10        # before the rest of the message exists
    client.send_frame(OP_PING, b"p")                      # a control frame between fragments
    assert client.next_event().payload == b"p"
    client.send_frame(OP_CONT, b"b" * 20, fin=False)
    assert got.get(timeout=TIMEOUT) == b"b" * 20
    client.send_frame(OP_CONT, b"", fin=True)
    assert got.get(timeout=TIMEOUT) is None
    client.close()


def test_max_size_exceeded_closes_1009_and_raises_in_the_reader(serve):
    results = queue.Queue()

    def proc(ws):
        stream = ws.receive_stream(max_size=1000)
        total = 0
        try:
            for piece in stream:
                total += len(piece)
        except gws13.MessageTooLarge as exc:
            results.put((total, exc.code))

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_BINARY, b"x" * 600, fin=False)
    client.send_frame(OP_CONT, b"x" * 600, fin=False)
    assert results.get(timeout=TIMEOUT) == (600, 1009)
    assert client.read_until_close()[-1].code == 1009
    client.close()


def test_invalid_utf8_in_the_middle_of_a_text_stream_closes_1007_at_once(serve):
    results = queue.Queue()

    def proc(ws):
        pieces = []
        try:
            for piece in ws.receive_stream():
                pieces.append(piece)
        except gws13.InvalidData as exc:
            results.put((pieces, exc.code))

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_TEXT, "caf".encode(), fin=False)
    client.send_frame(OP_CONT, b"\xc3", fin=False)   # half a character: fine so far
    client.send_frame(OP_CONT, b"\xa9\xff", fin=False)  # é then a byte that is never UTF-8
    # no final frame was sent: the error comes as soon as the bad byte is seen
    pieces, code = results.get(timeout=TIMEOUT)
    assert code == 1007 and "".join(pieces) in ("caf", "café")
    assert client.read_until_close()[-1].code == 1007
    client.close()


def test_memory_stays_bounded_while_a_64_mib_stream_is_read_slowly(serve):
    sizes = queue.Queue()
    chunk = os.urandom(1 << 16)
    total = 64 << 20

    def proc(ws):
        stream = ws.receive_stream(max_size=None)
        received, most, buffered = 0, 0, 0
        for i, piece in enumerate(stream):
            received += len(piece)
            # what the connection holds for this stream: unread pieces, the parser's buffer
            most = max(most, stream._sink._size)
            buffered = max(buffered, len(ws._proto._buf))
            if i % 64 == 0:
                gevent.sleep(0.001)  # a slow consumer
        sizes.put((received, most, buffered, len(ws._queue)))
        ws.send("ok")

    server = serve(gws13.websocket_app(proc))
    ws = gws13.connect(server.url, compression=None)
    try:
        ws.send(chunk for _ in range(total // len(chunk)))
        received, most, buffered, queued = sizes.get(timeout=60)
        assert received == total
        assert most <= (1 << 18) + (1 << 16) + (1 << 18)   # high mark + one step + one read
        assert buffered <= 1 << 19
        assert queued == 0
        assert ws.receive(timeout=TIMEOUT) == "ok"
    finally:
        ws.close()


def test_a_compressed_stream_is_inflated_in_bounded_steps():
    # a decompression bomb streamed with no size limit: still bounded memory per step
    most = []

    def proc(ws):
        stream = ws.receive_stream(max_size=None)
        total = 0
        for piece in stream:
            total += len(piece)
            most.append(stream._sink._size)
        ws.send(str(total))

    client = Client(gws13.websocket_app(proc))
    with client.connect("/", compression=gws13.Deflate()) as ws:
        assert ws.extensions
        ws.send(b"\x00" * (1 << 20) for _ in range(32))  # 32 MiB of zeros: ~32 KiB on the wire
        assert ws.receive(timeout=30) == str(32 << 20)
    assert max(most) <= (1 << 18) + 300 * 1032


def test_mixed_use_with_receive_is_an_error_and_break_skips_the_rest(serve):
    results = queue.Queue()

    def proc(ws):
        stream = ws.receive_stream()
        first = next(stream)
        try:
            ws.receive()
        except RuntimeError as exc:
            results.put(("receive", str(exc)))
        try:
            ws.receive_stream()
        except RuntimeError:
            results.put(("receive_stream", "refused"))
        stream.close()  # abandon the rest: skipped as it arrives
        results.put(("first", first))
        results.put(("next", ws.receive(timeout=TIMEOUT)))
        for piece in ws.receive_stream():
            results.put(("loop", piece))
            break  # an unreferenced stream left by break: skipped too
        results.put(("after break", ws.receive(timeout=TIMEOUT)))
        ws.send("usable")

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_TEXT, b"one", fin=False)
    assert results.get(timeout=TIMEOUT)[0] == "receive"
    assert results.get(timeout=TIMEOUT) == ("receive_stream", "refused")
    assert results.get(timeout=TIMEOUT) == ("first", "one")
    client.send_frame(OP_CONT, b"skipped", fin=False)
    client.send_frame(OP_CONT, b"skipped too", fin=True)
    client.send_frame(OP_TEXT, b"two")
    assert results.get(timeout=TIMEOUT) == ("next", "two")
    client.send_frame(OP_BINARY, b"3a", fin=False)
    assert results.get(timeout=TIMEOUT) == ("loop", b"3a")
    client.send_frame(OP_CONT, b"3b", fin=True)
    client.send_frame(OP_TEXT, b"four")
    assert results.get(timeout=TIMEOUT) == ("after break", "four")
    assert client.next_event().data == "usable"
    client.close()


def test_a_large_message_that_arrives_before_receive_stream_is_held_for_it(serve):
    # the peer sends a command and a large message in one write, before the
    # server asks for a stream: the message waits (unparsed, reading paused)
    results = queue.Queue()

    def proc(ws):
        results.put(ws.receive())
        gevent.sleep(0.2)  # everything has arrived meanwhile
        results.put(len(ws.receive_stream(max_size=None).read()))
        results.put(ws.receive())
        try:
            ws.receive()  # over max_message_size and taken by receive: refused, 1009
        except gws13.ConnectionClosed:
            pass
        results.put(ws.failure.code if ws.failure else None)

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    big = os.urandom(3 << 20)
    from gws13.frames import apply_mask, encode_header
    mask = b"\x01\x02\x03\x04"
    wire = (encode_header(OP_TEXT, 6, True, False, mask) + apply_mask(b"upload", mask)
            + encode_header(OP_BINARY, len(big), True, False, mask) + apply_mask(big, mask)
            + encode_header(OP_TEXT, 4, True, False, mask) + apply_mask(b"next", mask)
            + encode_header(OP_BINARY, len(big), True, False, mask) + apply_mask(big, mask))
    client.sock.sendall(wire)
    assert results.get(timeout=TIMEOUT) == "upload"
    assert results.get(timeout=TIMEOUT) == len(big)
    assert results.get(timeout=TIMEOUT) == "next"
    assert results.get(timeout=TIMEOUT) == 1009
    assert client.read_until_close()[-1].code == 1009
    client.close()


def test_receive_stream_at_the_end_of_the_connection_is_none_then_closed():
    results = []

    def proc(ws):
        ws.send("bye")
        ws.close()

    with Client(gws13.websocket_app(proc)).connect("/") as ws:
        stream = ws.receive_stream(timeout=TIMEOUT)
        assert stream.read() == "bye"  # had arrived already: one piece
        assert ws.receive_stream(timeout=TIMEOUT) is None
        with pytest.raises(gws13.ConnectionClosed):
            ws.receive_stream(timeout=TIMEOUT)
    del results


def test_a_connection_lost_in_the_middle_of_a_stream_raises(serve):
    results = queue.Queue()

    def proc(ws):
        stream = ws.receive_stream()
        try:
            for _ in stream:
                pass
        except gws13.ConnectionClosed as exc:
            results.put(exc.code)

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    client.send_frame(OP_BINARY, b"half", fin=False)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    assert results.get(timeout=TIMEOUT) == 1006


def test_a_timeout_waiting_for_a_piece():
    def proc(ws):
        ws.receive()

    with Client(gws13.websocket_app(proc)).connect("/") as ws:
        with pytest.raises(TimeoutError):
            ws.receive_stream(timeout=0.05)
        ws.send("x")


def test_proxying_one_stream_into_another():
    def proc(ws):
        stream = ws.receive_stream(max_size=None)
        ws.send(piece.upper() for piece in stream)

    with Client(gws13.websocket_app(proc)).connect("/") as ws:
        ws.send(["abc", "déf"] * 1000)
        assert ws.receive(timeout=TIMEOUT) == "ABCDÉF" * 1000


# -- the protocol core's sink, with the C functions and the pure-Python ones ---
class ListSink:
    def __init__(self, limit=None):
        self.events, self.limit = [], limit

    def start(self, text):
        self.events.append(("start", text))

    def piece(self, data):
        self.events.append(data)

    def end(self):
        self.events.append("end")

    def full(self):
        return False


@pytest.mark.parametrize("impl", ["c", "py"])
def test_protocol_stream_next_over_any_split(impl):
    import random

    from gws13.frames import apply_mask, encode_header
    from gws13.protocol import Protocol
    from test_fuzz import implementation

    rng = random.Random(15)
    with implementation(impl):
        for round_ in range(40):
            text = round_ % 2 == 0
            data = ("é€x" * rng.randint(0, 30000)).encode() if text else os.urandom(rng.randint(0, 90000))
            cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 5))))
            parts = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
            wire = b""
            for i, part in enumerate(parts):
                mask = os.urandom(4)
                op = (OP_TEXT if text else OP_BINARY) if i == 0 else OP_CONT
                wire += encode_header(op, len(part), i == len(parts) - 1, False, mask) + apply_mask(part, mask)
            mask = os.urandom(4)
            wire += encode_header(OP_TEXT, 2, True, False, mask) + apply_mask(b"ok", mask)  # the next message
            proto = Protocol(max_message_size=1000)  # the stream's own limit replaces it
            proto.hold_oversized = True  # as the connection layer sets it
            sink, messages = ListSink(), []
            early = rng.randint(0, len(wire))  # part of the input may arrive before stream_next
            proto.receive_data(wire[:early], messages)
            proto.stream_next(sink, None)
            pos = early
            while pos < len(wire):
                step = rng.randint(1, 70000)
                proto.receive_data(wire[pos:pos + step], messages)
                pos += step
            assert proto.failure is None, proto.failure
            assert sink.events[0] == ("start", text) and sink.events[-1] == "end"
            pieces = sink.events[1:-1]
            assert (("".join(pieces)).encode() if text else b"".join(pieces)) == data
            assert messages == ["ok"] and proto.max_message_size == 1000


def _oversized_wire(size=3 << 20):
    from gws13.frames import apply_mask, encode_header
    mask = b"\x01\x02\x03\x04"
    return encode_header(OP_BINARY, size, True, False, mask) + apply_mask(os.urandom(size), mask)


def test_an_oversized_message_reaching_a_blocked_receive_is_refused_with_1009(serve):
    # receive() is already waiting when the message's header arrives: it is
    # refused at once, as without streams (the hold must not leave it waiting)
    results = queue.Queue()

    def proc(ws):
        try:
            results.put(ws.receive(timeout=TIMEOUT))
        except Exception as exc:  # pragma: no cover - shown by the assertion
            results.put(exc)
        results.put(ws.failure.code if ws.failure else None)

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    gevent.sleep(0.1)  # the server's receive() is parked
    client.sock.sendall(_oversized_wire()[:1 << 16])
    assert results.get(timeout=TIMEOUT) is None
    assert results.get(timeout=TIMEOUT) == 1009
    assert client.read_until_close()[-1].code == 1009
    client.close()


def test_a_held_message_while_the_app_only_sends_keeps_memory_bounded_and_close_works(serve):
    # the application never reads: the held message stops reading (bounded
    # memory, TCP backpressure), sends still go out, and closing from our
    # side ends the connection within close_timeout
    results = queue.Queue()
    gate = gevent.event.Event()

    def proc(ws):
        ws.send("hello")
        gate.wait(TIMEOUT)
        results.put(len(ws._proto._buf))
        ws.send("still here")
        ws.close(4000, "bye")
        results.put(ws.closed)

    server = serve(gws13.websocket_app(proc, close_timeout=1))
    client = RawClient(server.port)
    assert client.next_event().data == "hello"
    wire = _oversized_wire(16 << 20)
    client.sock.settimeout(0.2)
    sent = 0
    try:  # until TCP backpressure stops us
        while sent < len(wire):
            sent += client.sock.send(wire[sent:sent + (1 << 16)])
    except socket.timeout:
        pass
    assert sent < len(wire)  # the server stopped reading
    gate.set()
    assert results.get(timeout=TIMEOUT) <= 1 << 19  # a read or two, not the message
    client.sock.settimeout(TIMEOUT)
    assert client.next_event().data == "still here"
    assert results.get(timeout=TIMEOUT) is True
    assert client.read_until_close()[-1].code == 4000
    client.close()


def test_streamed_messages_and_bytes_are_counted_in_stats_and_metrics():
    results = []

    def proc(ws):
        stream = ws.receive_stream(max_size=None)
        results.append(len(stream.read()))
        ws.send(iter([b"x" * 1000, b"y" * 2000]))
        results.append(dict(ws.stats))

    before = gws13.metrics()
    with Client(gws13.websocket_app(proc)).connect("/") as ws:
        ws.send([b"a" * 3000, b"b" * 4000])
        assert ws.receive(timeout=TIMEOUT) == b"x" * 1000 + b"y" * 2000
    stats = results[1]
    assert results[0] == 7000
    assert stats["messages_received"] == 1 and stats["payload_bytes_received"] == 7000
    assert stats["messages_sent"] == 1 and stats["payload_bytes_sent"] == 3000
    after = gws13.metrics()
    assert after["messages_received"] - before["messages_received"] >= 2  # both sides count
    assert after["messages_sent"] - before["messages_sent"] >= 2


def test_a_multibyte_character_split_across_frames_arrives_whole_in_a_text_stream(serve):
    results = queue.Queue()

    def proc(ws):
        results.put(list(ws.receive_stream()))

    server = serve(gws13.websocket_app(proc))
    client = RawClient(server.port)
    euro = "€".encode()  # three bytes, one per frame
    client.send_frame(OP_TEXT, b"a" + euro[:1], fin=False)
    client.send_frame(OP_CONT, euro[1:2], fin=False)
    client.send_frame(OP_CONT, euro[2:] + "é".encode()[:1], fin=False)
    client.send_frame(OP_CONT, "é".encode()[1:] + b"z", fin=True)
    pieces = results.get(timeout=TIMEOUT)
    assert "".join(pieces) == "a€éz" and all(isinstance(p, str) for p in pieces)
    client.close()


def test_a_large_upload_streamed_with_no_limit_while_pings_are_answered(serve):
    # 24 MiB in 64 KiB frames; after every 4 MiB the client pings and waits
    # for the pong before sending on: pings are answered while the stream is read
    results = queue.Queue()
    frame = os.urandom(1 << 16)
    count = 24 * 16

    def proc(ws):
        total = 0
        for piece in ws.receive_stream(max_size=None):
            total += len(piece)
        results.put(total)

    server = serve(gws13.websocket_app(proc, max_message_size=1 << 20))
    client = RawClient(server.port)
    for i in range(count):
        client.send_frame(OP_BINARY if i == 0 else OP_CONT, frame, fin=i == count - 1)
        if i % 64 == 63 and i != count - 1:
            payload = struct.pack("!I", i)
            client.send_frame(OP_PING, payload)
            event = client.next_event()
            assert type(event).__name__ == "Pong" and event.payload == payload
    assert results.get(timeout=30) == count << 16
    client.close()


def test_websocket_client_reads_a_sent_stream_as_one_message(serve):
    import websocket  # websocket-client

    def proc(ws):
        ws.receive()
        ws.send(bytes([i]) * 50000 for i in range(10))
        ws.send(iter(["déjà ", "vu"]))
        ws.receive()

    server = serve(gws13.websocket_app(proc))
    conn = websocket.create_connection(server.url, timeout=TIMEOUT)
    try:
        conn.send("go")
        assert conn.recv() == b"".join(bytes([i]) * 50000 for i in range(10))
        assert conn.recv() == "déjà vu"
        conn.send("end")
    finally:
        conn.close()
