"""``otel-topics cluster``: cluster facet texts (a JSONL file or a slice of the store) offline.

Reads texts, embeds them (or takes the stored vectors), clusters them with
:func:`otel_topics.clustering.cluster`, names the clusters from keywords, keeps ids stable against a
previous run (:func:`otel_topics.reconcile.reconcile`), and writes JSON / ``.npy`` / HTML outputs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
EMBED_CHUNK = 256  # texts per progress step


@dataclass(slots=True)
class Inputs:
    """What gets clustered: texts, optional gold labels, optional precomputed vectors."""

    texts: list[str]
    labels: list[str] | None = None
    vectors: Vectors | None = None
    source: str = ""


@dataclass(slots=True)
class ClusterOut:
    id: str
    name: str
    size: int
    keywords: list[str]
    examples: list[str]
    centroid: list[float]


@dataclass(slots=True)
class Outcome:
    """The result of one ``cluster`` run (what ``--json`` writes)."""

    metrics: dict[str, float | int | None]
    clusters: list[ClusterOut]
    assignments: list[str | None]
    vectors: Vectors = field(repr=False)
    texts: list[str] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "clusters": [
                {
                    "id": c.id,
                    "name": c.name,
                    "size": c.size,
                    "keywords": c.keywords,
                    "examples": c.examples,
                    "centroid": c.centroid,
                }
                for c in self.clusters
            ],
            "assignments": [{"cluster_id": a} for a in self.assignments],
        }


# ------------------------------------------------------------------------------------ progress


class Progress:
    """A one-line progress bar on ``stream``, drawn only when it is a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def embed_with_progress(embed: Callable[[list[str]], Vectors], texts: Sequence[str]) -> Vectors:
    """``embed`` over ``texts`` in chunks, with a progress bar on a terminal; float32 rows."""
    bar = Progress("embedding", len(texts))
    parts: list[Vectors] = []
    for start in range(0, len(texts), EMBED_CHUNK):
        chunk = list(texts[start : start + EMBED_CHUNK])
        parts.append(np.asarray(embed(chunk), dtype=np.float32))
        bar.advance(len(chunk))
    bar.close()
    if not parts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.concatenate(parts, axis=0)


# -------------------------------------------------------------------------------------- inputs


def read_jsonl(path: Path, text_field: str, label_field: str | None) -> Inputs:
    """Texts (and labels) from a JSONL file; errors name ``file:line``."""
    if not path.is_file():
        raise ValueError(f"input file not found: {path}")
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not a JSON object: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            text = obj.get(text_field)
            if not isinstance(text, str):
                what = "missing" if text is None else f"not a string ({type(text).__name__})"
                raise ValueError(f"{where}: text field {text_field!r} is {what}")
            texts.append(text)
            if label_field is not None:
                if label_field not in obj or obj[label_field] is None:
                    raise ValueError(f"{where}: label field {label_field!r} is missing")
                labels.append(str(obj[label_field]))
    if not texts:
        raise ValueError(f"{path}: no input lines")
    return Inputs(texts, labels if label_field is not None else None, source=str(path))


def read_store(facet: str, since: str, config_path: str | None, limit: int) -> tuple[Inputs, Any]:
    """A facet's texts since ``since`` ago, with stored vectors when all are present for the
    configured embedder. Returns the inputs and the embedder (used when vectors are missing)."""
    from otel_topics.config import load_config
    from otel_topics.config_values import parse_duration
    from otel_topics.service import build_embedder
    from otel_topics.store import open_store

    config = load_config(config_path)
    cutoff = time.time() - parse_duration(since)
    embedder = build_embedder(config)
    store = open_store(config.store_url())
    try:
        rows = store.facet_values(facet, cutoff, limit)
        ids, vecs = store.vectors(facet, str(embedder.name), cutoff, limit)
    finally:
        store.close()
    if not rows:
        raise ValueError(f"no values of facet {facet!r} in the store since {since} ago")
    texts = [v for _, v in rows]
    by_id = {t: i for i, t in enumerate(ids)}
    vectors: Vectors | None = None
    if ids and all(t in by_id for t, _ in rows):
        vectors = np.asarray(vecs[[by_id[t] for t, _ in rows]], dtype=np.float32)
    return Inputs(texts, None, vectors, source=f"store facet {facet}"), embedder


