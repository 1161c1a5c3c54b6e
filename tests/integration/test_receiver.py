"""The OTLP receiver over real sockets (127.0.0.1, ephemeral ports).

Clients: the real OpenTelemetry SDK exporters (gRPC and HTTP/protobuf) for the happy paths, raw grpc
and httpx calls for the error cases. The SDK exporters are blocking: they run in a worker thread while
the servers run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_topics import otlp_json
from otel_topics.errors import Backpressure
from otel_topics.metrics import REGISTRY
from otel_topics.receiver import (
    InMemoryIngest,
    make_http_app,
    start_grpc_server,
    start_http_server,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "instrumented_spans"
LIMIT = 256 * 1024  # a small size limit on both transports, so the oversized cases stay cheap
RESOURCE = Resource.create({"service.name": "receiver-test"})
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Servers:
    ingest: InMemoryIngest
    grpc_port: int
    http_port: int
    channel: grpc.aio.Channel
    http: httpx.AsyncClient

    def export_traces(self) -> Any:
        return self.channel.unary_unary(TRACE_EXPORT)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    ingest = InMemoryIngest()
    server, grpc_port = await start_grpc_server("127.0.0.1:0", ingest, max_recv_msg_size=LIMIT)
    runner = await start_http_server("127.0.0.1:0", make_http_app(ingest, max_request_body_size=LIMIT))
    http_port = runner.addresses[0][1]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
    try:
        yield Servers(ingest, grpc_port, http_port, channel, client)
    finally:
        await client.aclose()
        await channel.close()
        await server.stop(None)
        await runner.cleanup()


def _sample(name: str, signal: str) -> str:
    if not DATA.is_dir():
        pytest.skip(f"real OTLP data not found at {DATA}")
    for line in (DATA / name).read_text().splitlines():
        item = json.loads(line)
        if signal in item:
            return json.dumps(item[signal])
    raise AssertionError(f"no {signal} line in {name}")


def _request(*spans: dict[str, Any]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for span in spans:
        scope_spans.spans.add(**span)
    return request


def _span(name: str, **fields: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "name": name,
        "trace_id": bytes.fromhex("5b8efff798038103d269b633813fc60c"),
        "span_id": bytes.fromhex("eee19b7ec3c1b174"),
        "start_time_unix_nano": 1_000,
        "end_time_unix_nano": 2_000,
    }
    span.update(fields)
    return span


def _sample_value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"otel_topics_{name}_total", labels) or 0.0


# --- the real SDK exporters -----------------------------------------------------------------------
def _span_exporter(transport: str, port: int, gzipped: bool) -> Any:
    if transport == "grpc":
        compression = grpc.Compression.Gzip if gzipped else grpc.Compression.NoCompression
        return GrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=compression)
    compression_http = HttpCompression.Gzip if gzipped else HttpCompression.NoCompression
    return HttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", compression=compression_http)


def _log_exporter(transport: str, port: int, gzipped: bool) -> Any:
    if transport == "grpc":
        compression = grpc.Compression.Gzip if gzipped else grpc.Compression.NoCompression
        return GrpcLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=compression)
    compression_http = HttpCompression.Gzip if gzipped else HttpCompression.NoCompression
    return HttpLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", compression=compression_http)


def _metric_exporter(transport: str, port: int, gzipped: bool) -> Any:
    if transport == "grpc":
        compression = grpc.Compression.Gzip if gzipped else grpc.Compression.NoCompression
        return GrpcMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=compression)
    compression_http = HttpCompression.Gzip if gzipped else HttpCompression.NoCompression
    return HttpMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics", compression=compression_http)


def _port(servers: Servers, transport: str) -> int:
    return servers.grpc_port if transport == "grpc" else servers.http_port


TRANSPORTS = pytest.mark.parametrize(
    ("transport", "gzipped"), [("grpc", False), ("grpc", True), ("http", False), ("http", True)]
)


@TRANSPORTS
async def test_sdk_spans_arrive(servers: Servers, transport: str, gzipped: bool) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("receiver-test")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child") as child:
        child.set_attribute("gen_ai.operation.name", "chat")
    spans = memory.get_finished_spans()
    exporter = _span_exporter(transport, _port(servers, transport), gzipped)
    before = _sample_value("received_items", signal="traces", transport=transport)

    result = await asyncio.to_thread(exporter.export, spans)
    await asyncio.to_thread(exporter.shutdown)

    assert result == SpanExportResult.SUCCESS
    received = servers.ingest.spans()
    assert [span.name for span in received] == ["child", "root"]
    assert received[0].parent_span_id == received[1].span_id
    assert received[0].trace_id == spans[0].context.trace_id.to_bytes(16, "big")
    assert servers.ingest.transports == [transport]
    attributes = servers.ingest.trace_requests[0].resource_spans[0].resource.attributes
    assert {"service.name": "receiver-test"}.items() <= {
        a.key: a.value.string_value for a in attributes
    }.items()
    assert _sample_value("received_items", signal="traces", transport=transport) == before + 2


@TRANSPORTS
async def test_sdk_log_records_arrive(servers: Servers, transport: str, gzipped: bool) -> None:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("receiver-test")
    logger.emit(body="the user asked about refunds", event_name="gen_ai.user.message", severity_text="INFO")
    logger.emit(body={"content": "sure"}, event_name="gen_ai.choice")
    records = memory.get_finished_logs()
    exporter = _log_exporter(transport, _port(servers, transport), gzipped)

    result = await asyncio.to_thread(exporter.export, records)
    await asyncio.to_thread(exporter.shutdown)

    assert result == LogRecordExportResult.SUCCESS
    (request,) = servers.ingest.log_requests
    received = request.resource_logs[0].scope_logs[0].log_records
    assert [record.event_name for record in received] == ["gen_ai.user.message", "gen_ai.choice"]
    assert received[0].body.string_value == "the user asked about refunds"
    assert servers.ingest.transports == [transport]


@TRANSPORTS
async def test_sdk_metrics_arrive(servers: Servers, transport: str, gzipped: bool) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("receiver-test")
    meter.create_counter("gen_ai.requests").add(3, {"model": "a"})
    meter.create_counter("gen_ai.requests.failed").add(1)
    meter.create_histogram("gen_ai.latency", unit="s").record(0.25)
    data = reader.get_metrics_data()
    assert data is not None
    exporter = _metric_exporter(transport, _port(servers, transport), gzipped)

    result = await asyncio.to_thread(exporter.export, data)
    await asyncio.to_thread(exporter.shutdown)

    assert result == MetricExportResult.SUCCESS
    (request,) = servers.ingest.metric_requests
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    assert set(metrics) == {"gen_ai.requests", "gen_ai.requests.failed", "gen_ai.latency"}
    assert metrics["gen_ai.requests"].sum.data_points[0].as_int == 3
    assert metrics["gen_ai.latency"].histogram.data_points[0].count == 1
    provider.shutdown()


# --- OTLP/JSON over HTTP ----------------------------------------------------------------------------
def _hex_ids(value: Any) -> Any:
    """The captured lines carry base64 ids (protobuf's generic JSON); OTLP/JSON wants hex."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex()
            if key in ("traceId", "spanId", "parentSpanId") and item
            else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


async def test_otlp_json_with_hex_ids(servers: Servers) -> None:
    original = json.loads(_sample("traceloop-openai-0.62.4.jsonl", "traces"))
    body = json.dumps(_hex_ids(original))
    span_json = original["resourceSpans"][0]["scopeSpans"][0]["spans"][0]

    response = await servers.http.post("/v1/traces", content=body, headers=JSON)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {}
    (span,) = servers.ingest.spans()
    assert span.trace_id == base64.b64decode(span_json["traceId"])
    assert span.span_id == base64.b64decode(span_json["spanId"])
    assert span.name == span_json["name"]
    assert span.kind == 3  # SPAN_KIND_CLIENT
    assert servers.ingest.transports == ["http"]


async def test_otlp_json_logs_gzip(servers: Servers) -> None:
    original = json.loads(_sample("otel-openai-v2-2.4b0-span_and_event.jsonl", "logs"))
    body = gzip.compress(json.dumps(_hex_ids(original)).encode())

    response = await servers.http.post("/v1/logs", content=body, headers={**JSON, "Content-Encoding": "gzip"})

    assert response.status_code == 200, response.text
    (request,) = servers.ingest.log_requests
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert record.event_name == "gen_ai.client.inference.operation.details"
    assert len(record.trace_id) == 16


# --- partial success --------------------------------------------------------------------------------
def _mixed_request() -> ExportTraceServiceRequest:
    return _request(
        _span("good-1"),
        _span("short-trace-id", trace_id=b"abc"),
        _span("ends-before-start", start_time_unix_nano=5_000, end_time_unix_nano=4_000),
        _span("good-2", span_id=bytes.fromhex("00000000000000ff")),
        _span("zero-span-id", span_id=bytes(8)),
    )


async def test_partial_success_grpc(servers: Servers) -> None:
    before = _sample_value("refused_items", signal="traces", transport="grpc", reason="invalid")
    raw = await servers.export_traces()(_mixed_request().SerializeToString())

    response = ExportTraceServiceResponse.FromString(raw)
    assert response.partial_success.rejected_spans == 3
    message = response.partial_success.error_message
    assert "resource_spans[0].scope_spans[0].spans[1]: trace_id must be 16 bytes, got 3" in message
    assert "spans[2]: end_time_unix_nano 4000 is before start_time_unix_nano 5000" in message
    assert "spans[4]: span_id must not be all zeros" in message
    assert [span.name for span in servers.ingest.spans()] == ["good-1", "good-2"]
    assert _sample_value("refused_items", signal="traces", transport="grpc", reason="invalid") == before + 3


async def test_partial_success_http_protobuf_and_json(servers: Servers) -> None:
    response = await servers.http.post(
        "/v1/traces", content=_mixed_request().SerializeToString(), headers=PROTOBUF
    )
    assert response.status_code == 200
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 3

    body = otlp_json.encode_traces(_mixed_request())
    response = await servers.http.post("/v1/traces", content=body, headers=JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 3
    assert "spans[1]: trace_id must be 16 bytes, got 3" in partial["errorMessage"]
    assert [span.name for span in servers.ingest.spans()] == ["good-1", "good-2"] * 2


async def test_all_invalid_means_no_ingest_call(servers: Servers) -> None:
    raw = await servers.export_traces()(_request(_span("bad", trace_id=bytes(16))).SerializeToString())

    assert ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans == 1
    assert servers.ingest.trace_requests == []


async def test_empty_request_is_accepted_without_ingest(servers: Servers) -> None:
    raw = await servers.export_traces()(b"")
    response = await servers.http.post("/v1/traces", content=b"{}", headers=JSON)

    assert raw == b""
    assert response.status_code == 200
    assert servers.ingest.trace_requests == []


# --- errors -------------------------------------------------------------------------------------
def _status(raw: bytes) -> Any:
    return status_pb2.Status.FromString(raw)


async def test_undecodable_grpc_is_invalid_argument(servers: Servers) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await servers.export_traces()(b"\x0a\xff\xff\xff\xff\x0f")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode the ExportTraceServiceRequest" in (caught.value.details() or "")
    assert servers.ingest.trace_requests == []


async def test_undecodable_http_is_400_with_status(servers: Servers) -> None:
    response = await servers.http.post("/v1/traces", content=b"\x0a\xff\xff\xff\xff\x0f", headers=PROTOBUF)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/x-protobuf"
    status = _status(response.content)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "cannot decode the ExportTraceServiceRequest" in status.message

    bad_id = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz","spanId":"eee19b7ec3c1b174"}]}]}]}'
    response = await servers.http.post("/v1/traces", content=bad_id, headers=JSON)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert (
        "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hex characters, got 'xyz'"
        in (response.json()["message"])
    )

    response = await servers.http.post(
        "/v1/traces", content=b"\x1f\x8bnot really gzip", headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert "gzip" in _status(response.content).message


async def test_oversized_grpc_is_resource_exhausted(servers: Servers) -> None:
    big = _request(_span("x" * (LIMIT + 10))).SerializeToString()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await servers.export_traces()(big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # small on the wire, too large decompressed
        await servers.export_traces()(big, compression=grpc.Compression.Gzip)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert servers.ingest.trace_requests == []


async def test_oversized_http_is_413(servers: Servers) -> None:
    big = _request(_span("x" * (LIMIT + 10))).SerializeToString()

    response = await servers.http.post("/v1/traces", content=big, headers=PROTOBUF)
    assert response.status_code == 413
    assert _status(response.content).code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

    bomb = gzip.compress(big)  # a few hundred bytes that inflate past the limit
    assert len(bomb) < LIMIT // 100
    response = await servers.http.post(
        "/v1/traces", content=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed" in _status(response.content).message
    assert servers.ingest.trace_requests == []


async def test_backpressure_grpc_is_unavailable_with_retry_info(servers: Servers) -> None:
    servers.ingest.error = Backpressure("spool is at its disk cap", retry_after=2.5)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await servers.export_traces()(_request(_span("a")).SerializeToString())

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "spool is at its disk cap"
    trailing = dict(caught.value.trailing_metadata() or ())
    status = _status(trailing["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.ToTimedelta().total_seconds() == 2.5
    bare = error_details_pb2.RetryInfo.FromString(trailing["google.rpc.retryinfo-bin"])
    assert bare == info


class _FullOnce(InMemoryIngest):
    """Refuses the first request with backpressure, then stores normally."""

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.refusals = 0
        self.retry_after = retry_after

    async def traces(self, request: ExportTraceServiceRequest, transport: str) -> None:
        if not self.refusals:
            self.refusals += 1
            raise Backpressure("spool is at its disk cap", retry_after=self.retry_after)
        await super().traces(request, transport)


async def test_sdk_grpc_exporter_honours_retry_info() -> None:
    ingest = _FullOnce(retry_after=0.3)
    server, port = await start_grpc_server("127.0.0.1:0", ingest)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("receiver-test").start_as_current_span("retried"):
        pass
    exporter = _span_exporter("grpc", port, gzipped=False)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await asyncio.to_thread(exporter.export, memory.get_finished_spans())
        elapsed = loop.time() - started
        await asyncio.to_thread(exporter.shutdown)
    finally:
        await server.stop(None)

    assert result == SpanExportResult.SUCCESS
    assert ingest.refusals == 1
    assert [span.name for span in ingest.spans()] == ["retried"]
    assert 0.3 <= elapsed < 0.9  # waited the RetryInfo delay, not the SDK's own 1 s backoff


async def test_backpressure_http_is_503_with_retry_after(servers: Servers) -> None:
    servers.ingest.error = Backpressure("spool is at its disk cap", retry_after=2.5)

    response = await servers.http.post(
        "/v1/traces", content=_request(_span("a")).SerializeToString(), headers=PROTOBUF
    )

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    status = _status(response.content)
    assert status.message == "spool is at its disk cap"
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)


async def test_ingest_failure_is_internal_and_500(servers: Servers) -> None:
    servers.ingest.error = OSError("disk on fire")
    before = _sample_value("errors", component="receiver")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await servers.export_traces()(_request(_span("a")).SerializeToString())
    response = await servers.http.post(
        "/v1/traces", content=_request(_span("a")).SerializeToString(), headers=PROTOBUF
    )

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "disk on fire" in (caught.value.details() or "")
    assert response.status_code == 500
    assert "disk on fire" in _status(response.content).message
    assert _sample_value("errors", component="receiver") == before + 2


async def test_http_content_type_method_and_path(servers: Servers) -> None:
    response = await servers.http.post("/v1/traces", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "text/plain" in _status(response.content).message

    response = await servers.http.post(
        "/v1/traces", content=b"{}", headers={**JSON, "Content-Encoding": "snappy"}
    )
    assert response.status_code == 415

    assert (await servers.http.get("/v1/traces")).status_code == 405
    assert (await servers.http.post("/v1/profiles", content=b"", headers=PROTOBUF)).status_code == 404


async def test_invalid_request_does_not_disturb_a_concurrent_valid_one(servers: Servers) -> None:
    servers.ingest.delay = 0.2  # the valid requests are still being stored while the bad ones arrive
    valid = _request(_span("valid")).SerializeToString()
    export = servers.export_traces()

    async def bad_grpc() -> grpc.StatusCode:
        await asyncio.sleep(0.05)
        try:
            await export(b"\xff\xff\xff")
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        raise AssertionError("the bad request was accepted")

    async def bad_http() -> int:
        await asyncio.sleep(0.05)
        response = await servers.http.post("/v1/traces", content=b"{not json", headers=JSON)
        return response.status_code

    results = await asyncio.gather(
        export(valid),
        servers.http.post("/v1/traces", content=valid, headers=PROTOBUF),
        bad_grpc(),
        bad_http(),
    )

    assert results[0] == b""
    assert results[1].status_code == 200
    assert results[2] == grpc.StatusCode.INVALID_ARGUMENT
    assert results[3] == 400
    assert [span.name for span in servers.ingest.spans()] == ["valid", "valid"]


# --- signals without a pipeline -----------------------------------------------------------------
@pytest.fixture
async def traces_only() -> AsyncIterator[tuple[int, int, InMemoryIngest]]:
    ingest = InMemoryIngest()
    extra: list[str] = []
    server, grpc_port = await start_grpc_server(
        "127.0.0.1:0", ingest, logs=False, metrics=False, extra=lambda s: extra.append(type(s).__name__)
    )
    app = make_http_app(ingest, logs=False, metrics=False, extra_routes=_health_route)
    runner = await start_http_server("127.0.0.1:0", app)
    try:
        assert extra == ["Server"]
        yield grpc_port, runner.addresses[0][1], ingest
    finally:
        await server.stop(None)
        await runner.cleanup()


def _health_route(app: Any) -> None:
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)


async def test_signals_without_a_pipeline_are_not_served(
    traces_only: tuple[int, int, InMemoryIngest],
) -> None:
    grpc_port, http_port, _ingest = traces_only
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(
                ExportLogsServiceRequest().SerializeToString()
            )
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert await channel.unary_unary(TRACE_EXPORT)(b"") == b""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        assert (await client.post("/v1/logs", content=b"", headers=PROTOBUF)).status_code == 404
        assert (await client.post("/v1/metrics", content=b"", headers=PROTOBUF)).status_code == 404
        assert (await client.post("/v1/traces", content=b"", headers=PROTOBUF)).status_code == 200
        assert (await client.get("/health")).text == "ok"


async def test_port_in_use_is_an_os_error(servers: Servers) -> None:
    with pytest.raises(OSError, match="OTLP/HTTP"):
        await start_http_server(f"127.0.0.1:{servers.http_port}", make_http_app(InMemoryIngest()))
    with pytest.raises(OSError, match="OTLP/gRPC"):
        await start_grpc_server(f"127.0.0.1:{servers.grpc_port}", InMemoryIngest())
