"""Re-classify recent stored traces with a new topic map version.

After a serving process swaps in a new version (whichever process drew it), :func:`backfill` takes
the traces whose vectors were stored in the last ``window`` seconds, classifies their stored vectors
against the new version, stores the classifications (source ``backfill``) and emits one
``otel_topics.classification`` span per trace through ``emit``. Batched, at most ``rate`` traces a
second. Traces that already have a classification for this version (online, or an interrupted
earlier backfill) are skipped, and the finished backfill is recorded under the key
``backfill:<map>:<version>``, so it is not repeated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from otel_topics.classify import CentroidClassifier
from otel_topics.enrich import RootInfo, StoreRunner
from otel_topics.model import Classification, Enrichment, Status, TopicMap

log = logging.getLogger(__name__)

Emit = Callable[[str, RootInfo, Enrichment], Awaitable[None]]
"""Sends one classification span: (trace id hex, its root span, facets + classifications)."""

MAX_TRACES = 1_000_000


def backfill_key(map_name: str, version: int) -> str:
    return f"backfill:{map_name}:{version}"


async def backfill(
    runner: StoreRunner,
    topic_map: TopicMap,
    *,
    window: float,
    emit: Emit,
    embedder_name: str | None = None,
    batch_size: int = 200,
    rate: float = 500.0,
    owner: str = "",
    lease: float = 3600.0,
    clock: Callable[[], float] = time.time,
) -> int:
    """Backfill ``topic_map``; returns the number of traces classified (0 when already done, or
    while another process holds the lease ``backfill:<map>:<version>``)."""
    store = runner.store
    key = backfill_key(topic_map.name, topic_map.version)
    if window <= 0 or await runner.run(store.cache_get, key) is not None:
        return 0
    owner = owner or f"{os.getpid()}:{id(topic_map)}"
    if not await runner.run(store.try_lock, key, owner, lease):
        log.info(
            "backfill of topic map %s version %d: another process runs it", topic_map.name, topic_map.version
        )
        return 0
    try:
        return await _backfill(runner, topic_map, key, window, emit, embedder_name, batch_size, rate, clock)
    finally:
        await runner.run(store.unlock, key, owner)


async def _backfill(
    runner: StoreRunner,
    topic_map: TopicMap,
    key: str,
    window: float,
    emit: Emit,
    embedder_name: str | None,
    batch_size: int,
    rate: float,
    clock: Callable[[], float],
) -> int:
    store = runner.store
    embedder = embedder_name or topic_map.embedder
    ids, vectors = await runner.run(store.vectors, topic_map.facet, embedder, clock() - window, MAX_TRACES)
    classifier = CentroidClassifier(embedder=embedder or None)
    classifier.swap(topic_map)
    done = 0
    started = time.monotonic()
    for lo in range(0, len(ids), batch_size):
        batch = ids[lo : lo + batch_size]
        results = classifier.classify(topic_map.name, vectors[lo : lo + batch_size])
        for trace_id, c in zip(batch, results, strict=True):
            done += await _one(runner, topic_map, trace_id, c, emit)
        # bounded rate: never faster than ``rate`` traces a second on average
        ahead = (lo + len(batch)) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await runner.run(store.cache_put, key, f"{done} traces at {clock():.0f}")
    log.info("backfill of topic map %s version %d: %d traces", topic_map.name, topic_map.version, done)
    return done


async def _one(runner: StoreRunner, topic_map: TopicMap, trace_id: str, c: Classification, emit: Emit) -> int:
    store = runner.store
    existing = await runner.run(store.classifications_for, trace_id)
    if any(e.map_name == topic_map.name and e.map_version == topic_map.version for e in existing):
        return 0
    c = Classification(c.map_name, c.label, c.cluster_id, c.distance, c.map_version, source="backfill")
    await runner.run(store.save_classifications, trace_id, [c])
    rec = await runner.run(store.get_trace, trace_id)
    if rec is not None and rec.root_span_id:
        facets = await runner.run(store.facets_for, trace_id)
        enrichment = Enrichment(bytes.fromhex(trace_id), Status.OK, facets, [c])
        root = RootInfo(bytes.fromhex(rec.root_span_id), rec.root_start_ns, rec.root_end_ns, rec.service_name)
        await emit(trace_id, root, enrichment)
    return 1
