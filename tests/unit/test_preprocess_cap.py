"""The preprocessor's max_tokens cap, and custom preprocessors."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics.errors import ConfigError
from otel_topics.model import Message, TraceData
from otel_topics.preprocess import CustomPreprocessor, DefaultPreprocessor, load_custom_preprocessor
from otel_topics.tokens import MIN_MAX_TOKENS, TokenCap, WordCounter

TID = b"\x01" * 16


def one_call(messages: list[tuple[str, str]]) -> TraceData:
    """A trace of one GenAI chat span whose input holds ``messages`` (role, text)."""
    req = ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=TID, span_id=b"\x02" * 8, name="chat", start_time_unix_nano=1, end_time_unix_nano=2
        )
    )
    history = [{"role": r, "parts": [{"type": "text", "content": t}]} for r, t in messages]
    span.attributes.append(
        KeyValue(key="gen_ai.input.messages", value=AnyValue(string_value=json.dumps(history)))
    )
    return TraceData(TID, req)


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def rendered_words(messages: list[Message]) -> int:
    return sum(len(m.render().split()) for m in messages)


def test_under_the_cap_nothing_changes() -> None:
    pp = DefaultPreprocessor(max_tokens=100, tokenizer=WordCounter())
    conv = pp(one_call([("user", "short task"), ("assistant", "short answer")]))
    assert not conv.truncated
    assert [m.content for m in conv.messages] == ["short task", "short answer"]
    assert conv.token_count == rendered_words(conv.messages) == 6


def test_over_the_cap_keeps_task_and_most_recent() -> None:
    turns = [("system", "be kind"), ("user", "the task")]
    turns += [("assistant" if i % 2 == 0 else "user", words(9, f"m{i}_")) for i in range(40)]
    conv = DefaultPreprocessor(max_tokens=100, tokenizer=WordCounter())(one_call(turns))
    assert conv.truncated
    assert conv.token_count == rendered_words(conv.messages) <= 100
    assert [m.content for m in conv.messages[:2]] == ["be kind", "the task"]
    marker = conv.messages[2]
    kept_tail = conv.messages[3:]
    assert marker == Message("system", f"[... {40 - len(kept_tail)} messages omitted ...]")
    assert [m.content for m in kept_tail] == [t for _, t in turns[-len(kept_tail) :]]
    assert len(kept_tail) >= 7  # 10 tokens each, about 100 - 6 - 7 left


def test_huge_last_message_is_clipped() -> None:
    turns = [("user", "task"), ("assistant", "ok"), ("user", words(500, "w"))]
    conv = DefaultPreprocessor(max_tokens=64, tokenizer=WordCounter())(one_call(turns))
    assert conv.truncated and conv.token_count <= 64
    assert conv.messages[0].content == "task"
    last = conv.messages[-1]
    assert last.content.startswith("w0 w1 w2") and last.content.endswith(" [...]")
    assert conv.messages[1] == Message("system", "[... 1 messages omitted ...]")


def test_huge_system_prompt_is_clipped_and_task_kept() -> None:
    turns = [("system", words(1000, "s")), ("user", "the actual task"), ("assistant", "done")]
    conv = DefaultPreprocessor(max_tokens=80, tokenizer=WordCounter())(one_call(turns))
    assert conv.truncated and conv.token_count <= 80
    roles = [m.role for m in conv.messages]
    assert roles[:2] == ["system", "user"] and conv.messages[1].content == "the actual task"
    assert conv.messages[0].content.endswith(" [...]")
    assert conv.messages[-1].content == "done"


def test_only_user_messages_over_the_cap() -> None:
    conv = DefaultPreprocessor(max_tokens=40, tokenizer=WordCounter())(
        one_call([("user", words(30, "a")), ("user", words(30, "b"))])
    )
    assert conv.truncated and conv.token_count <= 40
    assert all(m.role == "user" for m in conv.messages)


def test_wordpiece_cap_on_a_long_conversation() -> None:
    turns = [("user", "Please summarize the following notes.")]
    turns += [("assistant", f"Note {i}: the quarterly revenue grew by {i} percent.") for i in range(200)]
    conv = DefaultPreprocessor(max_tokens=256)(one_call(turns))
    assert conv.truncated and 200 < conv.token_count <= 256
    assert conv.messages[0].content == "Please summarize the following notes."
    assert conv.messages[-1].content == "Note 199: the quarterly revenue grew by 199 percent."


def test_max_tokens_validated() -> None:
    with pytest.raises(ValueError, match=f"max_tokens must be at least {MIN_MAX_TOKENS}"):
        DefaultPreprocessor(max_tokens=5, tokenizer=WordCounter())


def test_token_cap_counts_are_cached() -> None:
    class Counting(WordCounter):
        calls = 0

        def count_batch(self, texts: list[str]) -> list[int]:  # type: ignore[override]
            Counting.calls += len(texts)
            return super().count_batch(texts)

    cap = TokenCap(Counting(), 100)
    assert cap.counts(["a b", "c"]) == [2, 1]
    assert cap.counts(["a b", "c", "d e f"]) == [2, 1, 3]
    assert Counting.calls == 3


# --- custom preprocessors ------------------------------------------------------------------------------
CUSTOM_MODULE = """
def as_str(trace):
    return "trace " + trace.trace_id.hex()[:4]

