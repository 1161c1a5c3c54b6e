"""Pipeline: sampling, spooling, release, enrichment attributes, classification spans, pass-through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics.assembler import Assembler
from otel_topics.classify import CentroidClassifier
from otel_topics.embed import HashEmbedder
from otel_topics.enrich import MapBinding, StoreRunner, TraceEnricher
from otel_topics.facets.fake import FakeFacetExtractor
from otel_topics.model import Cluster, Signal, TopicMap
from otel_topics.otlp import is_root, iter_spans
from otel_topics.pipeline import Pipeline, PipelineSettings, sampled
from otel_topics.preprocess import DefaultPreprocessor
from otel_topics.replay import TraceBuilder
from otel_topics.spool import DurableLog
from otel_topics.store import open_store
from otel_topics.tokens import WordCounter

CONV = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "Please cancel my flight to Paris tomorrow."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "function": {"name": "cancel_reservation", "arguments": '{"id": "X1"}'}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Error: reservation not found"},
    {"role": "assistant", "content": "I could not find that reservation."},
]


class Outlet:
    def __init__(self) -> None:
        self.items: list[tuple[Signal, bytes, int]] = []

    async def put(self, signal: Signal, payload: bytes, items: int) -> None:
        self.items.append((signal, payload, items))

    def traces(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(p) for s, p, _ in self.items if s == "traces"]

    def spans(self) -> list[Any]:
        return [s for r in self.traces() for s in iter_spans(r)]


def attrs(span: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def request(n: int = 1, conv: list[dict[str, Any]] = CONV) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(n):
        req.resource_spans.append(TraceBuilder(service="svc").build(conv))
    return req


async def map_for(embedder: HashEmbedder, text: str) -> TopicMap:
    vec = (await embedder.embed([text]))[0]
    return TopicMap(
        name="Task",
        facet="Task",
        version=1,
        distance_threshold=0.5,
        embedder=embedder.name,
        clusters=[Cluster(id="c-1", name="cancel flights", centroid=[float(x) for x in vec], size=10)],
    )


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Pipeline, DurableLog, StoreRunner]] = []

    async def build(**kw: Any) -> tuple[Pipeline, Outlet, FakeFacetExtractor, CentroidClassifier]:
        spool = DurableLog(tmp_path / f"spool{len(made)}", max_bytes=64 << 20, name="test")
        await spool.start()
        assembler = Assembler(spool, idle=0.05, max_wait=5.0, max_bytes=64 << 20)
        store = StoreRunner(open_store(f"sqlite:///{tmp_path}/s{len(made)}.db"))
        extractor = kw.pop("extractor", None) or FakeFacetExtractor()
        embedder = HashEmbedder()
        classifier = CentroidClassifier()
        enricher = TraceEnricher(
            preprocessor=DefaultPreprocessor(tokenizer=WordCounter()),
            extractor=extractor,
            embedder=embedder,
            classifier=classifier,
            maps=[MapBinding("Task", "Task")],
            store=store,
            retry_interval=0.0,
        )
        outlet = Outlet()
        settings = PipelineSettings(tick=0.01, retry_poll=0.05, **kw)
        pipe = Pipeline(
            settings,
            outlets={"traces": outlet, "logs": outlet, "metrics": outlet},
            spool=spool,
            assembler=assembler,
            enricher=enricher,
            store=store,
        )
        pipe.start()
        made.append((pipe, spool, store))
        return pipe, outlet, extractor, classifier

    yield build
    for pipe, spool, store in made:
        await pipe.drain(1.0)
        await spool.close()
        store.close()


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_sampling_is_decided_by_trace_id() -> None:
    ids = [bytes(8) + i.to_bytes(8, "big") for i in range(0, 1 << 64, 1 << 58)]
    assert all(sampled(t, 1.0) for t in ids) and not any(sampled(t, 0.0) for t in ids)
    share = sum(sampled(t, 0.25) for t in ids) / len(ids)
    assert 0.2 <= share <= 0.3
    assert [sampled(t, 0.25) for t in ids] == [sampled(t, 0.25) for t in ids]


async def test_enriched_root_and_every_span_forwarded(make: Callable[..., Any]) -> None:
    pipe, outlet, _, _ = await make()
    req = request(3)
    n = sum(1 for _ in iter_spans(req))
    await pipe.traces(req, "grpc")
    await wait_until(lambda: len(outlet.spans()) == n)
    for span in outlet.spans():
        a = attrs(span)
        if is_root(span):
            assert a["otel_topics.status"] == "ok"
            assert a["facets.Task"].startswith("Please cancel my flight")
            assert {"facets.Sentiment", "facets.Issues"} <= set(a)
        else:
            assert not any(k.startswith(("facets.", "otel_topics.")) for k in a)


async def test_unsampled_traces_go_out_at_once_marked(make: Callable[..., Any]) -> None:
    pipe, outlet, extractor, _ = await make(sampling_rate=0.0)
    await pipe.traces(request(2), "grpc")
    roots = [s for s in outlet.spans() if is_root(s)]
    assert len(roots) == 2 and all(attrs(r)["otel_topics.status"] == "sampled_out" for r in roots)
    await asyncio.sleep(0.1)
    assert extractor.calls == []


async def test_classification_attributes_when_a_map_exists(make: Callable[..., Any]) -> None:
    pipe, outlet, _, classifier = await make()
    embedder = HashEmbedder()
    classifier.swap(await map_for(embedder, "Please cancel my flight to Paris tomorrow."))
    await pipe.traces(request(1), "grpc")
    await wait_until(lambda: any(is_root(s) for s in outlet.spans()))
    root = next(s for s in outlet.spans() if is_root(s))
    a = attrs(root)
    assert a["classifications.Task.id"] == "c-1"
    assert a["classifications.Task.label"] == "cancel flights"
    assert a["classifications.Task.map_version"] == 1
    assert a["classifications.Task.source"] == "online"
    assert a["classifications.Task.distance"] == pytest.approx(0.0, abs=1e-5)


async def test_forward_immediate_then_classification_span(make: Callable[..., Any]) -> None:
    pipe, outlet, _, _ = await make(forward="immediate")
    req = request(1)
    root = next(s for s in iter_spans(req) if is_root(s))
    n = sum(1 for _ in iter_spans(req))
    await pipe.traces(req, "grpc")
    assert len(outlet.spans()) == n  # forwarded before the ack, un-enriched
    await wait_until(lambda: len(outlet.spans()) == n + 1)
    cls = outlet.spans()[-1]
    assert cls.name == "otel_topics.classification"
    assert cls.parent_span_id == root.span_id and cls.trace_id == root.trace_id
    assert (cls.start_time_unix_nano, cls.end_time_unix_nano) == (
        root.start_time_unix_nano,
        root.end_time_unix_nano,
    )
    assert attrs(cls)["facets.Task"].startswith("Please cancel")


async def test_llm_failure_marks_trace_then_retry_emits_late_result(make: Callable[..., Any]) -> None:
    pipe, outlet, _, _ = await make(extractor=FakeFacetExtractor(fail_times=1))
    await pipe.traces(request(1), "grpc")
    await wait_until(lambda: any(is_root(s) for s in outlet.spans()))
    root = next(s for s in outlet.spans() if is_root(s))
    assert attrs(root)["otel_topics.status"] == "llm_error"
    await wait_until(lambda: any(s.name == "otel_topics.classification" for s in outlet.spans()))
    late = next(s for s in outlet.spans() if s.name == "otel_topics.classification")
    assert late.parent_span_id == root.span_id
    assert attrs(late)["otel_topics.status"] == "ok"


async def test_timeout_forwards_unenriched(make: Callable[..., Any]) -> None:
    pipe, outlet, _, _ = await make(extractor=FakeFacetExtractor(delay=5.0), enrich_timeout=0.1)
    await pipe.traces(request(1), "grpc")
    await wait_until(lambda: any(is_root(s) for s in outlet.spans()))
    root = next(s for s in outlet.spans() if is_root(s))
    assert attrs(root).get("otel_topics.status") == "timeout"
    assert "facets.Task" not in attrs(root)


async def test_late_span_reopens_trace_with_classification_span(make: Callable[..., Any]) -> None:
    pipe, outlet, _, _ = await make()
    req = request(1)
    await pipe.traces(req, "grpc")
    await wait_until(lambda: any(is_root(s) for s in outlet.spans()))
    root = next(s for s in outlet.spans() if is_root(s))
    # a late chat span of the same trace
    late = ExportTraceServiceRequest()
    late.CopyFrom(req)
    spans = late.resource_spans[0].scope_spans[0].spans
    keep = [s for s in spans if s.name.startswith("chat")][:1]
    del spans[:]
    spans.extend(keep)
    before = len(outlet.spans())
    await pipe.traces(late, "grpc")
    await wait_until(lambda: any(s.name == "otel_topics.classification" for s in outlet.spans()))
    new = outlet.spans()[before:]
    assert any(s.name.startswith("chat") for s in new)  # the late span itself is forwarded
    cls = next(s for s in new if s.name == "otel_topics.classification")
    assert cls.parent_span_id == root.span_id
    assert attrs(cls)["otel_topics.status"] == "ok"


async def test_logs_and_metrics(make: Callable[..., Any]) -> None:
    pipe, outlet, _, _ = await make()
    req = request(1)
    tid = next(iter_spans(req)).trace_id
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    genai = sl.log_records.add(trace_id=tid, event_name="gen_ai.user.message")
    genai.body.kvlist_value.values.add(key="content").value.string_value = "Please cancel my flight"
    sl.log_records.add(severity_text="INFO").body.string_value = "plain application log"
    await pipe.logs(logs, "grpc")
    # the plain record passes straight through; the GenAI one waits for its trace
    assert [(s, n) for s, _, n in outlet.items] == [("logs", 1)]
    await pipe.traces(req, "grpc")
    await wait_until(lambda: sum(n for s, _, n in outlet.items if s == "logs") == 2)
    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="requests")
    m.sum.data_points.add(as_int=3)
    await pipe.metrics(metrics, "http")
    assert outlet.items[-1][0] == "metrics" and outlet.items[-1][2] == 1


def test_vectors_are_unit(tmp_path: Path) -> None:
    v = asyncio.run(HashEmbedder().embed(["a b c"]))
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)


async def test_trace_without_conversation_is_marked(make: Callable[..., Any]) -> None:
    pipe, outlet, extractor, _ = await make()
    req = ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=b"\x01" * 16,
            span_id=b"\x02" * 8,
            name="GET /health",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
    )
    span.attributes.add(key="http.route").value.string_value = "/health"
    await pipe.traces(req, "http")
    await wait_until(lambda: len(outlet.spans()) == 1)
    assert attrs(outlet.spans()[0])["otel_topics.status"] == "no_conversation"
    assert extractor.calls == []
