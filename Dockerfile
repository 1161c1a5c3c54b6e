# otel-topics sidecar on its embedded defaults (OTLP gRPC 4317, OTLP/HTTP 4318, metrics 8888).
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /src \
    && mkdir -p /var/lib/otel-topics && chown 65532:65532 /var/lib/otel-topics

# Inside a container the receivers must bind all interfaces, not localhost.
ENV OTEL_TOPICS_DATA_DIR=/var/lib/otel-topics
COPY collector-config/sidecar-docker.yaml /etc/otel-topics/config.yaml
VOLUME ["/var/lib/otel-topics"]
EXPOSE 4317 4318 8888
USER 65532:65532
ENTRYPOINT ["otel-topics"]
CMD ["serve", "--config", "/etc/otel-topics/config.yaml"]
