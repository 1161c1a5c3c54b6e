"""Memory benchmark (not a test): peak RSS of ``otel-topics serve`` holding 100,000 spans in flight, vs rotel.

    python bench/memory.py [--spans 100000] [--source tau|synthetic] [--batch 8] [--streams 4] [--runs 3]
                           [--only rotel|default|raised] [--idle 60] [--raised-max-bytes 2GiB]
                           [--release idle|drain] [--no-unique] [--series FILE] [--data PATH]
                           [--timeout SECONDS]

Target (issue): peak RSS with 100,000 spans in flight (traces not yet idle) <= 1 GiB.

Load: ``--spans`` spans, built once and sent to every target as the same pre-serialized, uncompressed
OTLP/gRPC requests of ``--batch`` traces each, over ``--streams`` connections (``ingest._send_all``).
``--source tau`` (default): the 200 τ-bench airline trajectories (shared data) cycled, each copy turned
into a GenAI-convention trace by ``otel_topics.replay.TraceBuilder`` (root + one span per assistant turn
and tool result, ~19 spans and ~170 KB a trace: every ``chat`` span carries the whole history), user
turns made unique per copy unless ``--no-unique``, the last copy cut so the total is exactly
``--spans``. ``--source synthetic``: ``ingest.build_requests`` (8-span traces, ~0.6 KB a span).

Targets, each a fresh process per run, interleaved run by run:

- ``default``: ``otel-topics serve``, ``sampling_rate: 1``, heuristic facets, automation off, default
  durability, ``assembler: {idle: --idle, max_wait: 10m}`` and the DEFAULT ``assembler.max_bytes``
  (512 MiB of pending spans; past it the oldest traces are released early: the design bound on memory);
- ``raised``: the same with ``assembler.max_bytes: --raised-max-bytes`` (default 2 GiB), enough to hold
  every span, so that all of them really are in flight;
- ``rotel``: the rotel agent forwarding to the same sink (it forwards in batches, it does not hold traces).

Per run: start, warm up (otel-topics: one ``TopicsService/Enrich`` call with a few traces, which loads
the embedding model without going through the assembler; rotel: the same traces exported and waited
for at the sink), then send the load. The process's VmRSS and VmHWM (/proc/<pid>/status) are sampled
every 100 ms throughout. Recorded: the baseline (after warm-up), the peak up to the moment every
request is acknowledged plus 2 s (spans in flight: VmHWM then), the peak and resident size after
release, and the lifetime peak: the process's last VmHWM seen before it exits. Not ``ru_maxrss`` from
``wait4``: that also counts the moment between fork and exec, when the child is a copy of this script,
which holds the whole prebuilt load (~900 MiB at 100k τ-bench spans); it is printed in the JSON only.
The children of the process (otel-topics' ``workers``) are sampled too: "with workers" is the largest
sampled sum of the process's and its children's VmRSS.

Release (otel-topics): ``--release idle`` (default) waits for the traces to go idle (``--idle`` after
their last span; ``--idle`` must exceed the time the load takes to send, which the script checks), then
for every span at the sink, then 2 s, then stops the process. ``--release drain`` sends SIGTERM right
after the in-flight measurement: the sidecar releases every pending trace at once and forwards them
before exiting (spans it cannot forward within its 30 s stop budget stay spooled on disk: the sink count
says how many arrived).

In flight is checked: spans at the sink when every request was acknowledged (0 unless the byte budget
released traces early), and the sidecar's ``otel_topics_traces_pending``, ``otel_topics_pending_bytes``
and ``otel_topics_traces_released_total`` metrics.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    CountingSink,
    Process,
    json_line,
    load_note,
    median,
    print_table,
    start_rotel,
    start_sidecar,
)
from enrich import DATA, _copies, _span_count, load_conversations
from ingest import _send_all, build_requests

from otel_topics.config import AssemblerSettings
from otel_topics.config_values import format_size, parse_size

TARGETS = ("rotel", "default", "raised")
TARGET_MIB = 1024.0
SETTLE_S = 2.0
SAMPLE_S = 0.1
ENRICH_METHOD = "/otel_topics.v1.TopicsService/Enrich"
Conversation = list[dict[str, Any]]


def mib(kib: float | None) -> float:
    return float("nan") if kib is None else kib / 1024


# --- the load ----------------------------------------------------------------------------------------


def _truncate(conv: Conversation, spans: int) -> Conversation:
    """The longest prefix of ``conv`` that ``TraceBuilder`` turns into exactly ``spans`` spans."""
    out: Conversation = []
    for msg in conv:
        if msg.get("role") in ("assistant", "tool") and _span_count(out) == spans:
            break
        out.append(msg)
    return out


def tau_load(
    convs: Sequence[Conversation], spans: int, batch: int, unique: bool
) -> tuple[list[bytes], int, bytes, int]:
    """(requests, traces, warm-up request, warm-up spans) from the τ-bench conversations."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_topics.replay import TraceBuilder

    n = total = 0
    while total < spans:
        total += _span_count(convs[n % len(convs)])
        n += 1
    copies = _copies(convs, n, unique)
    copies[-1] = _truncate(copies[-1], _span_count(copies[-1]) - (total - spans))
    builder = TraceBuilder()
    requests = [
        ExportTraceServiceRequest(
            resource_spans=[builder.build(c) for c in copies[i : i + batch]]
        ).SerializeToString()
        for i in range(0, n, batch)
    ]
    warm_convs = _copies(convs[-4:], 4, unique, offset=10_000_000)
    warm = ExportTraceServiceRequest(resource_spans=[builder.build(c) for c in warm_convs])
    return requests, n, warm.SerializeToString(), sum(_span_count(c) for c in warm_convs)


