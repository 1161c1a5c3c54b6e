"""``otel-topics replay``: send OpenAI-format conversations as GenAI-convention traces.

Each conversation (a JSON list of chat messages) becomes one trace: an ``invoke_agent`` root span,
one ``chat`` span per assistant turn carrying ``gen_ai.input.messages`` / ``gen_ai.output.messages``
(OpenTelemetry GenAI semantic conventions), and one ``execute_tool`` span per tool result, with
error status when the result starts with ``Error``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from otel_topics import __version__

Conversation = list[dict[str, Any]]
_STEP_NS = 50_000_000  # synthetic duration of one step


class ReplayError(ValueError):
    """The input file could not be read as conversations."""


def read_conversations(path: Path) -> Iterator[Conversation]:
    """Conversations from a JSONL file (one JSON list of messages a line; an object with
    ``messages`` or ``traj`` is accepted too) or a JSON file holding an array of them."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    items: list[Any] | None = None
    if stripped.startswith("["):
        try:
            whole = json.loads(text)
            if isinstance(whole, list) and whole and not isinstance(whole[0], dict | list):
                raise ReplayError(f"{path}: expected conversations, got a list of {type(whole[0]).__name__}")
            if isinstance(whole, list) and whole and all(isinstance(x, dict) for x in whole):
                # an array of messages is ONE conversation; an array of records holds several
                items = [whole] if all("role" in x for x in whole) else whole
            elif isinstance(whole, list) and whole and all(isinstance(x, list) for x in whole):
                items = whole
        except json.JSONDecodeError:
            items = None  # JSON lines
    if items is None:
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{lineno}: not JSON: {exc.msg} (column {exc.colno})") from exc
    for n, item in enumerate(items, 1):
        msgs = item
        if isinstance(item, dict):
            msgs = item.get("messages", item.get("traj"))
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise ReplayError(
                f"{path}: conversation {n}: expected a list of messages with a 'role' each "
                "(or an object with 'messages')"
            )
        yield msgs


def _kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return json.dumps(content)


def genai_parts(msg: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat message in the GenAI semantic conventions' parts form."""
    role = msg.get("role", "user")
    parts: list[dict[str, Any]] = []
    text = _text(msg.get("content"))
    if role == "tool":
        parts.append({"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": text})
    elif text:
        parts.append({"type": "text", "content": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function", {})
        args = fn.get("arguments", "")
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args) if isinstance(args, str) and args else args
        parts.append(
            {"type": "tool_call", "id": call.get("id"), "name": fn.get("name", ""), "arguments": args}
        )
    out: dict[str, Any] = {"role": role, "parts": parts}
    if role == "assistant":
        out["finish_reason"] = "tool_calls" if msg.get("tool_calls") else "stop"
    return out


@dataclass
class TraceBuilder:
    service: str = "otel-topics-replay"
    model: str = "replayed-model"

    def build(self, conversation: Sequence[dict[str, Any]], start_ns: int | None = None) -> ResourceSpans:
        trace_id = os.urandom(16)
        steps = max(1, len(conversation))
        t0 = start_ns if start_ns is not None else time.time_ns() - steps * _STEP_NS
        rs = ResourceSpans()
        rs.resource.attributes.extend([_kv("service.name", self.service)])
        ss = rs.scope_spans.add()
        ss.scope.name = "otel_topics.replay"
        ss.scope.version = __version__
        root_id = os.urandom(8)
        root = ss.spans.add(
            trace_id=trace_id,
            span_id=root_id,
            name="invoke_agent replay",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=t0,
            end_time_unix_nano=t0 + steps * _STEP_NS,
        )
        root.attributes.extend(
            [_kv("gen_ai.operation.name", "invoke_agent"), _kv("gen_ai.agent.name", "replay")]
        )
        system = [m for m in conversation if m.get("role") == "system"]
        history: list[dict[str, Any]] = []
        calls: dict[str, tuple[str, str]] = {}
        for i, msg in enumerate(conversation):
            role = msg.get("role")
            t = t0 + i * _STEP_NS
            if role == "assistant":
                span = ss.spans.add(
                    trace_id=trace_id,
                    span_id=os.urandom(8),
                    parent_span_id=root_id,
                    name=f"chat {self.model}",
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=t,
                    end_time_unix_nano=t + _STEP_NS - 1,
                )
                attrs = [
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.request.model", self.model),
                    _kv("gen_ai.input.messages", json.dumps([genai_parts(m) for m in history])),
                    _kv("gen_ai.output.messages", json.dumps([genai_parts(msg)])),
                ]
                if system:
                    instr = [{"type": "text", "content": _text(m.get("content"))} for m in system]
                    attrs.append(_kv("gen_ai.system_instructions", json.dumps(instr)))
                span.attributes.extend(attrs)
                for call in msg.get("tool_calls") or []:
                    fn = call.get("function", {})
                    calls[str(call.get("id"))] = (str(fn.get("name", "")), str(fn.get("arguments", "")))
            elif role == "tool":
                name, args = calls.get(str(msg.get("tool_call_id")), (str(msg.get("name", "tool")), ""))
                result = _text(msg.get("content"))
                span = ss.spans.add(
                    trace_id=trace_id,
                    span_id=os.urandom(8),
                    parent_span_id=root_id,
                    name=f"execute_tool {name}",
                    kind=Span.SPAN_KIND_INTERNAL,
                    start_time_unix_nano=t,
                    end_time_unix_nano=t + _STEP_NS - 1,
                )
                span.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "execute_tool"),
                        _kv("gen_ai.tool.name", name),
                        _kv("gen_ai.tool.call.id", str(msg.get("tool_call_id", ""))),
                        _kv("gen_ai.tool.call.arguments", args),
                        _kv("gen_ai.tool.call.result", result),
                    ]
                )
                if result.lstrip().lower().startswith("error"):
                    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=result[:200]))
            if role != "system":
                history.append(msg)
        return rs


