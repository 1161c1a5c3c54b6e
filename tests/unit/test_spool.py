from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from otel_topics import metrics
from otel_topics.errors import Backpressure, PayloadTooLarge
from otel_topics.spool import HEADER_SIZE, MAGIC, DurableLog, PersistentQueue, RecordRef

REPO = Path(__file__).resolve().parents[2]


def seg_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.seg"))


async def files_become(d: Path, expect: Callable[[list[str]], bool], timeout: float = 5.0) -> list[str]:
    """Segment files are unlinked on the writer thread: wait (bounded) until ``expect`` holds."""
    deadline = time.monotonic() + timeout
    while not expect(files := seg_files(d)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return files


async def open_log(d: Path, **kw: object) -> DurableLog:
    args: dict[str, object] = {"max_bytes": 1 << 30, "fsync": False, "name": "test"}
    args.update(kw)
    log = DurableLog(d, **args)  # type: ignore[arg-type]
    await log.start()
    return log


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[DurableLog]:
    lg = await open_log(tmp_path / "log")
    yield lg
    await lg.close()


async def test_append_read_and_replay_after_reopen(tmp_path: Path) -> None:
    lg = await open_log(tmp_path)
    refs = [await lg.append(1 + i % 3, f"payload {i}".encode()) for i in range(10)]
    nowait = lg.append_nowait(3, b"tombstone")
    assert lg.read(refs[4]) == b"payload 4"
    assert isinstance(refs[0], RecordRef) and refs[0].length == len(b"payload 0")
    await lg.close()

    lg = await open_log(tmp_path)
    got = list(lg.replay())
    assert [r for r, _, _ in got] == [*refs, nowait]
    assert [k for _, k, _ in got] == [1 + i % 3 for i in range(10)] + [3]
    assert got[-1][2] == b"tombstone"
    assert lg.read(refs[9]) == b"payload 9"
    await lg.close()


async def test_acked_records_survive_a_crash(tmp_path: Path) -> None:
    """A process killed right after its appends returned (no close) loses nothing."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(REPO / "src")!r})
        from otel_topics.spool import DurableLog

        async def main():
            lg = DurableLog(
                {str(tmp_path)!r}, max_bytes=1 << 30, segment_bytes=8192, fsync=True, name="crash"
            )
            await lg.start()
            refs = await asyncio.gather(*(lg.append(1, b"r%04d" % i * 100) for i in range(200)))
            print(len(refs), flush=True)
            os._exit(0)  # no close(), no flush of anything but what append() already made durable

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "200"
    lg = await open_log(tmp_path)
    payloads = [p for _, _, p in lg.replay()]
    assert sorted(payloads) == [b"r%04d" % i * 100 for i in range(200)]
    assert len(seg_files(tmp_path)) > 2  # rotation happened
    await lg.close()


async def test_torn_tail_is_truncated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lg = await open_log(tmp_path)
    for i in range(5):
        await lg.append(1, b"x%d" % i)
    await lg.close()
    last = tmp_path / seg_files(tmp_path)[-1]
    good_size = last.stat().st_size
    with last.open("ab") as f:  # a record whose payload never made it to disk
        f.write((1000).to_bytes(4, "little") + b"\0\0\0\0\x01" + b"partial")
    lg = await open_log(tmp_path)
    assert [p for _, _, p in lg.replay()] == [b"x%d" % i for i in range(5)]
    assert last.stat().st_size == good_size
    assert "truncating torn" in caplog.text
    ref = await lg.append(1, b"after")  # a new segment continues
    assert lg.read(ref) == b"after"
    await lg.close()


async def test_corrupt_record_truncates_and_bad_files_are_set_aside(tmp_path: Path) -> None:
    lg = await open_log(tmp_path)
    refs = [await lg.append(1, b"record %d" % i) for i in range(3)]
    await lg.close()
    seg = tmp_path / f"{refs[1].segment:012d}.seg"
    data = bytearray(seg.read_bytes())
    data[refs[1].offset] ^= 0xFF  # flip a byte of the second record's payload
    seg.write_bytes(bytes(data))
    (tmp_path / "000000000099.seg").write_bytes(b"not a segment at all")
    (tmp_path / "000000000098.seg").write_bytes(MAGIC[:3])  # crashed while being created
    lg = await open_log(tmp_path)
    assert [p for _, _, p in lg.replay()] == [b"record 0"]
    assert (tmp_path / "000000000099.corrupt").exists()
    assert not (tmp_path / "000000000098.seg").exists()
    await lg.close()


async def test_group_commit(tmp_path: Path) -> None:
    lg = await open_log(tmp_path, fsync=True, name="spool")
    before = metrics.REGISTRY.get_sample_value("otel_topics_spool_commits_total") or 0.0
    refs = await asyncio.gather(*(lg.append(1, b"%d" % i) for i in range(500)))
    assert len(set(refs)) == 500
    assert lg.commits <= 10, lg.commits
    after = metrics.REGISTRY.get_sample_value("otel_topics_spool_commits_total")
    assert after == before + lg.commits
    assert metrics.REGISTRY.get_sample_value("otel_topics_spool_bytes") == lg.bytes_on_disk
    await lg.close()


async def test_only_the_instance_named_spool_sets_spool_gauges(tmp_path: Path) -> None:
    metrics.SPOOL_BYTES.set(-1)
    lg = await open_log(tmp_path, name="queue:x")
    await lg.append(1, b"abc")
    assert metrics.REGISTRY.get_sample_value("otel_topics_spool_bytes") == -1
    await lg.close()


async def test_backpressure_at_the_cap_and_room_after_release(tmp_path: Path) -> None:
    lg = await open_log(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    lg.collect()
    refs = []
    with pytest.raises(Backpressure) as err:
        for _ in range(100):
            ref = await lg.append(1, b"p" * 2000)
            lg.retain(ref)
            refs.append(ref)
    assert err.value.retry_after > 0
    assert "max_bytes=65536" in str(err.value)
    assert 25 <= len(refs) < 33
    assert lg.bytes_on_disk <= 64 * 1024
    for ref in refs:
        lg.release(ref)
    await lg.append(1, b"p" * 2000)  # old segments were deleted: room again
    with pytest.raises(PayloadTooLarge):
        await lg.append(1, b"p" * 70_000)
    await lg.close()


async def test_segments_deleted_when_released_and_only_after_collect(tmp_path: Path) -> None:
    lg = await open_log(tmp_path, segment_bytes=4096)
    refs = [await lg.append(1, b"x" * 1000) for _ in range(20)]
    for r in refs:
        lg.retain(r)
    lg.retain(refs[0])  # twice
    n_segments = len(seg_files(tmp_path))
    assert n_segments >= 5
    for r in refs:
        lg.release(r)
    await asyncio.sleep(0.05)
    assert len(seg_files(tmp_path)) == n_segments  # not armed yet: recovery has not run
    lg.collect()
    expect = [f"{refs[0].segment:012d}.seg", f"{lg.segments[-1]:012d}.seg"]
    assert await files_become(tmp_path, lambda f: f == expect) == expect
    lg.release(refs[0])
    expect = [f"{lg.segments[-1]:012d}.seg"]
    assert await files_become(tmp_path, lambda f: f == expect) == expect
    with pytest.raises(KeyError, match="deleted"):
        lg.retain(refs[0])
    with pytest.raises(ValueError, match="more often"):
        lg.release(RecordRef(lg.segments[-1], 8, 1))
    await lg.close()


async def test_guarding_record_outlives_the_records_it_cancels(tmp_path: Path) -> None:
    lg = await open_log(tmp_path, segment_bytes=4096)
    lg.collect()
    a = await lg.append(1, b"a" * 4070)  # segment 1
    lg.retain(a)  # before the next await, or its segment may be collected
    b = await lg.append(1, b"b" * 4070)  # segment 2
    lg.retain(b)
    tomb = lg.append_nowait(3, b"cancels a", guards=[a])  # segment 3
    await lg.append(1, b"c" * 4070)  # segment 4: segment 3 is no longer active
    assert tomb.segment not in (a.segment, lg.segments[-1])
    assert tomb.segment in lg.segments  # kept: a's segment still exists
    lg.release(a)
    assert a.segment not in lg.segments and tomb.segment not in lg.segments
    assert b.segment in lg.segments
    await lg.close()


async def test_failed_write_refuses_the_batch_and_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lg = await open_log(tmp_path)
    first = await lg.append(1, b"first")
    real = os.pwritev

    def broken(fd: int, bufs: list[bytes], offset: int) -> int:
        monkeypatch.setattr(os, "pwritev", real)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwritev", broken)
    with pytest.raises(Backpressure, match="write failed"):
        await lg.append(1, b"lost")
    after = await lg.append(1, b"after")
    assert lg.read(after) == b"after"
    await lg.close()
    lg = await open_log(tmp_path)
    assert [p for _, _, p in lg.replay()] == [b"first", b"after"]
    assert lg.read(first) == b"first"
    await lg.close()


async def test_directory_is_locked(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(REPO / "src")!r})
        from otel_topics.spool import DurableLog
        async def main():
            try:
                await DurableLog({str(tmp_path)!r}, max_bytes=1 << 20).start()
            except RuntimeError as exc:
                print(exc)
        asyncio.run(main())
        """
    )
    lg = await open_log(tmp_path)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "in use by another process" in out.stdout, out.stderr
    await lg.close()


