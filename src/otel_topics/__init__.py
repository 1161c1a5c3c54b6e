"""otel-topics: an OpenTelemetry sidecar that turns LLM agent traces into facets and topics."""

__version__ = "0.1.0"
