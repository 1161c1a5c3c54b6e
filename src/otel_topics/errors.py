"""The exception tree of otel-topics.

    OtelTopicsError
    ├── ConfigError            a config file or value is invalid (lists ``dotted.path: message`` lines)
    ├── DecodeError            an OTLP payload could not be decoded (bad protobuf / JSON / gzip)
    ├── PayloadTooLarge        a request is larger than the receiver accepts
    ├── Backpressure           the spool or a queue is at its disk cap; retry after ``retry_after`` seconds
    ├── StoreError             the store (SQLite/PostgreSQL) failed
    ├── LLMError               the facet LLM failed (HTTP error, timeout, malformed answer)
    ├── EmbedderError          the embedder failed
    └── ExportError            a downstream backend failed
        └── PermanentExportError   the backend refused the data for good (goes to the dead-letter file)

Third-party errors (grpc, httpx, sqlite3, onnxruntime) are mapped into these at the boundary.
"""

from __future__ import annotations


class OtelTopicsError(Exception):
    """Base class of every error otel-topics raises on purpose."""


class ConfigError(OtelTopicsError):
    """Invalid configuration. ``problems`` holds ``(dotted.path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class DecodeError(OtelTopicsError):
    """An OTLP request body could not be decoded."""


class PayloadTooLarge(OtelTopicsError):
    """A request body exceeds the configured maximum size."""


class Backpressure(OtelTopicsError):
    """A disk-capped buffer is full; the sender should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(OtelTopicsError):
    """The store failed."""


class LLMError(OtelTopicsError):
    """The facet LLM failed."""


class EmbedderError(OtelTopicsError):
    """The embedder failed."""


class ExportError(OtelTopicsError):
    """A downstream backend failed; retryable unless it is a :class:`PermanentExportError`."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentExportError(ExportError):
    """The backend refused the data permanently (bad request, unauthenticated...)."""
