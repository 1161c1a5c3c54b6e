"""Clustering quality and speed on labelled text sets (a script, not a test).

    python bench/cluster_quality.py banking77-test snips-test --configs default,kmeans,bertopic
    python bench/cluster_quality.py data.jsonl --label-field intent --text-field text
    python bench/cluster_quality.py merged --up-to 50000 --configs default,bertopic

A dataset is a preset name (below), a ``.csv`` (columns ``text`` and ``label``/``category``/``intent``),
a ``.jsonl`` (one object a line; ``--text-field`` / ``--label-field``, a list value uses its first
item) or a SNIPS-style folder (``seq.in`` + ``label``). Texts are embedded with the local embedder
(all-MiniLM-L6-v2 int8) and the vectors cached in ``--cache`` (default /tmp/otel_vecs). ``--up-to N``
makes the set up to N vectors with perturbed copies (gaussian noise of sigma 0.01 per dimension,
renormalized; the copies keep their label) to measure speed at scale.

Scores: ARI and NMI against the labels with every noise point counted as its own singleton cluster,
the noise fraction, the number of clusters and ``cluster_seconds`` (the clustering call alone, in
process, after imports; each configuration is run once on a small slice first so numba's JIT is not
counted -- the first call's time is printed as "cold"). ``bertopic`` is BERTopic's default pipeline
implemented with umap-learn + hdbscan on the same vectors: UMAP(n_neighbors=15, n_components=5,
min_dist=0.0, metric=cosine) + HDBSCAN(min_cluster_size=10, euclidean, eom), noise kept.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from otel_topics.clustering import ClusteringSettings, cluster  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SNIPS = DATA / "intent" / "snips" / "jianguoz_split"
PRESETS: dict[str, list[Path]] = {
    "banking77-test": [DATA / "intent" / "banking77" / "test.csv"],
    "banking77-train": [DATA / "intent" / "banking77" / "train.csv"],
    "snips-test": [SNIPS / "test"],
    "requests": [
        DATA / "requests" / "mt_bench_question.jsonl",
        DATA / "requests" / "vicuna_bench_question.jsonl",
    ],
    "merged": [
        DATA / "intent" / "banking77" / "train.csv",
        DATA / "intent" / "banking77" / "test.csv",
        SNIPS / "train",
        SNIPS / "valid",
        SNIPS / "test",
    ],
}
# Cache names used for the preset sources (so the vectors are computed once per source).
_SLUGS = {
    DATA / "intent" / "banking77" / "test.csv": "b77_test",
    DATA / "intent" / "banking77" / "train.csv": "b77_train",
    SNIPS / "test": "snips_test",
    SNIPS / "valid": "snips_valid",
    SNIPS / "train": "snips_train",
}

Labels = npt.NDArray[np.int64]


@dataclass
class Dataset:
    name: str
    texts: list[str]
    labels: list[str]
    vectors: npt.NDArray[np.float32]


def read_source(path: Path, text_field: str, label_field: str) -> tuple[list[str], list[str]]:
    if path.is_dir():
        texts = (path / "seq.in").read_text(encoding="utf-8").splitlines()
        labels = (path / "label").read_text(encoding="utf-8").splitlines()
        return [t.strip() for t in texts], [label.strip() for label in labels]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        key = next((k for k in (label_field, "label", "category", "intent") if rows and k in rows[0]), None)
        if key is None:
            raise SystemExit(f"{path}: no label column (tried {label_field}, label, category, intent)")
        return [r[text_field] for r in rows], [r[key] for r in rows]
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        text = obj.get(text_field, obj.get("turns"))
        label = obj.get(label_field, obj.get("category"))
        if text is None or label is None:
            raise SystemExit(f"{path}:{n}: needs {text_field!r} and {label_field!r} fields")
        texts.append(str(text[0] if isinstance(text, list) else text))
        labels.append(str(label))
    return texts, labels


def embed_cached(slug: str, texts: list[str], cache: Path) -> npt.NDArray[np.float32]:
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    file = cache / f"{slug}-{digest}.npy"
    if file.exists():
        return np.load(file)
    from otel_topics.embed import LocalEmbedder

    started = time.perf_counter()
    vectors = LocalEmbedder().embed_sync(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(file, vectors)
    print(
        f"  embedded {len(texts)} texts of {slug} in {time.perf_counter() - started:.0f} s", file=sys.stderr
    )
    return vectors


def load(spec: str, args: argparse.Namespace) -> Dataset:
    sources = PRESETS.get(spec) or [Path(spec)]
    texts: list[str] = []
    labels: list[str] = []
    parts = []
    for src in sources:
        if not src.exists():
            raise SystemExit(f"dataset {spec!r}: {src} does not exist")
        t, lab = read_source(src, args.text_field, args.label_field)
        slug = _SLUGS.get(src, src.stem if src.is_file() else src.name)
        parts.append(embed_cached(slug, t, args.cache))
        texts += t
        labels += lab
    vectors = np.vstack(parts).astype(np.float32)
    if args.up_to and args.up_to > len(texts):
        rng = np.random.default_rng(0)
        extra = rng.choice(len(texts), args.up_to - len(texts), replace=True)
        copies = vectors[extra] + rng.normal(0.0, 0.01, (extra.size, vectors.shape[1])).astype(np.float32)
        copies /= np.linalg.norm(copies, axis=1, keepdims=True)
        vectors = np.vstack([vectors, copies]).astype(np.float32)
        texts += [texts[i] for i in extra]
        labels += [labels[i] for i in extra]
    name = spec if spec in PRESETS else Path(spec).name
    return Dataset(name, texts, labels, vectors)


def scores(truth: list[str], labels: Labels) -> tuple[float, float, float, int]:
    """ARI, NMI (noise points as singletons), noise fraction, number of clusters."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = np.asarray(labels, dtype=np.int64).copy()
    noise = pred < 0
    k = len(set(pred[~noise].tolist()))
    pred[noise] = pred.max(initial=0) + 1 + np.arange(int(noise.sum()))
    return (
        float(adjusted_rand_score(truth, pred)),
        float(normalized_mutual_info_score(truth, pred)),
        float(noise.mean()),
        k,
    )


