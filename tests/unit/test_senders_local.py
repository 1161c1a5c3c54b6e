"""The local senders: debug log, OTLP/JSON file with rotation, and the in-memory fake."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics import otlp_json
from otel_topics.errors import ExportError, PermanentExportError
from otel_topics.senders import DebugSender, FileSender, InMemorySender


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def enriched_traces() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "support-agent"))
    ss = rs.scope_spans.add()
    ss.scope.name = "openinference"
    root = ss.spans.add(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), span_id=b"\x01" * 8, name="agent"
    )
    root.attributes.extend(
        [
            kv("facets.Task", "Reset a password"),
            kv("classifications.Task.label", "Account access"),
            kv("otel_topics.status", "ok"),
            kv("llm.model_name", "gpt-4o"),
        ]
    )
    child = ss.spans.add(trace_id=root.trace_id, span_id=b"\x02" * 8, parent_span_id=root.span_id, name="llm")
    child.attributes.append(kv("llm.model_name", "gpt-4o"))
    return req


def logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add(severity_text="INFO")
    rec.body.string_value = "hello"
    rec.event_name = "gen_ai.user.message"
    return req


def metrics_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="tokens", unit="1")
    m.sum.data_points.add(as_int=3).attributes.append(kv("model", "gpt-4o"))
    m.sum.data_points.add(as_int=4)
    return req


@pytest.mark.parametrize("verbosity", ["basic", "normal", "detailed"])
async def test_debug_sender_levels(verbosity: str, caplog: pytest.LogCaptureFixture) -> None:
    sender = DebugSender(verbosity, name="dbg")
    with caplog.at_level(logging.INFO, logger="otel_topics.debug"):
        await sender.send("traces", enriched_traces().SerializeToString())
    text = caplog.text
    assert "dbg: traces: 1 resource spans, 2 spans" in text
    if verbosity == "basic":
        assert "span " not in text
        return
    assert 'span "agent" trace_id=0af7651916cd43dd8448eb211c80319c' in text
    assert 'facets.Task="Reset a password"' in text
    assert 'classifications.Task.label="Account access"' in text
    assert 'otel_topics.status="ok"' in text
    assert ("llm.model_name" in text) == (verbosity == "detailed")
    assert ("service.name" in text) == (verbosity == "detailed")


async def test_debug_sender_logs_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    sender = DebugSender("detailed")
    with caplog.at_level(logging.INFO, logger="otel_topics.debug"):
        await sender.send("logs", logs().SerializeToString())
        await sender.send("metrics", metrics_request().SerializeToString())
    assert "1 log records" in caplog.text
    assert 'event="gen_ai.user.message"' in caplog.text and 'body="hello"' in caplog.text
    assert "1 metrics, 2 data points" in caplog.text
    assert 'metric "tokens" sum' in caplog.text and 'model="gpt-4o"' in caplog.text


def test_debug_sender_refuses_unknown_verbosity() -> None:
    with pytest.raises(ValueError, match="verbosity"):
        DebugSender("loud")


async def test_undecodable_payload_is_permanent() -> None:
    with pytest.raises(PermanentExportError, match="not valid protobuf"):
        await DebugSender().send("traces", b"\xff\xff\xff")


async def test_file_sender_writes_otlp_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out" / "spans.jsonl"
    sender = FileSender(path)
    await sender.send("traces", enriched_traces().SerializeToString())
    await sender.send("logs", logs().SerializeToString())
    lines = path.read_text().splitlines()  # flushed: readable before close
    assert list(json.loads(lines[0])) == ["resourceSpans"]
    assert json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == (
        "0af7651916cd43dd8448eb211c80319c"
    )
    assert otlp_json.decode_traces(lines[0]) == enriched_traces()
    assert otlp_json.decode_logs(lines[1]) == logs()
    await sender.close()


async def test_file_sender_rotates_and_keeps_max_backups(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    body = enriched_traces().SerializeToString()
    line_len = len(otlp_json.encode_traces(enriched_traces())) + 1
    sender = FileSender(path, max_megabytes=(line_len * 2.5) / (1024 * 1024), max_backups=2)
    for _ in range(9):
        await sender.send("traces", body)
    await sender.close()
    backups = sender.backups()
    assert len(backups) == 2
    assert all(len(p.read_text().splitlines()) == 2 for p in backups)
    assert len(path.read_text().splitlines()) == 1  # 9 lines: 4 files of 2, then 1; two oldest deleted


async def test_file_sender_reopens_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    body = enriched_traces().SerializeToString()
    for _ in range(2):
        sender = FileSender(path)
        await sender.send("traces", body)
        await sender.close()
    assert len(path.read_text().splitlines()) == 2


async def test_in_memory_sender_fails_as_told() -> None:
    sender = InMemorySender()
    sender.fail(1, retry_after=2.0)
    sender.fail(1, permanent=True, message="no")
    body = metrics_request().SerializeToString()
    with pytest.raises(ExportError) as first:
        await sender.send("metrics", body)
    assert first.value.retry_after == 2.0 and not isinstance(first.value, PermanentExportError)
    with pytest.raises(PermanentExportError, match="no"):
        await sender.send("metrics", body)
    await sender.send("metrics", body)
    assert sender.requests["metrics"] == [metrics_request()]
    assert sender.attempts == 3
