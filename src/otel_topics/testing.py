"""Test helpers shipped with the package: a real OTLP/gRPC sink that records (or just counts)
what it receives, and small process/port utilities for integration tests and benchmarks."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_topics.otlp import count_data_points, count_log_records, count_spans


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


@dataclass
class OtlpSink:
    """An OTLP/gRPC server on loopback that keeps what it receives (``keep=False``: counts only).

    Runs its own event loop in a thread so it can serve synchronous tests and benchmarks.
    """

    port: int = 0
    keep: bool = True
    spans: int = 0
    log_records: int = 0
    data_points: int = 0
    traces: list[trace_pb.ExportTraceServiceRequest] = field(default_factory=list)
    logs: list[logs_pb.ExportLogsServiceRequest] = field(default_factory=list)
    metrics: list[metrics_pb.ExportMetricsServiceRequest] = field(default_factory=list)
    last_received: float = 0.0
    fail_next: int = 0  # answer UNAVAILABLE to this many requests first
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: grpc.aio.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> OtlpSink:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="otlp-sink", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("OTLP sink did not start")
        return self

    async def _start(self) -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        handlers = {
            "opentelemetry.proto.collector.trace.v1.TraceService": (
                trace_pb.ExportTraceServiceRequest,
                trace_pb.ExportTraceServiceResponse,
                self._on_traces,
            ),
            "opentelemetry.proto.collector.logs.v1.LogsService": (
                logs_pb.ExportLogsServiceRequest,
                logs_pb.ExportLogsServiceResponse,
                self._on_logs,
            ),
            "opentelemetry.proto.collector.metrics.v1.MetricsService": (
                metrics_pb.ExportMetricsServiceRequest,
                metrics_pb.ExportMetricsServiceResponse,
                self._on_metrics,
            ),
        }
        handlers_t: dict[str, tuple[Any, Any, Callable[[Any], None]]] = handlers  # type: ignore[assignment]
        for service, (req_t, resp_t, fn) in handlers_t.items():
            handler = grpc.unary_unary_rpc_method_handler(
                _wrap(fn, resp_t, self),
                request_deserializer=req_t.FromString,
                response_serializer=resp_t.SerializeToString,
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {"Export": handler}),)
            )
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    def _on_traces(self, req: trace_pb.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.spans += count_spans(req)
            if self.keep:
                self.traces.append(req)

    def _on_logs(self, req: logs_pb.ExportLogsServiceRequest) -> None:
        with self._lock:
            self.log_records += count_log_records(req)
            if self.keep:
                self.logs.append(req)

    def _on_metrics(self, req: metrics_pb.ExportMetricsServiceRequest) -> None:
        with self._lock:
            self.data_points += count_data_points(req)
            if self.keep:
                self.metrics.append(req)

    def all_spans(self) -> list[Span]:
        with self._lock:
            return [
                s for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]

    def wait_for(self, predicate: Callable[[OtlpSink], bool], timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._server.stop(0.5), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def _wrap(fn: Callable[[Any], None], resp_t: Any, sink: OtlpSink) -> Any:
    async def handler(request: Any, context: Any) -> Any:
        if sink.fail_next > 0:
            sink.fail_next -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "sink told to fail")
        fn(request)
        sink.last_received = time.monotonic()
        return resp_t()

    return handler
