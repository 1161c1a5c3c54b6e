"""The heavy steps behind :func:`otel_topics.clustering.cluster`: the exact k-nearest-neighbour graph,
the reductions (UMAP, PCA) and the clustering algorithms (HDBSCAN, k-means, agglomerative).

Third-party libraries (umap-learn, hdbscan, scikit-learn, faiss) are imported on first use, so
importing :mod:`otel_topics.clustering` stays cheap; umap-learn's import and numba compilation take
tens of seconds the first time in a process. A missing library raises :class:`ClusteringError` that
says which package to install.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from otel_topics.errors import OtelTopicsError

log = logging.getLogger(__name__)

__all__ = [
    "ClusteringError",
    "agglomerative_labels",
    "hdbscan_labels",
    "kmeans_labels",
    "knn_graph",
    "pca_reduce",
    "umap_reduce",
]

Labels = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]

_PACKAGES = {
    "umap": "umap-learn",
    "hdbscan": "hdbscan",
    "sklearn.decomposition": "scikit-learn",
    "sklearn.cluster": "scikit-learn",
    "faiss": "faiss-cpu",
}


class ClusteringError(OtelTopicsError):
    """Clustering could not run (a missing optional library, or a library failed)."""


def _module(name: str) -> ModuleType:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        package = _PACKAGES.get(name, name)
        raise ClusteringError(
            f"clustering needs the {package!r} package ({exc}); run `pip install {package}`"
        ) from exc
    if name == "umap":
        cache_jit_functions(("umap", "pynndescent"))
    return module


_cached_modules: set[str] = set()


def cache_jit_functions(packages: tuple[str, ...]) -> int:
    """Switch on numba's on-disk cache for the jitted functions of ``packages`` that were not
    declared with ``cache=True``. umap-learn caches only some of its functions, so every new process
    compiled the rest again (measured ~18 s of a 27 s clustering of 10k vectors); with this a
    process after the first loads them from the cache (``NUMBA_CACHE_DIR``, else next to the
    package or in the user's cache directory). Returns how many functions it switched on."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return 0
    enabled = 0
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.split(".", 1)[0] not in packages or module_name in _cached_modules:
            continue
        _cached_modules.add(module_name)
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and type(getattr(value, "_cache", None)).__name__ == "NullCache":
                try:
                    value.enable_caching()
                    enabled += 1
                except Exception as exc:  # no writable cache location: compile as before
                    log.debug("numba cache unavailable for %s: %s", value, exc)
    return enabled


def knn_graph(x: Floats, k: int) -> tuple[npt.NDArray[np.int64], Floats]:
    """Exact ``k`` nearest neighbours of every row of the unit rows ``x`` by inner product (FAISS
    flat index), as UMAP wants them: each row's first neighbour is the row itself at distance 0,
    distances are cosine distances ``1 - cos``, ascending."""
    faiss: Any = _module("faiss")
    n, d = x.shape
    k = max(1, min(k, n))
    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    sims, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), k)
    ids = ids.astype(np.int64)
    dists = np.clip(1.0 - sims, 0.0, 2.0).astype(np.float32)
    rows = np.arange(n)
    for r in np.flatnonzero(ids[:, 0] != rows):  # exact duplicates can outrank the row itself
        where = np.flatnonzero(ids[r] == r)
        if where.size:  # move the row itself to the front
            j = int(where[0])
            ids[r, 1 : j + 1] = ids[r, :j].copy()
        else:  # not among the k: drop the farthest, put itself first
            ids[r, 1:] = ids[r, :-1].copy()
            dists[r, 1:] = dists[r, :-1].copy()
        ids[r, 0] = r
    dists[:, 0] = 0.0
    return ids, dists


