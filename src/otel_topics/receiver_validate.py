"""Validation of decoded OTLP requests, for the receiver's partial-success responses.

Each ``check_*`` function counts the items of a request (spans, log records, metric data points),
removes the invalid ones IN PLACE and says what it removed. A request whose items are all valid is not
modified. The loops are kept tight: they run once per item on the receiver's hot path.

Invalid items:

* span: ``trace_id`` not 16 bytes or all zeros, ``span_id`` not 8 bytes or all zeros, ``parent_span_id``
  neither empty nor 8 bytes, ``end_time_unix_nano`` before ``start_time_unix_nano``;
* log record: ``trace_id`` set but not 16 bytes, ``span_id`` set but not 8 bytes;
* metric: no name (all its data points are refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["MAX_PROBLEMS", "Checked", "check_logs", "check_metrics", "check_traces"]

MAX_PROBLEMS = 3
"""How many problems the partial-success ``error_message`` names before ``and N more``."""

_ZERO16 = bytes(16)
_ZERO8 = bytes(8)


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of validating one request: items kept, items removed and why."""

    accepted: int
    rejected: int = 0
    error_message: str = ""


def _message(problems: list[str], rejected: int) -> str:
    text = "; ".join(problems)
    more = rejected - len(problems)
    return f"{text}; and {more} more" if more > 0 else text


def _remove(items: Any, indexes: list[int]) -> None:
    for index in reversed(indexes):
        del items[index]


def _span_problem(span: Any) -> str:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16:
        return f"trace_id must be 16 bytes, got {len(trace_id)}"
    if trace_id == _ZERO16:
        return "trace_id must not be all zeros"
    if len(span_id) != 8:
        return f"span_id must be 8 bytes, got {len(span_id)}"
    if span_id == _ZERO8:
        return "span_id must not be all zeros"
    if parent and len(parent) != 8:
        return f"parent_span_id must be empty or 8 bytes, got {len(parent)}"
    return (
        f"end_time_unix_nano {span.end_time_unix_nano} is before "
        f"start_time_unix_nano {span.start_time_unix_nano}"
    )


def check_traces(request: ExportTraceServiceRequest) -> Checked:
    """Count the spans of ``request`` and remove the invalid ones."""
    total = 0
    rejected = 0
    problems: list[str] = []
    zero16, zero8 = _ZERO16, _ZERO8
    for ri, resource_spans in enumerate(request.resource_spans):
        for si, scope_spans in enumerate(resource_spans.scope_spans):
            spans = scope_spans.spans
            total += len(spans)
            bad: list[int] | None = None
            for k, span in enumerate(spans):
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                if (
                    len(trace_id) == 16
                    and trace_id != zero16
                    and len(span_id) == 8
                    and span_id != zero8
                    and (not parent or len(parent) == 8)
                    and span.end_time_unix_nano >= span.start_time_unix_nano
                ):
                    continue
                if bad is None:
                    bad = []
                bad.append(k)
                if len(problems) < MAX_PROBLEMS:
                    where = f"resource_spans[{ri}].scope_spans[{si}].spans[{k}]"
                    problems.append(f"{where}: {_span_problem(span)}")
            if bad:
                rejected += len(bad)
                _remove(spans, bad)
    return Checked(total - rejected, rejected, _message(problems, rejected))


def check_logs(request: ExportLogsServiceRequest) -> Checked:
    """Count the log records of ``request`` and remove those with malformed trace/span ids."""
    total = 0
    rejected = 0
    problems: list[str] = []
    for ri, resource_logs in enumerate(request.resource_logs):
        for si, scope_logs in enumerate(resource_logs.scope_logs):
            records = scope_logs.log_records
            total += len(records)
            bad: list[int] | None = None
            for k, record in enumerate(records):
                trace_id = record.trace_id
                span_id = record.span_id
                if (not trace_id or len(trace_id) == 16) and (not span_id or len(span_id) == 8):
                    continue
                if bad is None:
                    bad = []
                bad.append(k)
                if len(problems) < MAX_PROBLEMS:
                    where = f"resource_logs[{ri}].scope_logs[{si}].log_records[{k}]"
                    if trace_id and len(trace_id) != 16:
                        why = f"trace_id must be empty or 16 bytes, got {len(trace_id)}"
                    else:
                        why = f"span_id must be empty or 8 bytes, got {len(span_id)}"
                    problems.append(f"{where}: {why}")
            if bad:
                rejected += len(bad)
                _remove(records, bad)
    return Checked(total - rejected, rejected, _message(problems, rejected))


def _points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return 0 if kind is None else len(getattr(metric, kind).data_points)


def check_metrics(request: ExportMetricsServiceRequest) -> Checked:
    """Count the data points of ``request`` and remove the metrics without a name."""
    total = 0
    rejected = 0
    bad_metrics = 0
    problems: list[str] = []
    for ri, resource_metrics in enumerate(request.resource_metrics):
        for si, scope_metrics in enumerate(resource_metrics.scope_metrics):
            metrics = scope_metrics.metrics
            bad: list[int] | None = None
            for k, metric in enumerate(metrics):
                points = _points(metric)
                total += points
                if metric.name:
                    continue
                if bad is None:
                    bad = []
                bad.append(k)
                rejected += points
                if len(problems) < MAX_PROBLEMS:
                    where = f"resource_metrics[{ri}].scope_metrics[{si}].metrics[{k}]"
                    problems.append(f"{where}: metric name must not be empty ({points} data points)")
            if bad:
                bad_metrics += len(bad)
                _remove(metrics, bad)
    return Checked(total - rejected, rejected, _message(problems, bad_metrics))
