"""The intelligence layer for one trace: preprocess -> facets -> embed -> classify -> store.

Every stage failure is caught here and turned into an ``otel_topics.status`` value, so that the
caller can always forward the trace's spans.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from otel_topics import metrics
from otel_topics.errors import EmbedderError, LLMError, StoreError
from otel_topics.model import NO_MATCH, Conversation, Enrichment, Status, TraceData
from otel_topics.otlp import iter_spans, service_name, top_spans
from otel_topics.stages import Classifier, Embedder, FacetExtractor, Preprocessor
from otel_topics.store import Store, TraceRecord
from otel_topics.workers import PreparePool, WorkerError, run_preprocessor

log = logging.getLogger(__name__)
T = TypeVar("T")
Vector = npt.NDArray[np.float32]


class StoreRunner:
    """Runs the synchronous store on one dedicated thread, so the event loop never blocks on it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otel-topics-store")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass(frozen=True, slots=True)
class MapBinding:
    """A topic map and the facet it classifies."""

    name: str
    facet: str


@dataclass(frozen=True, slots=True)
class RootInfo:
    span_id: bytes
    start_ns: int
    end_ns: int
    service: str


def root_info(trace: TraceData) -> RootInfo:
    tops = top_spans(trace.spans)
    if not tops:
        return RootInfo(b"", 0, 0, "")
    root = tops[0]
    service = ""
    for rs in trace.spans.resource_spans:
        for ss in rs.scope_spans:
            if any(s.span_id == root.span_id for s in ss.spans):
                service = service_name(rs.resource)
    return RootInfo(root.span_id, root.start_time_unix_nano, root.end_time_unix_nano, service)


