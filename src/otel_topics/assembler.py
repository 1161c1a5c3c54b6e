"""Groups spooled spans (and GenAI log records) into traces and decides when a trace is complete.

Spans live in the spool; memory holds, per pending trace, only its record references and a few
numbers. A trace is ready ``idle`` seconds after its latest span once a root span has arrived,
or ``max_wait`` seconds after its first span in any case. Past ``max_bytes`` of pending spans the
oldest traces are released early. A span of a trace released not long ago re-opens it (ready
``idle`` after its latest span: the root came with the first part).
"""

from __future__ import annotations

import collections
import heapq
import logging
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics import metrics
from otel_topics.model import TraceData
from otel_topics.otlp_wire import LOG_TRACE_ID, SPAN_TRACE_ID, WireError, split_by_trace
from otel_topics.spool import REF_SIZE, DurableLog, RecordRef, pack_refs, unpack_refs

log = logging.getLogger(__name__)

KIND_TRACES: Final = 1
KIND_LOGS: Final = 2
KIND_TOMBSTONE: Final = 3

_REMOTE: Final = 0x100 | 0x200  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE | SPAN_FLAGS_CONTEXT_IS_REMOTE
_TOMB_HEAD = struct.Struct("<BI")  # trace id length, number of refs
_REF_SIZE = REF_SIZE

Reason = Literal["idle", "max_wait", "max_bytes", "shutdown"]
_RELEASED = {r: metrics.TRACES_RELEASED.labels(r) for r in ("idle", "max_wait", "max_bytes", "shutdown")}


@dataclass(frozen=True, slots=True)
class Released:
    """A trace the assembler let go: where its records are, and why it was released."""

    trace_id: bytes
    reason: Reason
    refs: tuple[RecordRef, ...]  # span records, in arrival order
    log_refs: tuple[RecordRef, ...] = ()  # log records
    reopened: bool = False
    has_root: bool = False
    root_span_id: bytes = b""


class _Trace:
    __slots__ = (
        "deadline", "first", "has_root", "last", "log_refs", "nbytes", "refs", "reopened",
        "root_span_id", "seq",
    )  # fmt: skip

    def __init__(self, seq: int, now: float, reopened: bool) -> None:
        self.seq = seq
        self.first = now
        self.last = now
        self.refs: list[RecordRef] = []
        self.log_refs: list[RecordRef] = []
        self.nbytes = 0
        self.has_root = False
        self.root_span_id = b""
        self.reopened = reopened
        self.deadline = 0.0


# per trace of one record: [bytes, root span id or None]
_Found = dict[bytes, list[Any]]


def _index_spans(request: ExportTraceServiceRequest) -> _Found:
    found: _Found = {}
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid = span.trace_id
                entry = found.get(tid)
                if entry is None:
                    entry = found[tid] = [0, None]
                entry[0] += span.ByteSize()
                if entry[1] is None and (not span.parent_span_id or span.flags & _REMOTE == _REMOTE):
                    entry[1] = span.span_id
    return found


def _index_logs(request: ExportLogsServiceRequest) -> _Found:
    found: _Found = {}
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                tid = record.trace_id
                if not tid:
                    continue  # cannot join a trace; the caller forwards those itself
                entry = found.get(tid)
                if entry is None:
                    entry = found[tid] = [0, None]
                entry[0] += record.ByteSize()
    return found


def encode_tombstone(released: Iterable[Released]) -> bytes:
    parts: list[bytes] = []
    for r in released:
        refs = r.refs + r.log_refs
        parts += (_TOMB_HEAD.pack(len(r.trace_id), len(refs)), r.trace_id, pack_refs(refs))
    return b"".join(parts)


def decode_tombstone(data: bytes) -> list[tuple[bytes, list[RecordRef]]]:
    out: list[tuple[bytes, list[RecordRef]]] = []
    pos = 0
    while pos < len(data):
        tid_len, n = _TOMB_HEAD.unpack_from(data, pos)
        pos += _TOMB_HEAD.size
        tid = data[pos : pos + tid_len]
        pos += tid_len
        out.append((tid, unpack_refs(data[pos : pos + n * _REF_SIZE])))
        pos += n * _REF_SIZE
    return out