def bertopic_default(x: npt.NDArray[np.float32], seed: int) -> Labels:
    import hdbscan
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduced = umap.UMAP(
            n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed
        ).fit_transform(x)
        model = hdbscan.HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom")
        return np.asarray(model.fit(reduced).labels_, dtype=np.int64)


def _ours(settings: ClusteringSettings) -> Callable[[npt.NDArray[np.float32], int], Labels]:
    return lambda x, seed: cluster(x, settings=settings, rng_seed=seed).labels


CONFIGS: dict[str, Callable[[npt.NDArray[np.float32], int], Labels]] = {
    "default": _ours(ClusteringSettings()),
    "umap15": _ours(ClusteringSettings(n_neighbors=15)),
    "mcs10": _ours(ClusteringSettings(min_cluster_size=10)),
    "noise-keep": _ours(ClusteringSettings(noise="keep")),
    "pca-hdbscan": _ours(ClusteringSettings(reduction="pca", n_components=5)),
    "kmeans": _ours(ClusteringSettings(method="kmeans", reduction="none")),
    "umap-kmeans": _ours(ClusteringSettings(method="kmeans")),
    "agglomerative": _ours(ClusteringSettings(method="agglomerative", reduction="none")),
    "bertopic": bertopic_default,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", help=f"preset ({', '.join(PRESETS)}) or file/folder")
    parser.add_argument(
        "--configs", default="default,kmeans,bertopic", help=f"comma list of {', '.join(CONFIGS)}"
    )
    parser.add_argument("--seeds", default="42", help="comma list of rng seeds (scores are averaged)")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--up-to", type=int, default=0, help="pad the set to N vectors with perturbed copies")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/otel_vecs"))
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]

    warm = np.random.default_rng(0).normal(size=(600, 384)).astype(np.float32)
    warm /= np.linalg.norm(warm, axis=1, keepdims=True)
    print("| dataset | n | labels | config | ARI | NMI | noise | clusters | cluster_seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.datasets:
        ds = load(spec, args)
        for name in configs:
            fn = CONFIGS[name]
            started = time.perf_counter()
            fn(warm, 0)  # JIT warm-up, not counted
            cold = time.perf_counter() - started
            rows = []
            for seed in seeds:
                started = time.perf_counter()
                labels = fn(ds.vectors, seed)
                rows.append((*scores(ds.labels, labels), time.perf_counter() - started))
            ari, nmi, noise, k, secs = (float(np.mean([r[i] for r in rows])) for i in range(5))
            print(
                f"| {ds.name} | {len(ds.texts)} | {len(set(ds.labels))} | {name} | {ari:.3f} | {nmi:.3f} | "
                f"{noise:.1%} | {k:.0f} | {secs:.1f} (warm-up {cold:.1f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