def umap_reduce(
    x: Floats,
    *,
    n_components: int,
    n_neighbors: int,
    min_dist: float,
    n_epochs: int,
    init: str,
    seed: int,
) -> Floats:
    """UMAP (cosine) of the unit rows ``x`` to ``n_components`` dimensions, fed with an exact FAISS
    kNN graph: umap-learn's own search for fewer than 4,096 rows computes every pair through a Python
    callback (measured 40 s for 3,080 rows), and its NN-descent costs more than FAISS below ~10k
    rows. With ``random_state`` set umap-learn runs single-threaded and is deterministic."""
    umap: Any = _module("umap")
    n = x.shape[0]
    neighbors = max(2, min(n_neighbors, n - 1))
    ids, dists = knn_graph(x, neighbors)
    with warnings.catch_warnings():
        # "n_jobs value 1 overridden ... by setting random_state" and "precomputed_knn[2] is not an
        # NNDescent object" (we never call transform) are expected; so is a disconnected graph.
        warnings.simplefilter("ignore")
        model = umap.UMAP(
            n_neighbors=neighbors,
            n_components=n_components,
            min_dist=min_dist,
            metric="cosine",
            n_epochs=n_epochs,
            init=init,
            random_state=seed,
            precomputed_knn=(ids, dists, None),
            low_memory=True,
            verbose=False,
        )
        try:
            out = model.fit_transform(x)
        except Exception as exc:  # numba / scipy errors inside umap-learn
            raise ClusteringError(f"UMAP failed on {n} vectors: {exc}") from exc
    return np.ascontiguousarray(out, dtype=np.float32)


def pca_reduce(x: Floats, *, n_components: int, seed: int) -> Floats:
    """PCA of ``x`` to ``n_components`` dimensions (scikit-learn, randomized SVD when it pays)."""
    decomposition: Any = _module("sklearn.decomposition")
    n_components = max(1, min(n_components, x.shape[0], x.shape[1]))
    model = decomposition.PCA(n_components=n_components, random_state=seed)
    return np.ascontiguousarray(model.fit_transform(x), dtype=np.float32)


def hdbscan_labels(z: Floats, *, min_cluster_size: int, min_samples: int) -> Labels:
    """HDBSCAN (the ``hdbscan`` package: excess-of-mass selection, euclidean, Boruvka KD-tree in low
    dimensions) of the rows of ``z``; -1 is noise. Deterministic. Measured on 8,000 UMAP points:
    0.2 s, where fast-hdbscan took 0.4 s (and 3-25 s in its reproducible mode) for the same labels."""
    hdbscan: Any = _module("hdbscan")
    model = hdbscan.HDBSCAN(
        min_cluster_size=int(min_cluster_size),
        min_samples=int(min(min_samples, min_cluster_size)),
        cluster_selection_method="eom",
        metric="euclidean",
        core_dist_n_jobs=1,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = model.fit(np.asarray(z, dtype=np.float64)).labels_
    except Exception as exc:
        raise ClusteringError(f"HDBSCAN failed on {z.shape[0]} points: {exc}") from exc
    return np.asarray(labels, dtype=np.int64)


def kmeans_labels(z: Floats, *, n_clusters: int, seed: int, spherical: bool) -> Labels:
    """k-means (FAISS, 25 iterations, 3 restarts keeping the best) of the rows of ``z``."""
    faiss: Any = _module("faiss")
    n, d = z.shape
    k = max(1, min(n_clusters, n))
    data = np.ascontiguousarray(z, dtype=np.float32)
    km = faiss.Kmeans(
        d, k, niter=25, nredo=3, seed=int(seed) & 0x7FFFFFFF, spherical=spherical, verbose=False
    )
    km.cp.min_points_per_centroid = 1  # small sets: no warning, no refusal
    km.train(data)
    _, assigned = km.index.search(data, 1)
    return _compact(assigned[:, 0].astype(np.int64))


def agglomerative_labels(z: Floats, *, n_clusters: int) -> Labels:
    """Ward agglomerative clustering (scikit-learn) of the rows of ``z`` into ``n_clusters``."""
    cluster: Any = _module("sklearn.cluster")
    k = max(1, min(n_clusters, z.shape[0]))
    model = cluster.AgglomerativeClustering(n_clusters=k, linkage="ward")
    return _compact(np.asarray(model.fit_predict(z), dtype=np.int64))


def _compact(labels: Labels) -> Labels:
    """Renumber the non-negative labels 0..k-1 (empty k-means cells leave gaps)."""
    out = np.full_like(labels, -1)
    keep = labels >= 0
    _, out[keep] = np.unique(labels[keep], return_inverse=True)
    return out
