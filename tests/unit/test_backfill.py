"""Backfill: stored traces of the window re-classified with a new version, one span each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_topics.backfill import backfill, backfill_key
from otel_topics.embed import HashEmbedder
from otel_topics.enrich import RootInfo, StoreRunner
from otel_topics.model import Classification, Cluster, Enrichment, TopicMap
from otel_topics.store import TraceRecord
from otel_topics.store_sqlite import SqliteStore


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runner(tmp_path: Path, clock: Clock) -> Iterator[StoreRunner]:
    store = SqliteStore(tmp_path / "t.db", clock=clock)
    r = StoreRunner(store)
    yield r
    r.close()
    store.close()


def add(store: SqliteStore, ids: range, text: str) -> list[str]:
    emb = HashEmbedder()
    out = []
    for i in ids:
        tid = f"{i + 1:032x}"
        store.save_traces([TraceRecord(tid, root_span_id=f"{i + 1:016x}", root_start_ns=5, root_end_ns=9)])
        store.save_facets(tid, {"Task": f"{text} {i}", "Sentiment": "neutral"})
        store.save_vectors(emb.name, [(tid, "Task", emb.embed_sync([f"{text} {i}"])[0])])
        out.append(tid)
    return out


def topic_map() -> TopicMap:
    emb = HashEmbedder()
    centroid = emb.embed_sync(["refund order"])[0]
    return TopicMap(
        "Task", "Task", 3, [Cluster("t_refund", "Refunds", [float(v) for v in centroid])], 2.0, emb.name
    )


async def test_backfill_emits_one_span_per_trace_in_window(runner: StoreRunner, clock: Clock) -> None:
    store = runner.store
    assert isinstance(store, SqliteStore)
    old = add(store, range(0, 5), "refund order")
    clock.now += 7200
    recent = add(store, range(5, 25), "refund order")
    emitted: list[tuple[str, RootInfo, Enrichment]] = []

    async def emit(trace_id: str, root: RootInfo, enrichment: Enrichment) -> None:
        emitted.append((trace_id, root, enrichment))

    clock.now += 10
    n = await backfill(runner, topic_map(), window=3600, emit=emit, batch_size=7, rate=1e6, clock=clock)
    assert n == 20
    assert sorted(t for t, _, _ in emitted) == sorted(recent)
    assert not set(old) & {t for t, _, _ in emitted}
    tid, root, enr = emitted[0]
    assert root.span_id == bytes.fromhex(tid[16:]) and (root.start_ns, root.end_ns) == (5, 9)
    assert enr.trace_id.hex() == tid and enr.facets["Sentiment"] == "neutral"
    (c,) = enr.classifications
    assert (c.label, c.cluster_id, c.map_version, c.source) == ("Refunds", "t_refund", 3, "backfill")
    assert store.classifications_for(tid)[0].source == "backfill"
    assert store.cache_get(backfill_key("Task", 3)) is not None
    # recorded: not repeated
    assert await backfill(runner, topic_map(), window=3600, emit=emit, rate=1e6, clock=clock) == 0
    assert len(emitted) == 20


async def test_backfill_skips_traces_classified_with_this_version(runner: StoreRunner, clock: Clock) -> None:
    store = runner.store
    ids = add(store, range(0, 4), "refund order")
    store.save_classifications(ids[0], [Classification("Task", "Refunds", "t_refund", 0.1, 3, "online")])
    emitted: list[str] = []

    async def emit(trace_id: str, root: RootInfo, enrichment: Enrichment) -> None:
        emitted.append(trace_id)

    assert await backfill(runner, topic_map(), window=60, emit=emit, rate=1e6, clock=clock) == 3
    assert sorted(emitted) == sorted(ids[1:])
    assert await backfill(runner, topic_map(), window=0, emit=emit, clock=clock) == 0


async def test_backfill_rate_is_bounded(runner: StoreRunner, clock: Clock) -> None:
    add(runner.store, range(0, 10), "refund order")  # type: ignore[arg-type]

    async def emit(trace_id: str, root: RootInfo, enrichment: Enrichment) -> None:
        pass

    import time

    started = time.monotonic()
    assert await backfill(runner, topic_map(), window=60, emit=emit, batch_size=5, rate=50, clock=clock) == 10
    assert time.monotonic() - started >= 0.18
