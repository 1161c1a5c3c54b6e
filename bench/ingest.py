"""Ingest-and-forward benchmark (not a test): rotel vs ``otel-topics serve`` at sampling_rate 0.

    python bench/ingest.py [--requests 1500] [--traces-per-request 32] [--spans-per-trace 8]
                           [--streams 8] [--runs 3] [--only rotel|durable|fast] [--baseline]
                           [--compression gzip|none] [--dir PATH] [--timeout 600]

A load generator (its own process) sends PREBUILT, pre-serialized, uncompressed OTLP/gRPC trace
requests of GenAI-style spans (about 10 attributes each) over ``--streams`` concurrent connections
(one thread each) to:

- ``rotel``:   rotel (Rust) forwarding to a counting OTLP/gRPC sink (rotel's default batching,
  8192 spans or 200 ms);
- ``durable``: ``otel-topics serve`` with ``processors.topics.sampling_rate: 0``, default durability
  (spool fsync on, persistent exporter sending queue) and an ``otlp`` exporter to the same kind of sink;
- ``fast``:    the same with ``spool.fsync: false`` and ``sending_queue: {enabled: false}``;
- ``direct`` (with ``--baseline``): the load generator straight into the sink, the harness's ceiling.

Exporter compression (``--compression``, default gzip) is the same on both sides: rotel 0.0.1a15 gzips
its gRPC exports even with ``--otlp-exporter-compression none`` (checked on the wire), so turning it off
for otel-topics only (``--compression none``) would not be like for like.

The sink runs in its own process and counts spans at the protobuf wire level. A measurement is the
time from the first send to the moment the sink has counted every span; each target is started
fresh for each run (after a 20-request warm-up), and the targets are interleaved run by run so
machine-load drift hits all alike. Prints spans/s per measurement (with the target's CPU seconds,
read from /proc), a table of medians with ratios vs rotel (median of the per-run ratios), and a
one-line JSON summary.

Note: at sampling_rate 0 otel-topics does not spool spans at all (sampled-out spans go straight to the
exporter), so ``spool.fsync`` has no effect here; durability is the exporter's persistent queue.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    CTX,
    TRACE_SERVICE,
    CountingSink,
    Process,
    json_line,
    load_note,
    median,
    print_table,
    start_rotel,
    start_sidecar,
)

TARGETS = ("rotel", "durable", "fast")
WARMUP_REQUESTS = 20

# --- request generation ------------------------------------------------------------------------------

_MODELS = ("gpt-4o-2024-08-06", "claude-sonnet-4-5", "gemini-2.5-flash", "llama-3.3-70b-instruct")
_TOOLS = (
    "search_flights",
    "get_reservation_details",
    "update_reservation",
    "cancel_reservation",
    "calculate",
)
_ANSWERS = (
    "I found two direct flights from JFK to SFO on May 14; the 9:05 AM departure has seats in economy.",
    "Your reservation 8JX2LQ has been updated: the return leg now departs at 6:40 PM.",
    "I'm sorry, the basic economy fare cannot be changed, but it can be cancelled within 24 hours.",
    "The total refund for the cancelled segment will be $312.40 to the original payment method.",
)


def _kv(key: str, value: str | int | float | bool | Sequence[str]) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    arr = ArrayValue(values=[AnyValue(string_value=v) for v in value])
    return KeyValue(key=key, value=AnyValue(array_value=arr))


def _template(traces: int, spans_per_trace: int, rng: random.Random) -> Any:
    """One ResourceSpans of ``traces`` traces of ``spans_per_trace`` spans each (ids filled in later):
    an ``invoke_agent`` root, then alternating ``chat`` and ``execute_tool`` children."""
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

    rs = ResourceSpans()
    rs.resource.attributes.extend(
        [
            _kv("service.name", "support-agent"),
            _kv("service.version", "1.14.2"),
            _kv("deployment.environment.name", "production"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.38.0"),
            _kv("host.name", "agent-7f9c6d5b8-x2k4q"),
        ]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.scope.version = "2.1b0"
    for _ in range(traces):
        model = rng.choice(_MODELS)
        conv = f"conv_{rng.getrandbits(48):012x}"
        for i in range(spans_per_trace):
            span = ss.spans.add(kind=Span.SPAN_KIND_INTERNAL)
            if i == 0:
                span.name = "invoke_agent support-agent"
                span.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "invoke_agent"),
                        _kv("gen_ai.agent.name", "support-agent"),
                        _kv("gen_ai.agent.id", "asst_5Kq2m9XbP0"),
                        _kv("gen_ai.conversation.id", conv),
                        _kv("gen_ai.provider.name", "openai"),
                        _kv("gen_ai.request.model", model),
                        _kv("gen_ai.usage.input_tokens", rng.randint(2_000, 40_000)),
                        _kv("gen_ai.usage.output_tokens", rng.randint(100, 3_000)),
                        _kv("user.id", f"u_{rng.getrandbits(32):08x}"),
                        _kv("session.id", f"s_{rng.getrandbits(64):016x}"),
                    ]
                )
            elif i % 2 == 1:
                span.name = f"chat {model}"
                span.kind = Span.SPAN_KIND_CLIENT
                answer = rng.choice(_ANSWERS)
                span.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "chat"),
                        _kv("gen_ai.provider.name", "openai"),
                        _kv("gen_ai.request.model", model),
                        _kv("gen_ai.response.model", model),
                        _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(96):024x}"),
                        _kv("gen_ai.request.temperature", 0.2),
                        _kv("gen_ai.usage.input_tokens", rng.randint(500, 8_000)),
                        _kv("gen_ai.usage.output_tokens", rng.randint(20, 600)),
                        _kv("gen_ai.response.finish_reasons", ["stop" if i > 3 else "tool_calls"]),
                        _kv(
                            "gen_ai.output.messages",
                            '[{"role":"assistant","parts":[{"type":"text","content":"' + answer + '"}]}]',
                        ),
                        _kv("server.address", "api.openai.com"),
                    ]
                )
            else:
                tool = rng.choice(_TOOLS)
                span.name = f"execute_tool {tool}"
                call_id = f"call_{rng.getrandbits(64):016x}"
                failed = rng.random() < 0.05
                span.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "execute_tool"),
                        _kv("gen_ai.tool.name", tool),
                        _kv("gen_ai.tool.type", "function"),
                        _kv("gen_ai.tool.call.id", call_id),
                        _kv("gen_ai.tool.call.arguments", '{"reservation_id":"8JX2LQ","cabin":"economy"}'),
                        _kv(
                            "gen_ai.tool.call.result",
                            "Error: reservation not found" if failed else '{"status":"ok","flights":2}',
                        ),
                        _kv("gen_ai.conversation.id", conv),
                        _kv("code.function.name", f"tools.{tool}"),
                    ]
                )
                if failed:
                    span.status.code = Status.STATUS_CODE_ERROR
                    span.status.message = "reservation not found"
    return rs


def build_requests(count: int, traces: int, spans_per_trace: int, seed: int = 1) -> list[bytes]:
    """``count`` serialized ExportTraceServiceRequests; every trace and span id is fresh."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    rng = random.Random(seed)
    templates = [_template(traces, spans_per_trace, rng) for _ in range(min(count, 8))]
    out: list[bytes] = []
    now = time.time_ns()
    step = 40_000_000
    for n in range(count):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.CopyFrom(templates[n % len(templates)])
        spans = rs.scope_spans[0].spans
        t0 = now - 60_000_000_000 + n * 1_000_000
        trace_id = root_id = b""
        for i, span in enumerate(spans):
            k = i % spans_per_trace
            if k == 0:
                trace_id = os.urandom(16)
                root_id = os.urandom(8)
                span.span_id = root_id
                span.start_time_unix_nano = t0
                span.end_time_unix_nano = t0 + spans_per_trace * step
            else:
                span.span_id = os.urandom(8)
                span.parent_span_id = root_id
                span.start_time_unix_nano = t0 + k * step
                span.end_time_unix_nano = t0 + (k + 1) * step - 1
            span.trace_id = trace_id
        out.append(req.SerializeToString())
    return out


