"""Classification benchmark (not a test): nearest-centroid lookup, embed + lookup, embedding
throughput, and the facet and embedding caches on repeated traffic. One process, one command.

    python bench/classify.py [--only a|b|c|d] [--runs 3] [--map-texts 10000] [--clusters 500]
                             [--queries 20000] [--embed-queries 1000] [--threads N]
                             [--traffic 1000] [--zipf 1.0] [--rate 50] [--llm-delay 0.5]

The topic map (parts a, b): ``--map-texts`` distinct texts drawn (seeded) from BANKING77 train +
SNIPS train, embedded with ``LocalEmbedder`` (vectors cached on disk like ``cluster_quality.py``),
clustered with the project's own k-means (``otel_topics.clustering.cluster``, method kmeans, no
reduction, FAISS) into ``--clusters`` clusters; each cluster keeps its radius and the map's threshold
is ``otel_topics.classify.auto_threshold``. It is loaded into ``CentroidClassifier``. Queries are
held-out texts (BANKING77 test, SNIPS test and valid) that are not among the map's texts.

(a) Lookup alone: ``CentroidClassifier.classify(map, vector[1 x d])``, one call per query, against the
    same loop with exact brute force in numpy (``C @ q``, argmax, same threshold). Prints p50 / p99 /
    mean in µs, and the agreement of the two on the nearest centroid and on the match decision.
(b) One facet text's embed + lookup: ``LocalEmbedder.embed_sync([text])`` then ``classify``, per call,
    on ``--embed-queries`` held-out texts; the reference is the embed alone (same calls).
(c) Embedding throughput of ``LocalEmbedder`` in sentences/s on real user turns of the τ-bench
    airline trajectories with 15-30 words: calls of 32 texts, vs one call per text; also one call with
    every text (the embedder sorts them by length and batches them itself).
(d) The caches on repeated traffic: ``--traffic`` traces drawn with a Zipf law (exponent ``--zipf``)
    from the 200 τ-bench conversations, built by ``otel_topics.replay.TraceBuilder``, enriched by the
    sidecar's own ``TraceEnricher`` wired as ``serve`` wires it for ``llm: {type: openai}``
    (``service.build_extractor`` with a ``StoreFacetCache`` over a SQLite store,
    ``service.build_embedder``: ``CachedEmbedder`` over ``LocalEmbedder``). The LLM is a local
    chat-completions server in this process that answers, for each conversation, the heuristic
    extractor's facets of it, and counts its requests. Hit rates come from the sidecar's own counters
    (``otel_topics_llm_requests_total{outcome="cache_hit"}``, ``otel_topics_embed_cache_total``); the
    reference is the best any cache can do on that traffic, 1 - distinct / traces.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import json_line, load_note, median, percentile, print_table
from cluster_quality import embed_cached, read_source
from enrich import DATA, load_conversations

from otel_topics.classify import CentroidClassifier
from otel_topics.embed import MODEL_ID, LocalEmbedder
from otel_topics.model import NO_MATCH

Floats = npt.NDArray[np.float32]
MAP = "bench"  # the topic map's name in the classifier
TOP1 = "bench-top1"  # the same centroids with threshold 2: every query matches its nearest centroid

# (cache slug, path under the shared data): the slugs are cluster_quality.py's, so the vectors are shared
MAP_SOURCES = (
    ("b77_train", "intent/banking77/train.csv"),
    ("snips_train", "intent/snips/jianguoz_split/train"),
)
HELD_OUT_SOURCES = (
    ("b77_test", "intent/banking77/test.csv"),
    ("snips_test", "intent/snips/jianguoz_split/test"),
    ("snips_valid", "intent/snips/jianguoz_split/valid"),
)
SENTENCE_WORDS = (15, 30)  # (c): user turns of this many words (mean ~21)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _words(texts: Sequence[str]) -> float:
    return statistics.fmean(len(t.split()) for t in texts) if texts else 0.0


def _us(ns: Sequence[int]) -> dict[str, float]:
    us = [v / 1e3 for v in ns]
    return {
        "p50": round(percentile(us, 50), 2),
        "p99": round(percentile(us, 99), 2),
        "mean": round(statistics.fmean(us), 2),
    }


def _ms(ns: Sequence[int]) -> dict[str, float]:
    ms = [v / 1e6 for v in ns]
    return {
        "p50": round(percentile(ms, 50), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(statistics.fmean(ms), 3),
    }


def _median_stats(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each statistic's median over the runs."""
    return {k: round(median([r[k] for r in runs]), 3) for k in runs[0]}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _latency_table(
    what: str,
    unit: str,
    digits: int,
    runs: Sequence[dict[str, dict[str, float]]],
    ratio: tuple[str, str, str],
) -> dict[str, dict[str, float]]:
    """Print p50 / p99 / mean of every measurement of every run, their medians over the runs, and
    ``ratio`` = (label, a, b): median a / median b. Returns the medians by measurement."""

    def row(label: str, name: str, s: dict[str, float]) -> list[str]:
        return [label, name, *(f"{s[k]:.{digits}f}" for k in ("p50", "p99", "mean"))]

    rows = [row(f"run {i}", name, s) for i, run in enumerate(runs, 1) for name, s in run.items()]
    med = {name: _median_stats([run[name] for run in runs]) for name in runs[0]}
    rows += [row("median", name, s) for name, s in med.items()]
    label, a, b = ratio
    rows.append(["ratio", label, *(_ratio(med[a][k], med[b][k]) for k in ("p50", "p99", "mean"))])
    print()
    print_table(["", what, f"p50 {unit}", f"p99 {unit}", f"mean {unit}"], rows)
    return med


