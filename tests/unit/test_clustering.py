"""Clustering on synthetic gaussian blobs on the unit sphere (fast) and, when the shared data is
present, the BANKING77 acceptance check is left to bench/cluster_quality.py (it needs the embedder)."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("umap")
pytest.importorskip("hdbscan")

from otel_topics.clustering import (
    ClusteringResult,
    ClusteringSettings,
    assign,
    auto_min_cluster_size,
    auto_n_clusters,
    cluster,
)

Vecs = npt.NDArray[np.float32]


def blobs(k: int, per: int, *, dim: int = 32, spread: float = 0.08, seed: int = 0) -> tuple[Vecs, np.ndarray]:
    """``k`` clusters of ``per`` unit vectors around random unit centres (within-cluster cosine
    similarity ~0.85-0.95, between clusters ~0)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), per)
    x = centres[truth] + rng.normal(scale=spread, size=(k * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), truth


def purity_ok(truth: np.ndarray, labels: np.ndarray) -> bool:
    """Every found cluster is drawn from one true cluster, and every true cluster maps to one found."""
    pairs = {(int(t), int(lab)) for t, lab in zip(truth, labels, strict=True) if lab >= 0}
    found = {lab for _, lab in pairs}
    return len(pairs) == len(found) == len({t for t, _ in pairs})


@pytest.fixture(scope="module")
def six() -> tuple[Vecs, np.ndarray, ClusteringResult]:
    x, truth = blobs(6, 60)
    return x, truth, cluster(x)


def test_recovers_the_blobs(six: tuple[Vecs, np.ndarray, ClusteringResult]) -> None:
    x, truth, res = six
    assert res.n_clusters == 6
    assert purity_ok(truth, res.labels)
    assert res.noise_fraction <= 0.02
    assert res.labels.shape == (x.shape[0],) and res.labels.dtype == np.int64


def test_result_arrays_are_consistent(six: tuple[Vecs, np.ndarray, ClusteringResult]) -> None:
    x, _, res = six
    k = res.n_clusters
    assert res.centroids.shape == (k, x.shape[1]) and res.centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)
    assert res.sizes.tolist() == np.bincount(res.labels[res.labels >= 0], minlength=k).tolist()
    assert list(res.sizes) == sorted(res.sizes, reverse=True)  # numbered by decreasing size
    assert res.radii.shape == (k,) and (res.radii > 0).all() and (res.radii < 1).all()
    for c in range(k):
        assert res.labels[res.medoids[c]] == c
    assert res.seconds > 0
    assert res.fitted == x.shape[0]


def test_centroids_are_member_means_in_the_original_space(
    six: tuple[Vecs, np.ndarray, ClusteringResult],
) -> None:
    x, _, res = six
    for c in range(res.n_clusters):
        mean = x[res.labels == c].mean(axis=0)
        np.testing.assert_allclose(res.centroids[c], mean / np.linalg.norm(mean), atol=1e-5)


def test_radius_covers_the_quantile_of_members(six: tuple[Vecs, np.ndarray, ClusteringResult]) -> None:
    x, _, res = six
    for c in range(res.n_clusters):
        dist = 1.0 - x[res.labels == c] @ res.centroids[c]
        assert np.mean(dist <= res.radii[c] + 1e-6) == pytest.approx(0.9, abs=0.05)


def test_auto_values_are_resolved(six: tuple[Vecs, np.ndarray, ClusteringResult]) -> None:
    _, _, res = six
    s = res.settings
    assert s.min_cluster_size == auto_min_cluster_size(360)
    assert s.n_epochs == 200 and s.umap_init == "spectral"
    assert isinstance(s.n_clusters, int)


@pytest.mark.parametrize("reduction", ["umap", "none"])
def test_outliers_far_away_stay_noise_and_near_ones_join(reduction: str) -> None:
    x, truth = blobs(4, 50, seed=1)
    rng = np.random.default_rng(7)
    far = rng.normal(size=(6, x.shape[1]))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    data = np.vstack([x, far.astype(np.float32)])
    keep = cluster(data, settings=ClusteringSettings(reduction=reduction, noise="keep"))  # type: ignore[arg-type]
    res = cluster(data, settings=ClusteringSettings(reduction=reduction))  # type: ignore[arg-type]
    assert res.n_clusters == 4
    assert purity_ok(truth, res.labels[:-6])
    assert (res.labels[:-6] >= 0).mean() >= 0.98
    # The radius rule never pulls in a random direction that the clustering left as noise (HDBSCAN
    # itself may attach an outlier to a cluster: UMAP gives every point neighbours).
    left_out = keep.labels[-6:] == -1
    assert (res.labels[-6:][left_out] == -1).all()


