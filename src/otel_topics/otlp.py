"""Small helpers over OTLP protobuf messages, for the hot path (no per-span Python objects kept)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_topics.model import AttrValue

FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def count_log_records(request: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def count_data_points(request: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


def iter_spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            yield from ss.spans


def is_root(span: Span) -> bool:
    """A span without parent, or whose parent lives outside this process's view (remote)."""
    if not span.parent_span_id:
        return True
    flags = span.flags
    return bool(flags & FLAG_HAS_IS_REMOTE and flags & FLAG_IS_REMOTE)


def top_spans(request: ExportTraceServiceRequest) -> list[Span]:
    """The spans to enrich with ``attach_to: root``: roots, else the spans whose parent is absent."""
    spans = list(iter_spans(request))
    roots = [s for s in spans if is_root(s)]
    if roots:
        return roots
    ids = {s.span_id for s in spans}
    orphans = [s for s in spans if s.parent_span_id not in ids]
    return orphans or spans[:1]


_M = TypeVar("_M", ExportTraceServiceRequest, ExportLogsServiceRequest)


def split_items(request: _M, keep: Callable[[Any], bool], fields: tuple[str, str, str]) -> tuple[_M, _M]:
    """Split a request's items into (kept, rest), each under its original resource and scope.
    ``fields``: the names of the resource, scope and item lists, e.g. resource_spans, scope_spans, spans."""
    r_field, s_field, i_field = fields
    yes, no = type(request)(), type(request)()
    for r in getattr(request, r_field):
        r_out: dict[bool, Any] = {}
        for sc in getattr(r, s_field):
            s_out: dict[bool, Any] = {}
            for item in getattr(sc, i_field):
                k = bool(keep(item))
                if k not in s_out:
                    if k not in r_out:
                        dest = yes if k else no
                        r_out[k] = getattr(dest, r_field).add(resource=r.resource, schema_url=r.schema_url)
                    s_out[k] = getattr(r_out[k], s_field).add(scope=sc.scope, schema_url=sc.schema_url)
                getattr(s_out[k], i_field).append(item)
    return yes, no


def split_traces(
    request: ExportTraceServiceRequest, keep: Callable[[bytes], bool]
) -> tuple[ExportTraceServiceRequest, ExportTraceServiceRequest]:
    """Split a request by trace id into (kept, rest), each keeping resource and scope."""
    return split_items(request, lambda span: keep(span.trace_id), ("resource_spans", "scope_spans", "spans"))


def split_logs(
    request: ExportLogsServiceRequest, keep: Callable[[LogRecord], bool]
) -> tuple[ExportLogsServiceRequest, ExportLogsServiceRequest]:
    """Split a request's log records into (kept, rest), each keeping resource and scope."""
    return split_items(request, keep, ("resource_logs", "scope_logs", "log_records"))


def any_value(value: AttrValue) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def set_attributes(span: Span, attrs: Mapping[str, AttrValue]) -> None:
    """Set (replace or add) attributes on a span."""
    if not attrs:
        return
    existing = {kv.key: kv for kv in span.attributes}
    for key, value in attrs.items():
        kv = existing.get(key)
        if kv is None:
            span.attributes.append(KeyValue(key=key, value=any_value(value)))
        else:
            kv.value.CopyFrom(any_value(value))


def enrich_spans(
    request: ExportTraceServiceRequest, attrs: Mapping[str, AttrValue], *, attach_to: str = "root"
) -> None:
    """Write enrichment attributes on the trace's root span(s), or on every span."""
    targets = list(iter_spans(request)) if attach_to == "all" else top_spans(request)
    for span in targets:
        set_attributes(span, attrs)


def service_name(resource: Resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


def classification_span(
    *,
    trace_id: bytes,
    parent_span_id: bytes,
    start_ns: int,
    end_ns: int,
    attrs: Mapping[str, AttrValue],
    service: str = "",
) -> ExportTraceServiceRequest:
    """One ``otel_topics.classification`` span, child of the root, with the root's start and end time."""
    from otel_topics import __version__

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if service:
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    ss.scope.name = "otel_topics"
    ss.scope.version = __version__
    span = ss.spans.add(
        trace_id=trace_id,
        span_id=os.urandom(8),
        parent_span_id=parent_span_id,
        name="otel_topics.classification",
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
    )
    set_attributes(span, attrs)
    return req