# --- the load generator process ---------------------------------------------------------------------


def _send_all(port: int, requests: Sequence[bytes], streams: int) -> dict[str, Any]:
    """Send every request over ``streams`` connections (one thread each). Returns timings and retries."""
    import grpc

    method = f"/{TRACE_SERVICE}/Export"
    channels = [
        grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 512 << 20)],
        )
        for _ in range(streams)
    ]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=30)
    stubs = [ch.unary_unary(method, None, None) for ch in channels]  # no serializers: bytes in and out
    next_index = iter(range(len(requests))).__next__  # atomic under the GIL
    lock = threading.Lock()
    stats: dict[str, Any] = {"retries": 0, "errors": [], "rejected": 0}
    start = {"t0": 0.0}

    def stamp() -> None:
        start["t0"] = time.monotonic()

    barrier = threading.Barrier(streams, action=stamp)

    def worker(stub: Any) -> None:
        barrier.wait()
        while True:
            try:
                i = next_index()
            except StopIteration:
                return
            delay = 0.05
            for _attempt in range(200):
                try:
                    resp = stub(requests[i], timeout=120)
                    if resp:  # non-empty response: partial success
                        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                            ExportTraceServiceResponse,
                        )

                        rejected = ExportTraceServiceResponse.FromString(resp).partial_success.rejected_spans
                        with lock:
                            stats["rejected"] += rejected
                    break
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                        with lock:
                            stats["retries"] += 1
                        time.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                    with lock:
                        stats["errors"].append(f"request {i}: {code}: {exc.details()}")
                    break
            else:
                with lock:
                    stats["errors"].append(f"request {i}: gave up after 200 attempts")

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in stubs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stats["t0"] = start["t0"]
    stats["t_acked"] = time.monotonic()
    for ch in channels:
        ch.close()
    return stats


