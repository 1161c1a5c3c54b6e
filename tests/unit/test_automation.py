"""Automation: the per-map state machine over a real SQLite store, with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_topics import metrics
from otel_topics.automation import BACKFILLING, IDLE, RECOMPUTING, WAITING, Automation
from otel_topics.backfill import backfill
from otel_topics.config import parse_config
from otel_topics.embed import HashEmbedder
from otel_topics.enrich import RootInfo, StoreRunner
from otel_topics.model import Enrichment, TopicMap
from otel_topics.store import TraceRecord
from otel_topics.store_sqlite import SqliteStore

CONFIG = """
processors:
  topics:
    automation: {min_traces: 60, min_unique_facets: 30, rerun: 24h, backfill_window: 1h}
    topic_maps:
      - facet: Task
        clustering: {method: kmeans, reduction: none, n_clusters: 3}
"""
TEMPLATES = [
    "refund order {i} for a broken item",
    "change flight booking {i} to friday",
    "cancel hotel stay {i}",
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingStore(SqliteStore):
    history: list[str]

    def set_state(self, map_name: str, state: str, reason: str) -> None:
        self.history.append(state)
        super().set_state(map_name, state, reason)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runner(tmp_path: Path, clock: Clock) -> Iterator[StoreRunner]:
    store = RecordingStore(tmp_path / "t.db", clock=clock)
    store.history = []
    r = StoreRunner(store)
    yield r
    r.close()
    store.close()


def add_traces(store: SqliteStore, start: int, n: int) -> None:
    emb = HashEmbedder()
    texts = [TEMPLATES[i % 3].format(i=i) for i in range(start, start + n)]
    vecs = emb.embed_sync(texts)
    rows = []
    for k, (i, text) in enumerate(zip(range(start, start + n), texts, strict=True)):
        tid = f"{i + 1:032x}"
        store.save_traces([TraceRecord(tid, root_span_id=f"{i + 1:016x}", root_start_ns=1, root_end_ns=2)])
        store.save_facets(tid, {"Task": text})
        rows.append((tid, "Task", vecs[k]))
    store.save_vectors(emb.name, rows)


async def test_state_machine(runner: StoreRunner, clock: Clock) -> None:
    store = runner.store
    assert isinstance(store, RecordingStore)
    versions: list[TopicMap] = []
    emitted: list[str] = []

    async def emit(trace_id: str, root: RootInfo, enrichment: Enrichment) -> None:
        emitted.append(trace_id)

    auto = Automation(runner, parse_config(CONFIG), "hash-64", versions.append, clock=clock)

    add_traces(store, 0, 20)
    assert await auto.step("Task") == WAITING
    state, reason, _ = store.states()["Task"]
    assert state == WAITING and "20 of 60 traces with the Task facet" in reason
    assert metrics.AUTOMATION_STATE.labels("Task", WAITING)._value.get() == 1

    add_traces(store, 20, 60)
    assert await auto.step("Task") == BACKFILLING
    assert store.history[-2:] == [RECOMPUTING, BACKFILLING]
    assert len(versions) == 1 and versions[0].version == 1 and len(versions[0].clusters) == 3
    assert metrics.AUTOMATION_STATE.labels("Task", RECOMPUTING)._value.get() == 0

    assert await auto.step("Task") == BACKFILLING  # not backfilled yet
    clock.now += 10
    assert await backfill(runner, versions[0], window=3600, emit=emit, clock=clock) == 80
    assert len(emitted) == 80
    assert await auto.step("Task") == IDLE
    clock.now += 3600
    assert await auto.step("Task") == IDLE
    assert "next build in" in store.states()["Task"][1]

    clock.now += 86_400  # rerun
    assert await auto.step("Task") == BACKFILLING
    assert len(versions) == 2 and versions[1].version == 2
    assert {c.id for c in versions[1].clusters} == {c.id for c in versions[0].clusters}
    assert store.history[-2:] == [RECOMPUTING, BACKFILLING]


async def test_build_now_and_lease(runner: StoreRunner, clock: Clock) -> None:
    store = runner.store
    add_traces(store, 0, 30)
    auto = Automation(runner, parse_config(CONFIG), "hash-64", lambda tm: None, clock=clock, lock_ttl=60)
    assert store.try_lock("build:Task", "someone-else", 60)
    assert not store.try_lock("build:Task", "me", 60)
    with pytest.raises(RuntimeError, match="another process"):
        await auto.build_now("Task")
    clock.now += 61  # the other owner's lease expired
    tm = await auto.build_now("Task")  # build_now ignores min_traces
    assert tm.version == 1
    assert store.try_lock("build:Task", "me", 60)  # released after the build
    store.unlock("build:Task", "me")
    with pytest.raises(ValueError, match="no topic map"):
        await auto.build_now("Nope")


def test_lease_renew_and_release(runner: StoreRunner, clock: Clock) -> None:
    store = runner.store
    assert store.try_lock("x", "a", 10)
    assert store.try_lock("x", "a", 10)  # renew
    assert not store.try_lock("x", "b", 10)
    store.unlock("x", "b")  # not the owner: no effect
    assert not store.try_lock("x", "b", 10)
    store.unlock("x", "a")
    assert store.try_lock("x", "b", 10)


def test_clusters_are_named_by_the_facet_llm_when_there_is_one() -> None:
    from otel_topics.automation import llm_namer
    from otel_topics.config import parse_config

    assert llm_namer(parse_config("")) is None  # heuristic: keyword names
    cfg = parse_config(
        "processors:\n  topics:\n    llm: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        "    facets: [{name: Task}]\n"
    )
    assert callable(llm_namer(cfg))
