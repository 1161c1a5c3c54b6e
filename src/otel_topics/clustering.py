"""Clustering of one facet's vectors into topics: :func:`cluster`.

Default pipeline (chosen from measurements on labelled intent data, see docs/readme/clustering.md):

1. At most ``sample_size`` vectors are clustered; the others are assigned at the end.
2. At most ``fit_size`` of those go through the density step: an exact FAISS kNN graph, UMAP (cosine,
   ``n_neighbors`` 30, 5 dimensions, ``min_dist`` 0), then HDBSCAN (the ``hdbscan`` package, excess of
   mass) with a minimum cluster size that grows with the number of points (``5 * (n / 1000) ** 0.9``,
   at least 5).
3. Every cluster gets a unit centroid in the ORIGINAL embedding space (mean of its members).
   Points left as noise, and points that skipped the density step, join the nearest centroid if
   they lie within that cluster's extent (the ``assign_quantile`` of its members' distances).
4. Centroids, radii (``radius_quantile`` of the members' cosine distances) and medoids are computed
   from the final members; clusters are numbered by decreasing size.

The result is deterministic for a given ``rng_seed`` (UMAP runs single-threaded with a seed, HDBSCAN
is deterministic, sampling from ``numpy.random.default_rng(rng_seed)``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from otel_topics import clustering_backends as backends
from otel_topics.clustering_backends import ClusteringError

__all__ = [
    "ClusteringError",
    "ClusteringResult",
    "ClusteringSettings",
    "assign",
    "auto_min_cluster_size",
    "auto_n_clusters",
    "cluster",
]

Method = Literal["hdbscan", "kmeans", "agglomerative"]
Reduction = Literal["umap", "pca", "none"]
Noise = Literal["radius", "keep"]
UmapInit = Literal["spectral", "random", "pca"]
Auto = Literal["auto"]
Labels = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]

METHODS: Final = ("hdbscan", "kmeans", "agglomerative")
REDUCTIONS: Final = ("umap", "pca", "none")
_CHUNK: Final = 16_384  # rows per block when comparing vectors with centroids


def auto_min_cluster_size(n: int) -> int:
    """HDBSCAN's minimum cluster size for ``n`` points: ``round(5 * (n / 1000) ** 0.9)``, at least 5.

    1,000 points -> 5, 3,080 -> 14, 10,000 -> 40, 27,500 -> 99. Fitted on BANKING77 and SNIPS
    subsets of 1k-27k points, where the best size grew almost linearly with n (a fixed 10
    over-splits 10k points into 300+ clusters; a fixed 30 merges intents below 3k points)."""
    return max(5, round(5.0 * math.pow(max(n, 1) / 1000.0, 0.9)))


def auto_n_clusters(n: int) -> int:
    """k for k-means / agglomerative with ``n_clusters="auto"``: about three minimum cluster sizes per
    cluster, ``n / (3 * auto_min_cluster_size(n))``, between 2 and ``n`` (67 at 1,000 points, 73 at
    3,080, 83 at 10,000)."""
    if n <= 2:
        return max(n, 1)
    return int(min(n, max(2, round(n / (3 * auto_min_cluster_size(n))))))


@dataclass(frozen=True, slots=True)
class ClusteringSettings:
    """How :func:`cluster` works. Every default was measured (docs/readme/clustering.md)."""

    method: Method = "hdbscan"
    """``hdbscan`` (finds the number of topics and leaves outliers as noise), ``kmeans`` or
    ``agglomerative`` (Ward; both need ``n_clusters``). Default: hdbscan."""
    reduction: Reduction = "umap"
    """What the clustering step sees: ``umap`` (cosine, to ``n_components``), ``pca`` or ``none``
    (the raw unit vectors). Default: umap -- HDBSCAN on PCA(5) or on raw 384-d vectors finds far fewer
    intents."""
    n_components: int = 5
    """Dimensions after UMAP / PCA. Default: 5 (10 was no better and 1.5-2x slower)."""
    n_neighbors: int = 30
    """UMAP's neighbourhood. Default: 30 (+0.01 ARI over 15 on BANKING77 test, same elsewhere)."""
    min_dist: float = 0.0
    """UMAP's minimum distance between embedded points; 0 packs clusters tightly. Default: 0.0."""
    n_epochs: int | Auto = "auto"
    """UMAP optimisation epochs; ``auto`` = 200 up to 5,000 fitted points, else 100 (no loss of
    ARI measured, half the time)."""
    umap_init: UmapInit | Auto = "auto"
    """UMAP's starting layout; ``auto`` = ``spectral`` up to 5,000 fitted points, else ``random``
    (spectral costs ~0.5 s at 3k points but ~5 s at 8k, for no better ARI there)."""
    min_cluster_size: int | Auto = "auto"
    """HDBSCAN's smallest cluster; ``auto`` = :func:`auto_min_cluster_size` of the fitted points."""
    min_samples: int = 5
    """HDBSCAN's density smoothing (capped at the minimum cluster size). Default: 5 (less noise than
    HDBSCAN's own default, equal to the minimum cluster size, at equal ARI)."""
    n_clusters: int | Auto = "auto"
    """k for ``kmeans`` / ``agglomerative``; ``auto`` = :func:`auto_n_clusters`. Unused by hdbscan."""
    sample_size: int = 50_000
    """At most this many vectors are clustered (a seeded random sample); the rest are assigned to the
    nearest centroid within its extent. Default: 50,000."""
    fit_size: int = 8_000
    """At most this many of the sample go through the reduction and the clustering algorithm; the
    rest of the sample joins the nearest centroid within its extent, and the centroids are then
    recomputed from all members. Default: 8,000, so 50,000 vectors cluster in a few seconds."""
    noise: Noise = "radius"
    """``radius``: a noise point within a cluster's extent of its nearest centroid joins it;
    ``keep``: HDBSCAN's noise stays noise. Default: radius."""
    radius_quantile: float = 0.9
    """A cluster's reported radius is this quantile of its members' cosine distances to the centroid.
    Default: 0.9 (the classifier's ``distance_threshold: auto`` builds on it)."""
    assign_quantile: float = 0.98
    """A point joins a cluster when its cosine distance to the centroid is within this quantile of the
    cluster's members' distances (measured before the point joined). Default: 0.98 -- within the
    cluster's extent, ignoring its 2% farthest members; 0.9 left ~10% of new points as noise."""
    max_clusters: int | None = None
    """Upper bound on the number of clusters; the closest centroids (cosine) are merged until it holds.
    Default: None (no bound)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.reduction not in REDUCTIONS:
            problems.append(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        if self.umap_init not in ("auto", "spectral", "random", "pca"):
            problems.append(f"umap_init must be auto, spectral, random or pca, got {self.umap_init!r}")
        if self.noise not in ("radius", "keep"):
            problems.append(f"noise must be 'radius' or 'keep', got {self.noise!r}")
        for name in ("n_components", "n_neighbors", "min_samples", "sample_size", "fit_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name, low in (("n_epochs", 1), ("min_cluster_size", 2), ("n_clusters", 1)):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                problems.append(f"{name} must be 'auto' or an integer >= {low}, got {value!r}")
        if self.n_neighbors < 2:
            problems.append(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if not (isinstance(self.min_dist, int | float) and 0.0 <= self.min_dist <= 1.0):
            problems.append(f"min_dist must be within [0, 1], got {self.min_dist!r}")
        for name in ("radius_quantile", "assign_quantile"):
            q = getattr(self, name)
            if not (isinstance(q, int | float) and 0.0 < q <= 1.0):
                problems.append(f"{name} must be within (0, 1], got {q!r}")
        if self.max_clusters is not None and (
            isinstance(self.max_clusters, bool)
            or not isinstance(self.max_clusters, int)
            or self.max_clusters < 1
        ):
            problems.append(f"max_clusters must be None or a positive integer, got {self.max_clusters!r}")
        if problems:
            raise ValueError("invalid ClusteringSettings: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ClusteringResult:
    """Clusters of ``n`` vectors. Cluster ``i`` is row ``i`` of every per-cluster array; clusters are
    numbered by decreasing size."""

    labels: Labels
    """(n,) cluster of each vector, -1 = noise."""
    centroids: Floats
    """(k, d) unit mean of each cluster's members, in the original embedding space."""
    radii: Floats
    """(k,) cosine distance from the centroid covering ``radius_quantile`` of the members."""
    sizes: Labels
    """(k,) number of members."""
    medoids: Labels
    """(k,) index (into the input) of the member closest to the centroid."""
    seconds: float
    """Wall time of :func:`cluster`."""
    settings: ClusteringSettings
    """The settings used, with every ``auto`` resolved to the number chosen."""
    fitted: int = 0
    """How many vectors went through the reduction and the clustering algorithm."""

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def noise_fraction(self) -> float:
        n = self.labels.shape[0]
        return float(np.count_nonzero(self.labels < 0) / n) if n else 0.0