def test_radius_reassignment_versus_keep() -> None:
    x, _ = blobs(4, 50, seed=2, spread=0.12)
    keep = cluster(x, settings=ClusteringSettings(noise="keep", min_samples=10))
    radius = cluster(x, settings=ClusteringSettings(noise="radius", min_samples=10))
    assert radius.noise_fraction <= keep.noise_fraction
    # every point that kept a label under "keep" has the same cluster (up to renumbering) under "radius"
    mapping = {}
    for a, b in zip(keep.labels, radius.labels, strict=True):
        if a >= 0:
            assert mapping.setdefault(int(a), int(b)) == b


def test_assign_nearest_within_radius() -> None:
    centroids = np.eye(3, dtype=np.float32)
    radii = np.array([0.1, 0.5, 0.1], dtype=np.float32)
    v = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0.8, 0.6], [0, 0.6, 0.8], [0, 0, -1]], dtype=np.float32)
    # [0, 0.6, 0.8]: its NEAREST centroid (2) is 0.2 away, beyond 2's radius -> noise, like the classifier
    assert assign(v, centroids, radii).tolist() == [0, -1, 1, -1, -1]
    assert assign(np.zeros((0, 3), np.float32), centroids, radii).shape == (0,)
    assert assign(v, np.zeros((0, 3), np.float32), np.zeros(0, np.float32)).tolist() == [-1] * 5


def test_sample_size_path_assigns_the_rest() -> None:
    x, truth = blobs(5, 120, seed=3)
    res = cluster(x, settings=ClusteringSettings(sample_size=200, fit_size=150))
    assert res.fitted == 150
    assert res.n_clusters == 5
    assert purity_ok(truth, res.labels)
    # the 400 vectors outside the sample were assigned; a few lie beyond 98% of their cluster's members
    assert res.noise_fraction <= 0.08


def test_deterministic_for_a_seed() -> None:
    x, _ = blobs(5, 50, seed=4)
    s = ClusteringSettings(sample_size=200, fit_size=120)
    a, b = cluster(x, settings=s, rng_seed=3), cluster(x, settings=s, rng_seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


@pytest.mark.parametrize(
    "settings",
    [
        ClusteringSettings(method="kmeans", reduction="none", n_clusters=6),
        ClusteringSettings(method="kmeans", n_clusters=6),
        ClusteringSettings(method="agglomerative", reduction="none", n_clusters=6),
        ClusteringSettings(reduction="pca", n_components=8),
        ClusteringSettings(reduction="none"),
    ],
    ids=["kmeans", "umap-kmeans", "agglomerative", "pca-hdbscan", "raw-hdbscan"],
)
def test_alternative_methods(
    settings: ClusteringSettings, six: tuple[Vecs, np.ndarray, ClusteringResult]
) -> None:
    x, truth, _ = six
    res = cluster(x, settings=settings)
    assert res.n_clusters == 6
    assert purity_ok(truth, res.labels)


def test_max_clusters_merges_the_closest() -> None:
    x, truth = blobs(6, 40, seed=5)
    res = cluster(x, settings=ClusteringSettings(max_clusters=3))
    assert res.n_clusters == 3
    for t in range(6):  # a true blob is never split by merging
        assert len(set(res.labels[truth == t].tolist()) - {-1}) == 1


def test_tiny_and_empty_inputs() -> None:
    empty = cluster(np.zeros((0, 8), np.float32))
    assert empty.n_clusters == 0 and empty.labels.shape == (0,) and empty.centroids.shape == (0, 8)
    assert empty.noise_fraction == 0.0
    x, _ = blobs(1, 4)
    one = cluster(x)
    assert one.n_clusters == 1 and (one.labels == 0).all()


def test_rows_are_normalized_and_bad_input_refused() -> None:
    x, _ = blobs(3, 40, seed=6)
    res = cluster(x * 3.0)
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="2-D"):
        cluster(np.zeros(5, np.float32))
    bad = x.copy()
    bad[7] = 0
    with pytest.raises(ValueError, match="row 7"):
        cluster(bad)
    bad[7] = np.nan
    with pytest.raises(ValueError, match="row 7 is not finite"):
        cluster(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "dbscan", "method must be one of"),
        ("reduction", "tsne", "reduction must be one of"),
        ("min_cluster_size", 1, "min_cluster_size must be 'auto' or an integer >= 2"),
        ("n_clusters", "many", "n_clusters must be 'auto'"),
        ("sample_size", 0, "sample_size must be a positive integer"),
        ("radius_quantile", 1.5, "radius_quantile must be within"),
        ("max_clusters", 0, "max_clusters must be None or a positive integer"),
        ("noise", "drop", "noise must be"),
        ("umap_init", "tsne", "umap_init must be"),
    ],
)
def test_settings_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ClusteringSettings(), **{field: value})


def test_auto_rules() -> None:
    assert auto_min_cluster_size(10) == 5
    assert auto_min_cluster_size(1000) == 5
    assert auto_min_cluster_size(3080) == 14
    assert auto_min_cluster_size(10_000) == 40
    assert auto_min_cluster_size(8_000) < auto_min_cluster_size(50_000)
    assert auto_n_clusters(1) == 1
    assert 60 <= auto_n_clusters(3080) <= 90
    assert auto_n_clusters(20) <= 20
