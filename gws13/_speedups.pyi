# Types of the C accelerator (_speedups.c); frames.py falls back to pure Python without it.
from typing import Any, List, Optional, Tuple, Union

from _typeshed import ReadableBuffer, WriteableBuffer

def apply_mask(data: ReadableBuffer, mask: ReadableBuffer) -> bytes: ...
def new_payload(n: int, /) -> Tuple[bytes, memoryview]: ...
def unmask_into(dst: WriteableBuffer, offset: int, data: ReadableBuffer,
                mask: Optional[ReadableBuffer], /) -> None: ...
class Counters:
    bytes_in: int
    messages_in: int
    payload_in: int
    queue_high: int
    messages_out: int
    payload_out: int

def scan_small(data: ReadableBuffer, pos: int, max_frame_size: int, max_message_size: int,
               out: List[Union[str, bytes]], counts: Counters, /) -> int: ...
def frame_small(data: object, binary: Optional[bool], counts: Counters, /) -> Optional[bytes]: ...
# (not on Windows) the hub's broadcast loop: (delivered, rest, [member, bytes sent, ...])
def fanout(members: List[Any], frame: bytes, payload_len: int, here: object,
           /) -> Tuple[int, List[Any], List[Any]]: ...
