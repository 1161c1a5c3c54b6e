"""The SQLite store's schema and its migrations.

``schema_version`` holds one row per applied migration; opening a store applies the missing ones,
in order, in one transaction (a failure leaves the database at its old version).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

from otel_topics.errors import StoreError

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]


def _v1_core(conn: sqlite3.Connection) -> None:
    """Traces, facets, vectors, classifications, topic map versions."""
    conn.execute(
        """CREATE TABLE traces (
            trace_id TEXT PRIMARY KEY,
            root_span_id TEXT NOT NULL DEFAULT '',
            root_start_ns BIGINT NOT NULL DEFAULT 0,
            root_end_ns BIGINT NOT NULL DEFAULT 0,
            service_name TEXT NOT NULL DEFAULT '',
            received_at DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            conversation TEXT NOT NULL DEFAULT '',
            conversation_hash TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION)"""
    )
    conn.execute("CREATE INDEX traces_received_at ON traces (received_at)")
    conn.execute("CREATE INDEX traces_next_attempt_at ON traces (next_attempt_at)")
    conn.execute(
        """CREATE TABLE facets (
            trace_id TEXT NOT NULL,
            facet TEXT NOT NULL,
            value TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (trace_id, facet))"""
    )
    conn.execute("CREATE INDEX facets_facet_created_at ON facets (facet, created_at)")
    conn.execute(
        """CREATE TABLE vectors (
            trace_id TEXT NOT NULL,
            facet TEXT NOT NULL,
            embedder TEXT NOT NULL,
            dimension INTEGER NOT NULL,
            vector BLOB NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (trace_id, facet, embedder))"""
    )
    conn.execute("CREATE INDEX vectors_facet_created_at ON vectors (facet, embedder, created_at)")
    conn.execute(
        """CREATE TABLE classifications (
            trace_id TEXT NOT NULL,
            map_name TEXT NOT NULL,
            map_version INTEGER NOT NULL,
            cluster_id TEXT NOT NULL,
            label TEXT NOT NULL,
            distance DOUBLE PRECISION NOT NULL,
            source TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (trace_id, map_name, map_version))"""
    )
    conn.execute(
        """CREATE TABLE topic_maps (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            facet TEXT NOT NULL,
            distance_threshold DOUBLE PRECISION NOT NULL,
            embedder TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            n_clusters INTEGER NOT NULL,
            clusters TEXT NOT NULL,
            PRIMARY KEY (name, version))"""
    )


def _v2_cache_state(conn: sqlite3.Connection) -> None:
    """Facet cache, automation state, retention index on classifications."""
    conn.execute(
        """CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)"""
    )
    conn.execute("CREATE INDEX kv_created_at ON kv (created_at)")
    conn.execute(
        """CREATE TABLE automation_state (
            map_name TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            since DOUBLE PRECISION NOT NULL)"""
    )
    conn.execute("CREATE INDEX classifications_created_at ON classifications (created_at)")


def _v3_locks(conn: sqlite3.Connection) -> None:
    """Leases, so one process at a time builds a topic map."""
    conn.execute(
        """CREATE TABLE locks (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL)"""
    )


MIGRATIONS: list[Migration] = [_v1_core, _v2_cache_state, _v3_locks]
"""Schema migrations in order; ``MIGRATIONS[i]`` takes the schema from version i to i + 1.
Append only: never edit or reorder a migration that has shipped."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema to ``len(migrations)`` in one transaction; returns the version found."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        found = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        if found > len(migrations):
            raise StoreError(
                f"store {where} has schema version {found}, newer than this otel-topics supports "
                f"({len(migrations)}); upgrade otel-topics"
            )
        for version in range(found, len(migrations)):
            migrations[version](conn)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version + 1, time.time())
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise
    if found < len(migrations):
        log.info("store %s migrated from schema version %d to %d", where, found, len(migrations))
    return found
