"""``otel-topics serve``: wires config into stages and runs the sidecar until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otel_topics import metrics
from otel_topics.assembler import Assembler
from otel_topics.config import Config, OtlpGrpcExporter, OtlpHttpExporter
from otel_topics.enrich import MapBinding, RootInfo, StoreRunner, TraceEnricher
from otel_topics.exporter import Exporters, MemoryQueue, QueuedExporter
from otel_topics.facets.cache import FacetCache, StoreFacetCache
from otel_topics.model import Enrichment, Signal, TopicMap
from otel_topics.pipeline import Pipeline, PipelineSettings
from otel_topics.spool import DurableLog, PersistentQueue
from otel_topics.stages import Classifier, Embedder, FacetExtractor, Sender
from otel_topics.workers import PreparePool, auto_workers, build_preprocessor

log = logging.getLogger("otel_topics")

SIGNALS: tuple[Signal, ...] = ("traces", "logs", "metrics")


def build_sender(key: str, kind: str, settings: Any) -> Sender:
    """One exporter's sender from its config (type taken from the key, collector style)."""
    from otel_topics import senders

    if kind in ("otlp", "otlp_grpc"):
        tls = settings.tls
        if tls.insecure_skip_verify:
            log.warning(
                "exporters.%s.tls.insecure_skip_verify: gRPC (grpcio) cannot skip certificate "
                "verification; the server certificate is verified (use tls.ca_file for a private CA)",
                key,
            )
        return senders.OtlpGrpcSender(
            settings.target,
            insecure=not settings.use_tls,
            ca_file=tls.ca_file,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            headers=dict(settings.headers),
            compression=settings.compression,
            timeout=settings.timeout,
            name=key,
        )
    if kind in ("otlphttp", "otlp_http"):
        tls = settings.tls
        verify: bool | str = tls.ca_file or not tls.insecure_skip_verify
        cert = (tls.cert_file, tls.key_file) if tls.cert_file and tls.key_file else None
        return senders.OtlpHttpSender(
            settings.url_for("traces"),
            settings.url_for("logs"),
            settings.url_for("metrics"),
            encoding=settings.encoding,
            headers=dict(settings.headers),
            compression=settings.compression,
            timeout=settings.timeout,
            verify=verify,
            cert=cert,
            name=key,
        )
    if kind == "debug":
        return senders.DebugSender(settings.verbosity, name=key)
    if kind == "file":
        return senders.FileSender(
            Path(settings.path),
            max_megabytes=settings.rotation.max_megabytes,
            max_backups=settings.rotation.max_backups,
            name=key,
        )
    raise ValueError(f"unknown exporter type {kind!r}")


def build_extractor(config: Config, cache: FacetCache | None = None) -> FacetExtractor:
    from otel_topics.facets import spec_from_config
    from otel_topics.facets.heuristic import HeuristicFacetExtractor

    t = config.topics
    specs = [spec_from_config(f) for f in t.facets]
    llm = t.llm
    if llm.type == "heuristic":
        return HeuristicFacetExtractor(specs)
    if llm.type == "openai":
        from otel_topics.facets.openai import OpenAIFacetExtractor

        return OpenAIFacetExtractor(
            specs,
            base_url=str(llm.base_url),
            model=str(llm.model),
            api_key=_secret(llm.api_key),
            response_format=llm.response_format,
            timeout=llm.timeout,
            max_retries=llm.max_retries,
            concurrency=llm.concurrency,
            max_tokens=llm.max_tokens,
            temperature=llm.temperature,
            headers=dict(llm.headers),
            cache=cache,
        )
    if llm.type == "llama_cpp":
        from otel_topics.facets.llama import LlamaCppFacetExtractor

        return LlamaCppFacetExtractor(
            specs,
            model_path=Path(str(llm.model_path)),
            max_tokens=llm.max_tokens,
            temperature=llm.temperature,
            cache=cache,
        )
    raise ValueError(f"unknown llm type {llm.type!r}")