def read_embeddings(path: Path, n_texts: int) -> Vectors:
    """Vectors from a ``.npy`` file (``--embeddings-in``), one row per input text in input order.

    Refuses, naming the file: a missing file, a file that is not a ``.npy`` array, an array that is not
    2-D or not of a float dtype, a row count other than ``n_texts``, no columns, and non-finite values.
    """
    if not path.is_file():
        raise ValueError(f"--embeddings-in {path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"--embeddings-in {path}: not a .npy array ({exc})") from exc
    if not isinstance(loaded, np.ndarray):  # an .npz archive
        raise ValueError(f"--embeddings-in {path}: not a .npy array (an .npz archive?)")
    if loaded.ndim != 2:
        raise ValueError(f"--embeddings-in {path}: expected a 2-D array (n, d), got shape {loaded.shape}")
    if not np.issubdtype(loaded.dtype, np.floating):
        raise ValueError(f"--embeddings-in {path}: expected a float array, got dtype {loaded.dtype}")
    if loaded.shape[0] != n_texts:
        raise ValueError(
            f"--embeddings-in {path}: {loaded.shape[0]} rows but the input has {n_texts} texts "
            "(one row per text, in input order)"
        )
    if loaded.shape[1] == 0:
        raise ValueError(f"--embeddings-in {path}: the vectors have 0 dimensions")
    vectors = np.asarray(loaded, dtype=np.float32)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"--embeddings-in {path}: {bad.size} row(s) with NaN or infinite values "
            f"(first: row {int(bad[0])}, 0-based)"
        )
    return vectors


def _embed_fn(embedder: Any) -> Callable[[list[str]], Vectors]:
    sync = getattr(embedder, "embed_sync", None)
    if callable(sync):
        return lambda texts: np.asarray(sync(texts), dtype=np.float32)
    import asyncio

    return lambda texts: np.asarray(asyncio.run(embedder.embed(texts)), dtype=np.float32)


# ------------------------------------------------------------------------------------- running


