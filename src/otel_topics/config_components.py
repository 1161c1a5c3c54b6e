"""Receivers, exporters and service settings of the collector-style config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, model_validator

from otel_topics.config_values import (
    Duration,
    GrpcEndpoint,
    HostPort,
    HttpUrl,
    PositiveByteSize,
    PositiveDuration,
    Section,
    StrMap,
    grpc_target,
    lowercase,
    split_host_port,
)
from otel_topics.model import Signal

# --- receivers ---------------------------------------------------------------------------------


class GrpcProtocol(Section):
    endpoint: HostPort = Field(
        default="localhost:4317", description="host:port the OTLP/gRPC server listens on."
    )
    max_recv_msg_size: PositiveByteSize = Field(
        default=16 * 1024**2, description="Largest request accepted (after decompression)."
    )

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.endpoint)


class HttpProtocol(Section):
    endpoint: HostPort = Field(
        default="localhost:4318",
        description="host:port the OTLP/HTTP server listens on (/v1/traces, /v1/logs, ...).",
    )
    max_request_body_size: PositiveByteSize = Field(
        default=16 * 1024**2, description="Largest request body accepted (after decompression)."
    )

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.endpoint)


class Protocols(Section):
    """A protocol listens only when it is set. In YAML, a listed key with an empty value (``grpc:``)
    means that protocol with its defaults (see :func:`otel_topics.config_load.prepare`)."""

    grpc: GrpcProtocol | None = Field(default=None, description="OTLP over gRPC; listed = listening.")
    http: HttpProtocol | None = Field(
        default=None, description="OTLP over HTTP (protobuf and JSON); listed = listening."
    )


def _both_protocols() -> Protocols:
    return Protocols(grpc=GrpcProtocol(), http=HttpProtocol())


class OtlpReceiver(Section):
    """``receivers.otlp``: the OTLP receiver."""

    protocols: Protocols = Field(
        default_factory=_both_protocols,
        description="Protocols to serve; default both grpc and http, listed = listening.",
    )


# --- exporters ---------------------------------------------------------------------------------


class TLSSettings(Section):
    insecure: bool = Field(
        default=False,
        description="Plaintext gRPC (no TLS). As in the collector, TLS is on unless this is true.",
    )
    ca_file: str | None = Field(default=None, description="CA certificate (PEM) to verify the server with.")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    key_file: str | None = Field(default=None, description="Client key (PEM) for mutual TLS.")
    insecure_skip_verify: bool = Field(
        default=False, description="Use TLS but do not verify the server certificate."
    )

    @model_validator(mode="after")
    def _pair(self) -> TLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        return self


class RetryOnFailure(Section):
    enabled: bool = Field(
        default=True, description="Retry retryable failures (unavailable, throttled, timeouts)."
    )
    initial_interval: PositiveDuration = Field(default=1.0, description="First backoff.")
    max_interval: PositiveDuration = Field(default=30.0, description="Longest backoff.")
    max_elapsed_time: Duration = Field(
        default=0.0, description="Give up after this long (0 = retry forever)."
    )

    @model_validator(mode="after")
    def _order(self) -> RetryOnFailure:
        if self.initial_interval > self.max_interval:
            raise ValueError(
                f"initial_interval ({self.initial_interval:g}s) must not exceed max_interval "
                f"({self.max_interval:g}s)"
            )
        return self


class SendingQueue(Section):
    enabled: bool = Field(default=True, description="Queue on disk while the backend is slow or down.")
    directory: str | None = Field(
        default=None, description="Queue directory; null = `<service.data_dir>/queue/<exporter key>`."
    )
    max_bytes: PositiveByteSize = Field(
        default=1024**3, description="Disk cap of the queue; past it the receiver answers with backpressure."
    )


class DeadLetter(Section):
    path: str | None = Field(
        default=None,
        description="JSON lines file for data the backend refuses for good; "
        "null = `<service.data_dir>/dead_letter/<exporter key>.jsonl`.",
    )


def _file_key(key: str) -> str:
    return key.replace("/", "_")


class _Exporter(Section):
    _key: str = PrivateAttr("")

    @property
    def key(self) -> str:
        """The exporter's key in ``exporters`` (e.g. ``otlp/jaeger``); its type when built alone."""
        return self._key or str(getattr(self, "type", ""))

    def __eq__(self, other: object) -> bool:
        # settings compare equal whatever key they are filed under
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]


