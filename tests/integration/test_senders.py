"""OTLP senders against real servers on 127.0.0.1: a grpc.aio OTLP server and an aiohttp OTLP/HTTP server.

No network mocks: the servers below decode what arrives and the tests compare whole messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from google.protobuf import duration_pb2, json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from otel_topics import metrics, otlp_json
from otel_topics.errors import ExportError, PermanentExportError
from otel_topics.exporter import QueuedExporter
from otel_topics.senders import OtlpGrpcSender, OtlpHttpSender

Signal = str
REQUEST_TYPES: dict[str, Any] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}
RESPONSE_TYPES: dict[str, Any] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
}
REJECTED_FIELD = {
    "traces": "rejected_spans",
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
}


# --- requests ------------------------------------------------------------------------------------
def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        arr = ArrayValue(values=[AnyValue(string_value=v) for v in value])
        return KeyValue(key=key, value=AnyValue(array_value=arr))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def traces(tag: str = "t", n_spans: int = 2) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.attributes.extend([kv("service.name", "support-agent"), kv("deployment.environment", "test")])
    ss = rs.scope_spans.add()
    ss.scope.name = "openinference.instrumentation.openai"
    ss.scope.version = "0.1.2"
    ss.scope.attributes.append(kv("scope.attr", 7))
    trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    for i in range(n_spans):
        span = ss.spans.add(
            trace_id=trace_id,
            span_id=(i + 1).to_bytes(8, "big"),
            parent_span_id=b"" if i == 0 else (1).to_bytes(8, "big"),
            name=f"{tag}-{i}",
            kind=3,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_001_000_000_000,
        )
        span.attributes.extend(
            [
                kv("facets.Task", "Reset a password, with ünïcode"),
                kv("classifications.Task.distance", 0.125),
                kv("classifications.Task.map_version", 3),
                kv("llm.input_messages.0.message.content", "x" * 500),
                kv("tags", ["a", "b"]),
                kv("flag", True),
            ]
        )
        span.events.add(name="exception", time_unix_nano=5).attributes.append(
            kv("exception.type", "ValueError")
        )
        span.status.code = 2
        span.status.message = "boom"
    return req


def logs(tag: str = "l") -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "support-agent"))
    rec = rl.scope_logs.add().log_records.add(
        severity_number=9, severity_text="INFO", event_name="gen_ai.choice"
    )
    rec.body.string_value = f"log {tag}"
    rec.trace_id = bytes(range(16))
    rec.attributes.append(kv("gen_ai.system", "openai"))
    return req


def metrics_request() -> metrics_service_pb2.ExportMetricsServiceRequest:
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "support-agent"))
    m = rm.scope_metrics.add().metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    m.sum.data_points.add(as_int=42, time_unix_nano=9).attributes.append(kv("gen_ai.token.type", "input"))
    m.sum.aggregation_temporality = 2
    return req


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(f"otel_topics_{name}", labels) or 0.0


# --- a real OTLP/gRPC server ----------------------------------------------------------------------
@dataclass
class Backend:
    """What a test server received, and what it should answer next (a plan, then success)."""

    requests: dict[str, list[Any]] = field(default_factory=lambda: {s: [] for s in REQUEST_TYPES})
    headers: list[dict[str, str]] = field(default_factory=list)
    plan: list[tuple[Any, ...]] = field(default_factory=list)
    down_until: float = 0.0  # answer UNAVAILABLE / 503 until this time.monotonic()
    attempts: int = 0
    too_large: int = 0  # HTTP requests refused with 413 by aiohttp's body size limit

    def next_action(self) -> tuple[Any, ...]:
        self.attempts += 1
        if time.monotonic() < self.down_until:
            return ("unavailable", 0.05)
        return self.plan.pop(0) if self.plan else ("ok",)


def rpc_status(code: grpc.StatusCode, message: str, retry_after: float | None) -> bytes:
    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(retry_after * 1e9)))
        detail = AnyProto()
        detail.Pack(info)
        status.details.append(detail)
    return bytes(status.SerializeToString())


class _Servicer:
    def __init__(self, backend: Backend, signal: str) -> None:
        self.backend = backend
        self.signal = signal

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        action = self.backend.next_action()
        kind = action[0]
        codes = {
            "unavailable": grpc.StatusCode.UNAVAILABLE,
            "invalid": grpc.StatusCode.INVALID_ARGUMENT,
            "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
        if kind in codes:
            retry_after = action[1] if len(action) > 1 else None
            details = f"backend says {kind}"
            trailer = (("grpc-status-details-bin", rpc_status(codes[kind], details, retry_after)),)
            await context.abort(codes[kind], details, trailing_metadata=trailer)
        self.backend.requests[self.signal].append(request)
        self.backend.headers.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        response = RESPONSE_TYPES[self.signal]()
        if kind == "partial":
            setattr(response.partial_success, REJECTED_FIELD[self.signal], action[1])
            response.partial_success.error_message = "span too old"
        return response


class _Traces(_Servicer, trace_service_pb2_grpc.TraceServiceServicer):
    pass


class _Logs(_Servicer, logs_service_pb2_grpc.LogsServiceServicer):
    pass


class _Metrics(_Servicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    pass


@pytest.fixture
async def grpc_backend() -> AsyncIterator[tuple[Backend, str]]:
    backend = Backend()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(backend, "traces"), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(backend, "logs"), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(backend, "metrics"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield backend, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_grpc_delivers_all_signals_intact(grpc_backend: tuple[Backend, str]) -> None:
    backend, endpoint = grpc_backend
    sender = OtlpGrpcSender(endpoint, insecure=True, headers={"X-Api-Key": "secret"}, name="g-all")
    sent = {"traces": traces(), "logs": logs(), "metrics": metrics_request()}
    for signal, req in sent.items():
        await sender.send(signal, req.SerializeToString())  # type: ignore[arg-type]
    await sender.close()
    for signal, req in sent.items():
        assert backend.requests[signal] == [req]
    assert all(h.get("x-api-key") == "secret" for h in backend.headers)
    assert any("otel-topics" in h.get("user-agent", "") for h in backend.headers)


@pytest.mark.parametrize("endpoint_form", ["http://{}", "{}"])
async def test_grpc_endpoint_forms_and_no_compression(
    grpc_backend: tuple[Backend, str], endpoint_form: str
) -> None:
    backend, endpoint = grpc_backend
    insecure = endpoint_form == "{}"  # http:// implies insecure by itself
    sender = OtlpGrpcSender(endpoint_form.format(endpoint), insecure=insecure, compression="none")
    assert sender.insecure
    await sender.send("traces", traces().SerializeToString())
    await sender.close()
    assert len(backend.requests["traces"]) == 1


async def test_grpc_unavailable_is_retryable_with_retry_info(grpc_backend: tuple[Backend, str]) -> None:
    backend, endpoint = grpc_backend
    backend.plan = [("unavailable", 1.5)]
    sender = OtlpGrpcSender(endpoint, insecure=True)
    with pytest.raises(ExportError) as info:
        await sender.send("traces", traces().SerializeToString())
    assert not isinstance(info.value, PermanentExportError)
    assert info.value.retry_after == pytest.approx(1.5)
    assert "UNAVAILABLE" in str(info.value) and "backend says unavailable" in str(info.value)
    await sender.close()


async def test_grpc_invalid_argument_is_permanent(grpc_backend: tuple[Backend, str]) -> None:
    backend, endpoint = grpc_backend
    backend.plan = [("invalid",)]
    sender = OtlpGrpcSender(endpoint, insecure=True)
    with pytest.raises(PermanentExportError, match="INVALID_ARGUMENT: backend says invalid"):
        await sender.send("logs", logs().SerializeToString())
    await sender.close()


async def test_grpc_resource_exhausted_retryable_only_with_retry_info(
    grpc_backend: tuple[Backend, str],
) -> None:
    backend, endpoint = grpc_backend
    backend.plan = [("exhausted", 0.25), ("exhausted",)]
    sender = OtlpGrpcSender(endpoint, insecure=True)
    with pytest.raises(ExportError) as info:
        await sender.send("traces", traces().SerializeToString())
    assert not isinstance(info.value, PermanentExportError) and info.value.retry_after == pytest.approx(0.25)
    with pytest.raises(PermanentExportError, match="RESOURCE_EXHAUSTED"):
        await sender.send("traces", traces().SerializeToString())
    await sender.close()


async def test_grpc_partial_success_is_logged_and_counted(
    grpc_backend: tuple[Backend, str], caplog: pytest.LogCaptureFixture
) -> None:
    backend, endpoint = grpc_backend
    backend.plan = [("partial", 3)]
    sender = OtlpGrpcSender(endpoint, insecure=True, name="g-partial")
    with caplog.at_level(logging.WARNING, logger="otel_topics.senders"):
        await sender.send("traces", traces().SerializeToString())  # not an error: not retried
    await sender.close()
    assert "rejected 3 traces: span too old" in caplog.text
    assert sample("export_rejected_items_total", exporter="g-partial", signal="traces") == 3


async def test_grpc_connection_refused_is_retryable() -> None:
    sender = OtlpGrpcSender(f"127.0.0.1:{closed_port()}", insecure=True, timeout=2.0)
    with pytest.raises(ExportError) as info:
        await sender.send("traces", traces().SerializeToString())
    assert not isinstance(info.value, PermanentExportError)
    await sender.close()


async def test_grpc_missing_ca_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"tls\.ca_file"):
        OtlpGrpcSender("backend:4317", insecure=False, ca_file=str(tmp_path / "nope.pem"))


async def test_queued_grpc_exporter_rides_out_retry_info(
    grpc_backend: tuple[Backend, str], tmp_path: Path
) -> None:
    from otel_topics.exporter import MemoryQueue

    backend, endpoint = grpc_backend
    backend.plan = [("unavailable", 0.05)] * 3
    exp = QueuedExporter(
        OtlpGrpcSender(endpoint, insecure=True, name="g-queued"),
        queue=MemoryQueue(max_bytes=1 << 20),
        dead_letter_path=tmp_path / "dl.jsonl",
        retry_initial=0.01,
        retry_max_interval=0.05,
    )
    await exp.start()
    await exp.put("traces", traces().SerializeToString(), 2)
    assert await exp.drain(10)
    assert backend.requests["traces"] == [traces()]
    assert backend.attempts == 4
    assert not exp.dead_letter_path.exists()


# --- a real OTLP/HTTP server ----------------------------------------------------------------------
@dataclass
class HttpSeen:
    content_type: str
    content_encoding: str
    raw_size: int
    headers: dict[str, str]


@pytest.fixture
async def http_backend() -> AsyncIterator[tuple[Backend, list[HttpSeen], str]]:
    backend = Backend()
    seen: list[HttpSeen] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        signal = request.match_info["signal"]
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            backend.too_large += 1
            raise
        encoding = request.headers.get("Content-Encoding", "")
        body = gzip.decompress(raw) if encoding == "gzip" else raw
        ctype = request.headers.get("Content-Type", "")
        seen.append(HttpSeen(ctype, encoding, len(raw), dict(request.headers)))
        action = backend.next_action()
        kind = action[0]
        if kind == "unavailable":
            return web.Response(status=503, text="down for maintenance")
        if kind == "throttle":
            return web.Response(status=429, headers={"Retry-After": action[1]})
        if kind == "bad":
            status = status_pb2.Status(code=3, message=f"{signal}: unknown field in span 0")
            if action[1] == "json":
                return web.Response(
                    status=400, body=json_format.MessageToJson(status), content_type="application/json"
                )
            return web.Response(
                status=400, body=status.SerializeToString(), content_type="application/x-protobuf"
            )
        if kind == "error":
            return web.Response(status=action[1], text="oops")
        if ctype == "application/json":
            parsed = getattr(otlp_json, f"decode_{signal}")(body)
        else:
            parsed = REQUEST_TYPES[signal].FromString(body)
        backend.requests[signal].append(parsed)
        response = RESPONSE_TYPES[signal]()
        if kind == "partial":
            setattr(response.partial_success, REJECTED_FIELD[signal], action[1])
            response.partial_success.error_message = "too old"
        if ctype == "application/json":
            return web.Response(body=json_format.MessageToJson(response), content_type="application/json")
        return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/{signal}", handle)
    runner = web.AppRunner(app, auto_decompress=False)  # the test checks the body really is gzip
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield backend, seen, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def http_sender(base: str, **kw: Any) -> OtlpHttpSender:
    return OtlpHttpSender(f"{base}/v1/traces", f"{base}/v1/logs", f"{base}/v1/metrics", **kw)


@pytest.mark.parametrize("encoding", ["proto", "json"])
async def test_http_delivers_all_signals_intact(
    http_backend: tuple[Backend, list[HttpSeen], str], encoding: str
) -> None:
    backend, seen, base = http_backend
    sender = http_sender(base, encoding=encoding, headers={"Authorization": "Bearer t0k"})
    sent = {"traces": traces(), "logs": logs(), "metrics": metrics_request()}
    for signal, req in sent.items():
        await sender.send(signal, req.SerializeToString())  # type: ignore[arg-type]
    await sender.close()
    for signal, req in sent.items():
        assert backend.requests[signal] == [req]
    expected_type = "application/json" if encoding == "json" else "application/x-protobuf"
    assert {s.content_type for s in seen} == {expected_type}
    assert {s.content_encoding for s in seen} == {"gzip"}
    assert all(s.headers.get("Authorization") == "Bearer t0k" for s in seen)


async def test_http_without_compression(http_backend: tuple[Backend, list[HttpSeen], str]) -> None:
    backend, seen, base = http_backend
    sender = http_sender(base, compression="none")
    body = traces().SerializeToString()
    await sender.send("traces", body)
    await sender.close()
    assert seen[0].content_encoding == "" and seen[0].raw_size == len(body)
    assert backend.requests["traces"] == [traces()]


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_http_429_honours_retry_after(
    http_backend: tuple[Backend, list[HttpSeen], str], form: str
) -> None:
    backend, _, base = http_backend
    value = "7" if form == "seconds" else email.utils.formatdate(time.time() + 30, usegmt=True)
    backend.plan = [("throttle", value)]
    sender = http_sender(base)
    with pytest.raises(ExportError) as info:
        await sender.send("traces", traces().SerializeToString())
    assert not isinstance(info.value, PermanentExportError)
    assert info.value.retry_after == (pytest.approx(7) if form == "seconds" else pytest.approx(30, abs=2))
    assert "HTTP 429" in str(info.value)
    await sender.close()


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_http_gateway_errors_are_retryable(
    http_backend: tuple[Backend, list[HttpSeen], str], status: int
) -> None:
    backend, _, base = http_backend
    backend.plan = [("error", status)]
    sender = http_sender(base)
    with pytest.raises(ExportError) as info:
        await sender.send("logs", logs().SerializeToString())
    assert not isinstance(info.value, PermanentExportError) and info.value.retry_after is None
    await sender.close()


@pytest.mark.parametrize("body_format", ["proto", "json"])
async def test_http_400_is_permanent_with_status_message(
    http_backend: tuple[Backend, list[HttpSeen], str], body_format: str
) -> None:
    backend, _, base = http_backend
    backend.plan = [("bad", body_format)]
    sender = http_sender(base)
    with pytest.raises(PermanentExportError, match="HTTP 400: traces: unknown field in span 0"):
        await sender.send("traces", traces().SerializeToString())
    await sender.close()


async def test_http_500_is_permanent(http_backend: tuple[Backend, list[HttpSeen], str]) -> None:
    backend, _, base = http_backend
    backend.plan = [("error", 500)]
    sender = http_sender(base)
    with pytest.raises(PermanentExportError, match="HTTP 500: oops"):
        await sender.send("metrics", metrics_request().SerializeToString())
    await sender.close()


@pytest.mark.parametrize("encoding", ["proto", "json"])
async def test_http_partial_success(
    http_backend: tuple[Backend, list[HttpSeen], str], encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend, _, base = http_backend
    backend.plan = [("partial", 2)]
    name = f"h-partial-{encoding}"
    sender = http_sender(base, encoding=encoding, name=name)
    with caplog.at_level(logging.WARNING, logger="otel_topics.senders"):
        await sender.send("logs", logs().SerializeToString())
    await sender.close()
    assert "rejected 2 logs: too old" in caplog.text
    assert sample("export_rejected_items_total", exporter=name, signal="logs") == 2


async def test_http_connection_refused_is_retryable() -> None:
    sender = http_sender(f"http://127.0.0.1:{closed_port()}", timeout=2.0)
    with pytest.raises(ExportError, match="ConnectError") as info:
        await sender.send("traces", traces().SerializeToString())
    assert not isinstance(info.value, PermanentExportError)
    await sender.close()


async def test_queued_http_exporter_retries_then_delivers(
    http_backend: tuple[Backend, list[HttpSeen], str], tmp_path: Path
) -> None:
    from otel_topics.exporter import MemoryQueue

    backend, _, base = http_backend
    backend.plan = [("throttle", "0"), ("unavailable",), ("error", 502)]
    exp = QueuedExporter(
        http_sender(base, name="h-queued"),
        queue=MemoryQueue(max_bytes=1 << 20),
        dead_letter_path=tmp_path / "dl.jsonl",
        retry_initial=0.01,
        retry_max_interval=0.05,
    )
    await exp.start()
    await exp.put("traces", traces().SerializeToString(), 2)
    assert await exp.drain(10)
    assert backend.requests["traces"] == [traces()]
    assert sample("export_failures_total", exporter="h-queued", signal="traces", kind="retryable") == 3
    assert sample("exported_items_total", exporter="h-queued", signal="traces") == 2


# --- batches over a backend's size limit ------------------------------------------------------------
async def test_http_batch_over_size_limit_is_split(
    http_backend: tuple[Backend, list[HttpSeen], str], tmp_path: Path
) -> None:
    from otel_topics.exporter import MemoryQueue, pack_entry

    backend, _, base = http_backend
    queue = MemoryQueue(max_bytes=64 << 20)
    bodies = [traces(f"big{i}", n_spans=40).SerializeToString() for i in range(40)]
    for body in bodies:  # a backlog of ~1.3 MB, over aiohttp's 1 MiB default body limit
        await queue.put(pack_entry("traces", body, 40))
    exp = QueuedExporter(
        http_sender(base, compression="none", name="h-split"),
        queue=queue,
        dead_letter_path=tmp_path / "dl.jsonl",
        max_in_flight=1,
        max_batch_bytes=8 << 20,
    )
    await exp.start()
    assert await exp.drain(20)
    assert names_of(backend.requests["traces"]) == {f"big{i}-{j}" for i in range(40) for j in range(40)}
    assert backend.too_large >= 1  # refused (413) first, then split
    assert len(backend.requests["traces"]) >= 2
    assert not exp.dead_letter_path.exists()


async def test_grpc_batch_over_message_limit_is_split(tmp_path: Path) -> None:
    from otel_topics.exporter import MemoryQueue, pack_entry

    backend = Backend()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 * 1024)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(backend, "traces"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    queue = MemoryQueue(max_bytes=64 << 20)
    for i in range(20):  # ~170 KB each: any two together are over the server's limit
        await queue.put(pack_entry("traces", traces(f"g{i}", n_spans=200).SerializeToString(), 200))
    exp = QueuedExporter(
        OtlpGrpcSender(f"127.0.0.1:{port}", insecure=True, name="g-split"),
        queue=queue,
        dead_letter_path=tmp_path / "dl.jsonl",
        max_in_flight=1,
    )
    await exp.start()
    assert await exp.drain(20)
    await server.stop(None)
    assert names_of(backend.requests["traces"]) == {f"g{i}-{j}" for i in range(20) for j in range(200)}
    assert len(backend.requests["traces"]) == 20
    assert not exp.dead_letter_path.exists()


# --- with the persistent queue (otel_topics.spool) -------------------------------------------------
def persistent_queue(directory: Path) -> Any:
    spool = pytest.importorskip("otel_topics.spool", reason="otel_topics.spool is not written yet")
    if not hasattr(spool, "PersistentQueue"):
        pytest.skip("otel_topics.spool has no PersistentQueue yet")
    return spool.PersistentQueue(directory, max_bytes=256 << 20)


def names_of(requests: list[Any]) -> set[str]:
    return {s.name for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans}


async def test_outage_with_persistent_queue_loses_nothing(
    grpc_backend: tuple[Backend, str], tmp_path: Path
) -> None:
    backend, endpoint = grpc_backend
    backend.down_until = time.monotonic() + 2.0
    exp = QueuedExporter(
        OtlpGrpcSender(endpoint, insecure=True, name="g-outage"),
        queue=persistent_queue(tmp_path / "queue"),
        dead_letter_path=tmp_path / "dl.jsonl",
        retry_initial=0.05,
        retry_max_interval=0.3,
    )
    await exp.start()
    for i in range(200):
        await exp.put("traces", traces(f"r{i}", n_spans=1).SerializeToString(), 1)
    assert not backend.requests["traces"]  # everything is waiting out the outage on disk
    assert len(exp.queue) == 200
    assert await exp.drain(20)
    assert names_of(backend.requests["traces"]) == {f"r{i}-0" for i in range(200)}
    assert backend.attempts > len(backend.requests["traces"])  # some were refused and retried
    assert not exp.dead_letter_path.exists()


async def test_restart_mid_outage_delivers_everything(
    grpc_backend: tuple[Backend, str], tmp_path: Path
) -> None:
    backend, endpoint = grpc_backend
    backend.down_until = time.monotonic() + 3600
    queue_dir = tmp_path / "queue"

    def exporter() -> QueuedExporter:
        return QueuedExporter(
            OtlpGrpcSender(endpoint, insecure=True, name="g-restart"),
            queue=persistent_queue(queue_dir),
            dead_letter_path=tmp_path / "dl.jsonl",
            retry_initial=0.05,
            retry_max_interval=0.2,
        )

    first = exporter()
    await first.start()
    for i in range(50):
        await first.put("traces", traces(f"p{i}", n_spans=1).SerializeToString(), 1)
    await asyncio.sleep(0.3)  # some sends in flight, retrying
    assert backend.attempts > 0
    await first.close()  # as on a crash or a drain timeout: nothing acknowledged

    backend.down_until = 0.0
    second = exporter()
    await second.start()
    assert len(second.queue) == 50
    assert await second.drain(20)
    assert names_of(backend.requests["traces"]) == {f"p{i}-0" for i in range(50)}
    assert not (tmp_path / "dl.jsonl").exists()


async def test_backend_process_down_then_back_on_same_port(tmp_path: Path) -> None:
    """A real outage: nothing listens for a while; the channel reconnects soon after the backend is back."""
    backend = Backend()
    port = closed_port()

    async def serve() -> grpc.aio.Server:
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(backend, "traces"), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server

    exp = QueuedExporter(
        OtlpGrpcSender(f"127.0.0.1:{port}", insecure=True, name="g-down"),
        queue=persistent_queue(tmp_path / "queue"),
        dead_letter_path=tmp_path / "dl.jsonl",
        retry_initial=0.1,
        retry_max_interval=0.5,
    )
    await exp.start()
    for i in range(30):
        await exp.put("traces", traces(f"d{i}", n_spans=1).SerializeToString(), 1)
    await asyncio.sleep(1.5)
    assert sample("export_failures_total", exporter="g-down", signal="traces", kind="retryable") > 0
    server = await serve()
    started = time.monotonic()
    assert await exp.drain(20)
    recovered_in = time.monotonic() - started
    await server.stop(None)
    assert names_of(backend.requests["traces"]) == {f"d{i}-0" for i in range(30)}
    assert recovered_in < 5


# --- TLS -----------------------------------------------------------------------------------------
def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (and its key), made locally."""
    x509 = pytest.importorskip("cryptography.x509", reason="needs the cryptography package for a test cert")
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otel-topics test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_grpc_over_tls_with_ca_file(tmp_path: Path) -> None:
    cert_path, key_path = self_signed(tmp_path)
    backend = Backend()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(backend, "traces"), server)
    creds = grpc.ssl_server_credentials([(key_path.read_bytes(), cert_path.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        sender = OtlpGrpcSender(f"https://127.0.0.1:{port}", insecure=False, ca_file=str(cert_path))
        await sender.send("traces", traces().SerializeToString())
        await sender.close()
        assert backend.requests["traces"] == [traces()]
        untrusting = OtlpGrpcSender(f"127.0.0.1:{port}", insecure=False, timeout=3.0)  # system CAs only
        with pytest.raises(ExportError, match="UNAVAILABLE"):
            await untrusting.send("traces", traces().SerializeToString())
        await untrusting.close()
    finally:
        await server.stop(None)


async def test_https_with_ca_file(tmp_path: Path) -> None:
    import ssl

    cert_path, key_path = self_signed(tmp_path)
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(gzip.decompress(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", handle)
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        sender = http_sender(base, verify=str(cert_path))
        await sender.send("traces", traces().SerializeToString())
        await sender.close()
        assert [trace_service_pb2.ExportTraceServiceRequest.FromString(b) for b in received] == [traces()]
        untrusting = http_sender(base)
        with pytest.raises(ExportError, match="ConnectError"):
            await untrusting.send("traces", traces().SerializeToString())
        await untrusting.close()
    finally:
        await runner.cleanup()