def synthetic_load(spans: int, batch: int) -> tuple[list[bytes], int, bytes, int]:
    """``ingest.build_requests``: ``batch`` traces of 8 spans a request, rounded up to whole requests."""
    count = math.ceil(spans / (batch * 8))
    (warm,) = build_requests(1, batch, 8, seed=2)
    return build_requests(count, batch, 8), count * batch, warm, batch * 8


# --- RSS sampling --------------------------------------------------------------------------------------


def read_rss(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a live process in KiB, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE))
    if "VmRSS" not in values or "VmHWM" not in values:
        return None  # a zombie has no memory lines
    return int(values["VmRSS"]), int(values["VmHWM"])


def children_rss(pid: int) -> int:
    """Summed VmRSS (KiB) of a process's direct children (otel-topics' worker processes)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            value = read_rss(int(kid))
            total += value[0] if value else 0
    return total


@dataclass
class Sampler:
    """VmRSS / VmHWM of one process every ``SAMPLE_S`` in a thread, with the phase at each sample."""

    pid: int
    phase: str = "start"
    samples: list[tuple[float, str, int, int, int]] = field(default_factory=list)  # ..., rss, hwm, children
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.now()
            self._stop.wait(SAMPLE_S)

    def now(self) -> tuple[int, int] | None:
        value = read_rss(self.pid)
        if value is not None:
            self.samples.append((time.monotonic(), self.phase, *value, children_rss(self.pid)))
        return value

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def max_rss(self, phases: Sequence[str]) -> int | None:
        values = [s[2] for s in self.samples if s[1] in phases]
        return max(values) if values else None

    def peak_hwm(self) -> int | None:
        """The process's own peak RSS: its last VmHWM seen (sampled until it exits)."""
        return max((s[3] for s in self.samples), default=None)

    def peak_tree(self) -> int | None:
        """The largest sampled VmRSS of the process plus its children."""
        return max((s[2] + s[4] for s in self.samples), default=None)