# --- the topic map (a, b) ----------------------------------------------------------------------------


@dataclass
class MapSetup:
    classifier: CentroidClassifier
    centroids: Floats  # (k, d) unit rows, the classifier's centroids
    ids: tuple[str, ...]
    threshold: float
    held_texts: list[str]
    held_vectors: Floats
    summary: dict[str, Any]


def _load(data: Path, sources: Sequence[tuple[str, str]], cache: Path) -> tuple[list[str], Floats]:
    texts: list[str] = []
    parts = []
    for slug, rel in sources:
        path = data / rel
        if not path.exists():
            raise SystemExit(f"{path} does not exist (use --data to point at the shared data)")
        t, _ = read_source(path, "text", "label")
        parts.append(embed_cached(slug, t, cache))  # the same cache files as cluster_quality.py
        texts += t
    return texts, np.vstack(parts).astype(np.float32)


def build_map(data: Path, n_texts: int, n_clusters: int, cache: Path, seed: int) -> MapSetup:
    from otel_topics.classify import auto_threshold
    from otel_topics.clustering import ClusteringSettings, cluster
    from otel_topics.model import Cluster, TopicMap

    pool_texts, pool_vecs = _load(data, MAP_SOURCES, cache)
    first: dict[str, int] = {}
    for i, t in enumerate(pool_texts):
        first.setdefault(_key(t), i)
    unique = np.fromiter(first.values(), dtype=np.int64)
    if n_texts > unique.size:
        raise SystemExit(f"--map-texts {n_texts}: only {unique.size} distinct texts in the map sources")
    chosen = np.random.default_rng(seed).permutation(unique)[:n_texts]
    x = pool_vecs[chosen]
    map_keys = {_key(pool_texts[i]) for i in chosen.tolist()}

    held_all, held_vecs = _load(data, HELD_OUT_SOURCES, cache)
    keep: list[int] = []
    seen: set[str] = set()
    for i, t in enumerate(held_all):
        k = _key(t)
        if k not in map_keys and k not in seen:
            seen.add(k)
            keep.append(i)

    settings = ClusteringSettings(
        method="kmeans", reduction="none", n_clusters=n_clusters, sample_size=n_texts, fit_size=n_texts
    )
    started = time.perf_counter()
    result = cluster(x, settings=settings, rng_seed=seed)
    seconds = time.perf_counter() - started
    clusters = [
        Cluster(
            id=f"c{i:04d}",
            name=f"topic {i}",
            centroid=[float(v) for v in result.centroids[i]],
            size=int(result.sizes[i]),
            radius=float(result.radii[i]),
        )
        for i in range(result.n_clusters)
    ]
    threshold = auto_threshold(clusters)
    topic_map = TopicMap(MAP, "Task", 1, clusters, threshold, embedder=MODEL_ID, created_at=time.time())
    classifier = CentroidClassifier(embedder=MODEL_ID)
    classifier.swap(topic_map)
    classifier.swap(replace(topic_map, name=TOP1, distance_threshold=2.0))
    centroids = np.array([c.centroid for c in clusters], dtype=np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    print(
        f"topic map: {result.n_clusters} clusters (k-means, asked {n_clusters}) of {n_texts} texts "
        f"({_words([pool_texts[i] for i in chosen.tolist()]):.1f} words on average) in {seconds:.1f}s; "
        f"auto threshold {threshold:.3f}; {len(keep)} held-out query texts"
    )
    return MapSetup(
        classifier=classifier,
        centroids=centroids,
        ids=tuple(c.id for c in clusters),
        threshold=threshold,
        held_texts=[held_all[i] for i in keep],
        held_vectors=np.ascontiguousarray(held_vecs[keep]),
        summary={
            "map_texts": n_texts,
            "clusters": result.n_clusters,
            "threshold": round(threshold, 4),
            "cluster_seconds": round(seconds, 2),
            "held_out_texts": len(keep),
        },
    )


# --- (a) lookup alone --------------------------------------------------------------------------------


def _reference(centroids: Floats, ids: Sequence[str], threshold: float) -> Callable[[Floats], str]:
    """Exact brute force: the label of the nearest centroid (largest inner product) or no_match."""

    def lookup(q: Floats) -> str:
        sims = centroids @ q[0]
        best = int(np.argmax(sims))
        return ids[best] if 1.0 - float(sims[best]) <= threshold else NO_MATCH

    return lookup


def part_a(setup: MapSetup, runs: int, queries: int, seed: int) -> dict[str, Any]:
    classifier, vecs = setup.classifier, setup.held_vectors
    reference = _reference(setup.centroids, setup.ids, setup.threshold)
    print(
        f"(a) lookup alone: {queries} calls per run of classify(map, vector[1 x {vecs.shape[1]}]) over "
        f"{vecs.shape[0]} held-out vectors, {len(setup.ids)} centroids; {runs} runs; {load_note()}"
    )

    # Agreement, on every held-out vector: nearest centroid (map copy with threshold 2) and decision.
    ours_top1 = [c.cluster_id for c in classifier.classify(TOP1, vecs)]
    sims = vecs @ setup.centroids.T
    best = sims.argmax(axis=1)
    ref_top1 = [setup.ids[i] for i in best.tolist()]
    top1_agree = float(np.mean([a == b for a, b in zip(ours_top1, ref_top1, strict=True)]))
    ours_label = [c.cluster_id or NO_MATCH for c in classifier.classify(MAP, vecs)]
    ref_label = [reference(vecs[i : i + 1]) for i in range(vecs.shape[0])]
    label_agree = float(np.mean([a == b for a, b in zip(ours_label, ref_label, strict=True)]))
    match_rate = float(np.mean([label != NO_MATCH for label in ours_label]))

    perf = time.perf_counter_ns
    per_run: list[dict[str, dict[str, float]]] = []
    for run in range(1, runs + 1):
        order = np.random.default_rng(seed + run).integers(0, vecs.shape[0], queries)
        qs = [vecs[i : i + 1] for i in order.tolist()]
        for q in qs[:200]:  # warm-up, not counted
            classifier.classify(MAP, q)
            reference(q)
        ours: list[int] = []
        ref: list[int] = []
        for q in qs:
            t0 = perf()
            classifier.classify(MAP, q)
            ours.append(perf() - t0)
        for q in qs:
            t0 = perf()
            reference(q)
            ref.append(perf() - t0)
        per_run.append({"CentroidClassifier": _us(ours), "numpy brute force": _us(ref)})
    med = _latency_table(
        "lookup", "µs", 1, per_run, ("ours / numpy", "CentroidClassifier", "numpy brute force")
    )
    o, r = med["CentroidClassifier"], med["numpy brute force"]
    print(
        f"\n    agreement with numpy: nearest centroid {top1_agree:.2%}, match / no_match and cluster "
        f"{label_agree:.2%}; {match_rate:.1%} of the held-out queries are within the threshold"
    )
    print(f"    target p99 <= 1 ms: {'met' if o['p99'] <= 1000 else 'NOT met'} ({o['p99']:.1f} µs)")
    return {
        "calls_per_run": queries,
        "ours_us": o,
        "numpy_us": r,
        "ratio_p99": round(o["p99"] / r["p99"], 2) if r["p99"] else None,
        "top1_agreement": round(top1_agree, 4),
        "label_agreement": round(label_agree, 4),
        "match_rate": round(match_rate, 4),
    }


# --- (b) embed + lookup of one facet text ------------------------------------------------------------


def part_b(setup: MapSetup, embedder: LocalEmbedder, runs: int, n: int, seed: int) -> dict[str, Any]:
    classifier = setup.classifier
    pick = np.random.default_rng(seed).permutation(len(setup.held_texts))[:n]
    texts = [setup.held_texts[i] for i in pick.tolist()]
    print(
        f"(b) embed + lookup of one facet text: {len(texts)} held-out texts per run "
        f"({_words(texts):.1f} words on average), LocalEmbedder with {embedder.threads} thread(s); "
        f"{runs} runs; {load_note()}"
    )
    for t in texts[:20]:  # warm-up (model load, first inferences), not counted
        classifier.classify(MAP, embedder.embed_sync([t]))
    perf = time.perf_counter_ns
    per_run: list[dict[str, dict[str, float]]] = []
    for _ in range(runs):
        both: list[int] = []
        emb: list[int] = []
        look: list[int] = []
        for text in texts:
            t0 = perf()
            vector = embedder.embed_sync([text])
            t1 = perf()
            classifier.classify(MAP, vector)
            t2 = perf()
            both.append(t2 - t0)
            emb.append(t1 - t0)
            look.append(t2 - t1)
        per_run.append({"embed + lookup": _ms(both), "embed alone": _ms(emb), "lookup alone": _ms(look)})
    med = _latency_table(
        "per facet text", "ms", 3, per_run, ("(embed + lookup) / embed", "embed + lookup", "embed alone")
    )
    b, e, lk = med["embed + lookup"], med["embed alone"], med["lookup alone"]
    share = lk["mean"] / b["mean"] if b["mean"] else 0.0
    print(f"\n    the lookup is {share:.1%} of the mean embed + lookup time")
    print(f"    target p99 <= 20 ms: {'met' if b['p99'] <= 20 else 'NOT met'} ({b['p99']:.2f} ms)")
    return {
        "texts": len(texts),
        "mean_words": round(_words(texts), 1),
        "threads": embedder.threads,
        "embed_lookup_ms": b,
        "embed_ms": e,
        "lookup_ms": lk,
        "ratio_p99": round(b["p99"] / e["p99"], 3) if e["p99"] else None,
    }


# --- (c) embedding throughput ------------------------------------------------------------------------


def sentences(data: Path) -> list[str]:
    """Distinct user turns of the τ-bench airline trajectories with 15-30 words, in file order."""
    low, high = SENTENCE_WORDS
    out: dict[str, None] = {}
    for conv in load_conversations(data):
        for m in conv:
            text = m.get("content")
            if m.get("role") == "user" and isinstance(text, str) and low <= len(text.split()) <= high:
                out.setdefault(text, None)
    return list(out)


def part_c(embedder: LocalEmbedder, runs: int, texts: list[str], batch: int, seed: int) -> dict[str, Any]:
    texts = [texts[i] for i in np.random.default_rng(seed).permutation(len(texts)).tolist()]
    print(
        f"(c) embedding throughput: {len(texts)} τ-bench user turns ({_words(texts):.1f} words on average), "
        f"LocalEmbedder batch_size {embedder.batch_size}, {embedder.threads} thread(s); {runs} runs; "
        f"{load_note()}"
    )
    embedder.embed_sync(texts[:batch])  # warm-up
    perf = time.perf_counter
    rates: dict[str, list[float]] = {"calls": [], "one": [], "single": []}
    rows: list[list[str]] = []
    for run in range(1, runs + 1):
        t0 = perf()
        for i in range(0, len(texts), batch):
            embedder.embed_sync(texts[i : i + batch])
        t1 = perf()
        embedder.embed_sync(texts)
        t2 = perf()
        for t in texts:
            embedder.embed_sync([t])
        t3 = perf()
        got = {
            "calls": len(texts) / (t1 - t0),
            "one": len(texts) / (t2 - t1),
            "single": len(texts) / (t3 - t2),
        }
        for k, v in got.items():
            rates[k].append(v)
        rows.append(
            [
                f"run {run}",
                *(f"{got[k]:,.0f}" for k in ("calls", "one", "single")),
                _ratio(got["calls"], got["single"]),
            ]
        )
    med = {k: median(v) for k, v in rates.items()}
    rows.append(
        [
            "median",
            *(f"{med[k]:,.0f}" for k in ("calls", "one", "single")),
            _ratio(med["calls"], med["single"]),
        ]
    )
    print()
    print_table(
        ["sentences/s", f"calls of {batch}", "one call (all texts)", "one text per call", f"{batch} / 1"],
        rows,
    )
    return {
        "sentences": len(texts),
        "mean_words": round(_words(texts), 1),
        "threads": embedder.threads,
        "batch": batch,
        "batch_per_s": round(med["calls"], 1),
        "one_call_per_s": round(med["one"], 1),
        "single_per_s": round(med["single"], 1),
        "ratio": round(med["calls"] / med["single"], 2) if med["single"] else None,
    }


# --- (d) the facet and embedding caches on repeated traffic ------------------------------------------


class FakeLLM:
    """A chat-completions server on a loopback port, in a thread of this process. It answers each
    request with the facets stored for the conversation in the prompt and counts the requests."""

    def __init__(self, answers: dict[str, dict[str, str]], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.requests = 0
        self.unknown = 0
        self._lock = threading.Lock()
        llm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                payload = json.dumps(llm.answer(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-llm", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        user = next((m["content"] for m in body["messages"] if m.get("role") == "user"), "")
        rendered = user.partition("<conversation>\n")[2].rpartition("\n</conversation>")[0]
        facets = self.answers.get(rendered)
        with self._lock:
            self.requests += 1
            self.unknown += facets is None
        if self.delay:
            time.sleep(self.delay)
        values = self.wire(facets or {})
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps(values)},
                    "finish_reason": "stop",
                }
            ],
        }

    @staticmethod
    def wire(facets: dict[str, str]) -> dict[str, str]:
        """Facet values as an LLM writes them (no_match is the prompt's NONE)."""
        return {k: ("NONE" if v == NO_MATCH else v) for k, v in facets.items()}

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _counter(name: str, labels: dict[str, str]) -> float:
    from otel_topics.metrics import REGISTRY

    return REGISTRY.get_sample_value(f"otel_topics_{name}_total", labels) or 0.0


