"""Test helpers shipped with the package: a real OTLP/gRPC sink that records (or just counts)
what it receives, an OpenAI-compatible chat-completions server to stand in for a paid LLM API,
and small process/port utilities for integration tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
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


# ---- a chat-completions server ------------------------------------------------------------------

Behavior = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


def completion(content: str, finish_reason: str = "stop") -> web.Response:
    """A chat-completions answer whose one choice says ``content``."""
    return web.json_response(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "local",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
        }
    )


def answer(content: str | dict[str, Any], delay: float = 0.0) -> Behavior:
    """Answer with ``content`` (a dict is sent as its JSON text), after ``delay`` seconds."""
    text = content if isinstance(content, str) else json.dumps(content)

    async def behave(body: dict[str, Any]) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        return completion(text)

    return behave


def status(code: int, message: str = "boom", headers: dict[str, str] | None = None) -> Behavior:
    """Answer with HTTP ``code`` and an OpenAI-style error body."""

    async def behave(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": {"message": message}}, status=code, headers=headers)

    return behave


class ChatServer:
    """POST /v1/chat/completions on a loopback port, in the caller's event loop. Plays ``script``
    in order, then ``default``; records every request body and its headers, and how many requests
    were being answered at once."""

    def __init__(self, default: Behavior | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[Behavior] = []
        self.default: Behavior = default or answer("{}")
        self.in_flight = 0
        self.max_in_flight = 0
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            behave = self.script.pop(0) if self.script else self.default
            return await behave(body)
        finally:
            self.in_flight -= 1

    async def start(self) -> ChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
