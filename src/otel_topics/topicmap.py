"""Build one topic map version from a facet's stored vectors and texts.

``build_topic_map`` is synchronous and CPU-heavy (clustering); callers run it in a thread. It loads
the newest ``sample`` vectors of the facet (with their texts), clusters them, finds keywords, names
each cluster, picks exemplars, gives each cluster a stable id (reconciled with the previous version)
and resolves the distance threshold. It returns the :class:`TopicMap` to save; ``store.save_topic_map``
assigns the version number.

Privacy: a cluster gets exemplars (and a name built from a member's text) only when at least
``min_examples_traces`` distinct traces are in it (the aggregation threshold of Clio); smaller
clusters are named from their keywords alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from otel_topics.classify import AUTO_THRESHOLD_MAX, AUTO_THRESHOLD_MIN, auto_threshold
from otel_topics.clustering import ClusteringSettings, cluster
from otel_topics.keywords import keywords
from otel_topics.model import Cluster, TopicMap
from otel_topics.naming import ClusterName, ClusterSample, KeywordNamer
from otel_topics.reconcile import Candidate, Previous, reconcile, with_nearest_members
from otel_topics.store import Store

log = logging.getLogger(__name__)

NameClusters = Callable[[Sequence[ClusterSample]], list[ClusterName]]
"""Names clusters, one per sample, in order (synchronous: it runs in the build thread). The default
is :meth:`KeywordNamer.name_sync`; an LLM namer can be plugged in here (e.g. wrapping
``LLMNamer.name`` with ``asyncio.run``)."""

MAX_EXEMPLARS = 5


def build_topic_map(
    store: Store,
    *,
    name: str,
    facet: str,
    embedder_name: str,
    previous: TopicMap | None,
    since: float | None,
    settings: ClusteringSettings | None = None,
    distance_threshold: float | Literal["auto"] = "auto",
    min_examples_traces: int = 5,
    sample: int = 50_000,
    per_cluster_threshold: bool = False,
    name_clusters: NameClusters | None = None,
    identity: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> TopicMap | None:
    """A new version of map ``name`` (version 0: the store assigns it), or None with no vectors.

    ``per_cluster_threshold``: each cluster also gets its own threshold, its radius clamped to the
    ``auto`` bounds; otherwise clusters use the map's threshold.
    """
    ids, matrix = store.vectors(facet, embedder_name, since, sample)
    texts = dict(store.facet_values(facet, since, max(sample * 2, len(ids) * 2)))
    keep = [i for i, t in enumerate(ids) if t in texts]
    if not keep:
        return None
    trace_ids = [ids[i] for i in keep]
    x = _unit_rows(matrix[keep])
    docs = [texts[t] for t in trace_ids]
    result = cluster(x, settings=settings or ClusteringSettings())
    labels = result.labels
    words = keywords(docs, labels.tolist())

    samples: list[ClusterSample] = []
    candidates: list[Candidate] = []
    for k in range(result.n_clusters):
        members = np.flatnonzero(labels == k)
        member_ids = frozenset(trace_ids[i] for i in members)
        exemplars = (
            _nearest_texts(x, members, result.centroids[k], docs)
            if len(member_ids) >= min_examples_traces
            else []
        )
        contrast = (
            _nearest_texts(x, np.flatnonzero(labels != k), result.centroids[k], docs)[:4] if exemplars else []
        )
        samples.append(
            ClusterSample(key=str(k), exemplars=exemplars, contrast=contrast, keywords=words.get(k, []))
        )
        candidates.append(
            Candidate(result.centroids[k], int(result.sizes[k]), members=member_ids, exemplars=exemplars)
        )
    names = (name_clusters or KeywordNamer().name_sync)(samples)
    if len(names) != len(samples):
        raise ValueError(
            f"topic map {name}: the namer returned {len(names)} names for {len(samples)} clusters"
        )

    prev: list[Previous] = []
    if previous is not None and previous.clusters and previous.embedder in ("", embedder_name):
        dims = {len(c.centroid) for c in previous.clusters}
        if dims == {x.shape[1]}:
            prev = with_nearest_members([Previous.from_cluster(c) for c in previous.clusters], trace_ids, x)
        else:
            log.warning(
                "topic map %s: previous centroids have dimension %s, now %d; new ids", name, dims, x.shape[1]
            )
    ident = identity or {}
    assignments = reconcile(prev, candidates, **ident)

    clusters = [
        Cluster(
            id=a.id,
            name=n.name,
            centroid=[float(v) for v in result.centroids[k]],
            size=int(result.sizes[k]),
            description=n.description if samples[k].exemplars else "",
            keywords=list(samples[k].keywords),
            radius=float(result.radii[k]),
            exemplars=list(samples[k].exemplars),
            parents=list(a.parents),
        )
        for k, (a, n) in enumerate(zip(assignments, names, strict=True))
    ]
    threshold = auto_threshold(clusters) if distance_threshold == "auto" else float(distance_threshold)
    if per_cluster_threshold:
        for c in clusters:
            if c.radius > 0:
                c.threshold = min(max(c.radius, AUTO_THRESHOLD_MIN), AUTO_THRESHOLD_MAX)
    log.info(
        "topic map %s: %d clusters from %d %s texts (%.1fs clustering, %.0f%% noise)",
        name,
        len(clusters),
        len(trace_ids),
        facet,
        result.seconds,
        100 * result.noise_fraction,
    )
    return TopicMap(
        name=name,
        facet=facet,
        version=0,
        clusters=clusters,
        distance_threshold=threshold,
        embedder=embedder_name,
        created_at=clock(),
    )


def _unit_rows(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _nearest_texts(
    x: npt.NDArray[np.float32], members: npt.NDArray[np.intp], centroid: npt.ArrayLike, docs: Sequence[str]
) -> list[str]:
    """Up to MAX_EXEMPLARS distinct member texts, nearest the centroid first (the first is the medoid)."""
    order = members[np.argsort(-(x[members] @ np.asarray(centroid, dtype=np.float32)), kind="stable")]
    out: list[str] = []
    seen: set[str] = set()
    for i in order.tolist():
        key = " ".join(docs[i].split()).casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(docs[i])
        if len(out) == MAX_EXEMPLARS:
            break
    return out
