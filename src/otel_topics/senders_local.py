"""Senders that stay on this machine: the debug log, OTLP/JSON files, and an in-memory fake for tests.

These are the only senders that parse the payload (their formats need it). Re-exported by
:mod:`otel_topics.senders`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics.errors import ExportError, PermanentExportError
from otel_topics.model import Signal

__all__ = ["DebugSender", "FileSender", "InMemorySender", "decode_request", "encode_json"]

_REQUESTS: Final[dict[Signal, type[Message]]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}
# the attributes the debug exporter shows at verbosity "normal": what otel-topics adds
_ENRICHMENT_PREFIXES: Final = ("facets.", "classifications.", "otel_topics.")
_MAX_SHOWN: Final = 300  # characters of one value shown by the debug exporter


def decode_request(signal: Signal, payload: bytes) -> Message:
    """Parse a serialized export request. Raises PermanentExportError if it is not valid protobuf."""
    try:
        return _REQUESTS[signal].FromString(payload)
    except ProtobufDecodeError as exc:
        raise PermanentExportError(
            f"{signal} payload of {len(payload)} bytes is not valid protobuf: {exc}"
        ) from exc


def encode_json(signal: Signal, payload: bytes) -> bytes:
    """A serialized export request -> OTLP/JSON bytes (one line, no newline)."""
    from otel_topics import otlp_json

    request = decode_request(signal, payload)
    if isinstance(request, ExportTraceServiceRequest):
        return otlp_json.encode_traces(request)
    if isinstance(request, ExportLogsServiceRequest):
        return otlp_json.encode_logs(request)
    assert isinstance(request, ExportMetricsServiceRequest)
    return otlp_json.encode_metrics(request)


# --- debug -------------------------------------------------------------------------------------------
def _show(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        shown = json.dumps(text[:_MAX_SHOWN], ensure_ascii=False)
        return shown + ("..." if len(text) > _MAX_SHOWN else "")
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return "0x" + value.bytes_value.hex()
    if kind == "array_value":
        return "[" + ", ".join(_show(v) for v in value.array_value.values) + "]"
    if kind == "kvlist_value":
        return "{" + ", ".join(f"{kv.key}={_show(kv.value)}" for kv in value.kvlist_value.values) + "}"
    return "<empty>"


def _attrs(kvs: Iterable[KeyValue], only_enrichment: bool) -> str:
    shown = [
        f"{kv.key}={_show(kv.value)}"
        for kv in kvs
        if not only_enrichment or kv.key.startswith(_ENRICHMENT_PREFIXES)
    ]
    return " ".join(shown)


class DebugSender:
    """Logs a human-readable summary of each request, like the collector's debug exporter.

    ``basic``: one line of counts per request, and one line per span that carries enrichment
    attributes (the roots). ``normal``: plus one line per span (name, trace id, and
    the ``facets.*`` / ``classifications.*`` / ``otel_topics.*`` attributes), log record or metric.
    ``detailed``: resources, scopes, and every attribute.
    """

    def __init__(
        self, verbosity: str = "basic", *, name: str = "debug", logger: logging.Logger | None = None
    ):
        if verbosity not in ("basic", "normal", "detailed"):
            raise ValueError(f"verbosity must be 'basic', 'normal' or 'detailed', got {verbosity!r}")
        self.name = name
        self.verbosity = verbosity
        self.logger = logger or logging.getLogger("otel_topics.debug")

    async def send(self, signal: Signal, payload: bytes) -> None:
        request = decode_request(signal, payload)
        if isinstance(request, ExportTraceServiceRequest):
            lines = self._traces(request)
        elif isinstance(request, ExportLogsServiceRequest):
            lines = self._logs(request)
        else:
            assert isinstance(request, ExportMetricsServiceRequest)
            lines = self._metrics(request)
        self.logger.info("%s", "\n".join(lines))

    async def close(self) -> None:
        return None

    def _resource(self, i: int, what: str, attrs: Iterable[KeyValue], lines: list[str]) -> None:
        if self.verbosity == "detailed":
            lines.append(f"  {what} #{i} resource: {_attrs(attrs, False)}")

    def _scope(self, i: int, what: str, scope: Any, lines: list[str]) -> None:
        if self.verbosity == "detailed":
            version = f"@{scope.version}" if scope.version else ""
            extra = _attrs(scope.attributes, False)
            lines.append(f"    {what} #{i} scope: {scope.name or '<unnamed>'}{version} {extra}".rstrip())

    def _traces(self, request: ExportTraceServiceRequest) -> list[str]:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        lines = [f"{self.name}: traces: {len(request.resource_spans)} resource spans, {n} spans"]
        if self.verbosity == "basic":  # plus the enrichment, where a span carries it
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        enriched = _attrs(span.attributes, True)
                        if enriched:
                            lines.append(f"  trace_id={span.trace_id.hex()} {enriched}")
            return lines
        detailed = self.verbosity == "detailed"
        for i, rs in enumerate(request.resource_spans):
            self._resource(i, "ResourceSpans", rs.resource.attributes, lines)
            for j, ss in enumerate(rs.scope_spans):
                self._scope(j, "ScopeSpans", ss.scope, lines)
                for span in ss.spans:
                    ids = f"trace_id={span.trace_id.hex()} span_id={span.span_id.hex()}"
                    head = f'      span "{span.name}" {ids}'
                    if detailed:
                        head += (
                            f" parent={span.parent_span_id.hex() or '-'} kind={span.kind}"
                            f" status={span.status.code} duration_ms="
                            f"{(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6:.3f}"
                        )
                    attrs = _attrs(span.attributes, not detailed)
                    lines.append(f"{head} {attrs}".rstrip())
                    if detailed:
                        for ev in span.events:
                            lines.append(f'        event "{ev.name}" {_attrs(ev.attributes, False)}'.rstrip())
        return lines

    def _logs(self, request: ExportLogsServiceRequest) -> list[str]:
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        lines = [f"{self.name}: logs: {len(request.resource_logs)} resource logs, {n} log records"]
        if self.verbosity == "basic":
            return lines
        detailed = self.verbosity == "detailed"
        for i, rl in enumerate(request.resource_logs):
            self._resource(i, "ResourceLogs", rl.resource.attributes, lines)
            for j, sl in enumerate(rl.scope_logs):
                self._scope(j, "ScopeLogs", sl.scope, lines)
                for rec in sl.log_records:
                    event = f' event="{rec.event_name}"' if rec.event_name else ""
                    head = (
                        f"      log severity={rec.severity_text or rec.severity_number}{event}"
                        f" trace_id={rec.trace_id.hex() or '-'} body={_show(rec.body)}"
                    )
                    lines.append(f"{head} {_attrs(rec.attributes, not detailed)}".rstrip())
        return lines

    def _metrics(self, request: ExportMetricsServiceRequest) -> list[str]:
        n_metrics = n_points = 0
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    n_metrics += 1
                    kind = m.WhichOneof("data")
                    n_points += len(getattr(m, kind).data_points) if kind else 0
        lines = [
            f"{self.name}: metrics: {len(request.resource_metrics)} resource metrics, "
            f"{n_metrics} metrics, {n_points} data points"
        ]
        if self.verbosity == "basic":
            return lines
        for i, rm in enumerate(request.resource_metrics):
            self._resource(i, "ResourceMetrics", rm.resource.attributes, lines)
            for j, sm in enumerate(rm.scope_metrics):
                self._scope(j, "ScopeMetrics", sm.scope, lines)
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    points = getattr(m, kind).data_points if kind else []
                    lines.append(
                        f'      metric "{m.name}" {kind or "empty"} unit="{m.unit}" {len(points)} points'
                    )
                    if self.verbosity == "detailed":
                        for p in points:
                            lines.append(f"        point {_attrs(p.attributes, False)}".rstrip())
        return lines


# --- file --------------------------------------------------------------------------------------------
class FileSender:
    """Appends one OTLP/JSON line per request (``{"resourceSpans": [...]}``), flushed after each write.

    When the file would grow past ``max_megabytes`` it is renamed ``<stem>-<UTC time><suffix>`` and a new
    one started; only the ``max_backups`` newest renamed files are kept (0 keeps them all).
    """

    def __init__(
        self, path: Path | str, *, max_megabytes: float = 100, max_backups: int = 10, name: str = "file"
    ):
        if max_megabytes <= 0:
            raise ValueError(f"max_megabytes must be positive, got {max_megabytes}")
        if max_backups < 0:
            raise ValueError(f"max_backups must be >= 0 (0 keeps every file), got {max_backups}")
        self.name = name
        self.path = Path(path)
        self.max_bytes = int(max_megabytes * 1024 * 1024)
        self.max_backups = max_backups
        self._file: Any = None
        self._size = 0
        self._lock = threading.Lock()

    async def send(self, signal: Signal, payload: bytes) -> None:
        line = encode_json(signal, payload) + b"\n"
        try:
            await asyncio.to_thread(self._write, line)
        except OSError as exc:
            raise ExportError(f"cannot write {self.path}: {exc}") from exc

    def _write(self, line: bytes) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
                self._size = self._file.tell()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._file.flush()
            self._size += len(line)

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        when = datetime.now(UTC)
        while True:  # names sort in rotation order: on a clash, move the stamp on by a microsecond
            stamp = when.strftime("%Y-%m-%dT%H-%M-%S.%f")
            backup = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
            if not backup.exists():
                break
            when += timedelta(microseconds=1)
        os.replace(self.path, backup)
        if self.max_backups:
            for old in self.backups()[: -self.max_backups]:
                old.unlink(missing_ok=True)
        self._file = self.path.open("ab")
        self._size = 0

    def backups(self) -> list[Path]:
        """The rotated files, oldest first."""
        pattern = f"{self.path.stem}-*{self.path.suffix}"
        return sorted(p for p in self.path.parent.glob(pattern) if p != self.path)

    async def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --- fake --------------------------------------------------------------------------------------------
class InMemorySender:
    """A test double: keeps every delivered request, decoded, per signal; can be told to fail.

    ``fail(times, ...)`` makes the next ``times`` sends raise a retryable ExportError (with
    ``retry_after``) or, with ``permanent=True``, a PermanentExportError. ``refuse(signal, request)``,
    when set, refuses a request permanently if it returns a reason. ``delay`` slows each send.
    """

    def __init__(self, name: str = "memory", *, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.requests: dict[Signal, list[Message]] = {"traces": [], "logs": [], "metrics": []}
        self.payloads: list[tuple[Signal, bytes]] = []
        self.attempts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self.refuse: Callable[[Signal, Message], str | None] | None = None
        self._failures: list[ExportError] = []
        self._delivered = asyncio.Condition()

    def fail(
        self, times: int = 1, *, permanent: bool = False, retry_after: float | None = None, message: str = ""
    ) -> None:
        for _ in range(times):
            if permanent:
                self._failures.append(PermanentExportError(message or "refused by the fake backend"))
            else:
                err = ExportError(message or "fake backend unavailable", retry_after=retry_after)
                self._failures.append(err)

    async def send(self, signal: Signal, payload: bytes) -> None:
        self.attempts += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self._failures:
                raise self._failures.pop(0)
            request = decode_request(signal, payload)
            if self.refuse is not None and (reason := self.refuse(signal, request)):
                raise PermanentExportError(reason)
        finally:
            self.in_flight -= 1
        async with self._delivered:
            self.requests[signal].append(request)
            self.payloads.append((signal, payload))
            self._delivered.notify_all()

    def count(self, signal: Signal) -> int:
        """Requests delivered for ``signal``."""
        return len(self.requests[signal])

    async def wait_for(self, signal: Signal, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests of ``signal`` were delivered (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout), self._delivered:
            await self._delivered.wait_for(lambda: len(self.requests[signal]) >= n)

    async def close(self) -> None:
        self.closed = True