class Assembler:
    """Index of pending traces over a spool (a :class:`DurableLog`); see the module docstring."""

    def __init__(
        self,
        spool: DurableLog,
        *,
        idle: float,
        max_wait: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        remember_released: int = 1_000_000,
    ) -> None:
        if idle < 0 or max_wait < 0:
            raise ValueError(f"idle and max_wait must be >= 0, got idle={idle}, max_wait={max_wait}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._spool = spool
        self.idle = idle
        self.max_wait = max_wait
        self.max_bytes = max_bytes
        self._clock = clock
        self._remember = max(0, remember_released)
        self._traces: collections.OrderedDict[bytes, _Trace] = collections.OrderedDict()  # by first arrival
        self._heap: list[tuple[float, int, bytes]] = []  # (deadline, seq, trace id), lazily invalidated
        self._seq = 0
        self._pending_bytes = 0
        self._released: set[bytes] = set()
        self._released_order: collections.deque[bytes] = collections.deque()

    # ---- indexing -----------------------------------------------------------------------------
    def add_traces(self, ref: RecordRef, request: ExportTraceServiceRequest) -> None:
        """Index the spans of a request already spooled at ``ref``."""
        self._merge(ref, _index_spans(request), logs=False, now=self._clock())
        self._gauges()

    def add_logs(self, ref: RecordRef, request: ExportLogsServiceRequest) -> None:
        """Index the log records (those with a trace id) of a request already spooled at ``ref``."""
        self._merge(ref, _index_logs(request), logs=True, now=self._clock())
        self._gauges()

    def _merge(self, ref: RecordRef, found: _Found, *, logs: bool, now: float) -> None:
        if not found:
            return
        self._spool.retain(ref, len(found))
        for tid, (nbytes, root) in found.items():
            self._add(tid, ref, nbytes, root, logs=logs, now=now)

    def _add(
        self, tid: bytes, ref: RecordRef, nbytes: int, root: bytes | None, *, logs: bool, now: float
    ) -> None:
        t = self._traces.get(tid)
        if t is None:
            reopened = tid in self._released
            if reopened:
                metrics.TRACES_REOPENED.inc()
            self._seq += 1
            t = self._traces[tid] = _Trace(self._seq, now, reopened)
            old_deadline = float("inf")
        else:
            old_deadline = t.deadline
            t.last = max(t.last, now)
        (t.log_refs if logs else t.refs).append(ref)
        t.nbytes += nbytes
        self._pending_bytes += nbytes
        if root is not None and not t.has_root:
            t.has_root = True
            t.root_span_id = root
        t.deadline = self._deadline(t)
        if t.deadline < old_deadline:  # a later deadline is found when the old entry comes up
            heapq.heappush(self._heap, (t.deadline, t.seq, tid))

    def _deadline(self, t: _Trace) -> float:
        cap = t.first + self.max_wait
        # late spans of a released trace do not wait for a root again: it came with the first part
        return min(t.last + self.idle, cap) if t.has_root or t.reopened else cap

    # ---- releasing ----------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[Released]:
        """Traces ready now (root + idle, max_wait), and the oldest ones while over ``max_bytes``."""
        if now is None:
            now = self._clock()
        out: list[Released] = []
        while self._pending_bytes > self.max_bytes and self._traces:
            tid = next(iter(self._traces))
            out.append(self._release(tid, "max_bytes"))
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, tid = heapq.heappop(heap)
            t = self._traces.get(tid)
            if t is None or t.seq != seq:
                continue  # stale entry: released already
            if t.deadline > now:
                heapq.heappush(heap, (t.deadline, seq, tid))
                continue
            idle = (t.has_root or t.reopened) and t.last + self.idle <= t.first + self.max_wait
            out.append(self._release(tid, "idle" if idle else "max_wait"))
        if out:
            self._gauges()
        return out

    def drain(self) -> list[Released]:
        """Release every pending trace (shutdown)."""
        out = [self._release(tid, "shutdown") for tid in list(self._traces)]
        self._heap.clear()
        self._gauges()
        return out

    def _release(self, tid: bytes, reason: Reason) -> Released:
        t = self._traces.pop(tid)
        self._pending_bytes -= t.nbytes
        self._remember_released(tid)
        _RELEASED[reason].inc()
        return Released(tid, reason, tuple(t.refs), tuple(t.log_refs), t.reopened, t.has_root, t.root_span_id)

    def _remember_released(self, tid: bytes) -> None:
        if self._remember == 0 or tid in self._released:
            return
        self._released.add(tid)
        self._released_order.append(tid)
        if len(self._released_order) > self._remember:
            self._released.discard(self._released_order.popleft())

    # ---- reading back -------------------------------------------------------------------------
    def load(self, released: Sequence[Released]) -> list[TraceData]:
        """Each released trace's spans and log records, read back from the spool (each record read
        and split once per call), under their original resource and scope."""
        span_records: dict[RecordRef, set[bytes]] = {}
        log_records: dict[RecordRef, set[bytes]] = {}
        for r in released:
            for ref in r.refs:
                span_records.setdefault(ref, set()).add(r.trace_id)
            for ref in r.log_refs:
                log_records.setdefault(ref, set()).add(r.trace_id)
        span_parts = self._split(span_records, SPAN_TRACE_ID)
        log_parts = self._split(log_records, LOG_TRACE_ID)
        out = []
        for r in released:
            spans = _parse(ExportTraceServiceRequest, span_parts.get(r.trace_id), r.trace_id)
            logs = (
                _parse(ExportLogsServiceRequest, log_parts.get(r.trace_id), r.trace_id)
                if r.log_refs
                else None
            )
            out.append(TraceData(r.trace_id, spans, logs, r.reopened))
        return out

    def _split(self, records: dict[RecordRef, set[bytes]], tid_field: int) -> dict[bytes, list[bytes]]:
        parts: dict[bytes, list[bytes]] = {}
        for ref in sorted(records):  # log order: each trace's pieces in arrival order
            try:
                split_by_trace(self._spool.read(ref), records[ref], tid_field, parts)
            except (OSError, KeyError, WireError) as exc:
                log.error("cannot read spooled record %s back: %s", ref, exc)
                metrics.ERRORS.labels("assembler").inc()
        return parts

    # ---- finishing ----------------------------------------------------------------------------
    def done(self, released: Sequence[Released]) -> None:
        """The traces went downstream: drop their spool references and tombstone them."""
        if not released:
            return
        refs = [ref for r in released for ref in (*r.refs, *r.log_refs)]
        self._spool.append_nowait(KIND_TOMBSTONE, encode_tombstone(released), guards=refs)
        for ref in refs:
            self._spool.release(ref)

    def recover(self) -> None:
        """Rebuild the index from the spool at start (records not tombstoned), then let the spool
        reclaim unreferenced segments. Call once, after ``spool.start()`` and before new data."""
        now = self._clock()
        pending: dict[bytes, dict[RecordRef, tuple[int, bool, bytes | None]]] = {}
        guards: list[tuple[RecordRef, list[RecordRef]]] = []
        for ref, kind, payload in self._spool.replay():
            try:
                if kind == KIND_TRACES:
                    found = _index_spans(ExportTraceServiceRequest.FromString(payload))
                elif kind == KIND_LOGS:
                    found = _index_logs(ExportLogsServiceRequest.FromString(payload))
                elif kind == KIND_TOMBSTONE:
                    for tid, refs in decode_tombstone(payload):
                        entries = pending.get(tid)
                        if entries is not None:
                            for r in refs:
                                entries.pop(r, None)
                            if not entries:
                                del pending[tid]
                        self._remember_released(tid)
                        guards.append((ref, refs))
                    continue
                else:
                    log.warning("spool record %s has unknown kind %d; skipped", ref, kind)
                    continue
            except (DecodeError, struct.error) as exc:
                log.error("spool record %s (kind %d) cannot be decoded, skipped: %s", ref, kind, exc)
                metrics.ERRORS.labels("assembler").inc()
                continue
            for tid, (nbytes, root) in found.items():
                pending.setdefault(tid, {})[ref] = (nbytes, kind == KIND_LOGS, root)
        for tid, entries in pending.items():
            for ref, (nbytes, is_log, root) in entries.items():
                self._spool.retain(ref)
                self._add(tid, ref, nbytes, root, logs=is_log, now=now)
        for ref, refs in guards:
            self._spool.guard(ref, refs)
        self._spool.collect()
        self._gauges()
        if pending:
            log.info("recovered %d pending traces from the spool", len(pending))

    # ---- accounting ---------------------------------------------------------------------------
    @property
    def pending_traces(self) -> int:
        return len(self._traces)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def _gauges(self) -> None:
        metrics.TRACES_PENDING.set(len(self._traces))
        metrics.PENDING_BYTES.set(self._pending_bytes)


def _parse(cls: Any, parts: list[bytes] | None, trace_id: bytes) -> Any:
    try:
        return cls.FromString(b"".join(parts or ()))
    except DecodeError as exc:  # pieces of records that passed their CRC: should not happen
        log.error("trace %s: spooled data cannot be parsed: %s", trace_id.hex(), exc)
        metrics.ERRORS.labels("assembler").inc()
        return cls()