def cluster(
    vectors: npt.ArrayLike, *, settings: ClusteringSettings | None = None, rng_seed: int = 42
) -> ClusteringResult:
    """Cluster the rows of ``vectors`` (float32 unit rows, shape (n, d)); see the module docstring."""
    started = time.perf_counter()
    settings = settings or ClusteringSettings()
    x = _check_vectors(vectors)
    n = x.shape[0]
    rng = np.random.default_rng(rng_seed)
    sample = _subset(n, settings.sample_size, rng)
    fit = sample[_subset(sample.size, settings.fit_size, rng)]
    settings = _resolve(settings, fit.size)

    labels = np.full(n, -1, dtype=np.int64)
    labels[fit] = _fit_labels(x[fit], settings, rng_seed)
    if labels[fit].max(initial=-1) < 0 and fit.size:  # nothing dense enough: one topic
        labels[fit] = 0

    # Noise of the fit and the unfitted part of the sample join the nearest cluster within its extent.
    pending = sample[labels[sample] < 0]
    if settings.noise == "keep":
        pending = np.setdiff1d(sample, fit, assume_unique=True)
    centroids = _centroids(x, labels)
    reach = _radii(x, labels, centroids, settings.assign_quantile)
    labels[pending] = assign(x[pending], centroids, reach)

    if settings.max_clusters is not None and centroids.shape[0] > settings.max_clusters:
        labels = _merge_to(x, labels, settings.max_clusters)

    # Vectors outside the sample: the same rule against the final clusters.
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    if rest.size:
        centroids = _centroids(x, labels)
        reach = _radii(x, labels, centroids, settings.assign_quantile)
        labels[rest] = assign(x[rest], centroids, reach)

    labels = _by_size(labels)
    centroids = _centroids(x, labels)
    radii = _radii(x, labels, centroids, settings.radius_quantile)
    k = centroids.shape[0]
    return ClusteringResult(
        labels=labels,
        centroids=centroids,
        radii=radii,
        sizes=np.bincount(labels[labels >= 0], minlength=k).astype(np.int64),
        medoids=_medoids(x, labels, centroids),
        seconds=time.perf_counter() - started,
        settings=settings,
        fitted=int(fit.size),
    )


