"""OTLP receiver: traces, logs and metrics over gRPC (``grpc.aio``) and HTTP (``aiohttp``).

Each request is parsed once (protobuf stays protobuf), validated (invalid items are removed and reported
through OTLP partial success, see :mod:`otel_topics.receiver_validate`), then handed to an
:class:`Ingest`, which returns once the data is durably spooled. Only then is the request acknowledged.

Error mapping::

    undecodable body           gRPC INVALID_ARGUMENT           HTTP 400 (google.rpc.Status naming it)
    too large                  gRPC RESOURCE_EXHAUSTED         HTTP 413
    unsupported content type   -                               HTTP 415
    Backpressure from ingest   gRPC UNAVAILABLE + RetryInfo    HTTP 503 + Retry-After
    other ingest failure       gRPC INTERNAL                   HTTP 500

This module holds the gRPC side and re-exports the HTTP side (:mod:`otel_topics.receiver_http`) and the
shared parts (:mod:`otel_topics.receiver_core`).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
from google.protobuf.message import DecodeError as ProtobufDecodeError

from otel_topics.errors import Backpressure
from otel_topics.receiver_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    GRPC,
    Handler,
    Ingest,
    InMemoryIngest,
    enabled_signals,
    parse_endpoint,
    rpc_status,
)
from otel_topics.receiver_http import make_http_app, start_http_server

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "InMemoryIngest",
    "Ingest",
    "add_otlp_services",
    "make_http_app",
    "parse_endpoint",
    "start_grpc_server",
    "start_http_server",
]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"  # google.rpc.Status with details (Go collector, grpc-go)
_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"  # a bare google.rpc.RetryInfo (OpenTelemetry Python SDK)


# --- gRPC ------------------------------------------------------------------------------------------
def _grpc_export(handler: Handler) -> grpc.RpcMethodHandler[bytes, bytes]:
    signal = handler.signal
    parse = signal.request_type.FromString
    type_name = signal.request_type.DESCRIPTOR.name

    async def export(raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            request = parse(raw)
        except ProtobufDecodeError as exc:
            handler.count("invalid")
            message = f"cannot decode the {type_name} ({len(raw)} bytes): {exc}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        try:
            checked = await handler.process(request)
        except Backpressure as exc:
            status = rpc_status(grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after)
            details = (
                (_STATUS_DETAILS_KEY, status.SerializeToString()),
                (_RETRY_INFO_KEY, status.details[0].value),  # type: ignore[attr-defined]
            )
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc), details)
        except Exception as exc:
            await context.abort(grpc.StatusCode.INTERNAL, handler.internal_error(exc))
        if not checked.rejected and not checked.error_message:
            return b""  # the serialized empty response
        return signal.response(checked).SerializeToString()

    # no (de)serializers: the handler parses the bytes itself, so a bad body is INVALID_ARGUMENT
    return grpc.unary_unary_rpc_method_handler(export)


def add_otlp_services(
    server: grpc.aio.Server, ingest: Ingest, *, traces: bool, logs: bool, metrics: bool
) -> None:
    """Register the OTLP ``Export`` services of the enabled signals on ``server``."""
    handlers = [
        grpc.method_handlers_generic_handler(
            signal.grpc_service, {"Export": _grpc_export(Handler(signal, ingest, GRPC))}
        )
        for signal in enabled_signals(traces=traces, logs=logs, metrics=metrics)
    ]
    server.add_generic_rpc_handlers(handlers)


async def start_grpc_server(
    endpoint: str,
    ingest: Ingest,
    *,
    traces: bool = True,
    logs: bool = True,
    metrics: bool = True,
    max_recv_msg_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    extra: Callable[[grpc.aio.Server], None] | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start an insecure OTLP/gRPC server on ``endpoint`` (``host:port``; port 0 picks one).

    ``extra`` may add more services (the sidecar's own API) before the server starts. Returns the
    started server and the port it listens on. Stop it with ``await server.stop(grace)``.
    """
    if max_recv_msg_size <= 0:
        raise ValueError(f"max_recv_msg_size must be positive, got {max_recv_msg_size}")
    host, port = parse_endpoint(endpoint)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_recv_msg_size),
            ("grpc.so_reuseport", 0),  # a port already in use is an error, not a silent share
        ]
    )
    add_otlp_services(server, ingest, traces=traces, logs=logs, metrics=metrics)
    if extra is not None:
        extra(server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {endpoint!r} for OTLP/gRPC: {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen on {endpoint!r} for OTLP/gRPC")
    await server.start()
    return server, bound
