from __future__ import annotations

from pathlib import Path

from otel_topics.facets.cache import StoreFacetCache
from otel_topics.store import open_store


def test_store_cache_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    store = open_store(url)
    cache = StoreFacetCache(store)
    assert cache.get("k") is None
    cache.put("k", {"Task": "Book a flight", "Sentiment": "positive"})
    assert cache.get("k") == {"Task": "Book a flight", "Sentiment": "positive"}
    store.close()
    again = StoreFacetCache(open_store(url))  # a new process: nothing in memory
    assert again.get("k") == {"Task": "Book a flight", "Sentiment": "positive"}


def test_store_failure_is_a_miss(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/t.db")
    cache = StoreFacetCache(store, max_entries=1)
    store.close()
    cache.put("a", {"Task": "x"})  # the store is closed: kept in memory, no exception
    cache.put("b", {"Task": "y"})  # evicts "a" from memory
    assert cache.get("a") is None
    assert cache.get("b") == {"Task": "y"}