def assign(vectors: npt.ArrayLike, centroids: npt.ArrayLike, radii: npt.ArrayLike) -> Labels:
    """Nearest centroid (largest inner product) of each unit row, or -1 when its cosine distance to
    that centroid exceeds the centroid's radius."""
    x = np.asarray(vectors, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    r = np.asarray(radii, dtype=np.float32)
    out = np.full(x.shape[0], -1, dtype=np.int64)
    if x.shape[0] == 0 or c.shape[0] == 0:
        return out
    for start in range(0, x.shape[0], _CHUNK):
        sims = x[start : start + _CHUNK] @ c.T
        best = sims.argmax(axis=1)
        dist = 1.0 - sims[np.arange(best.size), best]
        out[start : start + _CHUNK] = np.where(dist <= r[best] + 1e-6, best, -1)
    return out


# -- steps ---------------------------------------------------------------------------------------


def _check_vectors(vectors: npt.ArrayLike) -> Floats:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] and x.shape[1] == 0:
        raise ValueError("vectors have 0 dimensions")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"vectors row {int(np.flatnonzero(~finite)[0])} is not finite")
    norms = np.linalg.norm(x, axis=1)
    if x.shape[0] and norms.min() == 0.0:
        raise ValueError(f"vectors row {int(np.argmin(norms))} is all zeros (cannot be normalized)")
    if x.shape[0] and np.abs(norms - 1.0).max() > 1e-3:
        x = x / norms[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def _subset(n: int, size: int, rng: np.random.Generator) -> Labels:
    """Sorted indices of a random subset of ``range(n)`` of at most ``size`` (all when n <= size)."""
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _resolve(settings: ClusteringSettings, n_fit: int) -> ClusteringSettings:
    mcs = settings.min_cluster_size
    epochs = settings.n_epochs
    k = settings.n_clusters
    small = n_fit <= 5_000
    return dataclasses.replace(
        settings,
        min_cluster_size=auto_min_cluster_size(n_fit) if mcs == "auto" else mcs,
        n_epochs=(200 if small else 100) if epochs == "auto" else epochs,
        umap_init=("spectral" if small else "random") if settings.umap_init == "auto" else settings.umap_init,
        n_clusters=auto_n_clusters(n_fit) if k == "auto" else k,
    )


def _fit_labels(x: Floats, s: ClusteringSettings, seed: int) -> Labels:
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    assert isinstance(s.min_cluster_size, int) and isinstance(s.n_clusters, int)
    assert isinstance(s.n_epochs, int) and s.umap_init != "auto"
    if s.method == "hdbscan" and n < 2 * s.min_cluster_size:
        return np.zeros(n, dtype=np.int64)  # too few points for two clusters
    z = x
    # UMAP's spectral layout needs more points than dimensions; tiny sets are clustered as they are.
    if s.reduction == "umap" and n > max(s.n_components + 2, 10):
        z = backends.umap_reduce(
            x,
            n_components=s.n_components,
            n_neighbors=s.n_neighbors,
            min_dist=float(s.min_dist),
            n_epochs=s.n_epochs,
            init=s.umap_init,
            seed=seed,
        )
    elif s.reduction == "pca" and n > s.n_components:
        z = backends.pca_reduce(x, n_components=s.n_components, seed=seed)
    if s.method == "hdbscan":
        return backends.hdbscan_labels(z, min_cluster_size=s.min_cluster_size, min_samples=s.min_samples)
    if s.method == "kmeans":
        return backends.kmeans_labels(z, n_clusters=s.n_clusters, seed=seed, spherical=z is x)
    return backends.agglomerative_labels(z, n_clusters=s.n_clusters)


def _centroids(x: Floats, labels: Labels) -> Floats:
    """Unit mean of each cluster 0..max(labels) (a cluster with no member gets a zero row)."""
    k = int(labels.max(initial=-1)) + 1
    out = np.zeros((k, x.shape[1]), dtype=np.float64)
    members = np.flatnonzero(labels >= 0)
    if k == 0 or members.size == 0:
        return out.astype(np.float32)
    order = members[np.argsort(labels[members], kind="stable")]
    present, starts = np.unique(labels[order], return_index=True)
    out[present] = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


def _member_distances(x: Floats, labels: Labels, centroids: Floats) -> tuple[Labels, Floats]:
    members = np.flatnonzero(labels >= 0)
    lab = labels[members]
    dist = np.empty(members.size, dtype=np.float32)
    for start in range(0, members.size, _CHUNK):
        idx = members[start : start + _CHUNK]
        dist[start : start + _CHUNK] = 1.0 - np.einsum(
            "ij,ij->i", x[idx], centroids[lab[start : start + _CHUNK]]
        )
    return members, np.clip(dist, 0.0, 2.0)


def _radii(x: Floats, labels: Labels, centroids: Floats, quantile: float) -> Floats:
    """Per cluster, the ``quantile`` of its members' cosine distances to its centroid."""
    k = centroids.shape[0]
    out = np.zeros(k, dtype=np.float32)
    members, dist = _member_distances(x, labels, centroids)
    if members.size == 0:
        return out
    lab = labels[members]
    order = np.argsort(lab, kind="stable")
    present, starts = np.unique(lab[order], return_index=True)
    for c, part in zip(present, np.split(dist[order], starts[1:]), strict=True):
        out[c] = float(np.quantile(part, quantile))
    return out


def _medoids(x: Floats, labels: Labels, centroids: Floats) -> Labels:
    k = centroids.shape[0]
    out = np.zeros(k, dtype=np.int64)
    members, dist = _member_distances(x, labels, centroids)
    lab = labels[members]
    order = np.lexsort((members, dist, lab))  # by cluster, then distance, then index
    present, first = np.unique(lab[order], return_index=True)
    out[present] = members[order[first]]
    return out


def _by_size(labels: Labels) -> Labels:
    """Renumber clusters 0..k-1 by decreasing size (ties: lower old label first); drop empty ones."""
    k = int(labels.max(initial=-1)) + 1
    if k == 0:
        return labels
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    order = sorted((c for c in range(k) if sizes[c] > 0), key=lambda c: (-sizes[c], c))
    mapping = np.full(k + 1, -1, dtype=np.int64)  # index k maps noise (-1)
    mapping[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return mapping[labels]


def _merge_to(x: Floats, labels: Labels, max_clusters: int) -> Labels:
    """Merge the two clusters with the most similar centroids (size-weighted mean) until at most
    ``max_clusters`` remain."""
    centroids = _centroids(x, labels).astype(np.float64)
    k = centroids.shape[0]
    sizes = np.bincount(labels[labels >= 0], minlength=k).astype(np.float64)
    sums = centroids * sizes[:, None]
    alive = np.ones(k, dtype=bool)
    parent = np.arange(k)
    sims = centroids @ centroids.T
    np.fill_diagonal(sims, -math.inf)
    for _ in range(k - max_clusters):
        a, b = (int(v) for v in np.unravel_index(int(np.argmax(sims)), sims.shape))
        i, j = (a, b) if sizes[a] >= sizes[b] else (b, a)
        sums[i] += sums[j]
        sizes[i] += sizes[j]
        alive[j] = False
        parent[parent == j] = i
        c = sums[i] / max(np.linalg.norm(sums[i]), 1e-12)
        row = centroids @ c
        centroids[i] = c
        row[~alive] = -math.inf
        row[i] = -math.inf
        sims[i, :] = row
        sims[:, i] = row
        sims[j, :] = -math.inf
        sims[:, j] = -math.inf
    mapped = np.where(labels >= 0, parent[np.maximum(labels, 0)], -1)
    return mapped.astype(np.int64)
