"""Chat messages in the JSON shapes instrumentations record, turned into :class:`~otel_topics.model.Message`.

Understood shapes (one message is a dict; a conversation is a list of them):

* OTel GenAI parts: ``{"role", "parts": [{"type": "text", "content"}, {"type": "tool_call", "name",
  "arguments", "id"}, {"type": "tool_call_response", "response", "id"}, ...], "finish_reason"}``
* OpenAI chat: ``{"role", "content": str | [{"type": "text", "text"}...], "tool_calls": [{"id",
  "function": {"name", "arguments"}}], "tool_call_id", "name"}`` (also the deprecated GenAI event bodies)
* Vercel AI SDK: content parts ``{"type": "tool-call", "toolName", "input"|"args"}`` and
  ``{"type": "tool-result", "toolName", "output"|"result"}``
* Anthropic content blocks ``tool_use`` / ``tool_result``; OpenAI Responses ``function_call`` /
  ``function_call_output`` items
* LangChain serialized messages ``{"lc": 1, "id": [..., "HumanMessage"], "kwargs": {"content", ...}}``

Tool results become separate ``tool`` messages named after their tool (resolved from the call id when
the result does not say). Reasoning parts are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from otel_topics.model import Message, Role, ToolCall

__all__ = [
    "compact_json",
    "is_error_text",
    "messages_from",
    "output_messages",
    "parse_json",
    "role_of",
    "text_from_value",
    "unquote",
]

Names = MutableMapping[str, str]
"""Tool call id -> tool name, filled while reading a trace so tool results can be named."""

_ROLES: Final[dict[str, Role]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "humanmessage": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "aimessage": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatbot": "assistant",
    "tool": "tool",
    "toolmessage": "tool",
    "function": "tool",
    "functionmessage": "tool",
    "ipython": "tool",
    "systemmessage": "system",
}
_TOOL_CALL_TYPES: Final = frozenset({"tool_call", "tool-call", "tool_use", "function_call"})
_TOOL_RESULT_TYPES: Final = frozenset(
    {"tool_call_response", "tool-result", "tool_result", "function_call_output"}
)
_TOOL_TYPES: Final = _TOOL_CALL_TYPES | _TOOL_RESULT_TYPES
_SKIPPED_TYPES: Final = frozenset({"reasoning", "thinking", "redacted_thinking", "step-start"})
_TEXT_KEYS: Final = ("text", "content", "value")
_VALUE_KEYS: Final = (
    "messages", "input", "inputs", "query", "question", "prompt", "user_input", "task", "message", "text",
    "content", "output", "outputs", "answer", "result", "response", "final_output", "args",
)  # fmt: skip


def parse_json(text: str) -> Any:
    """The JSON value of ``text`` if it looks like a JSON object or array, else None."""
    s = text.lstrip()
    if not s or s[0] not in "[{":
        return None
    try:
        return json.loads(s)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def unquote(text: str) -> str:
    """A JSON-encoded string (``"\"hi\""``, as serializers of return values write it) decoded; else as is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, str):
            return value.strip()
    return text


def compact_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (ValueError, RecursionError):  # absurdly deep nesting
        return str(value)[:10_000]


def canonical_arguments(value: Any) -> str:
    """Tool call arguments as compact JSON, whether they came as a JSON string or a structure."""
    if value is None:
        return ""
    if isinstance(value, str):
        parsed = parse_json(value)
        return value.strip() if parsed is None else compact_json(parsed)
    return compact_json(value)


def role_of(value: Any, default: Role) -> Role:
    if isinstance(value, str):
        return _ROLES.get(value.lower(), default)
    return default


def is_error_text(text: str) -> bool:
    """A tool result reporting a failure (``Error: ...``, as tau-bench and most frameworks write it)."""
    head = text.lstrip()[:6]
    return head.startswith(("Error", "ERROR")) or head.lower() == "error:"


def _content_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        texts = [_content_text(v) for v in value]
        return "\n".join(t for t in texts if t)
    if isinstance(value, dict):
        for key in _TEXT_KEYS:
            v = value.get(key)
            if isinstance(v, str):
                return v
        if "type" in value and "value" in value:
            return compact_json(value["value"])
    return compact_json(value)


def _result_text(value: Any) -> str:
    """A tool result: strings as they are; Vercel ``{"type": "text"|"json", "value"}``; else JSON."""
    if isinstance(value, dict) and "value" in value and value.get("type") in ("text", "json", "error-text"):
        value = value["value"]
    if isinstance(value, list) and value and all(isinstance(v, dict) and "type" in v for v in value):
        return _content_text(value)
    return value.strip() if isinstance(value, str) else compact_json(value)


