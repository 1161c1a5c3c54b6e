"""The store: conversations, facets, vectors, classifications, topic map versions, cache and state.

The API is synchronous and meant to run on one worker thread (see ``enrich.StoreRunner``); every
implementation is also safe to call from several threads. Failures are raised as
:class:`otel_topics.errors.StoreError` naming the operation.

``open_store(url)`` picks the backend from a URL:

- ``sqlite:////var/lib/otel-topics/topics.db``: absolute path (four slashes)
- ``sqlite:///topics.db``: path relative to the working directory
- ``sqlite://:memory:``: a private in-memory database (tests)
- ``postgresql://...``: not available yet
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from otel_topics.errors import StoreError
from otel_topics.model import Classification, Cluster, TopicMap

Vector = npt.NDArray[np.float32]
Row = tuple[Any, ...]


@dataclass(slots=True)
class TraceRecord:
    """One enriched (or waiting) trace: its root span and its redacted conversation."""

    trace_id: str  # 32 lowercase hex digits
    root_span_id: str = ""  # 16 hex digits, "" when the trace has no root span
    root_start_ns: int = 0
    root_end_ns: int = 0
    service_name: str = ""
    received_at: float = 0.0  # unix seconds; the first save wins on upsert
    status: str = "ok"  # otel_topics.status value
    conversation: str = ""  # rendered, redacted
    conversation_hash: str = ""
    attempts: int = 0  # facet attempts so far
    next_attempt_at: float | None = None  # unix seconds of the next facet retry; None = no retry


class Store(Protocol):
    """What the pipeline, the automation, the API and the CLI need from the store."""

    # traces
    def save_traces(self, rows: Sequence[TraceRecord]) -> None: ...
    def get_trace(self, trace_id: str) -> TraceRecord | None: ...
    def due_retries(self, now: float, limit: int) -> list[TraceRecord]: ...
    def mark_attempt(self, trace_id: str, status: str, next_attempt_at: float | None) -> None: ...

    # facets
    def save_facets(self, trace_id: str, facets: dict[str, str]) -> None: ...
    def facets_for(self, trace_id: str) -> dict[str, str]: ...
    def facet_values(self, facet: str, since: float | None, limit: int) -> list[tuple[str, str]]: ...
    def count_facets(self, facet: str, since: float | None) -> int: ...
    def count_unique_facets(self, facet: str, since: float | None) -> int: ...

    # vectors
    def save_vectors(self, embedder: str, rows: Sequence[tuple[str, str, Vector]]) -> None: ...
    def vectors(
        self, facet: str, embedder: str, since: float | None, limit: int
    ) -> tuple[list[str], Vector]: ...

    # classifications
    def save_classifications(self, trace_id: str, rows: Sequence[Classification]) -> None: ...
    def classifications_for(self, trace_id: str) -> list[Classification]: ...

    # topic maps
    def save_topic_map(self, topic_map: TopicMap) -> TopicMap: ...
    def latest_topic_map(self, name: str) -> TopicMap | None: ...
    def topic_map(self, name: str, version: int) -> TopicMap | None: ...
    def list_topic_maps(self) -> list[tuple[str, int, int, float]]: ...
    def latest_versions(self) -> dict[str, int]: ...

    # facet cache
    def cache_get(self, key: str) -> str | None: ...
    def cache_put(self, key: str, value: str) -> None: ...

    # automation state
    def set_state(self, map_name: str, state: str, reason: str) -> None: ...
    def states(self) -> dict[str, tuple[str, str, float]]: ...

    # cross-process leases (one topic map builder at a time)
    def try_lock(self, name: str, owner: str, ttl: float) -> bool: ...
    def unlock(self, name: str, owner: str) -> None: ...

    # maintenance
    def purge(self, older_than: float) -> int: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[Row]]: ...
    def close(self) -> None: ...


def open_store(url: str, *, cache_max_entries: int = 100_000) -> Store:
    """Open (creating and migrating if needed) the store a URL names."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"store url {url!r} has no scheme; expected sqlite:///PATH or postgresql://...")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        raise StoreError(
            f"PostgreSQL store is not available yet (store url {redact_url(url)!r}); "
            "use sqlite:////ABSOLUTE/PATH.db for now"
        )
    if scheme != "sqlite":
        raise StoreError(
            f"unsupported store url scheme {scheme!r} in {redact_url(url)!r}; expected sqlite or postgresql"
        )
    path = sqlite_path(url, rest)
    from otel_topics.store_sqlite import SqliteStore

    return SqliteStore(path, cache_max_entries=cache_max_entries)


def sqlite_path(url: str, rest: str) -> str:
    """The file path of a ``sqlite://`` URL (``rest`` is what follows ``://``)."""
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise StoreError(
            f"store url {url!r} names no file; use sqlite:////ABSOLUTE/PATH.db (four slashes), "
            "sqlite:///RELATIVE/PATH.db or sqlite://:memory:"
        )
    path = rest[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
    if "?" in path or "#" in path:
        raise StoreError(f"store url {url!r}: query strings and fragments are not supported")
    return str(Path(path))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)


# ---- topic map (de)serialization, shared by every backend -------------------------------------


def encode_vector(vector: Sequence[float] | Vector) -> str:
    """A vector as base64 of little-endian float32 (compact and exact for float32 centroids)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(value: str | Sequence[float]) -> list[float]:
    if isinstance(value, str):
        return [float(x) for x in np.frombuffer(base64.b64decode(value), dtype="<f4")]
    return [float(x) for x in value]


def clusters_to_json(clusters: Sequence[Cluster]) -> str:
    return json.dumps(
        [
            {
                "id": c.id,
                "name": c.name,
                "description": c.description,
                "keywords": list(c.keywords),
                "centroid": encode_vector(c.centroid),
                "radius": c.radius,
                "threshold": c.threshold,
                "size": c.size,
                "exemplars": list(c.exemplars),
                "parents": list(c.parents),
            }
            for c in clusters
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def clusters_from_json(text: str, where: str) -> list[Cluster]:
    try:
        items = json.loads(text)
        return [
            Cluster(
                id=str(d["id"]),
                name=str(d["name"]),
                centroid=decode_vector(d["centroid"]),
                size=int(d.get("size", 0)),
                description=str(d.get("description", "")),
                keywords=[str(k) for k in d.get("keywords", [])],
                radius=float(d.get("radius", 0.0)),
                threshold=None if d.get("threshold") is None else float(d["threshold"]),
                exemplars=[str(e) for e in d.get("exemplars", [])],
                parents=[str(p) for p in d.get("parents", [])],
            )
            for d in items
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"{where}: stored clusters are not valid JSON clusters: {exc!r}") from exc
