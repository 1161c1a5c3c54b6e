"""Splitting serialized OTLP trace/log requests by trace id, at the protobuf wire level.

Copying spans between parsed protobuf messages costs several times more than parsing them.
The assembler instead cuts each spooled record's bytes into per-trace pieces (resource and scope
kept, unknown fields too) and parses each trace's concatenated pieces once.

Both request types share one shape, which is all this module relies on::

    Export{Trace,Logs}ServiceRequest { repeated Resource{Spans,Logs} = 1 }
    Resource{Spans,Logs} { Resource resource = 1; repeated Scope{Spans,Logs} = 2; string schema_url = 3 }
    Scope{Spans,Logs} { InstrumentationScope scope = 1; repeated Span|LogRecord = 2; string schema_url = 3 }
    Span.trace_id = 1, LogRecord.trace_id = 9 (bytes)
"""

from __future__ import annotations

from typing import Final

SPAN_TRACE_ID: Final = 1
LOG_TRACE_ID: Final = 9

_LEN: Final = 2
_CONTAINER_KEY: Final = (1 << 3) | _LEN  # field 1: resource_spans / resource_logs
_SCOPE_KEY: Final = (2 << 3) | _LEN  # field 2 of Resource*: scope_spans / scope_logs
_ITEM_KEY: Final = (2 << 3) | _LEN  # field 2 of Scope*: spans / log_records


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _skip(buf: bytes, pos: int, wire_type: int) -> int:
    """End of a field's value that starts at ``pos``."""
    if wire_type == _LEN:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire_type == 0:
        return _varint(buf, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == 5:
        return pos + 4
    raise WireError(f"unsupported wire type {wire_type}")


def _trace_id(buf: bytes, pos: int, end: int, field: int) -> bytes:
    """The ``field`` (bytes) of the message in ``buf[pos:end]``; b"" when absent.

    Serializers write a singular field once, so the first occurrence is taken.
    """
    want = (field << 3) | _LEN
    while pos < end:
        key = buf[pos]  # field numbers of Span and LogRecord fit one byte
        if key == want:
            length = buf[pos + 1]
            if length < 0x80:
                return buf[pos + 2 : pos + 2 + length]
            length, pos = _varint(buf, pos + 1)
            return buf[pos : pos + length]
        if key >= 0x80:
            key, pos = _varint(buf, pos)
            pos = _skip(buf, pos, key & 7)
        else:
            pos = _skip(buf, pos + 1, key & 7)
    return b""


def _split_scope(
    buf: bytes, pos: int, end: int, wanted: set[bytes], tid_field: int
) -> dict[bytes, list[bytes]]:
    """Per wanted trace id: the scope's own fields followed by that trace's items (all raw)."""
    head: list[bytes] = []
    items: dict[bytes, list[bytes]] = {}
    while pos < end:
        start = pos
        key = buf[pos]
        if key == _ITEM_KEY:  # the hot path, inlined: one-byte key, length of up to two bytes
            length = buf[pos + 1]
            if length < 0x80:
                body = pos + 2
            elif buf[pos + 2] < 0x80:
                length = (length & 0x7F) | (buf[pos + 2] << 7)
                body = pos + 3
            else:
                length, body = _varint(buf, pos + 1)
            pos = body + length
            tid = _trace_id(buf, body, pos, tid_field)
            if tid in wanted:
                group = items.get(tid)
                if group is None:
                    items[tid] = group = [b""]  # placeholder for the head
                group.append(buf[start:pos])
        else:
            key, pos = _varint(buf, pos)
            pos = _skip(buf, pos, key & 7)
            head.append(buf[start:pos])
    if pos != end:
        raise WireError("scope message overruns its length")
    if items:
        joined = b"".join(head)
        for group in items.values():
            group[0] = joined
    return items


def _split_resource(
    buf: bytes, pos: int, end: int, wanted: set[bytes], tid_field: int, out: dict[bytes, list[bytes]]
) -> None:
    head: list[bytes] = []
    scopes: dict[bytes, list[bytes]] = {}
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        if key == _SCOPE_KEY:
            length, body = _varint(buf, pos)
            pos = body + length
            for tid, parts in _split_scope(buf, body, pos, wanted, tid_field).items():
                content = b"".join(parts)
                scopes.setdefault(tid, []).append(
                    b"".join((bytes((_SCOPE_KEY,)), _encode_varint(len(content)), content))
                )
        else:
            pos = _skip(buf, pos, key & 7)
            head.append(buf[start:pos])
    if pos != end:
        raise WireError("resource message overruns its length")
    if scopes:
        joined = b"".join(head)
        for tid, parts in scopes.items():
            content = joined + b"".join(parts)
            out.setdefault(tid, []).append(
                b"".join((bytes((_CONTAINER_KEY,)), _encode_varint(len(content)), content))
            )


def split_by_trace(payload: bytes, wanted: set[bytes], tid_field: int, out: dict[bytes, list[bytes]]) -> None:
    """Append to ``out[trace_id]`` the serialized pieces of ``payload`` (an export request) that
    belong to each wanted trace. ``b"".join(out[tid])`` is a valid request of the same type.

    Raises :class:`WireError` on malformed bytes.
    """
    found: dict[bytes, list[bytes]] = {}
    pos, end = 0, len(payload)
    try:
        while pos < end:
            key, pos = _varint(payload, pos)
            if key == _CONTAINER_KEY:
                length, body = _varint(payload, pos)
                pos = body + length
                if pos > end:
                    raise WireError("resource message overruns the request")
                _split_resource(payload, body, pos, wanted, tid_field, found)
            else:
                pos = _skip(payload, pos, key & 7)
    except IndexError as exc:
        raise WireError("truncated protobuf message") from exc
    if pos != end:
        raise WireError("request overruns its length")
    for tid, parts in found.items():
        out.setdefault(tid, []).extend(parts)
