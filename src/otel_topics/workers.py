"""Preprocessing (and heuristic facets) in worker processes.

Both stages are pure Python and hold the GIL: in the serving process they compete with receiving,
spooling and forwarding. ``PreparePool`` runs them in ``processors.topics.workers`` processes
(started with ``spawn``: the serving process has gRPC threads, which ``fork`` does not survive). A
trace crosses as serialized OTLP and comes back as a ``Conversation`` plus, for the heuristic
extractor, its facets. A worker that dies is replaced; the traces it held are tried once more on
the new pool and, failing again, are reported to the caller as an error (their spans still go out).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics import LOG_FORMAT, metrics
from otel_topics.config_topics import PreprocessSettings, TopicsProcessor
from otel_topics.model import Conversation, TraceData
from otel_topics.preprocess import DefaultPreprocessor, ExcludeRule, load_custom_preprocessor, skipped_total
from otel_topics.stages import Preprocessor

if TYPE_CHECKING:
    from otel_topics.facets.heuristic import HeuristicFacetExtractor

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 4


def auto_workers() -> int:
    """One worker per CPU this process may run on beyond the first, at most ``MAX_AUTO_WORKERS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(MAX_AUTO_WORKERS, cpus - 1))


def build_preprocessor(pre: PreprocessSettings) -> Preprocessor:
    """The configured preprocessor: the custom function, or the built-in one."""
    if pre.custom:
        return load_custom_preprocessor(pre.custom, max_tokens=pre.max_tokens, redact=pre.redact)
    return DefaultPreprocessor(
        max_tokens=pre.max_tokens,
        redact=pre.redact,
        exclude_spans=[ExcludeRule(r.name, r.attribute, r.value) for r in pre.exclude_spans],
    )


class WorkerError(RuntimeError):
    """A trace could not be prepared because its worker process died (twice)."""


@dataclass(slots=True)
class Prepared:
    """A worker's answer for one trace."""

    conversation: Conversation | None = None
    facets: dict[str, str] | None = None  # set when the worker also extracted the facets
    facet_seconds: float = 0.0
    error: str | None = None  # the preprocessor raised: its message
    skipped: int = 0  # pieces of content the preprocessor skipped (otel_topics_errors_total{preprocess})


def run_preprocessor(preprocessor: Preprocessor, trace: TraceData) -> Prepared:
    """The preprocessor's conversation, or the error it raised (a custom one may raise anything),
    with the pieces of content it skipped on the way."""
    before = skipped_total()
    try:
        return Prepared(preprocessor(trace), skipped=skipped_total() - before)
    except Exception as exc:
        return Prepared(error=f"{type(exc).__name__}: {exc}", skipped=skipped_total() - before)


# ---- worker process side ----------------------------------------------------------------------

_preprocessor: Preprocessor | None = None
_extractor: HeuristicFacetExtractor | None = None


def _init(topics: TopicsProcessor, facets_here: bool, log_level: int) -> None:
    global _preprocessor, _extractor
    logging.basicConfig(level=log_level, format=LOG_FORMAT, stream=sys.stderr)
    _preprocessor = build_preprocessor(topics.preprocess)
    if facets_here:
        from otel_topics.facets import spec_from_config
        from otel_topics.facets.heuristic import HeuristicFacetExtractor

        _extractor = HeuristicFacetExtractor([spec_from_config(f) for f in topics.facets])


def _warm() -> int:
    return os.getpid()


def _prepare(trace_id: bytes, spans: bytes, logs: bytes | None, reopened: bool) -> Prepared:
    assert _preprocessor is not None, "worker not initialised"
    trace = TraceData(
        trace_id,
        ExportTraceServiceRequest.FromString(spans),
        ExportLogsServiceRequest.FromString(logs) if logs is not None else None,
        reopened,
    )
    out = run_preprocessor(_preprocessor, trace)
    conversation = out.conversation
    if _extractor is not None and conversation is not None and not conversation.empty:
        start = time.perf_counter()
        out.facets = _extractor.extract_sync(conversation)
        out.facet_seconds = time.perf_counter() - start
        # the serving process needs only the text now (to store it): send that, not every message
        out.conversation = Conversation(
            trace_id, [], conversation.token_count, conversation.truncated, texts=[conversation.render()]
        )
    return out


# ---- serving process side ---------------------------------------------------------------------


class PreparePool:
    """``workers`` processes that preprocess traces (and extract heuristic facets when asked)."""

    def __init__(self, workers: int, topics: TopicsProcessor, *, facets: bool) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.facets = facets
        self._topics = topics
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0
        self._lock = asyncio.Lock()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(self._topics, self.facets, logging.getLogger().getEffectiveLevel()),
        )

    async def start(self) -> None:
        """Start every worker now (imports, tokenizer, lexicon), not on the first trace."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _warm) for _ in range(self.workers)))

    async def prepare(self, trace: TraceData) -> Prepared:
        spans = trace.spans.SerializeToString()
        logs = trace.logs.SerializeToString() if trace.logs is not None else None
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool, generation = self._pool, self._generation
            if pool is None:
                raise WorkerError("the worker pool is not running")
            try:
                return await loop.run_in_executor(pool, _prepare, trace.trace_id, spans, logs, trace.reopened)
            except BrokenProcessPool as exc:
                metrics.ERRORS.labels("workers").inc()
                await self._replace(generation)
                if attempt == 2:
                    tid = trace.trace_id.hex()
                    raise WorkerError(f"worker process died twice preparing trace {tid}") from exc
        raise AssertionError("unreachable")

    async def _replace(self, generation: int) -> None:
        async with self._lock:
            if generation != self._generation or self._pool is None:
                return  # another caller replaced it already
            log.error("a worker process died; starting a new pool of %d", self.workers)
            old, self._pool = self._pool, self._new_pool()
            self._generation += 1
        old.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
