"""The preprocessor stage: the spans and GenAI log records of one trace -> a conversation.

Steps: read every convention (:mod:`otel_topics.conventions`) from spans, span events and log records;
leave out scorer content (``EVALUATOR`` spans and their descendants, spans matched by
:class:`ExcludeRule`, ``gen_ai.evaluation.result`` events/records); order messages by time; keep each
distinct message once (agents resend the whole history on every LLM call); redact
(:mod:`otel_topics.redact`); cap at ``max_tokens`` WordPiece tokens (:mod:`otel_topics.tokens`), keeping
the task (first user messages) and the most recent messages.

A user-supplied function can replace all of this: :func:`load_custom_preprocessor`.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from otel_topics import metrics
from otel_topics.conventions import (
    EVALUATION_EVENT,
    Context,
    SpanInfo,
    attributes,
    event_messages,
    exception_text,
    python_value,
    read_span,
)
from otel_topics.errors import ConfigError
from otel_topics.messages import compact_json
from otel_topics.model import Conversation, Message, ToolCall, TraceData
from otel_topics.redact import redact as redact_text
from otel_topics.tokens import TextCache, TokenCap, TokenCounter, shared_wordpiece_counter

__all__ = ["CustomPreprocessor", "DefaultPreprocessor", "ExcludeRule", "load_custom_preprocessor"]

log = logging.getLogger(__name__)

_REDACT_CACHE_MIN_CHARS: Final = 256  # shorter texts are redacted faster than they are hashed and looked up


@dataclass(frozen=True, slots=True)
class ExcludeRule:
    """Leave spans (and their descendants) out of the conversation; they are still forwarded.

    ``name``: regular expression searched in the span name (unanchored, like the collector's ``regexp``).
    ``attribute``: the span has this attribute; with ``value``, its value (as a string; booleans
    ``true``/``false``) equals ``value``. With both ``name`` and ``attribute``, both must match.
    """

    name: str | None = None
    attribute: str | None = None
    value: str | None = None
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name is None and self.attribute is None:
            raise ValueError("exclude rule needs 'name' and/or 'attribute'")
        if self.value is not None and self.attribute is None:
            raise ValueError(f"exclude rule with value {self.value!r} needs 'attribute'")
        if self.name is not None:
            try:
                object.__setattr__(self, "_pattern", re.compile(self.name))
            except re.error as exc:
                raise ValueError(
                    f"exclude rule name {self.name!r} is not a valid regular expression: {exc}"
                ) from exc

    def matches(self, span_name: str, attrs: Mapping[str, Any]) -> bool:
        if self._pattern is not None and self._pattern.search(span_name) is None:
            return False
        if self.attribute is not None:
            if self.attribute not in attrs:
                return False
            if self.value is not None and _attr_text(attrs[self.attribute]) != self.value:
                return False
        return True


def _attr_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else compact_json(value)


class DefaultPreprocessor:
    """Implements :class:`otel_topics.stages.Preprocessor` from the OpenTelemetry GenAI, OpenInference,
    OpenLLMetry and Vercel AI SDK conventions."""

    def __init__(
        self,
        max_tokens: int = 128_000,
        redact: bool = True,
        exclude_spans: Sequence[ExcludeRule] = (),
        tokenizer: TokenCounter | None = None,
    ) -> None:
        self.redact = redact
        self.exclude_spans = tuple(exclude_spans)
        self._capper = TokenCap(
            tokenizer if tokenizer is not None else shared_wordpiece_counter(), max_tokens
        )
        self._redacted = TextCache()

    @property
    def max_tokens(self) -> int:
        return self._capper.max_tokens

    def __call__(self, trace: TraceData) -> Conversation:
        messages = self.messages(trace)
        if self.redact:
            messages = [self._redact(m) for m in messages]
        if not messages:
            return Conversation(trace.trace_id, [])
        kept, tokens, truncated = self._capper.cap(
            messages, Message.render, self._shrink, _head_length(messages), _omitted
        )
        return Conversation(trace.trace_id, kept, token_count=tokens, truncated=truncated)

    def messages(self, trace: TraceData) -> list[Message]:
        """The trace's distinct messages in chronological order, before redaction and the cap."""
        return _Extraction(trace, self.exclude_spans).run()

    def _redact(self, m: Message) -> Message:
        content = self._redact_text(m.content)
        calls = tuple(ToolCall(c.name, self._redact_text(c.arguments)) for c in m.tool_calls)
        if content is m.content and all(
            a.arguments is b.arguments for a, b in zip(calls, m.tool_calls, strict=True)
        ):
            return m
        return Message(m.role, content, name=m.name, tool_calls=calls, is_error=m.is_error)

    def _redact_text(self, text: str) -> str:
        if len(text) < _REDACT_CACHE_MIN_CHARS:
            return redact_text(text)
        cached: str | None = self._redacted.get(text)
        if cached is None:
            cached = redact_text(text)
            self._redacted.put(text, cached)
        return cached

    def _shrink(self, m: Message, budget: int) -> Message | None:
        body = Message(m.role, m.content, tool_calls=m.tool_calls).render().partition(": ")[2]
        head_tokens = self._capper.counter.count(Message(m.role, "", name=m.name).render())
        text = self._capper.clip(body, budget - head_tokens)
        return Message(m.role, text, name=m.name, is_error=m.is_error) if text else None


def _head_length(messages: Sequence[Message]) -> int:
    """Messages up to and including the first run of user messages (the task); 1 without a user message."""
    first = next((i for i, m in enumerate(messages) if m.role == "user"), None)
    if first is None:
        return 1
    end = first
    while end < len(messages) and messages[end].role == "user":
        end += 1
    return end


def _omitted(n: int) -> Message:
    return Message("system", f"[... {n} messages omitted ...]")


_skipped = 0


def skipped_total() -> int:
    """Pieces of content this process's preprocessors skipped so far (worker processes report it)."""
    return _skipped


def _skip(what: str, name: str, exc: Exception) -> None:
    global _skipped
    log.warning("preprocess: content of %s %r skipped: %s: %s", what, name, type(exc).__name__, exc)
    metrics.ERRORS.labels("preprocess").inc()
    _skipped += 1


class _Extraction:
    """One pass over a trace's spans and log records."""

    def __init__(self, trace: TraceData, rules: Sequence[ExcludeRule]) -> None:
        self.trace = trace
        self.rules = rules
        self.infos: dict[bytes, SpanInfo] = {}
        self.ctx = Context()
        self.items: list[tuple[int, int, Message]] = []

    def _add(self, timed: Sequence[tuple[int, Message]]) -> None:
        n = len(self.items)
        self.items.extend((t, n + i, m) for i, (t, m) in enumerate(timed))

    def _parent(self, info: SpanInfo) -> SpanInfo | None:
        pid = info.span.parent_span_id
        return self.infos.get(pid) if pid else None

    def _ancestors(self, info: SpanInfo) -> list[SpanInfo]:
        chain: list[SpanInfo] = []
        p = self._parent(info)
        while p is not None and len(chain) < len(self.infos):  # the bound guards against parent cycles
            chain.append(p)
            p = self._parent(p)
        return chain

    def run(self) -> list[Message]:
        tid = self.trace.trace_id
        for rs in self.trace.spans.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if (tid and span.trace_id and span.trace_id != tid) or span.span_id in self.infos:
                        continue  # another trace, or a duplicate delivery
                    self.infos[span.span_id] = SpanInfo.of(span)
        excluded = self._excluded()
        ordered = sorted(
            (i for sid, i in self.infos.items() if sid not in excluded),
            key=lambda i: i.span.start_time_unix_nano,
        )
        llm_spans: set[bytes] = set()
        fallbacks: list[tuple[SpanInfo, list[tuple[int, Message]]]] = []
        for info in ordered:
            try:
                content = read_span(info, self.ctx)
            except Exception as exc:  # malformed content on one span must not lose the whole trace
                _skip("span", info.span.name, exc)
                continue
            self._add(content.messages)
            if content.has_llm:
                llm_spans.add(info.span.span_id)
            elif content.fallback:
                fallbacks.append((info, content.fallback))
        llm_spans |= self._read_logs(excluded)
        self._add_fallbacks(fallbacks, llm_spans)
        self.items.sort(key=lambda x: (x[0], x[1]))
        seen: set[tuple[Any, ...]] = set()
        out: list[Message] = []
        for _, _, m in self.items:
            key = (m.role, m.content, m.tool_calls, m.name if m.role == "error" else None)
            if key not in seen:
                seen.add(key)
                out.append(m)
        return out

    def _excluded(self) -> set[bytes]:
        """Spans left out: EVALUATOR spans, spans matching a rule, and all their descendants."""
        direct = {
            sid
            for sid, info in self.infos.items()
            if info.kind == "EVALUATOR" or any(r.matches(info.span.name, info.attrs) for r in self.rules)
        }
        if not direct:
            return direct
        return {
            sid
            for sid, info in self.infos.items()
            if sid in direct or any(a.span.span_id in direct for a in self._ancestors(info))
        }

    def _read_logs(self, excluded: set[bytes]) -> set[bytes]:
        """Messages and errors from log records; returns the span ids that got LLM content this way."""
        llm_spans: set[bytes] = set()
        logs = self.trace.logs
        if logs is None:
            return llm_spans
        tid = self.trace.trace_id
        for rl in logs.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    if (tid and rec.trace_id and rec.trace_id != tid) or rec.span_id in excluded:
                        continue
                    attrs = attributes(rec.attributes)
                    name = rec.event_name or attrs.get("event.name") or ""
                    if name == EVALUATION_EVENT:
                        continue
                    info = self.infos.get(rec.span_id) if rec.span_id else None
                    t = rec.time_unix_nano or rec.observed_time_unix_nano
                    if not t and info is not None:
                        t = info.span.end_time_unix_nano
                    if name == "exception" or "exception.type" in attrs or "exception.message" in attrs:
                        where = info.span.name if info is not None else (sl.scope.name or "log")
                        self._add([(t, Message("error", exception_text(attrs), name=where, is_error=True))])
                        continue
                    if not name:
                        continue
                    try:
                        found = event_messages(str(name), attrs, python_value(rec.body), self.ctx)
                    except Exception as exc:  # as for spans
                        _skip("log record", str(name), exc)
                        continue
                    self._add([(t, m) for m in found])
                    if rec.span_id and any(m.role != "tool" for m in found):
                        llm_spans.add(rec.span_id)
        return llm_spans

    def _add_fallbacks(
        self, fallbacks: list[tuple[SpanInfo, list[tuple[int, Message]]]], llm_spans: set[bytes]
    ) -> None:
        """Agent/workflow input and output, for the top-most spans with no LLM content at or below them."""
        if not fallbacks:
            return
        covered: set[bytes] = set()
        for sid in llm_spans:
            info = self.infos.get(sid)
            if info is None:
                continue
            covered.add(sid)
            for a in self._ancestors(info):
                if a.span.span_id in covered:
                    break
                covered.add(a.span.span_id)
        used: set[bytes] = set()
        for info, timed in fallbacks:
            sid = info.span.span_id
            if sid in covered or any(
                a.span.span_id in covered or a.span.span_id in used for a in self._ancestors(info)
            ):
                continue
            used.add(sid)
            self._add(timed)


class CustomPreprocessor:
    """A user function ``TraceData -> str | list[str] | None`` as a :class:`~otel_topics.stages.Preprocessor`.

    The texts are redacted and capped like messages (the first text is kept as the task).
    """

    def __init__(
        self,
        func: Callable[[TraceData], Any],
        spec: str,
        *,
        max_tokens: int = 128_000,
        redact: bool = True,
        tokenizer: TokenCounter | None = None,
    ) -> None:
        self.func = func
        self.spec = spec
        self.redact = redact
        self._capper = TokenCap(
            tokenizer if tokenizer is not None else shared_wordpiece_counter(), max_tokens
        )

    def __call__(self, trace: TraceData) -> Conversation | None:
        result = self.func(trace)
        if result is None:
            return None
        if isinstance(result, str):
            texts = [result]
        elif isinstance(result, list):
            for i, t in enumerate(result):
                if not isinstance(t, str):
                    raise TypeError(
                        f"custom preprocessor {self.spec} returned a list whose item {i} is "
                        f"{type(t).__name__}; expected str, list[str] or None"
                    )
            texts = list(result)
        else:
            raise TypeError(
                f"custom preprocessor {self.spec} returned {type(result).__name__}; "
                "expected str, list[str] or None"
            )
        texts = [t.strip() for t in texts if t.strip()]
        if self.redact:
            texts = [redact_text(t) for t in texts]
        if not texts:
            return Conversation(trace.trace_id, [], texts=[])
        kept, tokens, truncated = self._capper.cap(
            texts, _same, self._shrink, 1, lambda n: f"[... {n} texts omitted ...]"
        )
        return Conversation(trace.trace_id, [], token_count=tokens, truncated=truncated, texts=kept)

    def _shrink(self, text: str, budget: int) -> str | None:
        return self._capper.clip(text, budget) or None


def _same(text: str) -> str:
    return text


def load_custom_preprocessor(
    spec: str,
    *,
    max_tokens: int = 128_000,
    redact: bool = True,
    tokenizer: TokenCounter | None = None,
    config_path: str = "processors.topics.preprocess.custom",
) -> CustomPreprocessor:
    """Import ``"package.module:function"`` and wrap it. Raises ConfigError naming the spec."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigError(
            [(config_path, f"custom preprocessor {spec!r} must look like 'package.module:function'")]
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # a broken user module can raise anything at import
        raise ConfigError(
            [
                (
                    config_path,
                    f"cannot import module {module_name!r} of custom preprocessor {spec!r}: "
                    f"{type(exc).__name__}: {exc}",
                )
            ]
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                [
                    (
                        config_path,
                        f"custom preprocessor {spec!r}: module {module_name!r} has no attribute {attr!r}",
                    )
                ]
            ) from None
    if not callable(obj):
        raise ConfigError(
            [(config_path, f"custom preprocessor {spec!r} is not callable ({type(obj).__name__})")]
        )
    return CustomPreprocessor(obj, spec, max_tokens=max_tokens, redact=redact, tokenizer=tokenizer)
