"""Background topic map building: one state machine per topic map.

``waiting_for_facets`` -> ``recomputing_topic_maps`` -> ``backfilling`` -> ``idle`` -> (after
``rerun``) ``recomputing_topic_maps`` ...

- waiting_for_facets: fewer than ``min_traces`` traces with the map's facet, or fewer than
  ``min_unique_facets`` distinct values, in the store.
- recomputing_topic_maps: building a version. One process at a time builds a map: it holds the lease
  ``build:<map>`` in the store; the others wait.
- backfilling: the new version is saved; serving processes swap it in and re-classify recent traces
  (``backfill.py``); done when the backfill of that version is recorded (or after ``backfill_timeout``).
- idle: until ``rerun`` after the latest version was drawn.

State, reason and since live in the store (``otel-topics topics status``) and in the gauge
``otel_topics_automation_state{map, state}``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from otel_topics import metrics
from otel_topics.backfill import backfill_key
from otel_topics.clustering import ClusteringSettings
from otel_topics.config import Config
from otel_topics.config_topics import TopicMapConfig
from otel_topics.enrich import StoreRunner
from otel_topics.errors import StoreError
from otel_topics.model import TopicMap
from otel_topics.topicmap import NameClusters, build_topic_map

log = logging.getLogger(__name__)

WAITING: Final = "waiting_for_facets"
RECOMPUTING: Final = "recomputing_topic_maps"
BACKFILLING: Final = "backfilling"
IDLE: Final = "idle"
STATES: Final = (WAITING, RECOMPUTING, BACKFILLING, IDLE)

OnNewVersion = Callable[[TopicMap], Awaitable[None] | None]


def clustering_settings(m: TopicMapConfig) -> ClusteringSettings:
    """A map's ``clustering:`` block as :class:`ClusteringSettings` (unknown keys are an error)."""
    extra = dict(m.clustering.model_extra or {})
    try:
        return ClusteringSettings(**extra)
    except TypeError as exc:
        raise ValueError(f"topic map {m.map_name}: clustering: {exc}") from None


def llm_namer(config: Config) -> NameClusters | None:
    """With ``llm.type: openai``, clusters are named by that LLM, several per call, from in-cluster
    exemplars contrasted with the nearest texts outside (Clio); otherwise from keywords."""
    llm = config.topics.llm
    if llm.type != "openai":
        return None
    from otel_topics.naming import ClusterName, ClusterSample, LLMNamer

    def name(samples: Sequence[ClusterSample]) -> list[ClusterName]:
        async def go() -> list[ClusterName]:
            async with LLMNamer(
                str(llm.base_url),
                str(llm.model),
                api_key=llm.api_key.get_secret_value() if llm.api_key else None,
                response_format=llm.response_format,
                timeout=max(llm.timeout, 120.0),
                max_retries=llm.max_retries,
                headers=dict(llm.headers),
            ) as namer:
                return await namer.name(samples)

        return asyncio.run(go())  # the build runs in a worker thread with no event loop

    return name


