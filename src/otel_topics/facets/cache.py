"""Caches of facet answers, keyed by a hash of (model, facet specs, rendered conversation)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from otel_topics.errors import LLMError, OtelTopicsError


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


class SharedCalls:
    """Concurrent extractions of the same conversation share one LLM call.

    A cache only helps once an answer is in it; a repeat arriving while the first call is still out
    would pay for a second one. ``run`` makes the first caller of a key do the call and every caller
    that comes while it is running wait for that answer (or that error)."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[dict[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def run(
        self, key: str, call: Callable[[], Awaitable[dict[str, str]]]
    ) -> tuple[dict[str, str], bool]:
        """The answer, and whether it came from another caller's call."""
        running = self._calls.get(key)
        if running is not None:
            return dict(await asyncio.shield(running)), True
        fut: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._calls[key] = fut
        try:
            value = await call()
        except asyncio.CancelledError:
            fut.set_exception(LLMError("the shared facet call was cancelled"))
            fut.exception()  # retrieved: no warning when nobody was waiting
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        else:
            fut.set_result(value)
            return value, False
        finally:
            del self._calls[key]


async def answer_once(
    key: str,
    cache: FacetCache | None,
    shared: SharedCalls,
    call: Callable[[], Awaitable[dict[str, str]]],
) -> tuple[dict[str, str], bool]:
    """The facets for ``key``: from the cache, from the call already running for it, or from
    ``call`` (its answer is then cached). Returns the answer and whether it was reused."""
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    values, reused = await shared.run(key, call)
    if not reused and cache is not None:
        cache.put(key, values)
    return values, reused
