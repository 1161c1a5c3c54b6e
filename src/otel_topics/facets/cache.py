"""Caches of facet answers, keyed by a hash of (model, facet specs, rendered conversation)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from otel_topics import metrics
from otel_topics.errors import LLMError, OtelTopicsError
from otel_topics.facets import prompt
from otel_topics.facets.spec import FacetSpec
from otel_topics.model import Conversation


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


class CachedLLMExtractor:
    """The caching half of an LLM facet extractor: ``extract`` answers from the cache, from the call
    already running for an identical conversation, or by ``_call`` (whose answer is then cached).
    Subclasses set ``name``, ``model``, ``facets``, ``max_input_chars`` and ``cache`` and implement
    ``_call(rendered)``: one LLM call for the rendered conversation."""

    name: str
    model: str
    facets: Sequence[FacetSpec]
    max_input_chars: int | None
    cache: FacetCache | None

    def __init__(self) -> None:
        self._shared = SharedCalls()

    async def extract(self, conversation: Conversation) -> dict[str, str]:
        start = time.perf_counter()
        rendered = prompt.render(conversation, self.max_input_chars)
        key = prompt.cache_key(self.model, self.facets, rendered)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            values, reused = hit, True
        else:
            values, reused = await self._shared.run(key, lambda: self._call(rendered))
            if not reused and self.cache is not None:
                self.cache.put(key, values)
        if reused:
            metrics.LLM_REQUESTS.labels("cache_hit").inc()
        metrics.FACET_LATENCY.labels(self.name).observe(time.perf_counter() - start)
        return prompt.fill_missing(values, self.facets) if reused else values

    async def _call(self, rendered: str) -> dict[str, str]:
        raise NotImplementedError
