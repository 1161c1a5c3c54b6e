"""Senders: one per backend type, each delivering serialized OTLP export requests (see stages.Sender).

* :class:`OtlpGrpcSender`  OTLP/gRPC (``otlp`` / ``otlp_grpc``), the bytes sent as they are
* :class:`OtlpHttpSender`  OTLP/HTTP (``otlphttp`` / ``otlp_http``), protobuf or JSON bodies
* :class:`~otel_topics.senders_local.DebugSender`  a human-readable log (``debug``)
* :class:`~otel_topics.senders_local.FileSender`   OTLP/JSON lines with size-based rotation (``file``)
* :class:`~otel_topics.senders_local.InMemorySender`  a fake for tests

Failures are mapped at this boundary into :class:`~otel_topics.errors.ExportError` (retryable, with the
backend's retry-after when it gives one) or :class:`~otel_topics.errors.PermanentExportError`, following
the OTLP specification's list of retryable gRPC codes and HTTP statuses.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import logging
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import grpc
import grpc.aio
import httpx
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_topics import metrics
from otel_topics.errors import ConfigError, ExportError, PermanentExportError
from otel_topics.model import Signal
from otel_topics.senders_local import DebugSender, FileSender, InMemorySender, encode_json

__all__ = ["DebugSender", "FileSender", "InMemorySender", "OtlpGrpcSender", "OtlpHttpSender"]

log = logging.getLogger(__name__)

USER_AGENT: Final = "otel-topics/0.1"
Compression = Literal["gzip", "none"]

_GRPC_METHODS: Final[dict[Signal, tuple[str, type[Message]]]] = {
    "traces": ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", ExportTraceServiceResponse),
    "logs": ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", ExportLogsServiceResponse),
    "metrics": (
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        ExportMetricsServiceResponse,
    ),
}
_RESPONSES: Final[dict[Signal, type[Message]]] = {s: m[1] for s, m in _GRPC_METHODS.items()}
_REJECTED_FIELD: Final[dict[Signal, str]] = {
    "traces": "rejected_spans",
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
}
_RETRYABLE_CODES: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)  # RESOURCE_EXHAUSTED too, but only when the server says when to retry (RetryInfo)
_RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})
_STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
_GZIP_LEVEL: Final = 1  # fastest: telemetry compresses well even so, and CPU is the scarce resource
_GZIP_IN_THREAD: Final = 256 * 1024  # compress bodies at least this large off the event loop


def _check_compression(compression: str) -> Compression:
    value = (compression or "none").lower()
    if value not in ("gzip", "none"):
        raise ValueError(f"compression must be 'gzip' or 'none', got {compression!r}")
    return "gzip" if value == "gzip" else "none"


def _read_file(path: str | Path, what: str, owner: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([(what, f"cannot read {path}: {exc.strerror or exc}")], source=owner) from exc


def _note_partial_success(name: str, signal: Signal, response: Message, where: str) -> None:
    """Log and count items a backend rejected in an otherwise accepted request (they are not retried)."""
    partial = getattr(response, "partial_success", None)
    if partial is None:
        return
    rejected = int(getattr(partial, _REJECTED_FIELD[signal], 0))
    message = str(getattr(partial, "error_message", ""))
    if rejected > 0:
        metrics.EXPORT_REJECTED_ITEMS.labels(name, signal).inc(rejected)
        log.warning(
            "exporter %s: %s rejected %d %s: %s", name, where, rejected, signal, message or "(no message)"
        )
    elif message:
        log.warning("exporter %s: %s accepted %s with a warning: %s", name, where, signal, message)


# --- OTLP/gRPC ---------------------------------------------------------------------------------------
def _grpc_target(endpoint: str, insecure: bool) -> tuple[str, bool]:
    """``host:port`` or ``http(s)://host:port`` -> (gRPC target, insecure). ``http://`` implies insecure."""
    endpoint = endpoint.strip()
    if endpoint.startswith("http://"):
        return endpoint[len("http://") :].rstrip("/"), True
    if endpoint.startswith("https://"):
        return endpoint[len("https://") :].rstrip("/"), insecure
    return endpoint, insecure


