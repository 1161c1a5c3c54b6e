from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics import metrics
from otel_topics.assembler import (
    KIND_LOGS,
    KIND_TOMBSTONE,
    KIND_TRACES,
    Assembler,
    Released,
    decode_tombstone,
    encode_tombstone,
)
from otel_topics.spool import DurableLog, RecordRef

IDLE, MAX_WAIT = 10.0, 300.0
REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


Span = tuple[int, int, int | None] | tuple[int, int, int | None, int]  # trace, span, parent[, flags]


def request(*spans: Span, service: str = "agent", scope: str = "scope") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add(schema_url="scope-schema")
    ss.scope.name = scope
    for t, s, parent, *flags in spans:
        ss.spans.add(
            trace_id=tid(t),
            span_id=sid(s),
            parent_span_id=sid(parent) if parent is not None else b"",
            name=f"span {s}",
            flags=flags[0] if flags else 0,
        )
    return req


def logs_request(*records: tuple[int | None, str], service: str = "agent") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add(schema_url="logs-schema")
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    sl = rl.scope_logs.add()
    sl.scope.name = "genai"
    for t, body in records:
        sl.log_records.add(
            trace_id=tid(t) if t is not None else b"",
            event_name="gen_ai.user.message",
            body=AnyValue(string_value=body),
        )
    return req


class Harness:
    def __init__(self, spool: DurableLog, clock: Clock, **kw: object) -> None:
        self.spool = spool
        self.clock = clock
        args: dict[str, object] = {"idle": IDLE, "max_wait": MAX_WAIT, "max_bytes": 1 << 30}
        args.update(kw)
        self.asm = Assembler(spool, clock=clock, **args)  # type: ignore[arg-type]
        self.asm.recover()

    async def traces(self, req: ExportTraceServiceRequest) -> RecordRef:
        ref = await self.spool.append(KIND_TRACES, req.SerializeToString())
        self.asm.add_traces(ref, req)
        return ref

    async def logs(self, req: ExportLogsServiceRequest) -> RecordRef:
        ref = await self.spool.append(KIND_LOGS, req.SerializeToString())
        self.asm.add_logs(ref, req)
        return ref


async def open_spool(d: Path, **kw: object) -> DurableLog:
    args: dict[str, object] = {"max_bytes": 1 << 30, "fsync": False, "commit_interval": 0.0}
    args.update(kw)
    spool = DurableLog(d, **args)  # type: ignore[arg-type]
    await spool.start()
    return spool


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    spool = await open_spool(tmp_path)
    yield Harness(spool, Clock())
    await spool.close()


def ids(released: list[Released]) -> list[bytes]:
    return [r.trace_id for r in released]


async def test_root_then_idle_after_the_latest_span(h: Harness) -> None:
    before = sample("otel_topics_traces_released_total", reason="idle")
    await h.traces(request((1, 1, None), (1, 2, 1)))
    h.clock.t += 6
    await h.traces(request((1, 3, 1)))
    assert h.asm.due(h.clock.t + IDLE - 0.01) == []
    [r] = h.asm.due(h.clock.t + IDLE)
    assert (r.trace_id, r.reason, r.has_root, r.root_span_id) == (tid(1), "idle", True, sid(1))
    assert len(r.refs) == 2 and not r.reopened
    assert sample("otel_topics_traces_released_total", reason="idle") == before + 1
    assert h.asm.pending_traces == 0 and h.asm.pending_bytes == 0


async def test_without_root_waits_max_wait_from_the_first_span(h: Harness) -> None:
    await h.traces(request((2, 2, 1)))
    h.clock.t += 100
    await h.traces(request((2, 3, 1)))
    assert h.asm.due(h.clock.t + IDLE) == []
    assert h.asm.due(1000 + MAX_WAIT - 0.01) == []
    [r] = h.asm.due(1000 + MAX_WAIT)
    assert r.reason == "max_wait" and not r.has_root


async def test_root_arriving_late_brings_the_deadline_forward(h: Harness) -> None:
    await h.traces(request((3, 2, 1)))
    h.clock.t += 50
    await h.traces(request((3, 1, None)))
    [r] = h.asm.due(h.clock.t + IDLE)
    assert r.reason == "idle"


