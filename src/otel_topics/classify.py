"""Nearest-centroid classification against the current version of each topic map
(the :class:`otel_topics.stages.Classifier` protocol).

Each map version becomes a FAISS ``IndexFlatIP`` over its unit centroids. A vector is assigned to
the cluster with the largest inner product; the cosine distance is ``1 - ip``. Within the
cluster's threshold (its own ``threshold``, else the map's ``distance_threshold``) the result
carries the cluster's name and id; beyond it, ``no_match`` with the distance to the nearest.

``swap`` builds the new version's index completely before it replaces one reference under a
lock, so threads classifying meanwhile see either the old version or the new one, never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import faiss
import numpy as np
import numpy.typing as npt

from otel_topics import metrics
from otel_topics.model import NO_MATCH, Classification, Cluster, TopicMap
from otel_topics.stages import Vectors

__all__ = [
    "AUTO_THRESHOLD_DEFAULT",
    "AUTO_THRESHOLD_MAX",
    "AUTO_THRESHOLD_MIN",
    "AUTO_THRESHOLD_QUANTILE",
    "CentroidClassifier",
    "auto_threshold",
]

AUTO_THRESHOLD_QUANTILE: Final = 0.9
AUTO_THRESHOLD_MIN: Final = 0.2
AUTO_THRESHOLD_MAX: Final = 0.8
AUTO_THRESHOLD_DEFAULT: Final = 0.5
EMPTY_MAP_DISTANCE: Final = 2.0
"""Distance reported when a map has no clusters at all (the largest cosine distance)."""


def auto_threshold(
    clusters: Sequence[Cluster],
    *,
    quantile: float = AUTO_THRESHOLD_QUANTILE,
    low: float = AUTO_THRESHOLD_MIN,
    high: float = AUTO_THRESHOLD_MAX,
    default: float = AUTO_THRESHOLD_DEFAULT,
) -> float:
    """The map-wide distance threshold for ``distance_threshold: auto``.

    Rule: the ``quantile`` (default 0.9, linear interpolation) of the clusters' radii -- each
    radius being the cosine distance from the centroid that covers most of the cluster's
    members -- clamped to ``[low, high]`` (default [0.2, 0.8]). Clusters with no measured radius
    (``radius <= 0`` or not finite) are ignored; with none left the result is ``default`` (0.5).
    So a trace as far from its nearest centroid as the members of nine clusters in ten are from
    theirs still matches; farther out it is ``no_match``.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {quantile}")
    if not 0.0 <= low <= high <= 2.0:
        raise ValueError(f"need 0 <= low <= high <= 2, got low={low}, high={high}")
    radii = np.array([c.radius for c in clusters], dtype=np.float64)
    radii = radii[np.isfinite(radii) & (radii > 0)]
    value = float(np.quantile(radii, quantile)) if radii.size else default
    return float(min(max(value, low), high))


@dataclass(frozen=True, slots=True)
class _Version:
    """Everything ``classify`` needs for one map version; immutable once built."""

    topic_map: TopicMap
    index: Any  # faiss.IndexFlatIP over the unit centroids
    dimension: int
    ids: tuple[str, ...]
    names: tuple[str, ...]
    thresholds: npt.NDArray[np.float64]  # per cluster, the effective threshold
    counters: tuple[Any, ...]  # CLASSIFIED_TRACES children, one per cluster
    no_match_counter: Any