class _QueuedExporter(_Exporter):
    endpoint: str | None = Field(default=None, description="Backend address.")  # narrowed by each exporter
    tls: TLSSettings = Field(default_factory=TLSSettings, description="TLS settings.")
    headers: StrMap = Field(
        default_factory=dict, description="Headers (gRPC metadata) sent with each request."
    )
    compression: Annotated[Literal["gzip", "none"], BeforeValidator(lowercase)] = Field(
        default="gzip", description="`gzip` or `none`."
    )
    timeout: PositiveDuration = Field(default=10.0, description="Timeout of one export request.")
    retry_on_failure: RetryOnFailure = Field(default_factory=RetryOnFailure, description="Retries.")
    sending_queue: SendingQueue = Field(default_factory=SendingQueue, description="Persistent queue.")
    dead_letter: DeadLetter = Field(default_factory=DeadLetter, description="Dead-letter file.")

    def queue_dir(self, data_dir: Path) -> Path:
        """``sending_queue.directory`` or ``<data_dir>/queue/<key>`` (``/`` in the key becomes ``_``)."""
        if self.sending_queue.directory:
            return Path(self.sending_queue.directory).expanduser()
        return data_dir / "queue" / _file_key(self.key)

    def dead_letter_path(self, data_dir: Path) -> Path:
        """``dead_letter.path`` or ``<data_dir>/dead_letter/<key>.jsonl``."""
        if self.dead_letter.path:
            return Path(self.dead_letter.path).expanduser()
        return data_dir / "dead_letter" / f"{_file_key(self.key)}.jsonl"


class OtlpGrpcExporter(_QueuedExporter):
    """``exporters.otlp`` / ``exporters.otlp_grpc``: OTLP over gRPC."""

    type: Literal["otlp", "otlp_grpc"] = Field(default="otlp", exclude=True)
    endpoint: GrpcEndpoint = Field(description="host:port or http(s)://host:port of the backend (required).")

    @property
    def target(self) -> str:
        """``host:port`` to dial."""
        return grpc_target(self.endpoint)[0]

    @property
    def use_tls(self) -> bool:
        """TLS from the endpoint's scheme (``https://`` / ``http://``), else ``not tls.insecure``."""
        implied = grpc_target(self.endpoint)[1]
        return (not self.tls.insecure) if implied is None else implied


class OtlpHttpExporter(_QueuedExporter):
    """``exporters.otlphttp`` / ``exporters.otlp_http``: OTLP over HTTP."""

    type: Literal["otlphttp", "otlp_http"] = Field(default="otlphttp", exclude=True)
    endpoint: HttpUrl | None = Field(
        default=None,
        description="Base URL of the backend, e.g. http://tempo:4318; /v1/traces etc. are appended "
        "(required unless all three signal endpoints are set).",
    )
    encoding: Annotated[Literal["proto", "json"], BeforeValidator(lowercase)] = Field(
        default="proto", description="`proto` (binary protobuf) or `json`."
    )
    traces_endpoint: HttpUrl | None = Field(
        default=None, description="Full URL for traces; null = endpoint + /v1/traces."
    )
    logs_endpoint: HttpUrl | None = Field(
        default=None, description="Full URL for logs; null = endpoint + /v1/logs."
    )
    metrics_endpoint: HttpUrl | None = Field(
        default=None, description="Full URL for metrics; null = endpoint + /v1/metrics."
    )

    @model_validator(mode="after")
    def _needs_endpoint(self) -> OtlpHttpExporter:
        if self.endpoint is None and None in (
            self.traces_endpoint,
            self.logs_endpoint,
            self.metrics_endpoint,
        ):
            raise ValueError(
                "endpoint is required (or set all of traces_endpoint, logs_endpoint and metrics_endpoint)"
            )
        return self

    def url_for(self, signal: Signal) -> str:
        """The URL a signal is POSTed to."""
        explicit = {
            "traces": self.traces_endpoint,
            "logs": self.logs_endpoint,
            "metrics": self.metrics_endpoint,
        }[signal]
        if explicit is not None:
            return explicit
        assert self.endpoint is not None  # checked at validation
        return f"{self.endpoint.rstrip('/')}/v1/{signal}"


