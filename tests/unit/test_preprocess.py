"""The default preprocessor on real instrumentation output and on hand-built traces."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_topics import conventions
from otel_topics.model import Message, ToolCall, TraceData
from otel_topics.otlp_json import decode_logs, decode_traces
from otel_topics.preprocess import DefaultPreprocessor, ExcludeRule
from otel_topics.tokens import WordCounter

# --- builders -----------------------------------------------------------------------------------------
TID = bytes(range(1, 17))


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key=k, value=any_value(x)) for k, x in v.items()])
        )
    if isinstance(v, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def kvs(attrs: Mapping[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in (attrs or {}).items()]


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def event(name: str, attrs: Mapping[str, Any] | None = None, t: int = 0) -> Span.Event:
    return Span.Event(name=name, time_unix_nano=t, attributes=kvs(attrs))


def span(
    name: str,
    attrs: Mapping[str, Any] | None = None,
    *,
    id: int,
    parent: int | None = None,
    start: int,
    end: int | None = None,
    error: str | None = None,
    events: Sequence[Span.Event] = (),
    trace_id: bytes = TID,
) -> Span:
    s = Span(
        trace_id=trace_id,
        span_id=sid(id),
        parent_span_id=sid(parent) if parent is not None else b"",
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end if end is not None else start + 1,
        attributes=kvs(attrs),
        events=list(events),
    )
    if error is not None:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return s


def log(
    event_name: str | None,
    body: Any = None,
    attrs: Mapping[str, Any] | None = None,
    *,
    span_id: int | None = None,
    t: int = 0,
    name_as_attribute: bool = False,
) -> LogRecord:
    rec = LogRecord(time_unix_nano=t, trace_id=TID, attributes=kvs(attrs))
    if span_id is not None:
        rec.span_id = sid(span_id)
    if event_name is not None:
        if name_as_attribute:
            rec.attributes.append(KeyValue(key="event.name", value=any_value(event_name)))
        else:
            rec.event_name = event_name
    if body is not None:
        rec.body.CopyFrom(any_value(body))
    return rec


def trace(spans: Iterable[Span], logs: Iterable[LogRecord] = (), trace_id: bytes = TID) -> TraceData:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.scope.name = "test"
    ss.spans.extend(spans)
    records = list(logs)
    log_req = None
    if records:
        log_req = ExportLogsServiceRequest()
        log_req.resource_logs.add().scope_logs.add().log_records.extend(records)
    return TraceData(trace_id, req, log_req)


def load_jsonl_traces(path: Path) -> dict[bytes, TraceData]:
    """``{"traces": ...}`` / ``{"logs": ...}`` lines grouped by trace id, resource and scope kept."""
    spans: dict[bytes, ExportTraceServiceRequest] = defaultdict(ExportTraceServiceRequest)
    logs: dict[bytes, ExportLogsServiceRequest] = defaultdict(ExportLogsServiceRequest)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        if "traces" in doc:
            for rs in decode_traces(json.dumps(doc["traces"])).resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out_rs = spans[s.trace_id].resource_spans.add(resource=rs.resource)
                        out_rs.scope_spans.add(scope=ss.scope).spans.append(s)
        if "logs" in doc:
            for rl in decode_logs(json.dumps(doc["logs"])).resource_logs:
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        out_rl = logs[r.trace_id].resource_logs.add(resource=rl.resource)
                        out_rl.scope_logs.add(scope=sl.scope).log_records.append(r)
    ids = list(dict.fromkeys([*spans, *logs]))
    return {tid: TraceData(tid, spans.get(tid, ExportTraceServiceRequest()), logs.get(tid)) for tid in ids}


def attribute_map_span(attrs: Mapping[str, Any], name: str = "span", **kw: Any) -> Span:
    kw.setdefault("id", 1)
    kw.setdefault("start", 1_000)
    return span(name, attrs, **kw)


# --- tau-bench trajectories (OpenAI format) as GenAI-convention agent traces ---------------------------
def _parts(m: Mapping[str, Any]) -> dict[str, Any]:
    if m["role"] == "tool":
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": m["tool_call_id"], "response": m["content"]}],
        }
    parts: list[dict[str, Any]] = []
    if m.get("content"):
        parts.append({"type": "text", "content": m["content"]})
    for c in m.get("tool_calls") or []:
        args = json.loads(c["function"]["arguments"])
        parts.append({"type": "tool_call", "id": c["id"], "name": c["function"]["name"], "arguments": args})
    return {"role": m["role"], "parts": parts}


def tau_trace(traj: Sequence[Mapping[str, Any]]) -> TraceData:
    """One ``chat`` span per assistant turn (whole history as input, like agents send it) and one
    ``execute_tool`` span per tool result, under an ``invoke_agent`` root."""
    system = [{"type": "text", "content": m["content"]} for m in traj if m["role"] == "system"]
    spans = []
    t = 1_000_000
    history: list[Mapping[str, Any]] = []
    n = 2
    for m in traj:
        if m["role"] == "system":
            continue
        t += 1_000
        if m["role"] == "assistant":
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.system_instructions": json.dumps(system),
                "gen_ai.input.messages": json.dumps([_parts(h) for h in history]),
                "gen_ai.output.messages": json.dumps([_parts(m) | {"finish_reason": "stop"}]),
            }
            spans.append(span("chat gpt-4o", attrs, id=n, parent=1, start=t, end=t + 500))
        elif m["role"] == "tool":
            call = next(
                c for h in history for c in (h.get("tool_calls") or []) if c["id"] == m["tool_call_id"]
            )
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": m["name"],
                "gen_ai.tool.call.id": m["tool_call_id"],
                "gen_ai.tool.call.arguments": call["function"]["arguments"],
                "gen_ai.tool.call.result": m["content"],
            }
            spans.append(span(f"execute_tool {m['name']}", attrs, id=n, parent=1, start=t, end=t + 500))
        n += 1
        history.append(m)
    root = span(
        "invoke_agent airline", {"gen_ai.operation.name": "invoke_agent"}, id=1, start=0, end=t + 1_000
    )
    return trace([root, *spans])


TERSE = [
    Message("system", "You are terse."),
    Message("user", "What is the capital of France?"),
    Message("assistant", "Paris is the capital of France."),
]
WEATHER = [
    Message("user", "Weather in Paris?"),
    Message(
        "assistant",
        "Absolutely! Let me check the weather for you.",
        tool_calls=(ToolCall("get_weather", '{"location":"Paris"}'),),
    ),
    Message("tool", "rainy, 57°F", name="get_weather"),
    Message("assistant", "The weather in Paris is currently rainy with a temperature of 57°F."),
]


@pytest.fixture(scope="module")
def pp() -> DefaultPreprocessor:
    return DefaultPreprocessor(tokenizer=WordCounter())


# --- real instrumentation output ---------------------------------------------------------------------
INSTRUMENTED = [
    ("openinference-langchain-0.1.80.jsonl", 1),
    ("openinference-openai-0.1.66.jsonl", 2),
    ("otel-openai-v2-2.1b0-events.jsonl", 1),
    ("otel-openai-v2-2.4b0-span_and_event.jsonl", 1),
    ("traceloop-openai-0.47.5.jsonl", 1),
    ("traceloop-openai-0.62.4.jsonl", 2),
]


def test_every_instrumented_file_is_covered(shared_data: Path) -> None:
    files = {p.name for p in (shared_data / "instrumented_spans").glob("*.jsonl")}
    assert files == {name for name, _ in INSTRUMENTED}


@pytest.mark.parametrize(("name", "n_traces"), INSTRUMENTED)
def test_instrumented_spans(shared_data: Path, pp: DefaultPreprocessor, name: str, n_traces: int) -> None:
    traces = load_jsonl_traces(shared_data / "instrumented_spans" / name)
    assert len(traces) == n_traces
    for data in traces.values():
        conv = pp(data)
        assert conv.trace_id == data.trace_id
        assert conv.messages == TERSE
        assert not conv.truncated
        assert conv.token_count == sum(len(m.render().split()) for m in TERSE)


def test_events_only_file_has_content_only_in_log_records(shared_data: Path, pp: DefaultPreprocessor) -> None:
    (data,) = load_jsonl_traces(
        shared_data / "instrumented_spans" / "otel-openai-v2-2.1b0-events.jsonl"
    ).values()
    assert data.logs is not None
    data.logs = None  # what a traces-only receiver would see
    assert pp(data).messages == []


def test_operation_details_log_record_alone(shared_data: Path, pp: DefaultPreprocessor) -> None:
    path = shared_data / "instrumented_spans" / "otel-openai-v2-2.4b0-span_and_event.jsonl"
    (data,) = load_jsonl_traces(path).values()
    for rs in data.spans.resource_spans:  # drop the span's copy of the messages
        for ss in rs.scope_spans:
            for s in ss.spans:
                keep = [kv for kv in s.attributes if not kv.key.endswith(".messages")]
                del s.attributes[:]
                s.attributes.extend(keep)
    assert pp(data).messages == TERSE


def test_wordpiece_token_count(shared_data: Path) -> None:
    (data,) = load_jsonl_traces(shared_data / "instrumented_spans" / "traceloop-openai-0.47.5.jsonl").values()
    # max_tokens below the characters' bound, so the conversation is tokenized and counted
    conv = DefaultPreprocessor(max_tokens=64)(data)
    # system : you are ter ##se . (7) + user : what is the capital of france ? (9)
    # + assistant : paris is the capital of france . (9)
    assert conv.token_count == 25
    assert DefaultPreprocessor()(data).token_count is None  # far below the default cap: not tokenized


# --- attribute maps (Arize openinference fixtures) ---------------------------------------------------
@pytest.mark.parametrize(
    "fixture",
    [
        "openinference_client_span_input_output_only.json",
        "openinference_client_span_tool_calls.json",
        "otel_genai_client_span_tool_calls.json",
        "otel_genai_deprecated_client_span_tool_calls.json",
    ],
)
def test_openinference_genai_attribute_maps(shared_data: Path, pp: DefaultPreprocessor, fixture: str) -> None:
    attrs = json.loads((shared_data / "otel_spans" / "openinference_genai" / fixture).read_text())
    assert pp(trace([attribute_map_span(attrs)])).messages == WEATHER


def test_genai_tool_execution_span(shared_data: Path, pp: DefaultPreprocessor) -> None:
    path = shared_data / "otel_spans" / "openinference_genai" / "otel_genai_tool_execution_span.json"
    attrs = json.loads(path.read_text())
    (msg,) = pp(trace([attribute_map_span(attrs, name="execute_tool get_weather")])).messages
    assert msg.role == "tool" and msg.name == "get_weather" and not msg.is_error
    assert json.loads(msg.content)["report"].startswith("The weather in New York is sunny")


def _vercel_spans(shared_data: Path) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = json.loads(
        (shared_data / "otel_spans" / "openinference_vercel_v6" / "all-spans.json").read_text()
    )
    return spans


def test_vercel_parent_and_child_dedupe(shared_data: Path, pp: DefaultPreprocessor) -> None:
    by_fn = {(s["name"], s["attributes"]["ai.telemetry.functionId"]): s for s in _vercel_spans(shared_data)}
    parent = by_fn["ai.generateText", "test-generate-text-messages"]
    child = by_fn["ai.generateText.doGenerate", "test-generate-text-messages"]
    data = trace(
        [
            span(parent["name"], parent["attributes"], id=1, start=10, end=100),
            span(child["name"], child["attributes"], id=2, parent=1, start=20, end=90),
        ]
    )
    assert pp(data).messages == [
        Message("system", "You are a helpful assistant."),
        Message("user", "What is 2 + 2?"),
        Message("assistant", "2 + 2 equals 4."),
        Message("user", "And what is 3 + 3?"),
        Message("assistant", "3 + 3 equals 6."),
    ]


def test_vercel_generate_object_and_embed(shared_data: Path, pp: DefaultPreprocessor) -> None:
    spans = {s["name"]: s for s in _vercel_spans(shared_data)}
    obj = pp(trace([attribute_map_span(spans["ai.generateObject.doGenerate"]["attributes"])])).messages
    assert obj[0] == Message("user", "Generate a simple recipe for scrambled eggs.")
    assert obj[1].role == "assistant" and json.loads(obj[1].content)["name"] == "Scrambled Eggs"
    assert pp(trace([attribute_map_span(spans["ai.embed"]["attributes"])])).messages == []


def test_vercel_tool_calls_and_tool_span(pp: DefaultPreprocessor) -> None:
    calls = [
        {"toolCallType": "function", "toolCallId": "c1", "toolName": "weather", "input": '{"city":"Oslo"}'}
    ]
    prompt = [{"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]}]
    data = trace(
        [
            span(
                "ai.generateText.doGenerate",
                {"ai.prompt.messages": json.dumps(prompt), "ai.response.toolCalls": json.dumps(calls)},
                id=1,
                start=1,
                end=2,
            ),
            span(
                "ai.toolCall",
                {"ai.toolCall.name": "weather", "ai.toolCall.id": "c1", "ai.toolCall.result": "snow"},
                id=2,
                start=3,
                end=4,
            ),
        ]
    )
    assert pp(data).messages == [
        Message("user", "Weather in Oslo?"),
        Message("assistant", "", tool_calls=(ToolCall("weather", '{"city":"Oslo"}'),)),
        Message("tool", "snow", name="weather"),
    ]


# --- dedupe ------------------------------------------------------------------------------------------
def _genai_call(n: int, history: list[dict[str, Any]], output: dict[str, Any], start: int) -> Any:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.input.messages": json.dumps(history),
        "gen_ai.output.messages": json.dumps([output]),
    }
    return span(f"chat {n}", attrs, id=n, parent=1, start=start, end=start + 5)


def _text(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def test_dedupe_three_llm_calls_with_growing_history(pp: DefaultPreprocessor) -> None:
    call = {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": "t1", "name": "lookup", "arguments": {"q": "x"}}],
    }
    result = {"role": "tool", "parts": [{"type": "tool_call_response", "id": "t1", "response": "42"}]}
    h1 = [_text("user", "What is x?")]
    h2 = [*h1, call, result]
    h3 = [*h2, _text("assistant", "x is 42."), _text("user", "Thanks! And y?")]
    data = trace(
        [
            span("agent", {"gen_ai.operation.name": "invoke_agent"}, id=1, start=0, end=100),
            _genai_call(2, h1, call, 10),
            _genai_call(3, h2, _text("assistant", "x is 42."), 30),
            _genai_call(4, h3, _text("assistant", "y is unknown."), 50),
        ]
    )
    assert pp(data).messages == [
        Message("system", "Be brief."),
        Message("user", "What is x?"),
        Message("assistant", "", tool_calls=(ToolCall("lookup", '{"q":"x"}'),)),
        Message("tool", "42", name="lookup"),
        Message("assistant", "x is 42."),
        Message("user", "Thanks! And y?"),
        Message("assistant", "y is unknown."),
    ]


def test_dedupe_history_that_is_not_a_prefix(pp: DefaultPreprocessor) -> None:
    """A rewritten history (summarized, reordered) is parsed in full, not taken for a known prefix."""
    data = trace(
        [
            _genai_call(2, [_text("user", "a"), _text("user", "b")], _text("assistant", "c"), 10),
            _genai_call(
                3, [_text("user", "summary of a and b"), _text("user", "d")], _text("assistant", "e"), 30
            ),
        ]
    )
    assert [m.content for m in pp(data).messages] == [
        "Be brief.",
        "a",
        "b",
        "c",
        "summary of a and b",
        "d",
        "e",
    ]


def _oi_call(n: int, history: list[tuple[str, str]], answer: str, start: int) -> Any:
    attrs: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "input.value": json.dumps({"messages": [{"role": r, "content": t} for r, t in history]}),
    }
    for i, (role, text) in enumerate(history):
        attrs[f"llm.input_messages.{i}.message.role"] = role
        attrs[f"llm.input_messages.{i}.message.content"] = text
    attrs["llm.output_messages.0.message.role"] = "assistant"
    attrs["llm.output_messages.0.message.content"] = answer
    return span("ChatCompletion", attrs, id=n, start=start, end=start + 5)


def test_dedupe_openinference_indexed_history(
    pp: DefaultPreprocessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("input.value parsed although llm.input_messages is present")

    monkeypatch.setattr(conventions, "_llm_input_value", never)  # a fully known history is not re-read
    h1 = [("system", "sys"), ("user", "hi")]
    h2 = [*h1, ("assistant", "hello"), ("user", "bye")]
    data = trace(
        [_oi_call(1, h1, "hello", 10), _oi_call(2, h2, "goodbye", 30), _oi_call(3, h2, "goodbye", 50)]
    )
    assert [(m.role, m.content) for m in pp(data).messages] == [
        ("system", "sys"),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "bye"),
        ("assistant", "goodbye"),
    ]


def test_openllmetry_indexed_tool_calls(pp: DefaultPreprocessor) -> None:
    attrs = {
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Book it",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.tool_calls.0.id": "call_1",
        "gen_ai.completion.0.tool_calls.0.name": "book",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"id": 7}',
    }
    follow = {
        "gen_ai.prompt.0.role": "tool",
        "gen_ai.prompt.0.tool_call_id": "call_1",
        "gen_ai.prompt.0.content": "booked",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Done.",
    }
    data = trace(
        [span("openai.chat", attrs, id=1, start=1, end=2), span("openai.chat", follow, id=2, start=3, end=4)]
    )
    assert pp(data).messages == [
        Message("user", "Book it"),
        Message("assistant", "", tool_calls=(ToolCall("book", '{"id":7}'),)),
        Message("tool", "booked", name="book"),
        Message("assistant", "Done."),
    ]


def test_tau_bench_agent_traces_give_back_the_trajectory(shared_data: Path, pp: DefaultPreprocessor) -> None:
    runs = json.loads((shared_data / "agent_trajectories" / "tau_bench" / "gpt-4o-airline.json").read_text())
    for run in runs[:12]:
        traj = run["traj"]
        last = max(i for i, m in enumerate(traj) if m["role"] == "assistant")
        expected: list[Message] = []
        for m in (m for i, m in enumerate(traj) if i <= last or m["role"] != "user"):
            content = (m.get("content") or "").strip()
            if m["role"] == "tool":
                msg = Message("tool", content, name=m["name"], is_error=content.startswith("Error"))
            else:
                calls = tuple(
                    ToolCall(
                        c["function"]["name"],
                        json.dumps(
                            json.loads(c["function"]["arguments"]), separators=(",", ":"), ensure_ascii=False
                        ),
                    )
                    for c in m.get("tool_calls") or []
                )
                msg = Message(m["role"], content, tool_calls=calls)
            if all(
                (e.role, e.content, e.tool_calls) != (msg.role, msg.content, msg.tool_calls) for e in expected
            ):
                expected.append(msg)
        conv = DefaultPreprocessor(redact=False, tokenizer=WordCounter())(tau_trace(traj))
        assert conv.messages == expected
    # trajectory 0 holds a tool error
    errors = [m for m in pp(tau_trace(runs[0]["traj"])).messages if m.is_error]
    assert errors and all(m.role == "tool" and m.content.startswith("Error") for m in errors)


# --- exclusion ---------------------------------------------------------------------------------------
def _llm(n: int, user: str, answer: str, start: int, parent: int | None = None, **attrs: Any) -> Any:
    a = {
        "gen_ai.input.messages": json.dumps([_text("user", user)]),
        "gen_ai.output.messages": json.dumps([_text("assistant", answer)]),
        **attrs,
    }
    return span(f"chat {n}", a, id=n, parent=parent, start=start, end=start + 5)


def test_evaluator_span_and_descendants_excluded(pp: DefaultPreprocessor) -> None:
    data = trace(
        [
            span("agent", {"openinference.span.kind": "AGENT"}, id=1, start=0, end=100),
            _llm(2, "task", "answer", 10, parent=1),
            span("faithfulness", {"openinference.span.kind": "EVALUATOR"}, id=3, parent=1, start=50, end=90),
            _llm(4, "Grade this answer", "score: 0.9", 60, parent=3),
        ]
    )
    assert [m.content for m in pp(data).messages] == ["task", "answer"]


def test_evaluation_result_event_excluded_not_its_span(pp: DefaultPreprocessor) -> None:
    ev = event(
        "gen_ai.evaluation.result",
        {"gen_ai.evaluation.name": "Relevance", "gen_ai.evaluation.explanation": "Looks fine"},
        t=20,
    )
    llm = _llm(1, "task", "answer", 10)
    llm.events.append(ev)
    record = log("gen_ai.evaluation.result", body={"content": "judge says good"}, span_id=1, t=30)
    assert [m.content for m in pp(trace([llm], [record])).messages] == ["task", "answer"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (ExcludeRule(name="^judge"), ["task", "answer"]),
        (ExcludeRule(attribute="scorer.id"), ["task", "answer"]),
        (ExcludeRule(attribute="scorer.id", value="other"), ["task", "answer", "grade", "good"]),
        (ExcludeRule(attribute="internal", value="true"), ["task", "answer", "grade", "good"]),
        (ExcludeRule(name="judge", attribute="scorer.id", value="s1"), ["task", "answer"]),
    ],
)
def test_exclude_rules(rule: ExcludeRule, expected: list[str]) -> None:
    pp = DefaultPreprocessor(tokenizer=WordCounter(), exclude_spans=[rule])
    data = trace(
        [
            _llm(1, "task", "answer", 10),
            span("judge", {"scorer.id": "s1"}, id=2, start=20, end=40),
            _llm(3, "grade", "good", 25, parent=2),
        ],
        [log("gen_ai.choice", {"message": {"role": "assistant", "content": "judged"}}, span_id=3, t=30)],
    )
    got = [m.content for m in pp(data).messages]
    assert got == (expected if len(expected) == 2 else [*expected, "judged"])


def test_exclude_rule_validation() -> None:
    with pytest.raises(ValueError, match="needs 'name' and/or 'attribute'"):
        ExcludeRule()
    with pytest.raises(ValueError, match="needs 'attribute'"):
        ExcludeRule(name="x", value="1")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        ExcludeRule(name="(")


# --- errors and tools --------------------------------------------------------------------------------
def test_span_error_and_exception_event(pp: DefaultPreprocessor) -> None:
    exc = event(
        "exception",
        {
            "exception.type": "openai.NotFoundError",
            "exception.message": "Error code: 404 - model not found",
            "exception.stacktrace": "Traceback...",
        },
        t=15,
    )
    data = trace(
        [
            _llm(1, "task", "answer", 10),
            span(
                "chat failing",
                {"gen_ai.operation.name": "chat"},
                id=2,
                start=12,
                end=16,
                error="Error code: 404 - model not found",
                events=[exc],
            ),
            span("retriever", {}, id=3, start=20, end=22, error="index unavailable"),
            span("bare", {}, id=4, start=30, end=32, error=""),
        ]
    )
    errors = [m for m in pp(data).messages if m.role == "error"]
    assert errors == [
        Message(
            "error",
            "openai.NotFoundError: Error code: 404 - model not found",
            name="chat failing",
            is_error=True,
        ),
        Message("error", "index unavailable", name="retriever", is_error=True),
        Message("error", "span status ERROR", name="bare", is_error=True),
    ]


def test_exception_log_record(pp: DefaultPreprocessor) -> None:
    data = trace(
        [_llm(1, "task", "answer", 10)],
        [
            log(
                None,
                body="tool crashed",
                attrs={"exception.type": "KeyError", "exception.message": "'id'"},
                span_id=1,
                t=20,
            )
        ],
    )
    assert pp(data).messages[-1] == Message("error", "KeyError: 'id'", name="chat 1", is_error=True)


def test_tool_spans_and_errors(pp: DefaultPreprocessor) -> None:
    data = trace(
        [
            span(
                "execute_tool search",
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "search",
                    "gen_ai.tool.call.result": "3 hits",
                },
                id=1,
                start=1,
                end=2,
            ),
            span(
                "lookup",
                {
                    "openinference.span.kind": "TOOL",
                    "tool.name": "lookup",
                    "input.value": '{"id": 1}',
                    "output.value": "Error: no such id",
                },
                id=2,
                start=3,
                end=4,
            ),
            span(
                "pay",
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "pay",
                    "gen_ai.tool.call.result": "declined",
                },
                id=3,
                start=5,
                end=6,
                error="card declined",
            ),
            span(
                "tl",
                {
                    "traceloop.span.kind": "tool",
                    "traceloop.entity.name": "fetch",
                    "traceloop.entity.output": '{"output": "page"}',
                },
                id=4,
                start=7,
                end=8,
            ),
        ]
    )
    assert pp(data).messages == [
        Message("tool", "3 hits", name="search"),
        Message("tool", "Error: no such id", name="lookup", is_error=True),
        Message("tool", "declined", name="pay", is_error=True),
        Message("error", "card declined", name="pay", is_error=True),
        Message("tool", "page", name="fetch"),
    ]


# --- deprecated events, fallbacks, misc ----------------------------------------------------------------
def test_deprecated_genai_span_events(pp: DefaultPreprocessor) -> None:
    events = [
        event("gen_ai.system.message", {"gen_ai.system": "openai", "content": "Be nice."}, t=2),
        event("gen_ai.user.message", {"content": "Weather?"}, t=3),
        event(
            "gen_ai.choice",
            {
                "index": 0,
                "message": json.dumps(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c9",
                                "type": "function",
                                "function": {"name": "weather", "arguments": "{}"},
                            }
                        ],
                    }
                ),
            },
            t=5,
        ),
        event("gen_ai.tool.message", {"content": "sunny", "id": "c9"}, t=6),
        event("gen_ai.content.completion", {"gen_ai.completion": '{"text": "It is sunny."}'}, t=7),
    ]
    data = trace([span("chat", {"gen_ai.operation.name": "chat"}, id=1, start=1, end=9, events=events)])
    assert pp(data).messages == [
        Message("system", "Be nice."),
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(ToolCall("weather", "{}"),)),
        Message("tool", "sunny", name="weather"),
        Message("assistant", "It is sunny."),
    ]


def test_deprecated_log_records_with_event_name_attribute(pp: DefaultPreprocessor) -> None:
    data = trace(
        [span("chat", {}, id=1, start=1, end=9)],
        [
            log("gen_ai.user.message", {"content": "Hi"}, span_id=1, t=2, name_as_attribute=True),
            log("gen_ai.assistant.message", {"content": "Hello!"}, span_id=1, t=3),
        ],
    )
    assert pp(data).messages == [Message("user", "Hi"), Message("assistant", "Hello!")]


def test_agent_input_output_used_only_without_llm_content(pp: DefaultPreprocessor) -> None:
    agent = {
        "openinference.span.kind": "AGENT",
        "input.value": "Plan my trip",
        "output.value": '{"output": "Trip planned."}',
    }
    tool = {"openinference.span.kind": "TOOL", "tool.name": "flights", "output.value": "2 flights"}
    without_llm = trace(
        [span("agent", agent, id=1, start=0, end=10), span("flights", tool, id=2, parent=1, start=2, end=3)]
    )
    assert pp(without_llm).messages == [
        Message("user", "Plan my trip"),
        Message("tool", "2 flights", name="flights"),
        Message("assistant", "Trip planned."),
    ]
    with_llm = trace(
        [span("agent", agent, id=1, start=0, end=10), _llm(3, "Plan my trip, please", "OK", 4, parent=1)]
    )
    assert [m.content for m in pp(with_llm).messages] == ["Plan my trip, please", "OK"]


def test_traceloop_workflow_entity_fallback(pp: DefaultPreprocessor) -> None:
    wf = {
        "traceloop.span.kind": "workflow",
        "traceloop.entity.input": json.dumps({"args": ["Summarize the report"], "kwargs": {}}),
        "traceloop.entity.output": json.dumps("Summary: fine."),
    }
    task = {"traceloop.span.kind": "task", "traceloop.entity.input": json.dumps({"inputs": {"x": 1}})}
    data = trace(
        [span("wf.workflow", wf, id=1, start=0, end=10), span("t.task", task, id=2, parent=1, start=1, end=2)]
    )
    assert pp(data).messages == [
        Message("user", "Summarize the report"),
        Message("assistant", "Summary: fine."),
    ]


def test_empty_trace_gives_empty_conversation(pp: DefaultPreprocessor) -> None:
    conv = pp(trace([span("GET /health", {"http.method": "GET"}, id=1, start=0)]))
    assert conv is not None and conv.messages == [] and conv.empty and conv.token_count == 0


def test_duplicate_span_delivery_and_other_trace_ignored(pp: DefaultPreprocessor) -> None:
    a = _llm(1, "task", "answer", 10)
    other = _llm(2, "foreign", "x", 5)
    other.trace_id = b"\xff" * 16
    assert [m.content for m in pp(trace([a, a, other])).messages] == ["task", "answer"]


def test_redaction_applies_to_content_and_arguments() -> None:
    call = {
        "role": "assistant",
        "parts": [{"type": "tool_call", "name": "mail", "arguments": {"to": "ann@example.com"}}],
    }
    data = trace(
        [_genai_call(2, [_text("user", "Mail ann@example.com my card 4111 1111 1111 1111")], call, 1)]
    )
    msgs = DefaultPreprocessor(tokenizer=WordCounter())(data).messages
    assert msgs[1].content == "Mail [EMAIL] my card [CARD]"
    assert msgs[2].tool_calls == (ToolCall("mail", '{"to":"[EMAIL]"}'),)
    raw = DefaultPreprocessor(tokenizer=WordCounter(), redact=False)(data).messages
    assert "ann@example.com" in raw[1].content


@pytest.mark.parametrize(
    "attrs",
    [
        {"gen_ai.input.messages": '[1, "x", null, {"role": 5, "parts": 7}, {"role": "user", "parts": [3]}]'},
        {"gen_ai.input.messages": "[" * 5000 + "]" * 5000},
        {"gen_ai.output.messages": '{"choices": "nope"}', "gen_ai.system_instructions": "[{}]"},
        {
            "llm.input_messages.0.message.contents.x.message_content.text": "odd",
            "openinference.span.kind": "LLM",
        },
        {"openinference.span.kind": "AGENT", "input.value": "[" * 5000 + "]" * 5000, "output.value": "{}"},
        {"gen_ai.prompt.0.content": ["a", "b"], "gen_ai.completion.0.tool_calls.0.name": 7},
        {"ai.prompt": "{not json", "ai.response.toolCalls": "[{}]"},
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.result": {"nested": [1, {"a": None}]}},
    ],
)
def test_malformed_content_does_not_fail(pp: DefaultPreprocessor, attrs: dict[str, Any]) -> None:
    ok = _llm(2, "task", "answer", 50)
    conv = pp(trace([span("weird", attrs, id=1, start=1), ok]))
    assert [m.content for m in conv.messages][-2:] == ["task", "answer"]


def test_plain_text_genai_values(pp: DefaultPreprocessor) -> None:
    attrs = {"gen_ai.system_instructions": "Be brief.", "gen_ai.input.messages": "hello there"}
    assert pp(trace([span("chat", attrs, id=1, start=1)])).messages == [
        Message("system", "Be brief."),
        Message("user", "hello there"),
    ]


def test_speed_of_a_typical_agent_trace(shared_data: Path) -> None:
    runs = json.loads((shared_data / "agent_trajectories" / "tau_bench" / "gpt-4o-airline.json").read_text())
    traces = [tau_trace(run["traj"]) for run in runs[:40]]
    pp = DefaultPreprocessor(tokenizer=WordCounter())
    start = time.process_time()
    for data in traces:
        pp(data)
    per_trace = (time.process_time() - start) / len(traces)
    assert per_trace < 0.025, f"{per_trace * 1000:.1f} ms per trace"  # about 1 ms on an idle core


def test_messages_ordered_by_time_not_by_arrival(pp: DefaultPreprocessor) -> None:
    data = trace([_llm(2, "second", "2", 50), _llm(1, "first", "1", 10)])
    assert [m.content for m in pp(data).messages] == ["first", "1", "second", "2"]
