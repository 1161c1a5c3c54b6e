"""OTLP/JSON codec: real captured lines, the spec's differences from protobuf JSON, error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_topics import otlp_json
from otel_topics.errors import DecodeError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "instrumented_spans"
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "0102030405060708"


def _lines() -> list[tuple[str, str, str]]:
    if not DATA.is_dir():
        return []
    lines = []
    for path in sorted(DATA.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            ((signal, body),) = json.loads(line).items()
            lines.append((f"{path.name}:{number}", signal, json.dumps(body)))
    return lines


LINES = _lines()
CODECS: dict[str, tuple[Any, Any, Any]] = {
    "traces": (otlp_json.decode_traces, otlp_json.encode_traces, ExportTraceServiceRequest),
    "logs": (otlp_json.decode_logs, otlp_json.encode_logs, ExportLogsServiceRequest),
}


@pytest.mark.skipif(not LINES, reason=f"real OTLP data not found at {DATA}")
@pytest.mark.parametrize(("where", "signal", "body"), LINES, ids=[line[0] for line in LINES])
def test_real_lines_decode_and_round_trip(where: str, signal: str, body: str) -> None:
    decode, encode, message_type = CODECS[signal]
    # the captured lines are protobuf's generic JSON (base64 ids, enum names): a superset we accept
    expected = json_format.Parse(body, message_type(), ignore_unknown_fields=True)

    decoded = decode(body.encode())
    encoded = encode(decoded)

    assert decoded == expected, where
    assert decode(encoded) == decoded, where
    for key, value in re.findall(rb'"(traceId|spanId|parentSpanId)":"([^"]*)"', encoded):
        assert re.fullmatch(rb"[0-9a-f]{32}" if key == b"traceId" else rb"[0-9a-f]{16}", value), (key, value)


def test_real_lines_present() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real OTLP data not found at {DATA}")
    assert len(LINES) >= 10
    assert {signal for _, signal, _ in LINES} == {"traces", "logs"}


def _traces(span: dict[str, Any]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def _only_span(request: ExportTraceServiceRequest) -> Any:
    return request.resource_spans[0].scope_spans[0].spans[0]


def test_hex_ids_on_spans_and_links() -> None:
    body = _traces(
        {
            "traceId": TRACE_ID,
            "spanId": SPAN_ID,
            "parentSpanId": PARENT_ID,
            "links": [{"traceId": TRACE_ID.upper(), "spanId": PARENT_ID}],
        }
    )

    span = _only_span(otlp_json.decode_traces(body))

    assert span.trace_id == bytes.fromhex(TRACE_ID)
    assert span.span_id == bytes.fromhex(SPAN_ID)
    assert span.parent_span_id == bytes.fromhex(PARENT_ID)
    assert span.links[0].trace_id == bytes.fromhex(TRACE_ID)
    assert span.links[0].span_id == bytes.fromhex(PARENT_ID)


def test_hex_ids_on_log_records() -> None:
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": TRACE_ID, "spanId": SPAN_ID}, {}]}]}]}

    records = otlp_json.decode_logs(json.dumps(body)).resource_logs[0].scope_logs[0].log_records

    assert records[0].trace_id == bytes.fromhex(TRACE_ID)
    assert records[0].span_id == bytes.fromhex(SPAN_ID)
    assert records[1].trace_id == b""


@pytest.mark.parametrize(
    "kind", ["gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram"]
)
def test_hex_ids_on_metric_exemplars(kind: str) -> None:
    exemplar = {"traceId": TRACE_ID, "spanId": SPAN_ID, "asDouble": 1.5}
    metric = {"name": "m", kind: {"dataPoints": [{"exemplars": [exemplar]}]}}
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}

    decoded = otlp_json.decode_metrics(json.dumps(body))

    data = decoded.resource_metrics[0].scope_metrics[0].metrics[0]
    points = getattr(data, data.WhichOneof("data")).data_points
    assert points[0].exemplars[0].trace_id == bytes.fromhex(TRACE_ID)
    assert points[0].exemplars[0].span_id == bytes.fromhex(SPAN_ID)
    encoded = json.loads(otlp_json.encode_metrics(decoded))
    kind_json = "exponentialHistogram" if kind.startswith("exponential") else kind
    exemplar_json = encoded["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0][kind_json]["dataPoints"][0]
    assert exemplar_json["exemplars"][0]["traceId"] == TRACE_ID
    assert otlp_json.decode_metrics(otlp_json.encode_metrics(decoded)) == decoded


def test_snake_case_keys_are_accepted() -> None:
    body = {
        "resource_spans": [
            {
                "schema_url": "https://opentelemetry.io/schemas/1.37.0",
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE_ID,
                                "span_id": SPAN_ID,
                                "parent_span_id": PARENT_ID,
                                "start_time_unix_nano": "1000",
                            }
                        ]
                    }
                ],
            }
        ]
    }

    request = otlp_json.decode_traces(json.dumps(body))

    span = _only_span(request)
    assert span.trace_id == bytes.fromhex(TRACE_ID)
    assert span.parent_span_id == bytes.fromhex(PARENT_ID)
    assert span.start_time_unix_nano == 1000
    assert request.resource_spans[0].schema_url.endswith("1.37.0")


@pytest.mark.parametrize(("kind", "code"), [(2, 2), ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR")])
def test_enums_as_integers_or_names(kind: Any, code: Any) -> None:
    span = _only_span(otlp_json.decode_traces(_traces({"kind": kind, "status": {"code": code}})))

    assert span.kind == 2
    assert span.status.code == 2


@pytest.mark.parametrize("value", ["1795458125510845884", 1795458125510845884])
def test_int64_as_string_or_number(value: Any) -> None:
    attribute = {"key": "n", "value": {"intValue": value}}
    span = _only_span(
        otlp_json.decode_traces(_traces({"startTimeUnixNano": value, "attributes": [attribute]}))
    )

    assert span.start_time_unix_nano == 1795458125510845884
    assert span.attributes[0].value.int_value == 1795458125510845884


def test_unknown_fields_are_ignored() -> None:
    body = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{"name": "a", "futureField": {"x": 1}}], "new": 1}]}],
        "somethingElse": [1, 2],
    }

    assert _only_span(otlp_json.decode_traces(json.dumps(body))).name == "a"


def test_base64_ids_are_accepted() -> None:
    span = _only_span(
        otlp_json.decode_traces(
            _traces(
                {
                    "traceId": "W47/95gDgQPSabYzgT/GDA==",
                    "spanId": "7uGbfsPBsXQ",
                    "parentSpanId": "AQIDBAUGBwg=",
                }
            )
        )
    )

    assert span.trace_id == bytes.fromhex(TRACE_ID)
    assert span.span_id == bytes.fromhex(SPAN_ID)  # url-safe alphabet, no padding
    assert span.parent_span_id == bytes.fromhex(PARENT_ID)


def test_hex_of_the_wrong_length_is_kept_for_validation() -> None:
    span = _only_span(otlp_json.decode_traces(_traces({"traceId": "616263", "spanId": ""})))

    assert span.trace_id == b"abc"
    assert span.span_id == b""


def test_encode_writes_otlp_json() -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID), name="n", kind=3)
    )
    span.start_time_unix_nano = 1795458125510845884
    span.status.code = 2
    span.attributes.add(key="b").value.bytes_value = b"\x00\x01"

    encoded = json.loads(otlp_json.encode_traces(request))

    span_json = encoded["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span_json["traceId"] == TRACE_ID
    assert span_json["spanId"] == SPAN_ID
    assert "parentSpanId" not in span_json  # empty: left out
    assert span_json["kind"] == 3
    assert span_json["status"] == {"code": 2}
    assert span_json["startTimeUnixNano"] == "1795458125510845884"
    assert span_json["attributes"][0]["value"] == {"bytesValue": "AAE="}  # other bytes stay base64


def test_generic_encode_and_decode_for_responses() -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "bad"

    encoded = otlp_json.encode(response)

    assert json.loads(encoded) == {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad"}}
    assert otlp_json.decode(encoded, ExportTraceServiceResponse()) == response
    assert json.loads(otlp_json.encode(status_pb2.Status(code=3, message="m"))) == {"code": 3, "message": "m"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"resourceSpans": [{"scopeSpans": [{}, {"spans": [{}, {}, {}, {"traceId": "xyz"}]}]}]},
            "resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex characters, got 'xyz'",
        ),
        (
            {"resource_spans": [{"scope_spans": [{"spans": [{"span_id": 7}]}]}]},
            "resource_spans[0].scope_spans[0].spans[0].span_id: expected a string of 16 hex characters, "
            "got 7",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{}, {"spanId": "zz"}]}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].links[1].spanId: expected 16 hex characters, got 'zz'",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected an integer, got 'soon'",
        ),
        (
            {
                "resourceSpans": [
                    {"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": {"intValue": "x"}}]}]}]}
                ]
            },
            "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue: "
            "expected an integer, got 'x'",
        ),
        ({"resourceSpans": {}}, "resourceSpans: expected a JSON array, got object"),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].name: expected a string, got 5",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": ["span"]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0]: expected a JSON object, got 'span'",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": True}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].kind: expected an enum number or name, got boolean",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"droppedEventsCount": -1}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].droppedEventsCount: ",
        ),
    ],
)
def test_trace_errors_name_the_json_path(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        otlp_json.decode_traces(json.dumps(body))

    assert str(caught.value).startswith(message), str(caught.value)


def test_log_and_metric_errors_name_the_json_path() -> None:
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {"traceId": "not hex"}]}]}]}
    exemplar = {"spanId": "12345"}
    metric = {"name": "m", "sum": {"dataPoints": [{"exemplars": [exemplar]}]}}
    metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}

    with pytest.raises(DecodeError, match=re.escape("resourceLogs[0].scopeLogs[0].logRecords[1].traceId: ")):
        otlp_json.decode_logs(json.dumps(logs))
    with pytest.raises(
        DecodeError, match=re.escape("metrics[0].sum.dataPoints[0].exemplars[0].spanId: expected 16")
    ):
        otlp_json.decode_metrics(json.dumps(metrics))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [', "invalid JSON: Expecting value at line 1 column 20"),
        (b"[1, 2]", "expected a JSON object at the top level, got array"),
        (b'"x"', "expected a JSON object at the top level, got string"),
        (b'{"a": "\xff"}', "invalid JSON: not UTF-8 text"),
    ],
)
def test_malformed_json(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        otlp_json.decode_traces(body)


def test_empty_object_is_an_empty_request() -> None:
    assert otlp_json.decode_traces(b"{}") == ExportTraceServiceRequest()
    assert otlp_json.encode_traces(ExportTraceServiceRequest()) == b"{}"


def test_attribute_values_round_trip() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="attrs")
    values = {
        "s": {"string_value": "text"},
        "i": {"int_value": -(2**62)},
        "d": {"double_value": 0.5},
        "nan": {"double_value": float("nan")},
        "inf": {"double_value": float("-inf")},
        "b": {"bool_value": False},
        "raw": {"bytes_value": b"\xff\x00"},
        "arr": {"array_value": {"values": [{"string_value": "x"}, {"int_value": 1}]}},
        "empty_arr": {"array_value": {}},
        "kv": {"kvlist_value": {"values": [{"key": "k", "value": {"bool_value": True}}]}},
    }
    for key, value in values.items():
        span.attributes.add(key=key, value=value)
    span.attributes.add(key="unset")
    span.attributes.add(value={"string_value": "no key"})

    encoded = otlp_json.encode_traces(request)
    decoded = otlp_json.decode_traces(encoded)

    as_json = {
        a.get("key"): a.get("value")
        for a in json.loads(encoded)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    }
    assert as_json["i"] == {"intValue": str(-(2**62))}
    assert as_json["nan"] == {"doubleValue": "NaN"}
    assert as_json["inf"] == {"doubleValue": "-Infinity"}
    assert as_json["b"] == {"boolValue": False}
    assert as_json["raw"] == {"bytesValue": "/wA="}
    assert as_json["empty_arr"] == {"arrayValue": {}}
    assert as_json["unset"] is None
    assert as_json[None] == {"stringValue": "no key"}
    attributes = _only_span(decoded).attributes
    assert [a.key for a in attributes] == [a.key for a in span.attributes]
    assert attributes[3].value.double_value != attributes[3].value.double_value  # NaN
    attributes_without_nan = [a for a in attributes if a.key != "nan"]
    assert attributes_without_nan == [a for a in span.attributes if a.key != "nan"]
    assert attributes[8].value.HasField("array_value")