def send(
    conversations: Sequence[Conversation],
    *,
    endpoint: str,
    protocol: str = "grpc",
    batch: int = 8,
    service: str = "otel-topics-replay",
    timeout: float = 30.0,
    attempts: int = 10,
) -> list[bytes]:
    """Send conversations as traces; returns their trace ids. Retries backpressure answers."""
    builder = TraceBuilder(service=service)
    trace_ids: list[bytes] = []
    requests: list[ExportTraceServiceRequest] = []
    for start in range(0, len(conversations), batch):
        req = ExportTraceServiceRequest()
        for conv in conversations[start : start + batch]:
            rs = builder.build(conv)
            trace_ids.append(rs.scope_spans[0].spans[0].trace_id)
            req.resource_spans.append(rs)
        requests.append(req)
    send_requests(requests, endpoint=endpoint, protocol=protocol, timeout=timeout, attempts=attempts)
    return trace_ids


def send_requests(
    requests: Sequence[ExportTraceServiceRequest],
    *,
    endpoint: str,
    protocol: str = "grpc",
    timeout: float = 30.0,
    attempts: int = 10,
) -> None:
    """Send prebuilt export requests over OTLP/gRPC or OTLP/HTTP, retrying backpressure answers."""
    if protocol == "grpc":
        _send_grpc(requests, endpoint, timeout, attempts)
    elif protocol in ("http", "http/protobuf"):
        _send_http(requests, endpoint, timeout, attempts)
    else:
        raise ValueError(f"protocol must be grpc or http, got {protocol!r}")


def _send_grpc(
    requests: Sequence[ExportTraceServiceRequest], endpoint: str, timeout: float, attempts: int
) -> None:
    import grpc

    target = endpoint.split("://", 1)[-1]
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        for req in requests:
            for attempt in range(attempts):
                try:
                    resp = export(req, timeout=timeout, compression=grpc.Compression.Gzip)
                    if resp.partial_success.rejected_spans:
                        raise ReplayError(
                            f"rejected {resp.partial_success.rejected_spans} spans: "
                            f"{resp.partial_success.error_message}"
                        )
                    break
                except grpc.RpcError as exc:
                    code = exc.code() if hasattr(exc, "code") else None
                    if code != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                        raise ReplayError(
                            f"{endpoint}: {code}: {exc.details() if hasattr(exc, 'details') else exc}"
                        ) from exc
                    time.sleep(min(5.0, 0.2 * 2**attempt))


def _send_http(
    requests: Sequence[ExportTraceServiceRequest], endpoint: str, timeout: float, attempts: int
) -> None:
    import httpx

    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    if not url.rstrip("/").endswith("/v1/traces"):
        url = url.rstrip("/") + "/v1/traces"
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    with httpx.Client(timeout=timeout) as client:
        for req in requests:
            body = gzip.compress(req.SerializeToString())
            for attempt in range(attempts):
                try:
                    resp = client.post(url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    if attempt == attempts - 1:
                        raise ReplayError(f"{url}: {exc}") from exc
                    time.sleep(min(5.0, 0.2 * 2**attempt))
                    continue
                if resp.status_code in (429, 502, 503, 504) and attempt < attempts - 1:
                    time.sleep(float(resp.headers.get("Retry-After", 1)))
                    continue
                if resp.status_code != 200:
                    raise ReplayError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
                break