def _counters() -> dict[str, float]:
    return {
        "facet_hits": _counter("llm_requests", {"outcome": "cache_hit"}),
        "llm_ok": _counter("llm_requests", {"outcome": "ok"}),
        "embed_hits": _counter("embed_cache", {"result": "hit"}),
        "embed_misses": _counter("embed_cache", {"result": "miss"}),
    }


def zipf_draws(n_items: int, n: int, exponent: float, seed: int) -> list[int]:
    """``n`` draws of item indices, P(rank r) proportional to 1 / r**exponent, ranks shuffled."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** exponent
    by_rank = rng.permutation(n_items)
    ranks = rng.choice(n_items, size=n, p=weights / weights.sum())
    return [int(by_rank[r]) for r in ranks.tolist()]


@dataclass(frozen=True)
class Traffic:
    """One run's traces: the conversation behind each, and what a perfect cache would save."""

    picks: list[int]  # conversation index of each trace
    distinct: int  # distinct conversations among them: the fewest LLM calls possible
    embed_lookups: int  # facet texts the enricher embeds (each trace's distinct texts)
    embed_distinct: int  # distinct facet texts among those: the fewest embeddings possible

    @property
    def traces(self) -> int:
        return len(self.picks)


@dataclass
class Replay:
    mode: str
    traffic: Traffic
    must_ask: int  # LLM calls no cache can avoid (0 when the store already has every answer)
    facet_hits: int
    llm_requests: int
    embed_hits: int
    embed_lookups: int
    seconds: float
    statuses: dict[str, int]

    @property
    def ideal(self) -> float:
        n = self.traffic.traces
        return 1.0 - self.must_ask / n if n else 0.0

    @property
    def hit_rate(self) -> float:
        n = self.traffic.traces
        return self.facet_hits / n if n else 0.0

    @property
    def embed_ideal(self) -> float:
        t = self.traffic
        return 1.0 - t.embed_distinct / t.embed_lookups if t.embed_lookups else 0.0

    @property
    def embed_rate(self) -> float:
        return self.embed_hits / self.embed_lookups if self.embed_lookups else 0.0


