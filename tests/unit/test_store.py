from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from otel_topics.errors import StoreError
from otel_topics.model import NO_MATCH, Classification, Cluster, TopicMap
from otel_topics.store import TraceRecord, open_store, redact_url
from otel_topics.store_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from otel_topics.store_sqlite import SqliteStore


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tid(n: int) -> str:
    return f"{n:032x}"


def record(n: int, **kw: object) -> TraceRecord:
    base: dict[str, object] = dict(
        trace_id=tid(n),
        root_span_id=f"{n:016x}",
        root_start_ns=1_700_000_000_000_000_000 + n,
        root_end_ns=1_700_000_000_500_000_000 + n,
        service_name="agent",
        received_at=1_000.0 + n,
        status="ok",
        conversation=f"user: question {n}",
        conversation_hash=f"h{n}",
    )
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "db" / "topics.db", clock=clock)
    yield s
    s.close()


def topic_map(name: str = "Task", n: int = 2, dim: int = 4) -> TopicMap:
    rng = np.random.default_rng(0)
    clusters = []
    for i in range(n):
        v = rng.normal(size=dim).astype(np.float32)
        v /= np.linalg.norm(v)
        clusters.append(
            Cluster(
                id=f"c{i}",
                name=f"cluster {i}",
                centroid=[float(x) for x in v],
                size=10 + i,
                description=f"about {i}",
                keywords=["a", "b"],
                radius=0.25,
                threshold=None if i == 0 else 0.4,
                exemplars=[f"example {i}"],
                parents=["p"] if i else [],
            )
        )
    return TopicMap(
        name=name, facet="Task", version=0, clusters=clusters, distance_threshold=0.5, embedder="hash-4"
    )


# ---- open_store ----------------------------------------------------------------------------------


def test_open_store_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.db"
    s = open_store(f"sqlite:///{path}")  # "sqlite:///" + "/tmp/..." = four slashes
    assert isinstance(s, SqliteStore) and s.path == str(path)
    s.save_traces([record(1)])
    s.close()
    assert path.exists()


def test_open_store_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///data/rel.db")
    assert isinstance(s, SqliteStore) and s.path == "data/rel.db"
    s.close()
    assert (tmp_path / "data" / "rel.db").exists()


def test_open_store_memory() -> None:
    s = open_store("sqlite://:memory:")
    s.save_traces([record(1)])
    assert s.get_trace(tid(1)) == record(1)
    s.close()


def test_open_store_postgres_not_yet_and_password_hidden() -> None:
    with pytest.raises(StoreError, match="PostgreSQL store is not available yet") as e:
        open_store("postgresql://user:secret@db:5432/topics")
    assert "secret" not in str(e.value)
    assert redact_url("postgresql://u:p@h/d") == "postgresql://u:***@h/d"


@pytest.mark.parametrize("url", ["mysql://x/y", "topics.db", "sqlite://", "sqlite:///", "sqlite://host/x.db"])
def test_open_store_bad_urls(url: str) -> None:
    with pytest.raises(StoreError, match="store url"):
        open_store(url)


def test_wal_and_synchronous_normal(store: SqliteStore) -> None:
    assert store.query("PRAGMA journal_mode")[1] == [("wal",)]
    assert store._conn is not None
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL, on the writing connection


def test_unopenable_file_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot open store .*bad\.db"):
        SqliteStore(bad)


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "x.db")
    s.close()
    with pytest.raises(StoreError, match=r"get_trace.*closed"):
        s.get_trace(tid(1))


# ---- traces --------------------------------------------------------------------------------------


def test_trace_roundtrip_and_upsert(store: SqliteStore) -> None:
    store.save_traces([record(1), record(2)])
    assert store.get_trace(tid(1)) == record(1)
    assert store.get_trace(tid(9)) is None
    store.save_traces([record(1, received_at=5_000.0, status="llm_error", attempts=2, conversation="new")])
    got = store.get_trace(tid(1))
    assert got is not None
    assert got.received_at == record(1).received_at  # the first save wins
    assert (got.status, got.attempts, got.conversation) == ("llm_error", 2, "new")


