"""Durable storage on the hot path: a segmented append-only log with group commit, and a FIFO on it.

* :class:`DurableLog` (``spool_log``): the spool of received spans and the base of every queue.
* :class:`PersistentQueue` (``spool_queue``): an at-least-once FIFO for exporter queues.
* :class:`RecordRef` and the on-disk format (``spool_format``).

On disk a log is a directory of segment files ``000000000001.seg``, ``000000000002.seg``... each
an 8-byte magic followed by records (9-byte header: payload length, CRC32, kind; then the payload).
"""

from __future__ import annotations

from otel_topics.spool_format import HEADER_SIZE, MAGIC, REF_SIZE, RecordRef, pack_refs, unpack_refs
from otel_topics.spool_log import MIB, RETRY_AFTER, DurableLog
from otel_topics.spool_queue import PersistentQueue

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MIB",
    "REF_SIZE",
    "RETRY_AFTER",
    "DurableLog",
    "PersistentQueue",
    "RecordRef",
    "pack_refs",
    "unpack_refs",
]
