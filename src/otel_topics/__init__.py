"""otel-topics: an OpenTelemetry sidecar that turns LLM agent traces into facets and topics."""

__version__ = "0.1.0"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""The format of every log line, of the serving process and of its worker processes."""
