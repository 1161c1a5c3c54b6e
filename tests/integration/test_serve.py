"""``otel-topics serve`` as a real process: replayed τ-bench traces through it to a real OTLP sink."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics.model import NO_MATCH
from otel_topics.otlp import is_root
from otel_topics.testing import OtlpSink

FACETS = ("facets.Task", "facets.Sentiment", "facets.Issues")


def tau_conversations(shared_data: Path, n: int) -> list[list[dict[str, object]]]:
    trajs = json.loads((shared_data / "agent_trajectories/tau_bench/gpt-4o-airline.json").read_text())
    # the first n trajectories with a tool error and the first n without, interleaved
    with_err = [
        t["traj"]
        for t in trajs
        if any(m.get("role") == "tool" and str(m.get("content", "")).startswith("Error") for m in t["traj"])
    ]
    without = [t["traj"] for t in trajs if t["traj"] not in with_err]
    out: list[list[dict[str, object]]] = []
    for a, b in zip(with_err, without, strict=False):
        out.extend([a, b])
    return out[:n]


def tau_file(tmp_path: Path, shared_data: Path, n: int) -> tuple[list[list[dict[str, object]]], Path, int]:
    """n τ-bench conversations as a replay JSONL file, and the number of spans replay makes of them."""
    convs = tau_conversations(shared_data, n)
    src = tmp_path / "tau.jsonl"
    src.write_text("".join(json.dumps(c) + "\n" for c in convs))
    spans = sum(1 + sum(1 for m in c if m["role"] in ("assistant", "tool")) for c in convs)
    return convs, src, spans


def replay(path: Path, endpoint: str, *extra: str) -> list[str]:
    ids = path.with_suffix(".ids")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_topics",
            "replay",
            str(path),
            "--endpoint",
            endpoint,
            "--trace-ids",
            str(ids),
            *extra,
        ],
        check=True,
        timeout=120,
    )
    return ids.read_text().split()


def attrs(span: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:  # type: ignore[attr-defined]
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


@pytest.fixture
def sink() -> OtlpSink:
    s = OtlpSink().start()
    yield s
    s.stop()


def exporter_yaml(sink: OtlpSink) -> str:
    return f"  otlp/out: {{endpoint: '127.0.0.1:{sink.port}', tls: {{insecure: true}}}}\n"


PIPES = (
    "    traces: {receivers: [otlp], processors: [topics], exporters: [otlp/out]}\n"
    "    logs: {receivers: [otlp], processors: [topics], exporters: [otlp/out]}\n"
    "    metrics: {receivers: [otlp], exporters: [otlp/out]}\n"
)


def test_tau_bench_traces_arrive_enriched(
    tmp_path: Path, shared_data: Path, sink: OtlpSink, make_sidecar
) -> None:
    convs, src, expected_spans = tau_file(tmp_path, shared_data, 12)

    side = make_sidecar(
        tmp_path, exporter_yaml(sink), "{assembler: {idle: 1s, max_wait: 20s}}", PIPES
    ).start()
    ids = replay(src, f"127.0.0.1:{side.grpc_port}")
    assert len(ids) == 12
    assert sink.wait_for(lambda s: s.spans >= expected_spans, timeout=120), side.log.read_text()[-3000:]

    spans = sink.all_spans()
    assert len(spans) == expected_spans
    by_trace: dict[str, list[object]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id.hex(), []).append(s)
    assert sorted(by_trace) == sorted(ids)
    system_prompt = str(convs[0][0]["content"])
    for tid, tspans in by_trace.items():
        roots = [s for s in tspans if is_root(s)]  # type: ignore[arg-type]
        assert len(roots) == 1
        a = attrs(roots[0])
        for key in FACETS:
            assert isinstance(a.get(key), str) and a[key], (tid, key, a)
        assert a["otel_topics.status"] == "ok"
        assert a["facets.Task"] != NO_MATCH
        assert a["facets.Sentiment"] in ("positive", "neutral", "negative", "mixed", NO_MATCH)
        # scorer / system text never leaks into a facet
        for key in FACETS:
            assert "Airline Agent Policy" not in str(a[key])
        for s in tspans:
            if s is not roots[0]:
                assert not any(k.startswith("facets.") for k in attrs(s))
    assert system_prompt  # the fixture data really has a system prompt
    side.stop()
    assert "otel_topics_exported_items_total" in side.metrics_text() if side.proc.poll() is None else True


def test_sigkill_after_ack_loses_nothing(
    tmp_path: Path, shared_data: Path, sink: OtlpSink, make_sidecar
) -> None:
    _, src, expected_spans = tau_file(tmp_path, shared_data, 12)

    # long idle: nothing is released before the kill, so everything acknowledged lives only in the spool
    side = make_sidecar(
        tmp_path, exporter_yaml(sink), "{assembler: {idle: 60s, max_wait: 120s}}", PIPES
    ).start()
    ids = replay(src, f"127.0.0.1:{side.grpc_port}")
    side.kill()
    assert sink.spans == 0

    # restart over the same data dir with a short idle: the spool is recovered and delivered
    side.config.write_text(side.config.read_text().replace("idle: 60s", "idle: 1s"))
    side.start()
    assert sink.wait_for(lambda s: s.spans >= expected_spans, timeout=120), side.log.read_text()[-3000:]
    got = {s.trace_id.hex() for s in sink.all_spans()}
    assert got == set(ids)
    assert len(sink.all_spans()) == expected_spans


def test_genai_log_records_join_their_trace(
    tmp_path: Path, shared_data: Path, sink: OtlpSink, make_sidecar
) -> None:
    """The older official instrumentation puts message content only in log records."""
    import httpx

    side = make_sidecar(tmp_path, exporter_yaml(sink), "{assembler: {idle: 1s}}", PIPES).start()
    lines = (shared_data / "instrumented_spans/otel-openai-v2-2.1b0-events.jsonl").read_text().splitlines()
    for line in lines:  # logs first, as the file has them: they wait for their trace
        doc = json.loads(line)
        signal = next(iter(doc))
        r = httpx.post(
            f"http://127.0.0.1:{side.http_port}/v1/{signal}",
            content=json.dumps(doc[signal]),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
    assert sink.wait_for(lambda s: s.spans >= 1 and s.log_records >= 3, timeout=60)
    root = sink.all_spans()[0]
    a = attrs(root)
    assert a["otel_topics.status"] == "ok"
    assert "capital of France" in a["facets.Task"]


def test_sigterm_drains_pending_traces(
    tmp_path: Path, shared_data: Path, sink: OtlpSink, make_sidecar
) -> None:
    _, src, expected_spans = tau_file(tmp_path, shared_data, 4)
    topics = "{assembler: {idle: 60s, max_wait: 120s}}"
    side = make_sidecar(tmp_path, exporter_yaml(sink), topics, PIPES).start()
    replay(src, f"127.0.0.1:{side.grpc_port}")
    assert sink.spans == 0
    assert side.stop() == 0  # SIGTERM: pending traces are released, enriched and delivered
    assert sink.spans == expected_spans
    roots = [s for s in sink.all_spans() if is_root(s)]
    assert len(roots) == 4 and all("facets.Task" in attrs(r) for r in roots)


def test_scorer_content_never_reaches_a_facet(
    tmp_path: Path, shared_data: Path, sink: OtlpSink, make_sidecar
) -> None:
    """An EVALUATOR span and a gen_ai.evaluation.result event carry scorer text: it is forwarded, never
    part of a facet."""
    import os

    from otel_topics.replay import TraceBuilder, send_requests

    marker = "SCORER VERDICT: the agent was rude and wrong"
    req = ExportTraceServiceRequest()
    for conv in tau_conversations(shared_data, 4):
        rs = TraceBuilder().build(conv)
        spans = rs.scope_spans[0].spans
        root, chat = spans[0], next(s for s in spans if s.name.startswith("chat"))
        ev = chat.events.add(name="gen_ai.evaluation.result", time_unix_nano=chat.end_time_unix_nano)
        ev.attributes.add(key="gen_ai.evaluation.explanation").value.string_value = marker
        scorer = spans.add(
            trace_id=root.trace_id,
            span_id=os.urandom(8),
            parent_span_id=root.span_id,
            name="evaluate helpfulness",
            start_time_unix_nano=root.start_time_unix_nano,
            end_time_unix_nano=root.end_time_unix_nano,
        )
        scorer.attributes.add(key="openinference.span.kind").value.string_value = "EVALUATOR"
        scorer.attributes.add(key="input.value").value.string_value = marker
        scorer.attributes.add(key="output.value").value.string_value = marker
        req.resource_spans.append(rs)
    n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    side = make_sidecar(tmp_path, exporter_yaml(sink), "{assembler: {idle: 1s}}", PIPES).start()
    send_requests([req], endpoint=f"127.0.0.1:{side.grpc_port}")
    assert sink.wait_for(lambda s: s.spans >= n, timeout=60)
    spans = sink.all_spans()
    assert sum(1 for s in spans if s.name == "evaluate helpfulness") == 4  # still forwarded
    roots = [s for s in spans if is_root(s)]
    assert len(roots) == 4
    for r in roots:
        a = attrs(r)
        assert a["otel_topics.status"] == "ok"
        for key in FACETS:
            assert "SCORER" not in str(a[key]) and "rude" not in str(a[key]), (key, a[key])