def _tool_call(part: Mapping[str, Any], names: Names) -> ToolCall | None:
    fn = part.get("function")
    if isinstance(fn, dict):  # OpenAI tool_calls entry
        name, args = fn.get("name"), fn.get("arguments")
    else:
        name = part.get("name") or part.get("toolName")
        args = next((part[k] for k in ("arguments", "input", "args") if k in part), None)
    if not name:
        return None
    call_id = part.get("id") or part.get("toolCallId") or part.get("call_id")
    if isinstance(call_id, str) and call_id:
        names[call_id] = str(name)
    return ToolCall(str(name), canonical_arguments(args))


def _tool_result(part: Mapping[str, Any], names: Names, name: str | None = None) -> Message:
    call_id = part.get("id") or part.get("toolCallId") or part.get("tool_use_id") or part.get("call_id")
    tool = part.get("toolName") or part.get("name") or name
    if not tool and isinstance(call_id, str):
        tool = names.get(call_id)
    raw = next((part[k] for k in ("response", "output", "result", "content") if k in part), "")
    text = _result_text(raw)
    error = bool(part.get("is_error")) or str(part.get("type", "")).endswith("error") or is_error_text(text)
    if isinstance(raw, dict) and str(raw.get("type", "")).startswith("error"):
        error = True
    return Message("tool", text, name=str(tool) if tool else None, is_error=error)


def _from_parts(
    role: Role, parts: list[Any], names: Names, name: str | None
) -> tuple[list[str], list[ToolCall], list[Message]]:
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type", "text")
        if kind == "text" and isinstance(text := part.get("content", part.get("text")), str):
            texts.append(text)  # the common case first
        elif kind in _TOOL_CALL_TYPES:
            call = _tool_call(part, names)
            if call is not None:
                calls.append(call)
        elif kind in _TOOL_RESULT_TYPES:
            results.append(_tool_result(part, names, name if role == "tool" else None))
        elif kind in _SKIPPED_TYPES:
            continue
        else:
            text = next((part[k] for k in _TEXT_KEYS if isinstance(part.get(k), str)), None)
            if text is not None:
                texts.append(text)
            elif kind not in ("text", "message_content"):
                texts.append(f"[{kind}]")  # image, audio, file, blob, uri...
    return texts, calls, results


def _langchain(d: Mapping[str, Any]) -> dict[str, Any]:
    """A LangChain-serialized message as a plain dict."""
    kw = d.get("kwargs")
    if not isinstance(kw, dict):
        return {}
    ident = d.get("id")
    role = kw.get("type") or (ident[-1] if isinstance(ident, list) and ident else None)
    out: dict[str, Any] = {"role": role, "content": kw.get("content")}
    calls = kw.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [
            {"name": c.get("name"), "args": c.get("args"), "id": c.get("id")}
            for c in calls
            if isinstance(c, dict)
        ]
    for key in ("name", "tool_call_id"):
        if kw.get(key):
            out[key] = kw[key]
    return out


def message_from_dict(d: Mapping[str, Any], default_role: Role, names: Names) -> list[Message]:
    """One message dict in any understood shape -> its messages (tool results split off)."""
    if "lc" in d and "kwargs" in d:
        d = _langchain(d)
    elif "role" not in d and isinstance(d.get("message"), dict):  # gen_ai.choice body, OpenAI choice
        return message_from_dict(d["message"], default_role, names)
    item_type = d.get("type")
    if "role" not in d and item_type in _TOOL_TYPES:  # Responses API items
        return messages_from(
            [{"role": "tool" if item_type in _TOOL_RESULT_TYPES else "assistant", "parts": [d]}],
            default_role,
            names,
        )
    role = role_of(d.get("role"), default_role)
    name = d.get("name") if isinstance(d.get("name"), str) else None
    call_id = d.get("tool_call_id") or (d.get("id") if role == "tool" else None)
    if role == "tool" and name is None and isinstance(call_id, str):
        name = names.get(call_id)
    parts = d.get("parts")
    content = d.get("content")
    if isinstance(content, str) and content[:1] == "[" and role != "tool":
        parsed = parse_json(content)  # OpenLLMetry writes multimodal content as a JSON string
        if isinstance(parsed, list) and all(isinstance(p, dict) and "type" in p for p in parsed):
            content = parsed
    if not isinstance(parts, list):
        parts = content if isinstance(content, list) else []
        texts = [] if isinstance(content, list) else [_content_text(content)]
    else:
        texts = []
    more_texts, calls, results = _from_parts(role, parts, names, name)
    texts.extend(more_texts)
    raw_calls = d.get("tool_calls")
    if isinstance(raw_calls, str):
        raw_calls = parse_json(raw_calls)
    if isinstance(raw_calls, list):
        for c in raw_calls:
            if isinstance(c, dict) and (call := _tool_call(c, names)) is not None:
                calls.append(call)
    fc = d.get("function_call")
    if isinstance(fc, dict) and (call := _tool_call(fc, names)) is not None:
        calls.append(call)
    text = "\n".join(t for t in texts if t).strip()
    out: list[Message] = []
    if role == "tool" and not calls:
        if text:
            out.append(Message("tool", text, name=name, is_error=is_error_text(text)))
    elif text or calls:
        out.append(Message(role, text, name=name if role == "tool" else None, tool_calls=tuple(calls)))
    out.extend(results)
    return out