async def test_a_busy_trace_with_root_is_released_at_max_wait(h: Harness) -> None:
    await h.traces(request((4, 1, None)))
    released: list[tuple[float, Released]] = []
    while not released:
        h.clock.t += 9  # never idle
        await h.traces(request((4, 9, 1)))
        released += [(h.clock.t, r) for r in h.asm.due()]
    [(when, r)] = released
    assert r.reason == "max_wait" and r.has_root
    assert 1000 + MAX_WAIT <= when < 1000 + MAX_WAIT + 9


async def test_remote_parent_counts_as_root(h: Harness) -> None:
    await h.traces(request((5, 2, 1, 0x300)))  # parent remote
    await h.traces(request((6, 2, 1, 0x100)))  # has-is-remote but local parent
    [r] = h.asm.due(h.clock.t + IDLE)
    assert r.trace_id == tid(5) and r.root_span_id == sid(2)


async def test_over_max_bytes_the_oldest_are_released_early(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path)
    one = request((1, 1, 1), (1, 2, 1))
    size = sum(s.ByteSize() for s in one.resource_spans[0].scope_spans[0].spans)
    h = Harness(spool, Clock(), max_bytes=int(size * 2.5))
    for n in (1, 2, 3):
        await h.traces(request((n, 1, 1), (n, 2, 1)))
        h.clock.t += 1
    assert h.asm.pending_bytes == 3 * size
    released = h.asm.due()
    assert ids(released) == [tid(1)] and released[0].reason == "max_bytes"
    assert h.asm.pending_bytes == 2 * size
    assert h.asm.due() == []
    await spool.close()


async def test_late_span_reopens_a_released_trace(h: Harness) -> None:
    before = sample("otel_topics_traces_reopened_total")
    await h.traces(request((7, 1, None)))
    [first] = h.asm.due(h.clock.t + IDLE)
    h.asm.done([first])
    await h.traces(request((7, 5, 1)))
    assert sample("otel_topics_traces_reopened_total") == before + 1
    [again] = h.asm.due(h.clock.t + IDLE)  # its root came with the first part: idle applies
    assert again.reopened and again.reason == "idle" and not again.has_root
    [data] = h.asm.load([again])
    assert data.reopened
    assert [s.span_id for s in data.spans.resource_spans[0].scope_spans[0].spans] == [sid(5)]


async def test_remember_released_is_bounded(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path)
    h = Harness(spool, Clock(), remember_released=2)
    for n in (1, 2, 3):
        await h.traces(request((n, 1, None)))
    h.asm.done(h.asm.drain())
    for n in (1, 3):
        await h.traces(request((n, 2, 1)))
    flags = {r.trace_id: r.reopened for r in h.asm.drain()}
    assert flags == {tid(1): False, tid(3): True}  # 1 was forgotten
    await spool.close()


async def test_load_keeps_resource_scope_and_parses_each_record_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = request((1, 1, None), (2, 1, None), (1, 2, 1), service="svc-a", scope="scope-a")
    extra = a.resource_spans.add()
    extra.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="svc-b")))
    ss = extra.scope_spans.add()
    ss.scope.name = "scope-b"
    ss.spans.add(trace_id=tid(2), span_id=sid(3), parent_span_id=sid(1))
    ss.spans.add(trace_id=tid(9), span_id=sid(1))  # not released: must not leak into the others
    await h.traces(a)
    await h.traces(request((1, 3, 1), service="svc-a", scope="scope-a"))

    reads: list[RecordRef] = []
    real = h.spool.read
    monkeypatch.setattr(h.spool, "read", lambda ref: reads.append(ref) or real(ref))
    released = [r for r in h.asm.due(h.clock.t + IDLE) if r.trace_id != tid(9)]
    assert sorted(ids(released)) == [tid(1), tid(2)]
    traces = {t.trace_id: t for t in h.asm.load(released)}
    assert len(reads) == 2  # two records, three references

    t1 = traces[tid(1)].spans
    assert len(t1.resource_spans) == 2
    rs = t1.resource_spans[0]
    assert rs.schema_url == "https://opentelemetry.io/schemas/1.26.0"
    assert rs.resource.attributes[0].value.string_value == "svc-a"
    assert rs.scope_spans[0].scope.name == "scope-a" and rs.scope_spans[0].schema_url == "scope-schema"
    assert [s.span_id for s in rs.scope_spans[0].spans] == [sid(1), sid(2)]
    assert [s.span_id for s in t1.resource_spans[1].scope_spans[0].spans] == [sid(3)]

    t2 = traces[tid(2)].spans
    assert [r.resource.attributes[0].value.string_value for r in t2.resource_spans] == ["svc-a", "svc-b"]
    assert t2.resource_spans[1].scope_spans[0].scope.name == "scope-b"
    assert [s.span_id for r in t2.resource_spans for s in r.scope_spans[0].spans] == [sid(1), sid(3)]
    assert traces[tid(2)].logs is None


