"""Exporter queue entries, the queue protocol, and the in-memory queue (see :mod:`otel_topics.exporter`).

A queue entry is a 6-byte header (format version, signal code, item count, little-endian) followed by the
serialized OTLP export request as it is. The persistent queue is ``otel_topics.spool.PersistentQueue``.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any, Final, Protocol

from otel_topics.errors import Backpressure
from otel_topics.model import Signal

__all__ = ["MemoryQueue", "QueueLike", "count_items", "pack_entry", "peek_signal", "unpack_entry"]

_Bytes = bytes  # the queues have a ``bytes`` property, which shadows the builtin inside their class body

# --- queue entries -----------------------------------------------------------------------------------
HEADER: Final = struct.Struct("<BBI")  # format version, signal code, item count
_VERSION: Final = 1
SIGNAL_CODES: Final[dict[Signal, int]] = {"traces": 1, "logs": 2, "metrics": 3}
_CODE_SIGNALS: Final[dict[int, Signal]] = {v: k for k, v in SIGNAL_CODES.items()}


def pack_entry(signal: Signal, payload: _Bytes, items: int) -> _Bytes:
    """A queue entry: the header then the serialized export request as it is."""
    return HEADER.pack(_VERSION, SIGNAL_CODES[signal], max(0, min(items, 0xFFFFFFFF))) + payload


def unpack_entry(entry: _Bytes) -> tuple[Signal, int, _Bytes]:
    """``(signal, items, payload)`` of a queue entry. Raises ValueError on a malformed entry."""
    if len(entry) < HEADER.size:
        raise ValueError(f"queue entry of {len(entry)} bytes is shorter than its {HEADER.size}-byte header")
    version, code, items = HEADER.unpack_from(entry)
    if version != _VERSION:
        raise ValueError(f"queue entry has format version {version}, expected {_VERSION}")
    signal = _CODE_SIGNALS.get(code)
    if signal is None:
        raise ValueError(f"queue entry has unknown signal code {code}")
    return signal, items, entry[HEADER.size :]


def peek_signal(entry: _Bytes) -> Signal | None:
    """The signal of a well-formed entry, without copying its payload; None if malformed."""
    if len(entry) < HEADER.size or entry[0] != _VERSION:
        return None
    return _CODE_SIGNALS.get(entry[1])


def count_items(signal: Signal, payload: _Bytes) -> int:
    """Spans, log records or metric data points in a serialized export request (parses it)."""
    from otel_topics import otlp

    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        return otlp.count_spans(ExportTraceServiceRequest.FromString(payload))
    if signal == "logs":
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        return otlp.count_log_records(ExportLogsServiceRequest.FromString(payload))
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    return otlp.count_data_points(ExportMetricsServiceRequest.FromString(payload))


# --- queues ------------------------------------------------------------------------------------------
class QueueLike(Protocol):
    """What an exporter needs from its queue (``otel_topics.spool.PersistentQueue``, :class:`MemoryQueue`).

    ``put`` returns once the entry is durable and raises :class:`Backpressure` when the queue is full;
    ``get`` waits for an entry; an entry taken by ``get`` stays in the queue until ``ack``; ``nack`` puts
    it back at the front.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, payload: _Bytes) -> None: ...

    async def get(self) -> tuple[Any, _Bytes]: ...

    def get_nowait(self) -> tuple[Any, _Bytes] | None: ...

    def ack(self, ref: Any) -> None: ...

    def nack(self, ref: Any) -> None: ...

    @property
    def bytes(self) -> int: ...

    def __len__(self) -> int: ...


class MemoryQueue:
    """An in-memory queue with the persistent queue's API, bounded in bytes (lost on exit).

    ``bytes`` and ``len()`` count every entry not yet acknowledged, in flight or waiting. An entry larger
    than ``max_bytes`` is accepted only into an empty queue, so that it cannot block its sender forever.
    """

    def __init__(self, *, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._waiting: deque[tuple[int, _Bytes]] = deque()
        self._taken: dict[int, _Bytes] = {}
        self._size = 0
        self._next_ref = 0
        self._ready = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    async def put(self, payload: _Bytes) -> None:
        if self._closed:
            raise Backpressure("the in-memory queue is closed", retry_after=1.0)
        if self._size and self._size + len(payload) > self.max_bytes:
            raise Backpressure(
                f"in-memory queue is full ({self._size} of {self.max_bytes} bytes, "
                f"entry of {len(payload)} bytes)",
                retry_after=1.0,
            )
        self._next_ref += 1
        self._waiting.append((self._next_ref, payload))
        self._size += len(payload)
        self._ready.set()

    async def get(self) -> tuple[int, _Bytes]:
        while not self._waiting:  # no await between the check and the pop: safe to cancel
            self._ready.clear()
            await self._ready.wait()
        item = self.get_nowait()
        assert item is not None
        return item

    def get_nowait(self) -> tuple[int, _Bytes] | None:
        if not self._waiting:
            return None
        ref, payload = self._waiting.popleft()
        self._taken[ref] = payload
        return ref, payload

    def ack(self, ref: int) -> None:
        payload = self._taken.pop(ref)
        self._size -= len(payload)

    def nack(self, ref: int) -> None:
        self._waiting.appendleft((ref, self._taken.pop(ref)))
        self._ready.set()

    @property
    def bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._waiting) + len(self._taken)
