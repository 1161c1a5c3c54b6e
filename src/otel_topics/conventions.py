"""Conversation content of one span, span event or log record, per instrumentation convention.

Conventions read (see DESIGN.md "Conventions the preprocessor must read"):

* OTel GenAI: ``gen_ai.system_instructions``, ``gen_ai.input.messages``, ``gen_ai.output.messages``
  (JSON strings on spans, structured values on ``gen_ai.client.inference.operation.details`` records);
  the deprecated events ``gen_ai.{system,user,assistant,tool}.message`` / ``gen_ai.choice`` and
  ``gen_ai.content.prompt`` / ``gen_ai.content.completion``; ``gen_ai.prompt`` / ``gen_ai.completion``
  JSON attributes; tool execution spans (``gen_ai.operation.name=execute_tool``, ``gen_ai.tool.*``).
* OpenLLMetry: ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*`` (also ``llm.prompts`` /
  ``llm.completions``); ``traceloop.entity.input`` / ``.output``; ``traceloop.span.kind=tool``.
* OpenInference: ``llm.input_messages.N.message.*`` / ``llm.output_messages...`` (``content`` or
  ``contents.K.message_content.text``, ``tool_calls.M.tool_call.function.*``); ``input.value`` /
  ``output.value``; ``openinference.span.kind`` (``TOOL`` spans: ``tool.name``).
* Vercel AI SDK: ``ai.prompt.messages``, ``ai.prompt``, ``ai.response.text``, ``ai.response.toolCalls``,
  ``ai.response.object``; ``ai.toolCall`` spans.
* Errors: span status ``ERROR`` and ``exception`` events / log records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_topics.messages import (
    Names,
    compact_json,
    is_error_text,
    message_from_dict,
    messages_from,
    output_messages,
    parse_json,
    text_from_value,
    unquote,
)
from otel_topics.model import Message, Role, ToolCall

__all__ = [
    "EVALUATION_EVENT",
    "Context",
    "SpanContent",
    "SpanInfo",
    "attributes",
    "event_messages",
    "exception_text",
    "python_value",
    "read_span",
]

EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
OPERATION_DETAILS: Final = "gen_ai.client.inference.operation.details"
_DEPRECATED_ROLES: Final[dict[str, Role]] = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "assistant",
}
_INDEXED = re.compile(
    r"(gen_ai\.prompt|gen_ai\.completion|llm\.input_messages|llm\.output_messages|llm\.prompts|llm\.completions)"
    r"\.(\d+)\.(.+)"
)
_SUB_INDEXED = re.compile(r"(?:message\.)?(tool_calls|contents)\.(\d+)\.(.+)")
_INPUT_FAMILIES: Final[tuple[str, ...]] = ("llm.input_messages", "gen_ai.prompt", "llm.prompts")
_OUTPUT_FAMILIES: Final[tuple[str, ...]] = ("llm.output_messages", "gen_ai.completion", "llm.completions")
_TOOL_RESULT_KEYS: Final = (
    "gen_ai.tool.call.result", "output.value", "ai.toolCall.result", "ai.toolCall.output",
    "traceloop.entity.output", "output",
)  # fmt: skip
_VERCEL_KEYS: Final = (
    "ai.prompt.messages", "ai.prompt", "ai.response.text", "ai.response.toolCalls", "ai.response.object",
)  # fmt: skip
_ERROR = Status.STATUS_CODE_ERROR


def python_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value (kvlist -> dict, array -> list)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "kvlist_value":
        return {kv.key: python_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [python_value(x) for x in v.array_value.values]
    if kind is None:
        return None
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: python_value(kv.value) for kv in kvs}


@dataclass(slots=True)
class SpanInfo:
    """A span with its attributes read once into a dict, and indexed attribute families grouped."""

    span: Span
    attrs: dict[str, Any]
    indexed: dict[str, dict[int, dict[str, Any]]]

    @classmethod
    def of(cls, span: Span) -> SpanInfo:
        attrs: dict[str, Any] = {}
        indexed: dict[str, dict[int, dict[str, Any]]] = {}
        for kv in span.attributes:
            key = kv.key
            value = python_value(kv.value)
            attrs[key] = value
            if key[:2] in ("ge", "ll") and (m := _INDEXED.match(key)) is not None:
                indexed.setdefault(m[1], {}).setdefault(int(m[2]), {})[m[3]] = value
        return cls(span, attrs, indexed)

    @property
    def kind(self) -> str:
        """The OpenInference span kind, upper case, or ''."""
        k = self.attrs.get("openinference.span.kind")
        return k.upper() if isinstance(k, str) else ""


@dataclass(slots=True)
class SpanContent:
    """What one span contributes: timed messages; ``fallback`` is used only when no LLM content covers it."""

    messages: list[tuple[int, Message]] = field(default_factory=list)
    fallback: list[tuple[int, Message]] = field(default_factory=list)
    has_llm: bool = False  # system/user/assistant content from an LLM convention


class Context:
    """State shared by the spans and records of one trace while they are read.

    ``names`` maps tool call ids to tool names. Agents resend the whole history on every LLM call;
    message histories already read from an earlier span are recognized (a JSON list whose text starts
    with a list read before, or an indexed message with the same attributes) and only the new
    messages are parsed: they would be dropped as duplicates anyway. ``skipped`` counts those.
    """

    _KEEP: Final = 4  # recent JSON lists remembered per attribute

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.skipped = 0
        self._lists: dict[str, list[str]] = {}
        self._indexed: set[tuple[Any, ...]] = set()

    def history(self, key: str, value: Any) -> Any:
        """The JSON value of a history attribute (a non-JSON string as is); for a list that extends
        one read before, only the new items."""
        if not isinstance(value, str):
            return value
        raw = value.strip()
        known = self._lists.setdefault(key, [])
        best = ""
        for prev in known:
            if len(prev) > len(best) and raw.startswith(prev):
                best = prev
        parsed: Any = None
        if best:
            rest = raw[len(best) :].lstrip()
            if rest == "]":
                self.skipped += 1
                return []
            if rest[:1] == ",":
                parsed = parse_json("[" + rest[1:])
                if isinstance(parsed, list):
                    self.skipped += 1
        if parsed is None:
            parsed = parse_json(raw)
            if parsed is None:
                return raw  # not JSON: plain text
        if isinstance(parsed, list) and raw.endswith("]"):
            body = raw[:-1].rstrip()
            if body != "[" and body not in known:
                known.append(body)
                if len(known) > self._KEEP:
                    known.pop(0)
        return parsed

    def seen_indexed(self, family: str, fields: Mapping[str, Any]) -> bool:
        """Whether an indexed message with exactly these attributes was read before (then skip it)."""
        try:
            key = (family, *sorted(fields.items()))
            hash(key)
        except TypeError:  # list-valued attribute: do not remember
            return False
        if key in self._indexed:
            self.skipped += 1
            return True
        self._indexed.add(key)
        return False


def _indexed_messages(
    family: str, entries: Mapping[int, Mapping[str, Any]], default_role: Role, ctx: Context
) -> list[Message]:
    """``llm.input_messages.N.*`` / ``gen_ai.prompt.N.*`` entries -> messages (via message dicts)."""
    out: list[Message] = []
    names = ctx.names
    for _, fields in sorted(entries.items()):
        if ctx.seen_indexed(family, fields):
            continue
        d: dict[str, Any] = {}
        calls: dict[int, dict[str, Any]] = {}
        contents: dict[int, dict[str, Any]] = {}
        for key, value in fields.items():
            m = _SUB_INDEXED.match(key)
            if m is not None:
                target = calls if m[1] == "tool_calls" else contents
                sub = (
                    m[3].removeprefix("tool_call.").removeprefix("message_content.").removeprefix("function.")
                )
                target.setdefault(int(m[2]), {})[sub] = value
            else:
                d[key.removeprefix("message.")] = value
        if calls:
            d["tool_calls"] = [calls[i] for i in sorted(calls)]
        if contents:
            d["content"] = [contents[i] for i in sorted(contents)]
        fc_name = d.pop("function_call_name", None)
        if fc_name:
            d["function_call"] = {"name": fc_name, "arguments": d.pop("function_call_arguments_json", "")}
        out.extend(message_from_dict(d, default_role, names))
    return out


def _structured(value: Any) -> Any:
    """A value that may be a JSON string or already structured (log records)."""
    if isinstance(value, str):
        return parse_json(value)
    return value


def _instructions(value: Any) -> list[Message]:
    if isinstance(value, str) and (parsed := parse_json(value)) is not None:
        value = parsed
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, list):
        text = "\n".join(t for p in value if (t := _part_text(p)))
    else:
        text = _part_text(value)
    return [Message("system", text)] if text else []


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part.strip()
    if isinstance(part, dict):
        v = part.get("content", part.get("text"))
        return v.strip() if isinstance(v, str) else ""
    return ""


def genai_messages(fields: Mapping[str, Any], ctx: Context) -> tuple[list[Message], list[Message]]:
    """(inputs incl. system instructions, outputs) from ``gen_ai.*.messages`` fields."""
    inputs: list[Message] = []
    if (v := fields.get("gen_ai.system_instructions")) is not None:
        inputs.extend(_instructions(ctx.history("gen_ai.system_instructions", v)))
    if (v := fields.get("gen_ai.input.messages")) is not None:
        v = ctx.history("gen_ai.input.messages", v)
        if isinstance(v, str) and v:
            inputs.append(Message("user", v))
        else:
            inputs.extend(messages_from(v, "user", ctx.names))
    outputs: list[Message] = []
    if (v := fields.get("gen_ai.output.messages")) is not None:
        outputs.extend(messages_from(_structured(v), "assistant", ctx.names))
    return inputs, outputs


def _vercel(attrs: Mapping[str, Any], ctx: Context) -> tuple[list[Message], list[Message]]:
    names = ctx.names
    inputs: list[Message] = []
    if isinstance(v := attrs.get("ai.prompt.messages"), str):
        inputs = messages_from(ctx.history("ai.prompt.messages", v), "user", names)
    elif isinstance(v := attrs.get("ai.prompt"), str):
        prompt = parse_json(v)
        if isinstance(prompt, dict):
            if isinstance(prompt.get("system"), str) and prompt["system"].strip():
                inputs.append(Message("system", prompt["system"].strip()))
            p = prompt.get("prompt")
            if isinstance(p, str) and p.strip():
                inputs.append(Message("user", p.strip()))
            elif isinstance(p, list):
                inputs.extend(messages_from(p, "user", names))
            inputs.extend(messages_from(prompt.get("messages"), "user", names))
        elif v.strip():
            inputs.append(Message("user", v.strip()))
    text = attrs.get("ai.response.text")
    if not isinstance(text, str) or not text.strip():
        obj = attrs.get("ai.response.object")
        text = obj if isinstance(obj, str) else ""
    calls: list[ToolCall] = []
    if isinstance(v := attrs.get("ai.response.toolCalls"), str):
        raw = parse_json(v)
        for m in messages_from([{"role": "assistant", "tool_calls": raw}], "assistant", names):
            calls.extend(m.tool_calls)
    outputs = [Message("assistant", text.strip(), tool_calls=tuple(calls))] if text.strip() or calls else []
    return inputs, outputs


def _llm_io(info: SpanInfo, ctx: Context) -> tuple[list[Message], list[Message]]:
    """Input and output messages of an LLM call, each from the first convention present on the span.

    "Present" is about the attribute, not its yield: a history whose messages were all read on an
    earlier span gives no new message, and must not send us parsing another copy (``input.value``).
    """
    attrs, indexed, names = info.attrs, info.indexed, ctx.names
    inputs, outputs = genai_messages(attrs, ctx)
    has_in, has_out = "gen_ai.input.messages" in attrs, "gen_ai.output.messages" in attrs
    if not has_in and (family := next((f for f in _INPUT_FAMILIES if f in indexed), None)):
        inputs += _indexed_messages(family, indexed[family], "user", ctx)
        has_in = True
    if not has_out and (family := next((f for f in _OUTPUT_FAMILIES if f in indexed), None)):
        outputs = _indexed_messages(family, indexed[family], "assistant", ctx)
        has_out = True
    if not has_in and isinstance(v := attrs.get("gen_ai.prompt"), str):  # deprecated whole-JSON form
        inputs += messages_from(ctx.history("gen_ai.prompt", v), "user", names)
        has_in = True
    if not has_out and isinstance(v := attrs.get("gen_ai.completion"), str):
        outputs = output_messages(v, names)
        has_out = True
    if (not has_in or not has_out) and any(k in attrs for k in _VERCEL_KEYS):
        v_in, v_out = _vercel(attrs, ctx)
        if not has_in and ("ai.prompt.messages" in attrs or "ai.prompt" in attrs):
            inputs += v_in
            has_in = True
        if not has_out:
            outputs, has_out = v_out, bool(v_out)
    if info.kind == "LLM":
        if not has_in and (v := attrs.get("input.value")) is not None:
            inputs += _llm_input_value(v, names)
        if not has_out and (v := attrs.get("output.value")) is not None:
            outputs = output_messages(v, names)
    return inputs, outputs


def _llm_input_value(value: Any, names: Names) -> list[Message]:
    parsed = parse_json(value) if isinstance(value, str) else value
    if parsed is None:
        text = str(value).strip()
        return [Message("user", text)] if text else []
    found = messages_from(parsed, "user", names)
    if found:
        return found
    text = text_from_value(parsed)
    return [Message("user", text)] if text else []


def _tool_name(info: SpanInfo) -> str:
    a = info.attrs
    for key in ("gen_ai.tool.name", "tool.name", "ai.toolCall.name", "traceloop.entity.name"):
        v = a.get(key)
        if isinstance(v, str) and v:
            return v
    return info.span.name


def is_tool_span(info: SpanInfo) -> bool:
    a = info.attrs
    return (
        a.get("gen_ai.operation.name") == "execute_tool"
        or info.kind == "TOOL"
        or a.get("traceloop.span.kind") == "tool"
        or "ai.toolCall.name" in a
    )


def _tool_message(info: SpanInfo, names: Names) -> Message | None:
    a = info.attrs
    name = _tool_name(info)
    call_id = a.get("gen_ai.tool.call.id") or a.get("ai.toolCall.id")
    if isinstance(call_id, str) and call_id:
        names.setdefault(call_id, name)
    result = next((a[k] for k in _TOOL_RESULT_KEYS if a.get(k) not in (None, "")), None)
    if result is None:
        return None
    if isinstance(result, str):
        parsed = parse_json(result) if result.lstrip()[:1] == "{" else None
        if isinstance(parsed, dict) and set(parsed) <= {"output", "result"} and parsed:
            result = next(iter(parsed.values()))  # traceloop.entity.output wraps the return value
        text = unquote(result.strip()) if isinstance(result, str) else compact_json(result)
    else:
        text = compact_json(result)
    if not text:
        return None
    failed = info.span.status.code == _ERROR
    return Message("tool", text, name=name, is_error=failed or is_error_text(text))


def exception_text(attrs: Mapping[str, Any]) -> str:
    etype = attrs.get("exception.type")
    emsg = attrs.get("exception.message")
    etype = etype.strip() if isinstance(etype, str) else ""
    emsg = emsg.strip() if isinstance(emsg, str) else ""
    if etype and emsg:
        return f"{etype}: {emsg}"
    return etype or emsg or "exception"


def _fallback(info: SpanInfo, names: Names) -> tuple[list[Message], list[Message]]:
    """Workflow / agent / chain input and output (used only when no LLM content covers the span)."""
    a = info.attrs
    if info.kind in ("AGENT", "CHAIN"):
        keys = ("input.value", "output.value")
    elif "traceloop.entity.input" in a or "traceloop.entity.output" in a:
        keys = ("traceloop.entity.input", "traceloop.entity.output")
    else:
        return [], []
    result: list[list[Message]] = [[], []]
    roles: tuple[Role, Role] = ("user", "assistant")
    for i, (key, role) in enumerate(zip(keys, roles, strict=True)):
        value = a.get(key)
        if value is None:
            continue
        parsed = parse_json(value) if isinstance(value, str) else value
        found = messages_from(parsed, role, names) if parsed is not None else []
        if not found:
            text = text_from_value(value)
            found = [Message(role, text)] if text else []
        result[i] = found
    return result[0], result[1]


def event_messages(name: str, attrs: Mapping[str, Any], body: Any, ctx: Context) -> list[Message]:
    """Messages of a GenAI event (span event: fields in ``attrs``; log record: fields in ``body``)."""
    names = ctx.names
    if name == OPERATION_DETAILS:
        fields = dict(attrs)
        if isinstance(body, dict):
            fields.update(body)
        inputs, outputs = genai_messages(fields, ctx)
        return inputs + outputs
    role = _DEPRECATED_ROLES.get(name)
    if role is not None:
        fields = dict(body) if isinstance(body, dict) else {k: v for k, v in attrs.items() if "." not in k}
        if isinstance(body, str):
            fields["content"] = body
        for key in ("message", "tool_calls"):  # JSON strings when the fields are span event attributes
            if isinstance(fields.get(key), str):
                fields[key] = parse_json(fields[key])
        if name == "gen_ai.choice":
            msg = fields.get("message")
            return message_from_dict(msg, "assistant", names) if isinstance(msg, dict) else []
        fields.setdefault("role", role)
        return message_from_dict(fields, role, names)
    if name == "gen_ai.content.prompt" and isinstance(v := attrs.get("gen_ai.prompt"), str):
        return messages_from(ctx.history("gen_ai.prompt", v), "user", names)
    if name == "gen_ai.content.completion" and isinstance(v := attrs.get("gen_ai.completion"), str):
        return output_messages(v, names)
    return []


def read_span(info: SpanInfo, ctx: Context) -> SpanContent:
    """Everything one span says about the conversation: messages, tool result, events, errors."""
    span = info.span
    names = ctx.names
    skipped = ctx.skipped
    start, end = span.start_time_unix_nano, span.end_time_unix_nano or span.start_time_unix_nano
    content = SpanContent()
    out = content.messages
    if is_tool_span(info):
        msg = _tool_message(info, names)
        if msg is not None:
            out.append((end, msg))
    else:
        inputs, outputs = _llm_io(info, ctx)
        out.extend((start, m) for m in inputs)
        out.extend((end, m) for m in outputs)
        content.has_llm = bool(inputs or outputs) or ctx.skipped > skipped
        if not content.has_llm:
            f_in, f_out = _fallback(info, names)
            content.fallback.extend((start, m) for m in f_in)
            content.fallback.extend((end, m) for m in f_out)
    errors: list[str] = []
    for ev in span.events:
        ev_name = ev.name
        if ev_name == EVALUATION_EVENT:
            continue
        ev_attrs = attributes(ev.attributes)
        t = ev.time_unix_nano or end
        if ev_name == "exception":
            text = exception_text(ev_attrs)
            errors.append(text)
            out.append((t, Message("error", text, name=span.name, is_error=True)))
            continue
        found = event_messages(ev_name, ev_attrs, None, ctx)
        if found:
            content.has_llm = content.has_llm or any(m.role != "tool" for m in found)
            out.extend((t, m) for m in found)
    if span.status.code == _ERROR:
        status_msg = span.status.message.strip()
        if not status_msg:
            if not errors:
                out.append((end, Message("error", "span status ERROR", name=span.name, is_error=True)))
        elif not any(status_msg in e or e in status_msg for e in errors):
            out.append((end, Message("error", status_msg, name=span.name, is_error=True)))
    return content
