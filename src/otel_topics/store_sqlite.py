"""SQLite implementation of :class:`otel_topics.store.Store` (stdlib ``sqlite3``, WAL mode).

One connection, guarded by a lock, so any thread may call it; writes are single transactions
(``BEGIN IMMEDIATE``, so several processes sharing a file wait on ``busy_timeout`` rather than
fail). The SQL sticks to what PostgreSQL also understands (``ON CONFLICT ... DO UPDATE``,
``DOUBLE PRECISION``) where that costs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from otel_topics.errors import StoreError
from otel_topics.model import NO_MATCH, Classification, TopicMap
from otel_topics.store import Row, TraceRecord, Vector, clusters_from_json, clusters_to_json
from otel_topics.store_schema import migrate

log = logging.getLogger(__name__)

_TRACE_COLUMNS = (
    "trace_id, root_span_id, root_start_ns, root_end_ns, service_name, received_at, status, "
    "conversation, conversation_hash, attempts, next_attempt_at"
)
_SOURCES = ("online", "backfill", "late")
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo"}


class SqliteStore:
    """The default store. ``path`` is a file (created with its directory) or ``":memory:"``.

    ``cache_max_entries`` bounds the facet cache (0 disables it); the oldest entries are pruned.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cache_max_entries: int = 100_000,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cache_max_entries < 0:
            raise ValueError("cache_max_entries must be >= 0.")
        self.path = str(path)
        self.memory = self.path == ":memory:"
        self.cache_max_entries = cache_max_entries
        self._prune_every = max(1, min(1000, cache_max_entries // 10))
        self._puts = 0
        self._clock = clock
        self._lock = threading.RLock()
        self._ro_lock = threading.Lock()
        self._ro: sqlite3.Connection | None = None
        self._denied: str | None = None
        try:
            if not self.memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if not self.memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("store %s: WAL journal mode unavailable, using %s", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            self.found_version = migrate(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    # ---- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def _op(self, op: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, in a write transaction if ``write``; errors mapped."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"store {op}: store {self.path} is closed")
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn
                if write:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise StoreError(f"store {op} failed on {self.path}: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    def close(self) -> None:
        with self._lock, self._ro_lock:
            for conn in (self._ro, self._conn):
                if conn is not None:
                    conn.close()
            self._ro = self._conn = None

    def schema_version(self) -> int:
        with self._op("schema_version") as c:
            return int(c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    # ---- traces -------------------------------------------------------------------------------
    def save_traces(self, rows: Sequence[TraceRecord]) -> None:
        if not rows:
            return
        with self._op("save_traces", write=True) as c:
            c.executemany(
                f"INSERT INTO traces ({_TRACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (trace_id) DO UPDATE SET root_span_id = excluded.root_span_id, "
                "root_start_ns = excluded.root_start_ns, root_end_ns = excluded.root_end_ns, "
                "service_name = excluded.service_name, status = excluded.status, "
                "conversation = excluded.conversation, conversation_hash = excluded.conversation_hash, "
                "attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at",
                [dataclasses.astuple(r) for r in rows],
            )

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        with self._op("get_trace") as c:
            row = c.execute(f"SELECT {_TRACE_COLUMNS} FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
        return None if row is None else TraceRecord(*row)

    def due_retries(self, now: float, limit: int) -> list[TraceRecord]:
        with self._op("due_retries") as c:
            rows = c.execute(
                f"SELECT {_TRACE_COLUMNS} FROM traces WHERE next_attempt_at IS NOT NULL "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [TraceRecord(*r) for r in rows]

    def mark_attempt(self, trace_id: str, status: str, next_attempt_at: float | None) -> None:
        """Count one more facet attempt; ``next_attempt_at=None`` ends retries. No-op for an unknown id."""
        with self._op("mark_attempt", write=True) as c:
            c.execute(
                "UPDATE traces SET status = ?, attempts = attempts + 1, next_attempt_at = ? "
                "WHERE trace_id = ?",
                (status, next_attempt_at, trace_id),
            )

    # ---- facets -------------------------------------------------------------------------------
    def save_facets(self, trace_id: str, facets: dict[str, str]) -> None:
        if not facets:
            return
        now = self._clock()
        with self._op("save_facets", write=True) as c:
            c.executemany(
                "INSERT INTO facets (trace_id, facet, value, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (trace_id, facet) DO UPDATE SET value = excluded.value, "
                "created_at = excluded.created_at",
                [(trace_id, k, v, now) for k, v in facets.items()],
            )

    def facets_for(self, trace_id: str) -> dict[str, str]:
        with self._op("facets_for") as c:
            rows = c.execute(
                "SELECT facet, value FROM facets WHERE trace_id = ? ORDER BY facet", (trace_id,)
            ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def facet_values(self, facet: str, since: float | None, limit: int) -> list[tuple[str, str]]:
        """The newest ``limit`` (trace_id, value) pairs of a facet, ``no_match`` excluded."""
        with self._op("facet_values") as c:
            rows = c.execute(
                "SELECT trace_id, value FROM facets WHERE facet = ? AND value <> ? AND created_at >= ? "
                "ORDER BY created_at DESC, trace_id LIMIT ?",
                (facet, NO_MATCH, _since(since), limit),
            ).fetchall()
        return [(str(t), str(v)) for t, v in rows]

    def count_facets(self, facet: str, since: float | None) -> int:
        """Traces with a value for ``facet`` (``no_match`` excluded)."""
        with self._op("count_facets") as c:
            row = c.execute(
                "SELECT COUNT(*) FROM facets WHERE facet = ? AND value <> ? AND created_at >= ?",
                (facet, NO_MATCH, _since(since)),
            ).fetchone()
        return int(row[0])

    def count_unique_facets(self, facet: str, since: float | None) -> int:
        """Distinct values of ``facet`` (``no_match`` excluded)."""
        with self._op("count_unique_facets") as c:
            row = c.execute(
                "SELECT COUNT(DISTINCT value) FROM facets WHERE facet = ? AND value <> ? AND created_at >= ?",
                (facet, NO_MATCH, _since(since)),
            ).fetchone()
        return int(row[0])

    # ---- vectors ------------------------------------------------------------------------------
    def save_vectors(self, embedder: str, rows: Sequence[tuple[str, str, Vector]]) -> None:
        if not rows:
            return
        now = self._clock()
        params = []
        for trace_id, facet, vector in rows:
            v = np.asarray(vector, dtype="<f4").reshape(-1)
            params.append((trace_id, facet, embedder, int(v.shape[0]), v.tobytes(), now))
        with self._op("save_vectors", write=True) as c:
            c.executemany(
                "INSERT INTO vectors (trace_id, facet, embedder, dimension, vector, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (trace_id, facet, embedder) DO UPDATE SET "
                "dimension = excluded.dimension, vector = excluded.vector, created_at = excluded.created_at",
                params,
            )

    def vectors(self, facet: str, embedder: str, since: float | None, limit: int) -> tuple[list[str], Vector]:
        """The newest ``limit`` vectors of a facet: (trace ids, float32 matrix one row per id)."""
        with self._op("vectors") as c:
            rows = c.execute(
                "SELECT trace_id, dimension, vector FROM vectors WHERE facet = ? AND embedder = ? "
                "AND created_at >= ? ORDER BY created_at DESC, trace_id LIMIT ?",
                (facet, embedder, _since(since), limit),
            ).fetchall()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        dims = {int(r[1]) for r in rows}
        if len(dims) != 1:
            raise StoreError(
                f"store vectors: facet {facet!r} embedder {embedder!r} has vectors of several "
                f"dimensions {sorted(dims)} in {self.path}"
            )
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dims.pop())
        return [str(r[0]) for r in rows], matrix.astype(np.float32)

    # ---- classifications ----------------------------------------------------------------------
    def save_classifications(self, trace_id: str, rows: Sequence[Classification]) -> None:
        if not rows:
            return
        now = self._clock()
        with self._op("save_classifications", write=True) as c:
            c.executemany(
                "INSERT INTO classifications (trace_id, map_name, map_version, cluster_id, label, distance, "
                "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (trace_id, map_name, map_version) DO UPDATE SET "
                "cluster_id = excluded.cluster_id, "
                "label = excluded.label, distance = excluded.distance, source = excluded.source, "
                "created_at = excluded.created_at",
                [
                    (
                        trace_id,
                        r.map_name,
                        r.map_version,
                        r.cluster_id,
                        r.label,
                        float(r.distance),
                        r.source,
                        now,
                    )
                    for r in rows
                ],
            )

    def classifications_for(self, trace_id: str) -> list[Classification]:
        with self._op("classifications_for") as c:
            rows = c.execute(
                "SELECT map_name, label, cluster_id, distance, map_version, source FROM classifications "
                "WHERE trace_id = ? ORDER BY map_name, map_version",
                (trace_id,),
            ).fetchall()
        return [
            Classification(
                str(m),
                str(lbl),
                str(cid),
                float(d),
                int(v),
                cast(Literal["online", "backfill", "late"], s if s in _SOURCES else "online"),
            )
            for m, lbl, cid, d, v, s in rows
        ]

    # ---- topic maps ---------------------------------------------------------------------------
    def save_topic_map(self, topic_map: TopicMap) -> TopicMap:
        """Save a new version (previous + 1, whatever ``topic_map.version`` says) and return it."""
        clusters = clusters_to_json(topic_map.clusters)
        created = topic_map.created_at or self._clock()
        with self._op("save_topic_map", write=True) as c:
            prev = c.execute(
                "SELECT COALESCE(MAX(version), 0) FROM topic_maps WHERE name = ?", (topic_map.name,)
            ).fetchone()[0]
            version = int(prev) + 1
            c.execute(
                "INSERT INTO topic_maps (name, version, facet, distance_threshold, embedder, created_at, "
                "n_clusters, clusters) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    topic_map.name,
                    version,
                    topic_map.facet,
                    float(topic_map.distance_threshold),
                    topic_map.embedder,
                    created,
                    len(topic_map.clusters),
                    clusters,
                ),
            )
        return dataclasses.replace(topic_map, version=version, created_at=created)

    def latest_topic_map(self, name: str) -> TopicMap | None:
        return self._topic_map(
            "latest_topic_map",
            "WHERE name = ? ORDER BY version DESC LIMIT 1",
            (name,),
        )

    def topic_map(self, name: str, version: int) -> TopicMap | None:
        return self._topic_map("topic_map", "WHERE name = ? AND version = ?", (name, version))

    def _topic_map(self, op: str, where: str, params: tuple[Any, ...]) -> TopicMap | None:
        with self._op(op) as c:
            row = c.execute(
                "SELECT name, facet, version, distance_threshold, embedder, created_at, clusters "
                f"FROM topic_maps {where}",
                params,
            ).fetchone()
        if row is None:
            return None
        name, facet, version, threshold, embedder, created, clusters = row
        return TopicMap(
            name=str(name),
            facet=str(facet),
            version=int(version),
            clusters=clusters_from_json(clusters, f"topic map {name} version {version} in {self.path}"),
            distance_threshold=float(threshold),
            embedder=str(embedder),
            created_at=float(created),
        )

    def list_topic_maps(self) -> list[tuple[str, int, int, float]]:
        """(name, latest version, clusters in it, its created_at), by name."""
        with self._op("list_topic_maps") as c:
            rows = c.execute(
                "SELECT t.name, t.version, t.n_clusters, t.created_at FROM topic_maps t JOIN "
                "(SELECT name, MAX(version) AS version FROM topic_maps GROUP BY name) m "
                "ON t.name = m.name AND t.version = m.version ORDER BY t.name"
            ).fetchall()
        return [(str(n), int(v), int(k), float(t)) for n, v, k, t in rows]

    def latest_versions(self) -> dict[str, int]:
        with self._op("latest_versions") as c:
            rows = c.execute("SELECT name, MAX(version) FROM topic_maps GROUP BY name").fetchall()
        return {str(n): int(v) for n, v in rows}

    # ---- facet cache --------------------------------------------------------------------------
    def cache_get(self, key: str) -> str | None:
        with self._op("cache_get") as c:
            row = c.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def cache_put(self, key: str, value: str) -> None:
        if self.cache_max_entries == 0:
            return
        with self._op("cache_put", write=True) as c:
            c.execute(
                "INSERT INTO kv (key, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, created_at = excluded.created_at",
                (key, value, self._clock()),
            )
            self._puts += 1
            if self._puts % self._prune_every == 0:
                self._prune_cache(c)

    def _prune_cache(self, c: sqlite3.Connection) -> None:
        """Delete the entries older than the ``cache_max_entries``-th newest."""
        row = c.execute(
            "SELECT created_at FROM kv ORDER BY created_at DESC LIMIT 1 OFFSET ?", (self.cache_max_entries,)
        ).fetchone()
        if row is not None:
            c.execute("DELETE FROM kv WHERE created_at <= ?", (row[0],))

    # ---- automation state ---------------------------------------------------------------------
    def set_state(self, map_name: str, state: str, reason: str) -> None:
        """Record a map's automation state; ``since`` changes only when the state does."""
        with self._op("set_state", write=True) as c:
            c.execute(
                "INSERT INTO automation_state (map_name, state, reason, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (map_name) DO UPDATE SET reason = excluded.reason, "
                "since = CASE WHEN automation_state.state = excluded.state "
                "THEN automation_state.since ELSE excluded.since END, state = excluded.state",
                (map_name, state, reason, self._clock()),
            )

    def states(self) -> dict[str, tuple[str, str, float]]:
        with self._op("states") as c:
            rows = c.execute(
                "SELECT map_name, state, reason, since FROM automation_state ORDER BY map_name"
            ).fetchall()
        return {str(m): (str(s), str(r), float(t)) for m, s, r, t in rows}

    # ---- locks --------------------------------------------------------------------------------
    def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take (or renew) the lease ``name`` for ``ttl`` seconds; False while another owner holds an
        unexpired lease. Shared by every process using the same database file."""
        now = self._clock()
        with self._op("try_lock", write=True) as c:
            c.execute(
                "INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE locks.owner = excluded.owner OR locks.expires_at <= ?",
                (name, owner, now + ttl, now),
            )
            row = c.execute("SELECT owner FROM locks WHERE name = ?", (name,)).fetchone()
        return row is not None and str(row[0]) == owner

    def unlock(self, name: str, owner: str) -> None:
        """Release the lease ``name`` if ``owner`` holds it."""
        with self._op("unlock", write=True) as c:
            c.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

    # ---- maintenance --------------------------------------------------------------------------
    def purge(self, older_than: float) -> int:
        """Delete traces received before ``older_than`` (unix s) with their facets, vectors and
        classifications, plus any of those and cache entries written before it. Topic maps and
        automation state are kept. Returns the number of traces deleted."""
        old = "trace_id IN (SELECT trace_id FROM traces WHERE received_at < ?)"
        with self._op("purge", write=True) as c:
            for table in ("facets", "vectors", "classifications"):
                c.execute(f"DELETE FROM {table} WHERE created_at < ? OR {old}", (older_than, older_than))
            c.execute("DELETE FROM kv WHERE created_at < ?", (older_than,))
            n = c.execute("DELETE FROM traces WHERE received_at < ?", (older_than,)).rowcount
        return int(n)

    def query(
        self, sql: str, params: Sequence[Any] = (), max_rows: int | None = None
    ) -> tuple[list[str], list[Row]]:
        """Run one read-only SQL statement: (column names, rows). Writes are refused with StoreError."""
        if self.memory:
            with self._op("query") as c:
                return self._query(c, sql, params, max_rows)
        with self._ro_lock:
            if self._ro is None:
                try:
                    uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                    self._ro = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                    self._ro.execute("PRAGMA query_only = ON")
                except sqlite3.Error as exc:
                    raise StoreError(f"store query: cannot open {self.path} read-only: {exc}") from exc
            return self._query(self._ro, sql, params, max_rows)

    def _query(
        self, conn: sqlite3.Connection, sql: str, params: Sequence[Any], max_rows: int | None
    ) -> tuple[list[str], list[Row]]:
        self._denied = None
        conn.set_authorizer(self._authorize)
        try:
            cur = conn.execute(sql, tuple(params))
            rows = cur.fetchall() if max_rows is None else cur.fetchmany(max_rows)
            columns = [d[0] for d in cur.description or ()]
            cur.close()
        except sqlite3.Error as exc:
            if conn.in_transaction and conn is self._conn:
                conn.rollback()
            if self._denied is not None or "readonly" in str(exc) or "read-only" in str(exc):
                what = f" ({self._denied})" if self._denied else ""
                raise StoreError(
                    f"store query refused: the store is read-only here, only SELECT is allowed{what}: "
                    f"{_short(sql)}"
                ) from exc
            raise StoreError(f"store query failed on {self.path}: {exc}: {_short(sql)}") from exc
        finally:
            conn.set_authorizer(None)
        return columns, [tuple(r) for r in rows]

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, _t: str | None
    ) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if (
            action == sqlite3.SQLITE_PRAGMA
            and arg1 is not None
            and (arg2 is None or arg1.lower() in _READ_PRAGMAS)
        ):
            return sqlite3.SQLITE_OK
        self._denied = _ACTION_NAMES.get(action, f"action {action}") + (f" {arg1}" if arg1 else "")
        return sqlite3.SQLITE_DENY


_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{n.upper()}"): n
    for n in (
        "insert",
        "update",
        "delete",
        "create_table",
        "create_index",
        "create_view",
        "create_trigger",
        "create_temp_table",
        "drop_table",
        "drop_index",
        "drop_view",
        "drop_trigger",
        "alter_table",
        "attach",
        "detach",
        "pragma",
        "transaction",
        "reindex",
        "analyze",
        "savepoint",
    )
}


def _since(since: float | None) -> float:
    return float("-inf") if since is None else since


def _short(sql: str, n: int = 120) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= n else one[: n - 3] + "..."
