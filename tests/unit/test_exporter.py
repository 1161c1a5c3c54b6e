"""QueuedExporter / Exporters / MemoryQueue with the package's fakes (InMemorySender, MemoryQueue)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from itertools import count
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_topics import metrics
from otel_topics.errors import Backpressure
from otel_topics.exporter import (
    Exporters,
    MemoryQueue,
    QueuedExporter,
    count_items,
    pack_entry,
    unpack_entry,
)
from otel_topics.senders import InMemorySender

_names = count()


def traces(n_spans: int = 2, tag: str = "t") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="agent")))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for i in range(n_spans):
        span = ss.spans.add(trace_id=bytes(range(16)), span_id=i.to_bytes(8, "big"), name=f"{tag}-{i}")
        span.attributes.append(KeyValue(key="tag", value=AnyValue(string_value=tag)))
    return req


def payload(n_spans: int = 2, tag: str = "t") -> bytes:
    return traces(n_spans, tag).SerializeToString()


def sample(name: str, exporter: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(f"otel_topics_{name}", {"exporter": exporter, **labels})
    return value or 0.0


def make(
    tmp_path: Path, *, sender: InMemorySender | None = None, max_bytes: int = 1 << 20, **kw: object
) -> QueuedExporter:
    sender = sender or InMemorySender(f"mem{next(_names)}")
    opts: dict[str, object] = {"retry_initial": 0.01, "retry_max_interval": 0.05}
    opts.update(kw)
    return QueuedExporter(
        sender,
        queue=MemoryQueue(max_bytes=max_bytes),
        dead_letter_path=tmp_path / "dead" / f"{sender.name}.jsonl",
        **opts,  # type: ignore[arg-type]
    )


def dead_letters(exp: QueuedExporter) -> list[dict[str, object]]:
    if not exp.dead_letter_path.exists():
        return []
    return [json.loads(line) for line in exp.dead_letter_path.read_text().splitlines()]


def span_names(sender: InMemorySender) -> list[str]:
    return [
        s.name
        for r in sender.requests["traces"]
        for rs in r.resource_spans  # type: ignore[attr-defined]
        for ss in rs.scope_spans
        for s in ss.spans
    ]


async def wait_until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


# --- entries and the memory queue ------------------------------------------------------------------
def test_entry_round_trip_keeps_payload_bytes() -> None:
    body = payload(3)
    entry = pack_entry("logs", body, 3)
    assert unpack_entry(entry) == ("logs", 3, body)
    assert len(entry) == len(body) + 6


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (b"\x01", "shorter than"),
        (b"\x09\x01\0\0\0\0", "format version 9"),
        (b"\x01\x07\0\0\0\0", "signal code"),
    ],
)
def test_malformed_entry_is_named(entry: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unpack_entry(entry)


def test_count_items_parses_each_signal() -> None:
    assert count_items("traces", payload(5)) == 5


async def test_memory_queue_order_ack_nack_and_bytes() -> None:
    q = MemoryQueue(max_bytes=100)
    await q.put(b"a" * 10)
    await q.put(b"b" * 20)
    assert (len(q), q.bytes) == (2, 30)
    ref_a, a = await q.get()
    assert a == b"a" * 10
    q.nack(ref_a)  # back at the front
    ref_a2, a2 = await q.get()
    assert a2 == a
    q.ack(ref_a2)
    assert (len(q), q.bytes) == (1, 20)
    ref_b, _ = await q.get()
    assert len(q) == 1  # taken but not acknowledged still counts
    q.ack(ref_b)
    assert (len(q), q.bytes) == (0, 0)


async def test_memory_queue_backpressure_and_oversized_entry() -> None:
    q = MemoryQueue(max_bytes=50)
    await q.put(b"x" * 80)  # larger than the cap, but the queue is empty
    with pytest.raises(Backpressure, match="full"):
        await q.put(b"y")
    ref, _ = await q.get()
    q.ack(ref)
    await q.put(b"y" * 50)


async def test_memory_queue_get_waits_for_put() -> None:
    q = MemoryQueue(max_bytes=50)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    await q.put(b"z")
    _, got = await asyncio.wait_for(getter, 1)
    assert got == b"z"


# --- delivery --------------------------------------------------------------------------------------
async def test_delivers_and_counts_items(tmp_path: Path) -> None:
    exp = make(tmp_path)
    sender = exp.sender
    assert isinstance(sender, InMemorySender)
    await exp.start()
    await exp.put("traces", payload(3, "a"), 3)
    await exp.put("traces", payload(2, "b"), 2)
    await wait_until(lambda: len(exp.queue) == 0)
    assert sorted(span_names(sender)) == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert sample("exported_items_total", exp.name, signal="traces") == 5
    assert sample("export_queue_bytes", exp.name) == 0
    assert await exp.drain(1)
    assert sender.closed


async def test_retryable_failure_is_retried_then_delivered(tmp_path: Path) -> None:
    sender = InMemorySender(f"retry{next(_names)}")
    sender.fail(3)
    exp = make(tmp_path, sender=sender)
    await exp.start()
    await exp.put("traces", payload(2), 2)
    await sender.wait_for("traces", 1)
    assert sender.attempts == 4
    assert sample("export_failures_total", exp.name, signal="traces", kind="retryable") == 3
    assert sample("exported_items_total", exp.name, signal="traces") == 2
    assert dead_letters(exp) == []
    await exp.close()


async def test_retry_after_from_backend_is_honoured(tmp_path: Path) -> None:
    sender = InMemorySender(f"throttle{next(_names)}")
    sender.fail(1, retry_after=0.3)
    exp = make(tmp_path, sender=sender)
    await exp.start()
    started = time.monotonic()
    await exp.put("traces", payload(1), 1)
    await sender.wait_for("traces", 1)
    assert time.monotonic() - started >= 0.29
    await exp.close()


async def test_permanent_failure_goes_to_dead_letter_file(tmp_path: Path) -> None:
    sender = InMemorySender(f"perm{next(_names)}")
    sender.fail(1, permanent=True, message="HTTP 400: bad span")
    exp = make(tmp_path, sender=sender, max_batch_bytes=0)
    await exp.start()
    body = payload(4, "refused")
    await exp.put("traces", body, 4)
    await exp.put("traces", payload(1, "fine"), 1)
    await sender.wait_for("traces", 1)
    await wait_until(lambda: len(exp.queue) == 0)
    [record] = dead_letters(exp)
    assert record["exporter"] == exp.name
    assert record["signal"] == "traces"
    assert record["items"] == 4
    assert "HTTP 400: bad span" in str(record["error"])
    assert str(record["time"]).endswith("Z")
    assert base64.b64decode(str(record["payload_b64"])) == body
    assert sender.attempts == 2  # a permanent refusal is not retried
    assert sample("dead_letter_items_total", exp.name, signal="traces") == 4
    assert sample("export_failures_total", exp.name, signal="traces", kind="permanent") == 1
    await exp.close()


async def test_dead_letter_counts_items_by_parsing_when_unknown(tmp_path: Path) -> None:
    sender = InMemorySender(f"parse{next(_names)}")
    sender.fail(1, permanent=True)
    exp = make(tmp_path, sender=sender)
    await exp.start()
    await exp.put("traces", payload(7), 0)
    await wait_until(lambda: len(exp.queue) == 0)
    assert dead_letters(exp)[0]["items"] == 7
    assert sample("dead_letter_items_total", exp.name, signal="traces") == 7
    await exp.close()


async def test_max_elapsed_exceeded_goes_to_dead_letter(tmp_path: Path) -> None:
    sender = InMemorySender(f"elapsed{next(_names)}")
    sender.fail(10_000)
    exp = make(tmp_path, sender=sender, retry_max_elapsed=0.2)
    await exp.start()
    started = time.monotonic()
    await exp.put("logs", b"", 0)
    await wait_until(lambda: len(exp.queue) == 0)
    assert 0.1 <= time.monotonic() - started < 2
    [record] = dead_letters(exp)
    assert record["signal"] == "logs"
    assert "gave up after" in str(record["error"])
    assert sender.attempts > 2
    await exp.close()


async def test_retries_disabled_dead_letters_at_first_failure(tmp_path: Path) -> None:
    sender = InMemorySender(f"noretry{next(_names)}")
    sender.fail(1)
    exp = make(tmp_path, sender=sender, retry_enabled=False)
    await exp.start()
    await exp.put("traces", payload(1), 1)
    await wait_until(lambda: len(exp.queue) == 0)
    assert "retries disabled" in str(dead_letters(exp)[0]["error"])
    assert sender.attempts == 1
    await exp.close()


async def test_malformed_queue_entry_is_dead_lettered(tmp_path: Path) -> None:
    exp = make(tmp_path)
    await exp.queue.put(b"\x07garbage")  # e.g. written by a future version
    await exp.start()
    await wait_until(lambda: len(exp.queue) == 0)
    [record] = dead_letters(exp)
    assert record["signal"] == "unknown"
    assert "format version 7" in str(record["error"])
    await exp.close()


async def test_long_outage_loses_nothing(tmp_path: Path) -> None:
    sender = InMemorySender(f"outage{next(_names)}")
    sender.fail(60)  # every in-flight request fails many times over
    exp = make(tmp_path, sender=sender, retry_max_interval=0.02)
    await exp.start()
    for i in range(40):
        await exp.put("traces", payload(1, f"r{i}"), 1)
    await wait_until(lambda: len(exp.queue) == 0, timeout=10)
    assert sorted(span_names(sender)) == sorted(f"r{i}-0" for i in range(40))
    assert dead_letters(exp) == []
    await exp.close()


async def test_sends_at_most_max_in_flight_at_once(tmp_path: Path) -> None:
    sender = InMemorySender(f"conc{next(_names)}", delay=0.03)
    exp = make(tmp_path, sender=sender, max_in_flight=3, max_batch_bytes=0)
    await exp.start()
    for _ in range(12):
        await exp.put("metrics", b"", 0)
    await sender.wait_for("metrics", 12)
    assert sender.max_in_flight == 3
    await exp.close()


# --- drain and close ---------------------------------------------------------------------------------
async def test_drain_delivers_what_is_queued_then_refuses(tmp_path: Path) -> None:
    sender = InMemorySender(f"drain{next(_names)}", delay=0.01)
    exp = make(tmp_path, sender=sender, max_in_flight=2)
    await exp.start()
    for _ in range(10):
        await exp.put("traces", payload(1), 1)
    assert await exp.drain(5)
    assert len(span_names(sender)) == 10
    assert sender.closed
    with pytest.raises(Backpressure, match="not accepting"):
        await exp.put("traces", payload(1), 1)


async def test_drain_timeout_leaves_entries_in_queue(tmp_path: Path) -> None:
    sender = InMemorySender(f"stuck{next(_names)}")
    sender.fail(10_000)
    exp = make(tmp_path, sender=sender, max_in_flight=2)
    await exp.start()
    bodies = [payload(1, f"k{i}") for i in range(5)]
    for body in bodies:
        await exp.put("traces", body, 1)
    started = time.monotonic()
    assert not await exp.drain(0.2)
    assert time.monotonic() - started < 1.5
    assert len(exp.queue) == 5  # in-flight entries were put back
    assert dead_letters(exp) == []
    q = exp.queue
    assert isinstance(q, MemoryQueue)
    left = []
    while len(q._waiting):
        ref, entry = await q.get()
        left.append(unpack_entry(entry)[2])
        q.ack(ref)
    assert sorted(left) == sorted(bodies)


# --- fan-out -------------------------------------------------------------------------------------
async def test_exporters_put_into_every_queue(tmp_path: Path) -> None:
    a, b = make(tmp_path), make(tmp_path)
    fan = Exporters([a, b, a])
    assert len(fan) == 2
    await fan.start()
    await fan.put("traces", payload(2), 2)
    for exp in (a, b):
        assert isinstance(exp.sender, InMemorySender)
        await exp.sender.wait_for("traces", 1)
    assert await fan.drain(2)


async def test_exporters_backpressure_when_any_queue_is_full(tmp_path: Path) -> None:
    roomy = make(tmp_path)
    tight = make(tmp_path, sender=InMemorySender(f"tight{next(_names)}"), max_bytes=10)
    assert isinstance(tight.sender, InMemorySender)
    tight.sender.fail(10_000)  # nothing leaves the tight queue
    fan = Exporters([roomy, tight])
    await fan.start()
    await fan.put("traces", payload(2), 2)  # an empty queue takes one oversized entry
    with pytest.raises(Backpressure, match="full") as info:
        await fan.put("traces", payload(2), 2)
    assert info.value.retry_after > 0
    await fan.close()


def test_constructor_checks_name_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        make(tmp_path, max_in_flight=0)
    with pytest.raises(ValueError, match="retry_max_interval"):
        make(tmp_path, retry_initial=5.0, retry_max_interval=1.0)
    with pytest.raises(ValueError, match="retry_max_elapsed"):
        make(tmp_path, retry_max_elapsed=-1)


# --- batching ------------------------------------------------------------------------------------
async def test_backlog_goes_out_as_merged_requests(tmp_path: Path) -> None:
    exp = make(tmp_path, max_in_flight=1)
    sender = exp.sender
    assert isinstance(sender, InMemorySender)
    for i in range(30):  # left over from a previous run, say
        await exp.queue.put(pack_entry("traces", payload(2, f"b{i}"), 2))
    await exp.start()
    await wait_until(lambda: len(exp.queue) == 0)
    assert sender.count("traces") == 1  # one request: the merge of all 30
    merged = sender.requests["traces"][0]
    assert len(merged.resource_spans) == 30  # type: ignore[attr-defined]
    assert sorted(span_names(sender)) == sorted(f"b{i}-{j}" for i in range(30) for j in range(2))
    assert sample("exported_items_total", exp.name, signal="traces") == 60
    await exp.close()


async def test_batches_keep_signals_apart_and_respect_max_bytes(tmp_path: Path) -> None:
    one = len(payload(2, "s00"))
    exp = make(tmp_path, max_in_flight=1, max_batch_bytes=int(2.5 * (one + 6)))
    sender = exp.sender
    assert isinstance(sender, InMemorySender)
    for i in range(10):
        await exp.queue.put(pack_entry("traces", payload(2, f"s{i:02d}"), 2))
    await exp.queue.put(pack_entry("metrics", b"", 0))
    await exp.queue.put(pack_entry("traces", payload(2, "last"), 2))
    await exp.start()
    await wait_until(lambda: len(exp.queue) == 0)
    sizes = [len(r.resource_spans) for r in sender.requests["traces"]]  # type: ignore[attr-defined]
    assert sizes == [2, 2, 2, 2, 2, 1]  # never past max_batch_bytes; the metrics entry splits the run
    assert sender.count("metrics") == 1
    assert len(span_names(sender)) == 22
    await exp.close()


async def test_no_batching_with_zero_max_batch_bytes(tmp_path: Path) -> None:
    exp = make(tmp_path, max_batch_bytes=0, max_in_flight=1)
    for i in range(5):
        await exp.queue.put(pack_entry("traces", payload(1, f"n{i}"), 1))
    await exp.start()
    await wait_until(lambda: len(exp.queue) == 0)
    assert isinstance(exp.sender, InMemorySender) and exp.sender.count("traces") == 5
    await exp.close()


async def test_refused_batch_is_resent_one_by_one_and_only_culprit_dead_lettered(tmp_path: Path) -> None:
    sender = InMemorySender(f"culprit{next(_names)}")
    sender.refuse = lambda signal, req: (
        "span bad-0 is invalid"
        if any(s.name == "bad-0" for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)  # type: ignore[attr-defined]
        else None
    )
    exp = make(tmp_path, sender=sender, max_in_flight=1)
    bad = payload(3, "bad")
    for i in range(4):
        await exp.queue.put(pack_entry("traces", payload(1, f"ok{i}"), 1))
    await exp.queue.put(pack_entry("traces", bad, 3))
    await exp.start()
    await wait_until(lambda: len(exp.queue) == 0)
    assert sorted(span_names(sender)) == [f"ok{i}-0" for i in range(4)]
    [record] = dead_letters(exp)
    assert base64.b64decode(str(record["payload_b64"])) == bad
    assert record["items"] == 3 and "span bad-0 is invalid" in str(record["error"])
    assert sample("dead_letter_items_total", exp.name, signal="traces") == 3
    await exp.close()


async def test_batch_out_of_retries_dead_letters_each_request(tmp_path: Path) -> None:
    sender = InMemorySender(f"batchdl{next(_names)}")
    sender.fail(10_000)
    exp = make(tmp_path, sender=sender, max_in_flight=1, retry_enabled=False)
    bodies = [payload(1, f"d{i}") for i in range(3)]
    for body in bodies:
        await exp.queue.put(pack_entry("traces", body, 1))
    await exp.start()
    await wait_until(lambda: len(exp.queue) == 0)
    assert sender.attempts == 1  # one merged request
    records = dead_letters(exp)
    assert [base64.b64decode(str(r["payload_b64"])) for r in records] == bodies
    assert all(r["items"] == 1 for r in records)
    await exp.close()