def test_due_retries_and_mark_attempt(store: SqliteStore) -> None:
    store.save_traces(
        [
            record(1, next_attempt_at=30.0, attempts=1, status="llm_error"),
            record(2, next_attempt_at=10.0, attempts=1, status="llm_error"),
            record(3, next_attempt_at=99.0),
            record(4),
        ]
    )
    assert [r.trace_id for r in store.due_retries(50.0, 10)] == [tid(2), tid(1)]
    assert [r.trace_id for r in store.due_retries(50.0, 1)] == [tid(2)]
    store.mark_attempt(tid(2), "ok", None)
    store.mark_attempt(tid(1), "llm_error", 200.0)
    store.mark_attempt(tid(77), "ok", None)  # unknown: no-op
    assert store.due_retries(50.0, 10) == []
    r1, r2 = store.get_trace(tid(1)), store.get_trace(tid(2))
    assert r1 is not None and r2 is not None
    assert (r1.attempts, r1.next_attempt_at, r1.status) == (2, 200.0, "llm_error")
    assert (r2.attempts, r2.next_attempt_at, r2.status) == (2, None, "ok")


# ---- facets --------------------------------------------------------------------------------------


def test_facets(store: SqliteStore, clock: Clock) -> None:
    store.save_facets(tid(1), {"Task": "book a flight", "Issues": NO_MATCH})
    clock.t = 2_000.0
    store.save_facets(tid(2), {"Task": "refund an order", "Issues": "payment failed"})
    store.save_facets(tid(3), {"Task": "book a flight"})
    store.save_facets(tid(4), {"Task": NO_MATCH})
    assert store.facets_for(tid(1)) == {"Issues": NO_MATCH, "Task": "book a flight"}
    assert store.facets_for(tid(9)) == {}
    assert store.facet_values("Task", None, 10) == [
        (tid(2), "refund an order"),
        (tid(3), "book a flight"),
        (tid(1), "book a flight"),
    ]
    assert store.facet_values("Task", 1_500.0, 10) == [(tid(2), "refund an order"), (tid(3), "book a flight")]
    assert len(store.facet_values("Task", None, 2)) == 2
    assert store.facet_values("Issues", None, 10) == [(tid(2), "payment failed")]
    assert store.count_facets("Task", None) == 3
    assert store.count_unique_facets("Task", None) == 2
    assert store.count_facets("Task", 1_500.0) == 2
    assert store.count_unique_facets("Issues", None) == 1
    store.save_facets(tid(1), {"Task": "changed"})  # upsert
    assert store.facets_for(tid(1))["Task"] == "changed"


# ---- vectors -------------------------------------------------------------------------------------


def test_vectors(store: SqliteStore, clock: Clock) -> None:
    a = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    b = np.array([1.0, 0.0, 0.0], dtype=np.float64)  # converted to float32
    store.save_vectors("e1", [(tid(1), "Task", a)])
    clock.t = 2_000.0
    store.save_vectors("e1", [(tid(2), "Task", b), (tid(2), "Issues", a)])  # type: ignore[list-item]
    store.save_vectors("e2", [(tid(3), "Task", np.ones(5, dtype=np.float32))])
    ids, m = store.vectors("Task", "e1", None, 10)
    assert ids == [tid(2), tid(1)]
    assert m.dtype == np.float32 and m.shape == (2, 3)
    np.testing.assert_array_equal(m, np.stack([b, a]).astype(np.float32))
    m[0, 0] = 5  # writable copy
    ids, m = store.vectors("Task", "e1", 1_500.0, 10)
    assert ids == [tid(2)]
    ids, m = store.vectors("Nope", "e1", None, 10)
    assert ids == [] and m.shape == (0, 0)


def test_vectors_of_mixed_dimension_refused(store: SqliteStore) -> None:
    store.save_vectors(
        "e", [(tid(1), "Task", np.ones(3, np.float32)), (tid(2), "Task", np.ones(4, np.float32))]
    )
    with pytest.raises(StoreError, match="several dimensions"):
        store.vectors("Task", "e", None, 10)


# ---- classifications -----------------------------------------------------------------------------