def messages_from(value: Any, default_role: Role, names: Names, _depth: int = 0) -> list[Message]:
    """A list of message dicts (or one message dict) -> messages. Non-message values give []."""
    if isinstance(value, dict):
        value = value["messages"] if isinstance(value.get("messages"), list) else [value]
    if not isinstance(value, list):
        return []
    out: list[Message] = []
    for item in value:
        if isinstance(item, list):  # LangChain batches: [[msg, msg]]
            if _depth < 2:
                out.extend(messages_from(item, default_role, names, _depth + 1))
        elif isinstance(item, dict) and (
            "role" in item
            or "parts" in item
            or "lc" in item
            or "message" in item
            or item.get("type") in _TOOL_TYPES
        ):
            out.extend(message_from_dict(item, default_role, names))
    return out


def output_messages(value: Any, names: Names) -> list[Message]:
    """A model response in any understood shape -> assistant messages.

    ``{"text"}``, OpenAI ``{"choices": [{"message"}]}``, LangChain ``{"generations": [[...]]}``,
    Anthropic ``{"content": [blocks]}``, OpenAI Responses ``{"output": [items]}``, message lists, text.
    """
    if isinstance(value, str):
        parsed = parse_json(value)
        if parsed is None:
            text = value.strip()
            return [Message("assistant", text)] if text else []
        value = parsed
    if isinstance(value, list):
        return messages_from(value, "assistant", names)
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("choices"), list):
        return [
            m
            for c in value["choices"]
            if isinstance(c, dict)
            for m in message_from_dict(c, "assistant", names)
        ]
    gens = value.get("generations")
    if isinstance(gens, list):
        out: list[Message] = []
        for g in (g for batch in gens for g in (batch if isinstance(batch, list) else [batch])):
            if isinstance(g, dict):
                msg = g.get("message")
                if isinstance(msg, dict):
                    out.extend(message_from_dict(msg, "assistant", names))
                elif isinstance(g.get("text"), str) and g["text"].strip():
                    out.append(Message("assistant", g["text"].strip()))
        return out
    if isinstance(value.get("output"), list):
        return messages_from(value["output"], "assistant", names)
    if "role" in value or "parts" in value or "message" in value:
        return message_from_dict(value, "assistant", names)
    if isinstance(value.get("content"), list):
        return message_from_dict({"role": "assistant", "content": value["content"]}, "assistant", names)
    text = text_from_value(value)
    return [Message("assistant", text)] if text else []


def text_from_value(value: Any, _depth: int = 0) -> str:
    """Best-effort readable text of a workflow/agent input or output value (JSON or plain)."""
    if _depth > 8:
        return compact_json(value)
    if isinstance(value, str):
        parsed = parse_json(value)
        if parsed is None:
            return unquote(value.strip())
        value = parsed
    if isinstance(value, dict):
        for key in _VALUE_KEYS:
            v = value.get(key)
            if v not in (None, "", [], {}):
                return text_from_value(v, _depth + 1)
        return compact_json(value) if value else ""
    if isinstance(value, list):
        if len(value) == 1:
            return text_from_value(value[0], _depth + 1)
        if value and all(isinstance(v, str) for v in value):
            return "\n".join(v.strip() for v in value if v.strip())
        return compact_json(value) if value else ""
    return "" if value is None else compact_json(value)
