"""Topic maps end to end: serve (local embedder), 150 tau-bench traces in, ``topics build``, then new
traces come out classified and the earlier ones receive a backfill classification span."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_topics.otlp import is_root
from otel_topics.testing import OtlpSink

PIPES = (
    "    traces: {receivers: [otlp], processors: [topics], exporters: [otlp/out]}\n"
    "    logs: {receivers: [otlp], processors: [topics], exporters: [otlp/out]}\n"
    "    metrics: {receivers: [otlp], exporters: [otlp/out]}\n"
)
TOPICS = (
    "{assembler: {idle: 1s, max_wait: 20s}, embedder: {type: local}, "
    "automation: {min_traces: 60, min_unique_facets: 30}}"
)


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


def exporter_yaml(sink: OtlpSink) -> str:
    return f"  otlp/out: {{endpoint: '127.0.0.1:{sink.port}', tls: {{insecure: true}}}}\n"


def replay(path: Path, endpoint: str) -> list[str]:
    ids = path.with_suffix(".ids")
    cmd = [
        sys.executable,
        "-m",
        "otel_topics",
        "replay",
        str(path),
        "--endpoint",
        endpoint,
        "--trace-ids",
        str(ids),
    ]
    subprocess.run(cmd, check=True, timeout=120)
    return ids.read_text().split()


def attrs(span: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:  # type: ignore[attr-defined]
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def roots_by_trace(sink: OtlpSink) -> dict[str, dict[str, object]]:
    return {s.trace_id.hex(): attrs(s) for s in sink.all_spans() if is_root(s)}  # type: ignore[arg-type]


def backfilled(sink: OtlpSink) -> set[str]:
    return {
        s.trace_id.hex()
        for s in sink.all_spans()
        if s.name == "otel_topics.classification"
        and attrs(s).get("classifications.Task.source") == "backfill"
    }


def test_build_then_classify_and_backfill(
    tmp_path: Path, shared_data: Path, sink: OtlpSink, make_sidecar
) -> None:
    trajs = json.loads((shared_data / "agent_trajectories/tau_bench/gpt-4o-airline.json").read_text())
    convs = [t["traj"] for t in trajs][:190]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps(c) + "\n" for c in convs[:150]))
    second.write_text("".join(json.dumps(c) + "\n" for c in convs[150:]))

    side = make_sidecar(tmp_path, exporter_yaml(sink), TOPICS, PIPES).start()
    ids = replay(first, f"127.0.0.1:{side.grpc_port}")
    assert len(ids) == 150
    ok = sink.wait_for(lambda s: set(ids) <= set(roots_by_trace(s)), timeout=300)
    assert ok, side.log.read_text()[-3000:]

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_topics",
            "topics",
            "build",
            "--map",
            "Task",
            "--config",
            str(side.config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "topic map Task version" in out.stdout

    # the running sidecar picks the new version up within 5 s and backfills the earlier traces
    assert sink.wait_for(lambda s: len(backfilled(s) & set(ids)) >= 135, timeout=300), (
        len(backfilled(sink) & set(ids)),
        side.log.read_text()[-3000:],
    )
    new_ids = replay(second, f"127.0.0.1:{side.grpc_port}")
    assert len(new_ids) == 40

    def new_classified(s: OtlpSink) -> bool:
        roots = roots_by_trace(s)
        return all("classifications.Task.label" in roots.get(t, {}) for t in new_ids)

    assert sink.wait_for(new_classified, timeout=300), side.log.read_text()[-3000:]
    roots = roots_by_trace(sink)
    for t in new_ids:
        a = roots[t]
        assert isinstance(a["classifications.Task.label"], str) and a["classifications.Task.label"]
        assert "classifications.Task.id" in a
        assert isinstance(a["classifications.Task.distance"], float)

    status = subprocess.run(
        [sys.executable, "-m", "otel_topics", "topics", "status", "--config", str(side.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "Task:" in status.stdout, status.stderr
    assert "otel_topics_automation_state" in side.metrics_text()
