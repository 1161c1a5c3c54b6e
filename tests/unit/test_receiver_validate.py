"""Validation for OTLP partial success: what is refused, what the message says, what is left alone."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics.receiver_validate import MAX_PROBLEMS, Checked, check_logs, check_metrics, check_traces

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def _span(name: str, **fields: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "name": name,
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "start_time_unix_nano": 10,
        "end_time_unix_nano": 20,
    }
    span.update(fields)
    return span


def _traces(*scopes: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for spans in scopes:
        scope_spans = resource_spans.scope_spans.add()
        for span in spans:
            scope_spans.spans.add(**span)
    return request


def _names(request: ExportTraceServiceRequest) -> list[str]:
    return [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def test_valid_request_is_left_untouched() -> None:
    request = _traces([_span("a"), _span("b", parent_span_id=SPAN_ID)], [_span("c", end_time_unix_nano=10)])
    before = request.SerializeToString()

    assert check_traces(request) == Checked(accepted=3)
    assert request.SerializeToString() == before


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"trace_id": b"abc"}, "trace_id must be 16 bytes, got 3"),
        ({"trace_id": b""}, "trace_id must be 16 bytes, got 0"),
        ({"trace_id": bytes(16)}, "trace_id must not be all zeros"),
        ({"span_id": TRACE_ID}, "span_id must be 8 bytes, got 16"),
        ({"span_id": bytes(8)}, "span_id must not be all zeros"),
        ({"parent_span_id": b"1234"}, "parent_span_id must be empty or 8 bytes, got 4"),
        ({"end_time_unix_nano": 5}, "end_time_unix_nano 5 is before start_time_unix_nano 10"),
    ],
)
def test_invalid_span_is_removed_and_named(fields: dict[str, Any], problem: str) -> None:
    request = _traces([_span("ok-1"), _span("bad", **fields), _span("ok-2")])

    checked = check_traces(request)

    assert checked == Checked(2, 1, f"resource_spans[0].scope_spans[0].spans[1]: {problem}")
    assert _names(request) == ["ok-1", "ok-2"]


def test_message_names_the_first_problems_then_counts_the_rest() -> None:
    bad = [_span(f"bad-{i}", trace_id=b"x") for i in range(MAX_PROBLEMS + 2)]
    request = _traces([_span("ok")], bad)

    checked = check_traces(request)

    assert checked.accepted == 1
    assert checked.rejected == MAX_PROBLEMS + 2
    assert checked.error_message.startswith("resource_spans[0].scope_spans[1].spans[0]: trace_id")
    assert checked.error_message.count("trace_id must be 16 bytes") == MAX_PROBLEMS
    assert checked.error_message.endswith("; and 2 more")
    assert _names(request) == ["ok"]


def test_every_span_invalid_leaves_nothing() -> None:
    request = _traces([_span("a", span_id=b""), _span("b", span_id=b"")])

    checked = check_traces(request)

    assert (checked.accepted, checked.rejected) == (0, 2)
    assert _names(request) == []


def test_empty_request() -> None:
    assert check_traces(ExportTraceServiceRequest()) == Checked(0)
    assert check_logs(ExportLogsServiceRequest()) == Checked(0)
    assert check_metrics(ExportMetricsServiceRequest()) == Checked(0)


def test_log_records() -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(body={"string_value": "no ids"})
    records.add(trace_id=TRACE_ID, span_id=SPAN_ID)
    records.add(trace_id=b"short")
    records.add(trace_id=TRACE_ID, span_id=b"123")

    checked = check_logs(request)

    assert (checked.accepted, checked.rejected) == (2, 2)
    assert checked.error_message == (
        "resource_logs[0].scope_logs[0].log_records[2]: trace_id must be empty or 16 bytes, got 5; "
        "resource_logs[0].scope_logs[0].log_records[3]: span_id must be empty or 8 bytes, got 3"
    )
    assert len(request.resource_logs[0].scope_logs[0].log_records) == 2


def test_valid_logs_untouched() -> None:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(trace_id=TRACE_ID, span_id=SPAN_ID)
    before = request.SerializeToString()

    assert check_logs(request) == Checked(1)
    assert request.SerializeToString() == before


def test_metrics_count_data_points_and_refuse_unnamed_metrics() -> None:
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    gauge = metrics.add(name="g")
    gauge.gauge.data_points.add(as_double=1.0)
    gauge.gauge.data_points.add(as_double=2.0)
    metrics.add(name="s").sum.data_points.add(as_int=3)
    metrics.add(name="h").histogram.data_points.add(count=1)
    metrics.add(name="e").exponential_histogram.data_points.add(count=1)
    metrics.add(name="q").summary.data_points.add(count=1)
    metrics.add(name="no data")
    unnamed = metrics.add()
    unnamed.sum.data_points.add(as_int=1)
    unnamed.sum.data_points.add(as_int=2)

    checked = check_metrics(request)

    assert (checked.accepted, checked.rejected) == (6, 2)
    assert checked.error_message == (
        "resource_metrics[0].scope_metrics[0].metrics[6]: metric name must not be empty (2 data points)"
    )
    assert [m.name for m in metrics] == ["g", "s", "h", "e", "q", "no data"]
