"""End to end: the real OpenTelemetry SDK -> rotel -> otel-topics -> Arize Phoenix.

Asserts through Phoenix's REST API that every span arrived and that the enrichment attributes sit
on the root spans only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from otel_topics.replay import genai_parts

pytestmark = pytest.mark.e2e
PROJECT = "otel-topics-e2e"


def emit(provider: TracerProvider, conversation: list[dict[str, Any]]) -> tuple[str, int]:
    """One agent run as GenAI-convention spans made by the SDK; returns (trace id, span count)."""
    tracer = provider.get_tracer("e2e-agent", "1.0")
    count = 1
    with tracer.start_as_current_span("invoke_agent airline") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        history: list[dict[str, Any]] = []
        for msg in conversation:
            if msg["role"] == "assistant":
                with tracer.start_as_current_span("chat gpt-4o") as span:
                    span.set_attribute("gen_ai.operation.name", "chat")
                    span.set_attribute("gen_ai.input.messages", json.dumps([genai_parts(m) for m in history]))
                    span.set_attribute("gen_ai.output.messages", json.dumps([genai_parts(msg)]))
                count += 1
            elif msg["role"] == "tool":
                with tracer.start_as_current_span("execute_tool") as span:
                    span.set_attribute("gen_ai.operation.name", "execute_tool")
                    span.set_attribute("gen_ai.tool.name", str(msg.get("name", "tool")))
                    span.set_attribute("gen_ai.tool.call.result", str(msg.get("content", "")))
                    if str(msg.get("content", "")).startswith("Error"):
                        span.set_status(Status(StatusCode.ERROR, str(msg["content"])[:100]))
                count += 1
            if msg["role"] != "system":
                history.append(msg)
        trace_id = format(root.get_span_context().trace_id, "032x")
    return trace_id, count


def flat_attributes(span: dict[str, Any]) -> dict[str, Any]:
    raw = span.get("attributes") or []
    if isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for kv in raw:
        value = kv.get("value", {})
        if isinstance(value, dict):  # OTLP AnyValue as JSON: {"string_value": ...}; unset keys may be null
            value = next((v for v in value.values() if v is not None), None)
        out[kv["key"]] = value
    return out


def test_sdk_rotel_sidecar_phoenix(
    tmp_path: Path, shared_data: Path, phoenix, make_rotel, make_sidecar
) -> None:
    trajs = json.loads((shared_data / "agent_trajectories/tau_bench/gpt-4o-airline.json").read_text())
    conversations = [t["traj"] for t in trajs[:6]]

    exporters = f"  otlp/phoenix: {{endpoint: '127.0.0.1:{phoenix.grpc_port}', tls: {{insecure: true}}}}\n"
    pipes = "    traces: {receivers: [otlp], processors: [topics], exporters: [otlp/phoenix]}\n"
    side = make_sidecar(tmp_path, exporters, "{assembler: {idle: 1s, max_wait: 30s}}", pipes).start()
    rotel = make_rotel(f"http://127.0.0.1:{side.grpc_port}")

    provider = TracerProvider(
        resource=Resource.create({"service.name": "e2e-agent", "openinference.project.name": PROJECT})
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{rotel.grpc_port}", insecure=True))
    )
    expected: dict[str, int] = {}
    for conv in conversations:
        tid, n = emit(provider, conv)
        expected[tid] = n
    provider.force_flush()
    provider.shutdown()

    deadline = time.monotonic() + 180
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = phoenix.spans(PROJECT)
        if len(spans) >= sum(expected.values()):
            break
        time.sleep(2)
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_trace.setdefault(s["trace_id"], []).append(s)
    assert {t: len(v) for t, v in by_trace.items()} == expected, side.log.read_text()[-3000:]
    for tid, tspans in by_trace.items():
        roots = [s for s in tspans if not s.get("parent_span_id")]
        assert len(roots) == 1, tid
        a = flat_attributes(roots[0])
        for facet in ("facets.Task", "facets.Sentiment", "facets.Issues"):
            assert a.get(facet), (tid, facet, sorted(a))
        assert a.get("otel_topics.status") == "ok"
        for s in tspans:
            if s is not roots[0]:
                assert not any(k.startswith("facets.") for k in flat_attributes(s))
