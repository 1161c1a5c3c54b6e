"""OTLP/HTTP receiver (aiohttp): ``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``.

Bodies are binary protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``); the
response uses the request's encoding. ``Content-Encoding: gzip`` and ``deflate`` are decompressed by
aiohttp's parser as the body streams in, so the size limit applies to the decompressed bytes (a gzip
bomb is cut off at the limit). Error bodies are ``google.rpc.Status`` messages.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from otel_topics import otlp_json
from otel_topics.errors import Backpressure, DecodeError, PayloadTooLarge
from otel_topics.receiver_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HTTP,
    Handler,
    Ingest,
    enabled_signals,
    parse_endpoint,
    retry_after_header,
    rpc_status,
)

__all__ = ["JSON_THREAD_THRESHOLD", "make_http_app", "start_http_server"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})
# the ones aiohttp's parser decodes (br and zstd only with their optional packages installed)
_ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})
_EMPTY = {False: b"", True: b"{}"}  # an empty Export*ServiceResponse, protobuf and JSON

JSON_THREAD_THRESHOLD = 256 * 1024
"""OTLP/JSON bodies larger than this are decoded in a worker thread, not on the event loop."""

_HTTP_STATUS_PREFIX = re.compile(r"^\d{3}, message:\s*")  # how aiohttp's payload errors print

_Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reply(
    message: Message, as_json: bool, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    if as_json:
        return web.Response(status=status, body=otlp_json.encode(message), content_type=JSON, headers=headers)
    return web.Response(
        status=status, body=message.SerializeToString(), content_type=PROTOBUF, headers=headers
    )


def _error(
    http_status: int,
    code: grpc.StatusCode,
    message: str,
    as_json: bool,
    retry_after: float | None = None,
) -> web.Response:
    """A ``google.rpc.Status`` body; with ``retry_after``, a RetryInfo detail and a Retry-After header."""
    headers = None if retry_after is None else {"Retry-After": retry_after_header(retry_after)}
    return _reply(rpc_status(code, message, retry_after), as_json, http_status, headers)


async def _read(request: web.Request, limit: int) -> bytes:
    """The (decompressed) body, refusing more than ``limit`` bytes without buffering past it."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            what = "decompressed request body" if request.headers.get("Content-Encoding") else "request body"
            raise PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _route(handler: Handler, limit: int) -> _Route:
    signal = handler.signal
    parse_protobuf = signal.request_type.FromString
    type_name = signal.request_type.DESCRIPTOR.name

    async def post(request: web.Request) -> web.StreamResponse:
        content_type = request.content_type
        as_json = content_type == JSON
        if not as_json and content_type not in _PROTOBUF_TYPES:
            handler.count("invalid")
            return _error(
                415,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}",
                as_json=False,
            )
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            handler.count("invalid")
            message = f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or identity"
            return _error(415, grpc.StatusCode.INVALID_ARGUMENT, message, as_json)
        try:
            body = await _read(request, limit)
        except PayloadTooLarge as exc:
            handler.count("too_large")
            response = _error(413, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), as_json)
            response.force_close()  # do not read the rest of the body
            return response
        except Exception as exc:  # aiohttp's payload errors: bad gzip/deflate data, truncated body
            handler.count("invalid")
            reason = _HTTP_STATUS_PREFIX.sub("", str(exc))
            message = f"cannot read the request body (Content-Encoding {encoding or 'identity'}): {reason}"
            response = _error(400, grpc.StatusCode.INVALID_ARGUMENT, message, as_json)
            response.force_close()
            request.content.feed_eof()  # the parser has given up on this body: nothing left to drain
            return response
        try:
            if not as_json:
                parsed = parse_protobuf(body)
            elif len(body) > JSON_THREAD_THRESHOLD:
                parsed = await asyncio.to_thread(signal.decode_json, body)
            else:
                parsed = signal.decode_json(body)
        except ProtobufDecodeError as exc:
            handler.count("invalid")
            message = f"cannot decode the {type_name} ({len(body)} bytes of protobuf): {exc}"
            return _error(400, grpc.StatusCode.INVALID_ARGUMENT, message, as_json)
        except DecodeError as exc:
            handler.count("invalid")
            message = f"cannot decode the {type_name} from OTLP/JSON: {exc}"
            return _error(400, grpc.StatusCode.INVALID_ARGUMENT, message, as_json)
        try:
            checked = await handler.process(parsed)
        except Backpressure as exc:
            return _error(503, grpc.StatusCode.UNAVAILABLE, str(exc), as_json, exc.retry_after)
        except Exception as exc:
            return _error(500, grpc.StatusCode.INTERNAL, handler.internal_error(exc), as_json)
        if not checked.rejected and not checked.error_message:
            return web.Response(body=_EMPTY[as_json], content_type=JSON if as_json else PROTOBUF)
        return _reply(signal.response(checked), as_json)

    return post


def make_http_app(
    ingest: Ingest,
    *,
    traces: bool = True,
    logs: bool = True,
    metrics: bool = True,
    max_request_body_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    extra_routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """An aiohttp app serving ``POST /v1/<signal>`` for the enabled signals (others: 404).

    ``max_request_body_size`` limits the decompressed body (413 past it). ``extra_routes`` may add
    more routes (e.g. ``/metrics``) to the same app.
    """
    if max_request_body_size <= 0:
        raise ValueError(f"max_request_body_size must be positive, got {max_request_body_size}")
    app = web.Application(client_max_size=max_request_body_size)
    for signal in enabled_signals(traces=traces, logs=logs, metrics=metrics):
        app.router.add_post(signal.http_path, _route(Handler(signal, ingest, HTTP), max_request_body_size))
    if extra_routes is not None:
        extra_routes(app)
    return app


async def start_http_server(endpoint: str, app: web.Application) -> web.AppRunner:
    """Serve ``app`` on ``endpoint`` (``host:port``, ``[::1]:4318``, ``:4318``; port 0 picks one).

    The bound address is in ``runner.addresses``; stop with ``await runner.cleanup()``.
    """
    host, port = parse_endpoint(endpoint)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"cannot listen on {endpoint!r} for OTLP/HTTP: {exc.strerror}") from exc
    return runner