def test_classifications(store: SqliteStore) -> None:
    rows = [
        Classification("Task", "Flights", "c1", 0.125, 1),
        Classification("Issues", NO_MATCH, "", 0.9, 3, "backfill"),
    ]
    store.save_classifications(tid(1), rows)
    store.save_classifications(tid(1), [Classification("Task", "Travel", "c1", 0.1, 2, "backfill")])
    got = store.classifications_for(tid(1))
    assert got == [rows[1], rows[0], Classification("Task", "Travel", "c1", 0.1, 2, "backfill")]
    assert store.classifications_for(tid(2)) == []


# ---- topic maps ----------------------------------------------------------------------------------


def test_topic_map_versions(store: SqliteStore, clock: Clock) -> None:
    assert store.latest_topic_map("Task") is None
    assert store.latest_versions() == {}
    tm = topic_map()
    tm.version = 7  # ignored: the store numbers versions
    v1 = store.save_topic_map(tm)
    assert (v1.version, v1.created_at) == (1, 1_000.0)
    clock.t = 2_000.0
    v2 = store.save_topic_map(topic_map(n=3))
    store.save_topic_map(topic_map("Issues", n=1))
    assert v2.version == 2
    latest = store.latest_topic_map("Task")
    assert latest == v2
    assert store.topic_map("Task", 1) == v1
    assert store.topic_map("Task", 9) is None
    assert store.latest_versions() == {"Task": 2, "Issues": 1}
    assert store.list_topic_maps() == [("Issues", 1, 1, 2_000.0), ("Task", 2, 3, 2_000.0)]


def test_topic_map_roundtrip_is_exact(store: SqliteStore) -> None:
    tm = topic_map(n=2, dim=384)
    got = store.latest_topic_map(store.save_topic_map(tm).name)
    assert got is not None
    for want, have in zip(tm.clusters, got.clusters, strict=True):
        assert np.array_equal(np.asarray(want.centroid, np.float32), np.asarray(have.centroid, np.float32))
        assert (have.id, have.name, have.threshold, have.parents) == (
            want.id,
            want.name,
            want.threshold,
            want.parents,
        )


# ---- cache and state -----------------------------------------------------------------------------


def test_cache_is_bounded(tmp_path: Path, clock: Clock) -> None:
    s = SqliteStore(tmp_path / "c.db", cache_max_entries=20, clock=clock)
    assert s.cache_get("k") is None
    for i in range(100):
        clock.t += 1
        s.cache_put(f"k{i}", f"v{i}")
    assert s.cache_get("k99") == "v99"
    assert s.cache_get("k0") is None
    n = s.query("SELECT COUNT(*) FROM kv")[1][0][0]
    assert 20 <= n <= 22  # pruned every max/10 puts
    s.cache_put("k99", "again")
    assert s.cache_get("k99") == "again"
    s.close()


def test_cache_disabled(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "c.db", cache_max_entries=0)
    s.cache_put("k", "v")
    assert s.cache_get("k") is None
    with pytest.raises(ValueError, match="cache_max_entries"):
        SqliteStore(tmp_path / "d.db", cache_max_entries=-1)


def test_states_keep_since_until_state_changes(store: SqliteStore, clock: Clock) -> None:
    store.set_state("Task", "waiting_for_facets", "12/400 traces")
    clock.t = 1_100.0
    store.set_state("Task", "waiting_for_facets", "50/400 traces")
    store.set_state("Issues", "idle", "")
    assert store.states() == {
        "Issues": ("idle", "", 1_100.0),
        "Task": ("waiting_for_facets", "50/400 traces", 1_000.0),
    }
    clock.t = 1_200.0
    store.set_state("Task", "recomputing_topic_maps", "")
    assert store.states()["Task"] == ("recomputing_topic_maps", "", 1_200.0)


# ---- purge ---------------------------------------------------------------------------------------


