"""Caches of facet answers, keyed by a hash of (model, facet specs, rendered conversation)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from typing import Protocol

from otel_topics.errors import OtelTopicsError


class FacetCache(Protocol):
    """Where an LLM extractor keeps answers it already paid for. Implementations must be cheap and
    must not raise on a miss; a store-backed cache may persist across restarts."""

    def get(self, key: str) -> dict[str, str] | None: ...

    def put(self, key: str, value: dict[str, str]) -> None: ...


class LRUFacetCache:
    """In-memory :class:`FacetCache` holding the ``max_entries`` most recently used answers."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, str] | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                return None
            self._data.move_to_end(key)
            return dict(value)

    def put(self, key: str, value: dict[str, str]) -> None:
        with self._lock:
            self._data[key] = dict(value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class StoreFacetCache:
    """:class:`FacetCache` over the store's key-value table, behind an in-memory LRU: answers
    survive restarts, so a trace retried or replayed after a restart costs no second LLM call."""

    def __init__(self, store: _KeyValue, max_entries: int = 10_000) -> None:
        self.store = store
        self.memory = LRUFacetCache(max_entries)

    def get(self, key: str) -> dict[str, str] | None:
        hit = self.memory.get(key)
        if hit is not None:
            return hit
        try:
            raw = self.store.cache_get(f"facets:{key}")
        except OtelTopicsError:
            return None
        if raw is None:
            return None
        value = json.loads(raw)
        if not isinstance(value, dict):
            return None
        answer = {str(k): str(v) for k, v in value.items()}
        self.memory.put(key, answer)
        return answer

    def put(self, key: str, value: dict[str, str]) -> None:
        self.memory.put(key, value)
        with contextlib.suppress(OtelTopicsError):  # a cache must not fail the trace
            self.store.cache_put(f"facets:{key}", json.dumps(value, ensure_ascii=False))


class _KeyValue(Protocol):
    def cache_get(self, key: str) -> str | None: ...

    def cache_put(self, key: str, value: str) -> None: ...
