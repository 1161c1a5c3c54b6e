"""The sidecar's data path between receiver and exporters.

``Pipeline`` implements the receiver's ``Ingest``: sampled spans (and the GenAI log records of
their traces) are spooled durably before the receiver acknowledges them; everything else goes
straight to the exporters' persistent queues. A background loop releases complete traces from
the assembler, enriches them with a time limit, and forwards every span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_topics import metrics
from otel_topics.assembler import KIND_LOGS, KIND_TRACES, Assembler, Released
from otel_topics.enrich import RootInfo, StoreRunner, TraceEnricher, root_info
from otel_topics.errors import Backpressure
from otel_topics.model import Enrichment, Signal, Status, TraceData
from otel_topics.otlp import (
    classification_span,
    count_data_points,
    count_log_records,
    count_spans,
    enrich_spans,
    split_logs,
    split_traces,
)
from otel_topics.spool import DurableLog

log = logging.getLogger(__name__)


class Outlet(Protocol):
    """Where a signal's data goes: the exporters of that signal's pipeline (see exporter.Exporters)."""

    async def put(self, signal: Signal, payload: bytes, items: int) -> None: ...


def sampled(trace_id: bytes, rate: float) -> bool:
    """Decided from the trace id alone (its last 8 bytes), so every replica and restart agrees."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return int.from_bytes(trace_id[8:16], "big") < int(rate * (1 << 64))


def is_genai_log(record: LogRecord) -> bool:
    """A log record carrying GenAI content, which joins its trace's conversation."""
    if not record.trace_id:
        return False
    if record.event_name.startswith("gen_ai."):
        return True
    for kv in record.attributes:
        if kv.key == "event.name":
            return kv.value.string_value.startswith("gen_ai.")
    return False


@dataclass
class PipelineSettings:
    sampling_rate: float = 1.0
    forward: str = "enriched"  # or "immediate"
    attach_to: str = "root"  # or "all"
    enrich_timeout: float = 60.0
    max_concurrent_traces: int = 64
    tick: float = 0.05
    retry_poll: float = 5.0
    enrich_logs: bool = True  # the logs pipeline has the topics processor