def stop_with_rusage(proc: Process, timeout: float) -> tuple[int | None, int | None]:
    """SIGTERM, then reap with ``wait4``: (exit code, lifetime peak RSS in KiB from ``ru_maxrss``).
    SIGKILL after ``timeout`` seconds."""
    popen = proc.proc
    if popen.returncode is not None:
        return popen.returncode, None
    popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid:
            popen.returncode = os.waitstatus_to_exitcode(status)
            return popen.returncode, int(usage.ru_maxrss)
        if time.monotonic() > deadline:
            popen.kill()
            _, status, usage = os.wait4(popen.pid, 0)
            popen.returncode = os.waitstatus_to_exitcode(status)
            return popen.returncode, int(usage.ru_maxrss)
        time.sleep(0.05)


# --- the sidecar's own view ----------------------------------------------------------------------------


def metrics_port(workdir: Path, grpc_port: int) -> int:
    """The telemetry port ``start_sidecar`` wrote into the config it generated."""
    text = (workdir / f"sidecar-{grpc_port}.yaml").read_text()
    match = re.search(r"metrics: \{address: '[^:']+:(\d+)'\}", text)
    if match is None:
        raise RuntimeError("no telemetry address in the generated sidecar config")
    return int(match.group(1))


def scrape(port: int) -> dict[str, float]:
    """Pending traces and bytes and released traces by reason, from the sidecar's /metrics."""
    wanted = ("otel_topics_traces_pending", "otel_topics_pending_bytes", "otel_topics_traces_released_total")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            out[name.replace("otel_topics_", "").replace("traces_released_total", "released")] = float(value)
    return out


