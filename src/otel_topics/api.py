"""The sidecar's own gRPC API, ``otel_topics.v1.TopicsService`` (proto/otel_topics/v1/topics.proto).

A thin processor inside a collector, or any tool, asks the sidecar synchronously: ``Enrich`` (facets
and classifications of the traces in an OTLP request), ``Classify`` (texts against a topic map, no
LLM), ``ListTopicMaps``, ``GetTopicMap`` and ``Status``. Errors are gRPC status codes with a message
naming what was wrong: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE (store or
embedder failing; retry), INTERNAL (a bug).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from otel_topics import metrics
from otel_topics._proto.otel_topics.v1 import topics_pb2 as pb
from otel_topics._proto.otel_topics.v1 import topics_pb2_grpc as pb_grpc
from otel_topics.errors import EmbedderError, LLMError, OtelTopicsError, StoreError
from otel_topics.model import Classification, Enrichment, Status, TopicMap, TraceData
from otel_topics.stages import Classifier, Embedder, Enricher
from otel_topics.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
Assemble = Callable[[ExportTraceServiceRequest], list[TraceData]]

SERVICE_NAME = "otel_topics.v1.TopicsService"


def split_by_trace(request: ExportTraceServiceRequest) -> list[TraceData]:
    """Group a request's spans by trace id, in order of first appearance, keeping resource and scope.

    Raises ValueError naming the first span whose trace id is not 16 bytes or is all zero."""
    out: dict[bytes, ExportTraceServiceRequest] = {}
    resources: dict[tuple[bytes, int], ResourceSpans] = {}
    scopes: dict[tuple[bytes, int, int], ScopeSpans] = {}
    for i, rs in enumerate(request.resource_spans):
        for j, ss in enumerate(rs.scope_spans):
            for span in ss.spans:
                tid = span.trace_id
                if len(tid) != 16 or not any(tid):
                    raise ValueError(
                        f"span {span.name!r} (resource_spans[{i}].scope_spans[{j}]) has an invalid trace_id "
                        f"{tid.hex() or '(empty)'}: a trace id is 16 bytes, not all zero"
                    )
                req = out.get(tid)
                if req is None:
                    req = out[tid] = ExportTraceServiceRequest()
                r = resources.get((tid, i))
                if r is None:
                    r = resources[(tid, i)] = req.resource_spans.add(
                        resource=rs.resource, schema_url=rs.schema_url
                    )
                s = scopes.get((tid, i, j))
                if s is None:
                    s = scopes[(tid, i, j)] = r.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url)
                s.spans.append(span)
    return [TraceData(trace_id=tid, spans=req) for tid, req in out.items()]


def classification_pb(c: Classification) -> pb.Classification:
    return pb.Classification(
        map=c.map_name,
        label=c.label,
        id=c.cluster_id,
        distance=float(c.distance),
        map_version=int(c.map_version),
        source=c.source,
    )


def topic_map_pb(tm: TopicMap) -> pb.TopicMap:
    return pb.TopicMap(
        name=tm.name,
        facet=tm.facet,
        version=tm.version,
        distance_threshold=tm.distance_threshold,
        embedder=tm.embedder,
        created_at=tm.created_at,
        clusters=[
            pb.Cluster(
                id=c.id,
                name=c.name,
                description=c.description,
                keywords=c.keywords,
                size=c.size,
                radius=c.radius,
                parents=c.parents,
                examples=c.exemplars,
            )
            for c in tm.clusters
        ],
    )


_STATUS_OF_ERROR: tuple[tuple[type[OtelTopicsError], str], ...] = (
    (LLMError, Status.LLM_ERROR),
    (EmbedderError, Status.EMBED_ERROR),
    (StoreError, Status.STORE_ERROR),
)


class TopicsServicer:
    """Implements ``otel_topics.v1.TopicsService``; register it with :func:`add_topics_service`.

    ``assemble`` turns an Enrich request into traces (default :func:`split_by_trace`). At most
    ``max_concurrency`` traces of one request are enriched at once, each for at most
    ``enrich_timeout`` seconds (None = no limit; past it the trace's status is ``timeout``).
    ``max_texts`` bounds one Classify request.
    """

    def __init__(
        self,
        enricher: Enricher,
        embedder: Embedder,
        classifier: Classifier,
        store: Store,
        assemble: Assemble | None = None,
        *,
        max_concurrency: int = 8,
        enrich_timeout: float | None = None,
        max_texts: int = 1024,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}.")
        if max_texts < 1:
            raise ValueError(f"max_texts must be at least 1, got {max_texts}.")
        if enrich_timeout is not None and enrich_timeout <= 0:
            raise ValueError(f"enrich_timeout must be positive or None, got {enrich_timeout}.")
        self.enricher = enricher
        self.embedder = embedder
        self.classifier = classifier
        self.store = store
        self.assemble: Assemble = assemble or split_by_trace
        self.max_concurrency = max_concurrency
        self.enrich_timeout = enrich_timeout
        self.max_texts = max_texts

    # ---- Enrich -------------------------------------------------------------------------------
    async def Enrich(self, request: ExportTraceServiceRequest, context: Context) -> pb.EnrichResponse:
        try:
            traces = self.assemble(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Enrich: {exc}")
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(trace: TraceData) -> Enrichment:
            async with sem:
                return await self._enrich_one(trace)

        try:
            results = await asyncio.gather(*(one(t) for t in traces))
        except Exception as exc:
            metrics.ERRORS.labels("api").inc()
            log.exception("Enrich failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"Enrich failed: {exc!r}")
        return pb.EnrichResponse(
            traces=[
                pb.TraceEnrichment(
                    trace_id=e.trace_id,
                    status=e.status,
                    facets=e.facets,
                    classifications=[classification_pb(c) for c in e.classifications],
                )
                for e in results
            ]
        )

    async def _enrich_one(self, trace: TraceData) -> Enrichment:
        try:
            if self.enrich_timeout is None:
                return await self.enricher.enrich(trace)
            return await asyncio.wait_for(self.enricher.enrich(trace), self.enrich_timeout)
        except TimeoutError:
            log.warning("Enrich: trace %s timed out after %ss", trace.trace_id.hex(), self.enrich_timeout)
            return Enrichment(trace.trace_id, Status.TIMEOUT)
        except OtelTopicsError as exc:
            for kind, status in _STATUS_OF_ERROR:
                if isinstance(exc, kind):
                    log.warning("Enrich: trace %s: %s", trace.trace_id.hex(), exc)
                    metrics.ERRORS.labels("api").inc()
                    return Enrichment(trace.trace_id, status)
            raise

    # ---- Classify -----------------------------------------------------------------------------
    async def Classify(self, request: pb.ClassifyRequest, context: Context) -> pb.ClassifyResponse:
        name, texts = request.map, list(request.texts)
        if not name:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Classify: map is required (a topic map name)"
            )
        if not texts:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Classify: texts is empty; give at least one text"
            )
        if len(texts) > self.max_texts:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Classify: {len(texts)} texts, more than the {self.max_texts} one request may carry",
            )
        current = getattr(self.classifier, "current", None)
        if callable(current) and current(name) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_map(name))
        try:
            vectors = await self.embedder.embed(texts)
        except EmbedderError as exc:
            metrics.ERRORS.labels("api").inc()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"Classify: embedder {self.embedder.name} failed: {exc}"
            )
        try:
            assignments = self.classifier.classify(name, vectors)
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_map(name))
        except ValueError as exc:  # e.g. the map's centroids live in another embedding space
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Classify: {exc}")
        return pb.ClassifyResponse(assignments=[classification_pb(c) for c in assignments])

    def _unknown_map(self, name: str) -> str:
        maps = getattr(self.classifier, "maps", None)
        loaded = ", ".join(maps()) if callable(maps) else ""
        return f"no topic map named {name!r} is loaded (loaded: {loaded or 'none'})"

    # ---- topic maps and status ----------------------------------------------------------------
    async def ListTopicMaps(
        self, request: pb.ListTopicMapsRequest, context: Context
    ) -> pb.ListTopicMapsResponse:
        rows = await self._store(context, "ListTopicMaps", self.store.list_topic_maps)
        return pb.ListTopicMapsResponse(
            maps=[pb.TopicMapSummary(name=n, version=v, clusters=k, created_at=t) for n, v, k, t in rows]
        )

    async def GetTopicMap(self, request: pb.GetTopicMapRequest, context: Context) -> pb.TopicMap:
        name, version = request.name, request.version
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "GetTopicMap: name is required")
        if version < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"GetTopicMap: version must be >= 0 (0 = latest), got {version}",
            )
        if version == 0:
            tm = await self._store(context, "GetTopicMap", self.store.latest_topic_map, name)
        else:
            tm = await self._store(context, "GetTopicMap", self.store.topic_map, name, version)
        if tm is None:
            latest = (await self._store(context, "GetTopicMap", self.store.latest_versions)).get(name)
            if latest is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no topic map named {name!r} is saved")
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"topic map {name!r} has no version {version} (latest: {latest})"
            )
        return topic_map_pb(tm)

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        states = await self._store(context, "Status", self.store.states)
        versions = await self._store(context, "Status", self.store.latest_versions)
        maps = []
        for name in sorted(set(states) | set(versions)):
            state, reason, since = states.get(name, ("unknown", "no automation state recorded", 0.0))
            maps.append(
                pb.MapStatus(map=name, state=state, reason=reason, since=since, version=versions.get(name, 0))
            )
        return pb.StatusResponse(maps=maps)

    async def _store(self, context: Context, rpc: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call off the event loop; a StoreError becomes UNAVAILABLE."""
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError as exc:
            metrics.ERRORS.labels("api").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{rpc}: {exc}")


def add_topics_service(server: grpc.aio.Server, servicer: TopicsServicer) -> None:
    """Register ``servicer`` as ``otel_topics.v1.TopicsService`` on ``server`` (before it starts)."""
    pb_grpc.add_TopicsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def method_names() -> Sequence[str]:
    """Full names of the service's RPCs (for server reflection, logs)."""
    return [f"/{SERVICE_NAME}/{m.name}" for m in pb.DESCRIPTOR.services_by_name["TopicsService"].methods]
