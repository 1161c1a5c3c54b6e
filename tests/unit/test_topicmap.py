"""topicmap.build_topic_map on synthetic clustered vectors in a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otel_topics.clustering import ClusteringSettings
from otel_topics.store import TraceRecord
from otel_topics.store_sqlite import SqliteStore
from otel_topics.topicmap import build_topic_map

KMEANS = ClusteringSettings(method="kmeans", reduction="none", n_clusters=3)
TOPICS = [
    ("refund", ["Get a refund for order {i}", "Refund the broken item {i}", "Request refund of order {i}"]),
    ("flight", ["Change flight booking {i}", "Rebook my flight {i}", "Move flight reservation {i}"]),
    ("rare", ["Delete account data {i}"]),
]


def fill(
    store: SqliteStore, sizes: tuple[int, ...] = (40, 40, 3), seed: int = 0, start: int = 0
) -> list[str]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(3, 32))
    ids: list[str] = []
    rows = []
    n = start
    for k, size in enumerate(sizes):
        for i in range(size):
            tid = f"{n:032x}"
            n += 1
            ids.append(tid)
            v = centres[k] + 0.05 * rng.normal(size=32)
            templates = TOPICS[k][1]
            store.save_traces([TraceRecord(tid, root_span_id=f"{n:016x}", received_at=1.0)])
            store.save_facets(tid, {"Task": templates[i % len(templates)].format(i=i)})
            rows.append((tid, "Task", (v / np.linalg.norm(v)).astype(np.float32)))
    store.save_vectors("hash", rows)
    return ids


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "t.db")
    yield s
    s.close()


def build(store: SqliteStore, previous=None, **kw):  # type: ignore[no-untyped-def]
    return build_topic_map(
        store,
        name="Task",
        facet="Task",
        embedder_name="hash",
        previous=previous,
        since=None,
        settings=KMEANS,
        **kw,
    )


def test_build_clusters_names_and_threshold(store: SqliteStore) -> None:
    fill(store)
    tm = build(store)
    assert tm is not None and tm.version == 0 and tm.embedder == "hash"
    assert sorted(c.size for c in tm.clusters) == [3, 40, 40]
    assert 0.2 <= tm.distance_threshold <= 0.8
    big = [c for c in tm.clusters if c.size == 40]
    assert all(c.keywords and c.name and c.exemplars for c in big)
    assert len({c.id for c in tm.clusters}) == 3
    saved = store.save_topic_map(tm)
    assert saved.version == 1


def test_exemplars_only_for_clusters_with_enough_traces(store: SqliteStore) -> None:
    fill(store)
    tm = build(store, min_examples_traces=5)
    assert tm is not None
    small = next(c for c in tm.clusters if c.size == 3)
    assert small.exemplars == [] and small.description == ""
    assert "Delete account data" not in small.name  # no member text leaks into the name
    assert all(len(c.exemplars) <= 5 for c in tm.clusters)
    tm2 = build(store, min_examples_traces=2)
    assert tm2 is not None
    assert next(c for c in tm2.clusters if c.size == 3).exemplars


def test_ids_kept_on_rebuild(store: SqliteStore) -> None:
    fill(store)
    first = store.save_topic_map(build(store))  # type: ignore[arg-type]
    fill(store, sizes=(20, 20, 3), seed=1, start=1000)  # more of the same topics
    second = build(store, previous=first)
    assert second is not None
    ids_second = {c.id for c in second.clusters}
    assert {c.id for c in first.clusters if c.size == 40} <= ids_second
    assert all(c.parents for c in second.clusters if c.id in {x.id for x in first.clusters})


def test_no_vectors_gives_none(store: SqliteStore) -> None:
    assert build(store) is None


def test_per_cluster_threshold_and_fixed(store: SqliteStore) -> None:
    fill(store)
    tm = build(store, distance_threshold=0.3, per_cluster_threshold=True)
    assert tm is not None and tm.distance_threshold == 0.3
    assert all(c.threshold is not None and 0.2 <= c.threshold <= 0.8 for c in tm.clusters)


def test_identity_switched_off_gives_new_ids(store: SqliteStore) -> None:
    fill(store)
    first = store.save_topic_map(build(store))  # type: ignore[arg-type]
    second = build(store, previous=first, identity={"enabled": False})
    assert second is not None
    assert not {c.id for c in first.clusters} & {c.id for c in second.clusters}
    assert all(not c.parents for c in second.clusters)