def _retry_info(metadata: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo in the trailing status details, if the server sent one."""
    for key, value in metadata or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except ProtobufDecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay: float = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
                return max(0.0, delay)
    return None


class OtlpGrpcSender:
    """OTLP over gRPC: calls the collector services' ``Export`` with the request bytes as they are."""

    def __init__(
        self,
        endpoint: str,
        *,
        insecure: bool,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        name: str = "otlp",
    ) -> None:
        if not endpoint:
            raise ValueError("endpoint must not be empty (host:port or http(s)://host:port)")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if bool(cert_file) != bool(key_file):
            raise ValueError("cert_file and key_file must be given together (client certificate and its key)")
        self.name = name
        self.target, self.insecure = _grpc_target(endpoint, insecure)
        self.compression = _check_compression(compression)
        self.timeout = timeout
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self._credentials: grpc.ChannelCredentials | None = None
        if not self.insecure:
            owner = f"exporter {name}"
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_file(ca_file, "tls.ca_file", owner) if ca_file else None,
                private_key=_read_file(key_file, "tls.key_file", owner) if key_file else None,
                certificate_chain=_read_file(cert_file, "tls.cert_file", owner) if cert_file else None,
            )
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[Signal, Any] = {}

    def __repr__(self) -> str:
        return f"OtlpGrpcSender({self.name!r}, {self.target!r}, insecure={self.insecure})"

    def _call(self, signal: Signal) -> Any:
        call = self._calls.get(signal)
        if call is None:
            if self._channel is None:  # created on first use, inside the running event loop
                options = [
                    ("grpc.primary_user_agent", USER_AGENT),
                    ("grpc.max_receive_message_length", -1),
                    # reconnect soon after a backend comes back (gRPC's default backoff grows to 120s)
                    ("grpc.initial_reconnect_backoff_ms", 500),
                    ("grpc.max_reconnect_backoff_ms", 5000),
                ]
                comp = grpc.Compression.Gzip if self.compression == "gzip" else grpc.Compression.NoCompression
                if self._credentials is None:
                    self._channel = grpc.aio.insecure_channel(self.target, options=options, compression=comp)
                else:
                    self._channel = grpc.aio.secure_channel(
                        self.target, self._credentials, options=options, compression=comp
                    )
            method, response = _GRPC_METHODS[signal]
            call = self._channel.unary_unary(
                method,
                request_serializer=None,  # the payload is already a serialized request
                response_deserializer=response.FromString,
            )
            self._calls[signal] = call
        return call

    async def send(self, signal: Signal, payload: bytes) -> None:
        call = self._call(signal)
        try:
            response = await call(payload, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            retry_after = _retry_info(exc.trailing_metadata())
            message = f"{signal} export to {self.target} failed: {code.name}: {exc.details() or ''}".rstrip()
            if code in _RETRYABLE_CODES or (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None
            ):
                raise ExportError(message, retry_after=retry_after) from exc
            raise PermanentExportError(message) from exc
        except grpc.aio.UsageError as exc:  # e.g. the channel was closed under us
            raise ExportError(f"{signal} export to {self.target} failed: {exc}") from exc
        _note_partial_success(self.name, signal, response, self.target)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._calls.clear()
        if channel is not None:
            await channel.close(None)


# --- OTLP/HTTP ---------------------------------------------------------------------------------------
def _retry_after_header(value: str | None) -> float | None:
    """``Retry-After``: delay seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_message(response: httpx.Response) -> str:
    """The google.rpc.Status message of an error body (protobuf or JSON), else the start of the body."""
    body = response.content
    if not body:
        return response.reason_phrase or ""
    ctype = response.headers.get("content-type", "")
    if "json" in ctype:
        try:
            obj = json.loads(body)
            message = obj.get("message") if isinstance(obj, dict) else None
            if isinstance(message, str):
                return message
        except ValueError:
            pass
    elif "protobuf" in ctype:
        try:
            return str(status_pb2.Status.FromString(body).message) or response.reason_phrase
        except ProtobufDecodeError:
            pass
    return body[:300].decode("utf-8", "replace").strip()


def _ssl_context(verify: bool | str, cert: tuple[str, str] | None, owner: str) -> ssl.SSLContext:
    try:
        if isinstance(verify, str):
            ctx = ssl.create_default_context(cafile=verify)
        else:
            try:
                import certifi

                ctx = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - certifi comes with httpx
                ctx = ssl.create_default_context()
            if verify is False:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        if cert is not None:
            ctx.load_cert_chain(cert[0], cert[1])
    except (OSError, ssl.SSLError) as exc:
        key = "tls.ca_file" if cert is None else "tls.cert_file/tls.key_file"
        raise ConfigError([(key, f"cannot load TLS files: {exc}")], source=owner) from exc
    return ctx


class OtlpHttpSender:
    """OTLP over HTTP: POSTs each request (protobuf as is, or re-encoded as OTLP/JSON) to its signal's URL."""

    def __init__(
        self,
        traces_url: str,
        logs_url: str,
        metrics_url: str,
        *,
        encoding: str = "proto",
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        name: str = "otlphttp",
    ) -> None:
        if encoding not in ("proto", "json"):
            raise ValueError(f"encoding must be 'proto' or 'json', got {encoding!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.name = name
        self.urls: dict[Signal, str] = {"traces": traces_url, "logs": logs_url, "metrics": metrics_url}
        for signal, url in self.urls.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{signal} URL must start with http:// or https://, got {url!r}")
        self.encoding = encoding
        self.compression = _check_compression(compression)
        self.timeout = timeout
        content_type = "application/json" if encoding == "json" else "application/x-protobuf"
        base_headers = {"User-Agent": USER_AGENT, **dict(headers or {}), "Content-Type": content_type}
        if self.compression == "gzip":
            base_headers["Content-Encoding"] = "gzip"
        self._client = httpx.AsyncClient(
            headers=base_headers,
            timeout=httpx.Timeout(timeout),
            verify=_ssl_context(verify, cert, f"exporter {name}"),
            follow_redirects=True,
        )

    def __repr__(self) -> str:
        return f"OtlpHttpSender({self.name!r}, {self.urls['traces']!r}, encoding={self.encoding!r})"

    async def _body(self, signal: Signal, payload: bytes) -> bytes:
        body = encode_json(signal, payload) if self.encoding == "json" else payload
        if self.compression == "gzip":
            if len(body) >= _GZIP_IN_THREAD:
                return await asyncio.to_thread(gzip.compress, body, _GZIP_LEVEL, mtime=0)
            return gzip.compress(body, _GZIP_LEVEL, mtime=0)
        return body

    async def send(self, signal: Signal, payload: bytes) -> None:
        url = self.urls[signal]
        body = await self._body(signal, payload)
        try:
            response = await self._client.post(url, content=body)
        except httpx.TooManyRedirects as exc:
            raise PermanentExportError(f"{signal} export to {url} failed: {exc}") from exc
        except httpx.RequestError as exc:  # connect/read/write errors, timeouts, protocol errors
            raise ExportError(f"{signal} export to {url} failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            self._partial_success(signal, response, url)
            return
        message = f"{signal} export to {url} failed: HTTP {status}: {_status_message(response)}"
        if status in _RETRYABLE_HTTP:
            raise ExportError(message, retry_after=_retry_after_header(response.headers.get("retry-after")))
        raise PermanentExportError(message)

    def _partial_success(self, signal: Signal, response: httpx.Response, url: str) -> None:
        body = response.content
        if not body:
            return
        parsed = _RESPONSES[signal]()
        try:
            if "json" in response.headers.get("content-type", ""):
                json_format.Parse(body, parsed, ignore_unknown_fields=True)
            else:
                parsed.ParseFromString(body)
        except (json_format.ParseError, ProtobufDecodeError, ValueError) as exc:
            log.debug("exporter %s: undecodable response body from %s: %s", self.name, url, exc)
            return
        _note_partial_success(self.name, signal, parsed, url)

    async def close(self) -> None:
        await self._client.aclose()
