"""The on-disk format of a :class:`~otel_topics.spool.DurableLog` segment.

A segment file ``000000000042.seg`` starts with the 8-byte magic ``OTSPOOL1``, followed by
records. A record is a 9-byte little-endian header -- payload length (u32), CRC32 of the kind
byte followed by the payload (u32), kind (u8) -- then the payload.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

MAGIC: Final = b"OTSPOOL1"
HEADER: Final = struct.Struct("<IIB")  # payload length, crc32(kind + payload), kind
HEADER_SIZE: Final = HEADER.size
SEGMENT_RE: Final = re.compile(r"^(\d{12})\.seg$")
_REF: Final = struct.Struct("<QQI")
REF_SIZE: Final = _REF.size
_IOV_MAX: Final = 1024


class RecordRef(NamedTuple):
    """Where a record's payload lives: segment number, payload offset in the segment, payload length."""

    segment: int
    offset: int
    length: int


def segment_name(number: int) -> str:
    return f"{number:012d}.seg"


def pack_refs(refs: Iterable[RecordRef]) -> bytes:
    """Record references as bytes (20 each), for tombstones and acks."""
    return b"".join(_REF.pack(*r) for r in refs)


def unpack_refs(data: bytes | memoryview) -> list[RecordRef]:
    return [RecordRef(*t) for t in _REF.iter_unpack(data)]


def crc(kind: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes((kind,))))


def header(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), crc(kind, payload), kind)


def valid_end(data: bytes) -> int:
    """End of the last intact record of a segment's bytes (magic already checked)."""
    view = memoryview(data)
    pos, size = len(MAGIC), len(data)
    while pos + HEADER_SIZE <= size:
        length, check, kind = HEADER.unpack_from(view, pos)
        end = pos + HEADER_SIZE + length
        if end > size or crc(kind, view[pos + HEADER_SIZE : end]) != check:
            break
        pos = end
    view.release()
    return pos


def iter_records(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(kind, payload offset, payload length)`` of each record of verified segment bytes."""
    pos = len(MAGIC)
    while pos + HEADER_SIZE <= len(data):
        length, _, kind = HEADER.unpack_from(data, pos)
        start = pos + HEADER_SIZE
        yield kind, start, length
        pos = start + length


def pwrite_all(fd: int, bufs: list[bytes], offset: int) -> None:
    """Write ``bufs`` contiguously at ``offset`` (vectored, at most IOV_MAX buffers per call)."""
    for i in range(0, len(bufs), _IOV_MAX):
        chunk = bufs[i : i + _IOV_MAX]
        total = sum(len(b) for b in chunk)
        done = os.pwritev(fd, chunk, offset)
        if done != total:  # short write: finish byte by byte
            rest = memoryview(b"".join(chunk))[done:]
            while rest:
                n = os.pwrite(fd, rest, offset + done)
                done += n
                rest = rest[n:]
        offset += total