def singleton_labels(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Cluster labels with every noise point (-1) its own label, for ARI / NMI."""
    out = labels.copy()
    noise = np.flatnonzero(out < 0)
    out[noise] = out.max(initial=-1) + 1 + np.arange(noise.size)
    return out


def run(
    inputs: Inputs,
    embed: Callable[[list[str]], Vectors],
    *,
    previous: str | None = None,
    min_examples: int = 5,
    n_examples: int = 5,
) -> Outcome:
    """Embed (unless vectors are given), cluster, name, reconcile ids, score against labels."""
    from otel_topics.clustering import cluster
    from otel_topics.keywords import keywords
    from otel_topics.naming import ClusterSample, KeywordNamer
    from otel_topics.reconcile import Candidate, load_previous_json, reconcile

    texts = inputs.texts
    started = time.perf_counter()
    vectors = inputs.vectors if inputs.vectors is not None else embed_with_progress(embed, texts)
    embed_seconds = time.perf_counter() - started if inputs.vectors is None else 0.0
    result = cluster(vectors)
    cluster_seconds = result.seconds
    labels = result.labels
    k = result.n_clusters
    kw = keywords(texts, labels.tolist(), top_n=8) if k else {}

    examples: list[list[str]] = []
    members: list[list[int]] = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        members.append(idx.tolist())
        order = idx[np.argsort(-(vectors[idx] @ result.centroids[c]), kind="stable")]
        examples.append([texts[i] for i in order[:n_examples]] if idx.size >= min_examples else [])

    samples = [
        ClusterSample(
            key=str(c),
            exemplars=[texts[int(result.medoids[c])]] + examples[c],
            keywords=kw.get(c, []),
        )
        for c in range(k)
    ]
    names = KeywordNamer().name_sync(samples)
    prev = load_previous_json(previous) if previous else []
    candidates = [
        Candidate(
            centroid=result.centroids[c],
            size=int(result.sizes[c]),
            members=frozenset(texts[i] for i in members[c]),
            exemplars=examples[c],
        )
        for c in range(k)
    ]
    ids = [a.id for a in reconcile(prev, candidates)]

    ari = nmi = None
    if inputs.labels is not None:
        from sklearn.metrics import (  # type: ignore[import-untyped]
            adjusted_rand_score,
            normalized_mutual_info_score,
        )

        pred = singleton_labels(labels)
        ari = float(adjusted_rand_score(inputs.labels, pred))
        nmi = float(normalized_mutual_info_score(inputs.labels, pred))
    clusters = [
        ClusterOut(
            id=ids[c],
            name=names[c].name,
            size=int(result.sizes[c]),
            keywords=list(kw.get(c, [])),
            examples=examples[c],
            centroid=[float(x) for x in result.centroids[c]],
        )
        for c in range(k)
    ]
    metrics: dict[str, float | int | None] = {
        "ari": ari,
        "nmi": nmi,
        "noise_fraction": result.noise_fraction,
        "n_clusters": k,
        "cluster_seconds": cluster_seconds,
        "embed_seconds": embed_seconds,
    }
    assignments = [ids[int(c)] if c >= 0 else None for c in labels]
    return Outcome(metrics, clusters, assignments, vectors, texts)


def summary(outcome: Outcome) -> str:
    m = outcome.metrics
    parts = [
        f"{len(outcome.texts)} texts",
        f"{m['n_clusters']} clusters",
        f"noise {100 * float(m['noise_fraction'] or 0):.1f}%",
    ]
    if m["ari"] is not None and m["nmi"] is not None:
        parts.append(f"ARI {float(m['ari']):.3f} NMI {float(m['nmi']):.3f}")
    parts.append(
        f"cluster {float(m['cluster_seconds'] or 0):.1f}s embed {float(m['embed_seconds'] or 0):.1f}s"
    )
    return ", ".join(parts)


def _finite(x: float | int | None) -> float | int | None:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def cmd_cluster(args: argparse.Namespace) -> int:
    """The ``cluster`` subcommand (wired in :mod:`otel_topics.cli`)."""
    if args.min_examples < 1:
        raise ValueError(f"--min-examples must be at least 1, got {args.min_examples}")
    if (args.input is None) == (args.facet is None):
        raise ValueError("give exactly one of --input F.jsonl or --facet NAME")
    embed: Callable[[list[str]], Vectors]
    if args.input is not None:
        if not args.text_field:
            raise ValueError("--input needs --text-field")
        inputs = read_jsonl(Path(args.input), args.text_field, args.label_field)
        from otel_topics.embed import LocalEmbedder

        local = LocalEmbedder()
        embed = _embed_fn(local)
    else:
        inputs, embedder = read_store(args.facet, args.since, args.config, args.limit)
        embed = _embed_fn(embedder)
    embeddings_in = getattr(args, "embeddings_in", None)
    if embeddings_in:
        inputs.vectors = read_embeddings(Path(embeddings_in), len(inputs.texts))
    outcome = run(inputs, embed, previous=args.previous, min_examples=args.min_examples)
    outcome.metrics = {k: _finite(v) for k, v in outcome.metrics.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(outcome.to_json()) + "\n", encoding="utf-8")
    if args.embeddings_out:
        np.save(args.embeddings_out, outcome.vectors.astype(np.float32))
    if args.html:
        from otel_topics.cluster_report import render_html

        Path(args.html).write_text(render_html(outcome, title=inputs.source), encoding="utf-8")
    print(summary(outcome))
    return 0
