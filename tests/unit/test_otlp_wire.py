from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics.otlp_wire import LOG_TRACE_ID, SPAN_TRACE_ID, WireError, split_by_trace

TIDS = [bytes([n]) * 16 for n in range(1, 6)]


def traces_request(seed: int) -> ExportTraceServiceRequest:
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    for r in range(3):
        rs = req.resource_spans.add(schema_url=f"rs-schema-{r}")
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=f"svc{r}")))
        for s in range(2):
            ss = rs.scope_spans.add(schema_url=f"ss-schema-{s}")
            ss.scope.name = f"scope{r}.{s}"
            for i in range(rnd.randint(0, 12)):
                span = ss.spans.add(
                    trace_id=rnd.choice(TIDS),
                    span_id=rnd.randbytes(8),
                    name="x" * rnd.randint(0, 300),  # lengths over 127 need 2-byte varints
                    flags=0x300 if i % 3 == 0 else 0,
                    start_time_unix_nano=rnd.getrandbits(63),
                )
                span.attributes.append(KeyValue(key="k", value=AnyValue(int_value=rnd.getrandbits(40))))
    big = req.resource_spans[0].scope_spans[0].spans.add(trace_id=TIDS[seed % 5], name="y" * 20_000)
    big.attributes.append(KeyValue(key="prompt", value=AnyValue(string_value="z" * 70_000)))  # 3-byte length
    return req


def reference(req: ExportTraceServiceRequest, tid: bytes) -> ExportTraceServiceRequest:
    out = ExportTraceServiceRequest()
    for rs in req.resource_spans:
        rs_out = None
        for ss in rs.scope_spans:
            spans = [s for s in ss.spans if s.trace_id == tid]
            if not spans:
                continue
            if rs_out is None:
                rs_out = out.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
            rs_out.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url).spans.extend(spans)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_split_matches_a_protobuf_reference(seed: int) -> None:
    req = traces_request(seed)
    wanted = set(TIDS[:4])
    out: dict[bytes, list[bytes]] = {}
    split_by_trace(req.SerializeToString(), wanted, SPAN_TRACE_ID, out)
    for tid in TIDS:
        got = ExportTraceServiceRequest.FromString(b"".join(out.get(tid, [])))
        expect = reference(req, tid) if tid in wanted else ExportTraceServiceRequest()
        assert got == expect


def test_split_logs_and_keep_unknown_fields() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add(schema_url="rl")
    sl = rl.scope_logs.add(schema_url="sl")
    sl.scope.name = "genai"
    for n in range(4):
        rec = sl.log_records.add(trace_id=TIDS[n % 2], body=AnyValue(string_value=f"m{n}"))
        rec.attributes.append(KeyValue(key="a", value=AnyValue(string_value="v" * 200)))
    sl.log_records.add(body=AnyValue(string_value="no trace"))
    unknown = _varint(99 << 3) + _varint(7)  # field 99, varint 7: from a newer schema
    scope_bytes = sl.SerializeToString() + unknown
    del rl.scope_logs[:]
    rl_bytes = rl.SerializeToString() + _varint(2 << 3 | 2) + _varint(len(scope_bytes)) + scope_bytes
    payload = _varint(1 << 3 | 2) + _varint(len(rl_bytes)) + rl_bytes

    out: dict[bytes, list[bytes]] = {}
    split_by_trace(payload, {TIDS[0], b""}, LOG_TRACE_ID, out)
    got = ExportLogsServiceRequest.FromString(b"".join(out[TIDS[0]]))
    sl_out = got.resource_logs[0].scope_logs[0]
    assert [r.body.string_value for r in sl_out.log_records] == ["m0", "m2"]
    assert got.resource_logs[0].schema_url == "rl" and sl_out.schema_url == "sl"
    assert sl_out.scope.name == "genai"
    assert sl_out.SerializeToString().endswith(unknown)
    untraced = ExportLogsServiceRequest.FromString(b"".join(out[b""]))
    assert [r.body.string_value for r in untraced.resource_logs[0].scope_logs[0].log_records] == ["no trace"]
    assert TIDS[1] not in out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@pytest.mark.parametrize("cut", [1, 5, 40, -3])
def test_malformed_bytes_raise_wire_error_and_leave_out_untouched(cut: int) -> None:
    payload = traces_request(1).SerializeToString()
    out: dict[bytes, list[bytes]] = {}
    with pytest.raises(WireError):
        split_by_trace(payload[:cut], set(TIDS), SPAN_TRACE_ID, out)
    assert out == {}
