"""What the OTLP receiver's transports share: the :class:`Ingest` contract and its in-memory fake,
the per-signal table, and :class:`Handler` (validate, ingest, count metrics). The transports live in
:mod:`otel_topics.receiver` (gRPC) and :mod:`otel_topics.receiver_http` (HTTP)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_topics import otlp_json
from otel_topics.errors import Backpressure
from otel_topics.metrics import ERRORS, RECEIVED_ITEMS, RECEIVER_REQUESTS, REFUSED_ITEMS
from otel_topics.receiver_validate import Checked, check_logs, check_metrics, check_traces

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "GRPC",
    "HTTP",
    "SIGNALS",
    "Handler",
    "InMemoryIngest",
    "Ingest",
    "Signal",
    "enabled_signals",
    "parse_endpoint",
    "retry_after_header",
    "rpc_status",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Default limit of a request, in bytes, on both transports (after decompression)."""

GRPC = "grpc"
HTTP = "http"
_OUTCOMES = ("ok", "partial", "invalid", "too_large", "backpressure", "error")
_REASONS = ("invalid", "backpressure", "error")


class Ingest(Protocol):
    """Where the receiver hands validated requests. Implemented by the spool (the lead's wiring).

    Each method returns once the request is durably stored, and raises
    :class:`~otel_topics.errors.Backpressure` when the spool is at its disk cap. ``transport`` is
    ``"grpc"`` or ``"http"``. The request is never empty; the receiver no longer uses it afterwards.
    """

    async def traces(self, request: ExportTraceServiceRequest, transport: str) -> None: ...

    async def logs(self, request: ExportLogsServiceRequest, transport: str) -> None: ...

    async def metrics(self, request: ExportMetricsServiceRequest, transport: str) -> None: ...


class InMemoryIngest:
    """An :class:`Ingest` keeping every request in memory, for tests.

    Set ``error`` (e.g. ``Backpressure("full", retry_after=3)``) to make every call raise it, and
    ``delay`` (seconds) to make every call slow.
    """

    def __init__(self) -> None:
        self.trace_requests: list[ExportTraceServiceRequest] = []
        self.log_requests: list[ExportLogsServiceRequest] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.transports: list[str] = []
        self.error: BaseException | None = None
        self.delay: float = 0.0

    async def _enter(self, transport: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.transports.append(transport)

    async def traces(self, request: ExportTraceServiceRequest, transport: str) -> None:
        await self._enter(transport)
        self.trace_requests.append(request)

    async def logs(self, request: ExportLogsServiceRequest, transport: str) -> None:
        await self._enter(transport)
        self.log_requests.append(request)

    async def metrics(self, request: ExportMetricsServiceRequest, transport: str) -> None:
        await self._enter(transport)
        self.metric_requests.append(request)

    def spans(self) -> list[Span]:
        """Every span received so far, in arrival order."""
        return [
            span
            for request in self.trace_requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


# --- signals ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Signal:
    """What differs between traces, logs and metrics, for both transports."""

    name: str  # "traces", "logs", "metrics": also the Ingest method and the metrics label
    items: str  # what an item is called in messages: "spans", "log records", "data points"
    request_type: type[Any]
    check: Callable[[Any], Checked]
    response: Callable[[Checked], Message]
    decode_json: Callable[[bytes], Any]
    grpc_service: str
    http_path: str


def _trace_response(checked: Checked) -> Message:
    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(
            rejected_spans=checked.rejected, error_message=checked.error_message
        )
    )


def _logs_response(checked: Checked) -> Message:
    return ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(
            rejected_log_records=checked.rejected, error_message=checked.error_message
        )
    )


def _metrics_response(checked: Checked) -> Message:
    return ExportMetricsServiceResponse(
        partial_success=ExportMetricsPartialSuccess(
            rejected_data_points=checked.rejected, error_message=checked.error_message
        )
    )