def as_list(trace):
    return ["first", "   ", "mail bob@example.com"]

def skip(trace):
    return None

def bad(trace):
    return 42

def bad_item(trace):
    return ["ok", 3]

def many(trace):
    return ["the task"] + [f"step {i} " + "x " * 8 for i in range(50)]

NOT_CALLABLE = 5

class Holder:
    @staticmethod
    def method(trace):
        return "nested"
"""


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"custom_pp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CUSTOM_MODULE)
    (tmp_path / f"{name}_broken.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def load(spec: str, **kw: object) -> CustomPreprocessor:
    return load_custom_preprocessor(spec, tokenizer=WordCounter(), **kw)  # type: ignore[arg-type]


def test_custom_returning_str(custom_module: str) -> None:
    conv = load(f"{custom_module}:as_str")(one_call([]))
    assert conv is not None
    assert conv.texts == ["trace 0101"] and conv.messages == [] and conv.render() == "trace 0101"
    assert conv.token_count == 2 and not conv.truncated and not conv.empty


def test_custom_returning_list_is_redacted(custom_module: str) -> None:
    conv = load(f"{custom_module}:as_list")(one_call([]))
    assert conv is not None and conv.texts == ["first", "mail [EMAIL]"]
    raw = load(f"{custom_module}:as_list", redact=False)(one_call([]))
    assert raw is not None and raw.texts == ["first", "mail bob@example.com"]


def test_custom_returning_none_skips(custom_module: str) -> None:
    assert load(f"{custom_module}:skip")(one_call([])) is None


def test_custom_nested_attribute(custom_module: str) -> None:
    conv = load(f"{custom_module}:Holder.method")(one_call([]))
    assert conv is not None and conv.texts == ["nested"]


def test_custom_capped(custom_module: str) -> None:
    conv = load(f"{custom_module}:many", max_tokens=60)(one_call([]))
    assert conv is not None and conv.texts is not None
    assert conv.truncated and conv.token_count <= 60
    assert conv.texts[0] == "the task"
    assert conv.texts[1].startswith("[... ") and conv.texts[1].endswith(" texts omitted ...]")
    assert conv.texts[-1].startswith("step 49 ")


@pytest.mark.parametrize(
    ("func", "message"),
    [("bad", r"returned int; expected str, list\[str\] or None"), ("bad_item", "item 1 is int")],
)
def test_custom_bad_return_type(custom_module: str, func: str, message: str) -> None:
    pp = load(f"{custom_module}:{func}")
    with pytest.raises(TypeError, match=message) as info:
        pp(one_call([]))
    assert f"{custom_module}:{func}" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "must look like 'package.module:function'"),
        ("{mod}:", "must look like"),
        (
            "definitely_missing_mod_4711:f",
            "cannot import module 'definitely_missing_mod_4711'.*ModuleNotFoundError",
        ),
        ("{mod}_broken:f", "RuntimeError: broken on import"),
        ("{mod}:nothere", "has no attribute 'nothere'"),
        ("{mod}:NOT_CALLABLE", "is not callable"),
    ],
)
def test_custom_bad_spec(custom_module: str, spec: str, message: str) -> None:
    spec = spec.format(mod=custom_module)
    with pytest.raises(ConfigError, match=message) as info:
        load(spec)
    assert info.value.problems[0][0] == "processors.topics.preprocess.custom"
    assert repr(spec) in str(info.value) or spec in str(info.value)