async def _replay(
    mode: str,
    config: Any,
    store: Any,
    inner: Any,
    traces: Sequence[Any],
    llm: FakeLLM,
    concurrency: int,
    rate: float,
) -> dict[str, Any]:
    """Enrich ``traces`` with the sidecar's own wiring; returns the counters' increments."""
    from otel_topics.embed import CachedEmbedder
    from otel_topics.enrich import MapBinding, StoreRunner, TraceEnricher
    from otel_topics.facets.cache import StoreFacetCache
    from otel_topics.service import build_extractor
    from otel_topics.workers import build_preprocessor

    t = config.topics
    extractor = build_extractor(config, StoreFacetCache(store))  # as Service.start does
    embedder = CachedEmbedder(inner, max_entries=t.embedder.cache_size)  # as build_embedder does
    runner = StoreRunner(store)
    enricher = TraceEnricher(
        preprocessor=build_preprocessor(t.preprocess),
        extractor=extractor,
        embedder=embedder,
        classifier=CentroidClassifier(embedder=embedder.name),  # no map loaded: vectors are still made
        maps=[MapBinding(m.name or m.facet, m.facet) for m in config.topic_maps()],
        store=runner,
        retry_attempts=t.llm.retry.max_attempts,
        retry_interval=t.llm.retry.interval,
    )
    before, requests0 = _counters(), llm.requests
    statuses: Counter[str] = Counter()
    sem = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one(trace: Any) -> None:
        try:
            statuses[(await enricher.enrich(trace)).status] += 1
        finally:
            sem.release()

    started = loop.time()
    tasks = []
    for i, trace in enumerate(traces):
        if rate > 0:
            await asyncio.sleep(max(0.0, started + i / rate - loop.time()))
        await sem.acquire()
        tasks.append(asyncio.create_task(one(trace)))
    await asyncio.gather(*tasks)
    seconds = loop.time() - started
    close = getattr(extractor, "aclose", None)
    if close is not None:
        await close()
    runner.close()  # its thread only: the store stays open for the next replay
    after = _counters()
    delta = {k: round(after[k] - before[k]) for k in after}
    return {
        "facet_hits": delta["facet_hits"],
        "llm_requests": llm.requests - requests0,
        "embed_hits": delta["embed_hits"],
        "embed_lookups": delta["embed_hits"] + delta["embed_misses"],
        "seconds": seconds,
        "statuses": dict(statuses),
    }