def warm_enrich(port: int, request: bytes) -> None:
    """One ``TopicsService/Enrich`` call: loads the embedding model without touching the assembler."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        channel.unary_unary(ENRICH_METHOD, None, None)(request, timeout=300)


# --- one measurement -----------------------------------------------------------------------------------


@dataclass
class Load:
    requests: list[bytes]
    spans: int
    traces: int
    warm: bytes
    warm_spans: int

    @property
    def payload_bytes(self) -> int:
        return sum(len(r) for r in self.requests)


def start_target(
    target: str, sink: CountingSink, workdir: Path, idle: float, raised: int
) -> tuple[Process, int]:
    if target == "rotel":
        return start_rotel(sink.port, workdir, "none")
    assembler = f"idle: {idle:g}s, max_wait: {max(600.0, 2 * idle):g}s"
    if target == "raised":
        assembler += f", max_bytes: {raised}"
    topics = (
        f"{{sampling_rate: 1, assembler: {{{assembler}}}, llm: {{type: heuristic}}, "
        "automation: {enabled: false}}"
    )
    exporter = f"{{endpoint: '127.0.0.1:{sink.port}', tls: {{insecure: true}}, compression: none}}"
    return start_sidecar(topics, exporter, workdir)


def measure(
    target: str, load: Load, sink: CountingSink, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    proc, port = start_target(target, sink, workdir, args.idle, args.raised_max_bytes)
    sampler = Sampler(proc.pid).start()
    sidecar = target != "rotel"
    mport = metrics_port(workdir, port) if sidecar else 0
    result: dict[str, Any] = {"target": target}
    try:
        sampler.phase = "warm-up"
        if sidecar:
            warm_enrich(port, load.warm)
        else:
            sink.arm(load.warm_spans)
            warm = _send_all(port, [load.warm], 1)
            if warm.get("errors") or not sink.wait_done(60):
                raise RuntimeError(f"{target}: warm-up failed ({sink.spans}/{load.warm_spans} spans)")
        time.sleep(1.0)
        base = sampler.now()
        sampler.phase = "load"
        sink.arm(load.spans)
        sent = _send_all(port, load.requests, args.streams)
        if sent.get("errors"):
            raise RuntimeError(
                f"{target}: {len(sent['errors'])} failed requests, first: {sent['errors'][:3]}"
            )
        proc.check_alive(target)
        result["send_s"] = sent["t_acked"] - sent["t0"]
        result["retries"] = sent["retries"]
        result["sink_at_ack"] = sink.spans
        time.sleep(SETTLE_S)
        sampler.phase = "release"
        in_flight = sampler.now()
        result["sink_in_flight"] = sink.spans
        result["metrics_in_flight"] = scrape(mport) if sidecar else {}
        after: tuple[int, int] | None = None
        if sidecar and args.release == "drain":
            code, maxrss = stop_with_rusage(proc, 120)
            sink.wait_done(60)
        else:
            if not sink.wait_done(args.timeout):
                raise RuntimeError(
                    f"{target}: only {sink.spans}/{load.spans} spans reached the sink in {args.timeout:.0f}s"
                    f"\n{proc.tail()}"
                )
            result["released_s"] = sink.done_at - sent["t0"]
            time.sleep(SETTLE_S)
            after = sampler.now()
            result["metrics_after"] = scrape(mport) if sidecar else {}
            sampler.phase = "stop"
            code, maxrss = stop_with_rusage(proc, 120)
        sampler.stop()
        time.sleep(0.3)
        result.update(
            exit_code=code,
            sink_spans=sink.spans,
            baseline_kib=base[0] if base else None,
            baseline_peak_kib=base[1] if base else None,
            load_max_rss_kib=sampler.max_rss(("load",)),
            in_flight_rss_kib=in_flight[0] if in_flight else None,
            in_flight_peak_kib=in_flight[1] if in_flight else None,
            after_rss_kib=after[0] if after else None,
            release_peak_kib=after[1] if after else None,
            lifetime_peak_kib=sampler.peak_hwm(),
            tree_peak_kib=sampler.peak_tree(),
            wait4_maxrss_kib=maxrss,
            sampled_max_kib=sampler.max_rss(("start", "warm-up", "load", "release", "stop")),
            samples=sampler.samples,
        )
        return result
    finally:
        sampler.stop()
        proc.stop()


def describe(run: int, r: dict[str, Any], spans: int) -> str:
    m = r.get("metrics_in_flight") or {}
    held = ""
    if m:
        early = m.get('released{reason="max_bytes"}', 0.0)
        idle = m.get('released{reason="idle"}', 0.0) + m.get('released{reason="max_wait"}', 0.0)
        held = (
            f"  pending {m.get('traces_pending', 0):.0f} traces / {m.get('pending_bytes', 0) / 2**20:.0f} MiB"
            f", released early (max_bytes) {early:.0f}, by idle {idle:.0f}"
        )
    release = (
        f"after release {mib(r['after_rss_kib']):6.0f} (peak {mib(r['release_peak_kib']):6.0f})"
        if r.get("after_rss_kib") is not None
        else "drained on SIGTERM"
    )
    return (
        f"run {run} {r['target']:7s} baseline {mib(r['baseline_kib']):4.0f} MiB "
        f"(peak {mib(r['baseline_peak_kib']):4.0f})  in flight: rss {mib(r['in_flight_rss_kib']):5.0f} "
        f"peak {mib(r['in_flight_peak_kib']):5.0f} (sampled max in load {mib(r['load_max_rss_kib']):5.0f})  "
        f"{release}  lifetime peak {mib(r['lifetime_peak_kib']):6.0f} "
        f"(with workers {mib(r['tree_peak_kib']):6.0f})  "
        f"sent in {r['send_s']:5.1f}s  at sink: {r['sink_in_flight']}/{spans} in flight, "
        f"{r['sink_spans']}/{spans} at the end"
        + (f" (all {r['released_s']:.1f}s after the first send)" if r.get("released_s") else "")
        + held
    )


def check(r: dict[str, Any], spans: int, idle: float) -> list[str]:
    """What contradicts "every span in flight, then every span delivered" in one measurement."""
    problems = []
    if r["sink_spans"] != spans:
        problems.append(f"{r['sink_spans']} spans reached the sink, {spans} were sent")
    if r["target"] == "rotel":
        return problems
    if r["send_s"] >= idle:
        problems.append(
            f"sending took {r['send_s']:.0f}s >= idle {idle:g}s: traces went idle during the load"
        )
    m = r.get("metrics_in_flight") or {}
    early = m.get('released{reason="max_bytes"}', 0.0)
    if r["sink_in_flight"] and not early:
        problems.append(f"{r['sink_in_flight']} spans reached the sink before release, not by max_bytes")
    elif r["sink_in_flight"] and r["target"] == "raised":
        problems.append(f"'raised' released {early:.0f} traces early: raise --raised-max-bytes")
    return problems


def write_series(path: Path, series: list[tuple[str, int, list[tuple[float, str, int, int, int]]]]) -> None:
    with path.open("w") as out:
        out.write("target,run,t_s,phase,vmrss_kib,vmhwm_kib,children_rss_kib\n")
        for target, run, samples in series:
            t0 = samples[0][0] if samples else 0.0
            for t, phase, rss, hwm, kids in samples:
                out.write(f"{target},{run},{t - t0:.2f},{phase},{rss},{hwm},{kids}\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=100_000, help="spans per run (default 100000)")
    parser.add_argument(
        "--source", choices=("tau", "synthetic"), default="tau", help="τ-bench conversations or synthetic"
    )
    parser.add_argument("--batch", type=int, default=8, help="traces per OTLP request (default 8)")
    parser.add_argument("--streams", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per target (default 3)")
    parser.add_argument("--only", choices=TARGETS, action="append", help="run only this target (repeatable)")
    parser.add_argument(
        "--idle",
        type=float,
        default=60.0,
        help="assembler idle (s); must exceed the time the load takes to send (default 60)",
    )
    parser.add_argument(
        "--raised-max-bytes",
        type=lambda v: parse_size(v, positive=True),
        default="2GiB",
        help="assembler.max_bytes of the 'raised' target (default 2GiB)",
    )
    parser.add_argument(
        "--release",
        choices=("idle", "drain"),
        default="idle",
        help="how otel-topics lets go of the spans: traces going idle, or SIGTERM (default idle)",
    )
    parser.add_argument(
        "--no-unique", action="store_true", help="tau: do not make the copies' user turns unique"
    )
    parser.add_argument("--series", type=Path, default=None, help="write every RSS sample to this CSV")
    parser.add_argument("--data", type=Path, default=DATA, help=f"shared data directory (default {DATA})")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="longest wait for the spans at the sink (default idle + 900 s)",
    )
    args = parser.parse_args()
    if min(args.spans, args.batch, args.streams, args.runs) < 1 or args.idle <= 0:
        parser.error("--spans, --batch, --streams, --runs and --idle must be positive")
    if args.timeout is None:
        args.timeout = args.idle + 900.0
    targets = [t for t in TARGETS if not args.only or t in args.only]
    default_budget = AssemblerSettings().max_bytes

    started = time.perf_counter()
    if args.source == "tau":
        built = tau_load(load_conversations(args.data), args.spans, args.batch, not args.no_unique)
    else:
        built = synthetic_load(args.spans, args.batch)
    requests, traces, warm, warm_spans = built
    spans = args.spans if args.source == "tau" else traces * 8
    load = Load(requests, spans, traces, warm, warm_spans)
    payload = load.payload_bytes
    print(
        f"{spans} spans in {traces} traces ({args.source}"
        f"{', unique user turns' if args.source == 'tau' and not args.no_unique else ''}), "
        f"{len(requests)} requests of {args.batch} traces, {payload / 2**20:.1f} MiB of OTLP payload "
        f"(uncompressed), built in {time.perf_counter() - started:.1f}s; {args.streams} streams, "
        f"{args.runs} runs; {load_note()}"
    )
    print(
        f"otel-topics: idle {args.idle:g}s, release by {args.release}; 'default' = assembler.max_bytes "
        f"{format_size(default_budget)} (default), 'raised' = {format_size(args.raised_max_bytes)}"
    )
    if payload > default_budget:
        print(
            f"note: the payload ({payload / 2**20:.0f} MiB) exceeds the default assembler.max_bytes "
            f"({format_size(default_budget)}): 'default' releases its oldest traces early, by design"
        )
    if payload > args.raised_max_bytes:
        print("WARNING: the payload exceeds --raised-max-bytes: 'raised' will release traces early too")

    sink = CountingSink().start()
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    series: list[tuple[str, int, list[tuple[float, str, int, int, int]]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="otel-topics-bench-") as tmp:
            for run in range(1, args.runs + 1):
                for target in targets:
                    r = measure(target, load, sink, Path(tmp), args)
                    series.append((target, run, r.pop("samples")))
                    results[target].append(r)
                    print(describe(run, r, spans), flush=True)
                    for problem in check(r, spans, args.idle):
                        print(f"    WARNING: {problem}", flush=True)
    finally:
        sink.stop()
    if args.series is not None:
        write_series(args.series, series)
        print(f"RSS samples written to {args.series}")

    def num(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 1)

    def med(target: str, key: str) -> float:
        values = [r[key] for r in results[target] if r.get(key) is not None]
        return mib(median(values)) if values else float("nan")

    rotel_peak = med("rotel", "lifetime_peak_kib") if "rotel" in results else float("nan")
    summary: dict[str, Any] = {
        "spans": spans,
        "traces": traces,
        "payload_bytes": payload,
        "source": args.source,
        "runs": args.runs,
        "release": args.release,
        "idle_s": args.idle,
        "target_mib": TARGET_MIB,
    }

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = []
    for t in targets:
        runs = results[t]
        in_flight = num(med(t, "in_flight_peak_kib"))
        lifetime = num(med(t, "lifetime_peak_kib"))
        peaks = [mib(r["lifetime_peak_kib"]) for r in runs if r.get("lifetime_peak_kib") is not None]
        entry: dict[str, Any] = {
            "baseline_mib": num(med(t, "baseline_kib")),
            "baseline_peak_mib": num(med(t, "baseline_peak_kib")),
            "in_flight_rss_mib": num(med(t, "in_flight_rss_kib")),
            "load_max_rss_mib": num(med(t, "load_max_rss_kib")),
            "in_flight_peak_mib": in_flight,
            "after_release_rss_mib": num(med(t, "after_rss_kib")),
            "lifetime_peak_mib": lifetime,
            "lifetime_peak_runs_mib": [round(p, 1) for p in peaks],
            "with_children_peak_mib": num(med(t, "tree_peak_kib")),
            "wait4_maxrss_mib": num(med(t, "wait4_maxrss_kib")),
            "spans_at_sink_in_flight": median([r["sink_in_flight"] for r in runs]),
            "spans_at_sink_end": median([r["sink_spans"] for r in runs]),
        }
        if t != "rotel":
            entry["max_bytes"] = default_budget if t == "default" else args.raised_max_bytes
            entry["released_early_traces"] = median(
                [(r.get("metrics_in_flight") or {}).get('released{reason="max_bytes"}', 0.0) for r in runs]
            )
            entry["in_flight_meets_target"] = in_flight is not None and in_flight <= TARGET_MIB
            entry["lifetime_meets_target"] = lifetime is not None and lifetime <= TARGET_MIB
            if lifetime is not None and not math.isnan(rotel_peak):
                entry["ratio_vs_rotel"] = round(lifetime / rotel_peak, 2)
        summary[t] = entry
        rows.append(
            [
                t,
                show(entry["baseline_mib"]),
                show(in_flight),
                show(entry["after_release_rss_mib"]),
                show(lifetime),
                show(min(peaks)) if peaks else "-",
                show(max(peaks)) if peaks else "-",
                show(entry["with_children_peak_mib"]),
                f"{entry['spans_at_sink_in_flight']:.0f}/{spans}",
                f"{entry['ratio_vs_rotel']:.2f}" if "ratio_vs_rotel" in entry else "-",
            ]
        )
    print()
    print_table(
        [
            "target (MiB, medians)",
            "baseline",
            "peak in flight",
            "rss after release",
            "lifetime peak",
            "min",
            "max",
            "with workers",
            "spans at sink in flight",
            "lifetime peak vs rotel",
        ],
        rows,
    )
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
