"""The sidecar's gRPC API (otel_topics.v1.TopicsService) over a real grpc.aio server on 127.0.0.1,
called through the generated client stub. Fakes: a fixed-facet enricher, the package's HashEmbedder
and the real CentroidClassifier, a SqliteStore on a temporary file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_topics import otlp_json
from otel_topics._proto.otel_topics.v1 import topics_pb2 as pb
from otel_topics._proto.otel_topics.v1.topics_pb2_grpc import TopicsServiceStub
from otel_topics.api import TopicsServicer, add_topics_service, split_by_trace
from otel_topics.classify import CentroidClassifier
from otel_topics.embed import HashEmbedder, normalize_rows
from otel_topics.errors import LLMError
from otel_topics.model import NO_MATCH, Cluster, Enrichment, Status, TopicMap, TraceData
from otel_topics.store_sqlite import SqliteStore

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "instrumented_spans"

FLIGHTS = ["book a flight to paris", "change my flight booking", "cancel my flight reservation"]
REFUNDS = ["refund my order", "where is my refund for the order", "return an order for a refund"]
HOTELS = ["book a hotel room", "cancel my hotel room booking"]


class FixedEnricher:
    """Facets fixed per trace; the Task facet classified for real. A root span named ``boom`` makes
    the facet LLM fail, ``slow`` never finishes."""

    def __init__(self, embedder: HashEmbedder, classifier: CentroidClassifier) -> None:
        self.embedder = embedder
        self.classifier = classifier
        self.seen: list[TraceData] = []

    async def enrich(self, trace: TraceData) -> Enrichment:
        self.seen.append(trace)
        names = {s.name for rs in trace.spans.resource_spans for ss in rs.scope_spans for s in ss.spans}
        if "boom" in names:
            raise LLMError("facet LLM answered 500")
        if "slow" in names:
            await asyncio.sleep(60)
        facets = {"Task": "book a flight to paris", "Sentiment": "neutral", "Issues": NO_MATCH}
        vectors = await self.embedder.embed([facets["Task"]])
        return Enrichment(trace.trace_id, Status.OK, facets, self.classifier.classify("Task", vectors))


def centroid(embedder: HashEmbedder, texts: list[str]) -> list[float]:
    return [float(x) for x in normalize_rows(embedder.embed_sync(texts).mean(axis=0))[0]]


def draw_map(embedder: HashEmbedder, groups: dict[str, list[str]]) -> TopicMap:
    clusters = [
        Cluster(
            id=f"id-{name}",
            name=name,
            centroid=centroid(embedder, texts),
            size=len(texts),
            description=f"requests about {name}",
            keywords=name.split(),
            radius=0.3,
            exemplars=texts[:2],
            parents=[f"id-{name}"],
        )
        for name, texts in groups.items()
    ]
    return TopicMap(
        name="Task",
        facet="Task",
        version=0,
        clusters=clusters,
        distance_threshold=0.6,
        embedder=embedder.name,
    )


@dataclass
class Api:
    stub: TopicsServiceStub
    store: SqliteStore
    enricher: FixedEnricher
    topic_map: TopicMap


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    embedder = HashEmbedder(dimension=64)
    classifier = CentroidClassifier(embedder.name)
    store = SqliteStore(tmp_path / "topics.db")
    store.save_topic_map(draw_map(embedder, {"flights": FLIGHTS, "refunds": REFUNDS}))
    latest = store.save_topic_map(
        draw_map(embedder, {"flights": FLIGHTS, "refunds": REFUNDS, "hotels": HOTELS})
    )
    classifier.swap(latest)
    store.set_state("Task", "idle", "")
    store.set_state("Issues", "waiting_for_facets", "12/400 traces")
    enricher = FixedEnricher(embedder, classifier)
    servicer = TopicsServicer(enricher, embedder, classifier, store, enrich_timeout=0.5)
    server = grpc.aio.server()
    add_topics_service(server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Api(TopicsServiceStub(channel), store, enricher, latest)  # type: ignore[no-untyped-call]
    finally:
        await channel.close(None)
        await server.stop(None)
        store.close()


def span(trace: int, span_id: int, name: str = "chat", parent: int = 0) -> Span:
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_000_000_000,
    )


def request(*resources: tuple[str, list[Span]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for service, spans in resources:
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
        ss = rs.scope_spans.add()
        ss.scope.name = "test-scope"
        ss.spans.extend(spans)
    return req


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call  # type: ignore[misc]
    return e.value.code(), e.value.details() or ""


# ---- split_by_trace ------------------------------------------------------------------------------


def test_split_by_trace_keeps_resource_and_scope() -> None:
    req = request(
        ("agent", [span(1, 1), span(2, 2), span(1, 3, parent=1)]), ("tools", [span(1, 4, parent=1)])
    )
    traces = split_by_trace(req)
    assert [t.trace_id for t in traces] == [(1).to_bytes(16, "big"), (2).to_bytes(16, "big")]
    first = traces[0].spans
    assert [rs.resource.attributes[0].value.string_value for rs in first.resource_spans] == ["agent", "tools"]
    assert [s.span_id[-1] for s in first.resource_spans[0].scope_spans[0].spans] == [1, 3]
    assert first.resource_spans[1].scope_spans[0].scope.name == "test-scope"
    assert len(traces[1].spans.resource_spans) == 1


def test_split_by_trace_refuses_bad_trace_ids() -> None:
    bad = request(("agent", [Span(trace_id=b"\x01" * 8, span_id=b"\x01" * 8, name="short")]))
    with pytest.raises(ValueError, match=r"span 'short'.*invalid trace_id"):
        split_by_trace(bad)


# ---- Enrich --------------------------------------------------------------------------------------


async def test_enrich_groups_spans_and_returns_facets_and_classifications(api: Api) -> None:
    req = request(("agent", [span(1, 1), span(2, 2)]), ("tools", [span(1, 3, parent=1)]))
    resp: pb.EnrichResponse = await api.stub.Enrich(req)
    assert [t.trace_id for t in resp.traces] == [(1).to_bytes(16, "big"), (2).to_bytes(16, "big")]
    first = resp.traces[0]
    assert first.status == "ok"
    assert dict(first.facets) == {
        "Task": "book a flight to paris",
        "Sentiment": "neutral",
        "Issues": NO_MATCH,
    }
    (c,) = first.classifications
    assert (c.map, c.label, c.id, c.map_version, c.source) == ("Task", "flights", "id-flights", 2, "online")
    assert 0.0 <= c.distance < 0.6
    seen = {t.trace_id[-1]: t for t in api.enricher.seen}
    assert len(seen[1].spans.resource_spans) == 2  # both resources of trace 1 reached the enricher


async def test_enrich_empty_request(api: Api) -> None:
    resp = await api.stub.Enrich(ExportTraceServiceRequest())
    assert list(resp.traces) == []


async def test_enrich_reports_failures_per_trace(api: Api) -> None:
    req = request(("agent", [span(1, 1, "boom"), span(2, 2, "slow"), span(3, 3)]))
    resp = await api.stub.Enrich(req)
    assert [(t.trace_id[-1], t.status) for t in resp.traces] == [
        (1, Status.LLM_ERROR),
        (2, Status.TIMEOUT),
        (3, Status.OK),
    ]
    assert dict(resp.traces[0].facets) == {} and list(resp.traces[1].classifications) == []


async def test_enrich_invalid_trace_id(api: Api) -> None:
    req = request(("agent", [Span(trace_id=b"", span_id=b"\x01" * 8, name="no-trace")]))
    code, details = await code_of(api.stub.Enrich(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no-trace" in details and "trace_id" in details


async def test_enrich_real_instrumented_spans(api: Api) -> None:
    path = DATA / "traceloop-openai-0.62.4.jsonl"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    req = ExportTraceServiceRequest()
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if "traces" in obj:
            req.MergeFrom(otlp_json.decode_traces(json.dumps(obj["traces"])))
    ids = list(
        dict.fromkeys(s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
    )
    assert ids
    resp = await api.stub.Enrich(req)
    assert [t.trace_id for t in resp.traces] == ids
    assert all(t.status == "ok" and t.classifications[0].label == "flights" for t in resp.traces)


# ---- Classify ------------------------------------------------------------------------------------


async def test_classify(api: Api) -> None:
    texts = ["please book a flight for me", "I want a refund for my order", "book a hotel room in rome"]
    resp = await api.stub.Classify(pb.ClassifyRequest(map="Task", texts=texts))
    assert [(a.label, a.id, a.map_version, a.map) for a in resp.assignments] == [
        ("flights", "id-flights", 2, "Task"),
        ("refunds", "id-refunds", 2, "Task"),
        ("hotels", "id-hotels", 2, "Task"),
    ]
    assert all(0.0 <= a.distance <= 0.6 for a in resp.assignments)


async def test_classify_far_text_is_no_match(api: Api) -> None:
    resp = await api.stub.Classify(pb.ClassifyRequest(map="Task", texts=["zebra quantum xylophone"]))
    (a,) = resp.assignments
    assert (a.label, a.id) == (NO_MATCH, "")
    assert a.distance > api.topic_map.distance_threshold


async def test_classify_errors(api: Api) -> None:
    code, details = await code_of(api.stub.Classify(pb.ClassifyRequest(map="Nope", texts=["x"])))
    assert code == grpc.StatusCode.NOT_FOUND and "'Nope'" in details and "Task" in details
    code, details = await code_of(api.stub.Classify(pb.ClassifyRequest(map="Task")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "texts" in details
    code, details = await code_of(api.stub.Classify(pb.ClassifyRequest(texts=["x"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "map" in details


# ---- topic maps and status -----------------------------------------------------------------------


async def test_list_topic_maps(api: Api) -> None:
    resp = await api.stub.ListTopicMaps(pb.ListTopicMapsRequest())
    (m,) = resp.maps
    assert (m.name, m.version, m.clusters) == ("Task", 2, 3)
    assert m.created_at == pytest.approx(api.topic_map.created_at)


async def test_get_topic_map(api: Api) -> None:
    latest = await api.stub.GetTopicMap(pb.GetTopicMapRequest(name="Task"))
    assert (latest.name, latest.facet, latest.version, latest.embedder) == ("Task", "Task", 2, "hash-64")
    assert latest.distance_threshold == pytest.approx(0.6)
    assert [c.id for c in latest.clusters] == ["id-flights", "id-refunds", "id-hotels"]
    hotels = latest.clusters[2]
    assert (hotels.name, hotels.size, list(hotels.examples), list(hotels.keywords)) == (
        "hotels",
        2,
        HOTELS,
        ["hotels"],
    )
    assert hotels.description == "requests about hotels" and list(hotels.parents) == ["id-hotels"]
    first = await api.stub.GetTopicMap(pb.GetTopicMapRequest(name="Task", version=1))
    assert first.version == 1 and len(first.clusters) == 2


async def test_get_topic_map_errors(api: Api) -> None:
    code, details = await code_of(api.stub.GetTopicMap(pb.GetTopicMapRequest(name="Nope")))
    assert code == grpc.StatusCode.NOT_FOUND and "'Nope'" in details
    code, details = await code_of(api.stub.GetTopicMap(pb.GetTopicMapRequest(name="Task", version=9)))
    assert code == grpc.StatusCode.NOT_FOUND and "no version 9" in details and "latest: 2" in details
    code, _ = await code_of(api.stub.GetTopicMap(pb.GetTopicMapRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await code_of(api.stub.GetTopicMap(pb.GetTopicMapRequest(name="Task", version=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_status(api: Api) -> None:
    tm = draw_map(HashEmbedder(64), {"x": ["x"]})
    tm.name = "Other"
    api.store.save_topic_map(tm)  # a version but no recorded state
    resp = await api.stub.Status(pb.StatusRequest())
    got = {m.map: (m.state, m.reason, m.version) for m in resp.maps}
    assert got == {
        "Issues": ("waiting_for_facets", "12/400 traces", 0),
        "Other": ("unknown", "no automation state recorded", 1),
        "Task": ("idle", "", 2),
    }
    assert [m.map for m in resp.maps] == ["Issues", "Other", "Task"]
    assert all(m.since > 0 for m in resp.maps if m.map != "Other")


async def test_store_failure_is_unavailable(api: Api) -> None:
    api.store.close()
    code, details = await code_of(api.stub.ListTopicMaps(pb.ListTopicMapsRequest()))
    assert code == grpc.StatusCode.UNAVAILABLE and "list_topic_maps" in details


def test_generated_module_resolves_otlp_import() -> None:
    deps = [d.name for d in pb.DESCRIPTOR.dependencies]
    assert deps == ["opentelemetry/proto/collector/trace/v1/trace_service.proto"]
    method = pb.DESCRIPTOR.services_by_name["TopicsService"].methods_by_name["Enrich"]
    assert method.input_type.full_name == "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
