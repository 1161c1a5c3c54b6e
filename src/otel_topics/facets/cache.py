"""Caches of facet answers, keyed by a hash of (model, facet specs, rendered conversation)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol


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