class DebugExporter(_Exporter):
    """``exporters.debug``: writes what it receives to the log."""

    type: Literal["debug"] = Field(default="debug", exclude=True)
    verbosity: Annotated[Literal["basic", "normal", "detailed"], BeforeValidator(lowercase)] = Field(
        default="basic",
        description="`basic` (one line per request with counts), `normal` (one line per span, with the "
        "enrichment attributes) or `detailed` (every field).",
    )


class FileRotation(Section):
    max_megabytes: int = Field(default=100, ge=1, description="Rotate the file past this size in MiB.")
    max_backups: int = Field(default=10, ge=0, description="Rotated files kept (0 = keep all).")


class FileExporter(_Exporter):
    """``exporters.file``: OTLP/JSON lines, one export request per line."""

    type: Literal["file"] = Field(default="file", exclude=True)
    path: str = Field(description="File to append to (required).")
    rotation: FileRotation = Field(default_factory=FileRotation, description="Size-based rotation.")


ExporterSettings = OtlpGrpcExporter | OtlpHttpExporter | DebugExporter | FileExporter
Exporter = Annotated[ExporterSettings, Field(discriminator="type")]

EXPORTER_TYPES: Final[dict[str, type[_Exporter]]] = {
    "otlp": OtlpGrpcExporter,
    "otlp_grpc": OtlpGrpcExporter,
    "otlphttp": OtlpHttpExporter,
    "otlp_http": OtlpHttpExporter,
    "debug": DebugExporter,
    "file": FileExporter,
}
"""Exporter type (the part of the key before ``/``) -> settings model."""

# --- service -----------------------------------------------------------------------------------

SIGNALS: Final[tuple[Signal, ...]] = ("traces", "logs", "metrics")


class Pipeline(Section):
    receivers: list[str] = Field(default_factory=list, description="Receiver keys (at least one).")
    processors: list[str] = Field(default_factory=list, description="Processor keys, in order.")
    exporters: list[str] = Field(default_factory=list, description="Exporter keys (at least one).")


def _default_pipelines() -> dict[str, Pipeline]:
    return {
        "traces": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["debug"]),
        "logs": Pipeline(receivers=["otlp"], processors=["topics"], exporters=["debug"]),
        "metrics": Pipeline(receivers=["otlp"], exporters=["debug"]),
    }


class MetricsTelemetry(Section):
    address: HostPort | None = Field(
        default="localhost:8888", description="host:port serving /metrics and /health; null disables it."
    )


class LogsTelemetry(Section):
    level: Annotated[Literal["debug", "info", "warn", "warning", "error"], BeforeValidator(lowercase)] = (
        Field(default="info", description="Log level of the service's own logs: debug, info, warn, error.")
    )


class Telemetry(Section):
    metrics: MetricsTelemetry = Field(default_factory=MetricsTelemetry, description="Own metrics.")
    logs: LogsTelemetry = Field(default_factory=LogsTelemetry, description="Own logs.")


class Service(Section):
    data_dir: str | None = Field(
        default=None,
        description="Directory for the spool, store, queues and dead letters; null = "
        "$OTEL_TOPICS_DATA_DIR, else $XDG_DATA_HOME/otel-topics, else ~/.local/share/otel-topics.",
    )
    pipelines: dict[str, Pipeline] = Field(
        default_factory=_default_pipelines,
        description="`traces`, `logs`, `metrics` (or `traces/<name>`...): receivers -> processors -> "
        "exporters. A signal is accepted only when a pipeline for it exists.",
    )
    telemetry: Telemetry = Field(default_factory=Telemetry, description="The service's own telemetry.")