SIGNALS: dict[str, Signal] = {
    "traces": Signal(
        "traces",
        "spans",
        ExportTraceServiceRequest,
        check_traces,
        _trace_response,
        otlp_json.decode_traces,
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "/v1/traces",
    ),
    "logs": Signal(
        "logs",
        "log records",
        ExportLogsServiceRequest,
        check_logs,
        _logs_response,
        otlp_json.decode_logs,
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "/v1/logs",
    ),
    "metrics": Signal(
        "metrics",
        "data points",
        ExportMetricsServiceRequest,
        check_metrics,
        _metrics_response,
        otlp_json.decode_metrics,
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "/v1/metrics",
    ),
}


def enabled_signals(*, traces: bool, logs: bool, metrics: bool) -> list[Signal]:
    """The signals switched on, in a fixed order."""
    wanted = {"traces": traces, "logs": logs, "metrics": metrics}
    return [signal for name, signal in SIGNALS.items() if wanted[name]]


class Handler:
    """The transport-independent part of one (signal, transport) endpoint: validate, ingest, count."""

    def __init__(self, signal: Signal, ingest: Ingest, transport: str) -> None:
        self.signal = signal
        self.transport = transport
        self._ingest: Callable[[Any, str], Any] = getattr(ingest, signal.name)
        labels = (signal.name, transport)
        self._received = RECEIVED_ITEMS.labels(*labels)
        self._refused = {reason: REFUSED_ITEMS.labels(*labels, reason) for reason in _REASONS}
        self._requests = {outcome: RECEIVER_REQUESTS.labels(*labels, outcome) for outcome in _OUTCOMES}

    def count(self, outcome: str) -> None:
        """Count a request that ended before :meth:`process` (``invalid``, ``too_large``)."""
        self._requests[outcome].inc()

    async def process(self, request: Any) -> Checked:
        """Validate ``request`` (removing invalid items), ingest what is left, count the outcome.

        Raises what the ingest raises (counted here): :class:`Backpressure` or any other error.
        """
        checked = self.signal.check(request)
        if checked.rejected:
            self._refused["invalid"].inc(checked.rejected)
        if checked.accepted:
            try:
                await self._ingest(request, self.transport)
            except Backpressure:
                self._refused["backpressure"].inc(checked.accepted)
                self._requests["backpressure"].inc()
                raise
            except Exception:
                self._refused["error"].inc(checked.accepted)
                self._requests["error"].inc()
                ERRORS.labels("receiver").inc()
                logger.error(
                    "receiver: storing %d %s received over %s failed",
                    checked.accepted,
                    self.signal.items,
                    self.transport,
                    exc_info=True,
                )
                raise
            self._received.inc(checked.accepted)
        self._requests["partial" if checked.rejected or checked.error_message else "ok"].inc()
        return checked

    def internal_error(self, exc: BaseException) -> str:
        return f"storing the {self.signal.items} failed: {type(exc).__name__}: {exc}"


def rpc_status(code: grpc.StatusCode, message: str, retry_after: float | None = None) -> Message:
    """A ``google.rpc.Status``; with ``retry_after``, a ``google.rpc.RetryInfo`` in its details."""
    status: Message = status_pb2.Status(code=code.value[0], message=message)
    if retry_after is not None:
        info = error_details_pb2.RetryInfo()
        seconds = max(0.0, retry_after)
        info.retry_delay.seconds = int(seconds)
        info.retry_delay.nanos = int((seconds - int(seconds)) * 1e9)
        status.details.add().Pack(info)  # type: ignore[attr-defined]
    return status


def retry_after_header(retry_after: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(retry_after)))


_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\[\]:]*)):(?P<port>\d{1,5})$")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``. ``"[::1]:4318"`` gives ``("::1", 4318)``; ``":4318"`` listens
    on every IPv4 interface (``"0.0.0.0"``); port 0 lets the OS pick a free port."""
    match = _ENDPOINT.match(endpoint.strip())
    port = int(match["port"]) if match else -1
    if match is None or port > 65535:
        raise ValueError(
            f"invalid endpoint {endpoint!r}: expected host:port, e.g. localhost:4318, 0.0.0.0:4318, "
            "[::1]:4318 or :4318"
        )
    host = match["v6"] or match["host"] or "0.0.0.0"
    return host, port