def part_d(
    data: Path, runs: int, n: int, exponent: float, rate: float, delay: float, concurrency: int, seed: int
) -> dict[str, Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_topics.api import split_by_trace
    from otel_topics.config import parse_config
    from otel_topics.facets import prompt, spec_from_config
    from otel_topics.facets.heuristic import HeuristicFacetExtractor
    from otel_topics.replay import TraceBuilder
    from otel_topics.service import build_embedder
    from otel_topics.store import open_store
    from otel_topics.workers import build_preprocessor

    convs = load_conversations(data)
    builder = TraceBuilder()

    def trace_of(conv: Any) -> Any:  # a new trace (new ids) of the conversation
        (trace,) = split_by_trace(ExportTraceServiceRequest(resource_spans=[builder.build(conv)]))
        return trace

    results: list[list[Replay]] = []
    rows: list[list[str]] = []
    with FakeLLM({}) as llm, tempfile.TemporaryDirectory(prefix="otel-topics-bench-") as tmp:
        config = parse_config(
            f"processors:\n  topics:\n    llm: {{type: openai, base_url: '{llm.base_url}', model: bench}}\n"
        )
        t = config.topics
        specs = [spec_from_config(f) for f in t.facets]
        map_facets = [m.facet for m in config.topic_maps()]

        # The LLM's answers: the heuristic extractor's facets of each conversation, keyed by what the
        # OpenAI extractor puts in its prompt (the rendered, preprocessed conversation).
        pre = build_preprocessor(t.preprocess)
        heuristic = HeuristicFacetExtractor()
        rendered: list[str] = []
        embed_texts: list[frozenset[str]] = []  # per conversation: the facet texts the enricher embeds
        for conv in convs:
            conversation = pre(trace_of(conv))
            assert conversation is not None
            text = prompt.render(conversation, None)
            answer = heuristic.extract_sync(conversation)
            llm.answers[text] = answer
            rendered.append(text)
            facets = prompt.parse_answer(json.dumps(FakeLLM.wire(answer)), specs)  # as the extractor reads it
            embed_texts.append(
                frozenset(facets[f] for f in map_facets if facets.get(f, NO_MATCH) != NO_MATCH)
            )

        inner: Any = build_embedder(config)
        inner = getattr(inner, "inner", inner)  # the LocalEmbedder under serve's CachedEmbedder
        inner.embed_sync(["warm up"])
        print(
            f"(d) caches on repeated traffic: {n} traces per run drawn with a Zipf law (exponent {exponent}) "
            f"from {len(convs)} τ-bench conversations ({len(set(rendered))} distinct as rendered); "
            f"{runs} runs; {load_note()}"
        )
        print(
            f"    serve's wiring for llm: {{type: openai}}: facet cache StoreFacetCache (in-memory LRU of "
            f"10,000 + the SQLite store), CachedEmbedder of {t.embedder.cache_size:,} vectors, "
            f"{t.llm.concurrency} LLM requests at once; facet texts embedded: {', '.join(map_facets)}"
        )

        def replay(
            mode: str, traffic: Traffic, store: Any, must_ask: int, workers: int, pace: float
        ) -> Replay:
            traces = [trace_of(convs[i]) for i in traffic.picks]
            got = asyncio.run(_replay(mode, config, store, inner, traces, llm, workers, pace))
            return Replay(mode, traffic, must_ask, **got)

        for run in range(1, runs + 1):
            picks = zipf_draws(len(convs), n, exponent, seed + run)
            traffic = Traffic(
                picks=picks,
                distinct=len({rendered[i] for i in picks}),
                embed_lookups=sum(len(embed_texts[i]) for i in picks),
                embed_distinct=len(set().union(*(embed_texts[i] for i in picks))),
            )
            done: list[Replay] = []
            store = open_store(f"sqlite:///{tmp}/run{run}.db")
            try:
                llm.delay = 0.0
                done.append(replay("sequential", traffic, store, traffic.distinct, 1, 0.0))
                # a restart: new in-memory caches over the same store, the same conversations again
                done.append(replay("after restart", traffic, store, 0, 1, 0.0))
            finally:
                store.close()
            store = open_store(f"sqlite:///{tmp}/run{run}-concurrent.db")
            try:
                llm.delay = delay
                done.append(replay("concurrent", traffic, store, traffic.distinct, concurrency, rate))
            finally:
                store.close()
            results.append(done)
            for r in done:
                bad = {k: v for k, v in r.statuses.items() if k != "ok"}
                rows.append(
                    [
                        f"run {run}",
                        r.mode,
                        str(r.traffic.traces),
                        str(r.traffic.distinct),
                        f"{r.hit_rate:.1%}",
                        f"{r.ideal:.1%}",
                        str(r.llm_requests),
                        f"{r.embed_rate:.1%}",
                        f"{r.embed_ideal:.1%}",
                        f"{r.seconds:.1f}" + (f" {bad}" if bad else ""),
                    ]
                )
        if llm.unknown:
            print(f"    WARNING: {llm.unknown} LLM requests carried a conversation the fake LLM did not know")

    summary: dict[str, Any] = {"traces": n, "zipf": exponent, "conversations": len(convs)}
    for i, mode in enumerate(r.mode for r in results[0]):
        rs = [run[i] for run in results]
        med = {
            key: median([float(getattr(r, key)) for r in rs])
            for key in ("hit_rate", "ideal", "llm_requests", "embed_rate", "embed_ideal", "seconds")
        }
        distinct = median([r.traffic.distinct for r in rs])
        rows.append(
            [
                "median",
                mode,
                str(n),
                f"{distinct:.0f}",
                f"{med['hit_rate']:.1%}",
                f"{med['ideal']:.1%}",
                f"{med['llm_requests']:.0f}",
                f"{med['embed_rate']:.1%}",
                f"{med['embed_ideal']:.1%}",
                f"{med['seconds']:.1f}",
            ]
        )
        summary[mode.replace(" ", "_")] = {
            "distinct_conversations": distinct,
            "facet_hit_rate": round(med["hit_rate"], 4),
            "facet_hit_rate_ideal": round(med["ideal"], 4),
            "facet_vs_ideal": round(med["hit_rate"] / med["ideal"], 3) if med["ideal"] else None,
            "llm_calls": med["llm_requests"],
            "embed_hit_rate": round(med["embed_rate"], 4),
            "embed_hit_rate_ideal": round(med["embed_ideal"], 4),
        }
    print()
    print_table(
        [
            "",
            "replay",
            "traces",
            "distinct",
            "facet cache hit",
            "ideal",
            "LLM calls",
            "embed cache hit",
            "ideal",
            "seconds",
        ],
        rows,
    )
    print(
        "\n    hit = hits / lookups (the sidecar's own counters); ideal = the best any cache can do on this "
        "traffic: 1 - distinct / lookups.\n    sequential: one trace at a time, the LLM answers at once; "
        "after restart: the same traffic again, new in-memory caches over the same store;\n"
        f"    concurrent: up to {concurrency} traces enriched at once, arriving at {rate:g}/s, the LLM "
        f"answering after {delay:g}s (a repeat arriving while the first is still being asked misses)"
    )
    summary.update(concurrency=concurrency, rate=rate, llm_delay=delay)
    return summary


# --- main --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", choices=("a", "b", "c", "d"), action="append", help="run only this part (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per part; medians are reported (default 3)")
    parser.add_argument(
        "--map-texts", type=int, default=10_000, help="(a, b) texts of the topic map (default 10000)"
    )
    parser.add_argument("--clusters", type=int, default=500, help="(a, b) k-means clusters (default 500)")
    parser.add_argument("--queries", type=int, default=20_000, help="(a) lookups per run (default 20000)")
    parser.add_argument("--embed-queries", type=int, default=1000, help="(b) texts per run (default 1000)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime threads of the LocalEmbedder in (b, c) (default: its own, 1)",
    )
    parser.add_argument("--batch", type=int, default=32, help="(c) texts per embed call (default 32)")
    parser.add_argument(
        "--sentences", type=int, default=0, help="(c) use at most this many sentences (default 0: all, 759)"
    )
    parser.add_argument("--traffic", type=int, default=1000, help="(d) traces per run (default 1000)")
    parser.add_argument(
        "--zipf", type=float, default=1.0, help="(d) Zipf exponent of the draws (default 1.0)"
    )
    parser.add_argument(
        "--rate", type=float, default=50.0, help="(d) concurrent replay: traces/s (default 50)"
    )
    parser.add_argument(
        "--llm-delay", type=float, default=0.5, help="(d) concurrent replay: LLM answer time, s"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="(d) traces enriched at once (default 64)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/otel_vecs"), help="vector cache directory")
    parser.add_argument("--data", type=Path, default=DATA, help=f"shared data directory (default {DATA})")
    args = parser.parse_args()
    for name in (
        "runs",
        "map_texts",
        "clusters",
        "queries",
        "embed_queries",
        "batch",
        "traffic",
        "concurrency",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.rate < 0 or args.llm_delay < 0 or args.zipf < 0:
        parser.error("--rate, --llm-delay and --zipf must be >= 0")
    parts = set(args.only or ("a", "b", "c", "d"))

    summary: dict[str, Any] = {}
    embedder: LocalEmbedder | None = None
    if parts & {"b", "c"}:
        embedder = LocalEmbedder(threads=args.threads)
        embedder.load()
    if parts & {"a", "b"}:
        setup = build_map(args.data, args.map_texts, args.clusters, args.cache, args.seed)
        summary["map"] = setup.summary
        print()
        if "a" in parts:
            summary["lookup"] = part_a(setup, args.runs, args.queries, args.seed)
            print()
        if "b" in parts:
            assert embedder is not None
            summary["embed_lookup"] = part_b(setup, embedder, args.runs, args.embed_queries, args.seed)
            print()
    if "c" in parts:
        assert embedder is not None
        texts = sentences(args.data)
        if args.sentences:
            texts = texts[: args.sentences]
        summary["throughput"] = part_c(embedder, args.runs, texts, args.batch, args.seed)
        print()
    if "d" in parts:
        summary["caches"] = part_d(
            args.data,
            args.runs,
            args.traffic,
            args.zipf,
            args.rate,
            args.llm_delay,
            args.concurrency,
            args.seed,
        )
        print()
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
