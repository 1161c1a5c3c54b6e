"""Enrichment benchmark (not a test): heuristic facets per trace, in process and through ``serve``.

    python bench/enrich.py [--part a|b|both] [--passes 3] [--centroids 500] [--embed-threads N]
                           [--traces 2000] [--runs 3] [--batch 8] [--senders 2] [--unique]
                           [--no-durability] [--workers N] [--no-reference] [--data PATH] [--timeout 600]

(a) In process, on the 200 τ-bench airline trajectories (``tau_bench/gpt-4o-airline.json`` of the shared
    data) turned into GenAI-convention spans by ``otel_topics.replay.TraceBuilder`` and into TraceData by
    ``otel_topics.api.split_by_trace``: per-trace latency (p50, p99, mean) of ``DefaultPreprocessor``,
    ``HeuristicFacetExtractor`` and both; then of embedding the trace's free-text facet values (Task,
    Issues) with ``LocalEmbedder`` and classifying each against its own topic map of ``--centroids``
    random unit centroids with ``CentroidClassifier``; and the embedder's batched throughput over all
    facet texts. Each pass uses a fresh preprocessor (its redaction and token-count caches start empty).

(b) Through ``otel-topics serve`` (subprocess; heuristic facets, ``sampling_rate: 1``, ``assembler.idle:
    1s``, default durability unless ``--no-durability``, ``compression: none``) to a counting OTLP sink in
    its own process: ``--traces`` traces (cycling the 200 conversations) are sent with
    ``otel_topics.replay.send`` from ``--senders`` threads; a run is the time from the first send until the
    sink has received every root span carrying ``facets.Task``. Each run uses a fresh sidecar after a
    10-trace warm-up (model load). Reports enriched traces/s, median of ``--runs``. The reference: after
    each run, rotel forwards the same traces to a span-counting sink (no enrichment), timed to the last
    span; the ratio is otel-topics / rotel (``--no-reference`` skips it).

    Caveats printed with the result: cycling 200 conversations lets the sidecar's caches (redaction,
    token counts, embeddings) hit after the first 200 traces, which flatters the figure; ``--unique``
    appends a per-copy marker to every user message so that facet texts, and so embeddings, differ. The
    1 s idle wait is part of every trace's latency but overlaps across traces.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    REPO,
    CountingSink,
    json_line,
    load_note,
    median,
    percentile,
    print_table,
    start_rotel,
    start_sidecar,
)

DATA = REPO.parent / "shared" / "data"
TAU = "agent_trajectories/tau_bench/gpt-4o-airline.json"
FREE_TEXT = ("Task", "Issues")  # the built-in free-text facets (Sentiment is a category: no topic map)

Conversation = list[dict[str, Any]]


def load_conversations(data: Path) -> list[Conversation]:
    path = data / TAU
    if not path.is_file():
        raise SystemExit(f"τ-bench trajectories not found at {path} (use --data to point at the shared data)")
    return [t["traj"] for t in json.loads(path.read_text(encoding="utf-8"))]


def _stats(name: str, seconds: Sequence[float]) -> list[str]:
    ms = [s * 1e3 for s in seconds]
    mean = sum(ms) / len(ms)
    return [
        name,
        f"{percentile(ms, 50):.3f}",
        f"{percentile(ms, 99):.3f}",
        f"{mean:.3f}",
        f"{1e3 / mean:,.0f}" if mean else "-",
    ]


# --- (a) in process ----------------------------------------------------------------------------------


def part_a(
    convs: Sequence[Conversation], passes: int, centroids: int, threads: int | None, seed: int = 7
) -> dict[str, Any]:
    import numpy as np
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_topics.api import split_by_trace
    from otel_topics.classify import CentroidClassifier
    from otel_topics.embed import LocalEmbedder
    from otel_topics.facets.heuristic import HeuristicFacetExtractor
    from otel_topics.model import NO_MATCH, Cluster, TopicMap
    from otel_topics.preprocess import DefaultPreprocessor
    from otel_topics.replay import TraceBuilder

    builder = TraceBuilder()
    traces = []
    for conv in convs:
        (trace,) = split_by_trace(ExportTraceServiceRequest(resource_spans=[builder.build(conv)]))
        traces.append(trace)
    spans = [sum(len(ss.spans) for rs in t.spans.resource_spans for ss in rs.scope_spans) for t in traces]
    print(
        f"(a) {len(traces)} traces, {median(spans):.0f} spans each (median, max {max(spans)}), "
        f"{passes} passes, topic maps of {centroids} random unit centroids"
    )

    started = time.perf_counter()
    extractor = HeuristicFacetExtractor()
    embedder = LocalEmbedder(threads=threads)
    embedder.load()
    classifier = CentroidClassifier(embedder=embedder.name)
    rng = np.random.default_rng(seed)
    for facet in FREE_TEXT:
        cents = rng.standard_normal((centroids, embedder.dimension)).astype(np.float32)
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        clusters = [
            Cluster(id=f"{facet}-{i}", name=f"topic {i}", centroid=c.tolist()) for i, c in enumerate(cents)
        ]
        classifier.swap(
            TopicMap(
                facet,
                facet,
                1,
                clusters,
                distance_threshold=0.8,
                embedder=embedder.name,
                created_at=time.time(),
            )
        )
    warm = DefaultPreprocessor()
    warm_facets = extractor.extract_sync(warm(traces[0]))
    embedder.embed_sync([v for v in warm_facets.values() if v != NO_MATCH] or ["warm up"])
    print(f"    setup (extractor, embedder load, maps, warm-up): {time.perf_counter() - started:.1f}s")

    times: dict[str, list[float]] = {k: [] for k in ("pre", "facets", "embed", "classify")}
    chars: list[int] = []
    all_texts: set[str] = set()
    perf = time.perf_counter
    for _ in range(passes):
        pre = DefaultPreprocessor()  # fresh caches each pass
        for trace in traces:
            t0 = perf()
            conversation = pre(trace)
            t1 = perf()
            facets = extractor.extract_sync(conversation)
            t2 = perf()
            wanted = [(f, facets[f]) for f in FREE_TEXT if facets.get(f, NO_MATCH) != NO_MATCH]
            texts = sorted({v for _, v in wanted})
            vectors = embedder.embed_sync(texts)
            t3 = perf()
            row = {t: i for i, t in enumerate(texts)}
            for facet, value in wanted:
                classifier.classify(facet, vectors[row[value] : row[value] + 1])
            t4 = perf()
            times["pre"].append(t1 - t0)
            times["facets"].append(t2 - t1)
            times["embed"].append(t3 - t2)
            times["classify"].append(t4 - t3)
            chars.append(len(conversation.render()))
            all_texts.update(texts)

    both = [a + b for a, b in zip(times["pre"], times["facets"], strict=True)]
    emb_cls = [a + b for a, b in zip(times["embed"], times["classify"], strict=True)]
    total = [a + b for a, b in zip(both, emb_cls, strict=True)]
    rows = [
        _stats("preprocess", times["pre"]),
        _stats("facets (heuristic)", times["facets"]),
        _stats("preprocess + facets", both),
        _stats("embed (Task, Issues)", times["embed"]),
        _stats("classify (2 maps)", times["classify"]),
        _stats("embed + classify", emb_cls),
        _stats("all four", total),
    ]
    print(f"    conversation characters: median {median(chars):,.0f}, max {max(chars):,}")
    print()
    print_table(["per trace", "p50 ms", "p99 ms", "mean ms", "traces/s (1/mean)"], rows)

    texts_list = sorted(all_texts)
    t0 = perf()
    embedder.embed_sync(texts_list)
    batch_s = perf() - t0
    print(
        f"\n    batched embedding of the {len(texts_list)} distinct facet texts "
        f"(batch_size {embedder.batch_size}, {embedder.threads} threads): "
        f"{len(texts_list) / batch_s:,.0f} texts/s"
    )

    def ms(values: Sequence[float], q: float) -> float:
        return round(percentile(values, q) * 1e3, 4)

    return {
        "traces": len(traces),
        "passes": passes,
        "preprocess_ms": {"p50": ms(times["pre"], 50), "p99": ms(times["pre"], 99)},
        "facets_ms": {"p50": ms(times["facets"], 50), "p99": ms(times["facets"], 99)},
        "preprocess_facets_ms": {"p50": ms(both, 50), "p99": ms(both, 99)},
        "embed_ms": {"p50": ms(times["embed"], 50), "p99": ms(times["embed"], 99)},
        "classify_ms": {"p50": ms(times["classify"], 50), "p99": ms(times["classify"], 99)},
        "embed_classify_ms": {"p50": ms(emb_cls, 50), "p99": ms(emb_cls, 99)},
        "batched_embed_texts_per_s": round(len(texts_list) / batch_s, 1),
    }


# --- (b) through serve -------------------------------------------------------------------------------


def _copies(convs: Sequence[Conversation], n: int, unique: bool, offset: int = 0) -> list[Conversation]:
    out: list[Conversation] = []
    for i in range(n):
        conv = convs[i % len(convs)]
        if unique:
            tag = f" [ref {offset + i}]"
            conv = [
                {**m, "content": f"{m.get('content') or ''}{tag}"} if m.get("role") == "user" else m
                for m in conv
            ]
        out.append(conv)
    return out


def _span_count(conv: Conversation) -> int:
    """Spans ``TraceBuilder`` makes of a conversation: the root, one per assistant turn and tool result."""
    return 1 + sum(m.get("role") in ("assistant", "tool") for m in conv)


def _send(convs: Sequence[Conversation], port: int, batch: int, senders: int) -> tuple[float, float]:
    """Send from ``senders`` threads with ``otel_topics.replay.send``. Returns (first send, all acked)."""
    from otel_topics import replay

    first: list[float] = []
    original = replay._send_grpc  # stamp the moment the first request goes out, after building

    def stamped(*args: Any, **kwargs: Any) -> None:
        first.append(time.monotonic())
        original(*args, **kwargs)

    errors: list[BaseException] = []
    slices = [convs[i::senders] for i in range(senders)]

    def run(part: Sequence[Conversation]) -> None:
        try:
            replay.send(part, endpoint=f"127.0.0.1:{port}", batch=batch)
        except BaseException as exc:
            errors.append(exc)

    replay._send_grpc = stamped
    try:
        threads = [threading.Thread(target=run, args=(s,)) for s in slices if s]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        replay._send_grpc = original
    if errors:
        raise RuntimeError(f"replay failed: {errors[0]!r}") from errors[0]
    return min(first), time.monotonic()


def part_b(
    convs: Sequence[Conversation],
    n: int,
    runs: int,
    batch: int,
    senders: int,
    unique: bool,
    durable: bool,
    timeout: float,
    workers: int | None = None,
    reference: bool = True,
) -> dict[str, Any]:
    print(
        f"(b) serve: {n} traces (cycling {len(convs)} conversations"
        f"{', unique user turns' if unique else ''}), batch {batch}, {senders} senders, {runs} runs, "
        f"durability {'on' if durable else 'off'}, workers {'auto' if workers is None else workers}; "
        f"{load_note()}"
    )
    topics = (
        "{sampling_rate: 1, assembler: {idle: 1s}, llm: {type: heuristic}, automation: {enabled: false}"
        + ("" if durable else ", spool: {fsync: false}")
        + ("" if workers is None else f", workers: {workers}")
        + "}"
    )
    sink = CountingSink(match_key="facets.Task").start()
    span_sink = CountingSink().start() if reference else None
    rates: list[float] = []
    ref_rates: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="otel-topics-bench-") as tmp:
            for run in range(1, runs + 1):
                exporter = (
                    f"{{endpoint: '127.0.0.1:{sink.port}', tls: {{insecure: true}}, compression: none"
                    + ("" if durable else ", sending_queue: {enabled: false}")
                    + "}"
                )
                proc, port = start_sidecar(topics, exporter, Path(tmp))
                try:
                    warm = _copies(convs[-10:], 10, unique, offset=10_000_000 + run * 1000)
                    sink.arm(len(warm))
                    _send(warm, port, batch, 1)
                    if not sink.wait_done(120):
                        raise RuntimeError(
                            f"warm-up: {sink.matched}/{len(warm)} enriched roots at the sink\n{proc.tail()}"
                        )
                    traces = _copies(convs, n, unique, offset=run * n)
                    sink.arm(n)
                    cpu0 = proc.cpu()
                    t0, t_sent = _send(traces, port, batch, senders)
                    ok = sink.wait_done(timeout)
                    proc.check_alive("otel-topics serve")
                    cpu = proc.cpu() - cpu0
                    if not ok:
                        raise RuntimeError(
                            f"only {sink.matched}/{n} roots with facets.Task ({sink.spans} spans) "
                            f"reached the sink in {timeout:.0f}s\n{proc.tail()}"
                        )
                    elapsed = sink.done_at - t0
                    expected = sum(_span_count(c) for c in traces)
                    deadline = time.monotonic() + 10
                    while sink.spans < expected and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if sink.spans != expected:
                        print(f"    WARNING: {sink.spans} spans at the sink, {expected} sent")
                    rates.append(n / elapsed)
                    print(
                        f"run {run}: {n / elapsed:8.1f} traces/s  {elapsed:6.2f}s to the last enriched root "
                        f"(sent in {t_sent - t0:5.2f}s)  {sink.spans}/{expected} spans  "
                        f"sidecar cpu {cpu:5.1f}s",
                        flush=True,
                    )
                finally:
                    proc.stop()
                if span_sink is not None:
                    ref_rates.append(_rotel_run(span_sink, traces, batch, senders, Path(tmp), timeout))
                    print(f"       rotel (no enrichment): {ref_rates[-1]:8.1f} traces/s", flush=True)
    finally:
        sink.stop()
        if span_sink is not None:
            span_sink.stop()
    print(f"\n    median {median(rates):.1f} traces/s (min {min(rates):.1f}, max {max(rates):.1f})")
    if ref_rates:
        ratios = [a / b for a, b in zip(rates, ref_rates, strict=True)]
        print(
            f"    rotel forwarding the same traces (no enrichment): median {median(ref_rates):.1f} traces/s;"
            f" otel-topics / rotel, median of the runs' ratios: {median(ratios):.2f}x"
        )
    return {
        "traces": n,
        "runs": runs,
        "unique": unique,
        "durable": durable,
        "workers": "auto" if workers is None else workers,
        "traces_per_s": round(median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "rotel_traces_per_s": round(median(ref_rates), 1) if ref_rates else None,
        "ratio_to_rotel": round(median([a / b for a, b in zip(rates, ref_rates, strict=True)]), 3)
        if ref_rates
        else None,
    }


def _rotel_run(
    sink: CountingSink, traces: Sequence[Conversation], batch: int, senders: int, work: Path, timeout: float
) -> float:
    """The same traces through rotel to a span-counting sink: traces/s until the last span arrived."""
    proc, port = start_rotel(sink.port, work)
    try:
        warm = _copies(traces[:10], 10, False)
        sink.arm(sum(_span_count(c) for c in warm))
        _send(warm, port, batch, 1)
        if not sink.wait_done(60):
            raise RuntimeError(f"rotel warm-up: {sink.spans} spans at the sink\n{proc.tail()}")
        sink.arm(sum(_span_count(c) for c in traces))
        t0, _ = _send(traces, port, batch, senders)
        if not sink.wait_done(timeout):
            raise RuntimeError(f"rotel: only {sink.spans} spans reached the sink\n{proc.tail()}")
        return len(traces) / (sink.done_at - t0)
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part", choices=("a", "b", "both"), default="both", help="which part to run (default both)"
    )
    parser.add_argument("--passes", type=int, default=3, help="(a) passes over the 200 traces (default 3)")
    parser.add_argument(
        "--centroids", type=int, default=500, help="(a) centroids per topic map (default 500)"
    )
    parser.add_argument(
        "--embed-threads",
        type=int,
        default=None,
        help="(a) onnxruntime threads of the LocalEmbedder (default: its own, 1)",
    )
    parser.add_argument("--traces", type=int, default=2000, help="(b) traces per run (default 2000)")
    parser.add_argument("--runs", type=int, default=3, help="(b) runs; the median is reported (default 3)")
    parser.add_argument("--batch", type=int, default=8, help="(b) traces per OTLP request (default 8)")
    parser.add_argument("--senders", type=int, default=2, help="(b) concurrent replay threads (default 2)")
    parser.add_argument("--unique", action="store_true", help="(b) make every copy's user turns unique")
    parser.add_argument(
        "--no-durability", action="store_true", help="(b) spool fsync off and no persistent exporter queue"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="(b) processors.topics.workers (default: its own, auto)"
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="(b) skip the rotel run (same traces, no enrichment)"
    )
    parser.add_argument("--data", type=Path, default=DATA, help=f"shared data directory (default {DATA})")
    parser.add_argument("--timeout", type=float, default=600.0, help="(b) longest wait for one run (s)")
    args = parser.parse_args()
    if min(args.passes, args.centroids, args.traces, args.runs, args.batch, args.senders) < 1:
        parser.error("--passes, --centroids, --traces, --runs, --batch and --senders must be >= 1")
    if args.embed_threads is not None and args.embed_threads < 1:
        parser.error("--embed-threads must be >= 1")
    convs = load_conversations(args.data)
    summary: dict[str, Any] = {}
    if args.part in ("a", "both"):
        summary["in_process"] = part_a(convs, args.passes, args.centroids, args.embed_threads)
        print()
    if args.part in ("b", "both"):
        summary["serve"] = part_b(
            convs,
            args.traces,
            args.runs,
            args.batch,
            args.senders,
            args.unique,
            not args.no_durability,
            args.timeout,
            args.workers,
            not args.no_reference,
        )
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