async def test_logs_join_their_trace(h: Harness) -> None:
    await h.traces(request((1, 1, None)))
    await h.logs(logs_request((1, "hello"), (None, "no trace"), (2, "other trace")))
    assert h.asm.pending_traces == 2  # a log-only trace waits like a trace without root
    [r] = h.asm.due(h.clock.t + IDLE)
    assert r.trace_id == tid(1) and len(r.log_refs) == 1
    [data] = h.asm.load([r])
    assert data.logs is not None
    rl = data.logs.resource_logs[0]
    assert rl.schema_url == "logs-schema" and rl.scope_logs[0].scope.name == "genai"
    assert [rec.body.string_value for rec in rl.scope_logs[0].log_records] == ["hello"]
    [other] = h.asm.due(h.clock.t + MAX_WAIT)
    assert other.trace_id == tid(2) and other.reason == "max_wait"


async def test_done_releases_the_spool(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path, segment_bytes=4096)
    h = Harness(spool, Clock())
    for n in range(100):
        await h.traces(request((n, 1, None), (n, 2, 1), (n + 1000, 1, None)))
    assert len(spool.segments) > 3
    released = h.asm.drain()
    assert {r.reason for r in released} == {"shutdown"} and len(released) == 200
    h.asm.load(released)
    h.asm.done(released)
    await spool.append(KIND_TRACES, b"")  # the tombstone's segment is committed
    assert len(spool.segments) <= 2
    await spool.close()


def test_tombstone_round_trip() -> None:
    rs = [Released(tid(1), "idle", (RecordRef(1, 17, 5),), (RecordRef(2, 8, 9),)), Released(b"", "idle", ())]
    assert decode_tombstone(encode_tombstone(rs)) == [
        (tid(1), [RecordRef(1, 17, 5), RecordRef(2, 8, 9)]),
        (b"", []),
    ]


async def test_recover_after_a_crash_skips_tombstoned_traces(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path, segment_bytes=4096)
    h = Harness(spool, Clock())
    await h.traces(request((1, 1, None), (2, 1, None)))  # one record, two traces
    await h.traces(request((3, 1, 2)))  # no root
    await h.logs(logs_request((3, "log of 3")))
    [r1, r2] = h.asm.due(h.clock.t + IDLE)
    h.asm.done([r for r in (r1, r2) if r.trace_id == tid(1)])  # 2 was released but never finished
    await h.traces(request((1, 7, 1)))  # late span of 1, after its tombstone
    await spool.close()  # the tombstone was written with a commit; the process "crashes" here

    spool = await open_spool(tmp_path, segment_bytes=4096)
    h = Harness(spool, Clock(5000.0))  # recover() runs in the harness
    assert h.asm.pending_traces == 3
    released = {r.trace_id: r for r in h.asm.drain()}
    assert set(released) == {tid(1), tid(2), tid(3)}
    assert released[tid(1)].reopened and len(released[tid(1)].refs) == 1
    assert not released[tid(2)].reopened and released[tid(2)].has_root
    assert len(released[tid(3)].log_refs) == 1
    data = {t.trace_id: t for t in h.asm.load(list(released.values()))}
    assert [s.span_id for s in data[tid(1)].spans.resource_spans[0].scope_spans[0].spans] == [sid(7)]
    assert data[tid(3)].logs is not None
    await spool.close()