def _loadgen_main(conn: Any, requests: int, traces: int, spans_per_trace: int) -> None:
    started = time.perf_counter()
    reqs = build_requests(requests, traces, spans_per_trace)
    warm = build_requests(WARMUP_REQUESTS, traces, spans_per_trace, seed=2)
    conn.send(
        {
            "built_s": time.perf_counter() - started,
            "bytes": sum(len(r) for r in reqs),
            "spans": requests * traces * spans_per_trace,
            "spans_per_request": traces * spans_per_trace,
        }
    )
    while True:
        msg = conn.recv()
        if msg is None:
            return
        port, streams, warmup = msg
        try:
            conn.send(_send_all(port, warm if warmup else reqs, streams))
        except Exception as exc:  # report to the parent instead of dying silently
            conn.send({"errors": [f"load generator: {type(exc).__name__}: {exc}"]})


class LoadGenerator:
    def __init__(self, requests: int, traces: int, spans_per_trace: int) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(
            target=_loadgen_main,
            args=(child, requests, traces, spans_per_trace),
            daemon=True,
            name="bench-load",
        )
        self.proc.start()
        self.info: dict[str, Any] = self.conn.recv()

    def send(self, port: int, streams: int, warmup: bool = False) -> dict[str, Any]:
        self.conn.send((port, streams, warmup))
        result: dict[str, Any] = self.conn.recv()
        return result

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(10)


# --- one measurement ---------------------------------------------------------------------------------


def start_target(target: str, sink: CountingSink, workdir: Path, compression: str) -> tuple[Process, int]:
    if target == "rotel":
        return start_rotel(sink.port, workdir, compression)
    durable = target == "durable"
    topics = (
        "{sampling_rate: 0, "
        f"spool: {{fsync: {'true' if durable else 'false'}}}, "
        "automation: {enabled: false}}"
    )
    exporter = (
        f"{{endpoint: '127.0.0.1:{sink.port}', tls: {{insecure: true}}, compression: {compression}, "
        f"sending_queue: {{enabled: {'true' if durable else 'false'}}}}}"
    )
    return start_sidecar(topics, exporter, workdir)


class _Nothing:
    """Stands in for a target process when the load generator sends straight to the sink."""

    def cpu(self) -> float:
        return 0.0

    def check_alive(self, what: str) -> None:
        pass

    def tail(self) -> str:
        return ""

    def stop(self) -> None:
        pass


