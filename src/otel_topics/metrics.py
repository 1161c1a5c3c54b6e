"""The service's own Prometheus metrics. Every metric here is listed in the README's Metrics section.

All metrics live in one registry, :data:`REGISTRY`, served on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
_NS = "otel_topics"

# receiver
RECEIVED_ITEMS = Counter(
    "received_items",
    "Items accepted by the receiver (spans, log records, metric data points).",
    ["signal", "transport"],
    namespace=_NS,
    registry=REGISTRY,
)
REFUSED_ITEMS = Counter(
    "refused_items",
    "Items the receiver refused (invalid, undecodable, backpressure).",
    ["signal", "transport", "reason"],
    namespace=_NS,
    registry=REGISTRY,
)
RECEIVER_REQUESTS = Counter(
    "receiver_requests",
    "OTLP requests handled, by outcome (ok, partial, invalid, too_large, backpressure).",
    ["signal", "transport", "outcome"],
    namespace=_NS,
    registry=REGISTRY,
)

# spool
SPOOL_BYTES = Gauge("spool_bytes", "Bytes held in the spool on disk.", namespace=_NS, registry=REGISTRY)
SPOOL_CAPACITY_BYTES = Gauge(
    "spool_capacity_bytes", "Disk cap of the spool.", namespace=_NS, registry=REGISTRY
)
SPOOL_COMMITS = Counter(
    "spool_commits", "Group commits (one fsync each) of the spool.", namespace=_NS, registry=REGISTRY
)

# assembler
TRACES_PENDING = Gauge(
    "traces_pending", "Traces being assembled (not yet released).", namespace=_NS, registry=REGISTRY
)
PENDING_BYTES = Gauge(
    "pending_bytes", "Bytes of spans of traces being assembled.", namespace=_NS, registry=REGISTRY
)
TRACES_RELEASED = Counter(
    "traces_released",
    "Traces released by the assembler, by reason (idle, max_wait, max_bytes, shutdown).",
    ["reason"],
    namespace=_NS,
    registry=REGISTRY,
)
TRACES_REOPENED = Counter(
    "traces_reopened",
    "Traces that received spans after they had been released.",
    namespace=_NS,
    registry=REGISTRY,
)

# enrichment
ENRICHED_TRACES = Counter(
    "enriched_traces",
    "Traces through the intelligence layer, by otel_topics.status value.",
    ["status"],
    namespace=_NS,
    registry=REGISTRY,
)
FACET_LATENCY = Histogram(
    "facet_latency_seconds",
    "Time to derive all facets of one trace.",
    ["llm"],
    namespace=_NS,
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EMBED_LATENCY = Histogram(
    "embed_latency_seconds",
    "Time to embed one batch of facet texts.",
    ["embedder"],
    namespace=_NS,
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LLM_REQUESTS = Counter(
    "llm_requests",
    "Chat calls to the facet LLM, by outcome (ok, retry, error, cache_hit).",
    ["outcome"],
    namespace=_NS,
    registry=REGISTRY,
)
EMBED_CACHE = Counter(
    "embed_cache",
    "Embedding cache lookups, by result (hit, miss).",
    ["result"],
    namespace=_NS,
    registry=REGISTRY,
)
CLASSIFIED_TRACES = Counter(
    "classified_traces",
    "Traces classified, by topic map and cluster id (no_match included).",
    ["map", "cluster_id"],
    namespace=_NS,
    registry=REGISTRY,
)
RETRY_PENDING = Gauge(
    "retry_pending",
    "Stored conversations due for a facet retry at the last poll (at most 16 a poll).",
    namespace=_NS,
    registry=REGISTRY,
)

# exporter
EXPORTED_ITEMS = Counter(
    "exported_items",
    "Items delivered downstream (spans, log records, metric data points).",
    ["exporter", "signal"],
    namespace=_NS,
    registry=REGISTRY,
)
EXPORT_FAILURES = Counter(
    "export_failures",
    "Failed send attempts, by kind (retryable, permanent).",
    ["exporter", "signal", "kind"],
    namespace=_NS,
    registry=REGISTRY,
)
EXPORT_QUEUE_BYTES = Gauge(
    "export_queue_bytes",
    "Bytes waiting in an exporter's persistent queue.",
    ["exporter"],
    namespace=_NS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "dead_letter_items",
    "Items a backend refused permanently, written to the dead-letter file.",
    ["exporter", "signal"],
    namespace=_NS,
    registry=REGISTRY,
)
EXPORT_REJECTED_ITEMS = Counter(
    "export_rejected_items",
    "Items a backend rejected in a partial success (logged, not retried).",
    ["exporter", "signal"],
    namespace=_NS,
    registry=REGISTRY,
)

AUTOMATION_STATE = Gauge(
    "automation_state",
    "1 for the current automation state of a topic map, 0 for its other states.",
    ["map", "state"],
    namespace=_NS,
    registry=REGISTRY,
)

# generic
ERRORS = Counter(
    "errors",
    "Errors by component (receiver, spool, assembler, preprocess, facets, embed, classify, "
    "store, enrich, workers, exporter, api).",
    ["component"],
    namespace=_NS,
    registry=REGISTRY,
)