def test_constructor_checks_name_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        DurableLog(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="commit_interval"):
        DurableLog(tmp_path, max_bytes=1, commit_interval=-1)
    assert DurableLog(tmp_path, max_bytes=1 << 20).segment_bytes == 1 << 18  # a quarter of the cap


# --- persistent queue ----------------------------------------------------------------------------


async def open_queue(d: Path, **kw: object) -> PersistentQueue:
    args: dict[str, object] = {"max_bytes": 1 << 20, "fsync": False, "segment_bytes": 4096}
    args.update(kw)
    q = PersistentQueue(d, **args)  # type: ignore[arg-type]
    await q.start()
    return q


async def test_queue_fifo_ack_nack(tmp_path: Path) -> None:
    q = await open_queue(tmp_path)
    for i in range(3):
        await q.put(b"item %d" % i)
    assert len(q) == 3 and q.bytes == 3 * 6
    r0, p0 = await q.get()
    r1, p1 = await q.get()
    assert (p0, p1) == (b"item 0", b"item 1")
    q.nack(r1)  # back at the front
    q.ack(r0)
    assert len(q) == 2 and q.bytes == 12
    assert (await q.get())[1] == b"item 1"
    with pytest.raises(KeyError):
        q.ack(r0)
    await q.close()


async def test_queue_get_waits_for_put(tmp_path: Path) -> None:
    q = await open_queue(tmp_path)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    await q.put(b"late")
    assert (await asyncio.wait_for(getter, 5))[1] == b"late"
    await q.close()