def build_embedder(config: Config) -> Embedder:
    from otel_topics import embed

    e = config.topics.embedder
    inner: Embedder
    if e.type == "local":
        inner = embed.LocalEmbedder(batch_size=e.batch_size, threads=e.threads)
    elif e.type == "openai":
        inner = embed.OpenAIEmbedder(
            str(e.base_url),
            str(e.model),
            api_key=_secret(e.api_key),
            timeout=e.timeout,
            batch_size=e.batch_size,
            headers=dict(e.headers),
        )
    elif e.type == "fake":
        inner = embed.HashEmbedder()
    else:
        raise ValueError(f"unknown embedder type {e.type!r}")
    return embed.CachedEmbedder(inner, max_entries=e.cache_size) if e.cache_size > 0 else inner


@dataclass
class Service:
    """A running sidecar. ``start()`` binds everything; ``stop()`` drains and closes."""

    config: Config
    grpc_server: grpc.aio.Server | None = None
    extra_grpc: list[grpc.aio.Server] = field(default_factory=list)
    runners: list[web.AppRunner] = field(default_factory=list)
    pipeline: Pipeline | None = None
    exporters: list[QueuedExporter] = field(default_factory=list)
    spool: DurableLog | None = None
    store: StoreRunner | None = None
    workers: PreparePool | None = None
    classifier: Classifier | None = None
    embedder: Embedder | None = None
    ports: dict[str, int] = field(default_factory=dict)
    _poll: asyncio.Task[None] | None = None
    _housekeeping: asyncio.Task[None] | None = None
    _automation: asyncio.Task[None] | None = None
    _backfills: set[asyncio.Task[int]] = field(default_factory=set)

    async def start(self) -> None:
        from otel_topics.classify import CentroidClassifier
        from otel_topics.receiver import make_http_app, start_grpc_server, start_http_server
        from otel_topics.store import open_store

        cfg = self.config
        t = cfg.topics
        signals = cfg.signals()
        topics_on = {sig for sig in signals if cfg.enriches(sig)}
        exporter_keys: dict[Signal, list[str]] = {}
        for sig in signals:
            keys: list[str] = []
            for p in cfg.pipelines_for(sig).values():
                keys.extend(k for k in p.exporters if k not in keys)
            exporter_keys[sig] = keys

        # exporters: one persistent queue per exporter, shared by the pipelines naming it
        by_key: dict[str, QueuedExporter] = {}
        for key, kind, settings in cfg.exporter_items():
            if not any(key in keys for keys in exporter_keys.values()):
                continue
            sender = build_sender(key, kind, settings)
            queue: PersistentQueue | MemoryQueue
            if isinstance(settings, OtlpGrpcExporter | OtlpHttpExporter):
                q, retry = settings.sending_queue, settings.retry_on_failure
                queue = (
                    PersistentQueue(
                        settings.queue_dir(cfg.data_dir), max_bytes=q.max_bytes, name=f"queue:{key}"
                    )
                    if q.enabled
                    else MemoryQueue(max_bytes=q.max_bytes)
                )
                qe = QueuedExporter(
                    sender,
                    queue=queue,
                    retry_initial=retry.initial_interval,
                    retry_max_interval=retry.max_interval,
                    retry_max_elapsed=retry.max_elapsed_time,
                    retry_enabled=retry.enabled,
                    dead_letter_path=settings.dead_letter_path(cfg.data_dir),
                )
            else:  # debug and file: local, no outage to ride out
                dead = cfg.data_dir / "dead_letter" / f"{_safe(key)}.jsonl"
                qe = QueuedExporter(sender, queue=MemoryQueue(max_bytes=64 << 20), dead_letter_path=dead)
            by_key[key] = qe
        for qe in by_key.values():
            await qe.start()
        self.exporters = list(by_key.values())
        outlets = {sig: Exporters([by_key[k] for k in keys]) for sig, keys in exporter_keys.items()}

        spool = assembler = enricher = None
        if "traces" in topics_on:
            self.store = StoreRunner(open_store(cfg.store_url()))
            spool = DurableLog(
                cfg.spool_dir(),
                max_bytes=t.spool.max_bytes,
                segment_bytes=t.spool.segment_bytes,
                fsync=t.spool.fsync,
                commit_interval=t.spool.commit_interval,
                name="spool",
            )
            await spool.start()
            self.spool = spool
            assembler = Assembler(
                spool, idle=t.assembler.idle, max_wait=t.assembler.max_wait, max_bytes=t.assembler.max_bytes
            )
            assembler.recover()
            preprocessor = build_preprocessor(t.preprocess)
            n_workers = auto_workers() if t.workers is None else t.workers
            if n_workers > 0:
                self.workers = PreparePool(n_workers, t, facets=t.llm.type == "heuristic")
                await self.workers.start()
            self.embedder = build_embedder(cfg)
            classifier = CentroidClassifier(embedder=self.embedder.name)
            self.classifier = classifier
            maps = [MapBinding(m.name or m.facet, m.facet) for m in cfg.topic_maps()]
            enricher = TraceEnricher(
                preprocessor=preprocessor,
                extractor=build_extractor(cfg, StoreFacetCache(self.store.store)),
                embedder=self.embedder,
                classifier=classifier,
                maps=maps,
                store=self.store,
                retry_attempts=t.llm.retry.max_attempts,
                retry_interval=t.llm.retry.interval,
                workers=self.workers,
            )
            await self._load_maps()
            self._poll = asyncio.create_task(self._poll_maps())
            if t.automation.enabled:
                from otel_topics.automation import Automation

                auto = Automation(self.store, cfg, self.embedder.name, lambda _: self._load_maps())
                self._automation = asyncio.create_task(auto.run())
            self._housekeeping = asyncio.create_task(self._purge_loop(t.store.retention))
        pipe_settings = PipelineSettings(
            sampling_rate=t.sampling_rate,
            forward=t.forward,
            attach_to=t.attach_to,
            enrich_timeout=t.enrich_timeout,
            max_concurrent_traces=t.max_concurrent_traces,
            enrich_logs="logs" in topics_on,
        )
        self.pipeline = Pipeline(
            pipe_settings,
            outlets=outlets,
            spool=spool,
            assembler=assembler,
            enricher=enricher,
            store=self.store,
        )
        self.pipeline.start()

        for rkey, receiver in cfg.receivers.items():
            flags = {
                sig: any(rkey in p.receivers for p in cfg.pipelines_for(sig).values()) for sig in SIGNALS
            }
            if not any(flags.values()):
                continue
            protocols = receiver.protocols
            if protocols.grpc is not None:
                g = protocols.grpc
                server, port = await start_grpc_server(
                    g.endpoint,
                    self.pipeline,
                    max_recv_msg_size=g.max_recv_msg_size,
                    extra=(lambda srv: self._add_api(srv, enricher)) if self.grpc_server is None else None,
                    traces=flags["traces"],
                    logs=flags["logs"],
                    metrics=flags["metrics"],
                )
                if self.grpc_server is None:
                    self.grpc_server = server
                else:
                    self.extra_grpc.append(server)
                self.ports.setdefault("grpc", port)
                log.info("%s: OTLP/gRPC listening on %s", rkey, _with_port(g.endpoint, port))
            if protocols.http is not None:
                h = protocols.http
                app = make_http_app(
                    self.pipeline,
                    max_request_body_size=h.max_request_body_size,
                    traces=flags["traces"],
                    logs=flags["logs"],
                    metrics=flags["metrics"],
                )
                runner = await start_http_server(h.endpoint, app)
                self.runners.append(runner)
                self.ports.setdefault("http", _bound_port(runner))
                log.info("%s: OTLP/HTTP listening on %s", rkey, _with_port(h.endpoint, _bound_port(runner)))
        addr = cfg.service.telemetry.metrics.address
        if addr:
            runner = await start_http_server(addr, self._telemetry_app())
            self.runners.append(runner)
            self.ports["telemetry"] = _bound_port(runner)
            log.info(
                "metrics and health on http://%s/metrics, /health", _with_port(addr, self.ports["telemetry"])
            )

    def _add_api(self, server: grpc.aio.Server, enricher: TraceEnricher | None) -> None:
        if enricher is None or self.store is None or self.embedder is None or self.classifier is None:
            return
        from otel_topics.api import TopicsServicer, add_topics_service

        add_topics_service(server, TopicsServicer(enricher, self.embedder, self.classifier, self.store.store))

    async def _load_maps(self) -> None:
        assert self.store is not None and self.classifier is not None
        store = self.store.store
        for m in self.config.topic_maps():
            current = self.classifier.current(m.name) if hasattr(self.classifier, "current") else None
            latest = await self.store.run(store.latest_topic_map, m.name)
            if latest is not None and (current is None or current.version != latest.version):
                try:
                    self.classifier.swap(latest)
                except ValueError as exc:
                    log.error("topic map %s version %d not loaded: %s", m.name, latest.version, exc)
                    metrics.ERRORS.labels("classify").inc()
                    continue
                log.info(
                    "topic map %s version %d loaded (%d clusters)",
                    m.name,
                    latest.version,
                    len(latest.clusters),
                )
                self._start_backfill(latest)

    def _start_backfill(self, topic_map: TopicMap) -> None:
        """Re-classify recent traces with a version just swapped in (once per version, store-wide)."""
        from otel_topics.backfill import backfill

        window = self.config.topics.automation.backfill_window
        if self.store is None or window <= 0:
            return

        async def emit(_: str, root: RootInfo, enrichment: Enrichment) -> None:
            assert self.pipeline is not None  # set in start() before any task runs
            await self.pipeline.emit_classification(None, enrichment, source="backfill", root=root)

        task = asyncio.create_task(backfill(self.store, topic_map, window=window, emit=emit))
        self._backfills.add(task)
        task.add_done_callback(self._backfill_done)

    def _backfill_done(self, task: asyncio.Task[int]) -> None:
        self._backfills.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("backfill failed: %r", task.exception())
            metrics.ERRORS.labels("store").inc()

    async def _poll_maps(self, every: float = 5.0) -> None:
        """Hot-swap new topic map versions, whichever process drew them."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._load_maps()
            except Exception:
                log.exception("could not load topic maps")
                metrics.ERRORS.labels("classify").inc()

    async def _purge_loop(self, retention: float, every: float = 3600.0) -> None:
        """Retention by age: drop stored traces, facets, vectors and classifications older than it."""
        if retention <= 0 or self.store is None:
            return
        while True:
            try:
                removed = await self.store.run(self.store.store.purge, time.time() - retention)
                if removed:
                    log.info("retention: removed %d traces older than %.0fs", removed, retention)
            except Exception:
                log.exception("retention purge failed")
                metrics.ERRORS.labels("store").inc()
            await asyncio.sleep(every)

    def _telemetry_app(self) -> web.Application:
        app = web.Application()

        async def metrics_handler(_: web.Request) -> web.Response:
            body = generate_latest(metrics.REGISTRY)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def health(_: web.Request) -> web.Response:
            return web.json_response(self.health())

        app.router.add_get("/metrics", metrics_handler)
        app.router.add_get("/health", health)
        return app

    def health(self) -> Mapping[str, Any]:
        return {
            "status": "ok",
            "spool_bytes": self.spool.bytes_on_disk if self.spool else 0,
            "traces_pending": int(metrics.TRACES_PENDING._value.get()),
            "queues": {qe.sender.name: qe.queue.bytes for qe in self.exporters},
        }

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop receiving, release pending traces, drain exporter queues (what is left stays on disk)."""
        for server in [self.grpc_server, *self.extra_grpc]:
            if server is not None:
                await server.stop(grace=2.0)
        for runner in self.runners:
            await runner.cleanup()
        for task in (self._poll, self._housekeeping, self._automation, *self._backfills):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if self.pipeline is not None:
            await self.pipeline.drain(timeout / 2)
        for qe in self.exporters:
            await qe.drain(timeout / 2)
        if self.spool is not None:
            await self.spool.close()
        if self.workers is not None:
            self.workers.close()
        if self.store is not None:
            self.store.close()


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _safe(key: str) -> str:
    return key.replace("/", "_")


def _bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1]) if runner.addresses else 0


def _with_port(endpoint: str, port: int) -> str:
    host = endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint
    return f"{host}:{port}"


async def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT; then drain and exit 0."""
    service = Service(config)
    try:
        await service.start()
    except (OSError, RuntimeError) as exc:
        log.error("could not start: %s", exc)
        await service.stop(timeout=5)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("otel-topics ready: %s", json.dumps(service.ports))
    await stop.wait()
    log.info("shutting down: draining queues")
    await service.stop()
    return 0
