"""Shared pieces of the benchmark scripts (not a test): a counting OTLP/gRPC sink in its own process,
``otel-topics serve`` and rotel as subprocesses, CPU accounting from /proc, and small statistics.

The sink runs in a separate process (``spawn``) so counting never competes with the system under test
for the benchmark process's GIL. Times are ``time.monotonic()``, which on Linux is one system-wide
clock (CLOCK_MONOTONIC), so the sink's and the load generator's timestamps can be compared.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_topics.otlp_wire import _skip, _varint  # the sink counts spans from raw bytes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from otel_topics.testing import free_port, wait_for_port  # noqa: E402

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
CTX = mp.get_context("spawn")  # never fork a process that may hold gRPC state

# --- protobuf wire-level span counting (cheap: no parsing of span bodies) ----------------------------


def _count_field2(buf: bytes, pos: int, end: int, inner: bool) -> int:
    """Occurrences of field 2 (LEN) in ``buf[pos:end]``; with ``inner``, the field-2 count of each."""
    n = 0
    while pos < end:
        key, pos = _varint(buf, pos)
        if key == 0x12:  # field 2, LEN: scope_spans (in ResourceSpans) / spans (in ScopeSpans)
            length, pos = _varint(buf, pos)
            n += _count_field2(buf, pos, pos + length, False) if inner else 1
            pos += length
        else:
            pos = _skip(buf, pos, key & 7)
    return n


def count_spans_wire(buf: bytes) -> int:
    """Spans in a serialized ExportTraceServiceRequest, walking only the container fields."""
    n = pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        if key == 0x0A:  # field 1, LEN: resource_spans
            length, pos = _varint(buf, pos)
            n += _count_field2(buf, pos, pos + length, True)
            pos += length
        else:
            pos = _skip(buf, pos, key & 7)
    return n


# --- the sink process -------------------------------------------------------------------------------


def _sink_main(shared: dict[str, Any], match_key: str | None, ready: Any) -> None:
    import asyncio

    import grpc

    if match_key is not None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans_v, matched_v, target_v, done_v, last_v, port_v = (
        shared[k] for k in ("spans", "matched", "target", "done_at", "last", "port")
    )

    def count(payload: bytes) -> tuple[int, int]:
        if match_key is None:
            return count_spans_wire(payload), 0
        req = ExportTraceServiceRequest.FromString(payload)
        spans = matched = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans += len(ss.spans)
                for span in ss.spans:
                    if not span.parent_span_id and any(kv.key == match_key for kv in span.attributes):
                        matched += 1
        return spans, matched

    async def export(request: bytes, context: Any) -> bytes:
        spans, matched = count(request)
        spans_v.value += spans
        matched_v.value += matched
        now = time.monotonic()
        last_v.value = now
        target = target_v.value
        reached = (matched_v.value if match_key is not None else spans_v.value) >= target
        if target > 0 and reached and done_v.value == 0.0:
            done_v.value = now
        return b""  # an empty ExportTraceServiceResponse

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 512 << 20)])
        handler = grpc.unary_unary_rpc_method_handler(export)  # no (de)serializers: raw bytes
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler}),)
        )
        port_v.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


@dataclass
class CountingSink:
    """An OTLP/gRPC trace sink in its own process. ``match_key``: also count root spans carrying that
    attribute (parses each request); otherwise spans are counted at the wire level."""

    match_key: str | None = None
    _shared: dict[str, Any] = field(default_factory=dict)
    _proc: Any = None

    def start(self) -> CountingSink:
        self._shared = {
            "spans": CTX.RawValue("q", 0),
            "matched": CTX.RawValue("q", 0),
            "target": CTX.RawValue("q", 0),
            "done_at": CTX.RawValue("d", 0.0),
            "last": CTX.RawValue("d", 0.0),
            "port": CTX.RawValue("i", 0),
        }
        ready = CTX.Event()
        self._proc = CTX.Process(
            target=_sink_main, args=(self._shared, self.match_key, ready), name="bench-sink", daemon=True
        )
        self._proc.start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError(f"the counting sink did not start (exit code {self._proc.exitcode})")
        return self

    @property
    def port(self) -> int:
        return int(self._shared["port"].value)

    def _get(self, key: str) -> Any:
        return self._shared[key].value

    @property
    def spans(self) -> int:
        return int(self._get("spans"))

    @property
    def matched(self) -> int:
        return int(self._get("matched"))

    @property
    def done_at(self) -> float:
        return float(self._get("done_at"))

    def arm(self, target: int) -> None:
        """Reset the counters; ``done_at`` is stamped when the count reaches ``target``. Call while idle."""
        self._shared["target"].value = 0
        self._shared["spans"].value = 0
        self._shared["matched"].value = 0
        self._shared["done_at"].value = 0.0
        self._shared["target"].value = target

    def wait_done(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done_at:
                return True
            if not self._proc.is_alive():
                raise RuntimeError("the counting sink process died")
            time.sleep(0.01)
        return bool(self.done_at)

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)


# --- systems under test ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Process:
    """A subprocess with a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            list(argv), stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env or dict(os.environ)
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def check_alive(self, what: str) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def rotel_binary() -> Path:
    import rotel  # type: ignore[import-untyped]  # the wheel ships the binary next to its module

    return Path(rotel.__file__).parent / "rotel-agent"