class Pipeline:
    """Implements the receiver's Ingest protocol and runs the release loop."""

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        outlets: Mapping[Signal, Outlet],
        spool: DurableLog | None,
        assembler: Assembler | None,
        enricher: TraceEnricher | None,
        store: StoreRunner | None = None,
    ) -> None:
        self.s = settings
        self.outlets = outlets
        self.spool = spool
        self.assembler = assembler
        self.enricher = enricher
        self.store = store
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()  # enrichments past their time limit
        self._sem = asyncio.Semaphore(settings.max_concurrent_traces)
        self._stopping = False

    # ---- Ingest -------------------------------------------------------------------------------
    async def traces(self, request: ExportTraceServiceRequest, transport: str) -> None:
        if "traces" not in self.outlets:
            return
        if self.assembler is None or self.spool is None:  # no topics processor: pass through
            await self._put("traces", request)
            return
        rate = self.s.sampling_rate
        if rate >= 1.0:
            keep, rest = request, None
        elif rate <= 0.0:
            keep, rest = None, request
        else:
            keep, rest = split_traces(request, lambda tid: sampled(tid, rate))
        if rest is not None and rest.resource_spans:
            enrich_spans(rest, {"otel_topics.status": Status.SAMPLED_OUT}, attach_to=self.s.attach_to)
            await self._put("traces", rest)
        if keep is not None and keep.resource_spans:
            payload = keep.SerializeToString()
            ref = await self.spool.append(KIND_TRACES, payload)
            self.assembler.add_traces(ref, keep)  # retains the record: before any other await
            if self.s.forward == "immediate":
                await self.outlets["traces"].put("traces", payload, count_spans(keep))

    async def logs(self, request: ExportLogsServiceRequest, transport: str) -> None:
        if "logs" not in self.outlets:
            return
        if not (self.s.enrich_logs and self.assembler and self.spool):
            await self._put("logs", request)
            return
        rate = self.s.sampling_rate
        joined, rest = split_logs(request, lambda rec: is_genai_log(rec) and sampled(rec.trace_id, rate))
        if rest.resource_logs:
            await self._put("logs", rest)
        if joined.resource_logs:
            payload = joined.SerializeToString()
            ref = await self.spool.append(KIND_LOGS, payload)
            self.assembler.add_logs(ref, joined)  # retains the record: before any other await
            if self.s.forward == "immediate":
                await self.outlets["logs"].put("logs", payload, count_log_records(joined))

    async def metrics(self, request: ExportMetricsServiceRequest, transport: str) -> None:
        if "metrics" in self.outlets:
            await self._put("metrics", request)

    async def _put(
        self,
        signal: Signal,
        request: ExportTraceServiceRequest | ExportLogsServiceRequest | ExportMetricsServiceRequest,
    ) -> None:
        outlet = self.outlets.get(signal)
        if outlet is None:
            return
        if isinstance(request, ExportTraceServiceRequest):
            items = count_spans(request)
        elif isinstance(request, ExportLogsServiceRequest):
            items = count_log_records(request)
        else:
            items = count_data_points(request)
        await outlet.put(signal, request.SerializeToString(), items)

    # ---- release loop -------------------------------------------------------------------------
    def start(self) -> None:
        if self.assembler is not None:
            self._tasks.append(asyncio.create_task(self._release_loop(), name="otel-topics-release"))
        if self.enricher is not None and self.store is not None:
            self._tasks.append(asyncio.create_task(self._retry_loop(), name="otel-topics-retry"))

    async def _release_loop(self) -> None:
        assert self.assembler is not None
        while not self._stopping:
            try:
                due = self.assembler.due()
                if due:
                    await self._release(due)
            except Exception:  # keep the loop alive; the spool still holds the data
                log.exception("release loop error")
                metrics.ERRORS.labels("assembler").inc()
            await asyncio.sleep(self.s.tick)

    async def _release(self, due: Sequence[Released]) -> None:
        """Read due traces back from the spool a few at a time, as enrichment slots free up: a
        burst of traces that went idle together is never all parsed in memory at once."""
        assert self.assembler is not None
        step = max(1, self.s.max_concurrent_traces // 4)
        for start in range(0, len(due), step):
            chunk = due[start : start + step]
            for _ in chunk:
                await self._sem.acquire()
            traces = self.assembler.load(chunk)  # each spooled record read once per chunk
            for released, trace in zip(chunk, traces, strict=True):
                task = asyncio.create_task(self._process(released, trace))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _process(self, released: Released, trace: TraceData) -> None:
        assert self.assembler is not None
        try:
            root = await self._root_of(trace) if trace.reopened else None
            enrichment = await self._enrich(trace, root)
            delay = 0.25
            while True:
                try:
                    await self._forward(trace, enrichment, root)
                    break
                except Backpressure as exc:  # exporter queues full: wait, never drop
                    if self._stopping:
                        raise
                    await asyncio.sleep(min(exc.retry_after, delay))
                    delay = min(delay * 2, 10.0)
            self.assembler.done([released])
        except Backpressure as exc:  # only while stopping: the exporters no longer take data
            log.warning(
                "trace %s not forwarded before shutdown (%s); it stays spooled for the next start",
                trace.trace_id.hex(),
                exc,
            )
        except Exception:
            # Not marked done in the spool: the trace is sent again at the next start.
            log.exception("could not forward trace %s", trace.trace_id.hex())
            metrics.ERRORS.labels("exporter").inc()
        finally:
            self._sem.release()

    async def _enrich(self, trace: TraceData, root: RootInfo | None) -> Enrichment:
        """Enrich within ``enrich_timeout``. Past it the spans go on un-enriched (``timeout``) while
        the enrichment keeps running; its result follows as a classification span."""
        if self.enricher is None:
            return Enrichment(trace.trace_id)
        task = asyncio.ensure_future(self.enricher.enrich(trace, root))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.s.enrich_timeout)
        except TimeoutError:
            metrics.ENRICHED_TRACES.labels(Status.TIMEOUT).inc()
            self._background.add(task)
            task.add_done_callback(lambda t: self._late_result(t, trace, root))
            return Enrichment(trace.trace_id, Status.TIMEOUT)
        except Exception:
            log.exception("enrichment failed for trace %s", trace.trace_id.hex())
            metrics.ERRORS.labels("enrich").inc()
            metrics.ENRICHED_TRACES.labels(Status.INTERNAL_ERROR).inc()
            return Enrichment(trace.trace_id, Status.INTERNAL_ERROR)

    def _late_result(self, task: asyncio.Future[Enrichment], trace: TraceData, root: RootInfo | None) -> None:
        self._background.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        enrichment = task.result()
        if enrichment.facets and not self._stopping:
            job = asyncio.ensure_future(self.emit_classification(trace, enrichment, source="late", root=root))
            self._background.add(job)
            job.add_done_callback(self._background.discard)

    async def _forward(self, trace: TraceData, enrichment: Enrichment, root: RootInfo | None) -> None:
        attrs = enrichment.attributes() if self.enricher is not None else {}
        late = self.s.forward == "immediate" or trace.reopened
        if late:
            if self.s.forward != "immediate":  # re-opened trace: its new spans still go out
                await self._put_trace(trace.spans)
                if trace.logs is not None and trace.logs.resource_logs:
                    await self._put("logs", trace.logs)
            if attrs:
                source: Literal["online", "late"] = "late" if trace.reopened else "online"
                await self.emit_classification(trace, enrichment, source=source, root=root)
            return
        if attrs:
            enrich_spans(trace.spans, attrs, attach_to=self.s.attach_to)
        await self._put_trace(trace.spans)
        if trace.logs is not None and trace.logs.resource_logs:
            await self._put("logs", trace.logs)

    async def _put_trace(self, request: ExportTraceServiceRequest) -> None:
        await self._put("traces", request)

    async def emit_classification(
        self,
        trace: TraceData | None,
        enrichment: Enrichment,
        *,
        source: Literal["online", "backfill", "late"],
        root: RootInfo | None = None,
    ) -> None:
        """Send one ``otel_topics.classification`` span into the trace (parent = its root)."""
        if root is None and trace is not None:
            root = await self._root_of(trace)
        if root is None or not root.span_id:
            return
        enrichment.classifications = [replace(c, source=source) for c in enrichment.classifications]
        req = classification_span(
            trace_id=enrichment.trace_id,
            parent_span_id=root.span_id,
            start_ns=root.start_ns,
            end_ns=root.end_ns,
            attrs=enrichment.attributes(),
            service=root.service,
        )
        await self._put_trace(req)

    async def _root_of(self, trace: TraceData) -> RootInfo | None:
        """The root of a trace: from its spans, or (late spans) from the store."""
        if self.store is not None:
            rec = await self.store.run(self.store.store.get_trace, trace.trace_id.hex())
            if rec is not None and rec.root_span_id:
                return RootInfo(
                    bytes.fromhex(rec.root_span_id), rec.root_start_ns, rec.root_end_ns, rec.service_name
                )
        info = root_info(trace)
        return info if info.span_id else None

    async def _retry_loop(self) -> None:
        """Retry facets of stored conversations whose LLM call failed (bounded attempts)."""
        assert self.enricher is not None and self.store is not None
        from otel_topics.model import Conversation

        store = self.store
        while not self._stopping:
            await asyncio.sleep(self.s.retry_poll)
            try:
                due = await store.run(store.store.due_retries, time.time(), 16)
                metrics.RETRY_PENDING.set(len(due))
                for rec in due:
                    conv = Conversation(bytes.fromhex(rec.trace_id), [], texts=[rec.conversation])
                    root = RootInfo(
                        bytes.fromhex(rec.root_span_id) if rec.root_span_id else b"",
                        rec.root_start_ns,
                        rec.root_end_ns,
                        rec.service_name,
                    )
                    enrichment = await self.enricher.enrich_conversation(conv, root, attempts=rec.attempts)
                    if enrichment.status != Status.LLM_ERROR:
                        await self.emit_classification(None, enrichment, source="late", root=root)
            except Exception:
                log.exception("facet retry loop error")
                metrics.ERRORS.labels("facets").inc()

    # ---- shutdown -----------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Release every pending trace and wait (up to ``timeout``) for them to be forwarded."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        deadline = time.monotonic() + timeout
        if self.assembler is not None:
            rest = self.assembler.drain()
            if rest:
                self.s.enrich_timeout = min(self.s.enrich_timeout, max(0.1, timeout / 2))
                try:  # what is not released in time stays in the spool for the next start
                    await asyncio.wait_for(self._release(rest), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    log.warning("drain: time is up with traces still pending; they stay spooled")
        pending = list(self._inflight)
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - time.monotonic()))
        for job in list(self._background):  # late results of timed-out enrichments: stored already
            job.cancel()
