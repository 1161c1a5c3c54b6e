"""``otel-topics topics build|list|show|status``: topic maps in the store, from the command line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from otel_topics.config import Config
from otel_topics.model import TopicMap
from otel_topics.store import Store, open_store


def build(config: Config, map_name: str | None, wait: float = 600.0) -> list[TopicMap]:
    """Build (and save) a version of ``map_name``, or of every configured map, now (waiting up to
    ``wait`` seconds while another process builds it)."""
    from otel_topics.automation import Automation
    from otel_topics.enrich import StoreRunner
    from otel_topics.service import build_embedder

    names = [map_name] if map_name else [m.map_name for m in config.topic_maps()]
    runner = StoreRunner(open_store(config.store_url()))
    try:
        auto = Automation(runner, config, build_embedder(config).name, lambda tm: None)

        async def go() -> list[TopicMap]:
            return [await auto.build_now(n, wait=wait) for n in names]

        return asyncio.run(go())
    finally:
        runner.close()
        runner.store.close()


def with_store(config: Config) -> Store:
    return open_store(config.store_url())


def format_list(store: Store) -> str:
    rows = store.list_topic_maps()
    if not rows:
        return "no topic maps yet"
    lines = [f"{'MAP':<20} {'VERSION':>7} {'TOPICS':>6}  CREATED"]
    lines += [f"{n:<20} {v:>7} {k:>6}  {_when(t)}" for n, v, k, t in rows]
    return "\n".join(lines)


def format_map(tm: TopicMap, *, min_examples_traces: int, examples: int = 3) -> str:
    """A map version's clusters: id, name, size, keywords, and examples when big enough."""
    head = (
        f"topic map {tm.name} version {tm.version}: {len(tm.clusters)} topics of facet {tm.facet}, "
        f"distance threshold {tm.distance_threshold:.3f}, embedder {tm.embedder or '?'}, "
        f"created {_when(tm.created_at)}"
    )
    lines = [head]
    for c in sorted(tm.clusters, key=lambda c: -c.size):
        lines.append(f"\n{c.id}  {c.name}  ({c.size} traces)")
        if c.keywords:
            lines.append(f"  keywords: {', '.join(c.keywords)}")
        if c.parents:
            lines.append(f"  from: {', '.join(c.parents)}")
        if c.size >= min_examples_traces:
            lines.extend(f"  e.g. {_one_line(e)}" for e in c.exemplars[:examples])
    return "\n".join(lines)


def format_status(store: Store, map_names: Sequence[str]) -> str:
    states = store.states()
    versions = store.latest_versions()
    names = list(dict.fromkeys([*map_names, *states]))
    if not names:
        return "no topic maps configured"
    lines = []
    for n in names:
        state, reason, since = states.get(n, ("not_started", "automation has not run", 0.0))
        version = versions.get(n)
        lines.append(
            f"{n}: {state} since {_when(since) if since else '-'}"
            f" (latest version {version if version is not None else 'none'})\n  {reason}"
        )
    return "\n".join(lines)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