class Automation:
    """Drives every configured map through its states; ``run()`` ticks every ``tick`` seconds."""

    def __init__(
        self,
        store_runner: StoreRunner,
        config: Config,
        embedder_name: str,
        on_new_version: OnNewVersion,
        *,
        owner: str | None = None,
        tick: float = 10.0,
        lock_ttl: float = 3600.0,
        backfill_timeout: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runner = store_runner
        self.store = store_runner.store
        self.config = config
        self.auto = config.topics.automation
        self.embedder_name = embedder_name
        self.on_new_version = on_new_version
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tick = tick
        self.lock_ttl = lock_ttl
        self.backfill_timeout = backfill_timeout
        self.clock = clock
        self._build_locks: dict[str, asyncio.Lock] = {}

    def maps(self) -> dict[str, TopicMapConfig]:
        return {m.map_name: m for m in self.config.topic_maps()}

    async def run(self) -> None:
        """Step every map, forever (cancel to stop). Failures are logged and retried next tick."""
        while True:
            await self.step_all()
            await asyncio.sleep(self.tick)

    async def step_all(self) -> None:
        for name in self.maps():
            try:
                await self.step(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("automation of topic map %s failed; retrying", name)
                metrics.ERRORS.labels("automation").inc()

    async def step(self, name: str) -> str:
        """Advance map ``name`` by at most one transition; returns its state afterwards."""
        m = self.maps()[name]
        states = await self.runner.run(self.store.states)
        state = states.get(name, (WAITING, "", 0.0))[0]
        latest = await self.runner.run(self.store.latest_topic_map, name)
        now = self.clock()
        if latest is None:
            if not await self._enough_facets(m):
                return WAITING
            state = RECOMPUTING
        elif state == BACKFILLING:
            done = await self.runner.run(self.store.cache_get, backfill_key(name, latest.version))
            since = states[name][2]
            if done is not None or self.auto.backfill_window <= 0 or now - since >= self.backfill_timeout:
                return await self._set(
                    name,
                    IDLE,
                    self._idle_reason(latest, now),
                )
            return await self._set(
                name,
                BACKFILLING,
                f"re-classifying the last {_dur(self.auto.backfill_window)} of traces "
                f"with version {latest.version}",
            )
        elif state in (WAITING, RECOMPUTING) or now - latest.created_at >= self.auto.rerun:
            state = RECOMPUTING
        else:
            return await self._set(
                name,
                IDLE,
                self._idle_reason(latest, now),
            )
        built = await self.build(name, m, latest)
        if built is None:
            return (await self.runner.run(self.store.states)).get(name, (WAITING, "", 0.0))[0]
        return BACKFILLING

    async def build_now(self, map_name: str, *, wait: float = 0.0) -> TopicMap:
        """Build and save a version of ``map_name`` now, waiting up to ``wait`` seconds for another
        process's build to finish; raises when impossible."""
        maps = self.maps()
        if map_name not in maps:
            raise ValueError(f"no topic map {map_name!r}; configured: {', '.join(sorted(maps)) or 'none'}")
        latest = await self.runner.run(self.store.latest_topic_map, map_name)
        built = await self.build(map_name, maps[map_name], latest)
        deadline = time.monotonic() + wait
        while built is None and time.monotonic() < deadline:
            await asyncio.sleep(min(2.0, self.tick))
            latest = await self.runner.run(self.store.latest_topic_map, map_name)
            built = await self.build(map_name, maps[map_name], latest)
        if built is None:
            state = (await self.runner.run(self.store.states)).get(map_name, ("", "", 0.0))
            raise RuntimeError(f"topic map {map_name} not built: {state[1] or 'no vectors'}")
        return built

    async def build(self, name: str, m: TopicMapConfig, latest: TopicMap | None) -> TopicMap | None:
        lock = f"build:{name}"
        async with self._build_locks.setdefault(name, asyncio.Lock()):
            if not await self.runner.run(self.store.try_lock, lock, self.owner, self.lock_ttl):
                await self._set(name, RECOMPUTING, "another process is building this map; waiting for it")
                return None
            try:
                await self._set(name, RECOMPUTING, f"building from the {m.facet} facet's stored vectors")
                threshold = m.distance_threshold
                topic_map = await asyncio.to_thread(
                    build_topic_map,
                    self.store,
                    name=name,
                    facet=m.facet,
                    embedder_name=self.embedder_name,
                    previous=latest,
                    since=None,
                    settings=clustering_settings(m),
                    distance_threshold=threshold,
                    min_examples_traces=self.auto.min_examples_traces,
                    name_clusters=llm_namer(self.config),
                    identity=m.identity.model_dump(),
                    clock=self.clock,
                )
                if topic_map is None:
                    await self._set(name, WAITING, f"no {m.facet} vectors from embedder {self.embedder_name}")
                    return None
                saved = await self.runner.run(self.store.save_topic_map, topic_map)
                await self._set(
                    name,
                    BACKFILLING,
                    f"version {saved.version} saved ({len(saved.clusters)} topics); "
                    "re-classifying recent traces",
                )
            finally:
                try:
                    await self.runner.run(self.store.unlock, lock, self.owner)
                except StoreError:
                    log.exception("could not release lease %s", lock)
        log.info("topic map %s version %d saved (%d topics)", name, saved.version, len(saved.clusters))
        result = self.on_new_version(saved)
        if inspect.isawaitable(result):
            await result
        return saved

    async def _enough_facets(self, m: TopicMapConfig) -> bool:
        name = m.map_name
        n = await self.runner.run(self.store.count_facets, m.facet, None)
        u = await self.runner.run(self.store.count_unique_facets, m.facet, None)
        if n >= self.auto.min_traces and u >= self.auto.min_unique_facets:
            return True
        await self._set(
            name,
            WAITING,
            f"{n} of {self.auto.min_traces} traces with the {m.facet} facet, "
            f"{u} of {self.auto.min_unique_facets} distinct {m.facet} values",
        )
        return False

    def _idle_reason(self, latest: TopicMap, now: float) -> str:
        return (
            f"version {latest.version} in use; next build {_ago(latest.created_at + self.auto.rerun - now)}"
        )

    async def _set(self, name: str, state: str, reason: str) -> str:
        await self.runner.run(self.store.set_state, name, state, reason)
        for s in STATES:
            metrics.AUTOMATION_STATE.labels(name, s).set(1 if s == state else 0)
        return state


def _dur(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:.0f}s"


def _ago(seconds: float) -> str:
    return f"in {_dur(seconds)}" if seconds > 0 else "now"