def conversation_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class TraceEnricher:
    """Implements :class:`otel_topics.stages.Enricher`."""

    def __init__(
        self,
        *,
        preprocessor: Preprocessor,
        extractor: FacetExtractor,
        embedder: Embedder,
        classifier: Classifier,
        maps: Sequence[MapBinding],
        store: StoreRunner | None,
        retry_attempts: int = 3,
        retry_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
        workers: PreparePool | None = None,
    ) -> None:
        self.preprocessor = preprocessor
        self.extractor = extractor
        self.embedder = embedder
        self.classifier = classifier
        self.maps = list(maps)
        self.store = store
        self.retry_attempts = retry_attempts
        self.retry_interval = retry_interval
        self.clock = clock
        self.workers = workers

    async def enrich(self, trace: TraceData, root: RootInfo | None = None) -> Enrichment:
        """``root``: the trace's root when it is not among these spans (late spans of a released trace)."""
        if root is None:
            root = root_info(trace)
        if self.workers is not None:
            try:
                prepared = await self.workers.prepare(trace)
            except WorkerError as exc:
                log.error("%s", exc)
                return self._done(Enrichment(trace.trace_id, Status.INTERNAL_ERROR))
            if prepared.skipped:  # counted in the worker process: count it here, where /metrics is served
                metrics.ERRORS.labels("preprocess").inc(prepared.skipped)
        else:
            prepared = run_preprocessor(self.preprocessor, trace)
        if prepared.error is not None:
            log.warning("preprocess failed for trace %s: %s", trace.trace_id.hex(), prepared.error)
            metrics.ERRORS.labels("preprocess").inc()
            return self._done(Enrichment(trace.trace_id, Status.PREPROCESS_ERROR))
        conversation = prepared.conversation
        if conversation is None:
            return self._done(Enrichment(trace.trace_id, Status.SKIPPED))
        if conversation.empty:
            return self._done(Enrichment(trace.trace_id, Status.NO_CONVERSATION))
        if prepared.facets is not None:
            metrics.FACET_LATENCY.labels(self.extractor.name).observe(prepared.facet_seconds)
        return await self.enrich_conversation(conversation, root, attempts=0, facets=prepared.facets)

    async def enrich_conversation(
        self,
        conversation: Conversation,
        root: RootInfo,
        *,
        attempts: int,
        facets: dict[str, str] | None = None,
    ) -> Enrichment:
        """``facets``: already extracted (by a worker process), else the extractor is asked."""
        trace_id = conversation.trace_id
        text = conversation.render()
        enrichment = Enrichment(trace_id)
        try:
            enrichment.facets = facets if facets is not None else await self.extractor.extract(conversation)
        except LLMError as exc:
            log.warning("facets failed for trace %s: %s", trace_id.hex(), exc)
            metrics.ERRORS.labels("facets").inc()
            enrichment.status = Status.LLM_ERROR
            await self._save(enrichment, root, text, attempts + 1, retry=True)
            return self._done(enrichment)
        vectors: list[tuple[str, str, Vector]] = []
        try:
            vectors = await self._classify(enrichment)
        except EmbedderError as exc:
            log.warning("embedding failed for trace %s: %s", trace_id.hex(), exc)
            metrics.ERRORS.labels("embed").inc()
            enrichment.status = Status.EMBED_ERROR
        await self._save(enrichment, root, text, attempts + 1, retry=False, vectors=vectors)
        return self._done(enrichment)

    async def _classify(self, enrichment: Enrichment) -> list[tuple[str, str, Vector]]:
        """Embed the facet texts the maps read (always: the next map version is drawn from them)
        and classify them against the maps that have a version. Returns the vectors to store."""
        facets = enrichment.facets
        wanted = [(m, facets[m.facet]) for m in self.maps if facets.get(m.facet, NO_MATCH) != NO_MATCH]
        if not wanted:
            return []
        texts = sorted({t for _, t in wanted})
        vectors = await self.embedder.embed(texts)
        row = {t: i for i, t in enumerate(texts)}
        stored: dict[str, Vector] = {}
        for binding, value in wanted:
            vec = vectors[row[value] : row[value] + 1]
            stored[binding.facet] = vec[0]
            if self._has_map(binding.name):
                enrichment.classifications.extend(self.classifier.classify(binding.name, vec))
        return [(enrichment.trace_id.hex(), facet, vec) for facet, vec in stored.items()]

    def _has_map(self, name: str) -> bool:
        current = getattr(self.classifier, "current", None)
        return current is None or current(name) is not None

    async def _save(
        self,
        enrichment: Enrichment,
        root: RootInfo,
        text: str,
        attempts: int,
        *,
        retry: bool,
        vectors: Sequence[tuple[str, str, Vector]] = (),
    ) -> None:
        if self.store is None:
            return
        now = self.clock()
        next_at = now + self.retry_interval if retry and attempts <= self.retry_attempts else None
        record = TraceRecord(
            trace_id=enrichment.trace_id.hex(),
            root_span_id=root.span_id.hex(),
            root_start_ns=root.start_ns,
            root_end_ns=root.end_ns,
            service_name=root.service,
            received_at=now,
            status=enrichment.status,
            conversation=text,
            conversation_hash=conversation_hash(text),
            attempts=attempts,
            next_attempt_at=next_at,
        )
        try:
            await self.store.run(_save_all, self.store.store, record, enrichment, vectors, self.embedder.name)
        except StoreError as exc:
            log.warning("store failed for trace %s: %s", enrichment.trace_id.hex(), exc)
            metrics.ERRORS.labels("store").inc()
            if enrichment.status == Status.OK:
                enrichment.status = Status.STORE_ERROR

    @staticmethod
    def _done(enrichment: Enrichment) -> Enrichment:
        metrics.ENRICHED_TRACES.labels(enrichment.status).inc()
        return enrichment


def _save_all(
    store: Store,
    record: TraceRecord,
    enrichment: Enrichment,
    vectors: Sequence[tuple[str, str, Vector]],
    embedder: str,
) -> None:
    store.save_traces([record])
    if vectors:
        store.save_vectors(embedder, vectors)
    if enrichment.facets:
        store.save_facets(record.trace_id, enrichment.facets)
    if enrichment.classifications:
        store.save_classifications(record.trace_id, enrichment.classifications)


async def bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run coroutine factories with at most ``limit`` at once, results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def span_count(trace: TraceData) -> int:
    return sum(1 for _ in iter_spans(trace.spans))