def measure(
    target: str,
    load: LoadGenerator,
    sink: CountingSink,
    workdir: Path,
    streams: int,
    timeout: float,
    compression: str,
) -> dict[str, Any]:
    proc: Process | _Nothing
    if target == "direct":
        proc, port = _Nothing(), sink.port
    else:
        proc, port = start_target(target, sink, workdir, compression)
    try:
        warm_spans = WARMUP_REQUESTS * load.info["spans_per_request"]
        sink.arm(warm_spans)
        warm = load.send(port, streams, warmup=True)
        if warm.get("errors"):
            raise RuntimeError(f"{target}: warm-up failed: {warm['errors'][:3]}\n{proc.tail()}")
        if not sink.wait_done(60):
            raise RuntimeError(f"{target}: warm-up spans not delivered ({sink.spans}/{warm_spans})")
        time.sleep(0.5)  # let the batch of the warm-up drain completely
        expected = load.info["spans"]
        sink.arm(expected)
        cpu0 = proc.cpu()
        result = load.send(port, streams)
        if result.get("errors"):
            raise RuntimeError(
                f"{target}: {len(result['errors'])} failed requests, first: {result['errors'][:3]}"
            )
        ok = sink.wait_done(timeout)
        proc.check_alive(target)
        cpu = proc.cpu() - cpu0
        if not ok:
            raise RuntimeError(
                f"{target}: only {sink.spans}/{expected} spans reached the sink in {timeout:.0f}s"
            )
        done = sink.done_at
        time.sleep(0.3)
        extra = sink.spans - expected  # duplicates (at-least-once) would show here
        elapsed = done - result["t0"]
        return {
            "target": target,
            "spans": expected,
            "elapsed_s": elapsed,
            "spans_per_s": expected / elapsed,
            "acked_s": result["t_acked"] - result["t0"],
            "cpu_s": cpu,
            "retries": result["retries"],
            "rejected": result["rejected"],
            "extra_spans": extra,
        }
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500, help="requests per run (default 1500)")
    parser.add_argument("--traces-per-request", type=int, default=32, help="traces per request (default 32)")
    parser.add_argument("--spans-per-trace", type=int, default=8, help="spans per trace (default 8)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent connections/threads (default 8)")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per target; the median is reported (default 3)"
    )
    parser.add_argument("--only", choices=TARGETS, action="append", help="run only this target (repeatable)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also measure the load generator sending straight to the sink (the harness's ceiling)",
    )
    parser.add_argument(
        "--compression",
        choices=("gzip", "none"),
        default="gzip",
        help="exporter compression towards the sink, for both (default gzip: rotel 0.0.1a15 gzips its gRPC "
        "exports even when told not to, so gzip on both is the like-for-like comparison)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="parent of the work directory (the disk under test)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for one run's spans (s)")
    args = parser.parse_args()
    if args.requests < 1 or args.traces_per_request < 1 or args.spans_per_trace < 1 or args.streams < 1:
        parser.error("--requests, --traces-per-request, --spans-per-trace and --streams must be >= 1")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    targets = [t for t in TARGETS if not args.only or t in args.only]
    if args.baseline:
        targets.insert(0, "direct")

    sink = CountingSink().start()
    load = LoadGenerator(args.requests, args.traces_per_request, args.spans_per_trace)
    spans = load.info["spans"]
    print(
        f"{args.requests} requests x {args.traces_per_request} traces x {args.spans_per_trace} spans = "
        f"{spans} spans ({load.info['bytes'] / 1e6:.1f} MB uncompressed, "
        f"built in {load.info['built_s']:.1f}s), "
        f"{args.streams} streams, {args.runs} runs; {load_note()}"
    )
    print(
        f"exporter compression: {args.compression} for otel-topics; rotel is given "
        f"--otlp-exporter-compression {args.compression} but gzips its gRPC exports regardless"
    )
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    ratios: dict[str, list[float]] = {t: [] for t in targets if t not in ("rotel", "direct")}
    try:
        with tempfile.TemporaryDirectory(prefix="otel-topics-bench-", dir=args.dir) as tmp:
            for run in range(1, args.runs + 1):
                by_target: dict[str, float] = {}
                for target in targets:
                    r = measure(target, load, sink, Path(tmp), args.streams, args.timeout, args.compression)
                    results[target].append(r)
                    by_target[target] = r["spans_per_s"]
                    print(
                        f"run {run} {target:8s} {r['spans_per_s']:>10,.0f} spans/s  "
                        f"{r['elapsed_s']:6.2f}s to last span "
                        f"(acked after {r['acked_s']:5.2f}s)  cpu {r['cpu_s']:5.1f}s  "
                        f"retries {r['retries']}  duplicates {r['extra_spans']}",
                        flush=True,
                    )
                if "rotel" in by_target:
                    for t in ratios:
                        if t in by_target:
                            ratios[t].append(by_target[t] / by_target["rotel"])
    finally:
        load.close()
        sink.stop()

    rows = []
    summary: dict[str, Any] = {
        "spans": spans,
        "requests": args.requests,
        "streams": args.streams,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "compression": args.compression,
    }
    for t in targets:
        rates = [r["spans_per_s"] for r in results[t]]
        cpu_per_m = median([r["cpu_s"] / r["spans"] * 1e6 for r in results[t]])
        ratio = median(ratios[t]) if ratios.get(t) else None
        rows.append(
            [
                t,
                f"{median(rates):,.0f}",
                f"{min(rates):,.0f}",
                f"{max(rates):,.0f}",
                "-" if t == "direct" else f"{cpu_per_m:.2f}",
                "-" if ratio is None else f"{ratio:.3f}",
            ]
        )
        summary[t] = {"spans_per_s": round(median(rates)), "cpu_s_per_million_spans": round(cpu_per_m, 3)}
        if ratio is not None:
            summary[t]["ratio_vs_rotel"] = round(ratio, 4)
    print()
    print_table(
        ["target", "median spans/s", "min", "max", "cpu s / M spans", "ratio vs rotel (median)"], rows
    )
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
