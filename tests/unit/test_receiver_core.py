"""Receiver parts that need no socket: endpoints, status messages, the Handler's counting, the fake."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics.errors import Backpressure
from otel_topics.metrics import REGISTRY
from otel_topics.receiver import InMemoryIngest, make_http_app, parse_endpoint
from otel_topics.receiver_core import SIGNALS, Handler, retry_after_header, rpc_status


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("localhost:4318", ("localhost", 4318)),
        ("0.0.0.0:4318", ("0.0.0.0", 4318)),
        ("[::1]:4317", ("::1", 4317)),
        ("[::]:4317", ("::", 4317)),
        (":4318", ("0.0.0.0", 4318)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_parse_endpoint(endpoint: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["localhost", "4318", "::1:4317", "host:99999", "host:port", ""])
def test_parse_endpoint_refuses(endpoint: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint"):
        parse_endpoint(endpoint)


def test_rpc_status_with_retry_info() -> None:
    status = rpc_status(grpc.StatusCode.UNAVAILABLE, "full", retry_after=1.25)

    assert status.code == 14  # type: ignore[attr-defined]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)  # type: ignore[attr-defined]
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 250_000_000)
    assert not rpc_status(grpc.StatusCode.INVALID_ARGUMENT, "bad").details  # type: ignore[attr-defined]


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.2, "1"), (2.0, "2"), (2.5, "3")])
def test_retry_after_header(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def _request(trace_ids: list[bytes]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for trace_id in trace_ids:
        spans.add(trace_id=trace_id, span_id=b"12345678")
    return request


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"otel_topics_{name}_total", labels) or 0.0


async def test_handler_ingests_valid_items_and_counts() -> None:
    ingest = InMemoryIngest()
    handler = Handler(SIGNALS["traces"], ingest, "unit-ok")

    checked = await handler.process(_request([b"a" * 16, b"b", b"c" * 16]))

    assert (checked.accepted, checked.rejected) == (2, 1)
    assert len(ingest.spans()) == 2
    assert ingest.transports == ["unit-ok"]
    labels = {"signal": "traces", "transport": "unit-ok"}
    assert _value("received_items", **labels) == 2
    assert _value("refused_items", **labels, reason="invalid") == 1
    assert _value("receiver_requests", **labels, outcome="partial") == 1


async def test_handler_skips_ingest_when_nothing_is_left() -> None:
    ingest = InMemoryIngest()
    ingest.error = RuntimeError("must not be called")
    handler = Handler(SIGNALS["traces"], ingest, "unit-empty")

    assert (await handler.process(ExportTraceServiceRequest())).accepted == 0
    assert (await handler.process(_request([b""]))).rejected == 1
    assert _value("receiver_requests", signal="traces", transport="unit-empty", outcome="ok") == 1


async def test_handler_counts_backpressure_and_errors() -> None:
    ingest = InMemoryIngest()
    handler = Handler(SIGNALS["traces"], ingest, "unit-fail")
    labels = {"signal": "traces", "transport": "unit-fail"}
    errors_before = _value("errors", component="receiver")

    ingest.error = Backpressure("full", retry_after=1)
    with pytest.raises(Backpressure):
        await handler.process(_request([b"a" * 16]))
    ingest.error = OSError("disk")
    with pytest.raises(OSError):
        await handler.process(_request([b"a" * 16] * 2))

    assert _value("refused_items", **labels, reason="backpressure") == 1
    assert _value("refused_items", **labels, reason="error") == 2
    assert _value("receiver_requests", **labels, outcome="backpressure") == 1
    assert _value("receiver_requests", **labels, outcome="error") == 1
    assert _value("errors", component="receiver") == errors_before + 1
    assert _value("received_items", **labels) == 0


def test_make_http_app_routes_only_enabled_signals() -> None:
    app = make_http_app(InMemoryIngest(), traces=True, logs=False, metrics=True)

    paths = {resource.canonical for resource in app.router.resources()}

    assert paths == {"/v1/traces", "/v1/metrics"}
    with pytest.raises(ValueError, match="max_request_body_size"):
        make_http_app(InMemoryIngest(), max_request_body_size=0)
