"""PreparePool: preprocessing and heuristic facets in spawned worker processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_topics.api import split_by_trace
from otel_topics.config_topics import TopicsProcessor
from otel_topics.facets.heuristic import HeuristicFacetExtractor
from otel_topics.model import TraceData
from otel_topics.preprocess import DefaultPreprocessor
from otel_topics.replay import TraceBuilder
from otel_topics.workers import PreparePool, WorkerError, auto_workers

FAILING = """
def fails(trace):
    raise ValueError("no conversation in " + trace.trace_id.hex())


def skips_two(trace):  # what the built-in preprocessor does for content it cannot read
    from otel_topics.preprocess import _skip

    _skip("span", "chat", ValueError("not JSON"))
    _skip("log record", "gen_ai.choice", ValueError("not JSON"))
    return "what was readable"
"""


@pytest.fixture(scope="module")
def traces(shared_data: Path) -> list[TraceData]:
    path = shared_data / "agent_trajectories" / "tau_bench" / "gpt-4o-airline.json"
    convs = [t["traj"] for t in json.loads(path.read_text(encoding="utf-8"))[:6]]
    builder = TraceBuilder()
    out: list[TraceData] = []
    for conv in convs:
        (trace,) = split_by_trace(ExportTraceServiceRequest(resource_spans=[builder.build(conv)]))
        out.append(trace)
    return out


@pytest.fixture
def failing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"failing_pp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FAILING)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    yield name
    sys.modules.pop(name, None)


def test_auto_workers_leaves_one_cpu() -> None:
    assert 0 <= auto_workers() <= 4
    assert auto_workers() == max(0, min(4, len(os.sched_getaffinity(0)) - 1))


async def test_workers_answer_like_the_serving_process(traces: list[TraceData]) -> None:
    pool = PreparePool(2, TopicsProcessor(), facets=True)
    await pool.start()
    try:
        pre, extractor = DefaultPreprocessor(), HeuristicFacetExtractor()
        for trace in traces:
            prepared = await pool.prepare(trace)
            local = pre(trace)
            assert prepared.error is None and prepared.conversation is not None and local is not None
            assert prepared.conversation.render() == local.render()
            assert prepared.facets == extractor.extract_sync(local)
            assert prepared.facet_seconds > 0
    finally:
        pool.close()


async def test_without_facets_the_whole_conversation_comes_back(traces: list[TraceData]) -> None:
    pool = PreparePool(1, TopicsProcessor(), facets=False)
    await pool.start()
    try:
        prepared = await pool.prepare(traces[0])
        local = DefaultPreprocessor()(traces[0])
        assert prepared.facets is None and prepared.conversation == local
    finally:
        pool.close()


async def test_a_raising_custom_preprocessor_is_an_error_not_a_crash(
    traces: list[TraceData], failing_module: str
) -> None:
    topics = TopicsProcessor.model_validate({"preprocess": {"custom": f"{failing_module}:fails"}})
    pool = PreparePool(1, topics, facets=True)
    await pool.start()
    try:
        prepared = await pool.prepare(traces[0])
        assert prepared.error == f"ValueError: no conversation in {traces[0].trace_id.hex()}"
        assert prepared.conversation is None and prepared.facets is None
    finally:
        pool.close()


async def test_a_dead_worker_is_replaced(traces: list[TraceData]) -> None:
    pool = PreparePool(1, TopicsProcessor(), facets=True)
    await pool.start()
    try:
        assert pool._pool is not None
        pids: Any = list(pool._pool._processes)  # the executor's worker pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        prepared = await pool.prepare(traces[1])  # the broken pool is noticed, replaced, tried again
        assert prepared.facets is not None and prepared.conversation is not None
        assert pool._generation >= 1
    finally:
        pool.close()
    with pytest.raises(WorkerError, match="not running"):
        await pool.prepare(traces[0])


async def test_content_skipped_in_a_worker_is_reported_back(
    traces: list[TraceData], failing_module: str
) -> None:
    topics = TopicsProcessor.model_validate({"preprocess": {"custom": f"{failing_module}:skips_two"}})
    pool = PreparePool(1, topics, facets=True)
    await pool.start()
    try:
        prepared = await pool.prepare(traces[0])
        assert prepared.skipped == 2 and prepared.error is None
        assert prepared.conversation is not None and prepared.conversation.render() == "what was readable"
    finally:
        pool.close()