async def test_queue_restart_brings_back_only_unacked_in_order(tmp_path: Path) -> None:
    q = await open_queue(tmp_path)
    for i in range(30):
        await q.put(b"%03d" % i + b"-" * 500)
    for i in range(30):
        ref, _ = await q.get()
        if i % 3 == 0:
            q.ack(ref)
        elif i == 29:
            q.nack(ref)
        # others stay in flight: not acked, so they come back
    await q.close()

    q = await open_queue(tmp_path)
    expect = [b"%03d" % i for i in range(30) if i % 3]
    assert len(q) == len(expect)
    got = [(await q.get()) for _ in expect]
    assert [p[:3] for _, p in got] == expect
    for ref, _ in got[:10]:
        q.ack(ref)
    await q.close()

    q = await open_queue(tmp_path)  # a second restart: acks still hold (their records were kept)
    assert [(await q.get())[1][:3] for _ in range(len(expect) - 10)] == expect[10:]
    assert len(q) == 10 and q.waiting == 0
    await q.close()


async def test_queue_reclaims_space_and_applies_backpressure(tmp_path: Path) -> None:
    q = await open_queue(tmp_path, max_bytes=40_000)
    with pytest.raises(Backpressure):
        for _ in range(100):
            await q.put(b"z" * 1000)
    n = len(q)
    assert 30 <= n < 40
    for _ in range(n):
        ref, _ = await q.get()
        q.ack(ref)
    assert len(await files_become(tmp_path, lambda f: len(f) <= 2)) <= 2
    await q.put(b"z" * 1000)
    await q.close()


async def test_queue_takes_one_oversized_entry_when_empty(tmp_path: Path) -> None:
    q = await open_queue(tmp_path, max_bytes=40_000)
    await q.put(b"big" * 20_000)
    with pytest.raises(Backpressure):
        await q.put(b"x" * 100)
    ref, payload = await q.get()
    assert len(payload) == 60_000
    q.ack(ref)
    await q.put(b"x" * 100)
    await q.close()


def test_header_constants() -> None:
    assert HEADER_SIZE == 9 and len(MAGIC) == 8


async def test_a_record_survives_until_its_appender_retains_it(tmp_path: Path) -> None:
    """Regression: a segment emptied by an ack while a new record in it awaited its commit was deleted
    before the appender could retain the record."""
    q = PersistentQueue(tmp_path / "q", max_bytes=1 << 20, segment_bytes=4096)
    await q.start()
    await q.put(b"a" * 1000)
    ref_a, _ = await q.get()
    pb = asyncio.create_task(q.put(b"b" * 1000))  # lands in segment 1, waits for its commit
    pc = asyncio.create_task(q.put(b"c" * 3000))  # rolls over to segment 2
    await asyncio.sleep(0)
    q.ack(ref_a)
    await pb
    await pc
    got = [(await q.get())[1] for _ in range(2)]
    assert got == [b"b" * 1000, b"c" * 3000]
    await q.close()
