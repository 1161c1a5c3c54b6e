#!/usr/bin/env sh
# rotel (a Rust OpenTelemetry collector, `pip install --pre rotel`) in front of otel-topics:
#   agents --OTLP--> rotel :4317/:4318 --OTLP/gRPC--> otel-topics :14317 --> Jaeger / Tempo
# otel-topics then exports to Jaeger and Tempo itself: use sidecar.yaml with its grpc receiver endpoint set to
# "0.0.0.0:14317" (it listens on :4317 as shipped, which rotel takes here).
# The rotel-agent binary ships inside the rotel wheel.
ROTEL_AGENT="${ROTEL_AGENT:-$(python3 -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')}"
exec "$ROTEL_AGENT" start \
  --otlp-grpc-endpoint 0.0.0.0:4317 \
  --otlp-http-endpoint 0.0.0.0:4318 \
  --exporter otlp \
  --otlp-exporter-endpoint "${OTEL_TOPICS_ENDPOINT:-http://otel-topics:14317}" \
  --otlp-exporter-protocol grpc