def start_rotel(
    sink_port: int, workdir: Path, compression: str = "gzip", extra: Sequence[str] = ()
) -> tuple[Process, int]:
    """rotel forwarding OTLP/gRPC to the sink. Returns it and its gRPC port.

    ``compression`` is passed as ``--otlp-exporter-compression``, but rotel 0.0.1a15 gzips its gRPC
    exports whatever that flag says (seen on the wire: every gRPC message has the compressed flag)."""
    grpc_port, http_port = free_port(), free_port()
    argv = [
        str(rotel_binary()),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-endpoint",
        f"http://127.0.0.1:{sink_port}",
        "--otlp-exporter-protocol",
        "grpc",
        "--otlp-exporter-compression",
        compression,
        *extra,
    ]
    proc = Process(argv, workdir / f"rotel-{grpc_port}.log")
    try:
        wait_for_port(grpc_port, timeout=30)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"rotel did not start:\n{proc.tail()}") from None
    return proc, grpc_port


def start_sidecar(
    topics_yaml: str, exporter_yaml: str, workdir: Path, timeout: float = 120.0
) -> tuple[Process, int]:
    """``otel-topics serve`` (gRPC receiver only, traces pipeline) with ``processors.topics`` set to
    ``topics_yaml`` (a flow mapping) and one exporter ``otlp/sink`` set to ``exporter_yaml``."""
    grpc_port, metrics_port = free_port(), free_port()
    config = workdir / f"sidecar-{grpc_port}.yaml"
    config.write_text(
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc: {{endpoint: '127.0.0.1:{grpc_port}', max_recv_msg_size: 64MiB}}\n"
        f"processors:\n  topics: {topics_yaml}\n"
        f"exporters:\n  otlp/sink: {exporter_yaml}\n"
        f"service:\n  data_dir: '{workdir / f'data-{grpc_port}'}'\n"
        "  pipelines:\n    traces: {receivers: [otlp], processors: [topics], exporters: [otlp/sink]}\n"
        f"  telemetry:\n    metrics: {{address: '127.0.0.1:{metrics_port}'}}\n    logs: {{level: warn}}\n"
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = Process(
        [sys.executable, "-m", "otel_topics", "serve", "--config", str(config)],
        workdir / f"sidecar-{grpc_port}.log",
        env=env,
    )
    try:
        wait_for_port(grpc_port, timeout=timeout)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"otel-topics serve did not start:\n{proc.tail()}") from None
    return proc, grpc_port


# --- statistics and output ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(
            "  ".join(
                f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def json_line(summary: dict[str, Any]) -> str:
    return json.dumps(summary, separators=(",", ":"), sort_keys=False)


def load_note() -> str:
    """The machine's load average and CPU count, printed with the results as context."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} CPUs"