class CentroidClassifier:
    """Holds the current version of each topic map and classifies vectors against it.

    ``embedder``, when given, is the id of the embedding space the vectors come from; ``swap``
    then refuses a map whose ``embedder`` is set to something else (its centroids would be
    meaningless). Thread-safe: ``classify`` may run on many threads while ``swap`` replaces a map.
    """

    def __init__(self, embedder: str | None = None) -> None:
        self.embedder = embedder
        self._lock = threading.Lock()
        self._versions: dict[str, _Version] = {}

    # -- topic maps ------------------------------------------------------------------------------

    def swap(self, topic_map: TopicMap) -> None:
        """Make ``topic_map`` the current version of its map (added if new)."""
        version = self._build(topic_map)
        with self._lock:
            self._versions[topic_map.name] = version

    def remove(self, name: str) -> bool:
        """Forget a map. Returns whether it was there."""
        with self._lock:
            return self._versions.pop(name, None) is not None

    def maps(self) -> list[str]:
        """Names of the maps that have a current version, sorted."""
        with self._lock:
            return sorted(self._versions)

    def current(self, name: str) -> TopicMap | None:
        """The current version of a map, or None."""
        with self._lock:
            version = self._versions.get(name)
        return version.topic_map if version is not None else None

    def _build(self, tm: TopicMap) -> _Version:
        where = f"topic map {tm.name!r} version {tm.version}"
        if self.embedder and tm.embedder and tm.embedder != self.embedder:
            raise ValueError(
                f"{where} was built with embedder {tm.embedder!r}; this classifier receives "
                f"vectors from {self.embedder!r}"
            )
        if not np.isfinite(tm.distance_threshold) or tm.distance_threshold < 0:
            raise ValueError(
                f"{where}: distance_threshold must be a number >= 0, got {tm.distance_threshold}"
            )
        dims = {len(c.centroid) for c in tm.clusters}
        if len(dims) > 1:
            raise ValueError(f"{where}: centroids have different lengths {sorted(dims)}")
        dimension = dims.pop() if dims else 0
        if tm.clusters and dimension == 0:
            raise ValueError(f"{where}: centroids are empty")
        centroids = np.zeros((len(tm.clusters), dimension), dtype=np.float32)
        thresholds = np.zeros(len(tm.clusters), dtype=np.float64)
        seen: set[str] = set()
        for row, cluster in enumerate(tm.clusters):
            if cluster.id in seen or not cluster.id:
                raise ValueError(f"{where}: cluster id {cluster.id!r} is empty or repeated")
            seen.add(cluster.id)
            centroids[row] = cluster.centroid
            norm = float(np.linalg.norm(centroids[row]))
            if not np.isfinite(norm) or norm == 0.0:
                raise ValueError(f"{where}: cluster {cluster.id!r} has a zero or non-finite centroid")
            centroids[row] /= norm
            threshold = tm.distance_threshold if cluster.threshold is None else cluster.threshold
            if not np.isfinite(threshold) or threshold < 0:
                raise ValueError(f"{where}: cluster {cluster.id!r} threshold must be >= 0, got {threshold}")
            thresholds[row] = threshold
        index = faiss.IndexFlatIP(max(dimension, 1))
        if tm.clusters:
            index.add(centroids)
        return _Version(
            topic_map=tm,
            index=index,
            dimension=dimension,
            ids=tuple(c.id for c in tm.clusters),
            names=tuple(c.name for c in tm.clusters),
            thresholds=thresholds,
            counters=tuple(metrics.CLASSIFIED_TRACES.labels(tm.name, c.id) for c in tm.clusters),
            no_match_counter=metrics.CLASSIFIED_TRACES.labels(tm.name, NO_MATCH),
        )

    # -- classification --------------------------------------------------------------------------

    def classify(self, map_name: str, vectors: Vectors) -> list[Classification]:
        """Nearest-centroid assignment of each row of ``vectors`` (shape ``(n, d)``, or ``(d,)``
        for one) against the current version of ``map_name``. Raises KeyError for an unknown map
        and ValueError for vectors of the wrong shape."""
        with self._lock:
            version = self._versions.get(map_name)
        if version is None:
            known = ", ".join(sorted(self._versions)) or "none"
            raise KeyError(f"no topic map named {map_name!r} is loaded in the classifier (loaded: {known})")
        queries = np.array(vectors, dtype=np.float32, copy=True, ndmin=2, order="C")
        n = queries.shape[0]
        if queries.ndim != 2:
            raise ValueError(f"classify {map_name!r}: vectors must be 2-D (n, d), got shape {queries.shape}")
        tm = version.topic_map
        if n == 0:
            return []
        if not version.ids:
            version.no_match_counter.inc(n)
            return [
                Classification(tm.name, NO_MATCH, "", EMPTY_MAP_DISTANCE, tm.version, "online")
                for _ in range(n)
            ]
        if queries.shape[1] != version.dimension:
            raise ValueError(
                f"classify {map_name!r}: vectors have dimension {queries.shape[1]}, topic map "
                f"version {tm.version} has {version.dimension}"
            )
        if not np.isfinite(queries).all():
            raise ValueError(f"classify {map_name!r}: vectors contain NaN or infinity")
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        np.divide(queries, norms, out=queries, where=norms > 0)
        sims, rows = version.index.search(queries, 1)
        out: list[Classification] = []
        for sim, row in zip(sims[:, 0].tolist(), rows[:, 0].tolist(), strict=True):
            distance = min(max(1.0 - sim, 0.0), 2.0)
            if row >= 0 and distance <= version.thresholds[row]:
                version.counters[row].inc()
                out.append(
                    Classification(
                        tm.name, version.names[row], version.ids[row], distance, tm.version, "online"
                    )
                )
            else:
                version.no_match_counter.inc()
                out.append(Classification(tm.name, NO_MATCH, "", distance, tm.version, "online"))
        return out