def test_purge(store: SqliteStore, clock: Clock) -> None:
    store.save_traces([record(1, received_at=100.0), record(2, received_at=3_000.0)])
    clock.t = 100.0
    store.save_facets(tid(1), {"Task": "old"})
    store.save_vectors("e", [(tid(1), "Task", np.ones(2, np.float32))])
    store.save_classifications(tid(1), [Classification("Task", "x", "c", 0.1, 1)])
    store.cache_put("old", "v")
    store.set_state("Task", "idle", "")
    store.save_topic_map(topic_map())
    clock.t = 3_000.0
    store.save_facets(tid(2), {"Task": "new"})
    store.save_vectors("e", [(tid(2), "Task", np.ones(2, np.float32))])
    store.cache_put("new", "v")
    assert store.purge(2_000.0) == 1
    assert store.get_trace(tid(1)) is None and store.get_trace(tid(2)) is not None
    assert store.facets_for(tid(1)) == {} and store.facets_for(tid(2)) == {"Task": "new"}
    assert store.vectors("Task", "e", None, 10)[0] == [tid(2)]
    assert store.classifications_for(tid(1)) == []
    assert store.cache_get("old") is None and store.cache_get("new") == "v"
    assert store.latest_versions() == {"Task": 1} and "Task" in store.states()


# ---- query ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", [False, True])
def test_query_is_read_only(tmp_path: Path, memory: bool) -> None:
    s = SqliteStore(":memory:" if memory else tmp_path / "q.db")
    s.save_traces([record(1), record(2)])
    s.save_facets(tid(1), {"Task": "t"})
    cols, rows = s.query(
        "SELECT trace_id, status FROM traces WHERE received_at > ? ORDER BY trace_id", [1_001.5]
    )
    assert cols == ["trace_id", "status"] and rows == [(tid(2), "ok")]
    cols, rows = s.query(
        "SELECT f.value, t.service_name FROM facets f JOIN traces t USING (trace_id)", max_rows=1
    )
    assert rows == [("t", "agent")]
    for sql in (
        "DELETE FROM traces",
        "INSERT INTO kv (key, value, created_at) VALUES ('a', 'b', 0)",
        "UPDATE traces SET status = 'x'",
        "DROP TABLE traces",
        "CREATE TABLE t (x)",
        "PRAGMA query_only = OFF",
        "ATTACH DATABASE ':memory:' AS other",
    ):
        with pytest.raises(StoreError, match="read-only"):
            s.query(sql)
    with pytest.raises(StoreError, match=r"query failed.*no such table"):
        s.query("SELECT * FROM nope")
    with pytest.raises(StoreError, match="query failed"):
        s.query("SELECT 1; DELETE FROM traces")
    assert len(s.query("SELECT * FROM traces")[1]) == 2  # nothing was written
    s.save_traces([record(3)])  # the main connection still writes
    assert len(s.query("SELECT * FROM traces")[1]) == 3
    s.close()


# ---- migrations ----------------------------------------------------------------------------------


def test_fresh_store_is_at_latest_version(store: SqliteStore) -> None:
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    assert store.found_version == 0


def test_old_database_is_migrated_and_data_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:1])  # a database written by schema version 1
    conn.execute(
        "INSERT INTO traces (trace_id, received_at, status, conversation) VALUES (?, 5.0, 'ok', 'hello')",
        (tid(1),),
    )
    conn.close()
    s = SqliteStore(path)
    assert s.found_version == 1 and s.schema_version() == SCHEMA_VERSION
    got = s.get_trace(tid(1))
    assert got is not None and got.conversation == "hello"
    s.cache_put("k", "v")  # the version-2 tables exist
    s.set_state("Task", "idle", "")
    assert s.cache_get("k") == "v"
    s.close()
    s = SqliteStore(path)  # reopening applies nothing
    assert s.found_version == SCHEMA_VERSION
    s.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99, newer than"):
        SqliteStore(path)


def test_failed_migration_leaves_old_version(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:1])

    def broken(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE half (x)")
        c.execute("THIS IS NOT SQL")

    with pytest.raises(sqlite3.Error):
        migrate(conn, str(path), [*MIGRATIONS[:1], broken])
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    conn.close()


# ---- concurrency and persistence -----------------------------------------------------------------


def test_threads_share_one_store(store: SqliteStore) -> None:
    def work(k: int) -> None:
        for i in range(25):
            n = k * 100 + i
            store.save_traces([record(n)])
            store.save_facets(tid(n), {"Task": f"t{n % 7}"})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_facets("Task", None) == 100
    assert store.count_unique_facets("Task", None) == 7


def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    s.save_traces([record(1)])
    s.save_topic_map(topic_map())
    s.close()
    s = SqliteStore(path)
    assert s.get_trace(tid(1)) == record(1)
    assert s.latest_versions() == {"Task": 1}
    s.close()
