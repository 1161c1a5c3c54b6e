"""A durable FIFO of byte payloads on a :class:`~otel_topics.spool_log.DurableLog` (exporter queues)."""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

from otel_topics.spool_format import RecordRef, pack_refs, unpack_refs
from otel_topics.spool_log import MIB, DurableLog

log = logging.getLogger(__name__)


class PersistentQueue:
    """A durable FIFO of byte payloads (exporter queues); at-least-once across restarts.

    Memory holds record references only; payloads are read back from disk by ``get()``. An
    ``ack()`` is persisted as a small ack record, so a restart brings back only unacked items.
    """

    KIND_ITEM = 1
    KIND_ACK = 2

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        fsync: bool = True,
        segment_bytes: int = 16 * MIB,
        name: str = "queue",
    ) -> None:
        self._log = DurableLog(
            directory, max_bytes=max_bytes, segment_bytes=segment_bytes, fsync=fsync, name=name
        )
        self._items: collections.deque[RecordRef] = collections.deque()
        self._inflight: set[RecordRef] = set()
        self._bytes = 0
        self._ready = asyncio.Event()

    async def start(self) -> None:
        await self._log.start()
        items: dict[RecordRef, None] = {}
        acks: list[tuple[RecordRef, list[RecordRef]]] = []
        for ref, kind, payload in self._log.replay():
            if kind == self.KIND_ITEM:
                items[ref] = None
            elif kind == self.KIND_ACK:
                acked = unpack_refs(payload)
                for r in acked:
                    items.pop(r, None)
                acks.append((ref, acked))
            else:
                log.warning("%s: skipping record of unknown kind %d at %s", self._log.name, kind, ref)
        for ref in items:
            self._log.retain(ref)
            self._items.append(ref)
            self._bytes += ref.length
        for ref, acked in acks:
            self._log.guard(ref, acked)
        self._log.collect()
        if self._items:
            self._ready.set()

    async def close(self) -> None:
        await self._log.close()

    async def put(self, payload: bytes) -> None:
        """Durable before returning. Raises ``Backpressure`` when the queue is at ``max_bytes``."""
        # an empty queue takes one entry whatever its size, so that it cannot block its sender forever
        ref = await self._log.append(self.KIND_ITEM, payload, cap=bool(self))
        self._log.retain(ref)
        self._items.append(ref)
        self._bytes += ref.length
        self._ready.set()

    async def get(self) -> tuple[RecordRef, bytes]:
        """The oldest waiting item (waits for one); ``ack()`` or ``nack()`` it afterwards."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self.get_nowait()
        assert item is not None
        return item

    def get_nowait(self) -> tuple[RecordRef, bytes] | None:
        if not self._items:
            return None
        ref = self._items.popleft()
        try:
            payload = self._log.read(ref)
        except Exception:
            self._items.appendleft(ref)
            raise
        self._inflight.add(ref)
        return ref, payload

    def ack(self, ref: RecordRef) -> None:
        """The item was delivered (or dead-lettered): forget it, durably with the next commit."""
        if ref not in self._inflight:
            raise KeyError(f"{self._log.name}: ack of {ref}, which is not in flight")
        self._inflight.discard(ref)
        self._log.append_nowait(self.KIND_ACK, pack_refs((ref,)), guards=(ref,))
        self._log.release(ref)
        self._bytes -= ref.length

    def nack(self, ref: RecordRef) -> None:
        """Delivery failed: put the item back at the front, to be retried first."""
        if ref not in self._inflight:
            raise KeyError(f"{self._log.name}: nack of {ref}, which is not in flight")
        self._inflight.discard(ref)
        self._items.appendleft(ref)
        self._ready.set()

    @property
    def bytes(self) -> int:
        """Payload bytes of unacked items (waiting and in flight)."""
        return self._bytes

    @property
    def waiting(self) -> int:
        return len(self._items)

    @property
    def log(self) -> DurableLog:
        return self._log

    def __len__(self) -> int:
        """Unacked items, waiting and in flight."""
        return len(self._items) + len(self._inflight)