async def test_tombstones_survive_while_their_traces_records_do(tmp_path: Path) -> None:
    """A trace finished while its record's segment is pinned by another trace is not resent after
    any number of restarts: the tombstone's segment is kept as long as that record's."""
    spool = await open_spool(tmp_path, segment_bytes=4096)
    h = Harness(spool, Clock())
    first = await h.traces(request((1, 1, None), (2, 1, 9)))  # 2 (no root) pins this segment
    for n in range(10, 20):  # traffic: the next records go to later segments
        await h.traces(request(*[(n, s, None) for s in range(1, 30)]))
    h.asm.done([r for r in h.asm.due(h.clock.t + IDLE) if r.trace_id != tid(2)])  # 1 and 10..19
    tomb = spool.append_nowait(KIND_TOMBSTONE, b"")  # lands next to the tombstone
    assert tomb.segment > first.segment
    for n in range(20, 30):  # more traffic: the tombstone's segment is left behind
        await h.traces(request(*[(n, s, None) for s in range(1, 30)]))
    h.asm.done([r for r in h.asm.due(h.clock.t + IDLE) if r.trace_id != tid(2)])
    await spool.close()

    for _ in range(3):
        spool = await open_spool(tmp_path, segment_bytes=4096)
        h = Harness(spool, Clock())
        assert [r.trace_id for r in h.asm.due(h.clock.t + MAX_WAIT + 1)] == [tid(2)]
        await spool.close()  # 2 was released but never done: it comes back every time


async def test_tombstone_record_kind_is_not_indexed(h: Harness) -> None:
    h.spool.append_nowait(KIND_TOMBSTONE, encode_tombstone([]))
    h.spool.append_nowait(42, b"unknown kind")
    assert h.asm.pending_traces == 0


async def test_due_is_cheap_with_many_pending_traces(h: Harness) -> None:
    req = request(*[(n, 1, None) for n in range(20_000)])
    await h.traces(req)
    h.clock.t += 1
    await h.traces(request(*[(n, 2, 1) for n in range(0, 20_000, 2)]))
    assert h.asm.pending_traces == 20_000
    start = time.perf_counter()
    for _ in range(20):
        assert h.asm.due(h.clock.t + 1) == []
    assert time.perf_counter() - start < 0.05
    first = h.asm.due(1000 + IDLE)  # odd traces: no span since t=1000
    assert len(first) == 10_000 and all(int.from_bytes(r.trace_id, "big") % 2 for r in first)
    assert len(h.asm.due(1001 + IDLE)) == 10_000


async def test_recover_after_the_process_is_killed(tmp_path: Path) -> None:
    """Everything acknowledged comes back after a kill; finished traces whose tombstone was
    committed do not."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(REPO / "src")!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_assembler import Clock, request
        from otel_topics.assembler import KIND_TRACES, Assembler
        from otel_topics.spool import DurableLog

        async def main():
            spool = DurableLog({str(tmp_path)!r}, max_bytes=1 << 30, segment_bytes=4096)
            await spool.start()
            clock = Clock()
            asm = Assembler(spool, idle=10, max_wait=300, max_bytes=1 << 30, clock=clock)
            asm.recover()

            async def ingest(req):
                asm.add_traces(await spool.append(KIND_TRACES, req.SerializeToString()), req)

            await asyncio.gather(*(ingest(request((n, 1, None), (n, 2, 1))) for n in range(1, 101)))
            asm.done([r for r in asm.due(clock.t + 10) if int.from_bytes(r.trace_id, "big") <= 50])
            await ingest(request((1000, 1, 2)))  # commits the tombstone with it
            os._exit(0)

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    spool = await open_spool(tmp_path, segment_bytes=4096)
    h = Harness(spool, Clock())
    back = sorted(int.from_bytes(r.trace_id, "big") for r in h.asm.drain())
    assert back == [*range(51, 101), 1000]
    await spool.close()
